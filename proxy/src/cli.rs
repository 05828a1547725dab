//! `halyard-proxy` command line: static mode (a config file of `ProxyResources`) or discovery
//! mode (the control plane pushes config). Reachable from the library so other binaries (the
//! `halyard demo`) can run a proxy in-process with the same flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use halyard_config::ProxyResources;

use crate::access_log::{AccessLog, Encoding};
use crate::admin::{self, Role};
use crate::agent::Agent;
use crate::error::ProxyError;
use crate::proxy::{LogReloader, Proxy, ProxyOptions};
use crate::snapshot::NodeInfo;

/// Flags of `halyard-proxy`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "halyard-proxy",
    version,
    about = "halyard's data plane: sidecar and gateway proxy"
)]
pub struct Args {
    /// Static mode: run from this file of `ProxyResources` (YAML or JSON); SIGHUP re-reads it.
    #[arg(
        long,
        env = "HALYARD_PROXY_CONFIG",
        conflicts_with = "discovery_address"
    )]
    pub config: Option<PathBuf>,
    /// Discovery mode: control-plane address(es), e.g. `http://127.0.0.1:15010`.
    #[arg(long, env = "HALYARD_DISCOVERY_ADDRESS", value_delimiter = ',')]
    pub discovery_address: Vec<String>,
    /// Worker threads of the data plane (Istio's `concurrency`).
    #[arg(long, env = "HALYARD_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    /// Proxy id, `<pod>.<namespace>`.
    #[arg(long, env = "HALYARD_NODE_ID", default_value = "")]
    pub node_id: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Workload labels, `app=reviews,version=v2`.
    #[arg(long, env = "HALYARD_LABELS", default_value = "")]
    pub labels: String,
    /// Owning workload (Deployment) name, for metrics.
    #[arg(long, env = "HALYARD_WORKLOAD", default_value = "")]
    pub workload: String,
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "")]
    pub service_account: String,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Workload IP addresses (first is primary).
    #[arg(long = "ip", env = "INSTANCE_IPS", value_delimiter = ',')]
    pub ips: Vec<String>,
    /// `sidecar` or `router` (gateway).
    #[arg(long, default_value = "sidecar")]
    pub proxy_type: String,
    /// `redirect` (iptables capture) or `none` (local mode: explicit listeners).
    #[arg(long, default_value = "redirect")]
    pub interception: String,
    /// Local mode: address the per-service outbound listeners bind to.
    #[arg(long, default_value = "")]
    pub local_bind_address: String,
    /// Local mode: application ports, `port[:protocol[:name]]`, repeatable.
    #[arg(long = "workload-port")]
    pub workload_ports: Vec<String>,
    /// Local mode: address of the application the inbound listeners forward to.
    #[arg(long, env = "HALYARD_APP_ADDRESS", default_value = "")]
    pub app_address: String,
    /// Locality of the workload, `region/zone/subzone` (locality load balancing).
    #[arg(long, env = "HALYARD_LOCALITY", default_value = "")]
    pub locality: String,
    /// Kubernetes cluster id (Istio's `CLUSTER_ID`).
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,
    #[arg(long, env = "HALYARD_ADMIN_ADDRESS", default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,
    #[arg(long, env = "HALYARD_STATUS_ADDRESS", default_value = "0.0.0.0:15021")]
    pub status_address: SocketAddr,
    #[arg(
        long,
        env = "HALYARD_PROMETHEUS_ADDRESS",
        default_value = "0.0.0.0:15090"
    )]
    pub prometheus_address: SocketAddr,
    /// Access log destination (`/dev/stdout` or a file); off when unset.
    #[arg(long, env = "HALYARD_ACCESS_LOG")]
    pub access_log: Option<String>,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    pub access_log_encoding: String,
    /// Log filter (`info`, `halyard_proxy=debug`); changeable at runtime via admin `/logging`.
    #[arg(long, env = "HALYARD_LOG", default_value = "info")]
    pub log_level: String,
    #[arg(long)]
    pub log_json: bool,
    /// How long SIGTERM drains before exiting (`5s`, `500ms`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_duration: Duration,
    /// Protocol sniffing timeout for server-first protocols (`100ms`).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub sniff_timeout: Duration,
    /// Agent port (app probes, merged metrics, `/quitquitquit`). Default: `0.0.0.0:15020` for a
    /// sidecar with capture; off with `--interception none` (local mode) unless given.
    #[arg(long, env = "HALYARD_AGENT_ADDRESS")]
    pub agent_address: Option<SocketAddr>,
    /// The app's original probes by agent path, JSON (set by the injector).
    #[arg(long, env = "ISTIO_KUBE_APP_PROBERS", default_value = "")]
    pub app_probers: String,
    /// The app's original `prometheus.io/*` annotations, JSON (set by the injector).
    #[arg(long, env = "ISTIO_PROMETHEUS_ANNOTATIONS", default_value = "")]
    pub app_prometheus: String,
    /// How often DNS clusters (ServiceEntry `resolution: DNS`) are re-resolved (Istio's dnsRefreshRate).
    #[arg(long, env = "HALYARD_DNS_REFRESH_RATE", default_value = "60s", value_parser = parse_duration)]
    pub dns_refresh_rate: Duration,
    /// `sidecar`: the downward-API file with the pod's labels (read when `--labels` is empty).
    #[arg(long, env = "HALYARD_POD_LABELS_FILE", default_value = POD_LABELS_FILE)]
    pub pod_labels_file: PathBuf,
    /// `wait`: how long to wait for readiness before failing.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// What to do: run as `sidecar` (default) or `router`; `wait` until the local proxy is ready
    /// (the injector's postStart hook); `drain` the local proxy (a native sidecar's preStop hook).
    #[arg(value_enum)]
    pub mode: Option<Mode>,
}

