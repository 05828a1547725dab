//! `halyard demo`: the Bookinfo mesh on this machine (control plane, one proxy per workload, sample services,
//! all on loopback) and a scripted tour of traffic management, every step checked from observed traffic.
//!
//! The pieces run as child processes of this same executable through hidden subcommands (`demo-operator`,
//! `demo-proxy`, `demo-app`), so `cargo run --bin halyard -- demo` needs no other binary.
//!
//! Config takes the real path: the demo writes Istio YAML into a config directory, `halyard-operator` in
//! local mode (`--config-dir`) reads it, builds the mesh model and pushes each proxy its config over the
//! discovery protocol; the demo waits until the operator's `/debug/syncz` shows every proxy SYNCED (ACKed) at
//! the new config version before it sends traffic.

pub mod app;
pub mod load;
pub mod mesh;
pub mod observe;
pub mod steps;
pub mod supervisor;
pub mod sync;
pub mod tour;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use app::Role;
use mesh::{Topology, Workload};
use observe::Check;
use steps::{Routing, StepResult};
use supervisor::Supervisor;
use sync::SyncView;

/// How long a freshly started piece may take to become ready, and a config change to reach every proxy (the
/// operator notices a change within milliseconds, or 500 ms when it falls back to polling, and debounces pushes
/// by 100 ms; a loaded CI machine is slower).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the demo waits for one answer of the control plane's debug endpoints.
const DEBUG_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the demo reads the operator's `/debug/syncz` while waiting.
const SYNC_POLL: Duration = Duration::from_millis(20);
/// The ISTIOD column of `halyard proxy-status` for the demo's control plane.
const CONTROL_PLANE_ID: &str = "halyard-operator-demo";

/// `halyard demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Leave the mesh running after the tour, until Ctrl-C, and print how to reach it.
    #[arg(long)]
    pub keep_running: bool,
    /// Start the mesh without running the tour (implies --keep-running).
    #[arg(long)]
    pub no_tour: bool,
    /// Run only the routing steps (default route, all to v1, canaries, header routing), which need no
    /// resilience feature (faults, timeouts, retries, circuit breaking) in the proxy.
    #[arg(long)]
    pub routing_only: bool,
    /// Print only the verdicts, not each step's config and explanations.
    #[arg(long, short)]
    pub quiet: bool,
    /// Second octet of the loopback addresses used (127.<octet>.x.y), so that several demos can run at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub octet: u8,
}

/// `halyard demo-proxy`: one proxy, in this process.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Exit when standard input closes (the demo that started this process is gone).
    #[arg(long)]
    pub exit_with_parent: bool,
    #[command(flatten)]
    pub proxy: halyard_proxy::cli::Args,
}

/// `halyard demo-operator`: the control plane (`halyard-operator`'s flags), in this process.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Exit when standard input closes (the demo that started this process is gone).
    #[arg(long)]
    pub exit_with_parent: bool,
    #[command(flatten)]
    pub operator: halyard_operator::run::Args,
}

/// What the demo prints; `quiet` keeps only the verdicts.
pub struct Printer {
    pub quiet: bool,
}

impl Printer {
    pub fn heading(&self, text: &str) {
        if !self.quiet {
            println!("\n== {text}");
        }
    }

    pub fn say(&self, text: &str) {
        if !self.quiet {
            println!("{text}");
        }
    }

    fn yaml(&self, docs: &[Value]) {
        if self.quiet {
            return;
        }
        match mesh::to_yaml(docs) {
            Ok(y) => {
                for line in y.lines() {
                    println!("    {line}");
                }
            }
            Err(e) => println!("    (cannot render YAML: {e})"),
        }
    }

    /// The verdicts of the last step.
    pub fn checks(&self, results: &[StepResult]) {
        if let Some(last) = results.last() {
            for c in &last.checks {
                print_check(c, self.quiet.then_some(last.title.as_str()));
            }
        }
    }
}

fn print_check(c: &Check, step: Option<&str>) {
    let mark = if c.ok { "PASS" } else { "FAIL" };
    match step {
        Some(step) => println!("[{mark}] {step}: {} (observed: {})", c.expected, c.observed),
        None => println!(
            "  [{mark}] {}\n         observed: {}",
            c.expected, c.observed
        ),
    }
}

