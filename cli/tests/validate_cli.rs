//! `halyard validate` as a process: files, directories, stdin, exit codes and what it prints.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn halyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_halyard"))
}

fn run(args: &[&str]) -> Output {
    halyard().args(args).output().unwrap()
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = halyard()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn shared_istio() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/istio"));
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but the shared Istio data is missing at {}",
            dir.display()
        );
    }
    eprintln!("SKIPPED: shared Istio data not found at {}", dir.display());
    None
}

const VALID_VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
";

const INVALID_VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: -5
";

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews}
spec: {}
";

#[test]
fn valid_file_exits_0_with_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ok.yaml");
    std::fs::write(&f, format!("{VALID_VS}---\n{DEPLOYMENT}")).unwrap();
    let o = run(&["validate", "-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("1 Istio object(s) in 1 file(s): 1 valid, 0 invalid"),
        "{out}"
    );
    assert!(out.contains("1 non-Istio object(s) skipped"), "{out}");
}

#[test]
fn invalid_object_line_names_file_document_object_path_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("mixed.yaml");
    std::fs::write(&f, format!("{VALID_VS}---\n{DEPLOYMENT}---\n{INVALID_VS}")).unwrap();
    let o = run(&["validate", "-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let expected = format!(
        "{} (document 2) VirtualService/bookinfo/bad: spec.http[0].route[0].weight: weight -5 < 0",
        f.display()
    );
    assert!(
        out.lines().any(|l| l == expected),
        "missing {expected:?} in:\n{out}"
    );
    assert!(
        out.contains("2 Istio object(s) in 1 file(s): 1 valid, 1 invalid"),
        "{out}"
    );
}

#[test]
fn directory_is_walked_recursively() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/ok.yaml"), VALID_VS).unwrap();
    std::fs::write(dir.path().join("a/b/bad.yml"), INVALID_VS).unwrap();
    std::fs::write(dir.path().join("a/b/notes.txt"), "not yaml: [").unwrap();
    let o = run(&["validate", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("bad.yml (document 0) VirtualService/bookinfo/bad"),
        "{out}"
    );
    assert!(out.contains("2 Istio object(s) in 2 file(s)"), "{out}");
}

#[test]
fn stdin_is_read_with_dash() {
    let o = run_stdin(&["validate", "-f", "-"], VALID_VS);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = run_stdin(&["validate", "-f", "-"], INVALID_VS);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("<stdin> (document 0) VirtualService/bookinfo/bad"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn warnings_are_printed_as_warning_lines() {
    let legacy_gateway = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway.default]
  http:
  - route:
    - destination: {host: productpage}
";
    let o = run_stdin(&["validate", "-f", "-"], legacy_gateway);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines().any(|l| l
            .starts_with("Warning: <stdin> (document 0) VirtualService/default/vs: ")
            && l.contains("using legacy gatewayName format")),
        "{out}"
    );
    assert!(out.contains("1 warning(s)"), "{out}");
}

#[test]
fn unparseable_input_exits_2_with_line_and_column() {
    let o = run_stdin(
        &["validate", "-f", "-"],
        "apiVersion: v1\nkind: [unclosed\n",
    );
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("<stdin>") && err.contains("line 3") && err.contains("column"),
        "{err}"
    );
}

#[test]
fn unreadable_file_exits_2() {
    let o = run(&["validate", "-f", "/nonexistent/halyard/config.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read /nonexistent/halyard/config.yaml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unknown_kinds_and_fields_are_errors_that_name_them() {
    let unknown_kind =
        "apiVersion: networking.istio.io/v1\nkind: VirtualServer\nmetadata: {name: x}\nspec: {}\n";
    let o = run_stdin(&["validate", "-f", "-"], unknown_kind);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("kind: unrecognized type VirtualServer"),
        "{}",
        stdout(&o)
    );

    let unknown_field = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN, fastest: true}
";
    let o = run_stdin(&["validate", "-f", "-"], unknown_field);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("spec.trafficPolicy.loadBalancer.fastest: unknown field \"fastest\""),
        "{}",
        stdout(&o)
    );
}

#[test]
fn envoy_filter_is_rejected_for_having_no_envoy() {
    let ef = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: ef}\nspec: {}\n";
    let o = run_stdin(&["validate", "-f", "-"], ef);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("halyard has no Envoy"),
        "{}",
        stdout(&o)
    );
}

/// Every Istio object of the samples is valid except the two EnvoyFilters of the Bookinfo rate-limit sample,
/// which halyard rejects on purpose (no Envoy); on their own, the samples minus that file exit 0.
#[test]
fn istio_samples() {
    let Some(root) = shared_istio() else { return };
    let samples = root.join("samples");
    let o = run(&["validate", "-f", samples.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let invalid: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("Warning:") && l.contains(" (document "))
        .collect();
    assert_eq!(invalid.len(), 2, "{out}");
    assert!(
        invalid
            .iter()
            .all(|l| l.contains("productpage_envoy_ratelimit.yaml") && l.contains("EnvoyFilter/"))
    );
    assert!(out.contains(" 2 invalid"), "{out}");

    let mut others: Vec<String> = Vec::new();
    collect(&samples, &mut others);
    others.retain(|p| !p.ends_with("productpage_envoy_ratelimit.yaml"));
    let mut args = vec!["validate".to_string()];
    for p in &others {
        args.push("-f".into());
        args.push(p.clone());
    }
    let o = halyard().args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 invalid"), "{}", stdout(&o));
}

fn collect(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p.to_string_lossy().into_owned());
        }
    }
}
