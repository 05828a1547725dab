//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;
use crate::networking::PortSelector;
use crate::status::IstioStatus;

/// Policies applied to traffic for a service after routing (`networking.istio.io` DestinationRule).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    doc = "Istio DestinationRule: subsets and traffic policy of a service. Served as v1, v1beta1, v1alpha3.",
    plural = "destinationrules",
    singular = "destinationrule",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "networking-istio-io",
    shortname = "dr",
    printcolumn = r#"{"name": "Host", "type": "string", "jsonPath": ".spec.host", "description": "Service this policy applies to"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time since creation"}"#
)]
#[serde(deny_unknown_fields)]
pub struct DestinationRuleSpec {
    #[serde(rename = "exportTo", default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(rename = "host", default)]
    #[schemars(required)]
    pub host: String,
    #[serde(rename = "subsets", default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    #[serde(
        rename = "trafficPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(
        rename = "workloadSelector",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workload_selector: Option<WorkloadSelector>,
}

/// A named subset of a service's endpoints, selected by labels, with its own policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    #[serde(rename = "labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "name", default)]
    #[schemars(required)]
    pub name: String,
    #[serde(
        rename = "trafficPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load balancing, connection pool, outlier detection and TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(
        rename = "connectionPool",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(
        rename = "loadBalancer",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(
        rename = "outlierDetection",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(
        rename = "portLevelSettings",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(max = 4096))]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(
        rename = "proxyProtocol",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(
        rename = "retryBudget",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_budget: Option<RetryBudget>,
    #[serde(rename = "tls", default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    #[serde(rename = "tunnel", default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
}

/// Connection limits for TCP and HTTP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(rename = "http", default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
    #[serde(rename = "tcp", default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
}

/// HTTP connection pool settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(
        rename = "h2UpgradePolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(
        rename = "http1MaxPendingRequests",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http1_max_pending_requests: Option<i32>,
    #[serde(
        rename = "http2KeepAlive",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http2_keep_alive: Option<Http2KeepAlive>,
    #[serde(
        rename = "http2MaxRequests",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http2_max_requests: Option<i32>,
    #[serde(
        rename = "idleTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub idle_timeout: Option<String>,
    #[serde(
        rename = "maxConcurrentStreams",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_concurrent_streams: Option<i32>,
    #[serde(
        rename = "maxRequestsPerConnection",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_requests_per_connection: Option<i32>,
    #[serde(
        rename = "maxRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_retries: Option<i32>,
    #[serde(
        rename = "useClientProtocol",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub use_client_protocol: Option<bool>,
}

/// HTTP/2 keepalive pings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http2KeepAlive {
    #[serde(rename = "interval", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub interval: Option<String>,
    #[serde(rename = "timeout", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub timeout: Option<String>,
}

/// TCP connection pool settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(
        rename = "connectTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub connect_timeout: Option<String>,
    #[serde(
        rename = "idleTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<String>,
    #[serde(
        rename = "maxConnectionDuration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub max_connection_duration: Option<String>,
    #[serde(
        rename = "maxConnections",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_connections: Option<i32>,
    #[serde(
        rename = "tcpKeepalive",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// TCP keepalive settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(rename = "interval", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub interval: Option<String>,
    #[serde(rename = "probes", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub probes: Option<u32>,
    #[serde(rename = "time", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub time: Option<String>,
}

/// Load-balancing policy; one of `simple`, `consistentHash`, `backendUtilization`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"not": {"anyOf": [{"required": ["simple"]}, {"required": ["consistentHash"]}, {"required": ["backendUtilization"]}]}}, {"required": ["simple"]}, {"required": ["consistentHash"]}, {"required": ["backendUtilization"]}]))]
pub struct LoadBalancerSettings {
    #[serde(
        rename = "backendUtilization",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_utilization: Option<BackendUtilizationLb>,
    #[serde(
        rename = "consistentHash",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub consistent_hash: Option<ConsistentHashLb>,
    #[serde(
        rename = "localityLbSetting",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    #[serde(rename = "simple", default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(rename = "warmup", default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
    #[serde(
        rename = "warmupDurationSecs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub warmup_duration_secs: Option<String>,
    #[serde(
        rename = "zoneAwareLbSetting",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
}

