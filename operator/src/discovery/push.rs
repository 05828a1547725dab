//! Push contexts: one immutable registry snapshot plus a per-push cache of computed proxy configs, published
//! to every stream after debouncing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use halyard_config::discovery::Node;
use tokio::sync::watch;

use super::debounce::{DebounceSettings, Debouncer};
use super::output::{ProxyOutput, SharedTypes};
use crate::metrics::Metrics;
use crate::registry::MeshSnapshot;

type Slot = Arc<OnceLock<Arc<SharedTypes>>>;

/// What every stream computes its proxy's config from during one push.
pub struct PushContext {
    /// The registry snapshot version this push was built from.
    pub config_version: u64,
    /// When the oldest change folded into this push happened (start of the convergence clock).
    pub first_change: Instant,
    snapshot: Arc<MeshSnapshot>,
    /// The wire form of each scope's shared part, encoded once per push however many proxies share it.
    cache: Mutex<HashMap<u64, Slot>>,
}

impl PushContext {
    pub fn new(snapshot: Arc<MeshSnapshot>, first_change: Instant) -> Self {
        PushContext {
            config_version: snapshot.version,
            first_change,
            snapshot,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn snapshot(&self) -> &Arc<MeshSnapshot> {
        &self.snapshot
    }

    /// The config of one proxy: its scope's shared part (translated and encoded once per push) plus its own
    /// small part.
    pub fn output_for(&self, node: &Node) -> Result<Arc<ProxyOutput>, String> {
        let (scope, shared, local) = self.snapshot.parts(node)?;
        let slot = {
            // the lock only guards the map; the encoding runs outside it
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.entry(scope).or_default().clone()
        };
        let shared = slot
            .get_or_init(|| Arc::new(SharedTypes::new(&shared)))
            .clone();
        Ok(Arc::new(ProxyOutput::from_parts(&shared, &local)))
    }
}

/// Turns registry snapshots into debounced push contexts until the registry goes away. The first snapshot
/// is published at once: proxies connecting after the initial sync must not wait for a debounce.
pub(crate) async fn run_pusher(
    mut snapshots: watch::Receiver<Option<Arc<MeshSnapshot>>>,
    push: watch::Sender<Option<Arc<PushContext>>>,
    settings: DebounceSettings,
    metrics: Arc<Metrics>,
) {
    let mut debouncer = Debouncer::new(settings);
    let mut published_any = false;
    let initial = snapshots.borrow_and_update().clone();
    if let Some(snapshot) = initial {
        push.send_replace(Some(Arc::new(PushContext::new(snapshot, Instant::now()))));
        published_any = true;
    }
    loop {
        let deadline = debouncer.deadline();
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = Instant::now();
                if published_any {
                    debouncer.record(now);
                } else if let Some(snapshot) = snapshots.borrow_and_update().clone() {
                    push.send_replace(Some(Arc::new(PushContext::new(snapshot, now))));
                    published_any = true;
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                let Some(batch) = debouncer.take_due(Instant::now()) else { continue };
                let Some(snapshot) = snapshots.borrow_and_update().clone() else { continue };
                metrics.debounced_push();
                tracing::debug!(
                    version = snapshot.version,
                    merged = batch.merged,
                    "pushing config change"
                );
                push.send_replace(Some(Arc::new(PushContext::new(snapshot, batch.first_change))));
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
