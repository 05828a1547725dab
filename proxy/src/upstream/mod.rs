//! Per-endpoint upstream connection pools: HTTP/1.1 keep-alive (idle list) and HTTP/2
//! (multiplexed connections). Pools outlive config versions: the registry hands the same pool to
//! every snapshot that names the endpoint with the same connection settings, so a config swap
//! keeps warm connections.
//!
//! Connection settings come from the cluster (DestinationRule `connectionPool`, see
//! [`PoolSettings`]): connect timeout, TCP keepalive, maximum connection age, idle timeout,
//! requests per connection and concurrent HTTP/2 streams per connection. A sweeper task per pool
//! (started while the pool holds connections) closes idle and aged connections on time.
//!
//! HTTP/1.1 exchanges use the proxy's own client ([`h1`]); HTTP/2 and upgrades use hyper's.

pub mod h1;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use halyard_config::ClusterName;
use halyard_config::resources as r;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::body::Body;
use crate::lb::LbTarget;

/// A request's head as the attempts of one request share it: HTTP/1.1 exchanges encode it in
/// place, hyper's client gets a copy.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: http::HeaderMap,
}

impl RequestHead {
    /// A request with a copy of this head.
    pub fn request(&self, body: Body) -> Request<Body> {
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

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
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("invalid response from {addr}: {detail}")]
    Protocol { addr: SocketAddr, detail: String },
}

impl UpstreamError {
    /// Envoy's reset reason text for the 503 body.
    pub fn reset_reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::ConnectTimeout { .. }
            | UpstreamError::Handshake { .. } => "connection failure",
            UpstreamError::Reset { .. } => "connection termination",
            UpstreamError::Protocol { .. } => "protocol error",
        }
    }
    /// True when no byte of the request reached the upstream (safe to retry anywhere).
    pub fn is_connect_failure(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Reset { .. } | UpstreamError::Protocol { .. }
        )
    }
}

/// Default connect timeout (DestinationRule `connectTimeout` default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Istio's default `http.idleTimeout` (upstream connections) and `tcp.idleTimeout` (TCP proxy).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// TCP keepalive on upstream sockets (`connectionPool.tcp.tcpKeepalive`); unset fields keep
/// the operating system's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Keepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// Connection settings of a cluster's pools (DestinationRule `connectionPool`). Part of the pool
/// key: clusters that share an endpoint but not these settings get separate pools, as Envoy's
/// pools are per cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub keepalive: Option<Keepalive>,
    /// Connections older than this take no new requests and close once idle
    /// (`tcp.maxConnectionDuration`).
    pub max_connection_duration: Option<Duration>,
    /// Connections without a request for this long are closed (`http.idleTimeout`).
    pub idle_timeout: Option<Duration>,
    /// A connection carries at most this many requests (`http.maxRequestsPerConnection`).
    pub max_requests_per_connection: Option<u32>,
    /// HTTP/2: streams at once on one connection; more open another connection
    /// (`http.maxConcurrentStreams`).
    pub max_concurrent_streams: Option<u32>,
    /// TCP proxy: connections without a byte either way for this long are closed
    /// (`tcp.idleTimeout`).
    pub tcp_idle_timeout: Option<Duration>,
    /// Connections into the proxy's own pod (inbound clusters) leave from the passthrough
    /// source, so the capture rules do not send them back to the inbound listener.
    pub bypass_capture: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive: None,
            max_connection_duration: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_requests_per_connection: None,
            max_concurrent_streams: None,
            tcp_idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            bypass_capture: false,
        }
    }
}

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

