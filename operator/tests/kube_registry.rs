//! The Kubernetes registry against kube's mocked API server (tower-test): initial sync gating, validation of
//! Istio objects, watch updates, a kind whose CRD is missing, keeping the last state while the API server
//! is down, the mesh config ConfigMap and pod locality from node topology labels.

// Tests may unwrap: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use halyard_config::mesh::{MeshModel, OutboundPolicy};
use halyard_operator::registry::kube::KubeRegistry;
use halyard_operator::registry::{MeshSnapshot, Snapshots};
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// What the fake API server answers.
#[derive(Default)]
struct Script {
    /// Items returned by the list of a collection path (`/api/v1/services`); absent paths list as empty.
    lists: BTreeMap<String, Vec<Value>>,
    /// Collection paths answered 404 (a CRD that is not installed).
    missing: Vec<String>,
    /// Collection paths whose list is never answered (until `hold_lists` is cleared).
    hold_lists: Vec<String>,
    /// One watch answer per path, sent to the next watch request.
    events: BTreeMap<String, Vec<Value>>,
    /// Answer everything with 503.
    down: bool,
    /// Every request seen, as `path?query`.
    requests: Vec<String>,
}

fn list_body(items: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .unwrap()
}

fn status_body(code: u16, reason: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": reason, "reason": reason, "code": code,
    }))
    .unwrap()
}

fn event_body(events: Vec<Value>) -> Vec<u8> {
    let mut body = Vec::new();
    for e in events {
        body.extend(serde_json::to_vec(&e).unwrap());
        body.push(b'\n');
    }
    body
}

fn respond(code: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(body))
        .unwrap()
}

/// Serves requests from the script; watch requests with nothing to send are held open (never answered).
fn serve(mut handle: Handle, script: Arc<Mutex<Script>>) {
    tokio::spawn(async move {
        let mut held: Vec<(String, Responder)> = Vec::new();
        let mut held_lists: Vec<(String, Responder)> = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
            let Ok(next) = next else {
                // release held lists once the script stops holding them
                let s = script.lock().unwrap();
                let (ready, still): (Vec<_>, Vec<_>) = held_lists
                    .drain(..)
                    .partition(|(path, _): &(String, _)| !s.hold_lists.contains(path));
                held_lists = still;
                for (path, send) in ready {
                    let items = s.lists.get(&path).cloned().unwrap_or_default();
                    send.send_response(respond(StatusCode::OK, list_body(&items)));
                }
                if s.down {
                    // dropping held watches ends them with an error, as a dead API server would
                    held.clear();
                }
                let mut s = s;
                let (answer, keep): (Vec<_>, Vec<_>) = held
                    .drain(..)
                    .partition(|(path, _): &(String, _)| s.events.contains_key(path));
                held = keep;
                for (path, send) in answer {
                    let events = s.events.remove(&path).unwrap_or_default();
                    send.send_response(respond(StatusCode::OK, event_body(events)));
                }
                continue;
            };
            let Some((request, send)) = next else { return };
            let path = request.uri().path().to_string();
            let is_watch = request.uri().query().unwrap_or("").contains("watch=true");
            let mut s = script.lock().unwrap();
            s.requests
                .push(format!("{path}?{}", request.uri().query().unwrap_or("")));
            if s.down {
                send.send_response(respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    status_body(503, "ServiceUnavailable"),
                ));
                continue;
            }
            if s.missing.contains(&path) {
                send.send_response(respond(StatusCode::NOT_FOUND, status_body(404, "NotFound")));
                continue;
            }
            if is_watch {
                match s.events.remove(&path) {
                    Some(events) => send.send_response(respond(StatusCode::OK, event_body(events))),
                    None => held.push((path, send)),
                }
                continue;
            }
            if s.hold_lists.contains(&path) {
                held_lists.push((path, send));
                continue;
            }
            let items = s.lists.get(&path).cloned().unwrap_or_default();
            send.send_response(respond(StatusCode::OK, list_body(&items)));
        }
    });
}

fn service(name: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 9080}], "selector": {"app": name}}
    })
}

fn virtual_service(name: &str, weight: i64) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": weight}]}]}
    })
}

const SERVICES: &str = "/api/v1/services";
const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";
const REQUEST_AUTHN: &str = "/apis/security.istio.io/v1/requestauthentications";

fn start(script: Script) -> (Snapshots, Arc<Mutex<Script>>) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let script = Arc::new(Mutex::new(script));
    serve(handle, script.clone());
    let client = kube::Client::new(mock, "default");
    (KubeRegistry::new(client).spawn(), script)
}

