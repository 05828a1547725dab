//! One entry point from a JSON value to a typed object: `apiVersion` + `kind` dispatch, unknown kinds,
//! unsupported versions and unknown fields reported with where they are.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::install::MeshInstall;
use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry, WorkloadGroup,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};

/// Every kind this crate types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    WorkloadGroup,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    MeshInstall,
}

impl Kind {
    /// All kinds, Istio's first.
    pub const ALL: [Kind; 11] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::MeshInstall,
    ];

    /// The Istio kinds (all but MeshInstall).
    pub fn istio() -> impl Iterator<Item = Kind> {
        Self::ALL.into_iter().filter(|k| *k != Kind::MeshInstall)
    }

    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::MeshInstall => "MeshInstall",
        }
    }

    /// Looks a kind up by its `kind` string.
    pub fn from_name(kind: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The resource name in API paths (`virtualservices`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::VirtualService => "virtualservices",
            Kind::DestinationRule => "destinationrules",
            Kind::Gateway => "gateways",
            Kind::ServiceEntry => "serviceentries",
            Kind::Sidecar => "sidecars",
            Kind::WorkloadEntry => "workloadentries",
            Kind::WorkloadGroup => "workloadgroups",
            Kind::PeerAuthentication => "peerauthentications",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::RequestAuthentication => "requestauthentications",
            Kind::MeshInstall => "meshinstalls",
        }
    }

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                crate::security::GROUP
            }
            Kind::MeshInstall => crate::install::GROUP,
            _ => crate::networking::GROUP,
        }
    }

    /// Served versions, the storage version first.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                crate::security::VERSIONS
            }
            Kind::MeshInstall => &[crate::install::VERSION],
            _ => crate::networking::VERSIONS,
        }
    }

    /// `group/version` of the storage version.
    pub fn storage_api_version(self) -> String {
        format!("{}/{}", self.group(), self.versions()[0])
    }

    /// Whether the object must carry a `spec` (Istio's schema requires it for these).
    fn spec_required(self) -> bool {
        matches!(
            self,
            Kind::ServiceEntry | Kind::WorkloadEntry | Kind::WorkloadGroup | Kind::MeshInstall
        )
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Istio kinds halyard recognises but does not implement, with why.
const NOT_IMPLEMENTED: &[(&str, &str, &str)] = &[
    (
        "networking.istio.io",
        "EnvoyFilter",
        "halyard has no Envoy; EnvoyFilter patches Envoy configuration",
    ),
    (
        "extensions.istio.io",
        "WasmPlugin",
        "halyard has no Envoy; WasmPlugin loads Envoy Wasm filters",
    ),
    (
        "extensions.istio.io",
        "TrafficExtension",
        "halyard has no Envoy; TrafficExtension configures Envoy filters",
    ),
    (
        "networking.istio.io",
        "ProxyConfig",
        "halyard has no Envoy; ProxyConfig tunes Envoy proxies",
    ),
    (
        "telemetry.istio.io",
        "Telemetry",
        "Telemetry is not implemented by halyard",
    ),
];

/// A typed object of one of the supported kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum IstioObject {
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    Gateway(Box<Gateway>),
    ServiceEntry(Box<ServiceEntry>),
    Sidecar(Box<Sidecar>),
    WorkloadEntry(Box<WorkloadEntry>),
    WorkloadGroup(Box<WorkloadGroup>),
    PeerAuthentication(Box<PeerAuthentication>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    RequestAuthentication(Box<RequestAuthentication>),
    MeshInstall(Box<MeshInstall>),
}

/// Applies `$body` to the typed object inside any variant.
macro_rules! each_variant {
    ($self:expr, $o:ident => $body:expr) => {
        match $self {
            IstioObject::VirtualService($o) => $body,
            IstioObject::DestinationRule($o) => $body,
            IstioObject::Gateway($o) => $body,
            IstioObject::ServiceEntry($o) => $body,
            IstioObject::Sidecar($o) => $body,
            IstioObject::WorkloadEntry($o) => $body,
            IstioObject::WorkloadGroup($o) => $body,
            IstioObject::PeerAuthentication($o) => $body,
            IstioObject::AuthorizationPolicy($o) => $body,
            IstioObject::RequestAuthentication($o) => $body,
            IstioObject::MeshInstall($o) => $body,
        }
    };
}

impl IstioObject {
    pub fn kind(&self) -> Kind {
        match self {
            IstioObject::VirtualService(_) => Kind::VirtualService,
            IstioObject::DestinationRule(_) => Kind::DestinationRule,
            IstioObject::Gateway(_) => Kind::Gateway,
            IstioObject::ServiceEntry(_) => Kind::ServiceEntry,
            IstioObject::Sidecar(_) => Kind::Sidecar,
            IstioObject::WorkloadEntry(_) => Kind::WorkloadEntry,
            IstioObject::WorkloadGroup(_) => Kind::WorkloadGroup,
            IstioObject::PeerAuthentication(_) => Kind::PeerAuthentication,
            IstioObject::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            IstioObject::RequestAuthentication(_) => Kind::RequestAuthentication,
            IstioObject::MeshInstall(_) => Kind::MeshInstall,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each_variant!(self, o => o.meta())
    }

    /// `metadata.name`, empty when absent.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// `namespace/name` (or just `name` without a namespace), as messages print it.
    pub fn resource_name(&self) -> String {
        resource_name(self.namespace(), self.name())
    }

    /// The object as JSON at its storage apiVersion.
    pub fn to_value(&self) -> Result<Value, Error> {
        each_variant!(self, o => encode(o.as_ref(), self.kind(), &self.resource_name()))
    }
}

macro_rules! from_typed {
    ($($t:ident),*) => {
        $(impl From<$t> for IstioObject {
            fn from(o: $t) -> Self {
                IstioObject::$t(Box::new(o))
            }
        })*
    };
}
from_typed!(
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    WorkloadGroup,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    MeshInstall
);

/// A parsed object together with the apiVersion it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedObject {
    /// As written, e.g. `networking.istio.io/v1alpha3`.
    pub api_version: String,
    pub object: IstioObject,
}

impl ParsedObject {
    /// The object as JSON at the apiVersion it was written at.
    pub fn to_value(&self) -> Result<Value, Error> {
        let mut v = self.object.to_value()?;
        if let Some(map) = v.as_object_mut() {
            map.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        }
        Ok(v)
    }
}

fn encode<T: Serialize>(o: &T, kind: Kind, resource: &str) -> Result<Value, Error> {
    serde_json::to_value(o).map_err(|e| Error::Encode {
        kind: kind.to_string(),
        resource: resource.to_string(),
        message: e.to_string(),
    })
}

fn resource_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// What an object says it is, read without typing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    pub api_version: String,
    pub kind: String,
}

