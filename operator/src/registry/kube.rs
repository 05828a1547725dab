//! The Kubernetes registry: kube-runtime reflectors over Services, EndpointSlices, Pods, Namespaces, the
//! Istio kinds, the mesh config ConfigMap `istio-system/istio` (only that one, by field selector) and Nodes
//! (metadata only: their topology labels give a pod its locality when it has no `istio-locality` label).
//! Not synced (no snapshot) until every kind has been listed once; while the API server is unreachable the
//! reflectors keep their last state and so does the snapshot.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use halyard_config::mesh::DEFAULT_ROOT_NAMESPACE;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::PartialObjectMeta;
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
    /// At most the one ConfigMap holding the mesh config.
    mesh_config: Store<ConfigMap>,
    nodes: Store<PartialObjectMeta<Node>>,
}

/// The name of Istio's mesh config ConfigMap (in [`DEFAULT_ROOT_NAMESPACE`]); its `mesh` key is the MeshConfig.
pub const MESH_CONFIG_MAP: &str = "istio";

/// Node labels a pod's locality is taken from (as Istio does) when the pod has no `istio-locality` label.
pub const NODE_TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

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
                let events = watcher(api, watcher::Config::default());
                synced.push(spawn_reflector(events, writer, changed.clone(), kind));
                (ar, store)
            })
            .collect();
        // Only the mesh config ConfigMap, not every ConfigMap of the cluster.
        let (mesh_config, writer) = reflector::store();
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), DEFAULT_ROOT_NAMESPACE);
        let config = watcher::Config::default().fields(&format!("metadata.name={MESH_CONFIG_MAP}"));
        synced.push(spawn_reflector(
            watcher(api, config),
            writer,
            changed.clone(),
            "ConfigMap",
        ));
        // Node metadata only (`Api<PartialObjectMeta<_>>` makes metadata-only requests): their labels, not
        // their status. Updates that leave a node's topology labels as they were are dropped, so that node
        // heartbeats do not rebuild the snapshot.
        let (nodes, writer) = reflector::store();
        let api = Api::<PartialObjectMeta<Node>>::all(self.client.clone());
        let mut seen: HashMap<String, Vec<Option<String>>> = HashMap::new();
        let events = watcher(api, watcher::Config::default()).filter(move |event| {
            let keep = match event {
                Ok(watcher::Event::Apply(node)) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    seen.insert(name, node_topology(node)).as_ref() != Some(&node_topology(node))
                }
                Ok(watcher::Event::InitApply(node)) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    seen.insert(name, node_topology(node));
                    true
                }
                Ok(watcher::Event::Delete(node)) => {
                    seen.remove(node.metadata.name.as_deref().unwrap_or_default());
                    true
                }
                _ => true,
            };
            std::future::ready(keep)
        });
        synced.push(spawn_reflector(events, writer, changed.clone(), "Node"));
        let stores = Stores {
            services,
            endpoint_slices,
            pods,
            namespaces,
            istio,
            mesh_config,
            nodes,
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
            watcher(
                Api::<K>::all(self.client.clone()),
                watcher::Config::default(),
            ),
            writer,
            changed.clone(),
            kind,
        ));
        store
    }
}

/// Drives one reflector; the returned flag turns true once its kind has been listed (or found absent).
fn spawn_reflector<K, S>(
    events: S,
    writer: Writer<K>,
    changed: Arc<Notify>,
    kind: &'static str,
) -> watch::Receiver<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let (synced_tx, synced_rx) = watch::channel(false);
    tokio::spawn(async move {
        let stream = events.default_backoff().reflect(writer);
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
    let mut pods = owned(&stores.pods);
    add_node_topology(&mut pods, &stores.nodes);
    let mut objects = MeshObjects {
        services: owned(&stores.services),
        endpoint_slices: owned(&stores.endpoint_slices),
        pods,
        namespaces: owned(&stores.namespaces),
        ..MeshObjects::default()
    };
    let mut rejected = Vec::new();
    // The mesh config goes through `admit` as in local mode: a bad one is reported and the defaults stay.
    for cm in store_items(&stores.mesh_config) {
        let Ok(mut value) = serde_json::to_value(&*cm) else {
            continue;
        };
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), "v1".into());
            map.insert("kind".into(), "ConfigMap".into());
        }
        admit(
            value,
            "kubernetes",
            DEFAULT_ROOT_NAMESPACE,
            &mut objects,
            &mut rejected,
        );
    }
    for (ar, store) in &stores.istio {
        for obj in store_items(store) {
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

/// A store's objects sorted by (namespace, name), so that snapshots do not depend on the store's order.
fn store_items<K: Clone + Resource>(store: &Store<K>) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut items = store.state();
    items.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    items
}

fn owned<K: Clone + Resource>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store_items(store).iter().map(|o| (**o).clone()).collect()
}

/// A node's topology label values, in [`NODE_TOPOLOGY_LABELS`] order.
fn node_topology(node: &PartialObjectMeta<Node>) -> Vec<Option<String>> {
    NODE_TOPOLOGY_LABELS
        .iter()
        .map(|key| {
            node.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(*key).cloned())
        })
        .collect()
}

/// Gives each scheduled pod without an `istio-locality` label its node's topology labels, where the pod does
/// not carry them itself, so that the model takes its locality from the node as Istio does. Only the copy
/// handed to the model changes.
fn add_node_topology(pods: &mut [Pod], nodes: &Store<PartialObjectMeta<Node>>) {
    for pod in pods {
        if let Some(labels) = &pod.metadata.labels
            && labels.contains_key("istio-locality")
        {
            continue;
        }
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let Some(node) = nodes.get(&reflector::ObjectRef::new(node_name)) else {
            continue;
        };
        let Some(node_labels) = node.metadata.labels.as_ref() else {
            continue;
        };
        for key in NODE_TOPOLOGY_LABELS {
            if let Some(value) = node_labels.get(*key) {
                pod.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .entry((*key).to_string())
                    .or_insert_with(|| value.clone());
            }
        }
    }
}
