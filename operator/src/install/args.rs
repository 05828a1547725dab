//! Flags of the MeshInstall controller, to be flattened into `halyard-operator`'s arguments, and the one call
//! that starts it ([`run`]).

use std::future::Future;
use std::path::PathBuf;

use clap::Args;
use kube::Client;

use super::controller::{ControllerOptions, ProxyCounter};
use super::leader::{LeaseSettings, run_with_leader_election};
use super::render::RenderSettings;
use super::run_controller;

/// MeshInstall controller flags.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Run the MeshInstall controller (install, upgrade, uninstall of the mesh).
    #[arg(long = "install-controller", env = "HALYARD_INSTALL_CONTROLLER")]
    pub enabled: bool,
    /// Image registry of the components (`<hub>/halyard-webhook:<version>`).
    #[arg(long, env = "HALYARD_HUB", default_value = "ghcr.io/halyard-mesh")]
    pub hub: String,
    /// Discovery address given to proxies (`host:port`, Istio's form; gateways get `http://host:port`). The
    /// operator serves plaintext discovery on 15010.
    #[arg(
        long,
        env = "HALYARD_DISCOVERY_ADDRESS",
        default_value = "halyard-operator.halyard-system.svc:15010"
    )]
    pub discovery_address: String,
    /// Out-of-cluster mode: the webhook runs at this URL (e.g. `https://127.0.0.1:15017`) and is not deployed.
    #[arg(long, env = "HALYARD_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Out-of-cluster mode: write the webhook's serving certificate (`tls.crt`, `tls.key`, `ca.crt`) here.
    #[arg(long, env = "HALYARD_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Elect a leader with a Lease (in-cluster, several replicas); off: this process always reconciles.
    #[arg(long, env = "HALYARD_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "halyard-system")]
    pub lease_namespace: String,
    /// Identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME", default_value = "halyard-operator")]
    pub identity: String,
}

impl InstallArgs {
    /// Controller options from the flags.
    pub fn options(&self, connected_proxies: Option<ProxyCounter>) -> ControllerOptions {
        ControllerOptions {
            render: RenderSettings {
                hub: self.hub.clone(),
                discovery_address: self.discovery_address.clone(),
                webhook_url: self.webhook_url.clone(),
                ..RenderSettings::default()
            },
            connected_proxies,
            cert_dir: self.webhook_cert_dir.clone(),
            instance: self.identity.clone(),
            ..ControllerOptions::default()
        }
    }
}

/// Runs the MeshInstall controller as the flags say (nothing when `--install-controller` is off), until
/// `shutdown` completes.
pub async fn run(
    client: Client,
    args: &InstallArgs,
    connected_proxies: Option<ProxyCounter>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    if !args.enabled {
        return;
    }
    let opts = args.options(connected_proxies);
    if args.leader_elect {
        let lease = LeaseSettings::new(&args.lease_namespace, &args.identity);
        run_with_leader_election(client, lease, opts, shutdown).await;
    } else {
        run_controller(client, opts, shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        install: InstallArgs,
    }

    #[test]
    fn flags_parse_into_options() {
        let cli = Cli::parse_from([
            "x",
            "--install-controller",
            "--webhook-url",
            "https://127.0.0.1:15017",
            "--hub",
            "r.example",
        ]);
        assert!(cli.install.enabled);
        let o = cli.install.options(None);
        assert_eq!(
            o.render.webhook_url.as_deref(),
            Some("https://127.0.0.1:15017")
        );
        assert_eq!(o.render.hub, "r.example");
    }
}
