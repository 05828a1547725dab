//! `halyard-webhook`: the HTTPS admission server (`/inject`, `/validate`, `/healthz`, `/readyz`, `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use halyard_webhook::Injector;
use halyard_webhook::cli::Args;
use halyard_webhook::server::{self, AppState, ServerOptions};
use halyard_webhook::tls::ReloadingCertResolver;

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

    let injector = Injector::from_files(
        args.injection_template.as_deref(),
        args.mesh_config.as_deref(),
    )?;
    let resolver = Arc::new(ReloadingCertResolver::new(&args.tls_cert, &args.tls_key)?);
    let tls = resolver.server_config()?;
    let options = ServerOptions {
        body_limit: args.body_limit,
        handshake_timeout: args.client_timeout,
        header_timeout: args.client_timeout,
        body_timeout: args.client_timeout,
        ..ServerOptions::default()
    };
    let state = AppState::new(injector, options);
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
