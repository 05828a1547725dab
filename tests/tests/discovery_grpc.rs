//! The discovery server and the proxy's discovery client, in process over real gRPC on loopback: initial
//! sync, incremental updates, NACKs, a control-plane restart and max-connection-age rebalancing.

// Tests may unwrap: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use halyard_config::ProxyResources;
use halyard_config::discovery::Node;
use halyard_operator::debug::client as debug_client;
use halyard_operator::discovery::status::{SyncReport, SyncState};
use halyard_operator::run::{Args, run_until};
use halyard_proxy::xds::{ClientConfig, ClientStatus, ConfigSink, Protocol, XdsClient};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: default
spec:
  clusterIP: 10.0.0.11
  selector: {app: reviews}
  ports:
  - name: http
    port: 9080
---
apiVersion: v1
kind: Service
metadata:
  name: ratings
  namespace: default
spec:
  clusterIP: 10.0.0.12
  selector: {app: ratings}
  ports:
  - name: http
    port: 9080
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
"#;

fn extra_service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         clusterIP: {ip}\n  selector: {{app: {name}}}\n  ports:\n  - name: http\n    port: 9080\n"
    )
}

/// Replaces a file atomically (write + rename), as editors and the demo do.
fn write_config(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Polls `check` every 20 ms for at most 15 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Like [`eventually`] for checks that need the network.
async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

struct ControlPlane {
    grpc: SocketAddr,
    monitoring: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), halyard_operator::Error>>,
}

