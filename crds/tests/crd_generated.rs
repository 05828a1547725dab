//! The generated CRDs: committed YAML is fresh, every schema is structural, and every field of Istio's own
//! CRD schema exists in ours with the same type and enum values.

#![allow(clippy::unwrap_used)] // test helpers: a failure to read the fixtures is a test failure

use std::collections::BTreeMap;
use std::path::PathBuf;

use halyard_crds::crd::{all_crds, file_name, first_non_structural, to_yaml};
use halyard_crds::object::Kind;
use halyard_crds::yaml::split_documents;
use serde_json::Value;

mod common;
use common::istio_dir;

const REGENERATE: &str = "cargo run -p halyard-crds --bin crdgen";

fn generated_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/generated"))
}

#[test]
fn committed_yaml_is_fresh() {
    let crds = all_crds().unwrap();
    let mut expected: BTreeMap<String, String> = crds
        .iter()
        .map(|c| (file_name(c), to_yaml(std::slice::from_ref(c)).unwrap()))
        .collect();
    expected.insert("all.yaml".into(), to_yaml(&crds).unwrap());
    let mut stale = Vec::new();
    for (name, text) in &expected {
        let path = generated_dir().join(name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == *text => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    for entry in std::fs::read_dir(generated_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !expected.contains_key(&name) {
            stale.push(format!("{name} is no longer generated"));
        }
    }
    assert!(
        stale.is_empty(),
        "generated CRDs are stale; run `{REGENERATE}`:\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_schema_is_structural() {
    for crd in all_crds().unwrap() {
        let name = crd.metadata.name.clone().unwrap();
        assert!(!crd.spec.versions.is_empty(), "{name}");
        assert_eq!(
            crd.spec.versions.iter().filter(|v| v.storage).count(),
            1,
            "{name}: one storage version"
        );
        for v in &crd.spec.versions {
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap();
            let schema = serde_json::to_value(schema).unwrap();
            assert_eq!(schema["type"], "object", "{name}");
            if let Some(bad) = first_non_structural(&schema, "") {
                panic!("{name} {}: {bad}", v.name);
            }
            let status = &schema["properties"]["status"];
            assert_eq!(status["type"], "object", "{name}");
            if name.ends_with("istio.io") {
                assert_eq!(
                    status["x-kubernetes-preserve-unknown-fields"], true,
                    "{name}"
                );
            }
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{name}: status subresource"
            );
        }
    }
}

#[test]
fn mesh_install_crd_is_cluster_scoped_v1alpha1() {
    let crds = all_crds().unwrap();
    let mi = crds
        .iter()
        .find(|c| c.spec.names.kind == "MeshInstall")
        .unwrap();
    assert_eq!(
        mi.metadata.name.as_deref(),
        Some("meshinstalls.install.halyard.dev")
    );
    assert_eq!(mi.spec.scope, "Cluster");
    assert_eq!(mi.spec.versions.len(), 1);
    assert_eq!(mi.spec.versions[0].name, "v1alpha1");
    let schema = serde_json::to_value(mi.spec.versions[0].schema.as_ref().unwrap()).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["namespace"]["default"], "istio-system");
    assert_eq!(
        spec["properties"]["profile"]["enum"],
        serde_json::json!(["default", "demo", "minimal"])
    );
    assert_eq!(
        spec["properties"]["injection"]["properties"]["nativeSidecar"]["enum"],
        serde_json::json!(["auto", "true", "false"])
    );
}

/// What is compared at one schema node.
#[derive(Debug, PartialEq)]
struct Node {
    ty: Option<String>,
    enums: Vec<String>,
    int_or_string: bool,
    /// Value validations Istio puts in its schema, compared as JSON (numbers as f64).
    constraints: BTreeMap<&'static str, Value>,
}

const CONSTRAINTS: &[&str] = &[
    "required",
    "format",
    "nullable",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "pattern",
    "oneOf",
    "allOf",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
];

/// Numbers as f64 and `required` as a set, so `0` and `0.0` or a different order do not differ.
fn normalize(key: &str, v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(v.clone(), |f| serde_json::json!(f)),
        Value::Array(a) if key == "required" => {
            let mut items: Vec<String> = a.iter().map(|x| x.to_string()).collect();
            items.sort();
            serde_json::json!(items)
        }
        _ => v.clone(),
    }
}

