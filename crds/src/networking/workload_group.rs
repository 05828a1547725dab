//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::networking::WorkloadEntrySpec;
use crate::status::IstioStatus;

/// A template for WorkloadEntries registered by VMs (`networking.istio.io` WorkloadGroup).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadGroup",
    doc = "Istio WorkloadGroup: template for auto-registered WorkloadEntries. Served as v1, v1beta1, v1alpha3.",
    plural = "workloadgroups",
    singular = "workloadgroup",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "networking-istio-io",
    shortname = "wg",
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": "Time since creation"}"#
)]
#[serde(deny_unknown_fields)]
pub struct WorkloadGroupSpec {
    #[serde(rename = "metadata", default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMetadata>,
    #[serde(rename = "probe", default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
    #[serde(rename = "template", default)]
    #[schemars(required)]
    pub template: WorkloadEntrySpec,
}

/// Labels and annotations copied to generated WorkloadEntries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectMetadata {
    #[serde(
        rename = "annotations",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("maxProperties" = 256))]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub labels: BTreeMap<String, String>,
}

/// Health check for VM workloads; one of `httpGet`, `tcpSocket`, `exec`, `grpc`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"not": {"anyOf": [{"required": ["httpGet"]}, {"required": ["tcpSocket"]}, {"required": ["exec"]}, {"required": ["grpc"]}]}}, {"required": ["httpGet"]}, {"required": ["tcpSocket"]}, {"required": ["exec"]}, {"required": ["grpc"]}]))]
pub struct ReadinessProbe {
    #[serde(rename = "exec", default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheckConfig>,
    #[serde(
        rename = "failureThreshold",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64))]
    pub failure_threshold: Option<i32>,
    #[serde(rename = "grpc", default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckConfig>,
    #[serde(rename = "httpGet", default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheckConfig>,
    #[serde(
        rename = "initialDelaySeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64))]
    pub initial_delay_seconds: Option<i32>,
    #[serde(
        rename = "periodSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64))]
    pub period_seconds: Option<i32>,
    #[serde(
        rename = "successThreshold",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64))]
    pub success_threshold: Option<i32>,
    #[serde(rename = "tcpSocket", default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    #[serde(
        rename = "timeoutSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64))]
    pub timeout_seconds: Option<i32>,
}

/// Command-based health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecHealthCheckConfig {
    #[serde(rename = "command", default)]
    #[schemars(required, extend("items" = {"minLength": 1, "type": "string"}))]
    pub command: Vec<String>,
}

/// gRPC health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheckConfig {
    #[serde(rename = "port", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0i64, max = 4294967295i64), extend("x-kubernetes-validations" = [{"message": "port must be between 1-65535", "rule": "0 < self && self <= 65535"}]))]
    pub port: Option<u32>,
    #[serde(rename = "service", default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// HTTP GET health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheckConfig {
    #[serde(rename = "host", default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(rename = "httpHeaders", default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
    #[serde(rename = "path", default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(rename = "port", default)]
    #[schemars(required, range(min = 0i64, max = 4294967295i64), extend("x-kubernetes-validations" = [{"message": "port must be between 1-65535", "rule": "0 < self && self <= 65535"}]))]
    pub port: u32,
    #[serde(rename = "scheme", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "scheme must be one of [HTTP, HTTPS]", "rule": "self in [\"\", \"HTTP\", \"HTTPS\"]"}]))]
    pub scheme: Option<String>,
}

/// A header sent by an HTTP health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-_A-Za-z0-9]+$"))]
    pub name: Option<String>,
    #[serde(rename = "value", default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// TCP connect health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheckConfig {
    #[serde(rename = "host", default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(rename = "port", default)]
    #[schemars(required, range(min = 0i64, max = 4294967295i64), extend("x-kubernetes-validations" = [{"message": "port must be between 1-65535", "rule": "0 < self && self <= 65535"}]))]
    pub port: u32,
}
