//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};
use crate::status::IstioStatus;

/// JWT validation for requests (`security.istio.io` RequestAuthentication).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "RequestAuthentication",
    doc = "Istio RequestAuthentication: JWT rules for workloads. Served as v1, v1beta1.",
    plural = "requestauthentications",
    singular = "requestauthentication",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "security-istio-io",
    shortname = "ra"
)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "only one of targetRefs or selector can be set", "rule": "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1"}]))]
pub struct RequestAuthenticationSpec {
    #[serde(rename = "jwtRules", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub jwt_rules: Vec<JwtRule>,
    #[serde(rename = "selector", default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(rename = "targetRef", default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(rename = "targetRefs", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<PolicyTargetReference>,
}

/// How tokens of one issuer are found and verified.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "only one of jwks or jwksUri can be set", "rule": "(has(self.jwksUri) ? 1 : 0) + (has(self.jwks_uri) ? 1 : 0) + (has(self.jwks) ? 1 : 0) <= 1"}]))]
pub struct JwtRule {
    #[serde(rename = "audiences", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"minLength": 1, "type": "string"}))]
    pub audiences: Vec<String>,
    #[serde(
        rename = "forwardOriginalToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub forward_original_token: Option<bool>,
    #[serde(rename = "fromCookies", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"minLength": 1, "type": "string"}))]
    pub from_cookies: Vec<String>,
    #[serde(rename = "fromHeaders", default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(rename = "fromParams", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"minLength": 1, "type": "string"}))]
    pub from_params: Vec<String>,
    #[serde(rename = "issuer", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub issuer: Option<String>,
    #[serde(rename = "jwks", default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(rename = "jwks_uri", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), extend("x-kubernetes-validations" = [{"message": "url must have scheme http:// or https://", "rule": "url(self).getScheme() in [\"http\", \"https\"]"}]))]
    pub jwks_uri_alias: Option<String>,
    #[serde(rename = "jwksUri", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), extend("x-kubernetes-validations" = [{"message": "url must have scheme http:// or https://", "rule": "url(self).getScheme() in [\"http\", \"https\"]"}]))]
    pub jwks_uri: Option<String>,
    #[serde(
        rename = "outputClaimToHeaders",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(
        rename = "outputPayloadToHeader",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub output_payload_to_header: Option<String>,
    #[serde(rename = "presence", default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JwtPresence>,
    #[serde(
        rename = "spaceDelimitedClaims",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(extend("items" = {"minLength": 1, "type": "string"}), length(max = 64))]
    pub space_delimited_claims: Vec<String>,
    #[serde(rename = "timeout", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub timeout: Option<String>,
}

/// A header a token is read from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    #[serde(rename = "name", default)]
    #[schemars(required, length(min = 1))]
    pub name: String,
    #[serde(rename = "prefix", default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Copies a JWT claim into a request header.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    #[serde(rename = "claim", default)]
    #[schemars(required, length(min = 1))]
    pub claim: String,
    #[serde(rename = "header", default)]
    #[schemars(required, length(min = 1), regex(pattern = r"^[-_A-Za-z0-9]+$"))]
    pub header: String,
}

/// Whether a token must be present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JwtPresence {
    #[serde(rename = "OPTIONAL")]
    Optional,
    #[serde(rename = "REQUIRED")]
    Required,
}