impl ControlPlane {
    async fn start(dir: &Path, grpc: SocketAddr, name: &str, max_age: &str) -> ControlPlane {
        let monitoring = free_addr();
        let args = Args::try_parse_from([
            "halyard-operator",
            "--config-dir",
            dir.to_str().unwrap(),
            "--config-poll",
            "20ms",
            "--grpc-addr",
            &grpc.to_string(),
            "--monitoring-addr",
            &monitoring.to_string(),
            "--debounce-after",
            "20ms",
            "--debounce-max",
            "1s",
            "--max-connection-age",
            max_age,
            "--control-plane-id",
            name,
        ])
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_until(args, async {
            let _ = stopped.await;
        }));
        let cp = ControlPlane {
            grpc,
            monitoring: format!("http://{monitoring}"),
            stop: Some(stop),
            task,
        };
        let base = cp.monitoring.clone();
        eventually_async("control plane ready", || {
            let base = base.clone();
            async move { debug_client::get(&base, "/ready").await.is_ok() }
        })
        .await;
        cp
    }

    fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    async fn syncz(&self) -> SyncReport {
        debug_client::sync_report(&self.monitoring).await.unwrap()
    }

    async fn get(&self, path: &str) -> String {
        let body = debug_client::get(&self.monitoring, path).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("control plane stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// A `ConfigSink` that records what it accepted and refuses configs with a cluster containing `poison`.
#[derive(Default)]
struct TestSink {
    current: Mutex<Option<ProxyResources>>,
    poison: Option<String>,
}

impl ConfigSink for TestSink {
    fn apply(&self, resources: &ProxyResources) -> Result<(), String> {
        if let Some(poison) = &self.poison
            && let Some(bad) = resources.clusters.iter().find(|c| c.name.contains(poison))
        {
            return Err(format!("cluster {}: refused by the test sink", bad.name));
        }
        *self.current.lock().unwrap() = Some(resources.clone());
        Ok(())
    }
}

impl TestSink {
    fn has_cluster_for(&self, host: &str) -> bool {
        let suffix = format!("|{host}.default.svc.cluster.local");
        self.current
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|r| r.clusters.iter().any(|c| c.name.ends_with(&suffix)))
    }

    fn snapshot(&self) -> Option<ProxyResources> {
        self.current.lock().unwrap().clone()
    }
}

struct Proxy {
    sink: Arc<TestSink>,
    status: watch::Receiver<ClientStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Proxy {
    fn start(addresses: Vec<String>, id: &str, protocol: Protocol, sink: TestSink) -> Proxy {
        let node = Node {
            id: id.to_string(),
            namespace: id.rsplit('.').next().unwrap().to_string(),
            ip_addresses: vec!["10.1.0.1".to_string()],
            proxy_version: "test".to_string(),
            ..Node::default()
        };
        let mut config = ClientConfig::new(addresses, node);
        config.protocol = protocol;
        config.initial_backoff = Duration::from_millis(20);
        config.max_backoff = Duration::from_millis(200);
        let sink = Arc::new(sink);
        let client = XdsClient::new(config, sink.clone()).unwrap();
        let status = client.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(client.run(async {
            let _ = stopped.await;
        }));
        Proxy {
            sink,
            status,
            stop: Some(stop),
            task,
        }
    }

    fn status(&self) -> ClientStatus {
        self.status.borrow().clone()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

fn all_synced(report: &SyncReport, proxy_id: &str) -> bool {
    report.proxies.iter().any(|p| {
        p.proxy_id == proxy_id
            && p.config_version == report.config_version
            && ["cds", "eds", "lds", "rds"]
                .iter()
                .all(|t| p.state(t) == SyncState::Synced)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_over_state_of_the_world_and_delta() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "bookinfo.yaml", SERVICES);
    let cp = ControlPlane::start(dir.path(), free_addr(), "cp-a", "30m").await;

    let sotw = Proxy::start(
        vec![cp.url()],
        "productpage-1.default",
        Protocol::StateOfTheWorld,
        TestSink::default(),
    );
    let delta = Proxy::start(
        vec![cp.url()],
        "details-1.default",
        Protocol::Delta,
        TestSink::default(),
    );
    for p in [&sotw, &delta] {
        // The status is updated just after the sink applies, so both are awaited together.
        eventually("both services' clusters applied and counted", || {
            let status = p.status();
            p.sink.has_cluster_for("reviews")
                && p.sink.has_cluster_for("ratings")
                && status.synced
                && status.control_plane.as_deref() == Some("cp-a")
        })
        .await;
    }

    let report = cp.syncz().await;
    assert_eq!(report.proxies.len(), 2, "{report:?}");
    eventually_async("every type SYNCED on syncz", || async {
        let report = cp.syncz().await;
        all_synced(&report, "productpage-1.default") && all_synced(&report, "details-1.default")
    })
    .await;
    let protocols: Vec<String> = cp
        .syncz()
        .await
        .proxies
        .iter()
        .map(|p| p.protocol.clone())
        .collect();
    assert!(protocols.contains(&"sotw".to_string()) && protocols.contains(&"delta".to_string()));

    let metrics = cp.get("/metrics").await;
    assert!(metrics.contains("\npilot_xds 2\n"), "{metrics}");
    assert!(
        metrics.contains("pilot_xds_pushes{type=\"cds\"}"),
        "{metrics}"
    );
    let dump = cp
        .get("/debug/config_dump?proxyID=productpage-1.default")
        .await;
    let dumped: ProxyResources = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dumped.clusters.len(),
        sotw.sink.snapshot().unwrap().clusters.len()
    );
    let configz = cp.get("/debug/configz").await;
    assert!(configz.contains("VirtualService"), "{configz}");
    let registryz = cp.get("/debug/registryz").await;
    assert!(registryz.contains("ratings"), "{registryz}");

    sotw.stop().await;
    delta.stop().await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_update_reaches_every_proxy() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "bookinfo.yaml", SERVICES);
    let cp = ControlPlane::start(dir.path(), free_addr(), "cp-a", "30m").await;
    let sotw = Proxy::start(
        vec![cp.url()],
        "productpage-1.default",
        Protocol::StateOfTheWorld,
        TestSink::default(),
    );
    let delta = Proxy::start(
        vec![cp.url()],
        "details-1.default",
        Protocol::Delta,
        TestSink::default(),
    );
    for p in [&sotw, &delta] {
        eventually("initial config", || p.sink.has_cluster_for("reviews")).await;
    }
    let applied_before: Vec<u64> = [&sotw, &delta].iter().map(|p| p.status().applied).collect();

    write_config(
        dir.path(),
        "details.yaml",
        &extra_service("details", "10.0.0.13"),
    );
    for p in [&sotw, &delta] {
        eventually("new service pushed", || p.sink.has_cluster_for("details")).await;
        // the rest of the config is still there
        assert!(p.sink.has_cluster_for("reviews") && p.sink.has_cluster_for("ratings"));
    }
    // The sink sees the resources just before the client counts the apply, so wait for the count.
    eventually("each proxy counts one more applied push", || {
        [&sotw, &delta]
            .iter()
            .zip(&applied_before)
            .all(|(p, before)| p.status().applied > *before)
    })
    .await;

    std::fs::remove_file(dir.path().join("details.yaml")).unwrap();
    for p in [&sotw, &delta] {
        eventually("removed service withdrawn", || {
            !p.sink.has_cluster_for("details")
        })
        .await;
        assert!(p.sink.has_cluster_for("reviews"));
    }
    eventually_async("SYNCED after the change", || async {
        let report = cp.syncz().await;
        all_synced(&report, "productpage-1.default") && all_synced(&report, "details-1.default")
    })
    .await;
    let metrics = cp.get("/metrics").await;
    assert!(
        metrics.contains("pilot_proxy_convergence_time_count"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("pilot_proxy_convergence_time_count 0"),
        "{metrics}"
    );

    sotw.stop().await;
    delta.stop().await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_keeps_the_previous_config() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "bookinfo.yaml", SERVICES);
    let cp = ControlPlane::start(dir.path(), free_addr(), "cp-a", "30m").await;
    let sink = TestSink {
        poison: Some("poison".to_string()),
        ..TestSink::default()
    };
    let proxy = Proxy::start(
        vec![cp.url()],
        "productpage-1.default",
        Protocol::StateOfTheWorld,
        sink,
    );
    eventually("initial config", || proxy.sink.has_cluster_for("reviews")).await;
    let good = proxy.sink.snapshot().unwrap();

    write_config(
        dir.path(),
        "poison.yaml",
        &extra_service("poison", "10.0.0.66"),
    );
    eventually("the bad push is refused", || proxy.status().rejected >= 1).await;
    let reason = proxy.status().last_rejection.unwrap();
    assert!(
        reason.contains("poison.default.svc.cluster.local"),
        "{reason}"
    );
    assert_eq!(proxy.sink.snapshot().unwrap().clusters, good.clusters);

    eventually_async("NACK visible on syncz", || async {
        let report = cp.syncz().await;
        report.proxies.iter().any(|p| {
            p.state("cds") == SyncState::Nacked
                && p.types["cds"]
                    .nack
                    .as_deref()
                    .is_some_and(|m| m.contains("refused by the test sink"))
        })
    })
    .await;
    let metrics = cp.get("/metrics").await;
    assert!(
        metrics.contains("pilot_total_xds_rejects{type=\"cds\"} 1"),
        "{metrics}"
    );

    // fixing the config clears the NACK
    std::fs::remove_file(dir.path().join("poison.yaml")).unwrap();
    write_config(
        dir.path(),
        "details.yaml",
        &extra_service("details", "10.0.0.13"),
    );
    eventually("the next good push applies", || {
        proxy.sink.has_cluster_for("details")
    })
    .await;
    eventually_async("SYNCED again", || async {
        all_synced(&cp.syncz().await, "productpage-1.default")
    })
    .await;

    proxy.stop().await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_keeps_config_then_resyncs() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "bookinfo.yaml", SERVICES);
    let addr = free_addr();
    let cp = ControlPlane::start(dir.path(), addr, "cp-a", "30m").await;
    let url = cp.url();
    let sotw = Proxy::start(
        vec![url.clone()],
        "productpage-1.default",
        Protocol::StateOfTheWorld,
        TestSink::default(),
    );
    let delta = Proxy::start(
        vec![url.clone()],
        "details-1.default",
        Protocol::Delta,
        TestSink::default(),
    );
    for p in [&sotw, &delta] {
        eventually("initial config", || {
            p.status().synced && p.sink.has_cluster_for("reviews")
        })
        .await;
    }
    let before: Vec<ProxyResources> = [&sotw, &delta]
        .iter()
        .map(|p| p.sink.snapshot().unwrap())
        .collect();

    cp.stop().await;
    for p in [&sotw, &delta] {
        eventually("client notices the control plane is gone", || {
            !p.status().synced
        })
        .await;
    }
    // while it is down (and the clients retry) nothing changes for the proxies
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during: Vec<ProxyResources> = [&sotw, &delta]
        .iter()
        .map(|p| p.sink.snapshot().unwrap())
        .collect();
    assert_eq!(before, during);

    write_config(
        dir.path(),
        "details.yaml",
        &extra_service("details", "10.0.0.13"),
    );
    let cp = ControlPlane::start(dir.path(), addr, "cp-b", "30m").await;
    for p in [&sotw, &delta] {
        eventually("resynced from the restarted control plane", || {
            let status = p.status();
            status.synced
                && p.sink.has_cluster_for("details")
                && status.control_plane.as_deref() == Some("cp-b")
        })
        .await;
        assert!(p.status().streams >= 2);
    }
    let report = cp.syncz().await;
    assert_eq!(report.proxies.len(), 2);

    sotw.stop().await;
    delta.stop().await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_moves_proxies_to_a_new_replica() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "bookinfo.yaml", SERVICES);
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let a = ControlPlane::start(dir.path(), addr_a, "cp-a", "1s").await;
    let addresses = vec![format!("http://{addr_a}"), format!("http://{addr_b}")];
    let proxies: Vec<Proxy> = (0..6)
        .map(|i| {
            Proxy::start(
                addresses.clone(),
                &format!("app-{i}.default"),
                if i % 2 == 0 {
                    Protocol::StateOfTheWorld
                } else {
                    Protocol::Delta
                },
                TestSink::default(),
            )
        })
        .collect();
    // With a 1 s maximum age, a proxy synced early may already be reconnecting when the last
    // one syncs (and the client hears of its sync just before the server publishes it): wait for
    // a moment when all six are synced and all six listed.
    eventually_async("every proxy synced to the only replica", || async {
        proxies.iter().all(|p| p.status().synced) && a.syncz().await.proxies.len() == 6
    })
    .await;

    let b = ControlPlane::start(dir.path(), addr_b, "cp-b", "1s").await;
    eventually_async("both replicas hold streams", || async {
        let (ra, rb) = (a.syncz().await, b.syncz().await);
        !ra.proxies.is_empty() && !rb.proxies.is_empty()
    })
    .await;
    for p in &proxies {
        // config survived every reconnect
        assert!(p.sink.has_cluster_for("reviews"));
    }
    assert!(proxies.iter().any(|p| p.status().streams >= 2));

    for p in proxies {
        p.stop().await;
    }
    a.stop().await;
    b.stop().await;
}
