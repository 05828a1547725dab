//! `istio-ca-root-cert`: the mesh's root certificate published into every namespace, as istiod's namespace
//! controller does. Proxies (sidecars and gateways) mount the ConfigMap (`root-cert.pem`) to verify the
//! control plane and their peers.
//!
//! Istio's behaviour, kept here: the ConfigMap is named `istio-ca-root-cert`, labelled `istio.io/config: "true"`,
//! holds the root under `root-cert.pem`, and is written to every namespace except the kube-system family
//! (`kube-system`, `kube-public`, `kube-node-lease`, `local-path-storage`, Istio's `IgnoredNamespaces`). It is
//! recreated when deleted, corrected when edited, rewritten everywhere when the root changes, and namespaces
//! being terminated are left alone.
//!
//! The root is the one of the MeshInstall that owns the trust domain: the default revision's (else the first
//! by name), read from its CA Secret (`istio-ca-secret`, or the plug-in `cacerts`). It is re-read on every
//! MeshInstall event and every [`RootCertOptions::root_poll`], so that a rotated plug-in CA reaches every
//! namespace without a restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use halyard_crds::install::{CaSource, MeshInstall};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::controller::is_not_found;
use super::{Error, FIELD_MANAGER, LABEL_MANAGED_BY, MANAGED_BY, Result, ca};

/// Name of the ConfigMap (Istio's `CACertNamespaceConfigMap`).
pub const CONFIG_MAP: &str = "istio-ca-root-cert";
/// Key of the root certificate in it.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Label Istio puts on the ConfigMap.
pub const LABEL_ISTIO_CONFIG: &str = "istio.io/config";
/// Namespaces that never get the ConfigMap: Istio's `inject.IgnoredNamespaces`, the same list the injector
/// skips (one definition, the webhook's).
pub use halyard_webhook::decision::IGNORED_NAMESPACES;

/// Timings of the root-certificate controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCertOptions {
    /// How often the root is re-read from the CA Secret (besides every MeshInstall event).
    pub root_poll: Duration,
    /// Periodic re-check of each namespace's ConfigMap (one GET per namespace); the watch on the ConfigMaps
    /// repairs deletions and edits at once, so this only covers missed watch events.
    pub resync: Duration,
}

impl Default for RootCertOptions {
    fn default() -> Self {
        RootCertOptions {
            root_poll: Duration::from_secs(10),
            resync: Duration::from_secs(1800),
        }
    }
}

/// Whether a namespace gets the ConfigMap: not one of [`IGNORED_NAMESPACES`], and not being deleted.
pub fn publishes_to(ns: &Namespace) -> bool {
    let name = ns.name_any();
    if IGNORED_NAMESPACES.contains(&name.as_str()) {
        return false;
    }
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Terminating");
    !terminating
}

/// The ConfigMap a namespace should hold, as a server-side apply body.
pub fn desired(namespace: &str, root_pem: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": CONFIG_MAP, "namespace": namespace,
            "labels": {LABEL_ISTIO_CONFIG: "true", LABEL_MANAGED_BY: MANAGED_BY},
        },
        "data": {ROOT_CERT_KEY: root_pem},
    })
}

/// Whether the live ConfigMap already says what [`desired`] says.
pub fn is_current(live: Option<&ConfigMap>, root_pem: &str) -> bool {
    live.is_some_and(|cm| {
        let data_ok = cm
            .data
            .as_ref()
            .and_then(|d| d.get(ROOT_CERT_KEY))
            .is_some_and(|v| v == root_pem);
        let labels = cm.labels();
        data_ok
            && labels.get(LABEL_ISTIO_CONFIG).map(String::as_str) == Some("true")
            && labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
    })
}

/// Which CA Secret (`namespace`, `name`) holds the mesh root: the default revision's MeshInstall, else the
/// first by name; MeshInstalls being deleted are skipped.
pub fn root_source(installs: &[MeshInstall]) -> Option<(String, String)> {
    let mut live: Vec<&MeshInstall> = installs
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by_key(|m| {
        let default = matches!(m.spec.revision.as_deref(), None | Some("" | "default"));
        (!default, m.name_any())
    });
    live.first().map(|m| {
        let secret = match m.spec.ca.source {
            CaSource::CacertsSecret => m.spec.ca.secret_name.clone(),
            CaSource::SelfSigned => ca::SELF_SIGNED_SECRET.to_string(),
        };
        (m.spec.namespace.clone(), secret)
    })
}

