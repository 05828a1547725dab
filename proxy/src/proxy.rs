//! The proxy runtime: shared state, config application (compile + bind + atomic swap), accept
//! loops and per-connection dispatch (sniff, choose a chain, serve HTTP or copy TCP).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use halyard_config::ProxyResources;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::error::ConfigError;
use crate::http::{ConnInfo, ProxyService};
use crate::metrics::Metrics;
use crate::snapshot::{self, Codec, CompileCtx, ConnMeta, Handler, NodeInfo, Snapshot};
use crate::sniff::{self, Detected, Prefixed};
use crate::upstream::Registry;

/// Changes the log filter at runtime (admin `/logging?level=`).
pub type LogReloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub downstream_cx_total: AtomicU64,
    pub downstream_cx_active: AtomicU64,
    pub config_applied: AtomicU64,
    pub config_rejected: AtomicU64,
}

/// State shared by every connection and the admin server.
pub struct Shared {
    pub state: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    pub registry: Registry,
    pub access_log: Option<AccessLog>,
    pub node: NodeInfo,
    pub sniff_timeout: Duration,
    pub ready: AtomicBool,
    pub stats: ServerStats,
    pub started: Instant,
    /// Set when draining: connections finish in-flight requests and close.
    pub drain: watch::Sender<bool>,
    /// Set by `/quitquitquit` or a signal: the process should exit.
    pub quit: watch::Sender<bool>,
    pub log_reloader: Option<LogReloader>,
    pub last_error: Mutex<Option<String>>,
    /// Istio metadata exchange: this node's headers (encoded once) and the peers seen.
    pub peer: crate::peer::PeerExchange,
    /// Last good answers for DNS clusters' names (see `dns`).
    pub dns: crate::dns::DnsCache,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

/// How to build a proxy.
#[derive(Default)]
pub struct ProxyOptions {
    pub node: NodeInfo,
    pub access_log: Option<AccessLog>,
    /// How long to wait for the first bytes when sniffing (default 100 ms).
    pub sniff_timeout: Option<Duration>,
    pub log_reloader: Option<LogReloader>,
    /// Kubernetes cluster id sent in peer metadata (Istio's `CLUSTER_ID`).
    pub cluster_id: String,
}

struct Bound {
    addr: SocketAddr,
    local: SocketAddr,
    task: JoinHandle<()>,
}

/// A running proxy. Create inside a Tokio runtime; feed it config with [`Proxy::apply`].
pub struct Proxy {
    shared: Arc<Shared>,
    bound: Mutex<HashMap<String, Bound>>,
    handle: tokio::runtime::Handle,
    /// A trim of freed memory is scheduled (see [`Proxy::schedule_trim`]).
    trim_pending: Arc<AtomicBool>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Must be called from within a Tokio runtime (listeners are spawned on it).
    pub fn new(opts: ProxyOptions) -> Arc<Proxy> {
        let peer = crate::peer::PeerExchange::new(&opts.node, &opts.cluster_id);
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(Snapshot::empty()),
            metrics: Metrics::new(),
            registry: Registry::default(),
            access_log: opts.access_log,
            node: opts.node,
            sniff_timeout: opts.sniff_timeout.unwrap_or(Duration::from_millis(100)),
            ready: AtomicBool::new(false),
            stats: ServerStats::default(),
            started: Instant::now(),
            drain: watch::Sender::new(false),
            quit: watch::Sender::new(false),
            log_reloader: opts.log_reloader,
            last_error: Mutex::new(None),
            peer,
            dns: crate::dns::DnsCache::default(),
        });
        Arc::new(Proxy {
            shared,
            bound: Mutex::new(HashMap::new()),
            handle: tokio::runtime::Handle::current(),
            trim_pending: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The address each listener is bound to (useful with port 0 in tests).
    pub fn listener_addrs(&self) -> HashMap<String, SocketAddr> {
        self.bound
            .lock()
            .map(|b| b.iter().map(|(n, b)| (n.clone(), b.local)).collect())
            .unwrap_or_default()
    }

    /// Validate, compile and swap in a config. New listeners are bound first (a bind failure
    /// rejects the whole config and keeps the previous one); removed listeners stop accepting,
    /// connections already open finish on the config they hold.
    pub fn apply(&self, res: &ProxyResources) -> Result<(), ConfigError> {
        let result = self.apply_inner(res);
        match &result {
            Ok(()) => {
                self.shared
                    .stats
                    .config_applied
                    .fetch_add(1, Ordering::Relaxed);
                self.shared.ready.store(true, Ordering::Relaxed);
                self.schedule_trim();
            }
            Err(e) => {
                self.shared
                    .stats
                    .config_rejected
                    .fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.shared.last_error.lock() {
                    *last = Some(e.to_string());
                }
            }
        }
        result
    }

    /// Return the memory a config change freed to the kernel shortly after the change, once the
    /// caller has dropped the resources too; changes in quick succession share one trim.
    fn schedule_trim(&self) {
        if self.trim_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let pending = self.trim_pending.clone();
        self.handle.spawn(async move {
            tokio::time::sleep(TRIM_DELAY).await;
            pending.store(false, Ordering::Release);
            release_freed_memory();
        });
    }

    fn apply_inner(&self, res: &ProxyResources) -> Result<(), ConfigError> {
        let ctx = CompileCtx {
            metrics: &self.shared.metrics,
            registry: &self.shared.registry,
            node: &self.shared.node,
            dns: &self.shared.dns,
        };
        let snap = snapshot::compile(res, &ctx)?;
        let _rt = self.handle.enter();
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        // Bind what is new or moved before touching anything.
        let mut fresh: Vec<(String, Bound)> = Vec::new();
        for l in &snap.listeners {
            if bound.get(&l.name).is_some_and(|b| b.addr == l.address) {
                continue;
            }
            let listener = match bind(l.address) {
                Ok(x) => x,
                Err(e) => {
                    for (_, b) in fresh {
                        b.task.abort();
                    }
                    return Err(ConfigError::Bind {
                        name: l.name.clone(),
                        addr: l.address,
                        why: e.to_string(),
                    });
                }
            };
            let local = listener.local_addr().unwrap_or(l.address);
            let task =
                self.handle
                    .spawn(accept_loop(self.shared.clone(), l.name.clone(), listener));
            fresh.push((
                l.name.clone(),
                Bound {
                    addr: l.address,
                    local,
                    task,
                },
            ));
        }
        self.shared.state.store(Arc::new(snap));
        let snap = self.shared.state.load();
        bound.retain(|name, b| {
            let keep = snap.listener(name).is_some_and(|l| l.address == b.addr);
            if !keep {
                b.task.abort();
            }
            keep
        });
        for (name, b) in fresh {
            if let Some(old) = bound.insert(name, b) {
                old.task.abort();
            }
        }
        drop(bound);
        self.shared.registry.prune();
        Ok(())
    }

    /// Stop accepting and ask open connections to finish (admin `/drain_listeners`, SIGTERM).
    pub fn drain(&self) {
        self.shared.drain.send_replace(true);
        if let Ok(mut bound) = self.bound.lock() {
            for (_, b) in bound.drain() {
                b.task.abort();
            }
        }
    }
}

impl crate::xds::ConfigSink for Proxy {
    fn apply(&self, resources: &ProxyResources) -> Result<(), String> {
        Proxy::apply(self, resources).map_err(|e| e.to_string())
    }
}

/// How long after a config change freed memory is returned to the kernel.
const TRIM_DELAY: Duration = Duration::from_millis(200);

/// Compiling a config frees much more than it keeps (the parsed resources, the previous
/// snapshot); glibc keeps freed pages mapped, so hand them back to the kernel once per config
/// rather than carry them as resident memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap under its locks; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

async fn accept_loop(shared: Arc<Shared>, name: String, listener: TcpListener) {
    let name: Arc<str> = name.into();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                shared
                    .stats
                    .downstream_cx_total
                    .fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_conn(shared.clone(), name.clone(), stream, peer));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Read until the protocol is known, the timeout passes, or the peer stops sending.
async fn sniff_prefix(stream: &mut TcpStream, timeout: Duration) -> (Bytes, Detected) {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match sniff::detect(&buf) {
            Detected::NeedMore => {}
            d => return (buf.freeze(), d),
        }
        if buf.len() >= 16 * 1024 {
            // A huge ClientHello: treat as TLS without routing info.
            let d = if buf.first() == Some(&0x16) {
                Detected::Tls(Default::default())
            } else {
                Detected::Opaque
            };
            return (buf.freeze(), d);
        }
        buf.reserve(1024);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            // EOF, error or timeout (server-first protocol): what we have is opaque.
            _ => return (buf.freeze(), Detected::Opaque),
        }
    }
}

