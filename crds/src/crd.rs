//! CustomResourceDefinitions for every kind: names, versions, printer columns and status from the kube
//! derive; the OpenAPI schema from the Rust types (schemars), rewritten into a Kubernetes structural schema.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceValidation, JSONSchemaProps,
};
use kube::CustomResourceExt;
use schemars::JsonSchema;
use schemars::generate::{Contract, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::install::{MeshInstall, MeshInstallSpec, MeshInstallStatus};
use crate::networking::{
    DestinationRule, DestinationRuleSpec, Gateway, GatewaySpec, ServiceEntry, ServiceEntrySpec,
    Sidecar, SidecarSpec, VirtualService, VirtualServiceSpec, WorkloadEntry, WorkloadEntrySpec,
    WorkloadGroup, WorkloadGroupSpec,
};
use crate::object::Kind;
use crate::security::{
    AuthorizationPolicy, AuthorizationPolicySpec, PeerAuthentication, PeerAuthenticationSpec,
    RequestAuthentication, RequestAuthenticationSpec,
};
use crate::status::IstioStatus;

/// Rule that WorkloadEntry and ServiceEntry endpoints carry but WorkloadGroup templates (same message) do
/// not: a template's address comes from the registering VM.
fn address_required_rule() -> Value {
    json!({"message": "Address is required", "rule": "has(self.address) || has(self.network)"})
}

/// The CRD of one kind, every served version with the same schema, storage `v1` (`v1alpha1` for MeshInstall).
pub fn crd_for(kind: Kind) -> Result<CustomResourceDefinition, Error> {
    let (mut crd, spec) = match kind {
        Kind::VirtualService => (
            VirtualService::crd(),
            schema_of::<VirtualServiceSpec>(kind)?,
        ),
        Kind::DestinationRule => (
            DestinationRule::crd(),
            schema_of::<DestinationRuleSpec>(kind)?,
        ),
        Kind::Gateway => (Gateway::crd(), schema_of::<GatewaySpec>(kind)?),
        Kind::ServiceEntry => {
            let mut spec = schema_of::<ServiceEntrySpec>(kind)?;
            if let Some(items) = spec.pointer_mut("/properties/endpoints/items") {
                prepend_rule(items, address_required_rule());
            }
            (ServiceEntry::crd(), spec)
        }
        Kind::Sidecar => (Sidecar::crd(), schema_of::<SidecarSpec>(kind)?),
        Kind::WorkloadEntry => {
            let mut spec = schema_of::<WorkloadEntrySpec>(kind)?;
            prepend_rule(&mut spec, address_required_rule());
            (WorkloadEntry::crd(), spec)
        }
        Kind::WorkloadGroup => (WorkloadGroup::crd(), schema_of::<WorkloadGroupSpec>(kind)?),
        Kind::PeerAuthentication => (
            PeerAuthentication::crd(),
            schema_of::<PeerAuthenticationSpec>(kind)?,
        ),
        Kind::AuthorizationPolicy => (
            AuthorizationPolicy::crd(),
            schema_of::<AuthorizationPolicySpec>(kind)?,
        ),
        Kind::RequestAuthentication => (
            RequestAuthentication::crd(),
            schema_of::<RequestAuthenticationSpec>(kind)?,
        ),
        Kind::MeshInstall => (MeshInstall::crd(), schema_of::<MeshInstallSpec>(kind)?),
    };
    let status = if kind == Kind::MeshInstall {
        schema_of::<MeshInstallStatus>(kind)?
    } else {
        schema_of::<IstioStatus>(kind)?
    };
    let mut root = json!({"type": "object", "properties": {"spec": spec, "status": status}});
    if kind == Kind::MeshInstall
        || matches!(
            kind,
            Kind::ServiceEntry | Kind::WorkloadEntry | Kind::WorkloadGroup
        )
    {
        root["required"] = json!(["spec"]);
    }
    let props: JSONSchemaProps = serde_json::from_value(root).map_err(|e| Error::Schema {
        kind: kind.to_string(),
        message: e.to_string(),
    })?;

    let Some(template) = crd.spec.versions.first().cloned() else {
        return Err(Error::Schema {
            kind: kind.to_string(),
            message: "the derive produced no version".into(),
        });
    };
    crd.spec.versions = kind
        .versions()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut version = template.clone();
            version.name = (*v).to_string();
            version.served = true;
            version.storage = i == 0;
            version.schema = Some(CustomResourceValidation {
                open_api_v3_schema: Some(props.clone()),
            });
            version
        })
        .collect();
    crd.metadata.labels = Some(
        [(
            "app.kubernetes.io/part-of".to_string(),
            "halyard".to_string(),
        )]
        .into(),
    );
    if kind != Kind::MeshInstall {
        // As Istio's chart does: uninstalling must not delete users' config by accident.
        crd.metadata.annotations =
            Some([("helm.sh/resource-policy".to_string(), "keep".to_string())].into());
    }
    Ok(crd)
}

