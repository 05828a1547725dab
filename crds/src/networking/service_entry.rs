//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::networking::WorkloadEntrySpec;
use crate::status::IstioStatus;

/// Adds a service to the mesh's registry (`networking.istio.io` ServiceEntry).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    doc = "Istio ServiceEntry: a service added to the registry. Served as v1, v1beta1, v1alpha3.",
    plural = "serviceentries",
    singular = "serviceentry",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "networking-istio-io",
    shortname = "se",
    printcolumn = r#"{"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts", "description": "Hosts of this entry"}"#,
    printcolumn = r#"{"name": "Location", "type": "string", "jsonPath": ".spec.location", "description": "MESH_EXTERNAL or MESH_INTERNAL"}"#,
    printcolumn = r#"{"name": "Resolution", "type": "string", "jsonPath": ".spec.resolution", "description": "NONE, STATIC or DNS"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time since creation"}"#
)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "only one of WorkloadSelector or Endpoints can be set", "rule": "(has(self.workloadSelector) ? 1 : 0) + (has(self.endpoints) ? 1 : 0) <= 1"}, {"message": "CIDR addresses are allowed only for NONE/STATIC resolution types", "rule": "!((has(self.addresses) ? self.addresses : []).exists(k, k.contains(\"/\")) && !((has(self.resolution) ? self.resolution : \"NONE\") in [\"STATIC\", \"NONE\"]))"}, {"message": "NONE mode cannot set endpoints", "rule": "((has(self.resolution) ? self.resolution : \"NONE\") == \"NONE\") ? !has(self.endpoints) : true"}, {"message": "DNS_ROUND_ROBIN mode cannot have multiple endpoints", "rule": "((has(self.resolution) ? self.resolution : \"\") == \"DNS_ROUND_ROBIN\") ? ((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true"}]))]
pub struct ServiceEntrySpec {
    #[serde(rename = "addresses", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"maxLength": 64, "type": "string"}), length(max = 256))]
    pub addresses: Vec<String>,
    #[serde(rename = "endpoints", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub endpoints: Vec<WorkloadEntrySpec>,
    #[serde(rename = "exportTo", default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(rename = "hosts", default)]
    #[schemars(required, extend("items" = {"type": "string", "x-kubernetes-validations": [{"message": "hostname cannot be wildcard", "rule": "self != \"*\""}]}), length(min = 1, max = 256))]
    pub hosts: Vec<String>,
    #[serde(rename = "location", default, skip_serializing_if = "Option::is_none")]
    pub location: Option<ServiceEntryLocation>,
    #[serde(rename = "ports", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map"), extend("x-kubernetes-list-map-keys" = ["name"]), extend("x-kubernetes-validations" = [{"message": "port number cannot be duplicated", "rule": "self.all(l1, self.exists_one(l2, l1.number == l2.number))"}]))]
    pub ports: Vec<ServicePort>,
    #[serde(
        rename = "resolution",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub resolution: Option<ServiceEntryResolution>,
    #[serde(
        rename = "subjectAltNames",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subject_alt_names: Vec<String>,
    #[serde(
        rename = "workloadSelector",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workload_selector: Option<NetworkingWorkloadSelector>,
}

/// A port of a ServiceEntry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    #[serde(rename = "name", default)]
    #[schemars(required, length(max = 256))]
    pub name: String,
    #[serde(rename = "number", default)]
    #[schemars(required, range(min = 0i64, max = 4294967295i64), extend("x-kubernetes-validations" = [{"message": "port must be between 1-65535", "rule": "0 < self && self <= 65535"}]))]
    pub number: u32,
    #[serde(rename = "protocol", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub protocol: Option<String>,
    #[serde(
        rename = "targetPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64, max = 4294967295i64), extend("x-kubernetes-validations" = [{"message": "port must be between 1-65535", "rule": "0 < self && self <= 65535"}]))]
    pub target_port: Option<u32>,
}

/// Selects workloads by labels (`labels`, as Sidecar and ServiceEntry write it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkingWorkloadSelector {
    #[serde(rename = "labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"maxLength": 63, "type": "string", "x-kubernetes-validations": [{"message": "wildcard is not supported in selector", "rule": "!self.contains(\"*\")"}]}), extend("maxProperties" = 256))]
    pub labels: BTreeMap<String, String>,
}

/// Whether the service is inside or outside the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ServiceEntryLocation {
    #[serde(rename = "MESH_EXTERNAL")]
    MeshExternal,
    #[serde(rename = "MESH_INTERNAL")]
    MeshInternal,
}

/// How endpoints of the service are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ServiceEntryResolution {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "STATIC")]
    Static,
    #[serde(rename = "DNS")]
    Dns,
    #[serde(rename = "DNS_ROUND_ROBIN")]
    DnsRoundRobin,
    #[serde(rename = "DYNAMIC_DNS")]
    DynamicDns,
}
