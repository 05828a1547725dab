//! `halyard validate -f PATH`: check Istio configuration offline with the same rules as the admission webhook.
//!
//! PATH is a file, a directory (searched recursively for `.yaml`, `.yml` and `.json`) or `-` for stdin; files
//! may hold several YAML documents. Exit code 0 when every Istio object is valid, 1 when any is invalid, 2 when
//! an input cannot be read or parsed. Objects outside Istio's API groups (Deployments, Services, ...) are
//! skipped and counted.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use halyard_crds::Error as CrdsError;
use halyard_crds::validation::{Report, is_istio_api_version, validate_value};
use halyard_crds::yaml::split_documents;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// File or directory of Istio configuration to validate, or `-` for stdin. May be repeated.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    pub filenames: Vec<String>,
}

/// One input to validate: its display name and its text, or why it could not be read.
struct Input {
    name: String,
    text: Result<String, String>,
}

/// The outcome for one Istio object.
#[derive(Debug)]
pub struct ObjectOutcome {
    pub document: usize,
    /// `Kind/namespace/name`
    pub id: String,
    pub report: Report,
}

/// The outcome for one input file.
#[derive(Debug, Default)]
pub struct FileOutcome {
    pub name: String,
    pub objects: Vec<ObjectOutcome>,
    /// Non-Istio objects (Deployment, Service, ...), not validated.
    pub skipped: usize,
    /// Why the file could not be read or parsed.
    pub failure: Option<String>,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let inputs = gather_inputs(&args.filenames);
    let outcomes: Vec<FileOutcome> = inputs
        .into_iter()
        .map(|input| match input.text {
            Ok(text) => validate_text(&input.name, &text),
            Err(failure) => FileOutcome {
                name: input.name,
                failure: Some(failure),
                ..FileOutcome::default()
            },
        })
        .collect();
    let rendered = render(&outcomes);
    for line in &rendered.errors {
        eprintln!("{line}");
    }
    for line in &rendered.lines {
        println!("{line}");
    }
    println!("{}", rendered.summary);
    Ok(ExitCode::from(rendered.exit_code))
}

/// Reads every input named on the command line; directories are walked in sorted order.
fn gather_inputs(paths: &[String]) -> Vec<Input> {
    let mut inputs = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            let text = std::io::stdin()
                .read_to_string(&mut text)
                .map(|_| text)
                .map_err(|e| format!("cannot read stdin: {e}"));
            inputs.push(Input {
                name: "<stdin>".into(),
                text,
            });
            continue;
        }
        let path = Path::new(p);
        if path.is_dir() {
            let mut files = Vec::new();
            if let Err(e) = walk(path, &mut files) {
                inputs.push(Input {
                    name: p.clone(),
                    text: Err(e),
                });
            }
            for f in files {
                inputs.push(read_file(&f));
            }
        } else {
            inputs.push(read_file(path));
        }
    }
    inputs
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Input {
    Input {
        name: path.display().to_string(),
        text: std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
    }
}

/// Validates every document of one input. Pure: no I/O.
pub fn validate_text(name: &str, text: &str) -> FileOutcome {
    let mut outcome = FileOutcome {
        name: name.to_string(),
        ..FileOutcome::default()
    };
    let docs = match split_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            outcome.failure = Some(match e {
                CrdsError::Yaml {
                    document,
                    line,
                    column,
                    message,
                } => format!(
                    "cannot parse document {document} at line {line}, column {column}: {message}"
                ),
                other => format!("cannot parse: {other}"),
            });
            return outcome;
        }
    };
    for doc in docs {
        for object in list_items(&doc.value) {
            let api_version = object.get("apiVersion").and_then(Value::as_str);
            // Objects of other APIs are not ours to judge, nor are YAML documents that are no Kubernetes
            // object at all (no apiVersion and no kind, e.g. an OpenAPI file); half a header is reported.
            let not_kubernetes = object.get("apiVersion").is_none() && object.get("kind").is_none();
            if not_kubernetes || api_version.is_some_and(|v| !is_istio_api_version(v)) {
                outcome.skipped += 1;
                continue;
            }
            outcome.objects.push(ObjectOutcome {
                document: doc.index,
                id: object_id(object),
                report: validate_value(object),
            });
        }
    }
    outcome
}

/// A Kubernetes `List` (as `kubectl get -o yaml` prints) stands for its items.
fn list_items(v: &Value) -> Vec<&Value> {
    let is_list = v
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array);
    match v.get("items").and_then(Value::as_array) {
        Some(items) if is_list => items.iter().collect(),
        _ => vec![v],
    }
}

