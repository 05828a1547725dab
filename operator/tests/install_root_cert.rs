//! The `istio-ca-root-cert` controller against kube's mocked API (tower-test) with the scripted in-memory API
//! server: a new namespace gets the root, a deleted ConfigMap is restored, an edited one corrected, a root
//! rotation reaches every namespace, the kube-system family and terminating namespaces are skipped, and API
//! errors are requeued with back-off.

#![allow(clippy::unwrap_used)]

mod install_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use halyard_operator::install::ca::{self, CaMaterial};
use halyard_operator::install::root_cert::{self, RootCertContext, RootCertOptions};
use install_support::{Failure, State, client};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const MI: &str = "/apis/install.halyard.dev/v1alpha1";
const CORE: &str = "/api/v1";

fn root_pem() -> String {
    CaMaterial::generate("cluster.local", time::OffsetDateTime::now_utc())
        .unwrap()
        .root_cert_pem
}

fn ca_secret(namespace: &str, name: &str, root: &str) -> Value {
    let data: BTreeMap<String, ByteString> = [
        (ca::ROOT_CERT, root),
        (ca::CA_CERT, root),
        (ca::CERT_CHAIN, root),
        (ca::CA_KEY, "unused by the root-cert controller"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let mut v = serde_json::to_value(Secret {
        data: Some(data),
        ..Secret::default()
    })
    .unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v["metadata"] = json!({"name": name, "namespace": namespace});
    v
}

fn namespace(name: &str) -> Arc<Namespace> {
    Arc::new(serde_json::from_value(json!({"metadata": {"name": name}})).unwrap())
}

struct Harness {
    state: Arc<Mutex<State>>,
    ctx: Arc<RootCertContext>,
}

impl Harness {
    /// A cluster with a default-revision MeshInstall whose generated root is `root`.
    fn with_root(root: &str) -> Harness {
        let h = Harness::empty();
        {
            let mut st = h.st();
            st.insert(
                State::key(MI, None, "meshinstalls", "mesh"),
                json!({"apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
                       "metadata": {"name": "mesh"}, "spec": {}}),
            );
            st.insert(
                State::key(CORE, Some("istio-system"), "secrets", "istio-ca-secret"),
                ca_secret("istio-system", "istio-ca-secret", root),
            );
        }
        h
    }

    fn empty() -> Harness {
        let state = Arc::new(Mutex::new(State::default()));
        let ctx = Arc::new(RootCertContext::new(
            client(state.clone()),
            RootCertOptions::default(),
        ));
        Harness { state, ctx }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    async fn reconcile(&self, ns: &str) -> Result<Action, halyard_operator::install::Error> {
        root_cert::reconcile(namespace(ns), self.ctx.clone()).await
    }

    fn published(&self, ns: &str) -> Option<Value> {
        self.st()
            .get(CORE, Some(ns), "configmaps", "istio-ca-root-cert")
            .cloned()
    }

    fn published_root(&self, ns: &str) -> Option<String> {
        self.published(ns)
            .and_then(|cm| cm["data"]["root-cert.pem"].as_str().map(str::to_string))
    }
}

#[tokio::test]
async fn a_new_namespace_gets_the_root_once() {
    let root = root_pem();
    let h = Harness::with_root(&root);
    assert!(h.ctx.refresh().await.unwrap(), "the root was read");
    assert_eq!(h.ctx.root().as_deref(), Some(root.as_str()));

    let action = h.reconcile("apps").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(1800)));
    let cm = h.published("apps").expect("ConfigMap created");
    assert_eq!(cm["data"]["root-cert.pem"], root.as_str());
    assert_eq!(cm["metadata"]["labels"]["istio.io/config"], "true");
    assert_eq!(
        h.st().calls_of("APPLY"),
        ["configmaps apps/istio-ca-root-cert"]
    );

    // nothing to do the second time: read, not written
    h.st().calls.clear();
    h.reconcile("apps").await.unwrap();
    assert_eq!(
        h.st().calls_of("GET"),
        ["configmaps apps/istio-ca-root-cert"]
    );
    assert!(h.st().calls_of("APPLY").is_empty());

    // the control plane's own namespace gets it too (its gateways mount it)
    h.reconcile("istio-system").await.unwrap();
    assert_eq!(
        h.published_root("istio-system").as_deref(),
        Some(root.as_str())
    );
}

#[tokio::test]
async fn the_kube_system_family_and_terminating_namespaces_are_skipped() {
    let h = Harness::with_root(&root_pem());
    h.ctx.refresh().await.unwrap();
    h.st().calls.clear();
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "local-path-storage",
    ] {
        assert_eq!(h.reconcile(ns).await.unwrap(), Action::await_change());
    }
    let terminating: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "leaving"}, "status": {"phase": "Terminating"}}),
    )
    .unwrap();
    root_cert::reconcile(Arc::new(terminating), h.ctx.clone())
        .await
        .unwrap();
    assert!(h.st().calls.is_empty(), "no API call: {:?}", h.st().calls);
}

