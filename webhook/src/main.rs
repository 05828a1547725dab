//! `halyard-webhook`: the HTTPS admission server (`/inject`, `/validate`, `/healthz`, `/readyz`, `/metrics`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use halyard_webhook::server::{self, AppState, ServerOptions};
use halyard_webhook::tls::ReloadingCertResolver;
use halyard_webhook::{InjectionTemplate, Injector, MeshConfig};

#[derive(Debug, Parser)]
#[command(
    name = "halyard-webhook",
    version,
    about = "Sidecar injection and Istio config validation admission server"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HALYARD_WEBHOOK_ADDR", default_value = "0.0.0.0")]
    addr: IpAddr,
    /// HTTPS port (the Service maps 443 to it).
    #[arg(long, env = "HALYARD_WEBHOOK_PORT", default_value_t = 15017)]
    port: u16,
    /// PEM certificate chain; reloaded when the file changes.
    #[arg(
        long,
        env = "HALYARD_WEBHOOK_TLS_CERT",
        default_value = "/etc/halyard/webhook-certs/tls.crt"
    )]
    tls_cert: PathBuf,
    /// PEM private key; reloaded when the file changes.
    #[arg(
        long,
        env = "HALYARD_WEBHOOK_TLS_KEY",
        default_value = "/etc/halyard/webhook-certs/tls.key"
    )]
    tls_key: PathBuf,
    /// Injection template written by the operator; the built-in template when absent.
    #[arg(long, env = "HALYARD_INJECTION_TEMPLATE")]
    injection_template: Option<PathBuf>,
    /// Mesh config (trustDomain, defaultConfig); defaults when absent.
    #[arg(long, env = "HALYARD_MESH_CONFIG")]
    mesh_config: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HALYARD_WEBHOOK_BODY_LIMIT", default_value_t = 6 * 1024 * 1024)]
    body_limit: usize,
    /// Timeout for the TLS handshake, request headers and request body, each (e.g. "10s").
    #[arg(long, env = "HALYARD_WEBHOOK_CLIENT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    client_timeout: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "HALYARD_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let template = match &args.injection_template {
        Some(path) => InjectionTemplate::from_file(path)?,
        None => InjectionTemplate::builtin()?,
    };
    let mesh = match &args.mesh_config {
        Some(path) => MeshConfig::from_file(path)?,
        None => MeshConfig::default(),
    };
    let resolver = Arc::new(ReloadingCertResolver::new(&args.tls_cert, &args.tls_key)?);
    let tls = resolver.server_config()?;
    let options = ServerOptions {
        body_limit: args.body_limit,
        handshake_timeout: args.client_timeout,
        header_timeout: args.client_timeout,
        body_timeout: args.client_timeout,
        ..ServerOptions::default()
    };
    let state = AppState::new(Injector::new(template, mesh), options);
    // The operator updates these files in place (ConfigMap mounts); pick changes up without a restart.
    tokio::spawn(server::watch_config_files(
        state.injector.clone(),
        args.injection_template.clone(),
        args.mesh_config.clone(),
        std::time::Duration::from_secs(5),
    ));
    let addr = SocketAddr::new(args.addr, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%addr, "halyard-webhook serving /inject and /validate");
    server::serve(listener, tls, state, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
