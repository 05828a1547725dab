//! Kubernetes API types for MeshInstall and the Istio kinds, their CRD generation, and the validator.
//!
//! - [`networking`] and [`security`]: Istio's kinds with every field of Istio's API (Istio's JSON names).
//! - [`common`]: messages shared by several kinds (workload selectors, policy target references).
//! - [`status`]: the status all Istio kinds carry.
//! - [`object`]: parse any supported object from JSON (apiVersion + kind dispatch).

pub mod common;
pub mod crd;
pub mod error;
pub mod install;
pub mod networking;
pub mod object;
pub mod security;
pub mod status;
pub mod validation;
pub mod yaml;

pub use error::Error;
pub use object::{IstioObject, Kind, ParsedObject, parse_object};
