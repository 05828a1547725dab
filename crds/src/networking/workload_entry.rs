//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::IstioStatus;

/// A non-Kubernetes workload (VM, bare metal). Also the shape of ServiceEntry `endpoints` and WorkloadGroup
/// `template`. The "Address is required" rule applies to WorkloadEntry and endpoints only, so `crd` adds it
/// at those two places.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    doc = "Istio WorkloadEntry: a workload outside Kubernetes. Served as v1, v1beta1, v1alpha3.",
    plural = "workloadentries",
    singular = "workloadentry",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "networking-istio-io",
    shortname = "we",
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time since creation"}"#,
    printcolumn = r#"{"name": "Address", "type": "string", "jsonPath": ".spec.address", "description": "Address of the workload"}"#
)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "UDS may not include ports", "rule": "(has(self.address) ? self.address : \"\").startsWith(\"unix://\") ? !has(self.ports) : true"}]))]
pub struct WorkloadEntrySpec {
    #[serde(rename = "address", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), extend("x-kubernetes-validations" = [{"message": "UDS must be an absolute path or abstract socket", "rule": "self.startsWith(\"unix://\") ? (self.substring(7, 8) == \"/\" || self.substring(7, 8) == \"@\") : true"}, {"message": "UDS may not be a dir", "rule": "self.startsWith(\"unix://\") ? !self.endsWith(\"/\") : true"}]))]
    pub address: Option<String>,
    #[serde(rename = "labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "locality", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub locality: Option<String>,
    #[serde(rename = "network", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub network: Option<String>,
    #[serde(rename = "ports", default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"maximum": 4294967295u32, "minimum": 0, "type": "integer", "x-kubernetes-validations": [{"message": "port must be between 1-65535", "rule": "0 < self && self <= 65535"}]}), extend("maxProperties" = 128), extend("x-kubernetes-validations" = [{"message": "port name must be valid", "rule": "self.all(key, size(key) < 63 && key.matches(\"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$\"))"}]))]
    pub ports: BTreeMap<String, u32>,
    #[serde(
        rename = "serviceAccount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 253))]
    pub service_account: Option<String>,
    #[serde(rename = "weight", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub weight: Option<u32>,
}
