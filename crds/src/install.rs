//! `MeshInstall` (`install.halyard.dev/v1alpha1`, cluster-scoped): what the operator installs and how.
//!
//! Fields left as `None` are decided by the `profile` (the operator resolves them); everything else has a
//! serde default, so `spec: {}` is a complete default install.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::networking::OutboundTrafficPolicyMode;
use crate::security::MutualTlsMode;

/// The API group of MeshInstall.
pub const GROUP: &str = "install.halyard.dev";
/// The only served (and storage) version.
pub const VERSION: &str = "v1alpha1";
/// Condition type: the last spec was applied.
pub const CONDITION_RECONCILED: &str = "Reconciled";
/// Condition type: every enabled component is available.
pub const CONDITION_READY: &str = "Ready";

/// The desired mesh installation.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "install.halyard.dev",
    version = "v1alpha1",
    kind = "MeshInstall",
    doc = "A halyard mesh installation (cluster-scoped, `install.halyard.dev/v1alpha1`).",
    plural = "meshinstalls",
    singular = "meshinstall",
    status = "MeshInstallStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "halyard",
    shortname = "mi",
    printcolumn = r#"{"name": "Profile", "type": "string", "jsonPath": ".spec.profile", "description": "Installation profile"}"#,
    printcolumn = r#"{"name": "Version", "type": "string", "jsonPath": ".status.installedVersion", "description": "Installed version"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether every component is available"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time since creation"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshInstallSpec {
    #[serde(default)]
    pub profile: Profile,
    /// Version to install; the operator's own version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Control-plane revision (`istio.io/rev`); the default revision when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Namespace of the control plane.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub mesh_config: MeshConfig,
    #[serde(default)]
    pub components: Components,
    #[serde(default)]
    pub proxy: ProxySettings,
    #[serde(default)]
    pub injection: InjectionSettings,
    #[serde(default)]
    pub ca: CaSettings,
    #[serde(default)]
    pub uninstall: UninstallSettings,
}

fn default_namespace() -> String {
    "istio-system".to_string()
}

/// Installation profile, with Istio's meaning: `default` (ingress gateway), `demo` (both gateways, access
/// logs, more tracing), `minimal` (control plane only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Default,
    Demo,
    Minimal,
}

/// Mesh-wide settings (the subset of Istio's MeshConfig halyard honours, with Istio's names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    #[serde(default)]
    pub outbound_traffic_policy: MeshOutboundTrafficPolicy,
    /// mTLS mode when no PeerAuthentication applies.
    #[serde(default = "default_mtls_mode")]
    pub default_mtls_mode: MutualTlsMode,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Access log destination (`/dev/stdout`); empty disables access logs. Unset: the profile decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    #[serde(default)]
    pub access_log_encoding: AccessLogEncoding,
    #[serde(default)]
    pub default_config: ProxyConfigDefaults,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            outbound_traffic_policy: MeshOutboundTrafficPolicy::default(),
            default_mtls_mode: default_mtls_mode(),
            trust_domain: default_trust_domain(),
            access_log_file: None,
            access_log_encoding: AccessLogEncoding::default(),
            default_config: ProxyConfigDefaults::default(),
        }
    }
}

fn default_mtls_mode() -> MutualTlsMode {
    MutualTlsMode::Permissive
}

fn default_trust_domain() -> String {
    "cluster.local".to_string()
}

/// `meshConfig.outboundTrafficPolicy`, shaped as in Istio (`{mode: ALLOW_ANY}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshOutboundTrafficPolicy {
    #[serde(default = "default_outbound_mode")]
    pub mode: OutboundTrafficPolicyMode,
}

impl Default for MeshOutboundTrafficPolicy {
    fn default() -> Self {
        MeshOutboundTrafficPolicy {
            mode: default_outbound_mode(),
        }
    }
}

fn default_outbound_mode() -> OutboundTrafficPolicyMode {
    OutboundTrafficPolicyMode::AllowAny
}

/// `meshConfig.accessLogEncoding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AccessLogEncoding {
    #[default]
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "JSON")]
    Json,
}

/// `meshConfig.defaultConfig`: proxy defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfigDefaults {
    /// Worker threads; unset means one per CPU the proxy may use (Istio: 2 by default in sidecars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64))]
    pub concurrency: Option<u32>,
    /// Time to drain connections on shutdown (a duration such as `45s`).
    #[serde(default = "default_drain_duration")]
    pub drain_duration: String,
    #[serde(default)]
    pub hold_application_until_proxy_starts: bool,
    /// Environment passed to every proxy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
}

