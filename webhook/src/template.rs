//! The injection template: images, resources, ports and defaults of the injected containers. It is data, not
//! code: the operator writes it to a file that halyard-webhook reads (`InjectionTemplate::from_file`), and the
//! built-in copy (`templates/injection-template.yaml`, `InjectionTemplate::builtin`) serves `kube-inject` and
//! tests. Per-pod annotations are applied on top of it by the injector.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

use crate::annotations::{self, InterceptionMode};
use crate::error::Error;

const BUILTIN: &str = include_str!("../templates/injection-template.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InjectionPolicy {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionTemplate {
    pub revision: String,
    pub policy: InjectionPolicy,
    pub never_inject_selector: Vec<LabelSelector>,
    pub always_inject_selector: Vec<LabelSelector>,
    pub enable_namespaces_by_default: bool,
    pub native_sidecars: bool,
    #[serde(rename = "rewriteAppHTTPProbe")]
    pub rewrite_app_http_probe: bool,
    pub hold_application_until_proxy_starts: bool,
    pub injected_annotations: BTreeMap<String, String>,
    pub image_pull_secrets: Vec<String>,
    pub cluster_domain: String,
    pub cluster_id: String,
    pub mesh_id: String,
    pub discovery_address: String,
    pub token_audience: String,
    pub ca_root_config_map: String,
    pub proxy: ProxyTemplate,
    pub init: InitTemplate,
    pub capture: CaptureDefaults,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyTemplate {
    pub image: String,
    pub image_pull_policy: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub wait_command: Vec<String>,
    pub drain_command: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub log_level: String,
    pub component_log_level: String,
    pub status_port: u16,
    /// A Kubernetes `ResourceRequirements` object, copied as it is.
    pub resources: serde_json::Value,
    pub readiness: ReadinessTemplate,
    pub startup_probe: StartupProbeTemplate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessTemplate {
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartupProbeTemplate {
    pub enabled: bool,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitTemplate {
    pub image: String,
    pub command: Vec<String>,
}

/// Defaults of the capture flags; the `traffic.sidecar.istio.io/*` annotations override them per pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureDefaults {
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub interception_mode: String,
    #[serde(rename = "includeOutboundIPRanges")]
    pub include_outbound_ip_ranges: String,
    #[serde(rename = "excludeOutboundIPRanges")]
    pub exclude_outbound_ip_ranges: String,
    pub include_inbound_ports: String,
    pub exclude_inbound_ports: String,
    pub include_outbound_ports: String,
    pub exclude_outbound_ports: String,
}

impl InjectionTemplate {
    /// The template shipped with halyard.
    pub fn builtin() -> Result<Self, Error> {
        Self::from_yaml(BUILTIN, "built-in")
    }

    pub fn from_yaml(text: &str, source_name: &str) -> Result<Self, Error> {
        let template: Self = serde_yaml::from_str(text).map_err(|e| Error::Template {
            source_name: source_name.to_string(),
            why: e.to_string(),
        })?;
        template.check(source_name)?;
        Ok(template)
    }

    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    pub fn to_yaml(&self) -> Result<String, Error> {
        serde_yaml::to_string(self).map_err(|e| Error::Template {
            source_name: "in memory".to_string(),
            why: e.to_string(),
        })
    }

    /// The same checks as the per-pod annotations, so that a bad template fails at load, not per pod.
    fn check(&self, source_name: &str) -> Result<(), Error> {
        let bad = |field: &str, why: String| Error::Template {
            source_name: source_name.to_string(),
            why: format!("{field}: {why}"),
        };
        InterceptionMode::parse(&self.capture.interception_mode)
            .map_err(|w| bad("capture.interceptionMode", w))?;
        let as_annotations = [
            (
                annotations::INCLUDE_OUTBOUND_IP_RANGES,
                &self.capture.include_outbound_ip_ranges,
            ),
            (
                annotations::EXCLUDE_OUTBOUND_IP_RANGES,
                &self.capture.exclude_outbound_ip_ranges,
            ),
            (
                annotations::INCLUDE_INBOUND_PORTS,
                &self.capture.include_inbound_ports,
            ),
            (
                annotations::EXCLUDE_INBOUND_PORTS,
                &self.capture.exclude_inbound_ports,
            ),
            (
                annotations::INCLUDE_OUTBOUND_PORTS,
                &self.capture.include_outbound_ports,
            ),
            (
                annotations::EXCLUDE_OUTBOUND_PORTS,
                &self.capture.exclude_outbound_ports,
            ),
        ];
        let map = as_annotations
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).clone()))
            .collect();
        annotations::validate(&map).map_err(|e| bad("capture", e.to_string()))?;
        if self.proxy.image.is_empty() || self.init.image.is_empty() {
            return Err(bad("proxy.image/init.image", "must not be empty".into()));
        }
        if self.proxy.status_port == 0 {
            return Err(bad("proxy.statusPort", "must not be 0".into()));
        }
        if !self.proxy.resources.is_object() {
            return Err(bad(
                "proxy.resources",
                "must be a ResourceRequirements mapping".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_round_trips() {
        let t = InjectionTemplate::builtin().unwrap();
        assert_eq!(t.proxy.uid, 1337);
        assert_eq!(t.capture.outbound_port, 15001);
        let again = InjectionTemplate::from_yaml(&t.to_yaml().unwrap(), "round trip").unwrap();
        assert_eq!(t, again);
    }

    #[test]
    fn errors_name_the_field() {
        let text = BUILTIN.replace("interceptionMode: REDIRECT", "interceptionMode: MAGIC");
        let err = InjectionTemplate::from_yaml(&text, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.yaml") && err.contains("capture.interceptionMode"),
            "{err}"
        );
        let text = BUILTIN.replace("clusterId: Kubernetes\n", "");
        let err = InjectionTemplate::from_yaml(&text, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("clusterId"), "{err}");
    }
}
