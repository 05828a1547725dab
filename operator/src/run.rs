//! The `halyard-operator` command line: flags (with environment fallbacks) and the process wiring, in the
//! library so that other binaries (`halyard demo`) can run the same control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::debug::{self, DebugState};
use crate::discovery::{DebounceSettings, DiscoveryServer, DiscoverySettings, StreamSettings};
use crate::error::Error;
use crate::install::InstallArgs;
use crate::metrics::Metrics;
use crate::registry::kube::KubeRegistry;
use crate::registry::local::LocalRegistry;

/// The halyard control plane: service registry, discovery server, debug endpoints.
#[derive(Debug, Clone, Parser)]
#[command(name = "halyard-operator", version)]
pub struct Args {
    /// Local mode: take config and services from this directory of YAML instead of Kubernetes.
    #[arg(long, env = "HALYARD_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// How often local mode looks for changed files.
    #[arg(long, env = "HALYARD_CONFIG_POLL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub config_poll: Duration,
    /// Kubernetes mode: kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: kubeconfig context (default: the current one).
    #[arg(long, env = "HALYARD_KUBE_CONTEXT")]
    pub kube_context: Option<String>,
    /// Plaintext discovery (gRPC) listen address.
    #[arg(long, env = "HALYARD_GRPC_ADDR", default_value = "0.0.0.0:15010")]
    pub grpc_addr: SocketAddr,
    /// Monitoring and debug listen address (`/metrics`, `/ready`, `/debug/*`).
    #[arg(long, env = "HALYARD_MONITORING_ADDR", default_value = "0.0.0.0:15014")]
    pub monitoring_addr: SocketAddr,
    /// Quiet period before a config change is pushed (Istio's PILOT_DEBOUNCE_AFTER).
    #[arg(long, env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub debounce_after: Duration,
    /// Longest a change waits for the quiet period (Istio's PILOT_DEBOUNCE_MAX).
    #[arg(long, env = "PILOT_DEBOUNCE_MAX", default_value = "10s", value_parser = humantime::parse_duration)]
    pub debounce_max: Duration,
    /// Streams are closed after this long (± jitter) so that proxies spread over new replicas; 0 disables.
    #[arg(long, env = "HALYARD_MAX_CONNECTION_AGE", default_value = "30m", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,
    /// Fraction of the maximum connection age applied as random jitter.
    #[arg(long, env = "HALYARD_MAX_CONNECTION_AGE_JITTER", default_value_t = 0.1)]
    pub max_connection_age_jitter: f64,
    /// Streams pushing at the same time (Istio's PILOT_PUSH_THROTTLE).
    #[arg(long, env = "PILOT_PUSH_THROTTLE", default_value_t = 100)]
    pub push_throttle: usize,
    /// This instance's name in proxy-status (ISTIOD column); defaults to $POD_NAME, then the host name.
    #[arg(long, env = "POD_NAME")]
    pub control_plane_id: Option<String>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "HALYARD_LOG_JSON")]
    pub log_json: bool,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
    /// The MeshInstall controller (Kubernetes mode only).
    #[command(flatten)]
    pub install: InstallArgs,
}

impl Args {
    pub fn discovery_settings(&self) -> DiscoverySettings {
        DiscoverySettings {
            stream: StreamSettings {
                control_plane_id: self.control_plane_id.clone().unwrap_or_else(host_name),
                max_connection_age: (!self.max_connection_age.is_zero())
                    .then_some(self.max_connection_age),
                max_connection_age_jitter: self.max_connection_age_jitter,
                push_concurrency: self.push_throttle,
            },
            debounce: DebounceSettings {
                quiet: self.debounce_after,
                max_delay: self.debounce_max,
            },
        }
    }
}

/// Installs the global tracing subscriber (human or JSON). Errors if one is already installed.
pub fn init_logging(args: &Args) -> Result<(), Error> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| Error::Logging(format!("invalid log filter {:?}: {e}", args.log_level)))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if args.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| Error::Logging(e.to_string()))
}

/// Runs the control plane until SIGINT/SIGTERM.
pub async fn run(args: Args) -> Result<(), Error> {
    run_until(args, shutdown_signal()).await
}

/// Runs the control plane until `shutdown` completes. Not ready, and not serving discovery, until the
/// registry's initial sync is complete.
pub async fn run_until(
    args: Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let install_stop = stop_rx.clone();
    let mut snapshots = match &args.config_dir {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "local mode: watching a config directory");
            LocalRegistry::new(dir.clone(), args.config_poll).spawn()
        }
        None => {
            let client = kube_client(&args).await?;
            tracing::info!("kubernetes mode: watching the API server");
            if args.install.enabled {
                // The controller reports this replica's connected proxies in the MeshInstall status.
                let counted = metrics.clone();
                let counter: crate::install::ProxyCounter = Arc::new(move || {
                    u32::try_from(counted.connected_proxies().max(0)).unwrap_or(u32::MAX)
                });
                let install_args = args.install.clone();
                let install_client = client.clone();
                let stop = install_stop.clone();
                tokio::spawn(async move {
                    crate::install::run(
                        install_client,
                        &install_args,
                        Some(counter),
                        stopped(stop),
                    )
                    .await;
                });
            }
            KubeRegistry::new(client).spawn()
        }
    };
    let discovery = DiscoveryServer::start(
        args.discovery_settings(),
        snapshots.clone(),
        metrics.clone(),
    );

    let (ready_tx, ready_rx) = watch::channel(false);
    let monitoring = bind("monitoring", args.monitoring_addr).await?;
    let debug_state = DebugState {
        discovery: discovery.clone(),
        snapshots: snapshots.clone(),
        metrics,
        ready: ready_rx,
    };
    let debug_task = tokio::spawn(debug::serve(
        monitoring,
        debug_state,
        stopped(stop_rx.clone()),
    ));

    let mut shutdown = Box::pin(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::select! {
        synced = initial_sync(&mut snapshots) => {
            if !synced {
                return Err(Error::RegistryStopped);
            }
        }
        _ = &mut shutdown => return Ok(()),
    }
    tracing::info!("initial registry sync complete");
    let grpc = bind("discovery", args.grpc_addr).await?;
    ready_tx.send_replace(true);
    discovery.serve(grpc, shutdown).await?;
    match debug_task.await {
        Ok(result) => result,
        Err(join) => Err(Error::Serve {
            what: "debug/monitoring",
            address: args.monitoring_addr.to_string(),
            source: Box::new(join),
        }),
    }
}

/// True once the registry published its first snapshot; false if it stopped first.
async fn initial_sync(snapshots: &mut crate::registry::Snapshots) -> bool {
    snapshots.wait_for(Option::is_some).await.is_ok()
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Bind {
            what,
            address: address.to_string(),
            source,
        })
}

async fn kube_client(args: &Args) -> Result<kube::Client, Error> {
    let options = kube::config::KubeConfigOptions {
        context: args.kube_context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                Error::KubeConfig(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| {
                    Error::KubeConfig(format!("invalid kubeconfig {}: {e}", path.display()))
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::KubeConfig(format!("no kubeconfig or in-cluster config: {e}")))?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "halyard-operator".to_string())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