/// Every property path of a schema (`.spec.http[].route[].weight`) and what is compared there.
fn paths(schema: &Value, path: &str, out: &mut BTreeMap<String, Node>) {
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut enums: Vec<String> = schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    enums.sort();
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let constraints = CONSTRAINTS
        .iter()
        .filter_map(|k| schema.get(*k).map(|v| (*k, normalize(k, v))))
        .collect();
    out.insert(
        path.to_string(),
        Node {
            ty,
            enums,
            int_or_string,
            constraints,
        },
    );
    if let Some(Value::Object(props)) = schema.get("properties") {
        for (k, v) in props {
            paths(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        paths(items, &format!("{path}[]"), out);
    }
    if let Some(ap @ Value::Object(_)) = schema.get("additionalProperties") {
        paths(ap, &format!("{path}{{}}"), out);
    }
}

#[test]
fn schema_covers_istio_schema() {
    let Some(dir) = istio_dir() else { return };
    let text = std::fs::read_to_string(dir.join("crds/crd-all.gen.yaml")).unwrap();
    let istio: Vec<Value> = split_documents(&text)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    let ours = all_crds().unwrap();
    let mut problems = Vec::new();
    let mut compared = 0;
    for kind in Kind::istio() {
        let theirs = istio
            .iter()
            .find(|c| c["spec"]["names"]["kind"] == kind.as_str())
            .unwrap_or_else(|| panic!("{kind} not in Istio's CRDs"));
        let mine = ours
            .iter()
            .find(|c| c.spec.names.kind == kind.as_str())
            .unwrap();
        let mine = serde_json::to_value(mine).unwrap();
        for field in ["group", "scope"] {
            assert_eq!(mine["spec"][field], theirs["spec"][field], "{kind} {field}");
        }
        for field in ["plural", "singular", "shortNames", "categories", "kind"] {
            assert_eq!(
                mine["spec"]["names"][field], theirs["spec"]["names"][field],
                "{kind} names.{field}"
            );
        }
        let their_versions = theirs["spec"]["versions"].as_array().unwrap();
        let my_versions = mine["spec"]["versions"].as_array().unwrap();
        assert_eq!(
            my_versions.len(),
            their_versions.len(),
            "{kind}: served versions"
        );
        for tv in their_versions {
            let name = tv["name"].as_str().unwrap();
            let mv = my_versions
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{kind}: version {name} not served"));
            assert_eq!(mv["served"], tv["served"], "{kind} {name} served");
            assert_eq!(mv["storage"], tv["storage"], "{kind} {name} storage");
            let columns = |v: &Value| -> Vec<(Value, Value, Value)> {
                v["additionalPrinterColumns"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| (c["name"].clone(), c["type"].clone(), c["jsonPath"].clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            assert_eq!(columns(mv), columns(tv), "{kind} {name} printer columns");
            let mut their_paths = BTreeMap::new();
            let mut my_paths = BTreeMap::new();
            paths(&tv["schema"]["openAPIV3Schema"], "", &mut their_paths);
            paths(&mv["schema"]["openAPIV3Schema"], "", &mut my_paths);
            for path in my_paths.keys().filter(|p| !their_paths.contains_key(*p)) {
                problems.push(format!("{kind} {name}: {path} is not in Istio's schema"));
            }
            for (path, theirs) in &their_paths {
                compared += 1;
                let Some(mine) = my_paths.get(path) else {
                    problems.push(format!("{kind} {name}: missing {path}"));
                    continue;
                };
                if theirs.ty.is_some() && mine.ty != theirs.ty {
                    problems.push(format!(
                        "{kind} {name}: {path} type {:?}, Istio {:?}",
                        mine.ty, theirs.ty
                    ));
                }
                if mine.enums != theirs.enums {
                    problems.push(format!(
                        "{kind} {name}: {path} enum {:?}, Istio {:?}",
                        mine.enums, theirs.enums
                    ));
                }
                if mine.int_or_string != theirs.int_or_string {
                    problems.push(format!("{kind} {name}: {path} int-or-string differs"));
                }
                // Nothing stricter than Istio either: a constraint Istio lacks could refuse valid config.
                for key in mine.constraints.keys() {
                    if !theirs.constraints.contains_key(key) {
                        problems.push(format!("{kind} {name}: {path} has {key}, Istio does not"));
                    }
                }
                for (key, value) in &theirs.constraints {
                    if mine.constraints.get(key) != Some(value) {
                        problems.push(format!(
                            "{kind} {name}: {path} {key} is {:?}, Istio has {value}",
                            mine.constraints.get(key)
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences from Istio's schema:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(compared > 2000, "compared only {compared} paths");
}

/// Checks `value` against a structural schema node the way the API server checks defaults: type, enum,
/// range, and every key of an object being a known property. Returns the first problem.
fn default_problem(schema: &Value, value: &Value, path: &str) -> Option<String> {
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match (ty, value) {
        (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        (None, _) => true,
        _ => false,
    };
    if !type_ok {
        return Some(format!("{path}: {value} is not of type {ty:?}"));
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        return Some(format!("{path}: {value} not in {allowed:?}"));
    }
    if let Some(n) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            return Some(format!("{path}: {n} below minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            return Some(format!("{path}: {n} above maximum"));
        }
    }
    if let Value::Object(map) = value {
        for (k, v) in map {
            let sub = schema
                .get("properties")
                .and_then(|p| p.get(k))
                .or_else(|| schema.get("additionalProperties"));
            match sub {
                Some(sub) => {
                    if let Some(p) = default_problem(sub, v, &format!("{path}.{k}")) {
                        return Some(p);
                    }
                }
                None => return Some(format!("{path}: unknown key {k}")),
            }
        }
    }
    None
}

fn check_defaults(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(d) = schema.get("default")
        && let Some(p) = default_problem(schema, d, path)
    {
        out.push(p);
    }
    if let Some(Value::Object(props)) = schema.get("properties") {
        for (k, v) in props {
            check_defaults(v, &format!("{path}.{k}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub @ Value::Object(_)) = schema.get(key) {
            check_defaults(sub, &format!("{path}[]"), out);
        }
    }
}

#[test]
fn defaults_validate_against_their_schema() {
    let mut problems = Vec::new();
    let mut with_defaults = 0;
    for crd in all_crds().unwrap() {
        for v in &crd.spec.versions {
            let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
            let text = schema.to_string();
            with_defaults += text.matches("\"default\":").count();
            check_defaults(&schema["openAPIV3Schema"], "", &mut problems);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // MeshInstall has real defaults (namespace istio-system, ...); Istio's kinds have none.
    assert!(with_defaults > 10, "{with_defaults}");
    let not_mesh: usize = all_crds()
        .unwrap()
        .iter()
        .filter(|c| c.spec.group != "install.halyard.dev")
        .map(|c| {
            serde_json::to_string(&c.spec.versions)
                .unwrap()
                .matches("\"default\":")
                .count()
        })
        .sum();
    assert_eq!(not_mesh, 0, "Istio's kinds must not gain defaults");
}
