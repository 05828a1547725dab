//! The one error type of the webhook library.

use std::path::PathBuf;

/// Everything that can go wrong while injecting, validating or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod annotation has a value Istio would refuse; the text is Istio's.
    #[error("invalid value '{value}' for annotation '{name}': {why}")]
    InvalidAnnotation {
        name: String,
        value: String,
        why: String,
    },
    /// Several annotations were invalid; each message is one `InvalidAnnotation`.
    #[error("{}", .0.join("; "))]
    InvalidAnnotations(Vec<String>),
    /// The object handed to the injector is not shaped like a pod (or workload).
    #[error("cannot inject {what}: {why}")]
    NotInjectable { what: String, why: String },
    /// The injection template could not be understood.
    #[error("injection template {source_name}: {why}")]
    Template { source_name: String, why: String },
    /// The mesh config could not be understood.
    #[error("mesh config {source_name}: {why}")]
    MeshConfig { source_name: String, why: String },
    /// A YAML or JSON document could not be parsed.
    #[error("cannot parse {what}: {why}")]
    Parse { what: String, why: String },
    /// A document of a multi-document input (kube-inject) failed.
    #[error("document {index} ({what}): {source}")]
    Document {
        index: usize,
        what: String,
        #[source]
        source: Box<Error>,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Certificate or key material was unusable.
    #[error("TLS material {path}: {why}")]
    Tls { path: PathBuf, why: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
