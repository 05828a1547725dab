//! Per-endpoint upstream connection pools: HTTP/1.1 keep-alive (idle list) and HTTP/2 (one
//! multiplexed connection). Pools outlive config versions: the registry hands the same pool to
//! every snapshot that names the endpoint, so a config swap keeps warm connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::body::Body;
use crate::lb::LbTarget;

/// The protocol spoken to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

/// Why an upstream exchange failed before response headers.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failure to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connection timeout to {addr}")]
    ConnectTimeout { addr: SocketAddr },
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("connection to {addr} reset before response headers: {source}")]
    Reset {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// Envoy's reset reason text for the 503 body.
    pub fn reset_reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::ConnectTimeout { .. }
            | UpstreamError::Handshake { .. } => "connection failure",
            UpstreamError::Reset { .. } => "connection termination",
        }
    }
    /// True when no byte of the request reached the upstream (safe to retry anywhere).
    pub fn is_connect_failure(&self) -> bool {
        !matches!(self, UpstreamError::Reset { .. })
    }
}

/// Counters shown by the admin `/clusters` endpoint.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub cx_total: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_success: AtomicU64,
}

/// One endpoint's pool and live state.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub protocol: UpstreamProtocol,
    idle: Mutex<Vec<http1::SendRequest<Body>>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    active: AtomicU32,
    /// Cleared while ejected (outlier detection, issue 4) — the load balancers skip it.
    available: AtomicBool,
    pub stats: UpstreamStats,
    connect_timeout: Duration,
}

/// Most idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE: usize = 64;

/// Decrements the endpoint's in-flight counter when the exchange ends, however it ends.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Upstream>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    pub fn new(addr: SocketAddr, protocol: UpstreamProtocol, connect_timeout: Duration) -> Self {
        Upstream {
            addr,
            protocol,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            active: AtomicU32::new(0),
            available: AtomicBool::new(true),
            stats: UpstreamStats::default(),
            connect_timeout,
        }
    }

    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::Relaxed);
    }

    /// Count a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, UpstreamError> {
        self.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        let addr = self.addr;
        let res = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await;
        let stream = match res {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                self.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                return Err(UpstreamError::Connect { addr, source });
            }
            Err(_) => {
                self.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                return Err(UpstreamError::ConnectTimeout { addr });
            }
        };
        // Small request/response exchanges: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }

    async fn new_h1(&self) -> Result<http1::SendRequest<Body>, UpstreamError> {
        let io = self.connect().await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake {
                addr: self.addr,
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream http/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn h2_sender(&self) -> Result<http2::SendRequest<Body>, UpstreamError> {
        {
            let cur = self.h2.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = cur.as_ref()
                && !s.is_closed()
            {
                return Ok(s.clone());
            }
        }
        let io = self.connect().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake {
                addr: self.addr,
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream http/2 connection ended");
            }
        });
        let mut cur = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        match cur.as_ref() {
            // Another request raced us to connect: share its connection, drop ours.
            Some(s) if !s.is_closed() => Ok(s.clone()),
            _ => {
                *cur = Some(sender.clone());
                Ok(sender)
            }
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    /// Send one request; the response body streams from the pooled connection.
    /// `upgrade` requests get a connection of their own that never returns to the pool.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let res = match self.protocol {
            UpstreamProtocol::Http2 => {
                let mut s = self.h2_sender().await?;
                let s_ready = s.ready().await;
                match s_ready {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                }
            }
            UpstreamProtocol::Http1 => {
                let mut req = req;
                let mut pooled = if upgrade { None } else { self.take_idle() };
                loop {
                    let from_pool = pooled.is_some();
                    let mut sender = match pooled.take() {
                        Some(s) => s,
                        None => self.new_h1().await?,
                    };
                    match sender.try_send_request(req).await {
                        Ok(resp) => {
                            if !upgrade {
                                self.recycle(sender);
                            }
                            break Ok(resp);
                        }
                        Err(mut e) => match e.take_message() {
                            // A pooled connection closed by the peer while idle: the request was
                            // never written, so a fresh connection may carry it.
                            Some(back) if from_pool => {
                                req = back;
                                pooled = self.take_idle();
                            }
                            _ => break Err(e.into_error()),
                        },
                    }
                }
            }
        };
        res.map_err(|source| {
            self.stats.rq_error.fetch_add(1, Ordering::Relaxed);
            UpstreamError::Reset {
                addr: self.addr,
                source,
            }
        })
    }

    /// Return an HTTP/1.1 connection to the idle list once its response body is done.
    fn recycle(self: &Arc<Self>, mut sender: http1::SendRequest<Body>) {
        let me = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = me.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(sender);
                }
            }
        });
    }

    pub fn active_requests(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    pub fn idle_connections(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// An endpoint inside a compiled cluster: the shared pool plus this config's weight.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub upstream: Arc<Upstream>,
    pub weight: u32,
    pub healthy: bool,
    /// Metric labels when the endpoint's labels say more than the cluster's (version, workload).
    pub peers: Option<Arc<crate::metrics::PeersId>>,
}

impl LbTarget for Endpoint {
    fn weight(&self) -> u32 {
        self.weight.max(1)
    }
    fn active(&self) -> u32 {
        self.upstream.active_requests()
    }
    fn available(&self) -> bool {
        self.upstream.is_available()
    }
}

/// All endpoint pools of the proxy, keyed by address and protocol.
#[derive(Debug, Default)]
pub struct Registry {
    pools: RwLock<HashMap<(SocketAddr, UpstreamProtocol), Arc<Upstream>>>,
}

/// Default connect timeout (DestinationRule `connectTimeout` default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Registry {
    pub fn get(&self, addr: SocketAddr, protocol: UpstreamProtocol) -> Arc<Upstream> {
        if let Some(u) = self
            .pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(addr, protocol))
        {
            return u.clone();
        }
        self.pools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry((addr, protocol))
            .or_insert_with(|| Arc::new(Upstream::new(addr, protocol, DEFAULT_CONNECT_TIMEOUT)))
            .clone()
    }

    /// Drop pools that no config references and that have nothing in flight.
    pub fn prune(&self) {
        self.pools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, u| Arc::strong_count(u) > 1 || u.active_requests() > 0);
    }

    pub fn len(&self) -> usize {
        self.pools.read().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
