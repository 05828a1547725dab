//! `halyard`: what istioctl is to Istio. Each subcommand lives in its own module under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "halyard",
    version,
    about = "A Rust service mesh that speaks Istio's configuration API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the client version.
    Version,
    /// Install the operator and a MeshInstall on the current cluster, and wait until it is reconciled.
    Install(cmd::install::InstallArgs),
    /// Delete MeshInstalls (the operator uninstalls them), then the operator.
    Uninstall(cmd::install::UninstallArgs),
    /// Validate Istio configuration files (as the admission webhook would) without a cluster.
    Validate(cmd::validate::ValidateArgs),
    /// Add the sidecar to Pods and workload pod templates in a manifest, as the webhook would.
    KubeInject(cmd::kube_inject::KubeInjectArgs),
    /// Show a proxy's listeners, routes, clusters or endpoints (from its admin endpoint).
    ProxyConfig(cmd::proxy_config::ProxyConfigArgs),
    /// Show every proxy connected to the control plane and whether it has ACKed each config type.
    ProxyStatus(cmd::proxy_status::ProxyStatusArgs),
    /// Run the Bookinfo mesh on this machine (no cluster) and tour routing, canaries, faults, retries,
    /// timeouts and circuit breaking, checking each from the traffic observed.
    Demo(cmd::demo::DemoArgs),
    /// Internal to `halyard demo`: run one proxy.
    #[command(hide = true)]
    DemoProxy(Box<cmd::demo::ProxyArgs>),
    /// Internal to `halyard demo`: run one Bookinfo sample service.
    #[command(hide = true)]
    DemoApp(cmd::demo::app::AppArgs),
    /// Internal to `halyard demo`: run the control plane (halyard-operator in local mode).
    #[command(hide = true)]
    DemoOperator(Box<cmd::demo::OperatorArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => cmd::version::run(),
        Command::Install(args) => cmd::install::run_install(args),
        Command::Uninstall(args) => cmd::install::run_uninstall(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::KubeInject(args) => cmd::kube_inject::run(args),
        Command::ProxyConfig(args) => cmd::proxy_config::run(args),
        Command::ProxyStatus(args) => cmd::proxy_status::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::DemoProxy(args) => cmd::demo::run_proxy(*args),
        Command::DemoApp(args) => cmd::demo::run_app(args),
        Command::DemoOperator(args) => cmd::demo::run_operator(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
