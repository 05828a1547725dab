//! Every fixture in `testdata/invalid/` must be rejected with the field path and message its header names:
//!
//! ```yaml
//! # path: spec.http[0].route[0].weight
//! # message: weight -1 < 0
//! ```

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::fs;
use std::path::{Path, PathBuf};

use halyard_crds::validation::validate_value;
use halyard_crds::yaml::split_documents;

struct Fixture {
    file: PathBuf,
    path: String,
    message: String,
    text: String,
}

fn header(text: &str, key: &str) -> Option<String> {
    let prefix = format!("# {key}:");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
}

fn load_fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/invalid");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = fs::read_to_string(&file).unwrap();
            let path = header(&text, "path")
                .unwrap_or_else(|| panic!("{}: no `# path:` header", file.display()));
            let message = header(&text, "message")
                .unwrap_or_else(|| panic!("{}: no `# message:` header", file.display()));
            Fixture {
                file,
                path,
                message,
                text,
            }
        })
        .collect()
}

#[test]
fn every_invalid_fixture_is_rejected_with_its_path_and_message() {
    let fixtures = load_fixtures();
    assert!(
        fixtures.len() >= 150,
        "only {} invalid fixtures",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for f in &fixtures {
        let name = f.file.file_name().unwrap().to_string_lossy().to_string();
        let docs = match split_documents(&f.text) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{name}: fixture does not parse: {e}"));
                continue;
            }
        };
        let [doc] = docs.as_slice() else {
            failures.push(format!(
                "{name}: expected exactly one document, found {}",
                docs.len()
            ));
            continue;
        };
        let report = validate_value(&doc.value);
        let found = report
            .errors
            .iter()
            .any(|e| e.path == f.path && e.message.contains(&f.message));
        if !found {
            let got: Vec<String> = report
                .errors
                .iter()
                .map(|e| format!("{} => {}", e.path, e.message))
                .collect();
            failures.push(format!(
                "{name}: expected `{}` => `{}`, got [{}]",
                f.path,
                f.message,
                got.join(" | ")
            ));
        }
        // The denial text always carries the error (Istio's "configuration is invalid: ..." form).
        if !report
            .denial_message()
            .starts_with("configuration is invalid: ")
        {
            failures.push(format!(
                "{name}: denial message is {:?}",
                report.denial_message()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures mismatched:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixtures_cover_every_validated_kind() {
    let fixtures = load_fixtures();
    for kind in [
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "Sidecar",
        "WorkloadEntry",
        "WorkloadGroup",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "RequestAuthentication",
        "EnvoyFilter",
        "WasmPlugin",
    ] {
        let n = fixtures
            .iter()
            .filter(|f| f.text.contains(&format!("\nkind: {kind}\n")))
            .count();
        assert!(n > 0, "no invalid fixture of kind {kind}");
    }
}