/// Reads the current mesh root from the cluster: `None` while there is no MeshInstall, or its CA Secret does
/// not exist yet (the MeshInstall controller creates it).
pub async fn resolve_root(client: &Client) -> Result<Option<String>> {
    let installs = match Api::<MeshInstall>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        // The MeshInstall CRD is not installed: no mesh, no root.
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(Error::kube("list", "MeshInstall", "*", e)),
    };
    let Some((namespace, name)) = root_source(&installs) else {
        return Ok(None);
    };
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube("get", "Secret", &format!("{namespace}/{name}"), e))?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let bad = |why: String| Error::CaSecret {
        namespace: namespace.clone(),
        name: name.clone(),
        why,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(ca::ROOT_CERT))
        .ok_or_else(|| bad(format!("missing key {}", ca::ROOT_CERT)))?;
    let pem = String::from_utf8(bytes.0.clone())
        .map_err(|_| bad(format!("{} is not PEM text", ca::ROOT_CERT)))?;
    ca::cert_info(&pem).map_err(|e| bad(format!("{}: {e}", ca::ROOT_CERT)))?;
    Ok(Some(pem))
}

/// Shared state of the root-certificate controller: the current root and per-namespace back-off.
pub struct RootCertContext {
    pub client: Client,
    pub opts: RootCertOptions,
    root: watch::Sender<Option<String>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl RootCertContext {
    pub fn new(client: Client, opts: RootCertOptions) -> RootCertContext {
        RootCertContext {
            client,
            opts,
            root: watch::Sender::new(None),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The root being published (`None`: nothing to publish yet).
    pub fn root(&self) -> Option<String> {
        self.root.borrow().clone()
    }

    /// Sets the root; returns whether it changed (every namespace is then reconciled again).
    pub fn set_root(&self, root: Option<String>) -> bool {
        self.root.send_if_modified(|cur| {
            if *cur == root {
                false
            } else {
                *cur = root;
                true
            }
        })
    }

    /// Re-reads the root from the cluster ([`resolve_root`]); returns whether it changed. A root that can no
    /// longer be read is kept: the namespaces keep the last good one.
    pub async fn refresh(&self) -> Result<bool> {
        match resolve_root(&self.client).await? {
            Some(root) => {
                let changed = self.set_root(Some(root));
                if changed {
                    info!(
                        "mesh root certificate changed; publishing {CONFIG_MAP} to every namespace"
                    );
                }
                Ok(changed)
            }
            None => Ok(false),
        }
    }

    /// A stream that yields once per root change (for `reconcile_all_on`).
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        tokio_stream::wrappers::WatchStream::from_changes(self.root.subscribe()).map(|_| ())
    }

    /// Back-off after consecutive failures in one namespace: 5 s doubling up to 5 min.
    fn backoff(&self, ns: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(ns.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 5u64.saturating_mul(1 << (*n - 1).min(6));
        Duration::from_secs(secs.min(300))
    }

    fn succeeded(&self, ns: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ns);
    }
}

/// The API server's refusal to write into a namespace that is being deleted (or is already gone).
fn namespace_going_away(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 404
                || (s.code == 403
                    && (s.message.contains("being terminated")
                        || s.reason == "NamespaceTerminating"))
        }
        _ => false,
    }
}

/// One namespace: make its `istio-ca-root-cert` hold the current root.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<RootCertContext>) -> Result<Action> {
    let name = ns.name_any();
    if !publishes_to(&ns) {
        return Ok(Action::await_change());
    }
    let Some(root) = ctx.root() else {
        // Nothing to publish yet; a root change reconciles every namespace.
        return Ok(Action::await_change());
    };
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &name);
    let qualified = format!("{name}/{CONFIG_MAP}");
    let live = api
        .get_opt(CONFIG_MAP)
        .await
        .map_err(|e| Error::kube("get", "ConfigMap", &qualified, e))?;
    if is_current(live.as_ref(), &root) {
        ctx.succeeded(&name);
        return Ok(Action::requeue(ctx.opts.resync));
    }
    match api
        .patch(
            CONFIG_MAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired(&name, &root)),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if namespace_going_away(&e) => {
            debug!("namespace {name} is going away; not publishing {CONFIG_MAP}");
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Error::kube("apply", "ConfigMap", &qualified, e)),
    }
    info!(
        "{} {qualified}",
        if live.is_some() {
            "corrected"
        } else {
            "created"
        }
    );
    ctx.succeeded(&name);
    Ok(Action::requeue(ctx.opts.resync))
}

