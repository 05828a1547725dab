//! `halyard demo`: the Bookinfo mesh on this machine (control plane, one proxy per workload, sample services,
//! all on loopback) and a scripted tour of traffic management, every step checked from observed traffic.
//!
//! The pieces run as child processes of this same executable through hidden subcommands (`demo-app`,
//! `demo-proxy`), so `cargo run --bin halyard -- demo` needs no other binary.
//!
//! Config distribution: the demo reads its config directory (`services.yaml`, `routing.yaml`), translates it
//! for each proxy with the same pure translator the operator uses (`halyard_config::translate`), writes each
//! proxy's resources to its static config file and reloads it (SIGHUP), then waits until every proxy's admin
//! `/server_info` reports the new config version. (The operator's discovery server would replace the files
//! and SIGHUP; its library entry point and the proxy's discovery client were not available in this build.)

pub mod app;
pub mod distribute;
pub mod load;
pub mod mesh;
pub mod observe;
pub mod steps;
pub mod supervisor;
pub mod tour;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::Value;

use app::Role;
use mesh::{Topology, Workload};
use observe::Check;
use steps::{Routing, StepResult};
use supervisor::Supervisor;

/// How long a freshly started piece may take to become ready, and a config change to reach every proxy.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

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

impl ProxyArgs {
    /// Parse a `demo-proxy ...` command line as `halyard` would.
    fn try_parse_from_demo(args: &[String]) -> anyhow::Result<ProxyArgs> {
        #[derive(clap::Parser)]
        struct Probe {
            #[command(subcommand)]
            command: ProbeCommand,
        }
        #[derive(clap::Subcommand)]
        enum ProbeCommand {
            #[command(name = "demo-proxy")]
            Proxy(Box<ProxyArgs>),
        }
        let argv = std::iter::once("halyard".to_string()).chain(args.iter().cloned());
        let probe = <Probe as clap::Parser>::try_parse_from(argv)
            .map_err(|e| anyhow!("demo-proxy command line {args:?}: {e}"))?;
        let ProbeCommand::Proxy(p) = probe.command;
        Ok(*p)
    }
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

/// One proxy of the demo: its command line, the node identity the translator computes its config for (parsed
/// from that same command line), its static config file and its admin address.
struct ProxyProc {
    name: String,
    args: Vec<String>,
    node: halyard_config::discovery::Node,
    config: PathBuf,
    admin: SocketAddr,
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
    /// Number of the config last pushed to every proxy (`demo-<n>`).
    version: u64,
    /// Whether the proxies run (then a push reloads them).
    started: bool,
    /// The config directory's content at the last push, to notice a user's edits (`--keep-running`).
    pushed: String,
}

impl Mesh {
    fn write_routing(&self) -> anyhow::Result<()> {
        let yaml =
            mesh::to_yaml(&self.routing.documents()).context("rendering the routing YAML")?;
        steps::write_atomically(&self.config_dir.join("routing.yaml"), &yaml)
    }

    /// Apply `docs` on top of the routing in force, print them, and wait until every proxy runs the result.
    pub async fn apply(&mut self, docs: Vec<Value>, out: &Printer) -> anyhow::Result<()> {
        out.say(&format!(
            "applying to {}:",
            self.config_dir.join("routing.yaml").display()
        ));
        out.yaml(&docs);
        self.routing.set(docs);
        self.write_routing()?;
        let started = Instant::now();
        let version = self.push().await?;
        out.say(&format!(
            "all {} proxies run config {version} ({} ms after the change)",
            self.proxies.len(),
            started.elapsed().as_millis()
        ));
        Ok(())
    }

    /// The config directory's YAML files, concatenated in name order.
    fn read_config_dir(&self) -> anyhow::Result<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.config_dir)
            .with_context(|| format!("reading {}", self.config_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut all = String::new();
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            all.push_str(&format!("# {}\n---\n{text}\n---\n", f.display()));
        }
        Ok(all)
    }

