//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::IstioStatus;

/// Routing rules for traffic to a set of hosts (`networking.istio.io` VirtualService).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    doc = "Istio VirtualService: how requests to a set of hosts are routed. Served as v1, v1beta1, v1alpha3.",
    plural = "virtualservices",
    singular = "virtualservice",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "networking-istio-io",
    shortname = "vs",
    printcolumn = r#"{"name": "Gateways", "type": "string", "jsonPath": ".spec.gateways", "description": "Gateways and sidecars these routes apply to"}"#,
    printcolumn = r#"{"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts", "description": "Destination hosts of this traffic"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time since creation"}"#
)]
#[serde(deny_unknown_fields)]
pub struct VirtualServiceSpec {
    #[serde(rename = "exportTo", default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(rename = "gateways", default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(rename = "hosts", default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(rename = "http", default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(rename = "tcp", default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    #[serde(rename = "tls", default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
}

/// One HTTP route rule: matches, then route/redirect/direct response and per-route policies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(
        rename = "corsPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(rename = "delegate", default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(
        rename = "directResponse",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(rename = "fault", default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    #[serde(rename = "headers", default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<HttpMatchRequest>,
    #[serde(rename = "mirror", default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    #[serde(
        rename = "mirror_percent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 0i64, max = 4294967295i64))]
    pub mirror_percent_alias: Option<u32>,
    #[serde(
        rename = "mirrorPercent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 0i64, max = 4294967295i64))]
    pub mirror_percent: Option<u32>,
    #[serde(
        rename = "mirrorPercentage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percentage: Option<Percent>,
    #[serde(rename = "mirrors", default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "redirect", default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(rename = "retries", default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(rename = "rewrite", default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    #[serde(rename = "route", default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    #[serde(rename = "timeout", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub timeout: Option<String>,
}

/// Cross-origin resource sharing settings of a route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    #[serde(
        rename = "allowCredentials",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true))]
    pub allow_credentials: Option<bool>,
    #[serde(
        rename = "allowHeaders",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_headers: Vec<String>,
    #[serde(
        rename = "allowMethods",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_methods: Vec<String>,
    #[serde(rename = "allowOrigin", default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    #[serde(
        rename = "allowOrigins",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allow_origins: Vec<StringMatch>,
    #[serde(
        rename = "exposeHeaders",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub expose_headers: Vec<String>,
    #[serde(rename = "maxAge", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub max_age: Option<String>,
    #[serde(
        rename = "unmatchedPreflights",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// String match; exactly one of `exact`, `prefix`, `regex` should be set (the validator checks).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]}, {"required": ["regex"]}]}}, {"required": ["exact"]}, {"required": ["prefix"]}, {"required": ["regex"]}]))]
pub struct StringMatch {
    #[serde(rename = "exact", default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(rename = "prefix", default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(rename = "regex", default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Hands the route over to another VirtualService (a delegate without hosts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delegate {
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "namespace", default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A fixed response returned without contacting a destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDirectResponse {
    #[serde(rename = "body", default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
    #[serde(rename = "status", default)]
    #[schemars(required, range(min = 0i64, max = 4294967295i64))]
    pub status: u32,
}

/// Body of a direct response, as text or base64 bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"not": {"anyOf": [{"required": ["string"]}, {"required": ["bytes"]}]}}, {"required": ["string"]}, {"required": ["bytes"]}]))]
pub struct HttpBody {
    /// Base64 as in protobuf JSON; kept as written.
    #[serde(rename = "bytes", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "byte"))]
    pub bytes: Option<String>,
    #[serde(rename = "string", default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
}

/// Faults injected into matching requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(rename = "abort", default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<HttpFaultInjectionAbort>,
    #[serde(rename = "delay", default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HttpFaultInjectionDelay>,
}

/// Aborts a percentage of requests with an HTTP, gRPC or HTTP/2 error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"not": {"anyOf": [{"required": ["httpStatus"]}, {"required": ["grpcStatus"]}, {"required": ["http2Error"]}]}}, {"required": ["httpStatus"]}, {"required": ["grpcStatus"]}, {"required": ["http2Error"]}]))]
pub struct HttpFaultInjectionAbort {
    #[serde(
        rename = "grpcStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub grpc_status: Option<String>,
    #[serde(
        rename = "http2Error",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http2_error: Option<String>,
    #[serde(
        rename = "httpStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_status: Option<i32>,
    #[serde(
        rename = "percentage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub percentage: Option<Percent>,
}

/// A percentage in [0, 100] with fractions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    #[serde(rename = "value", default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// Delays a percentage of requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"not": {"anyOf": [{"required": ["fixedDelay"]}, {"required": ["exponentialDelay"]}]}}, {"required": ["fixedDelay"]}, {"required": ["exponentialDelay"]}]))]
pub struct HttpFaultInjectionDelay {
    #[serde(
        rename = "exponentialDelay",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub exponential_delay: Option<String>,
    #[serde(
        rename = "fixedDelay",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub fixed_delay: Option<String>,
    #[serde(rename = "percent", default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    #[serde(
        rename = "percentage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub percentage: Option<Percent>,
}

