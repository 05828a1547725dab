//! Errors of the proxy library.

use std::net::SocketAddr;

/// A config the proxy refuses (the discovery client NACKs with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{at}: {why}")]
    Invalid { at: String, why: String },
    #[error("{at}: invalid regex {pattern:?}: {why}")]
    Regex {
        at: String,
        pattern: String,
        why: String,
    },
    #[error("listener {name}: cannot bind {addr}: {why}")]
    Bind {
        name: String,
        addr: SocketAddr,
        why: String,
    },
}

/// Errors starting or running the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("config file {path}: {why}")]
    ConfigFile { path: String, why: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what} server on {addr}: {source}")]
    Serve {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("access log {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("discovery client: {0}")]
    Discovery(String),
    #[error("{0}")]
    Args(String),
}
