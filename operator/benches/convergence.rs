//! Convergence benchmark: one control plane with 500 services, 1,000 lightweight protocol clients, one
//! VirtualService change; reports p50/p99/max time until every affected proxy ACKed, and the process RSS,
//! each as a ratio against a baseline measured in the same run (one proxy alone) and against the issue's
//! published figures. Bounded: the whole run is cut at 240 s.
//!
//! `cargo bench -p halyard-operator --bench convergence` (env `HALYARD_BENCH_PROXIES` / `HALYARD_BENCH_SERVICES`
//! change the sizes).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use halyard_config::discovery::aggregated_discovery_client::AggregatedDiscoveryClient;
use halyard_config::discovery::{DiscoveryRequest, Node};
use halyard_config::type_urls::PUSH_ORDER;
use halyard_operator::discovery::{DiscoveryServer, DiscoverySettings};
use halyard_operator::metrics::Metrics;
use halyard_operator::registry::local::LocalRegistry;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Istio's published figures the issue compares against.
const ISTIO_CONVERGENCE_P90_MS: (f64, f64) = (1500.0, 4500.0);
const TARGET_P99_MS: f64 = 1000.0;
const TARGET_RSS_MIB: f64 = 200.0;
const ISTIOD_RSS_MIB: f64 = 1536.0;
/// Connection attempts per simulated proxy (100 ms apart).
const CONNECT_ATTEMPTS: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process, from /proc/self/status.
fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn services_yaml(services: usize) -> String {
    let mut out = String::new();
    for i in 0..services {
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: default\nspec:\n  \
             clusterIP: 10.96.{}.{}\n  selector: {{app: svc-{i}}}\n  ports:\n  - name: http\n    port: 9080\n---\n",
            i / 250,
            i % 250 + 1
        );
    }
    out
}

/// The one object the benchmark changes: a weighted route for `svc-0`.
fn virtual_service(weight: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc-0\n  namespace: default\n\
         spec:\n  hosts: [svc-0]\n  http:\n  - route:\n    - destination: {{host: svc-0}}\n      weight: {weight}\n    \
         - destination: {{host: svc-1}}\n      weight: {}\n",
        100 - weight
    )
}

fn write_atomically(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write benchmark config");
    std::fs::rename(&tmp, dir.join(file)).expect("rename benchmark config");
}