#[tokio::test]
async fn a_deleted_config_map_is_restored() {
    let root = root_pem();
    let h = Harness::with_root(&root);
    h.ctx.refresh().await.unwrap();
    h.reconcile("apps").await.unwrap();
    h.st().objects.remove(&State::key(
        CORE,
        Some("apps"),
        "configmaps",
        "istio-ca-root-cert",
    ));
    // the ConfigMap watch maps the deletion to its namespace
    let deleted: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "istio-ca-root-cert", "namespace": "apps"}}),
    )
    .unwrap();
    assert_eq!(
        root_cert::namespace_of(deleted),
        Some(kube::runtime::reflector::ObjectRef::new("apps"))
    );
    h.reconcile("apps").await.unwrap();
    assert_eq!(h.published_root("apps").as_deref(), Some(root.as_str()));
}

#[tokio::test]
async fn an_edited_config_map_is_corrected() {
    let root = root_pem();
    let h = Harness::with_root(&root);
    h.ctx.refresh().await.unwrap();
    h.reconcile("apps").await.unwrap();
    {
        let mut st = h.st();
        let cm = st
            .get_mut(CORE, Some("apps"), "configmaps", "istio-ca-root-cert")
            .unwrap();
        cm["data"]["root-cert.pem"] =
            json!("-----BEGIN CERTIFICATE-----\nbogus\n-----END CERTIFICATE-----\n");
        cm["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("istio.io/config");
    }
    h.st().calls.clear();
    h.reconcile("apps").await.unwrap();
    assert_eq!(
        h.st().calls_of("APPLY"),
        ["configmaps apps/istio-ca-root-cert"]
    );
    let cm = h.published("apps").unwrap();
    assert_eq!(cm["data"]["root-cert.pem"], root.as_str());
    assert_eq!(cm["metadata"]["labels"]["istio.io/config"], "true");
}

#[tokio::test]
async fn a_root_rotation_reaches_every_namespace() {
    let old = root_pem();
    let h = Harness::with_root(&old);
    let mut changes = h.ctx.changes().boxed();
    h.ctx.refresh().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("the first root triggers a reconcile of every namespace")
        .unwrap();
    let namespaces = ["apps", "default", "istio-system", "shop"];
    for ns in namespaces {
        h.reconcile(ns).await.unwrap();
        assert_eq!(h.published_root(ns).as_deref(), Some(old.as_str()));
    }

    // the plug-in or generated root is replaced
    let new = root_pem();
    assert_ne!(old, new);
    h.st().insert(
        State::key(CORE, Some("istio-system"), "secrets", "istio-ca-secret"),
        ca_secret("istio-system", "istio-ca-secret", &new),
    );
    assert!(h.ctx.refresh().await.unwrap(), "rotation noticed");
    tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("a rotation triggers a reconcile of every namespace")
        .unwrap();
    for ns in namespaces {
        h.reconcile(ns).await.unwrap();
        assert_eq!(h.published_root(ns).as_deref(), Some(new.as_str()), "{ns}");
    }
    // unchanged root: no trigger
    assert!(!h.ctx.refresh().await.unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), changes.next())
            .await
            .is_err(),
        "no reconcile-all without a change"
    );
}

#[tokio::test]
async fn nothing_is_published_before_there_is_a_root() {
    let h = Harness::empty();
    assert!(!h.ctx.refresh().await.unwrap(), "no MeshInstall, no root");
    assert_eq!(h.ctx.root(), None);
    assert_eq!(h.reconcile("apps").await.unwrap(), Action::await_change());
    assert!(h.published("apps").is_none());

    // a MeshInstall whose CA Secret does not exist yet: still nothing
    h.st().insert(
        State::key(MI, None, "meshinstalls", "mesh"),
        json!({"apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
               "metadata": {"name": "mesh"}, "spec": {}}),
    );
    assert!(!h.ctx.refresh().await.unwrap());
    assert_eq!(h.ctx.root(), None);
}