/// The positional mode of `halyard-proxy` (the injected container runs `halyard-proxy sidecar`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Sidecar,
    Router,
    Wait,
    Drain,
}

/// `150ms`, `5s`, `2m`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 500ms, 5s or 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// `a=b,c=d` into a map.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("label {kv:?}: expected key=value"))
        })
        .collect()
}

/// Read a static config file (YAML or JSON, by extension; YAML otherwise).
pub fn load_config(path: &Path) -> Result<ProxyResources, ProxyError> {
    let err = |why: String| ProxyError::ConfigFile {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
    } else {
        serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

impl Args {
    pub fn node(&self) -> Result<NodeInfo, ProxyError> {
        let labels = parse_labels(&self.labels).map_err(ProxyError::Args)?;
        let principal = if self.service_account.is_empty() {
            String::new()
        } else {
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                self.trust_domain, self.namespace, self.service_account
            )
        };
        Ok(NodeInfo {
            id: self.node_id.clone(),
            namespace: self.namespace.clone(),
            labels,
            workload: self.workload.clone(),
            principal,
            locality: self.locality.clone(),
        })
    }
}

/// Where the injector's downward-API volume puts the pod's labels.
pub const POD_LABELS_FILE: &str = "/etc/istio/pod/labels";

/// Istio's proxy log levels in tracing's words.
fn istio_log_level(l: &str) -> String {
    match l.to_ascii_lowercase().as_str() {
        "warning" => "warn".into(),
        "critical" => "error".into(),
        other => other.to_string(),
    }
}

/// The downward API's labels file (`key="value"` per line, Go-quoted) as `a=b,c=d`.
pub fn downward_labels(text: &str) -> String {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            let v = v.replace("\\\"", "\"").replace("\\\\", "\\");
            // Kubernetes label values never hold commas; anything that does is not a label.
            (!k.is_empty() && !k.contains(',') && !v.contains(','))
                .then(|| format!("{}={v}", k.trim()))
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Args {
    /// `halyard-proxy sidecar` in an injected pod: what flags (and halyard's own env) leave unset
    /// comes from the env the injector sets under Istio's names (`DISCOVERY_ADDRESS`, `POD_NAME`,
    /// `INSTANCE_IP`, `ISTIO_META_WORKLOAD_NAME`, `ISTIO_META_CLUSTER_ID`, `TRUST_DOMAIN`,
    /// `PROXY_LOG_LEVEL`) and the labels from the downward-API file. Explicit values win.
    pub fn fill_from_injected_env(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        labels_file: &Path,
    ) {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if self.config.is_none()
            && self.discovery_address.is_empty()
            && let Some(a) = get("DISCOVERY_ADDRESS")
        {
            self.discovery_address = a
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    if a.contains("://") {
                        a.to_string()
                    } else {
                        format!("http://{a}")
                    }
                })
                .collect();
        }
        if self.node_id.is_empty()
            && let Some(pod) = get("POD_NAME")
        {
            self.node_id = format!("{pod}.{}", self.namespace);
        }
        if self.ips.is_empty()
            && let Some(ip) = get("INSTANCE_IP")
        {
            self.ips = vec![ip];
        }
        if self.workload.is_empty()
            && let Some(w) = get("ISTIO_META_WORKLOAD_NAME")
        {
            self.workload = w;
        }
        if self.cluster_id == "Kubernetes"
            && let Some(c) = get("ISTIO_META_CLUSTER_ID")
        {
            self.cluster_id = c;
        }
        if self.trust_domain == "cluster.local"
            && let Some(td) = get("TRUST_DOMAIN")
        {
            self.trust_domain = td;
        }
        if self.log_level == "info"
            && let Some(l) = get("PROXY_LOG_LEVEL")
        {
            self.log_level = istio_log_level(&l);
        }
        if self.labels.is_empty()
            && let Ok(text) = std::fs::read_to_string(labels_file)
        {
            self.labels = downward_labels(&text);
        }
    }
}