async fn wait_snapshot(
    rx: &mut Snapshots,
    what: &str,
    check: impl Fn(&MeshSnapshot) -> bool,
) -> Arc<MeshSnapshot> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = rx.borrow_and_update().clone()
            && check(&s)
        {
            return s;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for: {what}");
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

fn base_script() -> Script {
    Script {
        lists: BTreeMap::from([
            (SERVICES.to_string(), vec![service("reviews", "1")]),
            (
                VIRTUAL_SERVICES.to_string(),
                vec![virtual_service("good", 100), virtual_service("bad", -1)],
            ),
        ]),
        missing: vec![REQUEST_AUTHN.to_string()],
        ..Script::default()
    }
}

#[tokio::test]
async fn initial_sync_admits_valid_objects_and_reports_invalid_ones() {
    let (mut rx, _script) = start(base_script());
    let snapshot = wait_snapshot(&mut rx, "first snapshot", |_| true).await;
    assert_eq!(snapshot.input().services.len(), 1);
    let configs: Vec<&str> = snapshot.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(configs, vec!["good"]);
    assert_eq!(snapshot.configs[0].kind, "VirtualService");
    assert_eq!(snapshot.rejected.len(), 1, "{:?}", snapshot.rejected);
    assert_eq!(snapshot.rejected[0].name, "bad");
    assert!(
        snapshot.rejected[0].reason.contains("weight"),
        "{:?}",
        snapshot.rejected[0]
    );
}

#[tokio::test]
async fn no_snapshot_until_every_kind_is_listed() {
    let mut script = base_script();
    script.hold_lists.push("/api/v1/pods".to_string());
    let (mut rx, script) = start(script);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        rx.borrow_and_update().is_none(),
        "published before pods were listed"
    );
    script.lock().unwrap().hold_lists.clear();
    wait_snapshot(&mut rx, "snapshot after the pods list", |_| true).await;
}

#[tokio::test]
async fn watch_events_update_the_snapshot() {
    let (mut rx, script) = start(base_script());
    let first = wait_snapshot(&mut rx, "first snapshot", |_| true).await;
    script.lock().unwrap().events.insert(
        SERVICES.to_string(),
        vec![json!({"type": "ADDED", "object": service("ratings", "2")})],
    );
    let next = wait_snapshot(&mut rx, "snapshot with ratings", |s| {
        s.input().services.len() == 2
    })
    .await;
    assert!(next.version > first.version);
}

#[tokio::test]
async fn keeps_the_last_state_while_the_api_server_is_down() {
    let (mut rx, script) = start(base_script());
    let first = wait_snapshot(&mut rx, "first snapshot", |_| true).await;
    script.lock().unwrap().down = true;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let now = rx.borrow().clone().expect("snapshot kept");
    assert_eq!(now.input().services.len(), first.input().services.len());
    assert_eq!(now.configs.len(), first.configs.len());
}

const MESH_CONFIG_MAPS: &str = "/api/v1/namespaces/istio-system/configmaps";
const NODES: &str = "/api/v1/nodes";
const PODS: &str = "/api/v1/pods";

fn mesh_config_map(mesh: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system", "resourceVersion": rv},
        "data": {"mesh": mesh}
    })
}

fn node(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "resourceVersion": "1", "labels": labels}
    })
}

fn pod(name: &str, ip: &str, node: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

#[tokio::test]
async fn the_mesh_config_map_sets_the_mesh_config_and_only_it_is_watched() {
    let mut script = base_script();
    script.lists.insert(
        MESH_CONFIG_MAPS.to_string(),
        vec![mesh_config_map(
            "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
            "1",
        )],
    );
    let (mut rx, script) = start(script);
    let snapshot = wait_snapshot(&mut rx, "first snapshot", |_| true).await;
    assert_eq!(
        snapshot.input().mesh.outbound_traffic_policy,
        OutboundPolicy::RegistryOnly
    );
    assert!(
        !snapshot.rejected.iter().any(|r| r.kind == "ConfigMap"),
        "{:?}",
        snapshot.rejected
    );
    {
        let s = script.lock().unwrap();
        let config_maps: Vec<&String> = s
            .requests
            .iter()
            .filter(|r| r.contains("configmaps"))
            .collect();
        assert!(!config_maps.is_empty());
        for r in config_maps {
            assert!(r.starts_with(MESH_CONFIG_MAPS), "{r}");
            assert!(r.contains("fieldSelector=metadata.name%3Distio"), "{r}");
        }
    }

    // A bad mesh config is reported and the defaults apply, as in local mode.
    script.lock().unwrap().events.insert(
        MESH_CONFIG_MAPS.to_string(),
        vec![
            json!({"type": "MODIFIED", "object": mesh_config_map("connectTimeout: later\n", "2")}),
        ],
    );
    let bad = wait_snapshot(&mut rx, "snapshot with the bad mesh config", |s| {
        s.rejected.iter().any(|r| r.kind == "ConfigMap")
    })
    .await;
    assert_eq!(
        bad.input().mesh.outbound_traffic_policy,
        OutboundPolicy::AllowAny
    );
    let reason = &bad
        .rejected
        .iter()
        .find(|r| r.kind == "ConfigMap")
        .unwrap()
        .reason;
    assert!(reason.contains("connectTimeout"), "{reason}");
}

#[tokio::test]
async fn a_missing_mesh_config_map_means_the_defaults() {
    let (mut rx, _script) = start(base_script());
    let snapshot = wait_snapshot(&mut rx, "first snapshot", |_| true).await;
    assert_eq!(
        snapshot.input().mesh.outbound_traffic_policy,
        OutboundPolicy::AllowAny
    );
}

#[tokio::test]
async fn pods_take_their_locality_from_their_node_unless_they_carry_istio_locality() {
    let mut script = base_script();
    script.lists.insert(
        NODES.to_string(),
        vec![node(
            "node-a",
            json!({
                "topology.kubernetes.io/region": "us-east1",
                "topology.kubernetes.io/zone": "us-east1-b",
                "topology.istio.io/subzone": "rack7",
            }),
        )],
    );
    script.lists.insert(
        PODS.to_string(),
        vec![
            pod("plain", "10.1.0.1", "node-a", json!({"app": "reviews"})),
            pod(
                "pinned",
                "10.1.0.2",
                "node-a",
                json!({"app": "reviews", "istio-locality": "eu-west1.eu-west1-a"}),
            ),
            pod(
                "own-zone",
                "10.1.0.3",
                "node-a",
                json!({"app": "reviews", "topology.kubernetes.io/zone": "us-east1-c"}),
            ),
            pod(
                "elsewhere",
                "10.1.0.4",
                "node-unknown",
                json!({"app": "reviews"}),
            ),
        ],
    );
    let (mut rx, _script) = start(script);
    let snapshot = wait_snapshot(&mut rx, "first snapshot", |_| true).await;
    let model = MeshModel::build(snapshot.input());
    assert_eq!(
        model.workload_locality("default", "plain", &[]),
        "us-east1/us-east1-b/rack7"
    );
    assert_eq!(
        model.workload_locality("default", "pinned", &[]),
        "eu-west1/eu-west1-a"
    );
    assert_eq!(
        model.workload_locality("default", "own-zone", &[]),
        "us-east1/us-east1-c/rack7"
    );
    assert_eq!(model.workload_locality("default", "elsewhere", &[]), "");
    // the pod keeps its own labels otherwise
    let plain = snapshot
        .input()
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("plain"))
        .unwrap();
    assert_eq!(
        plain
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("app")
            .map(String::as_str),
        Some("reviews")
    );
}

