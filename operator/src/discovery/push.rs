//! Push contexts: one immutable registry snapshot plus a per-push cache of computed proxy configs, published
//! to every stream after debouncing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use halyard_config::discovery::Node;
use tokio::sync::watch;

use super::debounce::{DebounceSettings, Debouncer};
use super::output::ProxyOutput;
use crate::metrics::Metrics;
use crate::registry::MeshSnapshot;

type Slot = Arc<OnceLock<Result<Arc<ProxyOutput>, String>>>;

/// What every stream computes its proxy's config from during one push.
pub struct PushContext {
    /// The registry snapshot version this push was built from.
    pub config_version: u64,
    /// When the oldest change folded into this push happened (start of the convergence clock).
    pub first_change: Instant,
    snapshot: Arc<MeshSnapshot>,
    /// Proxies whose config is fully determined by the same key share one computed output.
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

    /// The config of one proxy, translated once per distinct cache key per push.
    pub fn output_for(&self, node: &Node) -> Result<Arc<ProxyOutput>, String> {
        let key = self.snapshot.output_key(node);
        let slot = {
            // the lock only guards the map; the translation runs outside it
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.entry(key).or_default().clone()
        };
        slot.get_or_init(|| {
            self.snapshot
                .generate(node)
                .map(|resources| Arc::new(ProxyOutput::new(resources)))
        })
        .clone()
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