struct ActiveConn<'a>(&'a ServerStats);
impl Drop for ActiveConn<'_> {
    fn drop(&mut self) {
        self.0.downstream_cx_active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_conn(
    shared: Arc<Shared>,
    listener: Arc<str>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    shared
        .stats
        .downstream_cx_active
        .fetch_add(1, Ordering::Relaxed);
    let _active = ActiveConn(&shared.stats);
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let snap = shared.state.load_full();
    let Some(l) = snap.listener(&listener) else {
        return;
    };
    let destination = if l.use_original_dst {
        crate::orig_dst::original_dst(&stream, local).unwrap_or(local)
    } else {
        local
    };
    let (prefix, detected) = if l.sniff {
        sniff_prefix(&mut stream, shared.sniff_timeout).await
    } else {
        (Bytes::new(), Detected::Opaque)
    };
    let (tls, sni, alpn) = match &detected {
        Detected::Tls(ch) => (true, ch.sni.as_deref(), ch.alpn.as_slice()),
        _ => (false, None, &[][..]),
    };
    let meta = ConnMeta {
        destination,
        source: peer,
        tls,
        sni,
        alpn,
    };
    let Some(chain) = l.select(&meta) else {
        tracing::debug!(listener = %listener, %destination, "no filter chain matched; closing");
        return;
    };
    let io = Prefixed::new(prefix, stream);
    match &chain.handler {
        Handler::Tcp { clusters } => {
            crate::tcp::proxy(
                &shared,
                &snap,
                io,
                clusters,
                destination,
                local,
                peer,
                l.direction.reporter(),
            )
            .await;
        }
        Handler::Http { route_key, codec } => {
            let h2 = match codec {
                Codec::Http2 => true,
                Codec::Http1 => false,
                Codec::Auto => detected == Detected::Http2,
            };
            let info = Arc::new(ConnInfo {
                shared: shared.clone(),
                route_key: route_key.clone(),
                reporter: l.direction.reporter(),
                downstream: peer,
                destination,
                listener_addr: local,
                mtls: false,
            });
            drop(snap);
            serve_http(info, io, h2).await;
        }
    }
}

/// Resolves once the proxy starts draining (never, if the sender is gone).
pub(crate) async fn drained(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn serve_http(info: Arc<ConnInfo>, io: Prefixed<TcpStream>, h2: bool) {
    let mut drain = info.shared.drain.subscribe();
    if h2 {
        serve_hyper(info, io, true, &mut drain).await;
    } else {
        // The proxy's own server for the common request; it hands other requests to hyper's.
        crate::server_h1::serve(info, io, &mut drain).await;
    }
}

/// Serve a connection with hyper's HTTP/2 or HTTP/1.1 server until it ends; draining shuts it
/// down gracefully.
pub(crate) async fn serve_hyper<I>(
    info: Arc<ConnInfo>,
    io: I,
    h2: bool,
    drain: &mut watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = ProxyService(info);
    let io = TokioIo::new(io);
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc);
        tokio::pin!(conn);
        // Biased: the connection first, without drawing a random branch order on every wake-up.
        let res = tokio::select! {
            biased;
            r = conn.as_mut() => r,
            _ = drained(drain) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "downstream http/2 connection ended");
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .with_upgrades();
        tokio::pin!(conn);
        // Biased: the connection first, without drawing a random branch order on every wake-up.
        let res = tokio::select! {
            biased;
            r = conn.as_mut() => r,
            _ = drained(drain) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "downstream http/1.1 connection ended");
        }
    }
}
