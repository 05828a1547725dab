//! The control plane: service registries, discovery server, debug endpoints, MeshInstall controller.
//!
//! - [`registry`]: where the mesh comes from (a directory of YAML, or Kubernetes watches), published as
//!   immutable [`registry::MeshSnapshot`]s.
//! - [`discovery`]: the gRPC discovery server that turns snapshots into per-proxy config and pushes it.
//! - [`debug`]: monitoring and debug HTTP (`/metrics`, `/ready`, `/debug/*`).
//! - [`run`]: the `halyard-operator` command line, reusable by other binaries.
//! - [`install`]: the MeshInstall controller.

pub mod debug;
pub mod discovery;
mod error;
pub mod install;
pub mod metrics;
pub mod registry;
pub mod run;

pub use error::Error;
