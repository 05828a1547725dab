//! The local-file registry: a directory of YAML (or JSON) files, re-read whenever a file is added, removed,
//! replaced or modified (polled by metadata, so `rename` over an old file is seen like an edit).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;

use super::{MeshObjects, MeshSnapshot, Rejected, Snapshots, admit};
use crate::error::Error;

/// Namespace of objects that do not name one (kubectl's default).
const DEFAULT_NAMESPACE: &str = "default";

/// What identifies one version of a file: modification time, size and inode.
type Fingerprint = BTreeMap<PathBuf, (SystemTime, u64, u64)>;

/// Watches one directory.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    dir: PathBuf,
    poll: Duration,
}

/// The directory's content at one moment.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: MeshObjects,
    pub rejected: Vec<Rejected>,
}

impl LocalRegistry {
    pub fn new(dir: PathBuf, poll: Duration) -> Self {
        LocalRegistry {
            dir,
            poll: poll.max(Duration::from_millis(10)),
        }
    }

    /// Starts polling; the first snapshot is published once the directory could be read.
    pub fn spawn(self) -> Snapshots {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(self.run(tx));
        rx
    }

    async fn run(self, tx: watch::Sender<Option<Arc<MeshSnapshot>>>) {
        let mut last: Option<Fingerprint> = None;
        let mut version = 0u64;
        let mut warned = false;
        loop {
            let dir = self.dir.clone();
            // directory reads are blocking; keep them off the async workers
            let result = tokio::task::spawn_blocking(move || {
                let fp = fingerprint(&dir)?;
                Ok::<_, Error>((fp, dir))
            })
            .await;
            match result {
                Ok(Ok((fp, dir))) if last.as_ref() != Some(&fp) => {
                    let loaded = tokio::task::spawn_blocking(move || load(&dir)).await;
                    match loaded {
                        Ok(Ok(loaded)) => {
                            version += 1;
                            for r in &loaded.rejected {
                                tracing::warn!(origin = %r.origin, kind = %r.kind, namespace = %r.namespace, name = %r.name, reason = %r.reason, "skipping invalid object");
                            }
                            let snapshot = MeshSnapshot::build(
                                version,
                                format!("local:{}", self.dir.display()),
                                loaded.objects,
                                loaded.rejected,
                            );
                            tracing::info!(version, dir = %self.dir.display(), "config directory changed");
                            tx.send_replace(Some(Arc::new(snapshot)));
                            last = Some(fp);
                            warned = false;
                        }
                        Ok(Err(err)) => warn_once(&mut warned, &err),
                        Err(join) => warn_once(&mut warned, &join),
                    }
                }
                Ok(Ok(_)) => {}
                // unreadable: keep serving the last snapshot
                Ok(Err(err)) => warn_once(&mut warned, &err),
                Err(join) => warn_once(&mut warned, &join),
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

fn warn_once(warned: &mut bool, err: &dyn std::fmt::Display) {
    if !*warned {
        tracing::warn!(error = %err, "config directory unreadable; keeping the last config");
        *warned = true;
    }
}

fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

/// The config files below `dir` (recursively), sorted, so snapshots do not depend on directory order.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| Error::ReadDir {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::ReadDir {
                path: d.clone(),
                source,
            })?;
            let path = entry.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            match entry.file_type() {
                Ok(t) if t.is_dir() && !hidden => stack.push(path),
                Ok(_) if is_config_file(&path) => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

fn fingerprint(dir: &Path) -> Result<Fingerprint, Error> {
    let mut fp = Fingerprint::new();
    for path in config_files(dir)? {
        // a file removed between listing and stat is simply absent from this fingerprint
        if let Ok(meta) = std::fs::metadata(&path) {
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            fp.insert(path, (modified, meta.len(), meta.ino()));
        }
    }
    Ok(fp)
}

/// Reads every config file below `dir`.
pub fn load(dir: &Path) -> Result<Loaded, Error> {
    let mut loaded = Loaded::default();
    for path in config_files(dir)? {
        let label = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_into(&label, &text, &mut loaded),
            Err(err) => loaded.rejected.push(Rejected {
                origin: label,
                kind: String::new(),
                namespace: String::new(),
                name: String::new(),
                reason: format!("cannot read file: {err}"),
            }),
        }
    }
    Ok(loaded)
}

/// Parses one file's documents (YAML, several per file, or JSON) into `loaded`.
pub fn parse_into(label: &str, text: &str, loaded: &mut Loaded) {
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = format!("{label}#{i}");
        match serde_json::Value::deserialize(document) {
            Ok(serde_json::Value::Null) => {}
            Ok(value) => admit(
                value,
                &origin,
                DEFAULT_NAMESPACE,
                &mut loaded.objects,
                &mut loaded.rejected,
            ),
            Err(err) => {
                loaded.rejected.push(Rejected {
                    origin,
                    kind: String::new(),
                    namespace: String::new(),
                    name: String::new(),
                    reason: format!("invalid YAML: {err}"),
                });
                // serde_yaml cannot resume after a syntax error in a multi-document stream
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DOCS: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  ports:
  - name: http
    port: 9080
---
# a comment-only document is skipped
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
"#;

    #[test]
    fn parses_multi_document_yaml() {
        let mut loaded = Loaded::default();
        parse_into("bookinfo.yaml", TWO_DOCS, &mut loaded);
        assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
        assert_eq!(loaded.objects.services.len(), 1);
        assert_eq!(loaded.objects.configs.len(), 1);
    }

    #[test]
    fn broken_yaml_is_reported_with_its_file() {
        let mut loaded = Loaded::default();
        parse_into("broken.yaml", "kind: [unclosed", &mut loaded);
        assert_eq!(loaded.rejected.len(), 1);
        assert_eq!(loaded.rejected[0].origin, "broken.yaml#0");
        assert!(loaded.rejected[0].reason.starts_with("invalid YAML"));
    }

    #[test]
    fn load_reads_nested_files_in_order_and_skips_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.yaml"), TWO_DOCS).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "kind: [").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.objects.services.len(), 1);
        assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    }

    #[test]
    fn fingerprint_changes_when_a_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, TWO_DOCS).unwrap();
        let before = fingerprint(dir.path()).unwrap();
        let tmp = dir.path().join("a.yaml.tmp");
        std::fs::write(&tmp, TWO_DOCS).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let after = fingerprint(dir.path()).unwrap();
        assert_ne!(before, after);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let err = load(Path::new("/nonexistent/halyard")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/halyard"), "{err}");
    }
}
