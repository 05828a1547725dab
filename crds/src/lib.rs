//! Kubernetes API types for MeshInstall and the Istio kinds, their CRD generation, and the validator.
//!
//! - [`networking`] and [`security`]: Istio's kinds with every field of Istio's API (Istio's JSON names and
//!   value types; durations as strings; one-ofs as structs of options so bad combinations still decode).
//! - [`common`]: messages shared by several kinds (workload selectors, policy target references).
//! - [`status`]: the status all Istio kinds carry.
//! - [`install`]: `MeshInstall` (`install.halyard.dev/v1alpha1`).
//! - [`object`]: parse any supported object from JSON (apiVersion + kind dispatch) into [`IstioObject`].
//! - [`yaml`]: multi-document YAML into JSON values, with document index and line/column on errors.
//! - [`crd`]: the CRDs (`all_crds`) with structural schemas generated from the types;
//!   `cargo run -p halyard-crds --bin crdgen` writes them to `crds/generated/`.
//! - [`validation`]: Istio's validation rules (Galley's role).

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
