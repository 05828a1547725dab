//! The local-file registry: a directory of YAML (or JSON) files, re-read whenever a file is added, removed,
//! replaced or modified. Filesystem notifications (inotify) say when to look, debounced so that an editor's
//! or `kubectl`-style burst of writes gives one reload; what changed is decided by comparing file metadata
//! (so `rename` over an old file is seen like an edit). When notifications cannot be set up (or the
//! directory disappears) it polls instead, and a slow rescan also runs beside the notifications in case the
//! kernel drops events.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::{Notify, watch};

use super::{MeshObjects, MeshSnapshot, Rejected, Snapshots, admit};
use crate::error::Error;

/// Namespace of objects that do not name one (kubectl's default).
const DEFAULT_NAMESPACE: &str = "default";

/// What identifies one version of a file: modification time, size and inode.
type Fingerprint = BTreeMap<PathBuf, (SystemTime, u64, u64)>;

/// How long the directory must stay quiet after a notification before it is re-read...
const SETTLE_QUIET: Duration = Duration::from_millis(15);
/// ...but never longer than this after the first notification, however busy it stays.
const SETTLE_MAX: Duration = Duration::from_millis(250);
/// The rescan that runs beside working notifications (a safety net for lost events and watches).
const RESCAN_WITH_NOTIFICATIONS: Duration = Duration::from_secs(5);

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

/// Filesystem notifications for the directory, folded into one wake-up signal.
struct Watch {
    // kept alive for as long as the notifications are wanted
    _watcher: notify::RecommendedWatcher,
    /// Set by the watcher's thread when the watch broke (e.g. the directory was removed).
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl Watch {
    fn start(dir: &Path, wake: Arc<Notify>) -> Result<Watch, notify::Error> {
        use notify::Watcher;
        use std::sync::atomic::{AtomicBool, Ordering};

        let broken = Arc::new(AtomicBool::new(false));
        let flag = broken.clone();
        let root = dir.to_path_buf();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    // reading the files (our own reload) is no change
                    Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => {}
                    Ok(e) => {
                        // the watched directory itself went away: its watch is gone with it
                        if matches!(e.kind, notify::EventKind::Remove(_)) && e.paths.contains(&root)
                        {
                            flag.store(true, Ordering::Relaxed);
                        }
                        wake.notify_one();
                    }
                    Err(_) => {
                        flag.store(true, Ordering::Relaxed);
                        wake.notify_one();
                    }
                }
            })?;
        watcher.watch(dir, notify::RecursiveMode::Recursive)?;
        Ok(Watch {
            _watcher: watcher,
            broken,
        })
    }

    fn is_broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl LocalRegistry {
    /// `poll`: how often to look for changes when filesystem notifications are unavailable.
    pub fn new(dir: PathBuf, poll: Duration) -> Self {
        LocalRegistry {
            dir,
            poll: poll.max(Duration::from_millis(10)),
        }
    }

    /// Starts watching; the first snapshot is published once the directory could be read.
    pub fn spawn(self) -> Snapshots {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(self.run(tx));
        rx
    }

    async fn run(self, tx: watch::Sender<Option<Arc<MeshSnapshot>>>) {
        let mut last: Option<Fingerprint> = None;
        let mut version = 0u64;
        let mut warned = false;
        let wake = Arc::new(Notify::new());
        let mut notifications: Option<Watch> = None;
        let mut watch_warned = false;
        loop {
            if notifications.as_ref().is_none_or(Watch::is_broken) {
                // (re)started before the scan, so that no change falls between the scan and the watch
                notifications = match Watch::start(&self.dir, wake.clone()) {
                    Ok(w) => {
                        if watch_warned {
                            tracing::info!(dir = %self.dir.display(), "watching the config directory again");
                        }
                        watch_warned = false;
                        Some(w)
                    }
                    Err(err) => {
                        if !watch_warned {
                            tracing::warn!(dir = %self.dir.display(), error = %err, poll = ?self.poll, "no filesystem notifications for the config directory; polling it");
                            watch_warned = true;
                        }
                        None
                    }
                };
            }
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
            let rescan = if notifications.is_some() {
                RESCAN_WITH_NOTIFICATIONS.max(self.poll)
            } else {
                self.poll
            };
            tokio::select! {
                _ = wake.notified() => settle(&wake).await,
                _ = tokio::time::sleep(rescan) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// Waits until notifications stop for [`SETTLE_QUIET`] (at most [`SETTLE_MAX`]): a burst of writes is read
/// once, after its last write.
async fn settle(wake: &Notify) {
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(SETTLE_QUIET) => return,
            _ = tokio::time::sleep_until(deadline) => return,
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

    /// Waits (at most `limit`) for a snapshot newer than `version`.
    async fn next_version(
        rx: &mut Snapshots,
        version: u64,
        limit: Duration,
    ) -> Option<Arc<MeshSnapshot>> {
        tokio::time::timeout(
            limit,
            rx.wait_for(|s| s.as_ref().is_some_and(|s| s.version > version)),
        )
        .await
        .ok()?
        .ok()
        .and_then(|s| s.clone())
    }

    #[tokio::test]
    async fn an_edit_is_seen_at_once_without_waiting_for_a_poll() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), TWO_DOCS).unwrap();
        // a poll interval far beyond the test: only notifications can make it pass
        let mut rx = LocalRegistry::new(dir.path().to_path_buf(), Duration::from_secs(600)).spawn();
        let first = next_version(&mut rx, 0, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(first.configs.len(), 1);

        let started = std::time::Instant::now();
        let tmp = dir.path().join(".b.yaml.tmp");
        std::fs::write(&tmp, TWO_DOCS.replace("name: reviews", "name: ratings")).unwrap();
        std::fs::rename(&tmp, dir.path().join("b.yaml")).unwrap();
        let second = next_version(&mut rx, first.version, Duration::from_secs(5))
            .await
            .expect("the new file is loaded without polling");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(second.configs.len(), 2);
        assert_eq!(second.version, first.version + 1);
    }

    #[tokio::test]
    async fn invalid_objects_are_skipped_and_an_unreadable_directory_keeps_the_last_config() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("config");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), TWO_DOCS).unwrap();
        let mut rx = LocalRegistry::new(dir.clone(), Duration::from_millis(20)).spawn();
        let first = next_version(&mut rx, 0, Duration::from_secs(10))
            .await
            .unwrap();

        std::fs::write(dir.join("bad.yaml"), "kind: [unclosed").unwrap();
        let second = next_version(&mut rx, first.version, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(second.configs.len(), 1, "the valid objects stay");
        assert_eq!(second.rejected.len(), 1);
        assert_eq!(second.rejected[0].origin, "bad.yaml#0");

        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            next_version(&mut rx, second.version, Duration::from_millis(300))
                .await
                .is_none(),
            "a vanished directory publishes nothing"
        );
        assert_eq!(rx.borrow().as_ref().unwrap().version, second.version);

        // once it is back (watched again or polled), its content is served
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), TWO_DOCS).unwrap();
        let back = next_version(&mut rx, second.version, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(back.rejected.is_empty());
        assert_eq!(back.configs.len(), 1);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let err = load(Path::new("/nonexistent/halyard")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/halyard"), "{err}");
    }
}