impl PoolSettings {
    /// The settings of a cluster resource: `connectionPool.tcp.connectTimeout` wins over the
    /// cluster's `connect_timeout_ms` (the translator fills both); zero means "default".
    pub fn from_cluster(c: &r::Cluster) -> Self {
        let mut s = PoolSettings {
            bypass_capture: matches!(
                c.name.parse::<ClusterName>(),
                Ok(ClusterName::Inbound { .. } | ClusterName::InboundPassthrough)
            ),
            ..PoolSettings::default()
        };
        let pool = c.connection_pool.as_ref();
        let tcp = pool.and_then(|p| p.tcp.as_ref());
        let http = pool.and_then(|p| p.http.as_ref());
        s.connect_timeout = tcp
            .and_then(|t| ms(t.connect_timeout_ms))
            .or(ms(c.connect_timeout_ms))
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        if let Some(t) = tcp {
            if t.keepalive_probes > 0 || t.keepalive_time_ms > 0 || t.keepalive_interval_ms > 0 {
                s.keepalive = Some(Keepalive {
                    probes: (t.keepalive_probes > 0).then_some(t.keepalive_probes),
                    time: ms(t.keepalive_time_ms),
                    interval: ms(t.keepalive_interval_ms),
                });
            }
            s.max_connection_duration = ms(t.max_connection_duration_ms);
            if let Some(d) = ms(t.idle_timeout_ms) {
                s.tcp_idle_timeout = Some(d);
            }
        }
        if let Some(h) = http {
            if let Some(d) = ms(h.idle_timeout_ms) {
                s.idle_timeout = Some(d);
            }
            s.max_requests_per_connection =
                (h.max_requests_per_connection > 0).then_some(h.max_requests_per_connection);
            s.max_concurrent_streams =
                (h.max_concurrent_streams > 0).then_some(h.max_concurrent_streams);
        }
        s
    }
}

/// Open a TCP connection with the settings' connect timeout and keepalive (also used by the
/// TCP proxy).
pub async fn connect_tcp(
    addr: SocketAddr,
    settings: &PoolSettings,
) -> Result<TcpStream, UpstreamError> {
    let connect = async {
        if settings.bypass_capture {
            connect_bypassing_capture(addr).await
        } else {
            TcpStream::connect(addr).await
        }
    };
    let stream = match tokio::time::timeout(settings.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
        Err(_) => return Err(UpstreamError::ConnectTimeout { addr }),
    };
    // Small request/response exchanges: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    if let Some(k) = settings.keepalive
        && let Err(e) = set_keepalive(&stream, k)
    {
        tracing::debug!(error = %e, %addr, "cannot set TCP keepalive");
    }
    Ok(stream)
}

/// The source address of the proxy's connections into its own pod (Istio's
/// `InboundPassthroughBindIpv4/6`): the init container's first output rule returns traffic from
/// it untouched, so such connections (to the app, or to a port no Service declares) are not
/// captured again by the inbound listener.
pub fn passthrough_source(dest: IpAddr) -> SocketAddr {
    match dest {
        IpAddr::V4(_) => SocketAddr::from(([127, 0, 0, 6], 0)),
        IpAddr::V6(_) => SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 6], 0)),
    }
}

/// Connect from [`passthrough_source`]. Where it cannot be bound (`::6` exists only once the
/// init container added it) there is no capture to bypass, so an unbound connection is the same.
pub async fn connect_bypassing_capture(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    let source = passthrough_source(addr.ip());
    if let Err(e) = socket.bind(source) {
        tracing::debug!(error = %e, %source, "cannot bind the passthrough source; connecting unbound");
        return TcpStream::connect(addr).await;
    }
    socket.connect(addr).await
}