fn object_id(v: &Value) -> String {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    format!(
        "{}/{}/{}",
        s("/kind").unwrap_or("<no kind>"),
        s("/metadata/namespace").unwrap_or("default"),
        s("/metadata/name").unwrap_or("<no name>")
    )
}

/// What the command prints and returns, computed from the outcomes.
#[derive(Debug)]
pub struct Rendered {
    /// Read/parse failures (stderr).
    pub errors: Vec<String>,
    /// One line per invalid object, then one per warning (stdout).
    pub lines: Vec<String>,
    pub summary: String,
    pub exit_code: u8,
}

pub fn render(outcomes: &[FileOutcome]) -> Rendered {
    let mut errors = Vec::new();
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    let (mut valid, mut invalid, mut skipped, mut warning_count) = (0usize, 0usize, 0usize, 0usize);
    for f in outcomes {
        if let Some(failure) = &f.failure {
            errors.push(format!("error: {}: {failure}", f.name));
        }
        skipped += f.skipped;
        for o in &f.objects {
            let at = format!("{} (document {}) {}", f.name, o.document, o.id);
            if o.report.is_valid() {
                valid += 1;
            } else {
                invalid += 1;
                let errs: Vec<String> = o.report.errors.iter().map(ToString::to_string).collect();
                lines.push(format!("{at}: {}", errs.join("; ")));
            }
            for w in &o.report.warnings {
                warning_count += 1;
                warnings.push(format!("Warning: {at}: {w}"));
            }
        }
    }
    lines.extend(warnings);
    let unreadable = outcomes.iter().filter(|f| f.failure.is_some()).count();
    let mut summary = format!(
        "{} Istio object(s) in {} file(s): {valid} valid, {invalid} invalid, {warning_count} warning(s); {skipped} non-Istio object(s) skipped",
        valid + invalid,
        outcomes.len()
    );
    if unreadable > 0 {
        summary.push_str(&format!(
            "; {unreadable} file(s) could not be read or parsed"
        ));
    }
    let exit_code = if unreadable > 0 {
        2
    } else if invalid > 0 {
        1
    } else {
        0
    };
    Rendered {
        errors,
        lines,
        summary,
        exit_code,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    const VALID: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: ns}\nspec: {host: reviews}\n";

    #[test]
    fn valid_invalid_and_skipped_objects() {
        let text = format!(
            "{VALID}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: bad}}\nspec: {{host: bad_host}}\n"
        );
        let out = validate_text("f.yaml", &text);
        assert_eq!(out.skipped, 1);
        assert_eq!(out.objects.len(), 2);
        let r = render(&[out]);
        assert_eq!(r.exit_code, 1);
        assert_eq!(r.lines.len(), 1);
        assert!(r.lines[0].starts_with(
            "f.yaml (document 2) DestinationRule/default/bad: spec.host: domain name"
        ));
        assert!(r.summary.contains("1 valid, 1 invalid"));
    }

    #[test]
    fn parse_errors_give_exit_2_with_position() {
        let out = validate_text("f.yaml", "a: [1, 2\n");
        let r = render(&[out]);
        assert_eq!(r.exit_code, 2);
        assert!(r.errors[0].contains("line"), "{:?}", r.errors);
        assert!(r.errors[0].contains("column"), "{:?}", r.errors);
    }

    #[test]
    fn non_kubernetes_documents_are_skipped_but_half_headers_are_errors() {
        let out = validate_text("s.yaml", "swagger: '2.0'\ninfo: {title: x}\n");
        assert_eq!((out.objects.len(), out.skipped), (0, 1));
        let out = validate_text("k.yaml", "kind: VirtualService\nmetadata: {name: x}\n");
        assert_eq!(out.objects.len(), 1);
        assert_eq!(render(&[out]).exit_code, 1);
    }

    #[test]
    fn lists_expand_to_items() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: DestinationRule\n  metadata: {name: r}\n  spec: {host: reviews}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n";
        let out = validate_text("l.yaml", text);
        assert_eq!(out.objects.len(), 1);
        assert_eq!(out.skipped, 1);
        assert_eq!(render(&[out]).exit_code, 0);
    }

    #[test]
    fn warnings_are_printed_with_prefix() {
        let text =
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\nspec: {}\n";
        let r = render(&[validate_text("t.yaml", text)]);
        assert_eq!(r.exit_code, 0);
        assert!(
            r.lines
                .iter()
                .any(|l| l.starts_with("Warning: t.yaml (document 0) Telemetry/default/t: "))
        );
    }
}