/// Every CRD the operator installs: the ten Istio kinds and MeshInstall.
pub fn all_crds() -> Result<Vec<CustomResourceDefinition>, Error> {
    Kind::ALL.into_iter().map(crd_for).collect()
}

fn prepend_rule(schema: &mut Value, rule: Value) {
    if let Some(obj) = schema.as_object_mut() {
        let rules = obj
            .entry("x-kubernetes-validations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = rules.as_array_mut() {
            list.insert(0, rule);
        }
    }
}

/// Marks a field Istio's schema declares `nullable` (protobuf wrapper types such as BoolValue).
const NULLABLE_MARKER: &str = "x-halyard-nullable";

/// Formats kept in schemas: OpenAPI's numeric formats and the string formats Kubernetes validates.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
];

/// The structural schema of `T`.
pub fn schema_of<T: JsonSchema>(kind: Kind) -> Result<Value, Error> {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
            // Istio's types default every field (so bad input still decodes and the validator reports it);
            // what is required is what is always serialized, which the serialize contract reads off
            // `skip_serializing_if`. MeshInstall's defaults are real defaults, so it uses deserialization.
            if kind != Kind::MeshInstall {
                s.contract = Contract::Serialize;
            }
        })
        .into_generator();
    let mut v = generator.into_root_schema_for::<T>().to_value();
    structuralize(&mut v, kind == Kind::MeshInstall);
    if let Some(path) = first_non_structural(&v, "") {
        return Err(Error::Schema {
            kind: kind.to_string(),
            message: format!("non-structural node at {path}"),
        });
    }
    Ok(v)
}

