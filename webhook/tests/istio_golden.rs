//! Comparison with Istio's own injector goldens (`shared/istio/injection/golden/X.yaml` → `X.yaml.injected`):
//! for every input, the same decision (inject or skip), the same capture flags to the init container, the
//! same probe and lifecycle rewriting (including the originals in `ISTIO_KUBE_APP_PROBERS`) and the same
//! container order. Images, args of the proxy and env names beyond those differ by design.
//!
//! Istio generated these goldens with native sidecars on (kubelet ≥ 1.33), so the comparison runs halyard's
//! built-in template with `nativeSidecars: true`.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};

use halyard_webhook::kube_inject::inject_documents;
use halyard_webhook::{InjectionTemplate, Injector, MeshConfig};
use serde_json::Value;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/istio/injection/golden"
);

/// The golden folder, or `None` (after saying why) when it is absent outside CI.
fn golden_dir() -> Option<PathBuf> {
    let dir = Path::new(GOLDEN);
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{GOLDEN} is missing; CI must have shared/istio beside the repository");
    }
    eprintln!("SKIPPED: {GOLDEN} is missing (Istio's injector goldens); comparison not run");
    None
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            serde_json::to_value(<serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
                .unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn pod_template(doc: &Value) -> &Value {
    match doc["kind"].as_str() {
        Some("Pod") => doc,
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"],
        _ => &doc["spec"]["template"],
    }
}

fn list<'a>(pod: &'a Value, key: &str) -> Vec<&'a Value> {
    pod["spec"][key]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn names(pod: &Value, key: &str) -> Vec<String> {
    list(pod, key)
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn find<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    list(pod, "initContainers")
        .into_iter()
        .chain(list(pod, "containers"))
        .find(|c| c["name"] == name)
}

/// Capture flags without Istio's subcommand name and its logging flag.
fn capture_flags(init: &Value) -> Vec<String> {
    init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| a != "istio-iptables" && !a.starts_with("--log_output_level"))
        .collect()
}

fn app_probers(pod: &Value) -> Value {
    find(pod, "istio-proxy")
        .and_then(|p| p["env"].as_array())
        .and_then(|env| env.iter().find(|e| e["name"] == "ISTIO_KUBE_APP_PROBERS"))
        .map(|e| serde_json::from_str(e["value"].as_str().unwrap()).unwrap())
        .unwrap_or(Value::Null)
}

fn injected(pod: &Value) -> bool {
    pod["metadata"]["annotations"]
        .get("sidecar.istio.io/status")
        .is_some()
}

#[test]
fn same_behaviour_as_istio_on_its_goldens() {
    let Some(dir) = golden_dir() else { return };
    let mut template = InjectionTemplate::builtin().unwrap();
    template.native_sidecars = true;
    let injector = Injector::new(template, MeshConfig::default());

    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no goldens in {}", dir.display());
    let mut compared = 0;
    for input in inputs {
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        let istio_text = std::fs::read_to_string(format!("{}.injected", input.display())).unwrap();
        let ours_text =
            inject_documents(&std::fs::read_to_string(&input).unwrap(), &injector, None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (istio_docs, our_docs) = (docs(&istio_text), docs(&ours_text));
        assert_eq!(istio_docs.len(), our_docs.len(), "{name}: document count");
        for (istio_doc, our_doc) in istio_docs.iter().zip(&our_docs) {
            let (theirs, ours) = (pod_template(istio_doc), pod_template(our_doc));
            assert_eq!(
                injected(theirs),
                injected(ours),
                "{name}: inject/skip decision"
            );
            if !injected(ours) {
                assert_eq!(
                    names(theirs, "containers"),
                    names(ours, "containers"),
                    "{name}: skipped pod changed"
                );
                continue;
            }
            // Container order.
            assert_eq!(
                names(theirs, "initContainers"),
                names(ours, "initContainers"),
                "{name}: init containers"
            );
            assert_eq!(
                names(theirs, "containers"),
                names(ours, "containers"),
                "{name}: containers"
            );
            // Capture settings.
            let (ti, oi) = (
                find(theirs, "istio-init").unwrap(),
                find(ours, "istio-init").unwrap(),
            );
            assert_eq!(
                capture_flags(ti),
                capture_flags(oi),
                "{name}: capture flags"
            );
            // Probes and lifecycle hooks of every app container and user native sidecar.
            for c in list(theirs, "containers")
                .into_iter()
                .chain(list(theirs, "initContainers"))
            {
                let cname = c["name"].as_str().unwrap();
                if cname.starts_with("istio-") {
                    continue;
                }
                let mine = find(ours, cname)
                    .unwrap_or_else(|| panic!("{name}: container {cname} missing"));
                for field in [
                    "livenessProbe",
                    "readinessProbe",
                    "startupProbe",
                    "lifecycle",
                ] {
                    assert_eq!(c.get(field), mine.get(field), "{name}: {cname}.{field}");
                }
            }
            assert_eq!(
                app_probers(theirs),
                app_probers(ours),
                "{name}: ISTIO_KUBE_APP_PROBERS"
            );
            compared += 1;
        }
    }
    assert!(compared >= 7, "only {compared} injected pods compared");
}