fn set_keepalive(stream: &TcpStream, k: Keepalive) -> std::io::Result<()> {
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(t) = k.time {
        // The kernel counts whole seconds (at least 1).
        ka = ka.with_time(t.max(Duration::from_secs(1)));
    }
    if let Some(i) = k.interval {
        ka = ka.with_interval(i.max(Duration::from_secs(1)));
    }
    if let Some(p) = k.probes {
        ka = ka.with_retries(p);
    }
    socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
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

/// Age, request count and stream count of one upstream connection.
#[derive(Debug)]
struct ConnInfo {
    born: Instant,
    requests: AtomicU32,
    streams: AtomicU32,
    /// Nanoseconds after `born` when a stream last began or ended (HTTP/2 idle timeout).
    last_active_ns: AtomicU64,
}

impl ConnInfo {
    fn new() -> Self {
        ConnInfo {
            born: Instant::now(),
            requests: AtomicU32::new(0),
            streams: AtomicU32::new(0),
            last_active_ns: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        let ns = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_active_ns.store(ns, Ordering::Relaxed);
    }
    fn last_active(&self) -> Instant {
        self.born + Duration::from_nanos(self.last_active_ns.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct IdleH1 {
    conn: h1::Conn,
    since: Instant,
}

#[derive(Debug)]
struct H2Conn {
    sender: http2::SendRequest<Body>,
    info: Arc<ConnInfo>,
}

/// One endpoint's pool and live state.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub protocol: UpstreamProtocol,
    pub settings: PoolSettings,
    idle: Mutex<Vec<IdleH1>>,
    h2: Mutex<Vec<H2Conn>>,
    /// Held while an HTTP/2 connection is being established.
    h2_connect: tokio::sync::Mutex<()>,
    h2_connect_failures: AtomicU64,
    active: AtomicU32,
    /// Cleared while ejected (outlier detection, issue 4) — the load balancers skip it.
    available: AtomicBool,
    pub stats: UpstreamStats,
    /// A sweeper task is running for this pool.
    sweeping: AtomicBool,
    /// Wakes the sweeper when a connection with an earlier deadline is pooled.
    wake: Arc<Notify>,
}

/// Most idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE: usize = 64;

/// Ends a request's accounting when the exchange ends, however it ends: the endpoint's
/// in-flight counter and, for HTTP/2, the stream count of its connection.
#[derive(Debug)]
pub struct ActiveGuard {
    upstream: Arc<Upstream>,
    stream: Option<Arc<ConnInfo>>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.upstream.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(c) = self.stream.take() {
            c.streams.fetch_sub(1, Ordering::Relaxed);
            c.touch();
        }
    }
}

impl Upstream {
    pub fn new(addr: SocketAddr, protocol: UpstreamProtocol, settings: PoolSettings) -> Self {
        Upstream {
            addr,
            protocol,
            settings,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(Vec::new()),
            h2_connect: tokio::sync::Mutex::new(()),
            h2_connect_failures: AtomicU64::new(0),
            active: AtomicU32::new(0),
            available: AtomicBool::new(true),
            stats: UpstreamStats::default(),
            sweeping: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::Relaxed);
    }

    /// Count a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            upstream: self.clone(),
            stream: None,
        }
    }

    async fn connect(&self) -> Result<TcpStream, UpstreamError> {
        self.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        match connect_tcp(self.addr, &self.settings).await {
            Ok(s) => Ok(s),
            Err(e) => {
                self.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// No new requests on this connection: too old or carried its maximum of requests.
    fn retired(&self, c: &ConnInfo, now: Instant) -> bool {
        self.settings
            .max_connection_duration
            .is_some_and(|d| now.saturating_duration_since(c.born) >= d)
            || self
                .settings
                .max_requests_per_connection
                .is_some_and(|m| c.requests.load(Ordering::Relaxed) >= m)
    }

    /// When an idle HTTP/1.1 connection must close.
    fn h1_deadline(&self, e: &IdleH1) -> Option<Instant> {
        let idle = self.settings.idle_timeout.map(|d| e.since + d);
        let aged = self
            .settings
            .max_connection_duration
            .map(|d| e.conn.info.born + d);
        match (idle, aged) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A connection of its own for an upgrade (WebSocket): hyper's client hands the upgraded
    /// stream over once the response is `101`.
    async fn upgrade_h1(&self) -> Result<http1::SendRequest<Body>, UpstreamError> {
        let io = TokioIo::new(self.connect().await?);
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

    /// A usable HTTP/2 connection with room for one more stream (counted as begun).
    fn h2_pick(
        &self,
        conns: &mut Vec<H2Conn>,
    ) -> Option<(http2::SendRequest<Body>, Arc<ConnInfo>)> {
        let now = Instant::now();
        // Dropping a retired connection's sender lets it finish its streams and close.
        conns.retain(|c| !c.sender.is_closed() && !self.retired(&c.info, now));
        let room = self.settings.max_concurrent_streams.unwrap_or(u32::MAX);
        let i = conns
            .iter()
            .position(|c| c.info.streams.load(Ordering::Relaxed) < room)?;
        let c = &conns[i];
        let got = (c.sender.clone(), c.info.clone());
        self.begin_stream(&got.1);
        if self.retired(&got.1, now) {
            // Its last request: once that stream ends and no sender is left, it closes.
            conns.swap_remove(i);
        }
        Some(got)
    }

    fn begin_stream(&self, c: &ConnInfo) {
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.streams.fetch_add(1, Ordering::Relaxed);
        c.touch();
    }

    async fn h2_sender(
        self: &Arc<Self>,
    ) -> Result<(http2::SendRequest<Body>, Arc<ConnInfo>), UpstreamError> {
        if let Some(got) = self.h2_pick(&mut self.h2.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(got);
        }
        // One connect at a time: requests arriving meanwhile wait for it and share it (up to
        // the stream limit), as Envoy counts a connecting connection's capacity.
        let failures = self.h2_connect_failures.load(Ordering::Acquire);
        let _connecting = self.h2_connect.lock().await;
        if let Some(got) = self.h2_pick(&mut self.h2.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(got);
        }
        if self.h2_connect_failures.load(Ordering::Acquire) != failures {
            // The connect this request waited for failed: fail with it rather than queue again.
            return Err(UpstreamError::Connect {
                addr: self.addr,
                source: std::io::Error::other("connection attempt failed"),
            });
        }
        let io = match self.connect().await {
            Ok(s) => TokioIo::new(s),
            Err(e) => {
                self.h2_connect_failures.fetch_add(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|source| {
                self.h2_connect_failures.fetch_add(1, Ordering::AcqRel);
                UpstreamError::Handshake {
                    addr: self.addr,
                    source,
                }
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream http/2 connection ended");
            }
        });
        let info = Arc::new(ConnInfo::new());
        let got = {
            let mut conns = self.h2.lock().unwrap_or_else(|e| e.into_inner());
            self.begin_stream(&info);
            if !self.retired(&info, Instant::now()) {
                conns.push(H2Conn {
                    sender: sender.clone(),
                    info: info.clone(),
                });
            }
            (sender, info)
        };
        self.ensure_sweeper(false);
        Ok(got)
    }

    fn take_idle(&self) -> Option<h1::Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(e) = idle.pop() {
            if self.h1_deadline(&e).is_none_or(|d| d > now) && e.conn.is_reusable() {
                return Some(e.conn);
            }
        }
        None
    }

    /// Send one request; the response body streams from the pooled connection. `guard` (from
    /// [`Upstream::begin`]) also holds the HTTP/2 stream slot until the exchange ends.
    /// `upgrade` requests get a connection of their own that never returns to the pool.
    ///
    /// Not an `async fn`: the future is the chosen client's own, so the request is not held
    /// twice in it (futures are moved whole at each level of the request path).
    pub fn send<'a>(
        self: &'a Arc<Self>,
        head: &'a RequestHead,
        body: Body,
        upgrade: bool,
        guard: &'a mut ActiveGuard,
    ) -> impl std::future::Future<Output = Result<Response<Body>, UpstreamError>> + Send + 'a {
        if self.protocol == UpstreamProtocol::Http1 && !upgrade {
            futures::future::Either::Left(self.send_h1(head, body))
        } else {
            // Boxed: hyper's client futures are large and this is the rarer path.
            futures::future::Either::Right(Box::pin(self.send_hyper(
                head.request(body),
                upgrade,
                guard,
            )))
        }
    }

    /// HTTP/2 (multiplexed connections) and HTTP/1.1 upgrades, through hyper's client.
    async fn send_hyper(
        self: &Arc<Self>,
        req: Request<Body>,
        upgrade: bool,
        guard: &mut ActiveGuard,
    ) -> Result<Response<Body>, UpstreamError> {
        let res = match self.protocol {
            UpstreamProtocol::Http2 => {
                let (mut s, info) = self.h2_sender().await?;
                guard.stream = Some(info);
                let s_ready = s.ready().await;
                match s_ready {
                    Ok(()) => s.send_request(req).await.map(|r| r.map(Body::incoming)),
                    Err(e) => Err(e),
                }
            }
            UpstreamProtocol::Http1 => {
                debug_assert!(upgrade, "plain HTTP/1.1 goes through send_h1");
                let mut sender = self.upgrade_h1().await?;
                sender
                    .send_request(req)
                    .await
                    .map(|r| r.map(Body::incoming))
            }
        };
        res.map_err(|source| {
            self.stats.rq_error.fetch_add(1, Ordering::Relaxed);
            UpstreamError::Reset {
                addr: self.addr,
                source: source.into(),
            }
        })
    }

    /// One HTTP/1.1 exchange on a pooled connection (or a new one). A request that a stale
    /// pooled connection failed before any response goes again on another connection, as long
    /// as it can be resent as it was (see [`h1::Failure::resend`]).
    async fn send_h1(
        self: &Arc<Self>,
        head: &RequestHead,
        mut body: Body,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut pooled = self.take_idle();
        loop {
            let reused = pooled.is_some();
            let conn = match pooled.take() {
                Some(c) => c,
                // Boxed: connecting is the rare case and its future is large.
                None => h1::Conn::new(Box::pin(self.connect()).await?, Arc::new(ConnInfo::new())),
            };
            let info = conn.info.clone();
            match h1::exchange(self, conn, head, &mut body).await {
                Ok(resp) => {
                    info.requests.fetch_add(1, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(f) if f.resend && reused => {
                    tracing::debug!(error = %f.error, addr = %self.addr, "pooled connection was closed; sending again");
                    pooled = self.take_idle();
                }
                Err(f) => {
                    self.stats.rq_error.fetch_add(1, Ordering::Relaxed);
                    return Err(match f.error {
                        h1::FailureKind::Protocol(detail) => UpstreamError::Protocol {
                            addr: self.addr,
                            detail,
                        },
                        h1::FailureKind::Io(e) => UpstreamError::Reset {
                            addr: self.addr,
                            source: e.into(),
                        },
                    });
                }
            }
        }
    }

    /// Keep an HTTP/1.1 connection whose exchange ended cleanly for the next request, unless it
    /// is retired (dropping it closes it).
    fn pool_idle(self: &Arc<Self>, conn: h1::Conn) {
        let now = Instant::now();
        if self.retired(&conn.info, now) {
            return;
        }
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(IdleH1 { conn, since: now });
        }
        // The sweeper is a task: outside a runtime (a body finished on a foreign thread) the
        // connection still waits in the list and is checked when taken.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.ensure_sweeper(true);
        }
    }

    /// Start the pool's sweeper if needed. Idle deadlines only grow, but an aged connection
    /// may be due before the sweeper's next wake-up, so it is woken when ages are bounded.
    fn ensure_sweeper(self: &Arc<Self>, pooled_h1: bool) {
        let s = &self.settings;
        if s.idle_timeout.is_none() && s.max_connection_duration.is_none() {
            return;
        }
        // A plain load first: the common case (sweeper running) needs no write.
        if self.sweeping.load(Ordering::Acquire) || self.sweeping.swap(true, Ordering::AcqRel) {
            if pooled_h1 && s.max_connection_duration.is_some() {
                self.wake.notify_one();
            }
            return;
        }
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(sweep(weak, wake));
    }

    /// Close idle and aged connections; the next deadline, if any connection is left.
    fn evict(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |d: Instant| next = Some(next.map_or(d, |n| n.min(d)));
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|e| {
                let due = self.h1_deadline(e);
                let keep = due.is_none_or(|d| d > now) && e.conn.is_reusable();
                if keep && let Some(d) = due {
                    at(d);
                }
                keep
            });
        }
        let mut conns = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| {
            if c.sender.is_closed() || self.retired(&c.info, now) {
                return false;
            }
            let busy = c.info.streams.load(Ordering::Relaxed) > 0;
            if let Some(idle) = self.settings.idle_timeout {
                // Busy connections are looked at again one idle period later.
                let due = if busy {
                    now + idle
                } else {
                    c.info.last_active() + idle
                };
                if due <= now {
                    return false;
                }
                at(due);
            }
            if let Some(d) = self.settings.max_connection_duration {
                at(c.info.born + d);
            }
            true
        });
        next
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

    /// Open HTTP/2 connections taking new streams.
    pub fn h2_connections(&self) -> usize {
        self.h2.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// The sweeper of one pool: sleeps until the earliest connection deadline (holding only a weak
/// reference, so an unused pool can be dropped), closes what is due, and ends when the pool holds
/// no connection.
async fn sweep(pool: Weak<Upstream>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(up) = pool.upgrade() else { return };
            match up.evict(Instant::now()) {
                Some(n) => n,
                None => {
                    up.sweeping.store(false, Ordering::Release);
                    // A connection pooled meanwhile saw `sweeping` set and started nothing.
                    let refill = up.idle_connections() > 0 || up.h2_connections() > 0;
                    if refill && !up.sweeping.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = wake.notified() => {}
        }
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

type PoolKey = (SocketAddr, UpstreamProtocol, PoolSettings);

/// All endpoint pools of the proxy, keyed by address, protocol and connection settings.
#[derive(Debug, Default)]
pub struct Registry {
    pools: RwLock<HashMap<PoolKey, Arc<Upstream>>>,
}

impl Registry {
    /// The pool with default connection settings.
    pub fn get(&self, addr: SocketAddr, protocol: UpstreamProtocol) -> Arc<Upstream> {
        self.get_with(addr, protocol, PoolSettings::default())
    }

    pub fn get_with(
        &self,
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        settings: PoolSettings,
    ) -> Arc<Upstream> {
        let key = (addr, protocol, settings);
        if let Some(u) = self
            .pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return u.clone();
        }
        self.pools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(Upstream::new(addr, protocol, settings)))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_cluster() {
        let d = PoolSettings::from_cluster(&r::Cluster::default());
        assert_eq!(d, PoolSettings::default());
        assert_eq!(d.idle_timeout, Some(DEFAULT_IDLE_TIMEOUT));
        let c = r::Cluster {
            connect_timeout_ms: 2000,
            connection_pool: Some(r::ConnectionPool {
                tcp: Some(r::connection_pool::Tcp {
                    connect_timeout_ms: 250,
                    keepalive_time_ms: 7000,
                    keepalive_probes: 3,
                    max_connection_duration_ms: 500,
                    ..Default::default()
                }),
                http: Some(r::connection_pool::Http {
                    idle_timeout_ms: 300,
                    max_requests_per_connection: 3,
                    max_concurrent_streams: 2,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let s = PoolSettings::from_cluster(&c);
        assert_eq!(s.connect_timeout, Duration::from_millis(250));
        assert_eq!(
            s.keepalive,
            Some(Keepalive {
                probes: Some(3),
                time: Some(Duration::from_secs(7)),
                interval: None
            })
        );
        assert_eq!(s.max_connection_duration, Some(Duration::from_millis(500)));
        assert_eq!(s.idle_timeout, Some(Duration::from_millis(300)));
        assert_eq!(s.max_requests_per_connection, Some(3));
        assert_eq!(s.max_concurrent_streams, Some(2));
        // The cluster-level timeout applies when the pool sets none.
        let mut c2 = c.clone();
        c2.connection_pool = None;
        assert_eq!(
            PoolSettings::from_cluster(&c2).connect_timeout,
            Duration::from_secs(2)
        );
    }

    #[tokio::test]
    async fn inbound_clusters_connect_from_the_passthrough_source() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inbound = r::Cluster {
            name: "inbound|9080||".into(),
            ..Default::default()
        };
        let settings = PoolSettings::from_cluster(&inbound);
        assert!(settings.bypass_capture);
        let _s = connect_tcp(l.local_addr().unwrap(), &settings)
            .await
            .unwrap();
        let (_, peer) = l.accept().await.unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 6]));

        let passthrough = r::Cluster {
            name: "InboundPassthroughCluster".into(),
            ..Default::default()
        };
        assert!(PoolSettings::from_cluster(&passthrough).bypass_capture);
        let outbound = r::Cluster {
            name: "outbound|9080||reviews.default.svc.cluster.local".into(),
            ..Default::default()
        };
        let settings = PoolSettings::from_cluster(&outbound);
        assert!(!settings.bypass_capture);
        let _s = connect_tcp(l.local_addr().unwrap(), &settings)
            .await
            .unwrap();
        let (_, peer) = l.accept().await.unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 1]));
    }

    #[tokio::test]
    async fn keepalive_options_reach_the_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let settings = PoolSettings {
            keepalive: Some(Keepalive {
                probes: Some(4),
                time: Some(Duration::from_secs(11)),
                interval: Some(Duration::from_secs(3)),
            }),
            ..Default::default()
        };
        let s = connect_tcp(l.local_addr().unwrap(), &settings)
            .await
            .unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(11));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        let plain = connect_tcp(l.local_addr().unwrap(), &PoolSettings::default())
            .await
            .unwrap();
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap());
    }

    #[test]
    fn different_settings_different_pools() {
        let reg = Registry::default();
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let p1 = reg.get(a, UpstreamProtocol::Http1);
        let p2 = reg.get(a, UpstreamProtocol::Http1);
        assert!(Arc::ptr_eq(&p1, &p2));
        let short = PoolSettings {
            idle_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let p3 = reg.get_with(a, UpstreamProtocol::Http1, short);
        assert!(!Arc::ptr_eq(&p1, &p3));
        assert_eq!(p3.settings, short);
        assert_eq!(reg.len(), 2);
    }
}
