//! The connection loop: connect, subscribe, apply, ACK/NACK, and reconnect with back-off when the stream ends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use halyard_config::discovery::Node;
use halyard_config::discovery::aggregated_discovery_client::AggregatedDiscoveryClient;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;

use super::backoff::Backoff;
use super::state::{self, Accepted, Reply, Step, Update};
use super::{ConfigSink, XdsError};

/// Which form of the protocol the client speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Every response carries every resource of its type.
    #[default]
    StateOfTheWorld,
    /// Responses carry changed resources and the names of removed ones.
    Delta,
}

/// How the client reaches the control plane; fixed at start (the proxy's bootstrap is immutable).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Control-plane URLs (`http://istiod.istio-system:15010`); each (re)connect picks one at random, so
    /// proxies spread over replicas when a connection reaches its maximum age.
    pub addresses: Vec<String>,
    pub node: Node,
    pub protocol: Protocol,
    /// First reconnect delay; doubles per failed attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
}

impl ClientConfig {
    pub fn new(addresses: Vec<String>, node: Node) -> Self {
        ClientConfig {
            addresses,
            node,
            protocol: Protocol::default(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What the client has done so far; observe it with [`XdsClient::status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// A stream is open and has delivered every type at least once.
    pub synced: bool,
    /// The address of the current (or last) stream.
    pub address: Option<String>,
    /// The control-plane instance that sent the last response.
    pub control_plane: Option<String>,
    /// Version of the config the sink last accepted.
    pub version: Option<String>,
    /// Configs the sink accepted.
    pub applied: u64,
    /// Configs refused (by the sink or because they could not be decoded), each NACKed.
    pub rejected: u64,
    /// The last NACK reason.
    pub last_rejection: Option<String>,
    /// Streams opened, including the first.
    pub streams: u64,
}

/// The discovery client of one proxy.
pub struct XdsClient {
    config: ClientConfig,
    endpoints: Vec<(String, Endpoint)>,
    sink: Arc<dyn ConfigSink>,
    status: watch::Sender<ClientStatus>,
}

impl XdsClient {
    pub fn new(config: ClientConfig, sink: Arc<dyn ConfigSink>) -> Result<Self, XdsError> {
        if config.addresses.is_empty() {
            return Err(XdsError::NoAddress);
        }
        let endpoints = config
            .addresses
            .iter()
            .map(|address| {
                Endpoint::from_shared(address.clone())
                    .map(|e| {
                        // config pushes are large: let the control plane write them out in one go
                        let e = e
                            .connect_timeout(config.connect_timeout)
                            .tcp_nodelay(true)
                            .initial_stream_window_size(4 * 1024 * 1024)
                            .initial_connection_window_size(8 * 1024 * 1024);
                        (address.clone(), e)
                    })
                    .map_err(|source| XdsError::InvalidAddress {
                        address: address.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(XdsClient {
            config,
            endpoints,
            sink,
            status: watch::Sender::new(ClientStatus::default()),
        })
    }

    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` completes. Never gives up on the control plane: the proxy keeps its last good
    /// config and keeps trying.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut accepted = Accepted::default();
        let mut backoff = Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        loop {
            let pick = rand::rng().random_range(0..self.endpoints.len());
            let (address, endpoint) = &self.endpoints[pick];
            self.status
                .send_modify(|s| s.address = Some(address.clone()));
            let outcome = tokio::select! {
                _ = &mut shutdown => return,
                outcome = self.session(endpoint, &mut accepted) => outcome,
            };
            self.status.send_modify(|s| s.synced = false);
            match outcome {
                Ok(true) => {
                    backoff.reset();
                    tracing::info!(%address, "discovery stream closed by the control plane; reconnecting");
                }
                Ok(false) => tracing::warn!(%address, "discovery stream closed before a full sync"),
                Err(err) => tracing::warn!(%address, error = %err, "discovery stream failed"),
            }
            let delay = backoff.next_delay(rand::rng().random::<f64>());
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One stream; `Ok(true)` when it delivered a full sync before ending.
    async fn session(
        &self,
        endpoint: &Endpoint,
        accepted: &mut Accepted,
    ) -> Result<bool, SessionError> {
        let channel = endpoint.connect().await?;
        let mut client = AggregatedDiscoveryClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        self.status.send_modify(|s| s.streams += 1);
        match self.config.protocol {
            Protocol::StateOfTheWorld => {
                let (tx, rx) = mpsc::channel(16);
                for request in state::sotw_subscriptions(&self.config.node, accepted) {
                    tx.try_send(request).map_err(|_| SessionError::Closed)?;
                }
                let inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
                self.drive(inbound, tx, accepted, Reply::into_sotw, |r| {
                    r.control_plane.clone()
                })
                .await
            }
            Protocol::Delta => {
                let (tx, rx) = mpsc::channel(16);
                for request in state::delta_subscriptions(&self.config.node, accepted) {
                    tx.try_send(request).map_err(|_| SessionError::Closed)?;
                }
                let inbound = client.delta(ReceiverStream::new(rx)).await?.into_inner();
                self.drive(inbound, tx, accepted, Reply::into_delta, |r| {
                    r.control_plane.clone()
                })
                .await
            }
        }
    }

    async fn drive<Resp, Req>(
        &self,
        mut inbound: Streaming<Resp>,
        tx: mpsc::Sender<Req>,
        accepted: &mut Accepted,
        to_request: fn(Reply) -> Req,
        control_plane: fn(&Resp) -> String,
    ) -> Result<bool, SessionError>
    where
        Resp: Into<Update>,
    {
        let mut stream = state::Stream::new();
        let mut delivered = false;
        while let Some(response) = inbound.message().await? {
            let from = control_plane(&response);
            let replies = match stream.receive(accepted, response.into()) {
                Step::Wait => continue,
                Step::Apply(resources) => {
                    let verdict = self.sink.apply(&resources);
                    let ok = verdict.is_ok();
                    let reason = verdict.as_ref().err().cloned();
                    let replies = stream.applied(accepted, verdict);
                    self.status.send_modify(|s| {
                        s.control_plane = Some(from);
                        if ok {
                            s.applied += 1;
                            s.version = Some(resources.version.clone());
                        } else {
                            s.rejected += 1;
                            s.last_rejection = reason.clone();
                        }
                    });
                    if let Some(reason) = reason {
                        tracing::warn!(%reason, "config refused; NACKing and keeping the previous config");
                    }
                    replies
                }
                Step::Reject(replies) => {
                    let reason = replies.first().and_then(|r| r.error.clone());
                    tracing::warn!(reason = ?reason, "undecodable config; NACKing");
                    self.status.send_modify(|s| {
                        s.rejected += 1;
                        s.last_rejection = reason;
                    });
                    replies
                }
            };
            if stream.synced() && !delivered {
                delivered = true;
                self.status.send_modify(|s| s.synced = true);
            }
            for reply in replies {
                tx.send(to_request(reply))
                    .await
                    .map_err(|_| SessionError::Closed)?;
            }
        }
        Ok(delivered)
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("request channel closed")]
    Closed,
}