/// `9080`, `9080:HTTP`, `9080:http:http-web`.
pub fn parse_workload_port(s: &str) -> Result<halyard_config::discovery::WorkloadPort, String> {
    let mut parts = s.split(':');
    let port = parts
        .next()
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            format!("workload port {s:?}: expected port[:protocol[:name]] with a port 1-65535")
        })?;
    Ok(halyard_config::discovery::WorkloadPort {
        port: u32::from(port),
        protocol: parts.next().unwrap_or("").to_string(),
        name: parts.next().unwrap_or("").to_string(),
    })
}

impl Args {
    /// The identity sent to the control plane on every stream.
    pub fn discovery_node(&self) -> Result<halyard_config::discovery::Node, ProxyError> {
        use halyard_config::discovery::{InterceptionMode, ProxyType};
        let proxy_type = match self.proxy_type.to_ascii_lowercase().as_str() {
            "sidecar" => ProxyType::Sidecar,
            "router" | "gateway" => ProxyType::Router,
            other => {
                return Err(ProxyError::Args(format!(
                    "--proxy-type {other:?}: expected sidecar or router"
                )));
            }
        };
        let interception = match self.interception.to_ascii_lowercase().as_str() {
            "redirect" => InterceptionMode::Redirect,
            "none" => InterceptionMode::None,
            other => {
                return Err(ProxyError::Args(format!(
                    "--interception {other:?}: expected redirect or none"
                )));
            }
        };
        let workload_ports = self
            .workload_ports
            .iter()
            .map(|p| parse_workload_port(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ProxyError::Args)?;
        Ok(halyard_config::discovery::Node {
            id: self.node_id.clone(),
            namespace: self.namespace.clone(),
            labels: parse_labels(&self.labels).map_err(ProxyError::Args)?,
            service_account: self.service_account.clone(),
            ip_addresses: self.ips.clone(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            workload_name: self.workload.clone(),
            proxy_type: proxy_type as i32,
            interception_mode: interception as i32,
            cluster_id: self.cluster_id.clone(),
            workload_ports,
            local_bind_address: self.local_bind_address.clone(),
            app_address: self.app_address.clone(),
            locality: self.locality.clone(),
            ..Default::default()
        })
    }
}

/// Install the tracing subscriber (once per process) and return a reloader for `/logging`.
pub fn init_logging(level: &str, json: bool) -> Option<LogReloader> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, reload};
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let result = if json {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json())
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init()
    };
    // Someone else (an embedding binary) owns the subscriber: no runtime level changes here.
    result.ok()?;
    Some(Box::new(move |lvl: &str| {
        let f = EnvFilter::try_new(lvl).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

/// Build a runtime with `concurrency` workers and run until exit.
pub fn main_with(args: Args) -> Result<(), ProxyError> {
    // One worker means one thread, as Envoy's concurrency 1: no work-stealing machinery.
    let rt = if args.concurrency <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.concurrency)
            .enable_all()
            .build()
    }
    .map_err(ProxyError::Runtime)?;
    rt.block_on(run(args))
}

/// Run the proxy inside the current runtime until `/quitquitquit` or SIGTERM/SIGINT (+ drain).
pub async fn run(mut args: Args) -> Result<(), ProxyError> {
    match args.mode {
        Some(Mode::Wait) => return wait_ready(&args).await,
        Some(Mode::Drain) => return drain_local(&args).await,
        Some(Mode::Router) => args.proxy_type = "router".into(),
        Some(Mode::Sidecar) => {
            let labels = args.pod_labels_file.clone();
            args.fill_from_injected_env(&|k| std::env::var(k).ok(), &labels)
        }
        None => {}
    }
    let reloader = init_logging(&args.log_level, args.log_json);
    // Bad probe/annotation env is refused before anything starts, naming the field.
    let agent = match agent_address(&args) {
        Some(addr) => {
            let a =
                Agent::from_env_values(&args.app_probers, &args.app_prometheus, app_host(&args))
                    .map_err(|e| ProxyError::Args(e.to_string()))?;
            Some((addr, Arc::new(a)))
        }
        None => None,
    };
    let access_log = match &args.access_log {
        Some(path) => {
            let enc = if args.access_log_encoding.eq_ignore_ascii_case("json") {
                Encoding::Json
            } else {
                Encoding::Text
            };
            Some(
                AccessLog::open(path, enc).map_err(|source| ProxyError::AccessLog {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let proxy = Proxy::new(ProxyOptions {
        node: args.node()?,
        access_log,
        sniff_timeout: Some(args.sniff_timeout),
        log_reloader: reloader,
        cluster_id: args.cluster_id.clone(),
    });

    // DNS clusters are re-resolved in the background (Istio's dnsRefreshRate).
    crate::dns::spawn_refresher(
        proxy.clone(),
        Arc::new(crate::dns::SystemResolver),
        args.dns_refresh_rate,
    );

    // Admin-type ports first, so readiness can be observed while config is pending.
    let admin_l = bind_admin(args.admin_address, "admin").await?;
    let status_l = bind_admin(args.status_address, "status").await?;
    let prom_l = bind_admin(args.prometheus_address, "prometheus").await?;
    tokio::spawn(admin::serve_listener(proxy.clone(), admin_l, Role::Admin));
    tokio::spawn(admin::serve_listener(proxy.clone(), status_l, Role::Status));
    tokio::spawn(admin::serve_listener(
        proxy.clone(),
        prom_l,
        Role::Prometheus,
    ));
    if let Some((addr, agent)) = agent {
        let l = bind_admin(addr, "agent").await?;
        tracing::info!(%addr, probes = agent.probers.len(), app_metrics = agent.app_scrape.is_some(), "agent port listening");
        tokio::spawn(crate::agent::serve_listener(proxy.clone(), l, agent));
    }

    if let Some(path) = &args.config {
        let res = load_config(path)?;
        proxy.apply(&res)?;
        tracing::info!(path = %path.display(), version = %res.version, "static config applied");
        spawn_reload_on_hup(proxy.clone(), path.clone());
    } else if !args.discovery_address.is_empty() {
        let node = args.discovery_node()?;
        if node.id.is_empty() {
            return Err(ProxyError::Args(
                "discovery mode needs --node-id <pod>.<namespace>".into(),
            ));
        }
        let sink: Arc<dyn crate::xds::ConfigSink> = proxy.clone();
        let config = crate::xds::ClientConfig::new(args.discovery_address.clone(), node);
        let client = crate::xds::XdsClient::new(config, sink)
            .map_err(|e| ProxyError::Discovery(e.to_string()))?;
        let mut quit = proxy.shared().quit.subscribe();
        tokio::spawn(client.run(async move {
            let _ = quit.wait_for(|q| *q).await;
        }));
        tracing::info!(addresses = ?args.discovery_address, "discovery client started");
    } else {
        return Err(ProxyError::Args(
            "nothing to run: pass --config FILE (static mode) or --discovery-address URL".into(),
        ));
    }

    wait_for_exit(&proxy, args.drain_duration).await;
    Ok(())
}

/// The agent port: explicit, else on for a capturing sidecar (Istio's 15020), off in local mode so
/// several local proxies do not collide.
pub fn agent_address(args: &Args) -> Option<SocketAddr> {
    args.agent_address.or_else(|| {
        let local = args.interception.eq_ignore_ascii_case("none");
        let sidecar = args.proxy_type.eq_ignore_ascii_case("sidecar");
        (sidecar && !local).then_some(crate::agent::DEFAULT_ADDRESS)
    })
}

/// Where app probes and the app scrape go when they name no host: the app address (local mode),
/// else the pod IP (as the kubelet probes it), else loopback.
pub fn app_host(args: &Args) -> String {
    let a = args.app_address.trim();
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return sa.ip().to_string();
    }
    if !a.is_empty() {
        return a.trim_matches(['[', ']']).to_string();
    }
    args.ips
        .iter()
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .unwrap_or("127.0.0.1")
        .to_string()
}

/// A local address for a port bound on all interfaces.
fn local_target(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// One request to a local admin-type port; the status code.
async fn local_request(method: http::Method, addr: SocketAddr, path: &str) -> Result<u16, String> {
    use http_body_util::Empty;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    Ok(resp.status().as_u16())
}

/// `halyard-proxy wait`: poll the local `/healthz/ready` every 500 ms until it answers 200 or
/// `--wait-timeout` passes (the postStart hook of `holdApplicationUntilProxyStarts`).
async fn wait_ready(args: &Args) -> Result<(), ProxyError> {
    let addr = local_target(args.status_address);
    let deadline = tokio::time::Instant::now() + args.wait_timeout;
    loop {
        let last = match tokio::time::timeout(
            Duration::from_secs(1),
            local_request(http::Method::GET, addr, "/healthz/ready"),
        )
        .await
        {
            Ok(Ok(200)) => {
                eprintln!("halyard-proxy is ready");
                return Ok(());
            }
            Ok(Ok(code)) => format!("HTTP {code}"),
            Ok(Err(e)) => e,
            Err(_) => "no answer within 1s".into(),
        };
        if tokio::time::Instant::now() + Duration::from_millis(500) > deadline {
            return Err(ProxyError::Args(format!(
                "proxy at {addr} not ready within {:?}: {last}",
                args.wait_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `halyard-proxy drain`: ask the local proxy to stop accepting and finish open connections.
async fn drain_local(args: &Args) -> Result<(), ProxyError> {
    let addr = local_target(args.admin_address);
    match local_request(http::Method::POST, addr, "/drain_listeners").await {
        Ok(200) => Ok(()),
        Ok(code) => Err(ProxyError::Args(format!(
            "drain: {addr}/drain_listeners answered HTTP {code}"
        ))),
        Err(e) => Err(ProxyError::Args(format!("drain: {e}"))),
    }
}

async fn bind_admin(
    addr: SocketAddr,
    what: &'static str,
) -> Result<tokio::net::TcpListener, ProxyError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Serve { what, addr, source })
}

fn spawn_reload_on_hup(proxy: Arc<Proxy>, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match load_config(&path)
                .map_err(|e| e.to_string())
                .and_then(|r| proxy.apply(&r).map_err(|e| e.to_string()))
            {
                Ok(()) => tracing::info!(path = %path.display(), "config reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "config reload rejected; keeping the previous config")
                }
            }
        }
    });
}

async fn wait_for_exit(proxy: &Arc<Proxy>, drain: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut quit = proxy.shared().quit.subscribe();
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {
            tracing::info!(?drain, "SIGTERM: draining");
            proxy.drain();
            tokio::time::sleep(drain).await;
        }
        _ = tokio::signal::ctrl_c() => {}
        _ = quit.wait_for(|q| *q) => {
            // `/quitquitquit`: stop accepting, let open connections finish (bounded by the drain
            // duration), and give the quit request's own answer time to leave.
            proxy.drain();
            let deadline = tokio::time::Instant::now() + drain;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let active = &proxy.shared().stats.downstream_cx_active;
            while active.load(std::sync::atomic::Ordering::Relaxed) > 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tracing::info!("exiting after /quitquitquit");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_labels() {
        assert_eq!(parse_duration("150ms").unwrap(), Duration::from_millis(150));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 parsecs").is_err());
        let l = parse_labels("app=reviews, version=v2").unwrap();
        assert_eq!(l.get("version").map(String::as_str), Some("v2"));
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("").unwrap().is_empty());
        let p = parse_workload_port("9080:HTTP:http-web").unwrap();
        assert_eq!(
            (p.port, p.protocol.as_str(), p.name.as_str()),
            (9080, "HTTP", "http-web")
        );
        assert!(parse_workload_port("0").is_err());
        assert!(parse_workload_port("x:tcp").is_err());
    }

    #[test]
    fn injected_env_fills_what_flags_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels");
        std::fs::write(
            &labels,
            "app=\"reviews\"\npod-template-hash=\"7d9f\"\nservice.istio.io/canonical-name=\"reviews\"\nversion=\"v2\"\n",
        )
        .unwrap();
        let env = |k: &str| {
            Some(
                match k {
                    "DISCOVERY_ADDRESS" => "halyard-operator.halyard-system.svc:15010",
                    "POD_NAME" => "reviews-v2-7d9f-x1",
                    "INSTANCE_IP" => "10.1.2.3",
                    "ISTIO_META_WORKLOAD_NAME" => "reviews-v2",
                    "ISTIO_META_CLUSTER_ID" => "east",
                    "TRUST_DOMAIN" => "example.org",
                    "PROXY_LOG_LEVEL" => "warning",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let mut a =
            Args::try_parse_from(["halyard-proxy", "sidecar", "--namespace", "shop"]).unwrap();
        a.fill_from_injected_env(&env, &labels);
        assert_eq!(
            a.discovery_address,
            ["http://halyard-operator.halyard-system.svc:15010"]
        );
        assert_eq!(a.node_id, "reviews-v2-7d9f-x1.shop");
        assert_eq!(a.ips, ["10.1.2.3"]);
        assert_eq!(
            (a.workload.as_str(), a.cluster_id.as_str()),
            ("reviews-v2", "east")
        );
        assert_eq!(a.log_level, "warn");
        let node = a.node().unwrap();
        assert_eq!(node.labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(
            node.labels
                .get("service.istio.io/canonical-name")
                .map(String::as_str),
            Some("reviews")
        );

        // Explicit flags win; a static config is not overridden by a discovery address.
        let mut b = Args::try_parse_from([
            "halyard-proxy",
            "sidecar",
            "--config",
            "/x.yaml",
            "--node-id",
            "mine.ns",
            "--workload",
            "w",
        ])
        .unwrap();
        b.fill_from_injected_env(&env, &dir.path().join("absent"));
        assert!(b.discovery_address.is_empty());
        assert_eq!((b.node_id.as_str(), b.workload.as_str()), ("mine.ns", "w"));
        assert!(b.labels.is_empty());
    }
}
