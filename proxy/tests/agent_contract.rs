//! The injector's contract, checked from its outputs: every injected pod in the webhook's goldens
//! (and Istio's own injection goldens in `shared/istio`) gives the proxy env it accepts, every
//! rewritten probe path has an original to run, and the proxy container's args and hooks parse.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use clap::Parser;
use halyard_proxy::agent::Agent;
use halyard_proxy::cli::{Args, Mode};
use serde_json::Value;

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    // Goldens of refused pods hold the injector's error text, not YAML.
    if text.starts_with("error:") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(d)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push(serde_json::to_value(v).unwrap());
    }
    out
}

/// Pod specs inside a document (a Pod, or a workload's pod template).
fn pod_specs(doc: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    if let Some(spec) = doc.pointer("/spec/template/spec") {
        out.push(spec);
    }
    if let Some(spec) = doc.pointer("/spec/jobTemplate/spec/template/spec") {
        out.push(spec);
    }
    if doc.get("kind").and_then(Value::as_str) == Some("Pod")
        && let Some(spec) = doc.get("spec")
    {
        out.push(spec);
    }
    out
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(|k| spec.get(k).and_then(Value::as_array))
        .flatten()
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c.get("env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
}

/// Status-port paths the rewritten probes and hooks point at.
fn rewritten_paths(spec: &Value, status_port: u64) -> Vec<String> {
    let mut out = Vec::new();
    for c in containers(spec) {
        let mut handlers: Vec<&Value> = ["livenessProbe", "readinessProbe", "startupProbe"]
            .iter()
            .filter_map(|k| c.get(*k))
            .collect();
        for h in ["postStart", "preStop"] {
            if let Some(v) = c.pointer(&format!("/lifecycle/{h}")) {
                handlers.push(v);
            }
        }
        for h in handlers {
            let Some(get) = h.get("httpGet") else {
                continue;
            };
            let port = get.get("port").and_then(|p| {
                p.as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            });
            let path = get.get("path").and_then(Value::as_str).unwrap_or("");
            if port == Some(status_port)
                && (path.starts_with("/app-health/") || path.starts_with("/app-lifecycle/"))
            {
                out.push(path.to_string());
            }
        }
    }
    out
}

/// Check every injected pod under `dir`; returns how many carried probers.
fn check_dir(dir: &Path, ours: bool) -> usize {
    let mut with_probers = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".injected"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no goldens in {}", dir.display());
    for f in files {
        for doc in docs(&f) {
            for spec in pod_specs(&doc) {
                let Some(proxy) = containers(spec)
                    .find(|c| c.get("name").and_then(Value::as_str) == Some("istio-proxy"))
                else {
                    continue;
                };
                let probers = env(proxy, "ISTIO_KUBE_APP_PROBERS").unwrap_or("");
                let prom = env(proxy, "ISTIO_PROMETHEUS_ANNOTATIONS").unwrap_or("");
                let agent = Agent::from_env_values(probers, prom, "10.0.0.1")
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                if !probers.is_empty() {
                    with_probers += 1;
                }
                for path in rewritten_paths(spec, 15020) {
                    assert!(
                        agent.probers.contains_key(&path),
                        "{}: {path} is rewritten but has no original in ISTIO_KUBE_APP_PROBERS",
                        f.display()
                    );
                }
                if ours {
                    // The container's args and its hooks are commands the binary understands.
                    let args: Vec<String> = proxy
                        .get("args")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    let parsed = Args::try_parse_from(
                        std::iter::once("halyard-proxy".to_string()).chain(args.clone()),
                    )
                    .unwrap_or_else(|e| panic!("{}: args {args:?}: {e}", f.display()));
                    assert!(
                        matches!(parsed.mode, None | Some(Mode::Sidecar)),
                        "{}: {args:?}",
                        f.display()
                    );
                    for hook in ["postStart", "preStop"] {
                        let Some(cmd) = proxy
                            .pointer(&format!("/lifecycle/{hook}/exec/command"))
                            .and_then(Value::as_array)
                        else {
                            continue;
                        };
                        let cmd: Vec<String> = cmd
                            .iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect();
                        let parsed = Args::try_parse_from(cmd.iter().cloned())
                            .unwrap_or_else(|e| panic!("{}: {hook} {cmd:?}: {e}", f.display()));
                        assert!(
                            matches!(parsed.mode, Some(Mode::Wait | Mode::Drain)),
                            "{}: {hook} {cmd:?}",
                            f.display()
                        );
                    }
                }
            }
        }
    }
    with_probers
}

#[test]
fn webhook_goldens_give_env_the_agent_accepts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook/testdata/inject");
    let n = check_dir(&dir, true);
    assert!(n >= 3, "only {n} goldens carry ISTIO_KUBE_APP_PROBERS");
}

#[test]
fn istio_goldens_give_env_the_agent_accepts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio/injection/golden");
    if !dir.is_dir() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{} is missing; CI must have shared/istio beside the repository",
                dir.display()
            );
        }
        eprintln!("skipping: {} is absent", dir.display());
        return;
    }
    let n = check_dir(&dir, false);
    assert!(n >= 1, "no Istio golden carries ISTIO_KUBE_APP_PROBERS");
}