/// Load balancing weighted by backends' reported utilization.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendUtilizationLb {
    #[serde(
        rename = "errorUtilizationPenaltyPercent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub error_utilization_penalty_percent: Option<u32>,
    #[serde(
        rename = "metricNamesForComputingUtilization",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub metric_names_for_computing_utilization: Vec<String>,
    #[serde(
        rename = "weightExpirationPeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub weight_expiration_period: Option<String>,
    #[serde(
        rename = "weightStabilizationPeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub weight_stabilization_period: Option<String>,
    #[serde(
        rename = "weightUpdatePeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub weight_update_period: Option<String>,
}

/// Consistent-hash (sticky) load balancing and what is hashed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = [{"oneOf": [{"not": {"anyOf": [{"required": ["httpHeaderName"]}, {"required": ["httpCookie"]}, {"required": ["useSourceIp"]}, {"required": ["httpQueryParameterName"]}]}}, {"required": ["httpHeaderName"]}, {"required": ["httpCookie"]}, {"required": ["useSourceIp"]}, {"required": ["httpQueryParameterName"]}]}, {"oneOf": [{"not": {"anyOf": [{"required": ["ringHash"]}, {"required": ["maglev"]}]}}, {"required": ["ringHash"]}, {"required": ["maglev"]}]}]))]
pub struct ConsistentHashLb {
    #[serde(
        rename = "httpCookie",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_cookie: Option<HttpCookie>,
    #[serde(
        rename = "httpHeaderName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_header_name: Option<String>,
    #[serde(
        rename = "httpQueryParameterName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_query_parameter_name: Option<String>,
    #[serde(rename = "maglev", default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    #[serde(
        rename = "minimumRingSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64))]
    pub minimum_ring_size: Option<u64>,
    #[serde(rename = "ringHash", default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(
        rename = "useSourceIp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub use_source_ip: Option<bool>,
}

/// The cookie used as hash key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCookie {
    #[serde(rename = "attributes", default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<HttpCookieAttribute>,
    #[serde(rename = "name", default)]
    #[schemars(required)]
    pub name: String,
    #[serde(rename = "path", default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(rename = "ttl", default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// An attribute of the generated hash cookie.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCookieAttribute {
    #[serde(rename = "name", default)]
    #[schemars(required)]
    pub name: String,
    #[serde(rename = "value", default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Maglev hashing parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MagLev {
    #[serde(rename = "tableSize", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64))]
    pub table_size: Option<u64>,
}

/// Ring-hash parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RingHash {
    #[serde(
        rename = "minimumRingSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64))]
    pub minimum_ring_size: Option<u64>,
}

/// Locality-weighted distribution and failover.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    #[serde(rename = "distribute", default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityLoadBalancerSettingDistribute>,
    #[serde(rename = "enabled", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-halyard-nullable" = true))]
    pub enabled: Option<bool>,
    #[serde(rename = "failover", default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityLoadBalancerSettingFailover>,
    #[serde(
        rename = "failoverPriority",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failover_priority: Vec<String>,
}

/// Share of traffic from one locality to others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalityLoadBalancerSettingDistribute {
    #[serde(rename = "from", default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(rename = "to", default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"maximum": 4294967295u32, "minimum": 0, "type": "integer"}))]
    pub to: BTreeMap<String, u32>,
}

/// Where traffic goes when a region has no healthy endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalityLoadBalancerSettingFailover {
    #[serde(rename = "from", default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(rename = "to", default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Slow start for new endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfiguration {
    #[serde(
        rename = "aggression",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 0i64))]
    pub aggression: Option<f64>,
    #[serde(rename = "duration", default)]
    #[schemars(required, extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub duration: String,
    #[serde(
        rename = "minimumPercent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 0i64, max = 100i64))]
    pub minimum_percent: Option<f64>,
}

/// Zone-aware routing settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneAwareLoadBalancerSetting {
    #[serde(rename = "enabled", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-halyard-nullable" = true))]
    pub enabled: Option<bool>,
    #[serde(rename = "failover", default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityLoadBalancerSettingFailover>,
    #[serde(
        rename = "failoverPriority",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failover_priority: Vec<String>,
    #[serde(
        rename = "minClusterSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 1i64, max = 4294967295i64))]
    pub min_cluster_size: Option<u32>,
}