/// Requeues a failed namespace with back-off.
pub fn error_policy(ns: Arc<Namespace>, err: &Error, ctx: Arc<RootCertContext>) -> Action {
    let name = ns.name_any();
    let wait = ctx.backoff(&name);
    warn!(error = %err, "{CONFIG_MAP} in namespace {name}: retrying in {wait:?}");
    Action::requeue(wait)
}

/// The namespace to reconcile when a watched ConfigMap changes (only `istio-ca-root-cert` is watched).
pub fn namespace_of(cm: ConfigMap) -> Option<ObjectRef<Namespace>> {
    if cm.metadata.name.as_deref() != Some(CONFIG_MAP) {
        return None;
    }
    cm.metadata.namespace.map(|ns| ObjectRef::new(&ns))
}

/// Runs the controller until `shutdown` completes: Namespaces are the primary objects, the ConfigMaps named
/// `istio-ca-root-cert` are watched (a deleted or edited one is repaired at once), and every root change
/// reconciles every namespace.
pub async fn run(
    client: Client,
    opts: RootCertOptions,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(RootCertContext::new(client.clone(), opts));
    let (stop_tx, stop_rx) = watch::channel(false);
    let refresher = tokio::spawn(refresh_root(client.clone(), ctx.clone(), stop_rx));
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
        namespace_of,
    )
    .reconcile_all_on(ctx.changes())
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        match res {
            Ok((ns, _)) => debug!("reconciled {CONFIG_MAP} in {}", ns.name),
            Err(e) => debug!(error = %e, "{CONFIG_MAP} reconcile failed"),
        }
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = refresher.await;
}

/// Keeps [`RootCertContext`]'s root current: on every MeshInstall event and every `root_poll`.
async fn refresh_root(client: Client, ctx: Arc<RootCertContext>, mut stop: watch::Receiver<bool>) {
    let mut installs = watcher(Api::<MeshInstall>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        if let Err(e) = ctx.refresh().await {
            warn!(error = %e, "reading the mesh root certificate");
        }
        let ended = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            event = installs.next() => event.is_none(),
            _ = tokio::time::sleep(ctx.opts.root_poll) => false,
        };
        if ended {
            // The watch ended (it should not, with back-off): fall back to polling.
            tokio::time::sleep(ctx.opts.root_poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(v: Value) -> Namespace {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn kube_system_family_and_terminating_namespaces_are_skipped() {
        for n in IGNORED_NAMESPACES {
            assert!(!publishes_to(&ns(json!({"metadata": {"name": n}}))), "{n}");
        }
        assert!(publishes_to(&ns(json!({"metadata": {"name": "default"}}))));
        assert!(publishes_to(&ns(
            json!({"metadata": {"name": "istio-system"}})
        )));
        assert!(!publishes_to(&ns(
            json!({"metadata": {"name": "a"}, "status": {"phase": "Terminating"}})
        )));
        assert!(!publishes_to(&ns(
            json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}})
        )));
    }

    #[test]
    fn only_the_root_config_map_maps_to_its_namespace() {
        let cm = |name: &str| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "apps"}}))
                .unwrap_or_default()
        };
        assert_eq!(namespace_of(cm(CONFIG_MAP)), Some(ObjectRef::new("apps")));
        assert_eq!(namespace_of(cm("other")), None);
    }

    #[test]
    fn the_default_revision_owns_the_root() {
        let mi = |name: &str, spec: Value| -> MeshInstall {
            serde_json::from_value(
                json!({"apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
                "metadata": {"name": name}, "spec": spec}),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let canary = mi("a-canary", json!({"revision": "canary"}));
        let default = mi(
            "mesh",
            json!({"namespace": "mesh-system", "ca": {"source": "cacertsSecret", "secretName": "plugged"}}),
        );
        assert_eq!(
            root_source(&[canary.clone(), default]),
            Some(("mesh-system".to_string(), "plugged".to_string()))
        );
        assert_eq!(
            root_source(std::slice::from_ref(&canary)),
            Some(("istio-system".to_string(), "istio-ca-secret".to_string()))
        );
        assert_eq!(root_source(&[]), None);
    }

    #[test]
    fn current_means_same_root_and_labels() {
        let cm = |v: Value| -> ConfigMap { serde_json::from_value(v).unwrap_or_default() };
        let good = cm(desired("apps", "ROOT"));
        assert!(is_current(Some(&good), "ROOT"));
        assert!(!is_current(Some(&good), "NEW ROOT"));
        assert!(!is_current(None, "ROOT"));
        let unlabelled =
            cm(json!({"metadata": {"name": CONFIG_MAP}, "data": {ROOT_CERT_KEY: "ROOT"}}));
        assert!(!is_current(Some(&unlabelled), "ROOT"));
    }
}