    /// Translate the config directory for every proxy, write each proxy's config file, reload the running
    /// proxies, and wait until each reports the new version.
    async fn push(&mut self) -> anyhow::Result<String> {
        let text = self.read_config_dir()?;
        let docs = distribute::documents(&self.config_dir.display().to_string(), &text)
            .map_err(|e| anyhow!(e))?;
        let input = distribute::mesh_input(&docs).map_err(|e| anyhow!(e))?;
        let model = halyard_config::mesh::MeshModel::build(&input);
        let version = format!("demo-{}", self.version + 1);
        for p in &self.proxies {
            let res =
                distribute::resources_for(&model, &p.node, &version).map_err(|e| anyhow!(e))?;
            let json = halyard_config::static_config::to_json(&res);
            steps::write_atomically(&p.config, &json)?;
        }
        self.version += 1;
        self.pushed = text;
        if self.started {
            for p in &self.proxies {
                self.supervisor
                    .signal(&p.name, nix::sys::signal::Signal::SIGHUP)?;
            }
            self.wait_versions(&version).await?;
        }
        Ok(version)
    }

    /// Wait until every proxy's admin `/server_info` reports config `version`.
    async fn wait_versions(&mut self, version: &str) -> anyhow::Result<()> {
        for p in &self.proxies {
            let admin = p.admin;
            let driver = &self.driver;
            steps::poll(SYNC_TIMEOUT, || async {
                let text = driver.text(admin, "/server_info").await?;
                let info: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{} /server_info is not JSON: {e}", p.name))?;
                match info["config_version"].as_str() {
                    Some(v) if v == version => Ok(()),
                    other => Err(format!(
                        "{} runs config {} (waiting for {version}; last rejection: {})",
                        p.name,
                        other.unwrap_or("none"),
                        info["last_rejection"]
                    )),
                }
            })
            .await?;
        }
        let exited = self.supervisor.exited();
        if !exited.is_empty() {
            anyhow::bail!("mesh processes exited: {}", exited.join(", "));
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
    let proxies = proxy_procs(&topology, &root.join("proxies"))?;
    let mut mesh = Mesh {
        topology,
        driver: load::Driver::default(),
        supervisor,
        config_dir,
        routing: Routing::initial(),
        proxies,
        version: 0,
        started: false,
        pushed: String::new(),
    };
    let keep_running = args.keep_running || args.no_tour;

    let outcome = tokio::select! {
        r = start_and_tour(&mut mesh, &out, !args.no_tour, args.routing_only) => r,
        sig = interrupts.recv() => Err(anyhow!("interrupted by {sig}")),
    };
    let passed = match &outcome {
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
            mesh.write_routing()?;
            mesh.push().await
        };
        match reset.await {
            Ok(_) => {
                print_access(&mesh, &root);
                let sig = watch_config(&mut mesh, &mut interrupts).await;
                println!("\n{sig}: stopping the mesh");
            }
            Err(e) => println!("could not reset the routing for --keep-running: {e:#}"),
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

    for w in &mesh::WORKLOADS {
        let args = app_args(&t, w);
        let name = format!("app-{}", w.name());
        mesh.supervisor.spawn(&name, &args)?;
    }
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

    // Every proxy's first config is on disk before it starts; it is ready once that config is applied.
    let version = mesh.push().await?;
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
    mesh.wait_versions(&version).await?;
    mesh.started = true;
    out.say(&format!(
        "{} proxies run config {version}; mesh up in {} ms",
        mesh.proxies.len(),
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

/// Every proxy of the demo (the workloads' sidecars, then the client's proxy) with its config file in `dir`.
fn proxy_procs(t: &Topology, dir: &std::path::Path) -> anyhow::Result<Vec<ProxyProc>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut specs: Vec<(String, Option<&Workload>, SocketAddr, SocketAddr)> = mesh::WORKLOADS
        .iter()
        .map(|w| {
            (
                w.name(),
                Some(w),
                t.proxy_port(w, mesh::ADMIN_PORT),
                t.proxy_port(w, mesh::READY_PORT),
            )
        })
        .collect();
    specs.push((
        mesh::CLIENT_NAME.to_string(),
        None,
        t.client_port(mesh::ADMIN_PORT),
        t.client_port(mesh::READY_PORT),
    ));
    specs
        .into_iter()
        .map(|(name, w, admin, ready)| {
            let config = dir.join(format!("{name}.json"));
            let args = proxy_args(t, w, &config);
            // The node the translator sees is the one the proxy builds from its own flags.
            let flags = ProxyArgs::try_parse_from_demo(&args)?;
            let node = flags
                .proxy
                .discovery_node()
                .map_err(|e| anyhow!("proxy {name}: {e}"))?;
            Ok(ProxyProc {
                name: format!("proxy-{name}"),
                args,
                node,
                config,
                admin,
                ready,
            })
        })
        .collect()
}

/// The command line of one proxy: a workload's sidecar, or (`None`) the client's proxy, which has no
/// application and no egress bind address, so that its outbound listeners are the service VIPs.
fn proxy_args(t: &Topology, w: Option<&Workload>, config: &std::path::Path) -> Vec<String> {
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
            format!("{}.{}", mesh::CLIENT_NAME, mesh::NAMESPACE),
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
        "--config".into(),
        config.display().to_string(),
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

/// `--keep-running`: re-push whenever a file of the config directory changes, until Ctrl-C or SIGTERM.
async fn watch_config(mesh: &mut Mesh, interrupts: &mut Interrupts) -> &'static str {
    loop {
        tokio::select! {
            sig = interrupts.recv() => return sig,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let Ok(text) = mesh.read_config_dir() else {
            continue;
        };
        if text == mesh.pushed {
            continue;
        }
        match mesh.push().await {
            Ok(v) => println!("config directory changed: every proxy runs config {v}"),
            Err(e) => {
                // Keep serving the last good config, as a control plane would.
                mesh.pushed = text;
                println!("config directory changed but was not applied: {e:#}");
            }
        }
    }
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
        "edit the config (VirtualServices, DestinationRules, ServiceEntries; applied within a second):"
    );
    println!("    {}", mesh.config_dir.join("routing.yaml").display());
    println!("    {}", mesh.config_dir.join("services.yaml").display());
    println!("inspect:");
    let pp = Mesh::workload(Role::Productpage, "v1");
    println!(
        "    halyard proxy-config routes {}",
        t.proxy_port(&pp, mesh::ADMIN_PORT)
    );
    println!(
        "    halyard proxy-config clusters {}",
        t.proxy_port(&pp, mesh::ADMIN_PORT)
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
        format!("{}.{}", mesh::CLIENT_NAME, mesh::NAMESPACE),
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
        let Hidden::Proxy(p) = parse(proxy_args(
            &t,
            Some(&w),
            std::path::Path::new("/tmp/r.json"),
        )) else {
            panic!("not a proxy")
        };
        assert_eq!(p.proxy.node_id, "reviews-v2.default");
        assert_eq!(p.proxy.ips, vec!["127.10.1.4".to_string()]);
        assert_eq!(p.proxy.local_bind_address, "127.10.3.4");
        assert_eq!(p.proxy.app_address, "127.10.2.4");
        assert_eq!(p.proxy.prometheus_address.to_string(), "127.10.1.4:15090");
        let Hidden::Proxy(c) = parse(proxy_args(&t, None, std::path::Path::new("/tmp/c.json")))
        else {
            panic!("not a proxy")
        };
        assert_eq!(c.proxy.node_id, "demo-client.default");
        assert!(c.proxy.local_bind_address.is_empty());
        assert_eq!(
            c.proxy.config.as_deref(),
            Some(std::path::Path::new("/tmp/c.json"))
        );

        let Hidden::App(a) = parse(app_args(&t, &w)) else {
            panic!("not an app")
        };
        assert_eq!(a.listen.to_string(), "127.10.2.4:9080");
        assert_eq!(
            a.deps,
            vec![("ratings".to_string(), "127.10.3.4:9080".parse().unwrap())]
        );
    }
}