/// Ejection of failing endpoints from the pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(
        rename = "baseEjectionTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub base_ejection_time: Option<String>,
    #[serde(
        rename = "consecutive5xxErrors",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 0i64, max = 4294967295i64))]
    pub consecutive5xx_errors: Option<u32>,
    #[serde(
        rename = "consecutiveErrors",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_errors: Option<i32>,
    #[serde(
        rename = "consecutiveGatewayErrors",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 0i64, max = 4294967295i64))]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(
        rename = "consecutiveLocalOriginFailures",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 0i64, max = 4294967295i64))]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(rename = "interval", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid duration greater than 1ms", "rule": "duration(self) >= duration('1ms')"}]))]
    pub interval: Option<String>,
    #[serde(
        rename = "maxEjectionPercent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_ejection_percent: Option<i32>,
    #[serde(
        rename = "minHealthPercent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub min_health_percent: Option<i32>,
    #[serde(
        rename = "outlierDetectionHttpErrorCodes",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(extend("items" = {"maximum": 599, "minimum": 100, "type": "integer"}))]
    pub outlier_detection_http_error_codes: Vec<u32>,
    #[serde(
        rename = "splitExternalLocalOriginErrors",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub split_external_local_origin_errors: Option<bool>,
}

/// Traffic policy for one port of the service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(
        rename = "connectionPool",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(
        rename = "loadBalancer",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(
        rename = "outlierDetection",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(rename = "tls", default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// TLS used by the client side of a connection to the destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(
        rename = "caCertificates",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_certificates: Option<String>,
    #[serde(rename = "caCrl", default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    #[serde(
        rename = "clientCertificate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate: Option<String>,
    #[serde(
        rename = "credentialName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub credential_name: Option<String>,
    #[serde(
        rename = "insecureSkipVerify",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true))]
    pub insecure_skip_verify: Option<bool>,
    #[serde(rename = "mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    #[serde(
        rename = "privateKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_key: Option<String>,
    #[serde(rename = "sni", default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(
        rename = "subjectAltNames",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subject_alt_names: Vec<String>,
}

/// PROXY protocol header sent upstream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocol {
    #[serde(rename = "version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// Limit on concurrent retries relative to active requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(
        rename = "budgetInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub budget_interval: Option<String>,
    #[serde(
        rename = "minRetryConcurrency",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub min_retry_concurrency: Option<u32>,
    #[serde(rename = "percent", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-halyard-nullable" = true), range(min = 0i64, max = 100i64))]
    pub percent: Option<f64>,
}

/// Tunnelling of TCP over HTTP CONNECT or POST.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelSettings {
    #[serde(rename = "protocol", default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(rename = "targetHost", default)]
    #[schemars(required)]
    pub target_host: String,
    #[serde(rename = "targetPort", default)]
    #[schemars(required, range(min = 0i64, max = 4294967295i64))]
    pub target_port: u32,
}

/// Whether HTTP/1.1 connections are upgraded to HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum H2UpgradePolicy {
    #[serde(rename = "DEFAULT")]
    Default,
    #[serde(rename = "DO_NOT_UPGRADE")]
    DoNotUpgrade,
    #[serde(rename = "UPGRADE")]
    Upgrade,
}

/// Simple load-balancing algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SimpleLb {
    #[serde(rename = "UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "LEAST_CONN")]
    LeastConn,
    #[serde(rename = "RANDOM")]
    Random,
    #[serde(rename = "PASSTHROUGH")]
    Passthrough,
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
    #[serde(rename = "LEAST_REQUEST")]
    LeastRequest,
}

/// TLS mode towards the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ClientTlsMode {
    #[serde(rename = "DISABLE")]
    Disable,
    #[serde(rename = "SIMPLE")]
    Simple,
    #[serde(rename = "MUTUAL")]
    Mutual,
    #[serde(rename = "ISTIO_MUTUAL")]
    IstioMutual,
}

/// PROXY protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProxyProtocolVersion {
    #[serde(rename = "V1")]
    V1,
    #[serde(rename = "V2")]
    V2,
}