/// One proxy of the demo: its name among the children, its proxy id (how the control plane knows it), its
/// command line and its readiness address.
struct ProxyProc {
    name: String,
    id: String,
    args: Vec<String>,
    ready: SocketAddr,
}

/// The running demo mesh.
pub struct Mesh {
    pub topology: Topology,
    pub driver: load::Driver,
    supervisor: Supervisor,
    config_dir: PathBuf,
    routing: Routing,
    proxies: Vec<ProxyProc>,
    /// The control plane's config version every proxy was last seen SYNCED at.
    version: u64,
}

/// How a config change reached the proxies.
struct Synced {
    version: u64,
    /// From the write until the control plane's config version moved (it noticed the file).
    read_after: Duration,
    /// From the write until every proxy had ACKed the new version.
    acked_after: Duration,
}

impl Mesh {
    fn write_routing(&self) -> anyhow::Result<()> {
        let yaml =
            mesh::to_yaml(&self.routing.documents()).context("rendering the routing YAML")?;
        steps::write_atomically(&self.config_dir.join("routing.yaml"), &yaml)
    }

    fn proxy_ids(&self) -> Vec<String> {
        self.proxies.iter().map(|p| p.id.clone()).collect()
    }

    /// Apply `docs` on top of the routing in force, print them, and wait until every proxy has ACKed the
    /// control plane's config built from them.
    pub async fn apply(&mut self, docs: Vec<Value>, out: &Printer) -> anyhow::Result<()> {
        out.say(&format!(
            "applying to {}:",
            self.config_dir.join("routing.yaml").display()
        ));
        out.yaml(&docs);
        self.routing.set(docs);
        let written = Instant::now();
        self.write_routing()?;
        let synced = self.wait_synced(written).await?;
        self.refuse_rejected().await?;
        out.say(&format!(
            "halyard-operator read the change after {} ms; all {} proxies ACKed config version {} after {} ms",
            synced.read_after.as_millis(),
            self.proxies.len(),
            synced.version,
            synced.acked_after.as_millis()
        ));
        Ok(())
    }

