//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;
use crate::status::IstioStatus;

/// Mutual-TLS requirements for traffic to workloads (`security.istio.io` PeerAuthentication).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    doc = "Istio PeerAuthentication: mTLS mode for workloads. Served as v1, v1beta1.",
    plural = "peerauthentications",
    singular = "peerauthentication",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "security-istio-io",
    shortname = "pa",
    printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mtls.mode", "description": "Peer mTLS mode"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time since creation"}"#
)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "portLevelMtls requires selector", "rule": "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true"}]))]
pub struct PeerAuthenticationSpec {
    #[serde(rename = "mtls", default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerAuthenticationMutualTls>,
    #[serde(
        rename = "portLevelMtls",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("minProperties" = 1), extend("x-kubernetes-validations" = [{"message": "port must be between 1-65535", "rule": "self.all(key, 0 < int(key) && int(key) <= 65535)"}]))]
    pub port_level_mtls: BTreeMap<String, PeerAuthenticationMutualTls>,
    #[serde(rename = "selector", default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
}

/// mTLS settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerAuthenticationMutualTls {
    #[serde(rename = "mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MutualTlsMode>,
}

/// mTLS mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MutualTlsMode {
    #[serde(rename = "UNSET")]
    Unset,
    #[serde(rename = "DISABLE")]
    Disable,
    #[serde(rename = "PERMISSIVE")]
    Permissive,
    #[serde(rename = "STRICT")]
    Strict,
}
