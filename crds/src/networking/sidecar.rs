//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::networking::{
    ConnectionPoolSettings, Destination, NetworkingWorkloadSelector, ServerTlsSettings,
};
use crate::status::IstioStatus;

/// Scopes what a sidecar proxy listens for and can reach (`networking.istio.io` Sidecar).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Sidecar",
    doc = "Istio Sidecar: the listeners and reachable hosts of sidecar proxies. Served as v1, v1beta1, v1alpha3.",
    plural = "sidecars",
    singular = "sidecar",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(deny_unknown_fields)]
pub struct SidecarSpec {
    #[serde(rename = "egress", default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    #[serde(
        rename = "inboundConnectionPool",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(rename = "ingress", default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(
        rename = "outboundTrafficPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    #[serde(
        rename = "workloadSelector",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workload_selector: Option<NetworkingWorkloadSelector>,
}

/// Outbound listener of a sidecar and the hosts it may reach.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IstioEgressListener {
    #[serde(rename = "bind", default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(
        rename = "captureMode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capture_mode: Option<CaptureMode>,
    #[serde(rename = "hosts", default)]
    #[schemars(required)]
    pub hosts: Vec<String>,
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
}

/// A port of a sidecar listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarPort {
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "number", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub number: Option<u32>,
    #[serde(rename = "protocol", default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(
        rename = "targetPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub target_port: Option<u32>,
}

/// Inbound listener of a sidecar.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IstioIngressListener {
    #[serde(rename = "bind", default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(
        rename = "captureMode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capture_mode: Option<CaptureMode>,
    #[serde(
        rename = "connectionPool",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(
        rename = "defaultEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_endpoint: Option<String>,
    #[serde(rename = "port", default)]
    #[schemars(required)]
    pub port: SidecarPort,
    #[serde(rename = "tls", default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
}

/// What the sidecar does with traffic to unknown destinations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(
        rename = "egressProxy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_proxy: Option<Destination>,
    #[serde(rename = "mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficPolicyMode>,
}

/// How traffic reaches a sidecar listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CaptureMode {
    #[serde(rename = "DEFAULT")]
    Default,
    #[serde(rename = "IPTABLES")]
    Iptables,
    #[serde(rename = "NONE")]
    None,
}

/// Treatment of traffic to destinations outside the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OutboundTrafficPolicyMode {
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
}