    /// Wait until the control plane's config version is newer than the one the proxies last ran and every
    /// proxy is SYNCED at it; `since` is when the change was made.
    async fn wait_synced(&mut self, since: Instant) -> anyhow::Result<Synced> {
        let base = self.topology.monitoring_url();
        let expected = self.proxy_ids();
        let deadline = since + SYNC_TIMEOUT;
        let mut read_after = None;
        let mut last;
        loop {
            let exited = self.supervisor.exited();
            if !exited.is_empty() {
                bail!("mesh processes exited: {}", exited.join(", "));
            }
            match read_syncz(&base).await {
                Ok(report) => {
                    if read_after.is_none() && report.config_version > self.version {
                        read_after = Some(since.elapsed());
                    }
                    match sync::assess(&report, &expected, self.version) {
                        SyncView::Synced(version) => {
                            self.version = version;
                            let acked_after = since.elapsed();
                            return Ok(Synced {
                                version,
                                read_after: read_after.unwrap_or(acked_after),
                                acked_after,
                            });
                        }
                        SyncView::Refused(why) => bail!("{why}"),
                        SyncView::Waiting(why) => last = why,
                    }
                }
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "the proxies did not converge within {SYNC_TIMEOUT:?}: {last} (operator log: {})",
                    self.supervisor.log_dir().join("operator.log").display()
                );
            }
            tokio::time::sleep(SYNC_POLL).await;
        }
    }

    /// The objects the control plane skipped as invalid (its `/debug/configz`), one line each.
    async fn rejected(&self) -> anyhow::Result<Vec<String>> {
        let base = self.topology.monitoring_url();
        let body = tokio::time::timeout(
            DEBUG_TIMEOUT,
            halyard_operator::debug::client::get(&base, "/debug/configz"),
        )
        .await
        .map_err(|_| anyhow!("{base}/debug/configz: no answer within {DEBUG_TIMEOUT:?}"))??;
        let configz: Value = serde_json::from_slice(&body)
            .with_context(|| format!("{base}/debug/configz is not JSON"))?;
        let rejected = configz["rejected"].as_array().cloned().unwrap_or_default();
        Ok(rejected.iter().map(describe_rejected).collect())
    }

    /// The tour's own config must be accepted whole: a skipped object would make a step measure something else.
    async fn refuse_rejected(&self) -> anyhow::Result<()> {
        let rejected = self.rejected().await?;
        if !rejected.is_empty() {
            bail!(
                "halyard-operator skipped invalid objects: {}",
                rejected.join("; ")
            );
        }
        Ok(())
    }

    async fn metrics(
        &self,
        proxy_prometheus: std::net::SocketAddr,
    ) -> anyhow::Result<Vec<observe::Sample>> {
        // A proxy counts a request when the response has been streamed, a moment after the client has read it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = self
            .driver
            .text(proxy_prometheus, "/stats/prometheus")
            .await
            .map_err(|e| anyhow!(e))?;
        observe::parse_prometheus(&text).map_err(|e| anyhow!("metrics of {proxy_prometheus}: {e}"))
    }

    fn workload(role: Role, version: &str) -> Workload {
        mesh::WORKLOADS
            .iter()
            .copied()
            .find(|w| w.role == role && w.version == version)
            .unwrap_or(mesh::WORKLOADS[0])
    }

    /// productpage's proxy: requests it sent to reviews, by destination version.
    pub async fn reviews_source_counts(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let w = Self::workload(Role::Productpage, "v1");
        let samples = self
            .metrics(self.topology.proxy_port(&w, mesh::PROMETHEUS_PORT))
            .await?;
        Ok(observe::sum_by(
            &samples,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("destination_service_name", "reviews"),
            ],
            "destination_version",
        ))
    }

    /// productpage's proxy: attempts it made to reviews, by response code.
    pub async fn reviews_retries_at_productpage(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let w = Self::workload(Role::Productpage, "v1");
        let samples = self
            .metrics(self.topology.proxy_port(&w, mesh::PROMETHEUS_PORT))
            .await?;
        // istio_requests_total counts requests, not attempts (as Envoy's does); the cluster's retry
        // counter is what shows retries.
        let mut by_cluster = observe::sum_by(
            &samples,
            "envoy_cluster_upstream_rq_retry",
            &[],
            "cluster_name",
        );
        by_cluster.retain(|cluster, _| cluster.contains("|reviews."));
        Ok(by_cluster)
    }

    /// The client's proxy: requests it sent to details, by response flags.
    pub async fn client_flag_counts(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let samples = self
            .metrics(self.topology.client_port(mesh::PROMETHEUS_PORT))
            .await?;
        Ok(observe::sum_by(
            &samples,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("destination_service_name", "details"),
            ],
            "response_flags",
        ))
    }

    /// A table of what each reviews version's proxy received, by response code.
    pub async fn reviews_destination_totals(&self) -> anyhow::Result<String> {
        let mut lines = vec![format!(
            "    {:<12} {:>10} {:>10}",
            "version", "2xx", "other"
        )];
        for w in mesh::WORKLOADS.iter().filter(|w| w.role == Role::Reviews) {
            let samples = self
                .metrics(self.topology.proxy_port(w, mesh::PROMETHEUS_PORT))
                .await?;
            let by_code = observe::sum_by(
                &samples,
                "istio_requests_total",
                &[
                    ("reporter", "destination"),
                    ("destination_version", w.version),
                ],
                "response_code",
            );
            let ok: f64 = by_code
                .iter()
                .filter(|(c, _)| c.starts_with('2'))
                .fold(0.0, |acc, (_, v)| acc + v);
            let other: f64 = by_code
                .iter()
                .filter(|(c, _)| !c.starts_with('2'))
                .fold(0.0, |acc, (_, v)| acc + v);
            lines.push(format!(
                "    {:<12} {ok:>10} {other:>10}",
                format!("reviews {}", w.version)
            ));
        }
        Ok(lines.join("\n"))
    }
}

/// `halyard demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo(args))
}

