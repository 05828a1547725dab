//! The proxy's discovery client: one gRPC stream to the control plane, ACK/NACK, reconnect with backoff.
//!
//! The client subscribes to every resource type (in `type_urls::PUSH_ORDER`), assembles what it receives into
//! one [`halyard_config::ProxyResources`] and hands it to a [`ConfigSink`]. On a new stream it waits until it
//! has every type once, so a reconnect swaps the whole config in one step. A refused config is NACKed with
//! the sink's reason and the previous config stays. While the control plane is unreachable nothing is applied
//! and the proxy keeps serving what it had.

pub mod backoff;
mod client;
mod state;

pub use client::{ClientConfig, ClientStatus, Protocol, XdsClient};

/// Where the discovery client delivers assembled config; the proxy runtime implements it.
pub trait ConfigSink: Send + Sync + 'static {
    /// Validate + compile + swap atomically. Err(reason) => the client NACKs with that reason and the proxy keeps
    /// its previous config.
    fn apply(&self, resources: &halyard_config::ProxyResources) -> Result<(), String>;
}

/// Why the client could not set itself up.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("discovery client: no control-plane address given")]
    NoAddress,
    #[error("discovery client: invalid control-plane address {address:?}: {source}")]
    InvalidAddress {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}
