//! Every in-scope Istio object in Istio's own data (samples, validation dataset, must-accept cases)
//! deserializes into the typed API and serializes back to an equivalent JSON value.

#![allow(clippy::unwrap_used)] // test helpers: a failure to read the fixtures is a test failure

use std::path::{Path, PathBuf};

use halyard_crds::object::{Kind, parse_object, resolve_kind, type_info};
use halyard_crds::yaml::split_documents;
use serde_json::Value;

mod common;
use common::istio_dir;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

/// JSON equality where `50` and `50.0` are the same number.
fn equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equivalent(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equivalent(v, w)))
        }
        _ => a == b,
    }
}

/// Round-trips every in-scope object of `files`; returns how many were checked.
fn round_trip_files(files: &[PathBuf], strip_underscore_keys: bool) -> usize {
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs = split_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in docs {
            let mut value = doc.value;
            if strip_underscore_keys && let Some(map) = value.as_object_mut() {
                map.retain(|k, _| !k.starts_with('_'));
            }
            let Ok(info) = type_info(&value) else {
                continue;
            };
            match resolve_kind(&info) {
                Ok(kind) if kind != Kind::MeshInstall => {}
                _ => continue,
            }
            let where_ = format!("{} document {} ({})", file.display(), doc.index, info.kind);
            match parse_object(&value) {
                Err(e) => failures.push(format!("{where_}: {e}")),
                Ok(parsed) => {
                    let back = parsed.to_value().unwrap();
                    if !equivalent(&back, &value) {
                        failures.push(format!(
                            "{where_}: changed in a round trip\n  in:  {value}\n  out: {back}"
                        ));
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    checked
}

#[test]
fn samples_round_trip() {
    let Some(dir) = istio_dir() else { return };
    let mut files = Vec::new();
    yaml_files(&dir.join("samples"), &mut files);
    let n = round_trip_files(&files, false);
    assert!(n >= 40, "only {n} Istio objects found in samples");
}

#[test]
fn validation_dataset_round_trips() {
    let Some(dir) = istio_dir() else { return };
    let mut files = Vec::new();
    yaml_files(&dir.join("validation-dataset"), &mut files);
    let n = round_trip_files(&files, false);
    // 7 networking kinds x 3 versions + 3 security kinds x 2 versions
    assert_eq!(n, 27, "in-scope objects in the validation dataset");
}

#[test]
fn must_accept_cases_round_trip() {
    let Some(dir) = istio_dir() else { return };
    let n = round_trip_files(&[dir.join("validation-must-accept.yaml")], true);
    assert_eq!(n, 14, "every must-accept case is an in-scope kind");
}

#[test]
fn other_istio_kinds_in_the_dataset_are_recognised_as_not_implemented() {
    use halyard_crds::Error;
    let Some(dir) = istio_dir() else { return };
    let mut files = Vec::new();
    yaml_files(&dir.join("validation-dataset"), &mut files);
    let mut seen = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in split_documents(&text).unwrap() {
            let info = type_info(&doc.value).unwrap();
            match parse_object(&doc.value) {
                Ok(_) => {}
                Err(Error::NotImplemented { kind, .. }) => seen.push(kind),
                Err(e) => panic!("{}: {e}", file.display()),
            }
            assert!(
                resolve_kind(&info).is_ok() || seen.contains(&info.kind),
                "{}",
                file.display()
            );
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "EnvoyFilter",
            "ProxyConfig",
            "Telemetry",
            "TrafficExtension",
            "WasmPlugin"
        ]
    );
}