/// Ctrl-C (SIGINT) and SIGTERM, registered when created: a signal that arrives while the mesh is still
/// starting is then delivered to the demo (which stops its children) instead of killing it outright.
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("registering the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("registering the SIGTERM handler")?,
        })
    }

    /// Resolves on the next Ctrl-C or SIGTERM, naming the signal.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "Ctrl-C",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut interrupts = Interrupts::register()?;
    let out = Printer { quiet: args.quiet };
    let root = tempfile::Builder::new()
        .prefix("halyard-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?
        .keep();
    let config_dir = root.join("config");
    std::fs::create_dir_all(&config_dir)
        .with_context(|| format!("creating {}", config_dir.display()))?;
    let exe = std::env::current_exe().context("locating the halyard executable")?;
    let supervisor = Supervisor::new(exe, root.join("logs"))?;
    let topology = Topology { octet: args.octet };
    let proxies = proxy_procs(&topology);
    let mut mesh = Mesh {
        topology,
        driver: load::Driver::default(),
        supervisor,
        config_dir,
        routing: Routing::initial(),
        proxies,
        version: 0,
    };
    let keep_running = args.keep_running || args.no_tour;

    let outcome = tokio::select! {
        r = start_and_tour(&mut mesh, &out, !args.no_tour, args.routing_only) => r,
        sig = interrupts.recv() => Err(anyhow!("interrupted by {sig}")),
    };
    let mut passed = match &outcome {
        Ok(results) => summarize(results),
        Err(e) => {
            println!("\ndemo failed: {e:#}");
            false
        }
    };
    if passed && keep_running {
        let reset = async {
            mesh.routing = Routing::initial();
            mesh.routing.set(steps::all_v1());
            let written = Instant::now();
            mesh.write_routing()?;
            mesh.wait_synced(written).await
        };
        let sig = tokio::select! {
            r = reset => match r {
                Ok(_) => {
                    print_access(&mesh, &root);
                    Some(watch_config(&mut mesh, &mut interrupts).await)
                }
                Err(e) => {
                    println!("could not reset the routing for --keep-running: {e:#}");
                    passed = false;
                    None
                }
            },
            sig = interrupts.recv() => Some(sig),
        };
        if let Some(sig) = sig {
            println!("\n{sig}: stopping the mesh");
        }
    }
    mesh.supervisor.shutdown().await;
    if passed {
        if !keep_running {
            let _ = std::fs::remove_dir_all(&root);
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "logs of every process: {} (config: {})",
            mesh.supervisor.log_dir().display(),
            mesh.config_dir.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Start the sample services and their proxies, wait until every proxy runs the initial config, then run
/// the tour (or not).
async fn start_and_tour(
    mesh: &mut Mesh,
    out: &Printer,
    tour: bool,
    routing_only: bool,
) -> anyhow::Result<Vec<StepResult>> {
    let t = mesh.topology;
    let started = Instant::now();
    out.heading("Starting the mesh on loopback");
    let registry = mesh::to_yaml(&mesh::registry(&t)).context("rendering the registry YAML")?;
    steps::write_atomically(&mesh.config_dir.join("services.yaml"), &registry)?;
    mesh.write_routing()?;
    out.say(&format!(
        "config directory {} (services.yaml: ServiceEntry + WorkloadEntry per service and workload; routing.yaml: DestinationRules, VirtualServices)",
        mesh.config_dir.display()
    ));

    mesh.supervisor
        .spawn(OPERATOR, &operator_args(&t, &mesh.config_dir))?;
    for w in &mesh::WORKLOADS {
        let args = app_args(&t, w);
        let name = format!("app-{}", w.name());
        mesh.supervisor.spawn(&name, &args)?;
    }
    let monitoring = t.monitoring_addr();
    let driver = &mesh.driver;
    mesh.supervisor
        .wait_ready(OPERATOR, READY_TIMEOUT, || async {
            driver.text(monitoring, "/ready").await.map(|_| ())
        })
        .await?;
    out.say(&format!(
        "halyard-operator (local mode) reads {} and serves discovery at {}, /debug/* at {}",
        mesh.config_dir.display(),
        t.discovery_url(),
        t.monitoring_url()
    ));
    for w in &mesh::WORKLOADS {
        let addr = t.app_addr(w);
        let name = format!("app-{}", w.name());
        let driver = &mesh.driver;
        mesh.supervisor
            .wait_ready(&name, READY_TIMEOUT, || async {
                driver.text(addr, "/health").await.map(|_| ())
            })
            .await?;
    }
    out.say("sample services: productpage v1, details v1, reviews v1/v2/v3, ratings v1");
    let proxies_started = Instant::now();

    // The proxies connect to the control plane and get their first config from it; a proxy is ready once
    // that config is applied, and in sync once the control plane has its ACK of every type.
    for p in &mesh.proxies {
        mesh.supervisor.spawn(&p.name, &p.args)?;
    }
    for p in &mesh.proxies {
        let ready = p.ready;
        let driver = &mesh.driver;
        mesh.supervisor
            .wait_ready(&p.name, READY_TIMEOUT, || async {
                driver.text(ready, "/healthz/ready").await.map(|_| ())
            })
            .await?;
    }
    let synced = mesh.wait_synced(proxies_started).await?;
    mesh.refuse_rejected().await?;
    out.say(&format!(
        "all {} proxies connected to halyard-operator and SYNCED at config version {} ({} ms after they started); mesh up in {} ms",
        mesh.proxies.len(),
        synced.version,
        synced.acked_after.as_millis(),
        started.elapsed().as_millis()
    ));
    if !tour {
        return Ok(Vec::new());
    }
    let tour_started = Instant::now();
    let results = tour::run(mesh, out, routing_only).await?;
    out.say(&format!(
        "\ntour finished in {:.1} s",
        tour_started.elapsed().as_secs_f64()
    ));
    Ok(results)
}

/// The command line of one sample service: it listens on its "pod localhost" and calls its dependencies
/// through its sidecar's outbound listener.
fn app_args(t: &Topology, w: &Workload) -> Vec<String> {
    let mut args = vec![
        "demo-app".to_string(),
        "--exit-with-parent".into(),
        "--service".into(),
        w.role.name().into(),
        "--version".into(),
        w.version.into(),
        "--listen".into(),
        t.app_addr(w).to_string(),
    ];
    for dep in w.role.dependencies(w.version) {
        args.push("--dep".into());
        args.push(format!("{dep}={}", t.outbound_addr(w)));
    }
    args
}

/// One object the control plane skipped (an entry of `/debug/configz`'s `rejected`): where, what, why.
fn describe_rejected(r: &Value) -> String {
    let field = |k: &str| r[k].as_str().unwrap_or_default();
    if field("kind").is_empty() {
        // Not even an object (unparsable YAML): only the document's place is known.
        format!("{}: {}", field("origin"), field("reason"))
    } else {
        format!(
            "{}: {} {}/{}: {}",
            field("origin"),
            field("kind"),
            field("namespace"),
            field("name"),
            field("reason")
        )
    }
}

/// The control plane's name among the demo's children (and its log file's).
const OPERATOR: &str = "operator";

/// The command line of the control plane: `halyard-operator` in local mode on the topology's addresses.
fn operator_args(t: &Topology, config_dir: &std::path::Path) -> Vec<String> {
    vec![
        "demo-operator".into(),
        "--exit-with-parent".into(),
        "--config-dir".into(),
        config_dir.display().to_string(),
        "--grpc-addr".into(),
        t.discovery_addr().to_string(),
        "--monitoring-addr".into(),
        t.monitoring_addr().to_string(),
        "--control-plane-id".into(),
        CONTROL_PLANE_ID.into(),
        "--log-level".into(),
        "info".into(),
    ]
}

/// Every proxy of the demo: the workloads' sidecars, then the client's proxy.
fn proxy_procs(t: &Topology) -> Vec<ProxyProc> {
    let mut procs: Vec<ProxyProc> = mesh::WORKLOADS
        .iter()
        .map(|w| ProxyProc {
            name: format!("proxy-{}", w.name()),
            id: w.proxy_id(),
            args: proxy_args(t, Some(w)),
            ready: t.proxy_port(w, mesh::READY_PORT),
        })
        .collect();
    procs.push(ProxyProc {
        name: format!("proxy-{}", mesh::CLIENT_NAME),
        id: client_proxy_id(),
        args: proxy_args(t, None),
        ready: t.client_port(mesh::READY_PORT),
    });
    procs
}

fn client_proxy_id() -> String {
    format!("{}.{}", mesh::CLIENT_NAME, mesh::NAMESPACE)
}

/// The command line of one proxy: a workload's sidecar, or (`None`) the client's proxy, which has no
/// application and no egress bind address, so that its outbound listeners are the service VIPs.
fn proxy_args(t: &Topology, w: Option<&Workload>) -> Vec<String> {
    let (id, labels, workload, account, ip, admin, status, prometheus) = match w {
        Some(w) => (
            w.proxy_id(),
            format!("app={},version={}", w.role.name(), w.version),
            w.name(),
            w.service_account(),
            t.pod_ip(w).to_string(),
            t.proxy_port(w, mesh::ADMIN_PORT),
            t.proxy_port(w, mesh::READY_PORT),
            t.proxy_port(w, mesh::PROMETHEUS_PORT),
        ),
        None => (
            client_proxy_id(),
            format!("app={}", mesh::CLIENT_NAME),
            mesh::CLIENT_NAME.to_string(),
            mesh::CLIENT_NAME.to_string(),
            t.client_ip().to_string(),
            t.client_port(mesh::ADMIN_PORT),
            t.client_port(mesh::READY_PORT),
            t.client_port(mesh::PROMETHEUS_PORT),
        ),
    };
    let mut args: Vec<String> = vec![
        "demo-proxy".into(),
        "--exit-with-parent".into(),
        "--discovery-address".into(),
        t.discovery_url(),
        // Seven proxies share the machine; one worker each is plenty for the demo's load.
        "--concurrency".into(),
        "1".into(),
        "--node-id".into(),
        id,
        "--namespace".into(),
        mesh::NAMESPACE.into(),
        "--labels".into(),
        labels,
        "--workload".into(),
        workload,
        "--service-account".into(),
        account,
        "--ip".into(),
        ip,
        "--interception".into(),
        "none".into(),
        "--admin-address".into(),
        admin.to_string(),
        "--status-address".into(),
        status.to_string(),
        "--prometheus-address".into(),
        prometheus.to_string(),
        // The demo stops its proxies itself; there is nothing to drain.
        "--drain-duration".into(),
        "0s".into(),
    ];
    if let Some(w) = w {
        args.extend([
            "--local-bind-address".into(),
            t.egress_ip(w).to_string(),
            "--app-address".into(),
            t.app_addr(w).ip().to_string(),
            "--workload-port".into(),
            format!("{}:HTTP:http", app::SERVICE_PORT),
        ]);
    }
    args
}

/// `--keep-running`: the control plane follows the config directory by itself; report each new config version
/// once every proxy has ACKed it (or refused it), until Ctrl-C or SIGTERM.
async fn watch_config(mesh: &mut Mesh, interrupts: &mut Interrupts) -> &'static str {
    let base = mesh.topology.monitoring_url();
    let expected = mesh.proxy_ids();
    let mut unreachable = false;
    let mut exited_reported = 0;
    // The version being waited for, and since when (to say so once if it never converges).
    let mut pending: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            sig = interrupts.recv() => return sig,
            () = tokio::time::sleep(WATCH_POLL) => {}
        }
        let exited = mesh.supervisor.exited();
        if exited.len() > exited_reported {
            println!("mesh processes exited: {}", exited.join(", "));
            exited_reported = exited.len();
        }
        let report = match read_syncz(&base).await {
            Ok(r) => {
                unreachable = false;
                r
            }
            Err(e) => {
                if !unreachable {
                    println!("cannot read the control plane's sync status: {e:#}");
                    unreachable = true;
                }
                continue;
            }
        };
        if report.config_version <= mesh.version {
            continue;
        }
        match sync::assess(&report, &expected, mesh.version) {
            SyncView::Synced(version) => {
                mesh.version = version;
                pending = None;
                println!(
                    "config directory changed: all {} proxies ACKed config version {version}",
                    expected.len()
                );
                match mesh.rejected().await {
                    Ok(rejected) => {
                        for r in rejected {
                            println!("    skipped as invalid: {r}");
                        }
                    }
                    Err(e) => println!("    (cannot read the skipped objects: {e:#})"),
                }
            }
            SyncView::Refused(why) => {
                mesh.version = report.config_version;
                pending = None;
                println!("config directory changed but was not applied: {why}");
            }
            SyncView::Waiting(why) => match pending {
                Some((v, since)) if v == report.config_version => {
                    if since.elapsed() > SYNC_TIMEOUT {
                        println!(
                            "config version {v} has not reached every proxy after {SYNC_TIMEOUT:?}: {why}"
                        );
                        // Said once; the next change is reported afresh.
                        mesh.version = v;
                        pending = None;
                    }
                }
                _ => pending = Some((report.config_version, Instant::now())),
            },
        }
    }
}