impl Default for ProxyConfigDefaults {
    fn default() -> Self {
        ProxyConfigDefaults {
            concurrency: None,
            drain_duration: default_drain_duration(),
            hold_application_until_proxy_starts: false,
            proxy_metadata: BTreeMap::new(),
        }
    }
}

fn default_drain_duration() -> String {
    "45s".to_string()
}

/// Components the operator deploys besides the control plane itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Components {
    #[serde(default)]
    pub webhook: WebhookComponent,
    #[serde(default)]
    pub ingress_gateway: GatewayComponent,
    #[serde(default)]
    pub egress_gateway: GatewayComponent,
}

/// The admission webhook deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookComponent {
    #[serde(default = "one")]
    #[schemars(range(min = 0i64))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for WebhookComponent {
    fn default() -> Self {
        WebhookComponent {
            replicas: 1,
            resources: None,
        }
    }
}

fn one() -> i32 {
    1
}

/// An ingress or egress gateway deployment and its Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayComponent {
    /// Unset: the profile decides (ingress in `default` and `demo`, egress in `demo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default = "one")]
    #[schemars(range(min = 0i64))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub service: GatewayService,
}

impl Default for GatewayComponent {
    fn default() -> Self {
        GatewayComponent {
            enabled: None,
            replicas: 1,
            resources: None,
            service: GatewayService::default(),
        }
    }
}

/// The Service in front of a gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayService {
    /// Unset: `LoadBalancer` for the ingress gateway, `ClusterIP` for the egress gateway.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Unset or empty: Istio's gateway ports (15021 status, 80 http2, 443 https).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<GatewayServicePort>,
}

/// Kubernetes Service type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// One port of a gateway Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayServicePort {
    pub name: String,
    #[schemars(range(min = 1i64, max = 65535i64))]
    pub port: u16,
    /// Container port; the same as `port` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1i64, max = 65535i64))]
    pub target_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000i64, max = 32767i64))]
    pub node_port: Option<u16>,
}

/// The proxy container injected into pods and run in gateways.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySettings {
    /// Image reference; the operator's matching `halyard-proxy` image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub log_level: ProxyLogLevel,
}

/// Proxy log level, with Istio's names (`--proxyLogLevel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProxyLogLevel {
    Trace,
    Debug,
    Info,
    #[default]
    Warning,
    Error,
    Critical,
    Off,
}

/// Sidecar injection policy (Istio's `sidecarInjectorWebhook` values).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionSettings {
    #[serde(default)]
    pub policy: InjectionPolicy,
    /// Pods matching any of these are never injected (unless their own label says so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub never_inject_selector: Vec<LabelSelector>,
    /// Pods matching any of these are injected even when the policy is `disabled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub always_inject_selector: Vec<LabelSelector>,
    #[serde(default)]
    pub native_sidecar: NativeSidecar,
}

/// `autoInject` policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InjectionPolicy {
    #[default]
    Enabled,
    Disabled,
}

/// Whether the proxy runs as a Kubernetes native sidecar (an init container with `restartPolicy: Always`).
/// Written `auto`, `"true"` or `"false"`; YAML booleans are accepted too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[schemars(with = "NativeSidecarRepr")]
pub enum NativeSidecar {
    /// Native sidecars when the node's kubelet supports them (1.33+).
    #[default]
    Auto,
    Enabled,
    Disabled,
}

/// Wire form of [`NativeSidecar`] (for the schema).
#[derive(JsonSchema)]
#[allow(dead_code)]
enum NativeSidecarRepr {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "true")]
    True,
    #[serde(rename = "false")]
    False,
}

impl Serialize for NativeSidecar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            NativeSidecar::Auto => "auto",
            NativeSidecar::Enabled => "true",
            NativeSidecar::Disabled => "false",
        })
    }
}

impl<'de> Deserialize<'de> for NativeSidecar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(NativeSidecar::Enabled),
            Raw::Bool(false) => Ok(NativeSidecar::Disabled),
            Raw::Str(s) => match s.as_str() {
                "auto" => Ok(NativeSidecar::Auto),
                "true" => Ok(NativeSidecar::Enabled),
                "false" => Ok(NativeSidecar::Disabled),
                other => Err(serde::de::Error::custom(format!(
                    "invalid nativeSidecar \"{other}\": expected auto, true or false"
                ))),
            },
        }
    }
}

/// Where workload certificates come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaSettings {
    #[serde(default)]
    pub source: CaSource,
    /// Secret in the control-plane namespace holding `ca-cert.pem`, `ca-key.pem`, `root-cert.pem` and
    /// `cert-chain.pem` (Istio's plug-in CA layout); used when `source` is `cacertsSecret`.
    #[serde(default = "default_cacerts")]
    pub secret_name: String,
    /// Lifetime of workload certificates (a duration such as `24h`).
    #[serde(default = "default_workload_cert_ttl")]
    pub workload_cert_ttl: String,
}

