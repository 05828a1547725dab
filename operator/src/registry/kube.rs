//! The Kubernetes registry: kube-runtime reflectors over Services, EndpointSlices, Pods, Namespaces and the
//! Istio kinds. Not synced (no snapshot) until every kind has been listed once; while the API server is
//! unreachable the reflectors keep their last state and so does the snapshot.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use super::{MeshObjects, MeshSnapshot, Rejected, Snapshots, admit};

/// The Istio kinds watched: (group, version, kind, plural).
pub const ISTIO_KINDS: &[(&str, &str, &str, &str)] = &[
    (
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    ),
    (
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
    ),
    ("networking.istio.io", "v1", "Gateway", "gateways"),
    (
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
    ),
    ("networking.istio.io", "v1", "Sidecar", "sidecars"),
    (
        "networking.istio.io",
        "v1",
        "WorkloadEntry",
        "workloadentries",
    ),
    (
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    ),
    (
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    (
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
    ),
];

/// Watches one cluster.
pub struct KubeRegistry {
    client: Client,
    /// Changes arriving within this window are folded into one snapshot.
    coalesce: Duration,
}

struct Stores {
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    istio: Vec<(ApiResource, Store<DynamicObject>)>,
}

impl KubeRegistry {
    pub fn new(client: Client) -> Self {
        KubeRegistry {
            client,
            coalesce: Duration::from_millis(50),
        }
    }

    /// Starts the reflectors; the first snapshot is published when every kind has been listed.
    pub fn spawn(self) -> Snapshots {
        let (tx, rx) = watch::channel(None);
        let changed = Arc::new(Notify::new());
        let mut synced = Vec::new();

        let services = self.reflect::<Service>(&changed, &mut synced, "Service");
        let endpoint_slices = self.reflect::<EndpointSlice>(&changed, &mut synced, "EndpointSlice");
        let pods = self.reflect::<Pod>(&changed, &mut synced, "Pod");
        let namespaces = self.reflect::<Namespace>(&changed, &mut synced, "Namespace");
        let istio = ISTIO_KINDS
            .iter()
            .map(|(group, version, kind, plural)| {
                let ar = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, version, kind),
                    plural,
                );
                let writer = Writer::new(ar.clone());
                let store = writer.as_reader();
                let api = Api::<DynamicObject>::all_with(self.client.clone(), &ar);
                synced.push(spawn_reflector(api, writer, changed.clone(), kind));
                (ar, store)
            })
            .collect();
        let stores = Stores {
            services,
            endpoint_slices,
            pods,
            namespaces,
            istio,
        };
        tokio::spawn(publish(stores, synced, changed, self.coalesce, tx));
        rx
    }

    fn reflect<K>(
        &self,
        changed: &Arc<Notify>,
        synced: &mut Vec<watch::Receiver<bool>>,
        kind: &'static str,
    ) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (store, writer) = reflector::store();
        synced.push(spawn_reflector(
            Api::<K>::all(self.client.clone()),
            writer,
            changed.clone(),
            kind,
        ));
        store
    }
}

/// Drives one reflector; the returned flag turns true once its kind has been listed (or found absent).
fn spawn_reflector<K>(
    api: Api<K>,
    writer: Writer<K>,
    changed: Arc<Notify>,
    kind: &'static str,
) -> watch::Receiver<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let (synced_tx, synced_rx) = watch::channel(false);
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        futures::pin_mut!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    synced_tx.send_replace(true);
                    changed.notify_one();
                    failing = false;
                }
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                    changed.notify_one();
                    failing = false;
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(err) => {
                    let synced = *synced_tx.borrow();
                    if is_not_found(&err) && !synced {
                        // the kind's CRD is not installed: there are no such objects
                        tracing::warn!(
                            kind,
                            "kind not served by the API server; treating it as empty"
                        );
                        synced_tx.send_replace(true);
                        changed.notify_one();
                    } else if !failing {
                        tracing::warn!(kind, error = %err, "watch failed; keeping the last state and retrying");
                    }
                    failing = true;
                }
            }
        }
    });
    synced_rx
}

fn is_not_found(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 404,
        _ => false,
    }
}

async fn publish(
    stores: Stores,
    mut synced: Vec<watch::Receiver<bool>>,
    changed: Arc<Notify>,
    coalesce: Duration,
    tx: watch::Sender<Option<Arc<MeshSnapshot>>>,
) {
    for flag in &mut synced {
        if flag.wait_for(|s| *s).await.is_err() {
            return;
        }
    }
    tracing::info!("kubernetes registry: initial list of every kind complete");
    let mut version = 0u64;
    loop {
        version += 1;
        let (objects, rejected) = collect(&stores);
        for r in &rejected {
            tracing::warn!(kind = %r.kind, namespace = %r.namespace, name = %r.name, reason = %r.reason, "skipping invalid object");
        }
        let snapshot = MeshSnapshot::build(version, "kubernetes".to_string(), objects, rejected);
        tx.send_replace(Some(Arc::new(snapshot)));
        changed.notified().await;
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(coalesce).await;
    }
}

/// Reads every store; Istio objects go through the same validation as files.
fn collect(stores: &Stores) -> (MeshObjects, Vec<Rejected>) {
    let mut objects = MeshObjects {
        services: owned(&stores.services),
        endpoint_slices: owned(&stores.endpoint_slices),
        pods: owned(&stores.pods),
        namespaces: owned(&stores.namespaces),
        ..MeshObjects::default()
    };
    let mut rejected = Vec::new();
    for (ar, store) in &stores.istio {
        let mut items = store.state();
        items.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        for obj in items {
            let Ok(mut value) = serde_json::to_value(&*obj) else {
                continue;
            };
            // list items come without apiVersion/kind
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), ar.api_version.clone().into());
                map.insert("kind".into(), ar.kind.clone().into());
            }
            admit(value, "kubernetes", "default", &mut objects, &mut rejected);
        }
    }
    (objects, rejected)
}

fn owned<K: Clone + Resource>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut items: Vec<K> = store.state().iter().map(|o| (**o).clone()).collect();
    items.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    items
}
