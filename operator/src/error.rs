//! The operator library's errors; each says what failed and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the {what} listener on {address}: {source}")]
    Bind {
        what: &'static str,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} server on {address} failed: {source}")]
    Serve {
        what: &'static str,
        address: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read config directory {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubernetes client configuration: {0}")]
    KubeConfig(String),
    #[error("logging: {0}")]
    Logging(String),
    #[error("the service registry stopped before its initial sync")]
    RegistryStopped,
    #[error("GET {url}: {reason}")]
    DebugClient { url: String, reason: String },
}
