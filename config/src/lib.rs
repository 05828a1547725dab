//! The proxy-facing API: discovery protocol and proxy resources, plus the translator from the mesh model.
//!
//! - [`discovery`]: the `halyard.discovery.v1` protocol (tonic client and server for
//!   `AggregatedDiscovery`), and [`type_urls`] naming each resource type it carries.
//! - [`resources`]: the `halyard.config.v1` resources a proxy runs on; [`ProxyResources`] is one
//!   proxy's whole configuration (translator output, static config file, discovery snapshot).
//! - [`wire`]: splitting a snapshot into per-type discovery resources and assembling it back.
//! - [`static_config`]: YAML/JSON reading and writing of resources.
//! - [`ClusterName`]: Istio's cluster names, built and parsed in one place.
//! - [`mesh`]: the mesh model, built once per change from Istio config, Kubernetes objects and
//!   mesh config ([`mesh::MeshInput`] -> [`mesh::MeshModel`]).
//! - [`translate`]: the pure translator, model + [`discovery::Node`] -> [`ProxyResources`], split
//!   into a part shared per scope ([`translate::ScopeKey`]) and a small per-proxy part;
//!   [`translate::Translator`] caches the shared part.
//! - [`Error`]: every error of the crate.

/// Generated from `proto/halyard/discovery/v1/discovery.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod discovery {
    include!(concat!(env!("OUT_DIR"), "/halyard.discovery.v1.rs"));
}

/// Generated from `proto/halyard/config/v1/config.proto`; every message derives serde
/// (camelCase, enum values by name, missing fields default).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod resources {
    include!(concat!(env!("OUT_DIR"), "/halyard.config.v1.rs"));
}

// Adapters for enum field shapes (optional, repeated) the schema may not use yet.
#[allow(dead_code)]
mod enum_serde;
mod error;
pub mod mesh;
mod names;
// The generated adapters cover only the enum field shapes the schema uses.
#[allow(clippy::all, clippy::pedantic, dead_code)]
mod serde_enum {
    include!(concat!(env!("OUT_DIR"), "/serde_enum.rs"));
}
pub mod static_config;
pub mod translate;
pub mod type_urls;
pub mod wire;

pub use error::{Error, FormatError, NameError, TranslateError, WireError};
pub use names::{BLACKHOLE_CLUSTER, ClusterName, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER};
pub use resources::ProxyResources;