impl Default for CaSettings {
    fn default() -> Self {
        CaSettings {
            source: CaSource::default(),
            secret_name: default_cacerts(),
            workload_cert_ttl: default_workload_cert_ttl(),
        }
    }
}

fn default_cacerts() -> String {
    "cacerts".to_string()
}

fn default_workload_cert_ttl() -> String {
    "24h".to_string()
}

/// The CA's signing key: generated (self-signed root) or an existing Secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CaSource {
    #[default]
    SelfSigned,
    CacertsSecret,
}

/// What deleting the MeshInstall removes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UninstallSettings {
    /// Also delete the Istio CRDs (and with them every Istio object in the cluster).
    #[serde(default, rename = "purgeCRDs")]
    pub purge_crds: bool,
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshInstallStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Reconciled` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<MeshInstallCondition>,
    /// State per component, keyed `controlPlane`, `webhook`, `ingressGateway`, `egressGateway`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,
    /// Proxies holding a discovery stream to the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_proxies: Option<u32>,
}

/// A status condition (Kubernetes' condition shape).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshInstallCondition {
    /// `Reconciled` or `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

/// One component's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub state: ComponentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle of a component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ComponentState {
    #[default]
    Pending,
    Progressing,
    Ready,
    Failed,
    Disabled,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_spec_is_a_default_install() {
        let spec: MeshInstallSpec = serde_json::from_value(json!({})).unwrap();
        assert_eq!(spec.profile, Profile::Default);
        assert_eq!(spec.namespace, "istio-system");
        assert_eq!(spec.mesh_config.trust_domain, "cluster.local");
        assert_eq!(
            spec.mesh_config.outbound_traffic_policy.mode,
            OutboundTrafficPolicyMode::AllowAny
        );
        assert_eq!(
            spec.mesh_config.default_mtls_mode,
            MutualTlsMode::Permissive
        );
        assert_eq!(spec.mesh_config.default_config.drain_duration, "45s");
        assert_eq!(spec.components.webhook.replicas, 1);
        assert_eq!(spec.injection.native_sidecar, NativeSidecar::Auto);
        assert_eq!(spec.ca.workload_cert_ttl, "24h");
        assert!(!spec.uninstall.purge_crds);
    }

    #[test]
    fn full_spec_round_trips() {
        let v = json!({
            "profile": "demo", "version": "1.0.0", "revision": "canary", "namespace": "mesh",
            "meshConfig": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}, "defaultMtlsMode": "STRICT",
                "trustDomain": "example.org", "accessLogFile": "/dev/stdout", "accessLogEncoding": "JSON",
                "defaultConfig": {"concurrency": 2, "drainDuration": "5s", "holdApplicationUntilProxyStarts": true,
                    "proxyMetadata": {"A": "b"}}},
            "components": {"webhook": {"replicas": 2},
                "ingressGateway": {"enabled": true, "replicas": 1, "service": {"type": "NodePort",
                    "ports": [{"name": "http2", "port": 80, "targetPort": 8080, "nodePort": 30080}]}},
                "egressGateway": {"enabled": false, "replicas": 1, "service": {}}},
            "proxy": {"image": "halyard/proxy:1", "logLevel": "debug"},
            "injection": {"policy": "disabled", "neverInjectSelector": [{"matchLabels": {"a": "b"}}],
                "alwaysInjectSelector": [], "nativeSidecar": "true"},
            "ca": {"source": "cacertsSecret", "secretName": "cacerts", "workloadCertTtl": "1h"},
            "uninstall": {"purgeCRDs": true}
        });
        let spec: MeshInstallSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(spec.injection.native_sidecar, NativeSidecar::Enabled);
        let back = serde_json::to_value(&spec).unwrap();
        let mut expected = v;
        expected["injection"]
            .as_object_mut()
            .unwrap()
            .remove("alwaysInjectSelector");
        assert_eq!(back, expected);
    }

    #[test]
    fn native_sidecar_accepts_yaml_booleans_and_rejects_junk() {
        let s: InjectionSettings = serde_json::from_value(json!({"nativeSidecar": false})).unwrap();
        assert_eq!(s.native_sidecar, NativeSidecar::Disabled);
        let err = serde_json::from_value::<InjectionSettings>(json!({"nativeSidecar": "maybe"}))
            .unwrap_err();
        assert!(
            err.to_string().contains("expected auto, true or false"),
            "{err}"
        );
        assert!(serde_json::from_value::<MeshInstallSpec>(json!({"profil": "demo"})).is_err());
    }
}