/// How often `--keep-running` looks at the control plane's sync status.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// The control plane's `/debug/syncz`, or why not (bounded: a hung control plane must not hang the demo).
async fn read_syncz(base: &str) -> anyhow::Result<halyard_operator::discovery::status::SyncReport> {
    tokio::time::timeout(
        DEBUG_TIMEOUT,
        halyard_operator::debug::client::sync_report(base),
    )
    .await
    .map_err(|_| anyhow!("{base}/debug/syncz: no answer within {DEBUG_TIMEOUT:?}"))?
    .map_err(anyhow::Error::from)
}

/// Print the verdict of every step; true when all passed.
fn summarize(results: &[StepResult]) -> bool {
    if results.is_empty() {
        return true;
    }
    println!("\n== Summary");
    for r in results {
        println!("[{}] {}", if r.passed() { "PASS" } else { "FAIL" }, r.title);
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    if failed == 0 {
        println!("all {} steps passed", results.len());
    } else {
        println!("{failed} of {} steps failed", results.len());
        for r in results.iter().filter(|r| !r.passed()) {
            for c in r.checks.iter().filter(|c| !c.ok) {
                print_check(c, Some(&r.title));
            }
        }
    }
    failed == 0
}

/// `--keep-running`: where everything is and what to try.
fn print_access(mesh: &Mesh, root: &std::path::Path) {
    let t = mesh.topology;
    println!("\n== The mesh is running (Ctrl-C stops it)");
    println!("services (through the client's proxy):");
    for s in mesh::SERVICES {
        println!(
            "    {:<12} http://{}/ (Host {})",
            s.name(),
            t.service_addr(s),
            mesh::service_host(s)
        );
    }
    println!("try:");
    println!(
        "    curl -s http://{}/productpage",
        t.service_addr(Role::Productpage)
    );
    println!(
        "    curl -s -H 'end-user: jason' http://{}/productpage",
        t.service_addr(Role::Productpage)
    );
    println!(
        "control plane: halyard-operator in local mode, discovery {}, debug {}",
        t.discovery_url(),
        t.monitoring_url()
    );
    println!(
        "edit the config it reads (VirtualServices, DestinationRules, ServiceEntries, WorkloadEntries; every proxy runs it within a second):"
    );
    println!("    {}", mesh.config_dir.join("routing.yaml").display());
    println!("    {}", mesh.config_dir.join("services.yaml").display());
    println!("inspect:");
    let pp = Mesh::workload(Role::Productpage, "v1");
    println!(
        "    halyard proxy-status --control-plane {}",
        t.monitoring_url()
    );
    println!(
        "    halyard proxy-config routes {}",
        t.proxy_port(&pp, mesh::ADMIN_PORT)
    );
    println!(
        "    halyard proxy-config clusters {}",
        t.proxy_port(&pp, mesh::ADMIN_PORT)
    );
    println!(
        "    curl -s '{}/debug/config_dump?proxyID={}'",
        t.monitoring_url(),
        pp.proxy_id()
    );
    println!(
        "    curl -s http://{}/stats/prometheus | grep istio_requests_total",
        t.proxy_port(&pp, mesh::PROMETHEUS_PORT)
    );
    println!("proxies (inbound / admin / metrics):");
    for w in &mesh::WORKLOADS {
        println!(
            "    {:<22} {}  http://{}  http://{}",
            w.proxy_id(),
            t.inbound_addr(w),
            t.proxy_port(w, mesh::ADMIN_PORT),
            t.proxy_port(w, mesh::PROMETHEUS_PORT)
        );
    }
    println!(
        "    {:<22} {:<17} http://{}  http://{}",
        client_proxy_id(),
        "-",
        t.client_port(mesh::ADMIN_PORT),
        t.client_port(mesh::PROMETHEUS_PORT)
    );
    println!("logs: {}", root.join("logs").display());
}

/// Run a sample service (hidden; started by `halyard demo`).
pub fn run_app(args: app::AppArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(app::run(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Run one proxy (hidden; started by `halyard demo`).
pub fn run_proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    if !args.exit_with_parent {
        halyard_proxy::cli::main_with(args.proxy)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.proxy.concurrency.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::select! {
            r = halyard_proxy::cli::run(args.proxy) => r.map_err(anyhow::Error::from),
            () = supervisor::parent_gone() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Run the control plane (hidden; started by `halyard demo`) until SIGTERM, Ctrl-C or, with
/// `--exit-with-parent`, until the demo that started it is gone.
pub fn run_operator(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    halyard_operator::run::init_logging(&args.operator)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let exit_with_parent = args.exit_with_parent;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term =
            signal(SignalKind::terminate()).context("registering the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("registering the SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                () = supervisor::parent_gone(), if exit_with_parent => {}
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        halyard_operator::run::run_until(args.operator, shutdown)
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The hidden subcommands as `main.rs` registers them.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Hidden,
    }

    #[derive(clap::Subcommand)]
    enum Hidden {
        #[command(name = "demo-proxy")]
        Proxy(Box<ProxyArgs>),
        #[command(name = "demo-app")]
        App(Box<app::AppArgs>),
        #[command(name = "demo-operator")]
        Operator(Box<OperatorArgs>),
    }

    fn parse(args: Vec<String>) -> Hidden {
        let argv = std::iter::once("halyard".to_string()).chain(args);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_command_lines_the_demo_starts_are_accepted() {
        let t = Topology { octet: 10 };
        let w = mesh::WORKLOADS[3];
        let Hidden::Proxy(p) = parse(proxy_args(&t, Some(&w))) else {
            panic!("not a proxy")
        };
        assert_eq!(p.proxy.node_id, "reviews-v2.default");
        assert_eq!(p.proxy.ips, vec!["127.10.1.4".to_string()]);
        assert_eq!(p.proxy.local_bind_address, "127.10.3.4");
        assert_eq!(p.proxy.app_address, "127.10.2.4");
        assert_eq!(p.proxy.prometheus_address.to_string(), "127.10.1.4:15090");
        assert_eq!(p.proxy.discovery_address, vec!["http://127.10.4.1:15010"]);
        assert!(
            p.proxy.config.is_none(),
            "config comes from the control plane"
        );
        let node = p.proxy.discovery_node().unwrap();
        assert_eq!(node.labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(node.workload_ports[0].port, 9080);

        let Hidden::Proxy(c) = parse(proxy_args(&t, None)) else {
            panic!("not a proxy")
        };
        assert_eq!(c.proxy.node_id, "demo-client.default");
        assert!(c.proxy.local_bind_address.is_empty());

        let Hidden::App(a) = parse(app_args(&t, &w)) else {
            panic!("not an app")
        };
        assert_eq!(a.listen.to_string(), "127.10.2.4:9080");
        assert_eq!(
            a.deps,
            vec![("ratings".to_string(), "127.10.3.4:9080".parse().unwrap())]
        );

        let dir = std::path::Path::new("/tmp/halyard-demo-x/config");
        let Hidden::Operator(o) = parse(operator_args(&t, dir)) else {
            panic!("not the operator")
        };
        assert!(o.exit_with_parent);
        assert_eq!(o.operator.config_dir.as_deref(), Some(dir));
        assert_eq!(o.operator.grpc_addr, t.discovery_addr());
        assert_eq!(o.operator.monitoring_addr, t.monitoring_addr());
        assert_eq!(
            o.operator.control_plane_id.as_deref(),
            Some(CONTROL_PLANE_ID)
        );
    }

    #[test]
    fn skipped_objects_say_where_what_and_why() {
        let vs = serde_json::json!({"origin": "bad.yaml#0", "kind": "VirtualService", "namespace": "default",
            "name": "broken", "reason": "spec.http[0].route[0].weight: weight -20 < 0"});
        assert_eq!(
            describe_rejected(&vs),
            "bad.yaml#0: VirtualService default/broken: spec.http[0].route[0].weight: weight -20 < 0"
        );
        let unparsed = serde_json::json!({"origin": "worse.yaml#0", "kind": "", "namespace": "",
            "name": "", "reason": "invalid YAML"});
        assert_eq!(describe_rejected(&unparsed), "worse.yaml#0: invalid YAML");
    }

    #[test]
    fn every_proxy_has_its_own_id_and_readiness_address() {
        let procs = proxy_procs(&Topology { octet: 10 });
        assert_eq!(procs.len(), mesh::WORKLOADS.len() + 1);
        let mut ids: Vec<&str> = procs.iter().map(|p| p.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), procs.len());
        let mut ready: Vec<SocketAddr> = procs.iter().map(|p| p.ready).collect();
        ready.sort();
        ready.dedup();
        assert_eq!(ready.len(), procs.len());
    }
}
