//! Data-plane benchmark: HTTP/1.1 keep-alive, 1 KiB responses, loopback only.
//!
//! Paths: direct (client → backend), one and two halyard hops, the relay floor (a one-thread
//! byte relay: the least a hop costs on this machine), one and two nginx hops (Debian's
//! nginx, generated config, one worker, upstream keep-alive) and one and two HAProxy hops
//! (Debian's haproxy, one thread, `http-reuse always`). Every proxy runs as its own process
//! with one worker thread. Prints requests/s, p50/p99 and CPU-seconds per 1,000 requests at fixed
//! concurrency, p50/p99 and CPU-seconds per 1,000 requests at a fixed 1,000 req/s (one request a
//! millisecond: four connections taking turns), and halyard's RSS idle and with 1,000 services /
//! 10,000 endpoints — all against the direct baseline, the relay floor and the peers measured in
//! the same run. The paths are measured in interleaved rounds (alternating order);
//! the table shows medians over rounds, ratios are taken within each round.
//!
//! `cargo bench -p halyard-proxy --bench dataplane` (env: `BENCH_SECS`, default 3; `BENCH_CONNS`,
//! default 16; `BENCH_ROUNDS`, default 3; `BENCH_HALYARD_BIN`, another halyard-proxy binary to
//! measure, e.g. a saved baseline; `BENCH_PATHS`, only the paths whose names contain one of these
//! comma-separated words, e.g. `halyard`). Bounded: every phase has a fixed duration; the whole
//! run takes about three minutes.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const BODY: usize = 1024;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The backend: a minimal hyper HTTP/1.1 server on its own thread answering 1 KiB.
fn start_backend() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::from_std(l).unwrap();
            let body = Bytes::from(vec![b'x'; BODY]);
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    addr
}

