//! halyard's admission server: sidecar injection (`/inject`) and Istio config validation (`/validate`).
//!
//! The pure parts (injection decision, template, patch, probe rewriting, AdmissionReview handling) are
//! usable without a server: the operator and `halyard kube-inject` call [`Injector::inject`] /
//! [`kube_inject::inject_documents`] directly.

pub mod annotations;
pub mod cli;
pub mod decision;
pub mod error;
pub mod inject;
pub mod kube_inject;
pub mod mesh;
pub mod metrics;
pub mod probes;
pub mod review;
pub mod server;
pub mod template;
pub mod tls;
pub mod validate;

pub use decision::{Decision, SkipReason};
pub use error::Error;
pub use inject::{Injector, Outcome, PodContext, WorkloadMeta};
pub use mesh::{MeshConfig, ProxyConfig};
pub use template::InjectionTemplate;
