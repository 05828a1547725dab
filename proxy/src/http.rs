//! The HTTP request path: route, pick a cluster and endpoint, forward, stream the response back,
//! record metrics and the access log when the response body ends.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;

use crate::access_log::LogEntry;
use crate::body::Body;
use crate::cluster::{Cluster, ClusterKind};
use crate::lb::{HashKey, hash64};
use crate::metrics::{PeersId, Reporter, RequestProtocol, RequestRecord, ResponseFlags};
use crate::proxy::Shared;
use crate::route::{Action, RequestView};
use crate::snapshot::Snapshot;
use crate::upstream::{ActiveGuard, UpstreamProtocol};

/// What the request path knows about the downstream connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub shared: Arc<Shared>,
    /// Key of the route table in the snapshot (named or inline routes).
    pub route_key: String,
    pub reporter: Reporter,
    pub downstream: SocketAddr,
    /// Original destination (capture) or the listener's own address.
    pub destination: SocketAddr,
    pub listener_addr: SocketAddr,
    pub mtls: bool,
}

/// The hyper service for one downstream connection.
#[derive(Debug, Clone)]
pub struct ProxyService(pub Arc<ConnInfo>);

type BoxFut = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFut;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let conn = self.0.clone();
        Box::pin(async move { Ok(handle(conn, req.map(Body::incoming)).await) })
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Envoy's body for a connect failure / reset before headers.
pub fn upstream_error_body(reason: &str) -> String {
    format!("upstream connect error or disconnect/reset before headers. reset reason: {reason}")
}

thread_local! {
    /// wyrand state of this thread, seeded once from the OS-seeded `rand` generator.
    static ID_RNG: std::cell::Cell<u64> = std::cell::Cell::new(rand::random());
}

/// 64 random bits from this thread's wyrand generator: request ids need uniqueness, not secrecy,
/// and `rand::random` goes through `ThreadRng` (a reference-counted ChaCha12 state) on every call.
fn fast_random_u64() -> u64 {
    ID_RNG.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A new `x-request-id`: a random UUID v4.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let r: u128 = (u128::from(fast_random_u64()) << 64) | u128::from(fast_random_u64());
    // version 4, variant 10xx
    let r = (r & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut nibble = 0;
    for (i, b) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *b = b'-';
            continue;
        }
        *b = HEX[((r >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), keeping `te: trailers` for gRPC and, when
/// `keep_upgrade`, the upgrade handshake.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names instead of a lookup per name.
    if !any_header(h, |n| {
        n == header::CONNECTION
            || n == header::UPGRADE
            || n == header::TRANSFER_ENCODING
            || n == header::TE
            || n == KEEP_ALIVE
            || n == PROXY_CONNECTION
    }) {
        return;
    }
    if let Some(conn) = h.get(header::CONNECTION).cloned()
        && let Ok(list) = conn.to_str()
    {
        for name in list.split(',') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("upgrade") && keep_upgrade {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes())
                && n != header::TE
            {
                h.remove(n);
            }
        }
    }
    if !keep_upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TRANSFER_ENCODING);
    if let Some(te) = h.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        h.remove(header::TE);
    }
}

/// A header value for a number, without allocating for the small ones (upstream service time
/// in milliseconds, local replies' lengths).
pub fn number_value(n: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..100u64).map(HeaderValue::from).collect());
    match usize::try_from(n).ok().and_then(|i| SMALL.get(i)) {
        Some(v) => v.clone(),
        None => HeaderValue::from(n),
    }
}

/// Whether any header name satisfies `f`: one pass over the names, cheaper than a hashed lookup
/// per name when (as usual) none of them is there.
pub fn any_header(h: &HeaderMap, f: impl Fn(&HeaderName) -> bool) -> bool {
    h.keys().any(f)
}

fn header_bytes(h: &HeaderMap) -> u64 {
    h.iter()
        .map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64)
        .sum()
}

/// What the request path reads from the request headers, found in one pass over them rather
/// than a hashed lookup each (the first value counts, as `HeaderMap::get`'s).
#[derive(Debug, Default)]
struct RequestFacts {
    grpc: Option<bool>,
    /// The kubelet's probes are not counted in metrics.
    probe: Option<bool>,
    host: Option<HeaderValue>,
    origin: Option<HeaderValue>,
}

