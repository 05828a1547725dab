//! Golden tests: every `testdata/inject/X.yaml` is injected (through `kube_inject`, the CLI's path) and
//! compared with `X.yaml.injected`; a failing injection is expected as a file starting with `error: `.
//! `X.template.yaml`, when present, is merged over the built-in template for that case. A leading
//! `Namespace` document supplies the namespace labels (the webhook's namespace selectors) for the rest.
//! `REFRESH_GOLDEN=true` rewrites the expected files. Every golden is also checked for idempotency, and every
//! Pod through the admission path (patch applied to the input gives the same pod).

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};

use halyard_webhook::annotations::Labels;
use halyard_webhook::inject::{Outcome, PodContext};
use halyard_webhook::kube_inject::inject_documents;
use halyard_webhook::{InjectionTemplate, Injector, MeshConfig};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/inject")
}

fn injector_for(input: &Path) -> Injector {
    let mut template = serde_json::to_value(InjectionTemplate::builtin().unwrap()).unwrap();
    let overrides = input.with_extension("template.yaml");
    if overrides.exists() {
        let text = std::fs::read_to_string(&overrides).unwrap();
        let patch: Value = serde_yaml::from_str(&text).unwrap();
        json_patch::merge(&mut template, &patch);
    }
    let template: InjectionTemplate = serde_json::from_value(template).unwrap();
    Injector::new(template, MeshConfig::default())
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            let y = <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap();
            serde_json::to_value(y).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Splits off a leading Namespace document: its labels drive the namespace selectors.
fn namespace_labels(text: &str) -> (Option<Labels>, String) {
    let all = docs(text);
    match all.first() {
        Some(first) if first["kind"] == "Namespace" => {
            let labels: Labels = serde_json::from_value(
                first["metadata"]
                    .get("labels")
                    .cloned()
                    .unwrap_or(Value::Object(Default::default())),
            )
            .unwrap();
            let rest: Vec<String> = all[1..]
                .iter()
                .map(|d| serde_yaml::to_string(d).unwrap())
                .collect();
            (Some(labels), rest.join("---\n"))
        }
        _ => (None, text.to_string()),
    }
}

fn run(injector: &Injector, text: &str) -> String {
    let (labels, rest) = namespace_labels(text);
    match inject_documents(&rest, injector, labels.as_ref()) {
        Ok(out) => out,
        Err(e) => format!("error: {e}\n"),
    }
}

fn inputs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.ends_with(".yaml") && !name.ends_with(".template.yaml")
        })
        .collect();
    v.sort();
    v
}

/// The first differing line with a little context, instead of two whole documents.
fn first_difference(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let i = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    format!(
        "line {}: expected {:?}, got {:?}",
        i + 1,
        e.get(i).copied().unwrap_or("<end>"),
        g.get(i).copied().unwrap_or("<end>")
    )
}

#[test]
fn goldens() {
    let refresh = std::env::var("REFRESH_GOLDEN").is_ok_and(|v| v == "true");
    let mut failures = Vec::new();
    let cases = inputs();
    assert!(
        cases.len() >= 30,
        "expected the golden inputs in {}",
        dir().display()
    );
    for input in &cases {
        let injector = injector_for(input);
        let text = std::fs::read_to_string(input).unwrap();
        let got = run(&injector, &text);
        let expected_path = PathBuf::from(format!("{}.injected", input.display()));
        if refresh {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} missing: run with REFRESH_GOLDEN=true",
                expected_path.display()
            )
        });
        if got != expected {
            failures.push(format!(
                "{}: differs from {}:\n{}",
                input.display(),
                expected_path.display(),
                first_difference(&expected, &got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn goldens_are_idempotent() {
    for input in inputs() {
        let injector = injector_for(&input);
        let text = std::fs::read_to_string(&input).unwrap();
        let once = run(&injector, &text);
        if once.starts_with("error: ") {
            continue;
        }
        // Re-inject with the same namespace context.
        let (labels, _) = namespace_labels(&text);
        let twice = inject_documents(&once, &injector, labels.as_ref()).unwrap();
        assert!(
            once == twice,
            "{} is not idempotent:\n{}",
            input.display(),
            first_difference(&once, &twice)
        );
    }
}

/// Every pod of a document: a Pod, the pod template of a workload, the pods of a List.
fn pods_of(doc: &Value, out: &mut Vec<Value>) {
    let namespace = doc["metadata"]["namespace"].clone();
    let template = match doc["kind"].as_str().unwrap_or("") {
        "Pod" => {
            out.push(doc.clone());
            return;
        }
        "List" => {
            for item in doc["items"].as_array().into_iter().flatten() {
                pods_of(item, out);
            }
            return;
        }
        "CronJob" => doc.pointer("/spec/jobTemplate/spec/template"),
        _ => doc.pointer("/spec/template"),
    };
    if let Some(mut pod) = template.filter(|t| t.is_object()).cloned() {
        if namespace.is_string() && pod["metadata"].is_object() {
            pod["metadata"]["namespace"] = namespace;
        }
        out.push(pod);
    }
}

/// Whether a pod is injected from scratch: no previous injection, no user container named like ours.
fn fresh(pod: &Value) -> bool {
    let named = |list: &str, names: &[&str]| {
        pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| names.contains(&c["name"].as_str().unwrap_or("")))
    };
    pod["metadata"]["annotations"]["sidecar.istio.io/status"].is_null()
        && !named("containers", &["istio-proxy"])
        && !named("initContainers", &["istio-proxy", "istio-init"])
}

#[test]
fn admission_patch_matches_kube_inject() {
    let mut checked = 0;
    for input in inputs() {
        let injector = injector_for(&input);
        let text = std::fs::read_to_string(&input).unwrap();
        let (labels, rest) = namespace_labels(&text);
        let mut pods = Vec::new();
        for doc in docs(&rest) {
            pods_of(&doc, &mut pods);
        }
        for pod in pods {
            let ns = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let ctx = PodContext {
                namespace: Some(&ns),
                namespace_labels: labels.as_ref(),
                workload: None,
            };
            let Ok((outcome, patch)) = injector.patch(&pod, &ctx) else {
                assert!(
                    injector.inject(&pod, &ctx).is_err(),
                    "{}: the patch fails, the injection does not",
                    input.display()
                );
                continue;
            };
            let mut patched = pod.clone();
            json_patch::patch(&mut patched, &patch).unwrap();
            match outcome {
                Outcome::Injected(expected) => assert_eq!(patched, expected, "{}", input.display()),
                Outcome::Skipped(_) => assert_eq!(patched, pod, "{}", input.display()),
            }
            // A fresh injection leaves the pod's own list items alone: it adds to the lists, never
            // rewrites them whole.
            if fresh(&pod) {
                for op in &patch.0 {
                    let path = op.path().to_string();
                    let list = path.strip_prefix("/spec/").unwrap_or("");
                    assert!(
                        !pod["spec"][list].is_array(),
                        "{}: {path} is replaced whole",
                        input.display()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} pods checked");
}

#[test]
fn no_stale_goldens() {
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy().to_string();
        if let Some(input) = name.strip_suffix(".injected") {
            assert!(Path::new(input).exists(), "{name} has no input");
        }
        if let Some(base) = name.strip_suffix(".template.yaml") {
            assert!(
                Path::new(&format!("{base}.yaml")).exists(),
                "{name} has no input"
            );
        }
    }
}
