//! `halyard kube-inject` end to end through the binary: files, stdin, `-o`, a custom template, errors.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::Write;
use std::process::{Command, Stdio};

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web:1}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
";

fn halyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_halyard"))
}

#[test]
fn injects_file_to_stdout_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("web.yaml");
    std::fs::write(&input, DEPLOYMENT).unwrap();
    let out = halyard()
        .args(["kube-inject", "-f"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("name: istio-proxy") && text.contains("name: istio-init"),
        "{text}"
    );
    assert!(text.contains("kind: Service"));

    // -o, then the output fed back through stdin gives the same text.
    let injected = dir.path().join("web-injected.yaml");
    let status = halyard()
        .args(["kube-inject", "-f"])
        .arg(&input)
        .arg("-o")
        .arg(&injected)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&injected).unwrap();
    assert_eq!(written, text);
    let mut child = halyard()
        .args(["kube-inject", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(written.as_bytes())
        .unwrap();
    let again = child.wait_with_output().unwrap();
    assert!(again.status.success());
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn custom_template_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("web.yaml");
    std::fs::write(&input, DEPLOYMENT).unwrap();
    // A template written the way the operator writes it: the built-in one with another proxy image.
    let builtin = halyard_webhook::InjectionTemplate::builtin().unwrap();
    let mut custom = builtin.clone();
    custom.proxy.image = "registry.example/halyard-proxy:custom".into();
    let template = dir.path().join("template.yaml");
    std::fs::write(&template, custom.to_yaml().unwrap()).unwrap();
    let out = halyard()
        .args(["kube-inject", "-f"])
        .arg(&input)
        .arg("--injection-template")
        .arg(&template)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("registry.example/halyard-proxy:custom")
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {sidecar.istio.io/interceptionMode: MAGIC}\nspec:\n  containers: [{name: a, image: a}]\n",
    )
    .unwrap();
    let out = halyard()
        .args(["kube-inject", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("invalid value 'MAGIC' for annotation 'sidecar.istio.io/interceptionMode'"),
        "{err}"
    );

    let out = halyard()
        .args(["kube-inject", "-f", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("/nonexistent/x.yaml")
    );
}
