//! `networking.istio.io`: VirtualService, DestinationRule, Gateway, ServiceEntry, Sidecar, WorkloadEntry and
//! WorkloadGroup, with every nested message. Served as v1, v1beta1 and v1alpha3 (one schema; storage v1).

mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;
mod workload_entry;
mod workload_group;

pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
pub use workload_entry::*;
pub use workload_group::*;

/// The API group of these kinds.
pub const GROUP: &str = "networking.istio.io";
/// Served versions, storage version first.
pub const VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