/// Rewrites schemars' output into what the API server accepts as structural: no `$ref`/definitions/titles,
/// `Option<T>` as `T`, no `additionalProperties: false` (unknown fields are pruned anyway),
/// `const` as a one-value enum. Defaults are dropped for Istio's kinds (Istio's CRDs have none, and the API
/// server must not invent values the user did not write); MeshInstall keeps its non-empty ones.
fn structuralize(v: &mut Value, keep_defaults: bool) {
    let Some(obj) = v.as_object_mut() else { return };
    for key in [
        "$schema",
        "title",
        "definitions",
        "$defs",
        "components",
        "examples",
        "example",
    ] {
        obj.remove(key);
    }
    collapse_nullable(obj);
    if let Some(Value::Array(types)) = obj.get("type").cloned() {
        let non_null: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if let [single] = non_null.as_slice() {
            obj.insert("type".into(), single.clone());
        }
    }
    // schemars writes `uint32` and friends; the API server knows only OpenAPI's formats (as Istio uses).
    if obj
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !KNOWN_FORMATS.contains(&f))
    {
        obj.remove("format");
    }
    if let Some(c) = obj.remove("const") {
        obj.insert("enum".into(), Value::Array(vec![c]));
    }
    if let Some(Value::Array(values)) = obj.get_mut("enum") {
        values.retain(|x| !x.is_null());
    }
    // `Option` only means "may be absent"; `nullable` stays where Istio's schema has it (wrapper types),
    // which the types mark with `x-halyard-nullable`.
    let istio_nullable = obj.remove(NULLABLE_MARKER) == Some(Value::Bool(true));
    obj.remove("nullable");
    if istio_nullable {
        obj.insert("nullable".into(), Value::Bool(true));
    }
    if matches!(obj.get("additionalProperties"), Some(Value::Bool(_))) {
        obj.remove("additionalProperties");
    }
    match obj.get("default") {
        Some(d) if !keep_defaults || is_empty_value(d) => {
            obj.remove("default");
        }
        _ => {}
    }
    if obj.get("enum").is_some() && !obj.contains_key("type") {
        obj.insert("type".into(), Value::String("string".into()));
    }
    if obj.get("properties").is_some() && !obj.contains_key("type") {
        obj.insert("type".into(), Value::String("object".into()));
    }
    for key in ["properties"] {
        if let Some(Value::Object(props)) = obj.get_mut(key) {
            for p in props.values_mut() {
                structuralize(p, keep_defaults);
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(sub) = obj.get_mut(key) {
            structuralize(sub, keep_defaults);
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(Value::Array(subs)) = obj.get_mut(key) {
            for s in subs {
                structuralize(s, keep_defaults);
            }
        }
    }
}

/// `anyOf: [T, {nullable}]` (how schemars writes `Option<T>` of an inlined type) becomes `T`.
fn collapse_nullable(obj: &mut Map<String, Value>) {
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = obj.get(key) else {
            continue;
        };
        let (nulls, others): (Vec<&Value>, Vec<&Value>) =
            branches.iter().partition(|b| is_null_schema(b));
        if nulls.is_empty() || others.len() != 1 {
            continue;
        }
        let Some(Value::Object(inner)) = others.first().map(|v| (*v).clone()) else {
            continue;
        };
        obj.remove(key);
        for (k, val) in inner {
            obj.entry(k).or_insert(val);
        }
    }
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type") == Some(&json!("null"))
        || v.get("const") == Some(&Value::Null)
        || v.get("enum") == Some(&json!([null]))
        || (v.get("nullable") == Some(&Value::Bool(true))
            && v.get("type").is_none()
            && v.get("properties").is_none())
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The first node (as a JSON pointer) that breaks Kubernetes' structural-schema rules, if any: every node
/// with a type (or int-or-string / preserve-unknown-fields), no `$ref`, no `additionalProperties` beside
/// `properties`, and logical junctors (`oneOf`, `anyOf`, `allOf`, `not`) carrying only value validations.
pub fn first_non_structural(v: &Value, path: &str) -> Option<String> {
    let obj = v.as_object()?;
    if obj.contains_key("$ref") {
        return Some(format!("{path} ($ref)"));
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.get("type").is_some_and(Value::is_string) && !int_or_string && !preserve {
        return Some(format!("{path} (no type)"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        return Some(format!("{path} (properties with additionalProperties)"));
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, p) in props {
            if let Some(bad) = first_non_structural(p, &format!("{path}/properties/{k}")) {
                return Some(bad);
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub @ Value::Object(_)) = obj.get(key)
            && let Some(bad) = first_non_structural(sub, &format!("{path}/{key}"))
        {
            return Some(bad);
        }
    }
    for key in ["oneOf", "anyOf", "allOf", "not"] {
        if let Some(sub) = obj.get(key)
            && !int_or_string
            && let Some(bad) = junctor_violation(sub, &format!("{path}/{key}"))
        {
            return Some(bad);
        }
    }
    None
}

/// Inside a junctor only value validations may appear (no types, no descriptions, no defaults, ...).
fn junctor_violation(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| junctor_violation(x, &format!("{path}/{i}"))),
        Value::Object(obj) => {
            for forbidden in [
                "type",
                "description",
                "default",
                "nullable",
                "additionalProperties",
                "$ref",
            ] {
                if obj.contains_key(forbidden) {
                    return Some(format!("{path} ({forbidden} inside a junctor)"));
                }
            }
            obj.iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "oneOf" | "anyOf" | "allOf" | "not" | "properties" | "items"
                    )
                })
                .find_map(|(k, x)| match x {
                    Value::Object(m) if k == "properties" => m.iter().find_map(|(name, p)| {
                        junctor_violation(p, &format!("{path}/properties/{name}"))
                    }),
                    _ => junctor_violation(x, &format!("{path}/{k}")),
                })
        }
        _ => None,
    }
}

/// The YAML of a list of CRDs as one multi-document stream.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> Result<String, Error> {
    let mut out = String::new();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let text = serde_yaml::to_string(crd).map_err(|e| Error::Schema {
            kind: name,
            message: format!("cannot write YAML: {e}"),
        })?;
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}

/// File name of a CRD in `crds/generated/`: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_builds_with_istio_versions() {
        let crds = all_crds().unwrap();
        assert_eq!(crds.len(), 11);
        let vs = &crds[0];
        assert_eq!(
            vs.metadata.name.as_deref(),
            Some("virtualservices.networking.istio.io")
        );
        let versions: Vec<_> = vs
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.storage))
            .collect();
        assert_eq!(
            versions,
            [("v1", true), ("v1beta1", false), ("v1alpha3", false)]
        );
    }

    #[test]
    fn structural_check_catches_untyped_nodes_and_refs() {
        assert!(
            first_non_structural(&json!({"type": "object", "properties": {"a": {}}}), "").is_some()
        );
        assert!(first_non_structural(&json!({"$ref": "#/x"}), "").is_some());
        assert!(
            first_non_structural(
                &json!({"type": "object", "oneOf": [{"type": "string"}]}),
                ""
            )
            .is_some()
        );
        assert!(
            first_non_structural(
                &json!({"type": "object", "oneOf": [{"required": ["a"]}]}),
                ""
            )
            .is_none()
        );
        assert!(first_non_structural(&json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}), "").is_none());
    }
}