/// The floor of a hop on this machine: a one-thread byte relay (the same runtime as halyard's
/// one worker) that parses nothing and forwards each connection to its own upstream connection.
/// Every proxy pays at least its two wake-ups and four socket calls per request; what a proxy
/// adds above this row is its own work.
fn run_relay(listen: &str, upstream: &str) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (listen, upstream) = (listen.to_string(), upstream.to_string());
    rt.block_on(async move {
        let l = TcpListener::bind(&listen).await.unwrap();
        loop {
            let Ok((mut down, _)) = l.accept().await else {
                continue;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut up) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
    std::process::exit(0)
}

/// The relay runs as its own process (this executable again), as the proxies do.
fn start_relay(listen: SocketAddr, upstream: SocketAddr) -> Proc {
    let child = Command::new(std::env::current_exe().unwrap())
        .env(RELAY_ENV, format!("{listen},{upstream}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(listen);
    Proc(child, false)
}

const RELAY_ENV: &str = "HALYARD_BENCH_RELAY";

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    errors: u64,
}

/// Closed loop (`rate` = None: each connection sends as fast as it can) or paced at `rate`
/// requests/s spread over the connections. Runs for `secs` after a short warm-up.
fn load(target: SocketAddr, conns: usize, secs: f64, rate: Option<f64>) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let warm = Instant::now() + Duration::from_millis(300);
        let stop = warm + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for c in 0..conns {
            tasks.push(tokio::spawn(async move {
                let mut lat: Vec<u32> = Vec::with_capacity(200_000);
                let mut errors = 0u64;
                let Ok(s) = TcpStream::connect(target).await else {
                    return (lat, 1);
                };
                let _ = s.set_nodelay(true);
                let Ok((mut tx, conn)) =
                    hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s)).await
                else {
                    return (lat, 1);
                };
                tokio::spawn(conn);
                // Paced: the connections take turns (connection c starts c/conns of a period
                // late), so requests arrive evenly rather than in bursts of `conns`.
                let mut tick = rate.map(|r| {
                    let period = Duration::from_secs_f64(conns as f64 / r);
                    let first =
                        tokio::time::Instant::now() + period.mul_f64(c as f64 / conns as f64);
                    let mut i = tokio::time::interval_at(first, period);
                    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    i
                });
                loop {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    let now = Instant::now();
                    if now >= stop {
                        break;
                    }
                    if tx.ready().await.is_err() {
                        errors += 1;
                        break;
                    }
                    let req = hyper::Request::get("/")
                        .header("host", "bench")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    match tx.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status() == 200;
                            let n = resp
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().len())
                                .unwrap_or(0);
                            if !ok || n != BODY {
                                errors += 1;
                            } else if now >= warm {
                                lat.push(now.elapsed().as_micros() as u32);
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        all.sort_unstable();
        let pct = |p: f64| {
            if all.is_empty() {
                0.0
            } else {
                f64::from(all[((all.len() as f64 * p) as usize).min(all.len() - 1)])
            }
        };
        Run {
            rps: all.len() as f64 / secs,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            requests: all.len() as u64,
            errors,
        }
    })
}

/// A process and its children (nginx's master forks the worker).
fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| {
                    // the command name may contain spaces: fields start after the last ')'
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

/// CPU time (user+system) of a process and its children, from every thread's schedstat (ns).
fn cpu_ns(pid: u32) -> u64 {
    with_children(pid).into_iter().map(cpu_ns_one).sum()
}

fn cpu_ns_one(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn wait_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} not accepting within 10s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed on drop; `.1`: stop it with SIGTERM first (nginx's master then stops
/// its worker, which SIGKILL would orphan).
struct Proc(Child, bool);
impl Drop for Proc {
    fn drop(&mut self) {
        if !self.1 {
            let _ = self.0.kill();
            let _ = self.0.wait();
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CLUSTER: &str = "outbound|80||backend.bench.svc.cluster.local";

fn one_service_config(listen: SocketAddr, upstream: SocketAddr) -> ProxyResources {
    ProxyResources {
        version: "bench".into(),
        listeners: vec![r::Listener {
            name: "bench".into(),
            address: listen.ip().to_string(),
            port: u32::from(listen.port()),
            filter_chains: vec![r::FilterChain {
                name: "http".into(),
                handler: Some(r::filter_chain::Handler::Http(r::HttpConnectionManager {
                    route_specifier: Some(
                        r::http_connection_manager::RouteSpecifier::RouteConfigName("80".into()),
                    ),
                    codec: r::http_connection_manager::Codec::Http1 as i32,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        route_configs: vec![r::RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![r::VirtualHost {
                name: "bench".into(),
                domains: vec!["*".into()],
                routes: vec![r::Route {
                    name: "default".into(),
                    action: Some(r::route::Action::Route(r::RouteAction {
                        clusters: vec![r::WeightedCluster {
                            name: CLUSTER.into(),
                            weight: 100,
                            ..Default::default()
                        }],
                        // What the control plane puts on every route (nginx and HAProxy also
                        // retry failed connections by default).
                        retry: Some(halyard_config::translate::default_retry()),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
        clusters: vec![r::Cluster {
            name: CLUSTER.into(),
            service_host: "backend.bench.svc.cluster.local".into(),
            upstream_protocol: r::cluster::UpstreamProtocol::Http1 as i32,
            ..Default::default()
        }],
        endpoints: vec![r::ClusterEndpoints {
            cluster_name: CLUSTER.into(),
            endpoints: vec![r::Endpoint {
                address: upstream.ip().to_string(),
                port: u32::from(upstream.port()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// 1,000 services with 10 endpoints each, one virtual host per service.
fn large_config(listen: SocketAddr, upstream: SocketAddr) -> ProxyResources {
    let mut res = one_service_config(listen, upstream);
    for i in 0..999u32 {
        let host = format!("svc-{i}.ns-{}.svc.cluster.local", i % 50);
        let name = format!("outbound|80||{host}");
        res.route_configs[0].virtual_hosts.insert(
            0,
            r::VirtualHost {
                name: format!("{host}:80"),
                domains: vec![
                    host.clone(),
                    format!("{host}:80"),
                    format!("svc-{i}"),
                    format!("svc-{i}.ns-{}", i % 50),
                ],
                routes: vec![r::Route {
                    name: "default".into(),
                    action: Some(r::route::Action::Route(r::RouteAction {
                        clusters: vec![r::WeightedCluster {
                            name: name.clone(),
                            weight: 100,
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        res.clusters.push(r::Cluster {
            name: name.clone(),
            service_host: host,
            ..Default::default()
        });
        res.endpoints.push(r::ClusterEndpoints {
            cluster_name: name,
            endpoints: (0..10u32)
                .map(|e| r::Endpoint {
                    address: format!("10.{}.{}.{}", i / 250, i % 250, e + 1),
                    port: 9080,
                    labels: [
                        ("app".to_string(), format!("svc-{i}")),
                        ("version".to_string(), "v1".to_string()),
                    ]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
    res
}

fn start_halyard(dir: &Path, name: &str, res: &ProxyResources) -> Proc {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(res).unwrap()).unwrap();
    let status: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // `BENCH_HALYARD_BIN`: measure another build (a saved baseline) with the same harness.
    let bin = std::env::var_os("BENCH_HALYARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_halyard-proxy")));
    let child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        // Local mode (no capture): no agent port on 15020, so several proxies can run at once.
        .args([
            "--concurrency",
            "1",
            "--log-level",
            "warn",
            "--interception",
            "none",
        ])
        .arg("--admin-address")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--status-address")
        .arg(status.to_string())
        .arg("--prometheus-address")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .spawn()
        .expect("halyard-proxy binary");
    wait_port(status);
    for l in &res.listeners {
        wait_port(format!("{}:{}", l.address, l.port).parse().unwrap());
    }
    Proc(child, false)
}

/// A Debian package's binary (nginx, haproxy), if installed.
fn system_binary(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn start_nginx(
    bin: &Path,
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Proc {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
events {{ worker_connections 4096; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  upstream backend {{ server {upstream}; keepalive 128; keepalive_requests 1000000; }}\n\
  server {{\n    listen {listen};\n    keepalive_requests 1000000;\n    location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        d = d.display()
    );
    let path = d.join("nginx.conf");
    let dir_arg = d.display().to_string();
    // nginx's master forks the worker: its children count too.
    start_peer(
        bin,
        &path,
        conf,
        &["-c", "{conf}", "-p", &dir_arg],
        listen,
        true,
    )
}

/// Write a peer proxy's config, start it quietly with `args` (`{conf}` is the config's path)
/// and wait for its port.
fn start_peer(
    bin: &Path,
    conf_path: &Path,
    conf: String,
    args: &[&str],
    listen: SocketAddr,
    with_children: bool,
) -> Proc {
    std::fs::write(conf_path, conf).unwrap();
    let conf_arg = conf_path.display().to_string();
    let child = Command::new(bin)
        .args(
            args.iter()
                .map(|a| if *a == "{conf}" { conf_arg.as_str() } else { a }),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    wait_port(listen);
    Proc(child, with_children)
}

/// HAProxy as a keep-alive HTTP reverse proxy: one thread, idle upstream connections reused
/// by any request (`http-reuse always`), no logging.
fn start_haproxy(
    bin: &Path,
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Proc {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 4096\n\
defaults\n  mode http\n  option http-keep-alive\n  http-reuse always\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
frontend f\n  bind {listen}\n  default_backend b\n\
backend b\n  server s1 {upstream}\n"
    );
    // -db: foreground, no daemon; -q: quiet.
    start_peer(
        bin,
        &d.join("haproxy.cfg"),
        conf,
        &["-db", "-q", "-f", "{conf}"],
        listen,
        false,
    )
}

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[derive(Clone, Copy)]
struct Row {
    max: Run,
    paced: Run,
    /// CPU ns of the proxies on this path during the closed-loop run.
    max_cpu_ns: u64,
    /// CPU ns of the proxies on this path during the paced run.
    cpu_ns: u64,
    hops: u32,
}

impl Row {
    fn cpu_per_1k(cpu_ns: u64, requests: u64, hops: u32) -> Option<f64> {
        (hops > 0 && requests > 0)
            .then(|| cpu_ns as f64 / 1e9 / requests as f64 * 1000.0 / f64::from(hops))
    }
    /// CPU-seconds per 1,000 requests per hop at 1,000 req/s.
    fn paced_cpu(&self) -> Option<f64> {
        Self::cpu_per_1k(self.cpu_ns, self.paced.requests, self.hops)
    }
    /// CPU-seconds per 1,000 requests per hop in the closed-loop run.
    fn max_cpu(&self) -> Option<f64> {
        Self::cpu_per_1k(self.max_cpu_ns, self.max.requests, self.hops)
    }
}

fn measure(target: SocketAddr, pids: &[u32], conns: usize, secs: f64) -> Row {
    let cpu = || pids.iter().map(|p| cpu_ns(*p)).sum::<u64>();
    let c0 = cpu();
    let max = load(target, conns, secs, None);
    let c1 = cpu();
    let paced = load(target, 4, secs, Some(1000.0));
    let c2 = cpu();
    Row {
        max,
        paced,
        max_cpu_ns: c1 - c0,
        cpu_ns: c2 - c1,
        hops: pids.len() as u32,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One path to measure: its entry address and the proxies on it.
struct BenchPath {
    name: &'static str,
    target: SocketAddr,
    pids: Vec<u32>,
}

fn main() {
    if let Some((listen, upstream)) = std::env::var(RELAY_ENV)
        .ok()
        .as_deref()
        .and_then(|v| v.split_once(','))
    {
        run_relay(listen, upstream);
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = if quick {
        0.3
    } else {
        env_u64("BENCH_SECS", 3) as f64
    };
    let rounds = if quick {
        1
    } else {
        env_u64("BENCH_ROUNDS", 3).clamp(1, 20) as usize
    };
    let conns = env_u64("BENCH_CONNS", 16) as usize;
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend();
    wait_port(backend);

    let idle_rss = {
        let p = start_halyard(dir.path(), "idle", &one_service_config(addr(), backend));
        std::thread::sleep(Duration::from_millis(300));
        rss_kib(p.0.id())
    };

    // Every proxy runs for the whole benchmark (idle ones cost nothing); the paths are measured
    // in interleaved rounds so that the machine's load drifts hit all of them alike.
    let (h1, h2a, h2b) = (addr(), addr(), addr());
    let p1 = start_halyard(dir.path(), "h1", &one_service_config(h1, backend));
    let p2b = start_halyard(dir.path(), "h2b", &one_service_config(h2b, backend));
    let p2a = start_halyard(dir.path(), "h2a", &one_service_config(h2a, h2b));
    let mut paths = vec![
        BenchPath {
            name: "direct",
            target: backend,
            pids: vec![],
        },
        BenchPath {
            name: "halyard 1 hop",
            target: h1,
            pids: vec![p1.0.id()],
        },
        BenchPath {
            name: "halyard 2 hops",
            target: h2a,
            pids: vec![p2a.0.id(), p2b.0.id()],
        },
    ];
    let relay = addr();
    let relay_proc = start_relay(relay, backend);
    paths.push(BenchPath {
        name: "relay floor",
        target: relay,
        pids: vec![relay_proc.0.id()],
    });
    // The peers: one and two hops each, started the same way.
    type Start = fn(&Path, &Path, &str, SocketAddr, SocketAddr) -> Proc;
    let peers: [(&'static str, &'static str, &'static str, Start); 2] = [
        ("nginx", "nginx 1 hop", "nginx 2 hops", start_nginx),
        ("haproxy", "haproxy 1 hop", "haproxy 2 hops", start_haproxy),
    ];
    let mut peer_procs = Vec::new();
    for (binary, one, two, start) in peers {
        let Some(bin) = system_binary(binary) else {
            println!(
                "{binary} not found (apt-get install nginx-light haproxy): {binary} rows skipped"
            );
            continue;
        };
        let (p1, p2a, p2b) = (addr(), addr(), addr());
        let p = start(&bin, dir.path(), &format!("{binary}-1"), p1, backend);
        let pb = start(&bin, dir.path(), &format!("{binary}-2b"), p2b, backend);
        let pa = start(&bin, dir.path(), &format!("{binary}-2a"), p2a, p2b);
        paths.push(BenchPath {
            name: one,
            target: p1,
            pids: vec![p.0.id()],
        });
        paths.push(BenchPath {
            name: two,
            target: p2a,
            pids: vec![pa.0.id(), pb.0.id()],
        });
        peer_procs.extend([p, pb, pa]);
    }

    // `BENCH_PATHS=halyard,direct`: measure only the paths whose names contain one of these
    // words (profiling one proxy); the direct baseline is always kept.
    if let Ok(only) = std::env::var("BENCH_PATHS") {
        let words: Vec<&str> = only.split(',').map(str::trim).collect();
        paths.retain(|p| p.name == "direct" || words.iter().any(|w| p.name.contains(w)));
    }
    let mut runs: Vec<Vec<Row>> = paths.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Alternate the order so neither proxy always runs first.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..paths.len()).collect()
        } else {
            (0..paths.len()).rev().collect()
        };
        for i in order {
            let p = &paths[i];
            runs[i].push(measure(p.target, &p.pids, conns, secs));
        }
        print_round(round, &paths, &runs);
    }
    let p1_rss_loaded = rss_kib(p1.0.id());
    drop((p1, p2a, p2b));
    drop(peer_procs);
    drop(relay_proc);

    let large_rss = {
        let l = addr();
        let p = start_halyard(dir.path(), "large", &large_config(l, backend));
        let _ = load(l, 2, 0.2, None);
        std::thread::sleep(Duration::from_millis(300));
        rss_kib(p.0.id())
    };

    print_report(
        &paths,
        &runs,
        conns,
        secs,
        idle_rss,
        p1_rss_loaded,
        large_rss,
    );
}

fn find<'a>(paths: &[BenchPath], runs: &'a [Vec<Row>], name: &str) -> Option<&'a Vec<Row>> {
    paths.iter().position(|p| p.name == name).map(|i| &runs[i])
}

/// The same-run ratios of one round (halyard against each peer, one hop).
fn print_round(round: usize, paths: &[BenchPath], runs: &[Vec<Row>]) {
    let Some(h) = find(paths, runs, "halyard 1 hop").and_then(|r| r.get(round)) else {
        return;
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    };
    for peer in ["nginx", "haproxy"] {
        let Some(n) = find(paths, runs, &format!("{peer} 1 hop")).and_then(|r| r.get(round)) else {
            continue;
        };
        println!(
            "round {}: halyard/{peer} 1 hop: req/s {:.0}/{:.0} = {:.2}x, p99 {:.2}x, CPU per request closed-loop {}x, paced {}x",
            round + 1,
            h.max.rps,
            n.max.rps,
            h.max.rps / n.max.rps.max(1.0),
            h.max.p99_us / n.max.p99_us.max(1.0),
            ratio(h.max_cpu(), n.max_cpu()),
            ratio(h.paced_cpu(), n.paced_cpu()),
        );
    }
}

fn print_report(
    paths: &[BenchPath],
    runs: &[Vec<Row>],
    conns: usize,
    secs: f64,
    idle: u64,
    loaded: u64,
    large: u64,
) {
    let rounds = runs.first().map_or(0, Vec::len);
    let med = |rows: &[Row], f: &dyn Fn(&Row) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = rows.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    };
    let direct = &runs[0];
    let nginx1 = find(paths, runs, "nginx 1 hop");
    // Ratios are taken within each round, then the median over rounds.
    let per_round_ratio = |rows: &[Row], base: &[Row], f: &dyn Fn(&Row) -> f64| -> f64 {
        median(
            rows.iter()
                .zip(base)
                .map(|(r, b)| f(r) / f(b).max(1e-9))
                .collect(),
        )
    };
    println!();
    println!(
        "HTTP/1.1 keep-alive, {BODY} B responses, loopback; {conns} connections closed-loop for {secs}s; paced: 4 connections at 1000 req/s; one worker per proxy; median of {rounds} interleaved rounds"
    );
    println!(
        "{:<16} {:>10} {:>8} {:>8} {:>9} {:>9} {:>11} | {:>9} {:>9} {:>10} {:>12} {:>7}",
        "path",
        "req/s",
        "xdirect",
        "xnginx1",
        "p50 us",
        "p99 us",
        "CPU-s/1k/h",
        "p50@1k",
        "p99@1k",
        "+p50/hop",
        "CPU-s/1k/hop",
        "errors"
    );
    for (p, rows) in paths.iter().zip(runs) {
        let hops = rows.first().map_or(0, |r| r.hops);
        let hop_p50 = if hops > 0 {
            let added: Vec<f64> = rows
                .iter()
                .zip(direct)
                .map(|(r, d)| (r.paced.p50_us - d.paced.p50_us) / f64::from(hops))
                .collect();
            format!("{:.0}", median(added))
        } else {
            "-".into()
        };
        let fmt_cpu = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
        println!(
            "{:<16} {:>10.0} {:>8.2} {:>8} {:>9.0} {:>9.0} {:>11} | {:>9.0} {:>9.0} {:>10} {:>12} {:>7}",
            p.name,
            med(rows, &|r| Some(r.max.rps)).unwrap_or(0.0),
            per_round_ratio(rows, direct, &|r| r.max.rps),
            nginx1.map_or("-".into(), |n| format!(
                "{:.2}",
                per_round_ratio(rows, n, &|r| r.max.rps)
            )),
            med(rows, &|r| Some(r.max.p50_us)).unwrap_or(0.0),
            med(rows, &|r| Some(r.max.p99_us)).unwrap_or(0.0),
            fmt_cpu(med(rows, &Row::max_cpu)),
            med(rows, &|r| Some(r.paced.p50_us)).unwrap_or(0.0),
            med(rows, &|r| Some(r.paced.p99_us)).unwrap_or(0.0),
            hop_p50,
            fmt_cpu(med(rows, &Row::paced_cpu)),
            rows.iter()
                .map(|r| r.max.errors + r.paced.errors)
                .sum::<u64>()
        );
    }
    println!();
    println!(
        "halyard RSS: idle {:.1} MiB; after the load runs {:.1} MiB; 1,000 services / 10,000 endpoints {:.1} MiB",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        large as f64 / 1024.0
    );
    // What any proxy hop costs on this machine, and what halyard adds above that.
    if let (Some(h), Some(f)) = (
        find(paths, runs, "halyard 1 hop"),
        find(paths, runs, "relay floor"),
    ) {
        let added = |rows: &[Row]| {
            median(
                rows.iter()
                    .zip(direct)
                    .map(|(r, d)| r.paced.p50_us - d.paced.p50_us)
                    .collect(),
            )
        };
        let cpu = |rows: &[Row], f: &dyn Fn(&Row) -> Option<f64>| {
            med(rows, f).map_or("-".into(), |v| format!("{v:.4}"))
        };
        println!(
            "relay floor (bytes forwarded, nothing parsed): adds {:.0} us p50 at 1k req/s, {} CPU-s/1k at 1k req/s, {} closed-loop; halyard 1 hop: {:.0} us, {}, {}",
            added(f),
            cpu(f, &Row::paced_cpu),
            cpu(f, &Row::max_cpu),
            added(h),
            cpu(h, &Row::paced_cpu),
            cpu(h, &Row::max_cpu),
        );
    }
    for peer in ["nginx", "haproxy"] {
        let (Some(h), Some(n)) = (
            find(paths, runs, "halyard 1 hop"),
            find(paths, runs, &format!("{peer} 1 hop")),
        ) else {
            continue;
        };
        let cpu_ratio = |f: &dyn Fn(&Row) -> Option<f64>| {
            median(
                h.iter()
                    .zip(n)
                    .filter_map(|(a, b)| Some(f(a)? / f(b)?.max(1e-9)))
                    .collect(),
            )
        };
        println!(
            "halyard 1 hop vs {peer} 1 hop (median of per-round ratios): {:.2}x req/s, p99 {:.2}x, p99@1k {:.2}x, CPU per request {:.2}x closed-loop, {:.2}x at 1k req/s",
            per_round_ratio(h, n, &|r| r.max.rps),
            per_round_ratio(h, n, &|r| r.max.p99_us),
            per_round_ratio(h, n, &|r| r.paced.p99_us),
            cpu_ratio(&Row::max_cpu),
            cpu_ratio(&Row::paced_cpu),
        );
    }
}
