//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::status::IstioStatus;

/// Access control for workloads (`security.istio.io` AuthorizationPolicy).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    doc = "Istio AuthorizationPolicy: access control for workloads. Served as v1, v1beta1.",
    plural = "authorizationpolicies",
    singular = "authorizationpolicy",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "security-istio-io",
    shortname = "ap",
    printcolumn = r#"{"name": "Action", "type": "string", "jsonPath": ".spec.action", "description": "Action taken on a match"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time since creation"}"#
)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"not": {"anyOf": [{"required": ["provider"]}]}}, {"required": ["provider"]}]))]
#[schemars(extend("x-kubernetes-validations" = [{"message": "only one of targetRefs or selector can be set", "rule": "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1"}]))]
pub struct AuthorizationPolicySpec {
    #[serde(rename = "action", default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AuthorizationPolicyAction>,
    #[serde(rename = "provider", default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
    #[serde(rename = "rules", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub rules: Vec<Rule>,
    #[serde(rename = "selector", default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(rename = "targetRef", default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(rename = "targetRefs", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<PolicyTargetReference>,
}

/// External authorizer used by the CUSTOM action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A rule: sources, operations and conditions (all must match).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(rename = "from", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub from: Vec<RuleFrom>,
    #[serde(rename = "to", default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(rename = "when", default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// Source part of a rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(rename = "source", default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// Identity of the request's origin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "Cannot set serviceAccounts with namespaces or principals", "rule": "(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) &&\n!has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true"}]))]
pub struct Source {
    #[serde(rename = "ipBlocks", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(rename = "namespaces", default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(rename = "notIpBlocks", default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    #[serde(
        rename = "notNamespaces",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_namespaces: Vec<String>,
    #[serde(
        rename = "notPrincipals",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_principals: Vec<String>,
    #[serde(
        rename = "notRemoteIpBlocks",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_remote_ip_blocks: Vec<String>,
    #[serde(
        rename = "notRequestPrincipals",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_request_principals: Vec<String>,
    #[serde(
        rename = "notServiceAccounts",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(extend("items" = {"maxLength": 320, "type": "string"}), length(max = 16))]
    pub not_service_accounts: Vec<String>,
    #[serde(
        rename = "notTrustDomains",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_trust_domains: Vec<String>,
    #[serde(rename = "principals", default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(
        rename = "remoteIpBlocks",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub remote_ip_blocks: Vec<String>,
    #[serde(
        rename = "requestPrincipals",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub request_principals: Vec<String>,
    #[serde(
        rename = "serviceAccounts",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(extend("items" = {"maxLength": 320, "type": "string"}), length(max = 16))]
    pub service_accounts: Vec<String>,
    #[serde(
        rename = "trustDomains",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub trust_domains: Vec<String>,
}

/// Operation part of a rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleTo {
    #[serde(rename = "operation", default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// What the request does (host, method, path, port).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    #[serde(rename = "hosts", default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(rename = "methods", default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(rename = "notHosts", default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(rename = "notMethods", default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(rename = "notPaths", default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
    #[serde(rename = "notPorts", default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(rename = "paths", default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(rename = "ports", default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

/// An additional request attribute condition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "key", default)]
    #[schemars(required)]
    pub key: String,
    #[serde(rename = "notValues", default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
    #[serde(rename = "values", default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// What a matching policy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AuthorizationPolicyAction {
    #[serde(rename = "ALLOW")]
    Allow,
    #[serde(rename = "DENY")]
    Deny,
    #[serde(rename = "AUDIT")]
    Audit,
    #[serde(rename = "CUSTOM")]
    Custom,
}