#[tokio::test]
async fn no_snapshot_until_nodes_and_the_mesh_config_map_are_listed() {
    for held in [NODES, MESH_CONFIG_MAPS] {
        let mut script = base_script();
        script.hold_lists.push(held.to_string());
        let (mut rx, script) = start(script);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            rx.borrow_and_update().is_none(),
            "published before {held} was listed"
        );
        script.lock().unwrap().hold_lists.clear();
        wait_snapshot(&mut rx, "snapshot after the list", |_| true).await;
    }
}

#[tokio::test]
async fn node_updates_rebuild_the_snapshot_only_when_topology_labels_change() {
    let mut script = base_script();
    script.lists.insert(
        NODES.to_string(),
        vec![node("node-a", json!({"topology.kubernetes.io/zone": "z1"}))],
    );
    script.lists.insert(
        PODS.to_string(),
        vec![pod(
            "plain",
            "10.1.0.1",
            "node-a",
            json!({"app": "reviews"}),
        )],
    );
    let (mut rx, script) = start(script);
    wait_snapshot(&mut rx, "first snapshot", |_| true).await;
    // let the initial lists' notifications settle (they may fold into a second version): wait
    // until no new version came for 400 ms, bounded, rather than a fixed sleep that a loaded
    // machine can outlast
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(changed) = tokio::time::timeout(Duration::from_millis(400), rx.changed()).await {
        changed.expect("the registry is running");
        assert!(Instant::now() < deadline, "snapshots never settled");
    }
    let first = rx.borrow_and_update().clone().unwrap();
    let locality =
        |s: &MeshSnapshot| MeshModel::build(s.input()).workload_locality("default", "plain", &[]);
    assert_eq!(locality(&first), "/z1/");

    // a heartbeat-like update (other labels, new resourceVersion) does not rebuild the snapshot
    let mut heartbeat = node(
        "node-a",
        json!({"topology.kubernetes.io/zone": "z1", "x": "1"}),
    );
    heartbeat["metadata"]["resourceVersion"] = json!("2");
    script.lock().unwrap().events.insert(
        NODES.to_string(),
        vec![json!({"type": "MODIFIED", "object": heartbeat})],
    );
    // the mock API server answers the held watch within ~50 ms; wait (bounded) until it did,
    // then give a (wrong) rebuild time to show
    let deadline = Instant::now() + Duration::from_secs(10);
    while !script.lock().unwrap().events.is_empty() {
        assert!(Instant::now() < deadline, "event not sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.borrow().as_ref().unwrap().version, first.version);

    // a zone change does
    let mut moved = node("node-a", json!({"topology.kubernetes.io/zone": "z2"}));
    moved["metadata"]["resourceVersion"] = json!("3");
    script.lock().unwrap().events.insert(
        NODES.to_string(),
        vec![json!({"type": "MODIFIED", "object": moved})],
    );
    let next = wait_snapshot(&mut rx, "snapshot with the new zone", |s| {
        locality(s) == "/z2/"
    })
    .await;
    assert!(next.version > first.version);
}
