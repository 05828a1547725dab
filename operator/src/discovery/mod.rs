//! The discovery server: one gRPC stream per proxy (state of the world or delta), debounced pushes computed
//! once per distinct proxy config, ordered delivery and per-type ACK/NACK tracking.
//!
//! ```no_run
//! # async fn start(snapshots: tokio::sync::watch::Receiver<Option<std::sync::Arc<halyard_operator::registry::MeshSnapshot>>>) -> Result<(), halyard_operator::Error> {
//! use std::sync::Arc;
//! use halyard_operator::discovery::{DiscoveryServer, DiscoverySettings};
//! use halyard_operator::metrics::Metrics;
//!
//! let server = DiscoveryServer::start(DiscoverySettings::default(), snapshots, Arc::new(Metrics::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:15010").await.expect("bind");
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod connection;
pub mod debounce;
mod grpc;
pub mod output;
mod push;
mod server;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use halyard_config::ProxyResources;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use connection::Mode;
pub use debounce::DebounceSettings;
pub use grpc::DiscoveryService;
pub use push::PushContext;
pub use server::{ConnectionEntry, StreamSettings};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::MeshSnapshot;
use server::Shared;
use status::ProxyStatus;

/// Everything that tunes the discovery server.
#[derive(Debug, Clone, Default)]
pub struct DiscoverySettings {
    pub stream: StreamSettings,
    pub debounce: DebounceSettings,
}

/// Handle on a running discovery server. Cheap to clone; the push loop stops when the registry's snapshot
/// sender is dropped.
#[derive(Clone)]
pub struct DiscoveryServer {
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
}

impl DiscoveryServer {
    /// Starts the push loop over `snapshots` (`None` until the registry's initial sync). Needs a Tokio runtime.
    pub fn start(
        settings: DiscoverySettings,
        snapshots: watch::Receiver<Option<Arc<MeshSnapshot>>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (push_tx, push_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(push::run_pusher(
            snapshots,
            push_tx,
            settings.debounce,
            metrics.clone(),
        ));
        DiscoveryServer {
            shared: Arc::new(Shared::new(settings.stream, metrics, push_rx, stop_rx)),
            stop: Arc::new(stop),
        }
    }

    /// The gRPC service, for callers that build their own `tonic::transport::Server`.
    pub fn service(&self) -> DiscoveryService {
        DiscoveryService {
            shared: self.shared.clone(),
        }
    }

    /// Serves plaintext gRPC on `listener` until `shutdown` completes; then closes every stream (proxies keep
    /// their config and reconnect elsewhere or later).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let address = listener
            .local_addr()
            .map(|a: SocketAddr| a.to_string())
            .unwrap_or_default();
        let stop = self.stop.clone();
        let shutdown = async move {
            shutdown.await;
            stop.send_replace(true);
        };
        tracing::info!(%address, "discovery server listening");
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(self.service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
            .map_err(|source| Error::Serve {
                what: "discovery",
                address,
                source: Box::new(source),
            })
    }

    /// Closes every open stream now (also done by `serve`'s shutdown).
    pub fn close_streams(&self) {
        self.stop.send_replace(true);
    }

    /// Every open stream's sync status, ordered by connection id.
    pub fn statuses(&self) -> Vec<ProxyStatus> {
        self.shared
            .connections()
            .values()
            .map(|e| e.status.clone())
            .collect()
    }

    /// The config last computed for a proxy (its newest stream if it has several), decoded from the form
    /// it is sent in.
    pub fn config_dump(&self, proxy_id: &str) -> Option<Arc<ProxyResources>> {
        let output = self
            .shared
            .connections()
            .values()
            .filter(|e| e.status.proxy_id == proxy_id)
            .max_by_key(|e| e.status.connected_at_unix)
            .and_then(|e| e.output.clone())?;
        match output.resources() {
            Ok(resources) => Some(Arc::new(resources)),
            Err(err) => {
                // only a bug can get here: the bytes were encoded by this process
                tracing::error!(proxy = proxy_id, error = %err, "cannot decode the config sent to this proxy");
                None
            }
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }
}