/// What one simulated proxy saw.
#[derive(Default)]
struct Probe {
    acks: AtomicU64,
    /// Wall-clock nanoseconds (shared with the parent process) of the last ACK sent.
    last_ack: AtomicU64,
    synced: AtomicBool,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A protocol client that subscribes to every type and ACKs every response at once, keeping nothing.
async fn run_probe(url: String, node: Node, probe: Arc<Probe>) {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url) else {
        return;
    };
    // proxies take config as fast as they can decode it (large windows, as Envoy and halyard's client use)
    let endpoint = endpoint
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024);
    // a loaded machine may refuse or reset a few of 1,000 simultaneous connects: retry, bounded
    let mut channel = None;
    for _ in 0..CONNECT_ATTEMPTS {
        match endpoint.connect().await {
            Ok(c) => {
                channel = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let Some(channel) = channel else {
        eprintln!("benchmark: {} could not connect", node.id);
        return;
    };
    let mut client = AggregatedDiscoveryClient::new(channel).max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel(16);
    for t in PUSH_ORDER {
        let _ = tx.try_send(DiscoveryRequest {
            node: Some(node.clone()),
            type_url: t.to_string(),
            ..DiscoveryRequest::default()
        });
    }
    let response = match client.stream(ReceiverStream::new(rx)).await {
        Ok(response) => response,
        Err(status) => {
            eprintln!("benchmark: {} could not open its stream: {status}", node.id);
            return;
        }
    };
    let mut inbound = response.into_inner();
    let mut seen = BTreeSet::new();
    while let Ok(Some(r)) = inbound.message().await {
        let ack = DiscoveryRequest {
            version_info: r.version_info,
            type_url: r.type_url.clone(),
            response_nonce: r.nonce,
            ..DiscoveryRequest::default()
        };
        if tx.send(ack).await.is_err() {
            return;
        }
        probe.last_ack.store(unix_nanos(), Ordering::Relaxed);
        probe.acks.fetch_add(1, Ordering::Relaxed);
        seen.insert(r.type_url);
        if seen.len() == PUSH_ORDER.len() {
            probe.synced.store(true, Ordering::Relaxed);
        }
    }
}

fn node(i: usize, namespaces: usize) -> Node {
    let ns = format!("ns-{}", i % namespaces);
    Node {
        id: format!("app-{i}.{ns}"),
        namespace: ns,
        labels: [("app".to_string(), format!("app-{}", i % 50))].into(),
        ip_addresses: vec![format!("10.200.{}.{}", i / 250, i % 250 + 1)],
        proxy_version: "bench".to_string(),
        ..Node::default()
    }
}

async fn wait_until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() > deadline {
            panic!("benchmark: timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After the parent announced a change made at wall-clock `t0`: for every proxy that received anything,
/// the time from `t0` to its last ACK, once no ACK was sent for 1.5 s.
async fn collect_change(t0: u64, probes: &[Arc<Probe>], before: &[u64]) -> Vec<f64> {
    let quiet = Duration::from_millis(1500);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_total = 0u64;
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let total: u64 = probes.iter().map(|p| p.acks.load(Ordering::Relaxed)).sum();
        if total != last_total {
            last_total = total;
            last_change = Instant::now();
        }
        let changed = probes
            .iter()
            .zip(before)
            .any(|(p, b)| p.acks.load(Ordering::Relaxed) > *b);
        if (changed && last_change.elapsed() > quiet) || Instant::now() > deadline {
            break;
        }
    }
    probes
        .iter()
        .zip(before)
        .filter(|(p, b)| p.acks.load(Ordering::Relaxed) > **b)
        .map(|(p, _)| p.last_ack.load(Ordering::Relaxed).saturating_sub(t0) as f64 / 1e6)
        .collect()
}

/// The client process: simulated proxies driven by line commands on stdin, answering on stdout, so the
/// parent's RSS is the control plane's alone.
async fn clients(url: String, proxies: usize, namespaces: usize) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut probes: Vec<Arc<Probe>> = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("connect") => {
                let upto: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(proxies);
                for i in probes.len()..upto.min(proxies) {
                    let probe = Arc::new(Probe::default());
                    tokio::spawn(run_probe(url.clone(), node(i, namespaces), probe.clone()));
                    probes.push(probe);
                    if i % 100 == 99 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                wait_until("initial sync", Duration::from_secs(120), || {
                    probes.iter().all(|p| p.synced.load(Ordering::Relaxed))
                })
                .await;
                println!("synced {}", probes.len());
            }
            Some("before") => {
                let before: Vec<String> = probes
                    .iter()
                    .map(|p| p.acks.load(Ordering::Relaxed).to_string())
                    .collect();
                println!("before {}", before.join(" "));
            }
            Some("change") => {
                let t0: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let before: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
                let latencies = collect_change(t0, &probes, &before).await;
                let text: Vec<String> = latencies.iter().map(|l| format!("{l:.3}")).collect();
                println!("latencies {}", text.join(" "));
            }
            _ => return,
        }
    }
}

/// The parent's handle on the client process.
struct Clients {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Clients {
    fn spawn(url: &str, proxies: usize, namespaces: usize) -> Clients {
        let exe = std::env::current_exe().expect("benchmark executable");
        let mut child = tokio::process::Command::new(exe)
            .env("HALYARD_BENCH_ROLE", "clients")
            .env("HALYARD_BENCH_URL", url)
            .env("HALYARD_BENCH_PROXIES", proxies.to_string())
            .env("HALYARD_BENCH_NAMESPACES", namespaces.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the client process");
        let stdin = child.stdin.take().expect("child stdin");
        let stdout = BufReader::new(child.stdout.take().expect("child stdout")).lines();
        Clients {
            child,
            stdin,
            stdout,
        }
    }

    async fn ask(&mut self, command: &str, answer: &str) -> Vec<String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write to the client process");
        loop {
            let line = self
                .stdout
                .next_line()
                .await
                .expect("read from the client process")
                .expect("client process exited");
            let mut words = line.split_whitespace().map(String::from);
            if words.next().as_deref() == Some(answer) {
                return words.collect();
            }
        }
    }

    /// Announces a change, makes it, and returns the per-proxy convergence times (ms).
    async fn measure(&mut self, dir: &Path, weight: u32) -> Vec<f64> {
        let before = self.ask("before", "before").await.join(" ");
        let t0 = unix_nanos();
        write_atomically(dir, "virtual-service.yaml", &virtual_service(weight));
        let mut latencies: Vec<f64> = self
            .ask(&format!("change {t0} {before}"), "latencies")
            .await
            .iter()
            .filter_map(|w| w.parse().ok())
            .collect();
        latencies.sort_by(f64::total_cmp);
        latencies
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn bench() {
    let proxies = env_usize("HALYARD_BENCH_PROXIES", 1000);
    let services = env_usize("HALYARD_BENCH_SERVICES", 500);
    let namespaces = 10;
    let rss_start = rss_mib("VmRSS:");

    let dir = tempfile::tempdir().expect("temp dir");
    write_atomically(dir.path(), "services.yaml", &services_yaml(services));
    write_atomically(dir.path(), "virtual-service.yaml", &virtual_service(90));
    let mut snapshots =
        LocalRegistry::new(dir.path().to_path_buf(), Duration::from_millis(20)).spawn();
    let _ = snapshots.wait_for(Option::is_some).await;
    let server = DiscoveryServer::start(
        DiscoverySettings::default(),
        snapshots,
        Arc::new(Metrics::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    let rss_loaded = rss_mib("VmRSS:");

    let mut clients = Clients::spawn(&url, proxies, namespaces);
    // baseline in this run: the same kind of change with a single proxy connected
    clients.ask("connect 1", "synced").await;
    let baseline = clients.measure(dir.path(), 80).await;
    let baseline_ms = baseline.first().copied().unwrap_or(f64::NAN);

    let connect_start = Instant::now();
    clients.ask(&format!("connect {proxies}"), "synced").await;
    let initial_sync = connect_start.elapsed();
    let rss_connected = rss_mib("VmRSS:");

    let latencies = clients.measure(dir.path(), 70).await;
    let rss_after = rss_mib("VmRSS:");
    let rss_peak = rss_mib("VmHWM:");
    let _ = clients.child.start_kill();
    let (p50, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
    );

    println!(
        "convergence: {services} services, {proxies} proxies (state of the world), one VirtualService change"
    );
    println!(
        "  initial sync of all proxies: {:.0} ms",
        initial_sync.as_secs_f64() * 1e3
    );
    println!("  baseline (1 proxy, same change, same run): {baseline_ms:.1} ms");
    println!(
        "  {} of {proxies} proxies affected: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        latencies.len()
    );
    println!(
        "  ratio p99 / baseline:                         {:.2}",
        p99 / baseline_ms
    );
    println!(
        "  ratio p99 / target (1 s):                     {:.2}",
        p99 / TARGET_P99_MS
    );
    println!(
        "  ratio p99 / Istio pilot_proxy_convergence_time p90 (1.5 s .. 4.5 s): {:.3} .. {:.3}",
        p99 / ISTIO_CONVERGENCE_P90_MS.0,
        p99 / ISTIO_CONVERGENCE_P90_MS.1
    );
    println!(
        "control-plane rss (MiB; clients run in a child process): start {rss_start:.1}, loaded {rss_loaded:.1}, \
         {proxies} connected {rss_connected:.1}, after the push {rss_after:.1}, peak {rss_peak:.1}"
    );
    println!(
        "  ratio rss after push / before proxies:        {:.2}",
        rss_after / rss_loaded
    );
    println!(
        "  ratio rss after push / target (200 MiB):      {:.2}",
        rss_after / TARGET_RSS_MIB
    );
    println!(
        "  ratio rss after push / istiod (1.5 GB for 1000 services, 2000 sidecars): {:.3}",
        rss_after / ISTIOD_RSS_MIB
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::var("HALYARD_BENCH_ROLE").as_deref() == Ok("clients") {
        let url = std::env::var("HALYARD_BENCH_URL").unwrap_or_default();
        let proxies = env_usize("HALYARD_BENCH_PROXIES", 1000);
        let namespaces = env_usize("HALYARD_BENCH_NAMESPACES", 10);
        runtime.block_on(clients(url, proxies, namespaces));
        return;
    }
    runtime.block_on(async {
        if tokio::time::timeout(Duration::from_secs(240), bench())
            .await
            .is_err()
        {
            eprintln!("benchmark: cut at 240 s");
            std::process::exit(1);
        }
    });
}