/// Header edits for requests and responses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    #[serde(rename = "request", default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(rename = "response", default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Set, add or remove headers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(rename = "add", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(rename = "remove", default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    #[serde(rename = "set", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
}

/// Conditions a request must meet for a route to apply (all fields ANDed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(rename = "authority", default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    #[serde(rename = "gateways", default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(
        rename = "headers",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(
        rename = "ignoreUriCase",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ignore_uri_case: Option<bool>,
    #[serde(rename = "method", default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub port: Option<u32>,
    #[serde(
        rename = "queryParams",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(rename = "scheme", default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(
        rename = "sourceLabels",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub source_labels: BTreeMap<String, String>,
    #[serde(
        rename = "sourceNamespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_namespace: Option<String>,
    #[serde(
        rename = "statPrefix",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stat_prefix: Option<String>,
    #[serde(rename = "uri", default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(
        rename = "withoutHeaders",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub without_headers: BTreeMap<String, StringMatch>,
}

/// A service (host), optional subset and port that traffic is sent to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(rename = "host", default)]
    #[schemars(required)]
    pub host: String,
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(rename = "subset", default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

/// A port by number.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    #[serde(rename = "number", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub number: Option<u32>,
}

/// A mirror destination with the share of traffic copied to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    #[serde(rename = "destination", default)]
    #[schemars(required)]
    pub destination: Destination,
    #[serde(
        rename = "percentage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub percentage: Option<Percent>,
}

/// An HTTP redirect response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"not": {"anyOf": [{"required": ["port"]}, {"required": ["derivePort"]}]}}, {"required": ["port"]}, {"required": ["derivePort"]}]))]
pub struct HttpRedirect {
    #[serde(rename = "authority", default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(
        rename = "derivePort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub derive_port: Option<RedirectPortSelection>,
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub port: Option<u32>,
    #[serde(
        rename = "prefixRewrite",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prefix_rewrite: Option<String>,
    #[serde(
        rename = "redirectCode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub redirect_code: Option<u32>,
    #[serde(rename = "scheme", default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(rename = "uri", default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Retry policy of a route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(rename = "attempts", default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    #[serde(rename = "backoff", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub backoff: Option<String>,
    #[serde(
        rename = "perTryTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub per_try_timeout: Option<String>,
    #[serde(
        rename = "retryIgnorePreviousHosts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true))]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(rename = "retryOn", default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    #[serde(
        rename = "retryRemoteLocalities",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true))]
    pub retry_remote_localities: Option<bool>,
}

/// Rewrites applied to the request before it is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRewrite {
    #[serde(rename = "authority", default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(rename = "uri", default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(
        rename = "uriRegexRewrite",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Regex-based rewrite of the path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<String>,
    #[serde(rename = "rewrite", default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
}

/// A weighted destination of an HTTP route, with its own header edits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRouteDestination {
    #[serde(rename = "destination", default)]
    #[schemars(required)]
    pub destination: Destination,
    #[serde(rename = "headers", default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(rename = "weight", default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// One TCP route rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<L4MatchAttributes>,
    #[serde(rename = "route", default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Connection-level match conditions of a TCP route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(
        rename = "destinationSubnets",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destination_subnets: Vec<String>,
    #[serde(rename = "gateways", default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub port: Option<u32>,
    #[serde(
        rename = "sourceLabels",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub source_labels: BTreeMap<String, String>,
    #[serde(
        rename = "sourceNamespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_namespace: Option<String>,
    #[serde(
        rename = "sourceSubnet",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_subnet: Option<String>,
}

/// A weighted destination of a TCP or TLS route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteDestination {
    #[serde(rename = "destination", default)]
    #[schemars(required)]
    pub destination: Destination,
    #[serde(rename = "weight", default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// One TLS (SNI-based) route rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(rename = "match", default)]
    #[schemars(required)]
    pub r#match: Vec<TlsMatchAttributes>,
    #[serde(rename = "route", default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Match conditions of a TLS route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsMatchAttributes {
    #[serde(
        rename = "destinationSubnets",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destination_subnets: Vec<String>,
    #[serde(rename = "gateways", default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub port: Option<u32>,
    #[serde(rename = "sniHosts", default)]
    #[schemars(required)]
    pub sni_hosts: Vec<String>,
    #[serde(
        rename = "sourceLabels",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub source_labels: BTreeMap<String, String>,
    #[serde(
        rename = "sourceNamespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_namespace: Option<String>,
}

/// What happens to CORS preflight requests that match no allowed origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum UnmatchedPreflights {
    #[serde(rename = "UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "FORWARD")]
    Forward,
    #[serde(rename = "IGNORE")]
    Ignore,
}

/// How a redirect chooses its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RedirectPortSelection {
    #[serde(rename = "FROM_PROTOCOL_DEFAULT")]
    FromProtocolDefault,
    #[serde(rename = "FROM_REQUEST_PORT")]
    FromRequestPort,
}