impl RequestFacts {
    fn of(h: &HeaderMap) -> Self {
        let mut f = RequestFacts::default();
        for (name, value) in h {
            if name == header::HOST {
                f.host.get_or_insert_with(|| value.clone());
            } else if name == header::CONTENT_TYPE {
                f.grpc
                    .get_or_insert(value.as_bytes().starts_with(b"application/grpc"));
            } else if name == header::USER_AGENT {
                f.probe
                    .get_or_insert(value.as_bytes().starts_with(b"kube-probe"));
            } else if name == header::ORIGIN {
                f.origin.get_or_insert_with(|| value.clone());
            }
        }
        f
    }
}

fn grpc_status_of(h: &HeaderMap) -> Option<u16> {
    h.get(&GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// Metrics and access-log state of one request, recorded when the response body is dropped.
struct Completion {
    shared: Arc<Shared>,
    peers: Arc<PeersId>,
    reporter: Reporter,
    start: Instant,
    code: u16,
    flags: ResponseFlags,
    protocol: RequestProtocol,
    grpc_status: Option<u16>,
    mtls: bool,
    request_bytes: u64,
    request_body: Option<Arc<AtomicU64>>,
    response_bytes: u64,
    /// Not counted in metrics (kubelet probes).
    skip_metrics: bool,
    log: Option<Box<LogEntry>>,
    _active: Option<ActiveGuard>,
    /// Circuit-breaker slot and retry, released when the response ends.
    _hold: Option<crate::resilience::forward::Hold>,
}

impl Completion {
    fn finish(&mut self) {
        let request_bytes = self.request_bytes
            + self
                .request_body
                .as_ref()
                .map_or(0, |c| c.load(Ordering::Relaxed));
        let duration = self.start.elapsed();
        if !self.skip_metrics {
            self.shared.metrics.record_request(&RequestRecord {
                reporter: self.reporter,
                peers: &self.peers,
                code: self.code,
                grpc_status: self.grpc_status,
                flags: self.flags,
                protocol: self.protocol,
                mtls: self.mtls,
                duration_ms: duration.as_secs_f64() * 1000.0,
                request_bytes,
                response_bytes: self.response_bytes,
            });
        }
        if let (Some(mut log), Some(sink)) = (self.log.take(), self.shared.access_log.as_ref()) {
            log.code = self.code;
            log.flags = self.flags;
            log.bytes_received = request_bytes;
            log.bytes_sent = self.response_bytes;
            log.duration_ms = duration.as_millis() as u64;
            sink.write(*log);
        }
    }
}

/// The response body handed to hyper: streams the upstream body (or a local one) and records
/// the request when it is dropped (fully sent, or the downstream went away).
pub struct ResponseBody {
    body: Body,
    done: Option<Box<Completion>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("body", &self.body)
            .finish()
    }
}

impl ResponseBody {
    pub fn plain(body: Body) -> Self {
        ResponseBody { body, done: None }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BodyError>>> {
        let me = self.get_mut();
        let res = Pin::new(&mut me.body).poll_frame(cx);
        if let (Some(done), Poll::Ready(r)) = (me.done.as_mut(), &res) {
            match r {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        done.response_bytes += d.len() as u64;
                    } else if let Some(t) = f.trailers_ref() {
                        done.response_bytes += header_bytes(t);
                        if let Some(g) = grpc_status_of(t) {
                            done.grpc_status = Some(g);
                        }
                    }
                }
                Some(Err(_)) => done.flags = done.flags.union(ResponseFlags::UC),
                None => {}
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(mut d) = self.done.take() {
            d.finish();
        }
    }
}

/// Per-request state while routing.
struct Exchange {
    start: Instant,
    method: Method,
    protocol: RequestProtocol,
    request_bytes: u64,
    request_body: Option<Arc<AtomicU64>>,
    skip_metrics: bool,
    log: Option<Box<LogEntry>>,
    hold: Option<crate::resilience::forward::Hold>,
    /// Metadata exchange: the caller (inbound) or the callee (outbound), for metric labels.
    peer: Option<Arc<crate::peer::Peer>>,
    /// Inbound: the caller took part in the exchange, so our metadata goes on the response.
    reply_metadata: bool,
}

impl Exchange {
    fn complete(
        self,
        conn: &ConnInfo,
        peers: Arc<PeersId>,
        mut resp: Response<Body>,
        flags: ResponseFlags,
        active: Option<ActiveGuard>,
    ) -> Response<ResponseBody> {
        let peers = match &self.peer {
            Some(p) => conn
                .shared
                .peer
                .labels(&conn.shared.metrics, p, peers, conn.reporter),
            None => peers,
        };
        if self.reply_metadata {
            conn.shared.peer.add(resp.headers_mut());
        }
        let code = resp.status().as_u16();
        // Istio's `grpc_response_status` is only for gRPC requests.
        let grpc_status = if self.protocol == RequestProtocol::Grpc {
            grpc_status_of(resp.headers())
        } else {
            None
        };
        let response_bytes = header_bytes(resp.headers());
        if self.method == Method::HEAD {
            *resp.body_mut() = Body::Empty;
        }
        let done = Completion {
            shared: conn.shared.clone(),
            peers,
            reporter: conn.reporter,
            start: self.start,
            code,
            flags,
            protocol: self.protocol,
            grpc_status,
            mtls: conn.mtls,
            request_bytes: self.request_bytes,
            request_body: self.request_body,
            response_bytes,
            skip_metrics: self.skip_metrics,
            log: self.log,
            _active: active,
            _hold: self.hold,
        };
        resp.map(|body| ResponseBody {
            body,
            done: Some(Box::new(done)),
        })
    }

    fn local(
        self,
        conn: &ConnInfo,
        peers: Arc<PeersId>,
        status: StatusCode,
        body: impl Into<Bytes>,
        flags: ResponseFlags,
    ) -> Response<ResponseBody> {
        let body = body.into();
        let mut resp = Response::new(Body::full(body.clone()));
        *resp.status_mut() = status;
        if !body.is_empty() {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, number_value(body.len() as u64));
        if flags.contains(ResponseFlags::UO) {
            // Envoy marks circuit-breaker refusals so callers can tell them from the app's 503s.
            resp.headers_mut().insert(
                HeaderName::from_static("x-envoy-overloaded"),
                HeaderValue::from_static("true"),
            );
        }
        self.complete(conn, peers, resp, flags, None)
    }
}

/// Compute the consistent-hash key of a request; may return a cookie to set on the response.
fn hash_for(
    key: &HashKey,
    headers: &HeaderMap,
    query: Option<&str>,
    downstream: SocketAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    match key {
        HashKey::Header(name) => (
            headers.get(name.as_str()).map(|v| hash64(v.as_bytes())),
            None,
        ),
        HashKey::SourceIp => (Some(hash64(downstream.ip().to_string().as_bytes())), None),
        HashKey::QueryParameter(name) => (
            crate::route::query_param(query, name).map(|v| hash64(v.as_bytes())),
            None,
        ),
        HashKey::Cookie {
            name,
            path,
            ttl_secs,
        } => {
            let found = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then(|| v.to_string())
                });
            match found {
                Some(v) => (Some(hash64(v.as_bytes())), None),
                None if *ttl_secs > 0 => {
                    // Envoy issues the cookie when a TTL is configured; the value is random so
                    // new clients spread over endpoints, then stick.
                    let v = format!("{:016x}", rand::random::<u64>());
                    let mut c = format!("{name}=\"{v}\"; Max-Age={ttl_secs}");
                    if !path.is_empty() {
                        let _ = write!(c, "; Path={path}");
                    }
                    c.push_str("; HttpOnly");
                    (
                        Some(hash64(format!("\"{v}\"").as_bytes())),
                        HeaderValue::from_str(&c).ok(),
                    )
                }
                None => (None, None),
            }
        }
    }
}

