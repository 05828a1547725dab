//! `halyard-webhook` command line, in the library so that the operator can check the flags and files of the
//! Deployment it renders against the real parser (`Args::try_parse_from`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Flags of `halyard-webhook` (each with an environment fallback).
#[derive(Debug, Parser)]
#[command(
    name = "halyard-webhook",
    version,
    about = "Sidecar injection and Istio config validation admission server"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "HALYARD_WEBHOOK_ADDR", default_value = "0.0.0.0")]
    pub addr: IpAddr,
    /// HTTPS port (the Service maps 443 to it).
    #[arg(long, env = "HALYARD_WEBHOOK_PORT", default_value_t = 15017)]
    pub port: u16,
    /// PEM certificate chain; reloaded when the file changes.
    #[arg(
        long,
        env = "HALYARD_WEBHOOK_TLS_CERT",
        default_value = "/etc/halyard/webhook-certs/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key; reloaded when the file changes.
    #[arg(
        long,
        env = "HALYARD_WEBHOOK_TLS_KEY",
        default_value = "/etc/halyard/webhook-certs/tls.key"
    )]
    pub tls_key: PathBuf,
    /// Injection template written by the operator; the built-in template when absent.
    #[arg(long, env = "HALYARD_INJECTION_TEMPLATE")]
    pub injection_template: Option<PathBuf>,
    /// Mesh config (trustDomain, defaultConfig); defaults when absent.
    #[arg(long, env = "HALYARD_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HALYARD_WEBHOOK_BODY_LIMIT", default_value_t = 6 * 1024 * 1024)]
    pub body_limit: usize,
    /// Timeout for the TLS handshake, request headers and request body, each (e.g. "10s").
    #[arg(long, env = "HALYARD_WEBHOOK_CLIENT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub client_timeout: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "HALYARD_LOG_JSON")]
    pub log_json: bool,
}