/// Reads `apiVersion` and `kind`.
pub fn type_info(value: &Value) -> Result<TypeInfo, Error> {
    let map = value.as_object().ok_or(Error::NotAnObject {
        found: json_type(value),
    })?;
    let get = |field: &'static str| {
        map.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(Error::MissingTypeField { field })
    };
    Ok(TypeInfo {
        api_version: get("apiVersion")?,
        kind: get("kind")?,
    })
}

/// Resolves `apiVersion` + `kind` to a supported kind, or says why not.
pub fn resolve_kind(info: &TypeInfo) -> Result<Kind, Error> {
    let (group, version) = info
        .api_version
        .split_once('/')
        .unwrap_or(("", info.api_version.as_str()));
    if let Some((_, _, reason)) = NOT_IMPLEMENTED
        .iter()
        .find(|(g, k, _)| *g == group && *k == info.kind)
    {
        return Err(Error::NotImplemented {
            api_version: info.api_version.clone(),
            kind: info.kind.clone(),
            reason,
        });
    }
    let kind = Kind::from_name(&info.kind)
        .filter(|k| k.group() == group)
        .ok_or_else(|| Error::UnrecognizedType {
            api_version: info.api_version.clone(),
            kind: info.kind.clone(),
        })?;
    if !kind.versions().contains(&version) {
        return Err(Error::UnsupportedVersion {
            api_version: info.api_version.clone(),
            kind: info.kind.clone(),
            served: kind
                .versions()
                .iter()
                .map(|v| format!("{group}/{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(kind)
}

const TOP_LEVEL_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Parses any supported object. Errors name the kind, the object and the field path.
pub fn parse_object(value: &Value) -> Result<ParsedObject, Error> {
    let info = type_info(value)?;
    let kind = resolve_kind(&info)?;
    let resource = {
        let meta = value.get("metadata");
        let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
        resource_name(field("namespace"), field("name").unwrap_or(""))
    };
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        if let Some(field) = map.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
            return Err(Error::UnknownField {
                kind: info.kind.clone(),
                resource,
                field: field.clone(),
                path: field.clone(),
            });
        }
        // Kubernetes fills in an empty metadata; Istio accepts a spec-less object for most kinds.
        map.entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if !kind.spec_required() {
            map.entry("spec")
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    let object = match kind {
        Kind::VirtualService => IstioObject::VirtualService(decode(&value, kind, &resource)?),
        Kind::DestinationRule => IstioObject::DestinationRule(decode(&value, kind, &resource)?),
        Kind::Gateway => IstioObject::Gateway(decode(&value, kind, &resource)?),
        Kind::ServiceEntry => IstioObject::ServiceEntry(decode(&value, kind, &resource)?),
        Kind::Sidecar => IstioObject::Sidecar(decode(&value, kind, &resource)?),
        Kind::WorkloadEntry => IstioObject::WorkloadEntry(decode(&value, kind, &resource)?),
        Kind::WorkloadGroup => IstioObject::WorkloadGroup(decode(&value, kind, &resource)?),
        Kind::PeerAuthentication => {
            IstioObject::PeerAuthentication(decode(&value, kind, &resource)?)
        }
        Kind::AuthorizationPolicy => {
            IstioObject::AuthorizationPolicy(decode(&value, kind, &resource)?)
        }
        Kind::RequestAuthentication => {
            IstioObject::RequestAuthentication(decode(&value, kind, &resource)?)
        }
        Kind::MeshInstall => IstioObject::MeshInstall(decode(&value, kind, &resource)?),
    };
    Ok(ParsedObject {
        api_version: info.api_version,
        object,
    })
}

fn decode<T: DeserializeOwned>(value: &Value, kind: Kind, resource: &str) -> Result<Box<T>, Error> {
    serde_path_to_error::deserialize(value)
        .map(Box::new)
        .map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            match unknown_field_name(&message) {
                Some(field) => Error::UnknownField {
                    kind: kind.to_string(),
                    resource: resource.to_string(),
                    field,
                    path,
                },
                None => Error::Decode {
                    kind: kind.to_string(),
                    resource: resource.to_string(),
                    path,
                    message,
                },
            }
        })
}

/// Serde words an unknown field as ``unknown field `foo`, expected one of ...``.
fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name.to_string())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vs(spec: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
               "metadata": {"name": "reviews", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn parses_and_keeps_the_written_version() {
        let v = vs(
            json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}),
        );
        let parsed = parse_object(&v).unwrap();
        assert_eq!(parsed.object.kind(), Kind::VirtualService);
        assert_eq!(parsed.object.resource_name(), "default/reviews");
        assert_eq!(parsed.to_value().unwrap(), v);
        assert_eq!(
            parsed.object.to_value().unwrap()["apiVersion"],
            "networking.istio.io/v1"
        );
        let IstioObject::VirtualService(vs) = &parsed.object else {
            panic!("wrong variant")
        };
        assert_eq!(vs.spec.http[0].route[0].destination.host, "reviews");
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let err = parse_object(&vs(json!({"hosts": ["a"], "http": [{"foo": 1}]}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field \"foo\" on VirtualService resource default/reviews at spec.http[0].foo"
        );
    }

    #[test]
    fn unknown_top_level_field() {
        let mut v = vs(json!({}));
        v["extra"] = json!(1);
        assert!(
            matches!(parse_object(&v), Err(Error::UnknownField { field, .. }) if field == "extra")
        );
    }

    #[test]
    fn wrong_type_names_the_path() {
        let err = parse_object(&vs(json!({"http": [{"timeout": 5}]}))).unwrap_err();
        let Error::Decode { path, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(path, "spec.http[0].timeout");
    }

    #[test]
    fn bad_enum_value_names_the_path_and_the_value() {
        let v = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                       "metadata": {"name": "r", "namespace": "ns"},
                       "spec": {"host": "r", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}});
        let err = parse_object(&v).unwrap_err();
        let Error::Decode {
            path,
            message,
            resource,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(path, "spec.trafficPolicy.loadBalancer.simple");
        assert_eq!(resource, "ns/r");
        assert!(message.contains("FASTEST"), "{message}");
        assert!(
            err.to_string()
                .starts_with("error decoding configuration: DestinationRule ns/r at ")
        );
    }

    #[test]
    fn unknown_field_inside_a_map_value() {
        let err = parse_object(&vs(
            json!({"http": [{"match": [{"headers": {"x-user": {"exakt": "a"}}}]}]}),
        ))
        .unwrap_err();
        let Error::UnknownField { field, path, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(field, "exakt");
        assert_eq!(path, "spec.http[0].match[0].headers.x-user.exakt");
    }

    #[test]
    fn unknown_kind_and_version_and_envoy_filter() {
        let err = parse_object(&json!({"apiVersion": "networking.istio.io/v1", "kind": "Foo"}))
            .unwrap_err();
        assert_eq!(err.to_string(), "unrecognized type Foo");
        let err = parse_object(&json!({"apiVersion": "networking.istio.io/v2", "kind": "Gateway"}))
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err}");
        let err = parse_object(
            &json!({"apiVersion": "security.istio.io/v1alpha3", "kind": "AuthorizationPolicy"}),
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err}");
        let err = parse_object(
            &json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter"}),
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotImplemented { .. }), "{err}");
        assert!(err.to_string().contains("halyard has no Envoy"));
        let err = parse_object(&json!({"kind": "Gateway"})).unwrap_err();
        assert!(matches!(
            err,
            Error::MissingTypeField {
                field: "apiVersion"
            }
        ));
        assert!(matches!(
            parse_object(&json!([1])),
            Err(Error::NotAnObject { .. })
        ));
    }

    #[test]
    fn kind_names_agree_with_the_derived_resources() {
        use kube::Resource;
        assert_eq!(VirtualService::plural(&()), Kind::VirtualService.plural());
        assert_eq!(
            AuthorizationPolicy::plural(&()),
            Kind::AuthorizationPolicy.plural()
        );
        assert_eq!(MeshInstall::plural(&()), Kind::MeshInstall.plural());
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
            let crd = crate::crd::crd_for(kind).unwrap();
            assert_eq!(crd.spec.names.plural, kind.plural());
            assert_eq!(crd.spec.group, kind.group());
            assert_eq!(crd.spec.names.kind, kind.as_str());
        }
        let obj: IstioObject = Gateway::new("gw", Default::default()).into();
        assert_eq!(obj.kind(), Kind::Gateway);
        assert_eq!(obj.name(), "gw");
    }

    #[test]
    fn spec_less_objects() {
        let v = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                       "metadata": {"name": "deny-all", "namespace": "foo"}});
        let parsed = parse_object(&v).unwrap();
        assert_eq!(parsed.object.kind(), Kind::AuthorizationPolicy);
        let v = json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "x"}});
        assert!(parse_object(&v).is_err());
    }
}