#[tokio::test]
async fn a_plug_in_ca_publishes_its_root_cert_pem() {
    let root = root_pem();
    let h = Harness::empty();
    {
        let mut st = h.st();
        st.insert(
            State::key(MI, None, "meshinstalls", "mesh"),
            json!({"apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
                   "metadata": {"name": "mesh"},
                   "spec": {"namespace": "mesh-system", "ca": {"source": "cacertsSecret"}}}),
        );
        st.insert(
            State::key(CORE, Some("mesh-system"), "secrets", "cacerts"),
            ca_secret("mesh-system", "cacerts", &root),
        );
    }
    assert!(h.ctx.refresh().await.unwrap());
    assert_eq!(h.ctx.root().as_deref(), Some(root.as_str()));
    // a root-cert.pem that is not a certificate is refused, and the last good root is kept
    h.st()
        .get_mut(CORE, Some("mesh-system"), "secrets", "cacerts")
        .unwrap()["data"]["root-cert.pem"] = json!("bm90IGEgY2VydGlmaWNhdGU=");
    let err = h.ctx.refresh().await.unwrap_err().to_string();
    assert!(err.contains("mesh-system/cacerts"), "{err}");
    assert_eq!(h.ctx.root().as_deref(), Some(root.as_str()));
}

#[tokio::test]
async fn api_errors_are_requeued_with_backoff() {
    let root = root_pem();
    let h = Harness::with_root(&root);
    h.ctx.refresh().await.unwrap();
    h.st().failures.push(Failure {
        verb: "APPLY",
        plural: "configmaps",
        code: 500,
        times: 2,
    });
    let ns = namespace("apps");
    let err = h.reconcile("apps").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("apply ConfigMap apps/istio-ca-root-cert"),
        "{err}"
    );
    assert_eq!(
        root_cert::error_policy(ns.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    let err = h.reconcile("apps").await.unwrap_err();
    assert_eq!(
        root_cert::error_policy(ns.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    // the API recovers: published, and the back-off starts over
    h.reconcile("apps").await.unwrap();
    assert_eq!(h.published_root("apps").as_deref(), Some(root.as_str()));
    assert_eq!(
        root_cert::error_policy(ns, &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn namespace_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// The whole controller (kube-runtime's Controller over the mocked API, with its watches): Namespaces are
/// reconciled, a deleted ConfigMap comes back through the ConfigMap watch, a new namespace through the
/// Namespace watch, and a rotated root reaches every namespace through the reconcile-all trigger.
#[tokio::test]
async fn the_running_controller_publishes_repairs_and_rotates() {
    let old = root_pem();
    let h = Harness::with_root(&old);
    for ns in ["apps", "kube-system", "istio-system"] {
        h.st().insert(
            State::key(CORE, None, "namespaces", ns),
            namespace_object(ns),
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RootCertOptions {
        root_poll: Duration::from_millis(50),
        resync: Duration::from_secs(3600),
    };
    let run = tokio::spawn(root_cert::run(client(h.state.clone()), opts, async {
        let _ = stop_rx.await;
    }));

    until("the root in apps and istio-system", || {
        h.published_root("apps").as_deref() == Some(old.as_str())
            && h.published_root("istio-system").as_deref() == Some(old.as_str())
    })
    .await;
    assert!(
        h.published("kube-system").is_none(),
        "kube-system is skipped"
    );
    // the ConfigMap watch is by name, cluster-wide
    let watched = h
        .st()
        .calls
        .iter()
        .any(|c| c.verb == "WATCH" && c.plural == "configmaps" && c.namespace.is_none());
    assert!(watched, "ConfigMaps are watched");

    // a new namespace
    h.st().insert(
        State::key(CORE, None, "namespaces", "shop"),
        namespace_object("shop"),
    );
    until("the root in the new namespace", || {
        h.published_root("shop").as_deref() == Some(old.as_str())
    })
    .await;

    // a ConfigMap deleted by hand
    h.st().remove(&State::key(
        CORE,
        Some("apps"),
        "configmaps",
        "istio-ca-root-cert",
    ));
    until("the deleted ConfigMap to come back", || {
        h.published_root("apps").as_deref() == Some(old.as_str())
    })
    .await;

    // a rotated root
    let new = root_pem();
    h.st().insert(
        State::key(CORE, Some("istio-system"), "secrets", "istio-ca-secret"),
        ca_secret("istio-system", "istio-ca-secret", &new),
    );
    until("the new root everywhere", || {
        ["apps", "istio-system", "shop"]
            .iter()
            .all(|ns| h.published_root(ns).as_deref() == Some(new.as_str()))
    })
    .await;
    assert!(h.published("kube-system").is_none());

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}
