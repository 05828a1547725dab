//! The parts of Istio's mesh config (`meshConfig.defaultConfig`, `trustDomain`) that injection reads, and
//! the per-pod `proxy.istio.io/config` override, which is a partial `ProxyConfig` merged over the default.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Istio's `ProxyConfig`, restricted to what halyard's proxy and injector use. Unknown fields are refused so
/// that a typo in `proxy.istio.io/config` is an admission error instead of a silently ignored setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_drain_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_stats_matcher: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
}

impl ProxyConfig {
    /// Parses a (partial) ProxyConfig; the error is the reason text used in annotation errors.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| format!("invalid ProxyConfig: {e}"))
    }

    /// `over` wins field by field; proxy metadata is merged key by key, as Istio merges the annotation.
    pub fn merged_with(&self, over: &ProxyConfig) -> ProxyConfig {
        let mut proxy_metadata = self.proxy_metadata.clone();
        proxy_metadata.extend(over.proxy_metadata.clone());
        ProxyConfig {
            discovery_address: over
                .discovery_address
                .clone()
                .or_else(|| self.discovery_address.clone()),
            concurrency: over.concurrency.or(self.concurrency),
            hold_application_until_proxy_starts: over
                .hold_application_until_proxy_starts
                .or(self.hold_application_until_proxy_starts),
            interception_mode: over
                .interception_mode
                .clone()
                .or_else(|| self.interception_mode.clone()),
            status_port: over.status_port.or(self.status_port),
            drain_duration: over
                .drain_duration
                .clone()
                .or_else(|| self.drain_duration.clone()),
            termination_drain_duration: over
                .termination_drain_duration
                .clone()
                .or_else(|| self.termination_drain_duration.clone()),
            proxy_stats_matcher: over
                .proxy_stats_matcher
                .clone()
                .or_else(|| self.proxy_stats_matcher.clone()),
            tracing: over.tracing.clone().or_else(|| self.tracing.clone()),
            proxy_metadata,
        }
    }
}

/// The mesh-wide settings the injector needs. Read from the mesh config file the operator mounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default)]
    pub default_config: ProxyConfig,
    /// Merge the app's Prometheus annotations into the proxy's on 15020 (Istio's `enablePrometheusMerge`).
    #[serde(default = "yes")]
    pub enable_prometheus_merge: bool,
}

fn default_trust_domain() -> String {
    "cluster.local".to_string()
}

fn yes() -> bool {
    true
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: default_trust_domain(),
            default_config: ProxyConfig::default(),
            enable_prometheus_merge: true,
        }
    }
}

impl MeshConfig {
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Self, Error> {
        // Istio's mesh config has many more fields; this reads the ones injection needs and ignores the rest.
        serde_yaml::from_str(text).map_err(|e| Error::MeshConfig {
            source_name: source_name.to_string(),
            why: e.to_string(),
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_yaml(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_overrides_default() {
        let base = ProxyConfig {
            discovery_address: Some("a:15012".into()),
            concurrency: Some(2),
            proxy_metadata: BTreeMap::from([("A".into(), "1".into())]),
            ..Default::default()
        };
        let over = ProxyConfig::from_yaml(
            "discoveryAddress: foo:123\nconcurrency: 0\nproxyMetadata:\n  FOO: bar\n",
        )
        .unwrap();
        let m = base.merged_with(&over);
        assert_eq!(m.discovery_address.as_deref(), Some("foo:123"));
        assert_eq!(m.concurrency, Some(0));
        assert_eq!(m.proxy_metadata.len(), 2);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = ProxyConfig::from_yaml("discoveryAdress: x").unwrap_err();
        assert!(err.contains("discoveryAdress"), "{err}");
    }

    #[test]
    fn mesh_config_ignores_unrelated_fields() {
        let m = MeshConfig::from_yaml(
            "trustDomain: example.org\naccessLogFile: /dev/stdout\n",
            "t",
        )
        .unwrap();
        assert_eq!(m.trust_domain, "example.org");
        assert!(m.enable_prometheus_merge);
    }
}
