//! Generated once from the field list of Istio's CRD schema, then maintained by hand.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::IstioStatus;

/// A load balancer at the mesh edge: listening servers and the workloads that implement them.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    doc = "Istio Gateway: ports, hosts and TLS of an edge proxy. Served as v1, v1beta1, v1alpha3.",
    plural = "gateways",
    singular = "gateway",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    derive = "PartialEq",
    category = "istio-io",
    category = "networking-istio-io",
    shortname = "gw"
)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    #[serde(
        rename = "selector",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub selector: BTreeMap<String, String>,
    #[serde(rename = "servers", default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
}

/// One listening port of a gateway with its hosts and TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[serde(rename = "bind", default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(
        rename = "defaultEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_endpoint: Option<String>,
    #[serde(rename = "hosts", default)]
    #[schemars(required)]
    pub hosts: Vec<String>,
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "port", default)]
    #[schemars(required)]
    pub port: Port,
    #[serde(rename = "tls", default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
}

/// A port with its number, protocol and name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    #[serde(rename = "name", default)]
    #[schemars(required)]
    pub name: String,
    #[serde(rename = "number", default)]
    #[schemars(required, range(min = 0i64, max = 4294967295i64))]
    pub number: u32,
    #[serde(rename = "protocol", default)]
    #[schemars(required)]
    pub protocol: String,
    #[serde(
        rename = "targetPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0i64, max = 4294967295i64))]
    pub target_port: Option<u32>,
}

/// TLS settings of a server (gateway or sidecar ingress listener).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "only one of credentialNames or tlsCertificates can be set", "rule": "(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1"}, {"message": "only one of credentialName or credentialNames can be set", "rule": "(has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1"}, {"message": "only one of credentialName or tlsCertificates can be set", "rule": "(has(self.credentialNames) ? 1 : 0) + (has(self.tlsCertificates) ? 1 : 0) <= 1"}]))]
pub struct ServerTlsSettings {
    #[serde(
        rename = "caCertCredentialName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_cert_credential_name: Option<String>,
    #[serde(
        rename = "caCertificates",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_certificates: Option<String>,
    #[serde(rename = "caCrl", default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    #[serde(
        rename = "cipherSuites",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher_suites: Vec<String>,
    #[serde(
        rename = "credentialName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub credential_name: Option<String>,
    #[serde(
        rename = "credentialNames",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(min = 1, max = 2))]
    pub credential_names: Vec<String>,
    #[serde(rename = "ecdhCurves", default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    #[serde(
        rename = "httpsRedirect",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub https_redirect: Option<bool>,
    #[serde(
        rename = "insecureSkipVerify",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-halyard-nullable" = true))]
    pub insecure_skip_verify: Option<bool>,
    #[serde(
        rename = "maxProtocolVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(
        rename = "minProtocolVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(rename = "mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    #[serde(
        rename = "privateKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_key: Option<String>,
    #[serde(
        rename = "serverCertificate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub server_certificate: Option<String>,
    #[serde(
        rename = "subjectAltNames",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subject_alt_names: Vec<String>,
    #[serde(
        rename = "tlsCertificates",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(min = 1, max = 2))]
    pub tls_certificates: Vec<ServerTlsSettingsTlsCertificate>,
    #[serde(
        rename = "verifyCertificateHash",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub verify_certificate_hash: Vec<String>,
    #[serde(
        rename = "verifyCertificateSpki",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub verify_certificate_spki: Vec<String>,
}

/// One certificate/key pair served by a TLS server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSettingsTlsCertificate {
    #[serde(
        rename = "caCertificates",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_certificates: Option<String>,
    #[serde(
        rename = "privateKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_key: Option<String>,
    #[serde(
        rename = "serverCertificate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub server_certificate: Option<String>,
}

/// TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TlsProtocol {
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    Tlsv10,
    #[serde(rename = "TLSV1_1")]
    Tlsv11,
    #[serde(rename = "TLSV1_2")]
    Tlsv12,
    #[serde(rename = "TLSV1_3")]
    Tlsv13,
}

/// How a server handles TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ServerTlsMode {
    #[serde(rename = "PASSTHROUGH")]
    Passthrough,
    #[serde(rename = "SIMPLE")]
    Simple,
    #[serde(rename = "MUTUAL")]
    Mutual,
    #[serde(rename = "AUTO_PASSTHROUGH")]
    AutoPassthrough,
    #[serde(rename = "ISTIO_MUTUAL")]
    IstioMutual,
    #[serde(rename = "OPTIONAL_MUTUAL")]
    OptionalMutual,
}
