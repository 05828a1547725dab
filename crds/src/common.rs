//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Selects workloads by labels (`matchLabels`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(
        rename = "matchLabels",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("additionalProperties" = {"maxLength": 63, "type": "string", "x-kubernetes-validations": [{"message": "wildcard not allowed in label value match", "rule": "!self.contains(\"*\")"}]}), extend("maxProperties" = 4096), extend("x-kubernetes-validations" = [{"message": "wildcard not allowed in label key match", "rule": "self.all(key, !key.contains(\"*\"))"}, {"message": "key must not be empty", "rule": "self.all(key, key.size() != 0)"}]))]
    pub match_labels: BTreeMap<String, String>,
}

/// A resource a policy attaches to (Gateway API style target reference).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(rename = "group", default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub group: Option<String>,
    #[serde(rename = "kind", default)]
    #[schemars(
        required,
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
    )]
    pub kind: String,
    #[serde(rename = "name", default)]
    #[schemars(required, length(min = 1, max = 253))]
    pub name: String,
    #[serde(rename = "namespace", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "cross namespace referencing is not currently supported", "rule": "self.size() == 0"}]))]
    pub namespace: Option<String>,
}
