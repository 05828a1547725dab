//! The delta form of the discovery stream over real gRPC on loopback, with a bare protocol client (no
//! proxy logic in between): one endpoint change sends exactly the changed resource, and named
//! subscriptions (`resource_names_subscribe` / `unsubscribe`) decide what a proxy is sent.

// Tests may unwrap: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use halyard_config::discovery::aggregated_discovery_client::AggregatedDiscoveryClient;
use halyard_config::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};
use halyard_config::resources::ClusterEndpoints;
use halyard_config::type_urls::{CLUSTER, ENDPOINTS, PUSH_ORDER};
use halyard_operator::debug::client as debug_client;
use halyard_operator::run::{Args, run_until};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.0.0.11
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 10.0.0.12
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  clusterIP: 10.0.0.13
  selector: {app: details}
  ports: [{name: http, port: 9080}]
"#;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

fn slice(service: &str, addresses: &[&str]) -> String {
    let endpoints: Vec<String> = addresses
        .iter()
        .map(|a| format!("- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  \
         namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\n\
         ports: [{{name: http, port: 9080, protocol: TCP}}]\nendpoints:\n{}",
        endpoints.concat()
    )
}

fn write_config(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct ControlPlane {
    grpc: SocketAddr,
    monitoring: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), halyard_operator::Error>>,
}

impl ControlPlane {
    async fn start(dir: &Path) -> ControlPlane {
        let (grpc, monitoring) = (free_addr(), free_addr());
        let args = Args::try_parse_from([
            "halyard-operator",
            "--config-dir",
            dir.to_str().unwrap(),
            "--config-poll",
            "1s",
            "--grpc-addr",
            &grpc.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--debounce-after",
            "20ms",
            "--debounce-max",
            "1s",
        ])
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_until(args, async {
            let _ = stopped.await;
        }));
        let monitoring = format!("http://{monitoring}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while debug_client::get(&monitoring, "/ready").await.is_err() {
            assert!(Instant::now() < deadline, "control plane not ready in 15 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ControlPlane {
            grpc,
            monitoring,
            stop,
            task,
        }
    }

    /// Waits until the proxy's stream has handled the registry's newest config version.
    async fn wait_pushed(&self, proxy_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let report = debug_client::sync_report(&self.monitoring).await.unwrap();
            let current = report
                .proxies
                .iter()
                .any(|p| p.proxy_id == proxy_id && p.config_version == report.config_version);
            if current && report.config_version > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{proxy_id} never reached the newest config: {report:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn config_version(&self) -> u64 {
        debug_client::sync_report(&self.monitoring)
            .await
            .unwrap()
            .config_version
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("control plane stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// A bare delta client: what it sends and receives is exactly what the test says.
struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    inbound: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    /// Opens the stream with one first request per type: `names` subscribed (none = wildcard).
    async fn connect(cp: &ControlPlane, id: &str, names: &BTreeMap<&str, Vec<&str>>) -> Self {
        let mut client = AggregatedDiscoveryClient::connect(format!("http://{}", cp.grpc))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        for t in PUSH_ORDER {
            tx.send(DeltaDiscoveryRequest {
                node: Some(Node {
                    id: id.to_string(),
                    namespace: "default".to_string(),
                    ip_addresses: vec!["10.1.0.1".to_string()],
                    ..Node::default()
                }),
                type_url: t.to_string(),
                resource_names_subscribe: names
                    .get(t)
                    .map(|n| n.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
                ..DeltaDiscoveryRequest::default()
            })
            .await
            .unwrap();
        }
        let inbound = client
            .delta(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        DeltaClient { tx, inbound }
    }

    async fn next(&mut self, within: Duration) -> Option<DeltaDiscoveryResponse> {
        match tokio::time::timeout(within, self.inbound.message()).await {
            Ok(message) => message.unwrap(),
            Err(_) => None,
        }
    }

    async fn send(&self, type_url: &str, nonce: &str, subscribe: &[&str], unsubscribe: &[&str]) {
        let own = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        self.tx
            .send(DeltaDiscoveryRequest {
                type_url: type_url.to_string(),
                response_nonce: nonce.to_string(),
                resource_names_subscribe: own(subscribe),
                resource_names_unsubscribe: own(unsubscribe),
                ..DeltaDiscoveryRequest::default()
            })
            .await
            .unwrap();
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(&r.type_url, &r.nonce, &[], &[]).await;
    }

    /// Every response until none came for `quiet`, each ACKed.
    async fn drain(&mut self, quiet: Duration) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        while let Some(r) = self.next(quiet).await {
            self.ack(&r).await;
            out.push(r);
        }
        out
    }

    /// The answer to each type's first request (delta always answers a subscribe), ACKed.
    async fn initial(&mut self) -> BTreeMap<String, DeltaDiscoveryResponse> {
        let mut got = BTreeMap::new();
        while got.len() < PUSH_ORDER.len() {
            let r = self
                .next(Duration::from_secs(15))
                .await
                .expect("an answer to every subscribe");
            self.ack(&r).await;
            got.insert(r.type_url.clone(), r);
        }
        got
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|x| x.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_change_sends_only_that_resource() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "services.yaml", SERVICES);
    write_config(dir.path(), "reviews.yaml", &slice("reviews", &["10.1.1.1"]));
    write_config(dir.path(), "ratings.yaml", &slice("ratings", &["10.1.2.1"]));
    let cp = ControlPlane::start(dir.path()).await;

    let mut client = DeltaClient::connect(&cp, "productpage-1.default", &BTreeMap::new()).await;
    let initial = client.initial().await;
    let clusters = names(&initial[CLUSTER]);
    assert!(
        clusters.contains(&REVIEWS) && clusters.contains(&RATINGS),
        "{clusters:?}"
    );
    assert!(clusters.len() >= 3, "{clusters:?}");
    let endpoints = names(&initial[ENDPOINTS]);
    assert!(endpoints.contains(&REVIEWS), "{endpoints:?}");
    // nothing else arrives while nothing changes
    assert!(client.drain(Duration::from_millis(300)).await.is_empty());

    let before = cp.config_version().await;
    write_config(
        dir.path(),
        "reviews.yaml",
        &slice("reviews", &["10.1.1.1", "10.1.1.2"]),
    );
    let first = client
        .next(Duration::from_secs(15))
        .await
        .expect("the endpoint change is pushed");
    client.ack(&first).await;
    cp.wait_pushed("productpage-1.default").await;
    assert!(cp.config_version().await > before);
    let mut pushed = vec![first];
    pushed.extend(client.drain(Duration::from_millis(300)).await);

    // exactly one response: the endpoints of reviews, nothing about clusters or any other resource
    let summary: Vec<(String, Vec<&str>, Vec<String>)> = pushed
        .iter()
        .map(|r| (r.type_url.clone(), names(r), r.removed_resources.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![(ENDPOINTS.to_string(), vec![REVIEWS], Vec::new())],
        "what the endpoint change sent"
    );
    let any = pushed[0].resources[0].resource.as_ref().unwrap();
    let sent = ClusterEndpoints::decode(any.value.as_slice()).unwrap();
    let addresses = format!("{sent:?}");
    assert!(
        addresses.contains("10.1.1.1") && addresses.contains("10.1.1.2"),
        "{addresses}"
    );

    // removing a service removes its cluster and endpoints by name, and sends nothing else changed
    std::fs::remove_file(dir.path().join("ratings.yaml")).unwrap();
    write_config(
        dir.path(),
        "services.yaml",
        &SERVICES.replace("name: ratings", "name: ratings-gone"),
    );
    let first = client
        .next(Duration::from_secs(15))
        .await
        .expect("the removal is pushed");
    client.ack(&first).await;
    cp.wait_pushed("productpage-1.default").await;
    let mut pushed = vec![first];
    pushed.extend(client.drain(Duration::from_millis(300)).await);
    let removed: Vec<&str> = pushed
        .iter()
        .filter(|r| r.type_url == CLUSTER)
        .flat_map(|r| r.removed_resources.iter().map(String::as_str))
        .collect();
    assert!(removed.contains(&RATINGS), "{pushed:?}");
    for r in pushed.iter().filter(|r| r.type_url == CLUSTER) {
        for name in names(r) {
            assert!(
                name.contains("ratings-gone"),
                "unchanged cluster {name} was resent"
            );
        }
    }

    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_subscriptions_decide_what_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "services.yaml", SERVICES);
    write_config(dir.path(), "reviews.yaml", &slice("reviews", &["10.1.1.1"]));
    write_config(dir.path(), "ratings.yaml", &slice("ratings", &["10.1.2.1"]));
    let cp = ControlPlane::start(dir.path()).await;
    let id = "reviews-v1-1.default";

    let subscriptions = BTreeMap::from([(ENDPOINTS, vec![RATINGS])]);
    let mut client = DeltaClient::connect(&cp, id, &subscriptions).await;
    let initial = client.initial().await;
    assert_eq!(names(&initial[ENDPOINTS]), vec![RATINGS]);
    assert!(
        names(&initial[CLUSTER]).len() >= 3,
        "clusters stay wildcard"
    );

    // a change to an endpoint set the proxy did not subscribe to sends nothing
    let before = cp.config_version().await;
    write_config(
        dir.path(),
        "reviews.yaml",
        &slice("reviews", &["10.1.1.1", "10.1.1.9"]),
    );
    // Wait for the registry to take the change (a fixed sleep can end before it does on a loaded
    // machine; then the change would be pushed after the subscription below and look like a
    // second response), then for this proxy's stream to handle it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while cp.config_version().await <= before {
        assert!(
            Instant::now() < deadline,
            "the registry never took the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cp.wait_pushed(id).await;
    assert!(client.drain(Duration::from_millis(300)).await.is_empty());

    // subscribing to it later sends it alone, with its current content
    client.send(ENDPOINTS, "", &[REVIEWS], &[]).await;
    let r = client.next(Duration::from_secs(15)).await.unwrap();
    client.ack(&r).await;
    assert_eq!(names(&r), vec![REVIEWS]);
    assert!(format!("{:?}", r.resources[0]).len() > REVIEWS.len());
    assert!(client.drain(Duration::from_millis(300)).await.is_empty());

    // after unsubscribing, its changes are no longer sent; the other subscription still is
    client.send(ENDPOINTS, "", &[], &[REVIEWS]).await;
    write_config(dir.path(), "reviews.yaml", &slice("reviews", &["10.1.1.1"]));
    write_config(
        dir.path(),
        "ratings.yaml",
        &slice("ratings", &["10.1.2.1", "10.1.2.2"]),
    );
    let r = client.next(Duration::from_secs(15)).await.unwrap();
    client.ack(&r).await;
    cp.wait_pushed(id).await;
    let mut pushed = vec![r];
    pushed.extend(client.drain(Duration::from_millis(300)).await);
    let sent: Vec<(&str, Vec<&str>)> = pushed
        .iter()
        .map(|r| (r.type_url.as_str(), names(r)))
        .collect();
    assert_eq!(sent, vec![(ENDPOINTS, vec![RATINGS])]);

    cp.stop().await;
}