/// One request, from routing to the response whose body streams back. hyper's servers (HTTP/2,
/// and HTTP/1.1 connections handed over by [`crate::server_h1`]) and the proxy's own HTTP/1.1
/// server call it.
pub(crate) async fn handle(conn: Arc<ConnInfo>, mut req: Request<Body>) -> Response<ResponseBody> {
    let start = Instant::now();
    let shared = &conn.shared;
    let snap: Arc<Snapshot> = shared.state.load_full();
    let unknown = shared.metrics.unknown_peers().clone();

    req.headers_mut()
        .entry(X_REQUEST_ID.clone())
        .or_insert_with(new_request_id);
    let facts = RequestFacts::of(req.headers());
    // Inbound: the caller's metadata is read and never reaches the app.
    let (peer, reply_metadata) = if conn.reporter == Reporter::Destination {
        shared.peer.take(req.headers_mut())
    } else {
        (None, false)
    };
    let protocol = if facts.grpc == Some(true) {
        RequestProtocol::Grpc
    } else {
        RequestProtocol::Http
    };
    let skip_metrics = facts.probe == Some(true);
    let request_body = if req.body().is_end_stream() {
        None
    } else {
        Some(Arc::new(AtomicU64::new(0)))
    };
    let log = shared.access_log.as_ref().map(|_| {
        Box::new(LogEntry::from_request(
            &req,
            conn.downstream,
            conn.destination,
        ))
    });
    let ex = Exchange {
        start,
        method: req.method().clone(),
        protocol,
        request_bytes: header_bytes(req.headers()),
        request_body,
        skip_metrics,
        log,
        hold: None,
        peer,
        reply_metadata,
    };

    // Cheap clones (shared buffers) so the request can be taken apart later.
    let uri = req.uri().clone();
    let host_header = facts.host;
    let authority: &str = uri
        .authority()
        .map(Authority::as_str)
        .or_else(|| host_header.as_ref().and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let scheme = uri.scheme_str().unwrap_or("http");
    let path = uri.path();
    let query = uri.query();

    let Some(table) = snap.routes.get(&conn.route_key) else {
        return ex.local(&conn, unknown, StatusCode::NOT_FOUND, "", ResponseFlags::NR);
    };
    let view = RequestView {
        method: req.method(),
        scheme,
        authority,
        path,
        query,
        headers: req.headers(),
        port: conn.destination.port(),
    };
    let Some((_vh, route, matched)) = table.route(&view) else {
        return ex.local(&conn, unknown, StatusCode::NOT_FOUND, "", ResponseFlags::NR);
    };
    let mut ex = ex;
    if let Some(log) = ex.log.as_mut() {
        log.route_name = route.name.clone();
    }

    // CORS preflight answered here when the origin is allowed.
    let origin = facts.origin;
    if let (Some(cors), Some(origin)) = (&route.cors, &origin)
        && cors.is_preflight(req.method(), req.headers())
        && cors.origin_allowed(origin.to_str().unwrap_or(""))
    {
        let mut resp = Response::new(Body::Empty);
        cors.preflight_headers(origin, resp.headers_mut());
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, number_value(0));
        return ex.complete(&conn, unknown, resp, ResponseFlags::NONE, None);
    }

    let fwd = match &route.action {
        Action::Direct { status, body } => {
            let mut resp = Response::new(Body::full(body.clone()));
            *resp.status_mut() = *status;
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, number_value(body.len() as u64));
            route.response_headers.apply(resp.headers_mut());
            return ex.complete(&conn, unknown, resp, ResponseFlags::NONE, None);
        }
        Action::Redirect(r) => {
            let pq = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
            let loc = r.location(scheme, authority, pq);
            let mut resp = Response::new(Body::Empty);
            *resp.status_mut() = r.code;
            if let Ok(v) = HeaderValue::from_str(&loc) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, number_value(0));
            route.response_headers.apply(resp.headers_mut());
            return ex.complete(&conn, unknown, resp, ResponseFlags::NONE, None);
        }
        Action::Forward(f) => f,
    };

    let Some(dest) = fwd.clusters.pick_dest(fast_random_u64()) else {
        return ex.local(
            &conn,
            unknown,
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
            ResponseFlags::UH,
        );
    };
    let Some(cluster) = snap.clusters.get(dest.cluster) else {
        return ex.local(
            &conn,
            unknown,
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
            ResponseFlags::UH,
        );
    };
    let cluster: &Arc<Cluster> = cluster;
    if let Some(log) = ex.log.as_mut() {
        log.upstream_cluster = cluster.name.clone();
    }

    // Fault injection (VirtualService `fault`) on this route only.
    let mut flags = ResponseFlags::NONE;
    let fault = if fwd.resilience.fault.is_empty() {
        crate::resilience::fault::FaultDecision::default()
    } else {
        fwd.resilience.fault.decide(rand::random(), rand::random())
    };
    if let Some(d) = fault.delay {
        tokio::time::sleep(d).await;
        flags = flags.union(ResponseFlags::DI);
    }
    if let Some(a) = fault.abort {
        let resp = crate::resilience::forward::abort_response(a);
        let flags = flags.union(ResponseFlags::FI);
        return ex.complete(&conn, cluster.peers.clone(), resp, flags, None);
    }

    // Endpoints are picked per attempt (`resilience::forward`); refuse what cannot be forwarded.
    let mut set_cookie = None;
    let hash = match cluster.kind {
        ClusterKind::Blackhole => {
            return ex.local(
                &conn,
                cluster.peers.clone(),
                StatusCode::BAD_GATEWAY,
                "",
                ResponseFlags::NONE,
            );
        }
        // No original destination: forwarding would loop back into this listener.
        ClusterKind::OriginalDst if conn.destination == conn.listener_addr => {
            return ex.local(
                &conn,
                cluster.peers.clone(),
                StatusCode::BAD_GATEWAY,
                "",
                ResponseFlags::NONE,
            );
        }
        ClusterKind::OriginalDst => None,
        ClusterKind::Endpoints => cluster.hash_key().and_then(|k| {
            let (h, cookie) = hash_for(k, req.headers(), query, conn.downstream);
            set_cookie = cookie;
            h
        }),
    };
    let protocol = upstream_protocol(cluster, req.version());

    // Build the upstream request.
    let is_upgrade = req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && protocol == UpstreamProtocol::Http1;
    let downstream_upgrade = if is_upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, is_upgrade);
    let new_path = fwd.rewrite.path(path, matched);
    let new_authority = fwd.rewrite.authority.as_deref();
    if new_path.is_some() || new_authority.is_some() {
        parts.headers.insert(
            HeaderName::from_static("x-envoy-original-path"),
            HeaderValue::from_str(path).unwrap_or(HeaderValue::from_static("/")),
        );
    }
    route.request_headers.apply(&mut parts.headers);
    dest.request_headers.apply(&mut parts.headers);
    parts
        .headers
        .entry(X_FORWARDED_PROTO.clone())
        .or_insert(HeaderValue::from_static("http"));
    let up_authority = new_authority.unwrap_or(authority);
    let pq: PathAndQuery = match (&new_path, &query) {
        (None, _) => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        (Some(p), None) => {
            PathAndQuery::try_from(p.as_str()).unwrap_or_else(|_| PathAndQuery::from_static("/"))
        }
        (Some(p), Some(q)) => PathAndQuery::try_from(format!("{p}?{q}"))
            .unwrap_or_else(|_| PathAndQuery::from_static("/")),
    };
    match protocol {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(pq);
            if (new_authority.is_some() || host_header.is_none())
                && let Ok(v) = HeaderValue::from_str(up_authority)
            {
                parts.headers.insert(header::HOST, v);
            }
        }
        UpstreamProtocol::Http2 => {
            parts.version = Version::HTTP_2;
            let mut up = http::uri::Parts::default();
            up.scheme = Some(Scheme::HTTP);
            up.authority = Authority::try_from(up_authority).ok();
            up.path_and_query = Some(pq);
            if let Ok(u) = Uri::from_parts(up) {
                parts.uri = u;
            }
            parts.headers.remove(header::HOST);
        }
    }
    // Ours only to in-mesh upstreams; never forward any to the app or out of the mesh.
    shared.peer.to_upstream(
        &mut parts.headers,
        conn.reporter == Reporter::Source && cluster.peer_metadata,
    );
    let up_body = match (&ex.request_body, body.is_end_stream()) {
        (_, true) => Body::Empty,
        (Some(c), false) => body.counted(c.clone()),
        (None, false) => body,
    };
    let target = crate::resilience::forward::Target {
        snap: &snap,
        registry: &shared.registry,
        cluster,
        policy: &fwd.resilience,
        timeout: fwd.timeout,
        protocol,
        hash,
        original_dst: conn.destination,
        upgrade: is_upgrade,
        authority,
    };
    let sent = match crate::resilience::forward::send(target, parts, up_body).await {
        Ok(sent) => sent,
        Err(r) => {
            if let Some(log) = ex.log.as_mut() {
                log.upstream_host = r.upstream;
            }
            return ex.local(&conn, r.peers, r.status, r.body, flags.union(r.flags));
        }
    };
    if let Some(log) = ex.log.as_mut() {
        log.upstream_host = Some(sent.upstream.addr);
    }
    let (mut resp, upstream, peers, active) = (sent.resp, sent.upstream, sent.peers, sent.active);
    let upstream_start = sent.attempt_start;
    flags = flags.union(sent.flags);
    ex.hold = Some(sent.hold);
    upstream.stats.rq_success.fetch_add(1, Ordering::Relaxed);

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(down) = downstream_upgrade
    {
        let up = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(down, up) {
                Ok((d, u)) => {
                    let mut d = TokioIo::new(d);
                    let mut u = TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }

    if conn.reporter == Reporter::Source && cluster.peer_metadata {
        ex.peer = shared.peer.take(resp.headers_mut()).0;
    } else {
        crate::peer::PeerExchange::strip(resp.headers_mut());
    }
    let keep_upgrade = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(resp.headers_mut(), keep_upgrade);
    route.response_headers.apply(resp.headers_mut());
    dest.response_headers.apply(resp.headers_mut());
    if let (Some(cors), Some(origin)) = (&route.cors, &origin)
        && cors.origin_allowed(origin.to_str().unwrap_or(""))
    {
        cors.response_headers(origin, resp.headers_mut());
    }
    if let Some(c) = set_cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    let ms = upstream_start.elapsed().as_millis() as u64;
    resp.headers_mut()
        .insert(X_ENVOY_UPSTREAM_SERVICE_TIME.clone(), number_value(ms));
    ex.complete(&conn, peers, resp, flags, Some(active))
}

fn upstream_protocol(cluster: &Cluster, downstream: Version) -> UpstreamProtocol {
    if cluster.use_downstream_protocol {
        if downstream == Version::HTTP_2 {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Http1
        }
    } else {
        cluster.protocol
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        // Every hex digit of the random part shows up in every random position.
        let many: Vec<String> = (0..2_000)
            .map(|_| new_request_id().to_str().unwrap().to_string())
            .collect();
        for pos in (0..36).filter(|p| !matches!(p, 8 | 13 | 14 | 18 | 19 | 23)) {
            let seen: std::collections::HashSet<u8> =
                many.iter().map(|s| s.as_bytes()[pos]).collect();
            assert_eq!(seen.len(), 16, "position {pos}");
        }
    }

    #[test]
    fn hop_by_hop_removed_but_trailers_te_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-custom"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-custom"));
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert!(h.contains_key("x-keep"));
        let mut up = HeaderMap::new();
        up.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        up.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut up, true);
        assert_eq!(up.get(header::UPGRADE).unwrap(), "websocket");
    }

    #[test]
    fn cookie_hash_issues_cookie_with_ttl_and_reuses_it() {
        let key = HashKey::Cookie {
            name: "user".into(),
            path: "/".into(),
            ttl_secs: 60,
        };
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (h1, set) = hash_for(&key, &HeaderMap::new(), None, addr);
        let set = set.unwrap();
        let s = set.to_str().unwrap();
        assert!(
            s.starts_with("user=\"") && s.contains("Max-Age=60") && s.contains("Path=/"),
            "{s}"
        );
        let value = s.split(';').next().unwrap().to_string();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {value}")).unwrap(),
        );
        let (h2, again) = hash_for(&key, &h, None, addr);
        assert_eq!(h1, h2);
        assert!(again.is_none());
    }
}

#[cfg(test)]
mod future_size {
    use super::*;

    fn future_size<A, B, Fut>(_f: impl FnOnce(A, B) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every request's future is allocated and moved into place whole, so its size is paid per
    /// request: rare paths with large futures (HTTP/2 and upgrade clients, connecting, uploads)
    /// are boxed. This guards against a large local slipping back in (it was 6.2 KB).
    #[test]
    fn the_request_future_stays_small() {
        let size = future_size(handle);
        eprintln!("request future: {size} bytes");
        assert!(size <= 5 * 1024 + 512, "request future is {size} bytes");
    }
}
