//! The data plane: sidecar and gateway proxy.
//!
//! A [`proxy::Proxy`] is created inside a Tokio runtime and fed `ProxyResources` through
//! [`proxy::Proxy::apply`] (static mode) or the discovery client (it implements
//! [`xds::ConfigSink`]). Each config is compiled into a [`snapshot::Snapshot`] (listeners,
//! pre-compiled route tables, cluster table) and swapped in atomically; connections and requests
//! in flight keep the snapshot they started with.

pub mod access_log;
pub mod admin;
pub mod agent;
pub mod body;
pub mod cli;
pub mod cluster;
pub mod dns;
pub mod error;
pub mod http;
pub mod lb;
pub mod metrics;
pub mod orig_dst;
pub mod peer;
pub mod proxy;
pub mod resilience;
pub mod route;
pub mod server_h1;
pub mod snapshot;
pub mod sniff;
pub mod tcp;
pub mod upstream;
pub mod xds;

pub use error::{ConfigError, ProxyError};
pub use proxy::{Proxy, ProxyOptions};
pub use snapshot::NodeInfo;
