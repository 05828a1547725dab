//! Helpers of the resilience tests: loopback backends that misbehave on demand, and configs with
//! retry / fault / mirror / connection-pool / outlier settings.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::common::*;

/// How a backend answers while it has failures left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    Status(u16),
    /// Close the connection without a response.
    Reset,
    /// Never answer (until the test ends).
    Hang,
    /// Send headers and half the body, then close.
    CloseMidBody,
}

/// What a backend does and saw.
#[derive(Debug)]
pub struct Plan {
    pub hits: AtomicU64,
    /// Failures left (`u64::MAX` = always).
    pub fail_left: AtomicU64,
    pub mode: Mutex<Fail>,
    pub delay_ms: AtomicU64,
    pub hosts: Mutex<Vec<String>>,
    pub body_lens: Mutex<Vec<usize>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Plan {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn fail(&self, n: u64, mode: Fail) {
        *self.mode.lock().unwrap() = mode;
        self.fail_left.store(n, Ordering::SeqCst);
    }
    /// Stop listening and drop every open connection.
    pub fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

type B = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn serve_one(
    name: Arc<str>,
    plan: Arc<Plan>,
    req: Request<Incoming>,
) -> Result<Response<B>, std::io::Error> {
    plan.hits.fetch_add(1, Ordering::SeqCst);
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    plan.hosts.lock().unwrap().push(host);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    plan.body_lens.lock().unwrap().push(body.len());
    let failing = plan
        .fail_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            u64::MAX => Some(u64::MAX),
            n => Some(n - 1),
        })
        .is_ok();
    if failing {
        let mode = *plan.mode.lock().unwrap();
        match mode {
            Fail::Status(s) => {
                return Ok(Response::builder()
                    .status(s)
                    .header("x-backend", &*name)
                    .body(
                        Full::new(Bytes::from("failing"))
                            .map_err(|e| match e {})
                            .boxed(),
                    )
                    .unwrap());
            }
            Fail::Reset => return Err(std::io::Error::other("reset on purpose")),
            Fail::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Fail::CloseMidBody => {
                // Half the body, a pause (so the headers are surely out), then the connection dies.
                let frames = futures::stream::unfold(0u8, |step| async move {
                    match step {
                        0 => Some((Ok(hyper::body::Frame::data(Bytes::from("half"))), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((Err(std::io::Error::other("closed mid-body")), 2))
                        }
                        _ => None,
                    }
                });
                return Ok(Response::builder()
                    .header("content-length", "8")
                    .header("x-backend", &*name)
                    .body(http_body_util::StreamBody::new(frames).boxed())
                    .unwrap());
            }
        }
    }
    let ms = plan.delay_ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(Response::builder()
        .header("x-backend", &*name)
        .header("x-request-bytes", body.len().to_string())
        .body(
            Full::new(Bytes::from(format!("ok from {name}")))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap())
}

/// An HTTP/1.1 + HTTP/2 backend on loopback following `Plan`.
pub async fn backend(name: &str) -> (SocketAddr, Arc<Plan>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name: Arc<str> = name.into();
    let plan = Arc::new(Plan {
        hits: AtomicU64::new(0),
        fail_left: AtomicU64::new(0),
        mode: Mutex::new(Fail::Status(503)),
        delay_ms: AtomicU64::new(0),
        hosts: Mutex::new(Vec::new()),
        body_lens: Mutex::new(Vec::new()),
        tasks: Mutex::new(Vec::new()),
    });
    let p = plan.clone();
    let accept = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (name, p2) = (name.clone(), p.clone());
            let conn = tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req| serve_one(name.clone(), p2.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
            let mut tasks = p.tasks.lock().unwrap();
            tasks.retain(|t| !t.is_finished());
            tasks.push(conn.abort_handle());
        }
    });
    plan.tasks.lock().unwrap().push(accept.abort_handle());
    (addr, plan)
}

pub const SVC: &str = "outbound|80||svc.default.svc.cluster.local";
pub const MIRROR: &str = "outbound|80||mirror.default.svc.cluster.local";

/// One outbound listener for host `svc` with `routes`, cluster `SVC` over `addrs` (round robin)
/// and an optional cluster tweak.
pub fn resources(
    routes: Vec<r::Route>,
    addrs: &[SocketAddr],
    tweak: impl FnOnce(&mut r::Cluster),
) -> ProxyResources {
    let mut c = cluster(SVC, "svc.default.svc.cluster.local");
    tweak(&mut c);
    ProxyResources {
        version: "1".into(),
        clusters: vec![c],
        endpoints: vec![endpoints(SVC, &[addrs].concat())],
        ..outbound_http(
            "outbound",
            vec![vhost("svc:80", &["svc", "svc:80"], routes)],
        )
    }
}

/// A route to `SVC` with `f` applied to its action.
pub fn svc_route(
    name: &str,
    matches: Vec<r::RouteMatch>,
    f: impl FnOnce(&mut r::RouteAction),
) -> r::Route {
    let mut a = to(&[(SVC, 1)]);
    f(&mut a);
    route(name, matches, a)
}

pub fn retry(n: u32, on: &str, per_try_ms: u64) -> r::RetryPolicy {
    r::RetryPolicy {
        num_retries: n,
        retry_on: on.split(',').map(str::to_string).collect(),
        per_try_timeout_ms: per_try_ms,
        retriable_status_codes: vec![503],
        base_interval_ms: 5,
        max_interval_ms: 20,
        avoid_previous_hosts: true,
        host_selection_max_attempts: 5,
        retry_remote_localities: false,
    }
}

/// Istio's default policy, as the translator writes it on routes without `retries`.
pub fn istio_default_retry() -> r::RetryPolicy {
    let mut p = retry(
        2,
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        0,
    );
    p.base_interval_ms = 25;
    p.max_interval_ms = 250;
    p
}

pub fn header_match(name: &str, value: &str) -> r::RouteMatch {
    r::RouteMatch {
        headers: vec![header(name, Some(exact(value)))],
        ..Default::default()
    }
}

/// Count of `istio_requests_total` with this response code and flags.
pub fn flagged(p: &halyard_proxy::Proxy, code: u16, flags: &str) -> u64 {
    requests_total(
        &prometheus(p),
        &[
            &format!("response_code=\"{code}\""),
            &format!("response_flags=\"{flags}\""),
        ],
    )
}

/// The admin `/clusters` (or other path) text of a proxy.
pub async fn admin_text(p: &Arc<halyard_proxy::Proxy>, path: &str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let task = tokio::spawn(halyard_proxy::admin::serve_listener(
        p.clone(),
        l,
        halyard_proxy::admin::Role::Admin,
    ));
    let got = get(&h1_client(), a, "admin", path, &[]).await;
    task.abort();
    got.text()
}

/// One connection a [`conn_backend`] accepted.
#[derive(Debug, Clone)]
pub struct ConnRec {
    pub peer: SocketAddr,
    pub opened: std::time::Instant,
    /// When the backend saw the connection end (the proxy closed it).
    pub closed: Option<std::time::Instant>,
}

/// What a [`conn_backend`] saw: every connection, when it opened and closed, and the HTTP
/// version of each request.
#[derive(Debug, Default)]
pub struct ConnLog {
    pub conns: Mutex<Vec<ConnRec>>,
    pub versions: Mutex<Vec<http::Version>>,
    pub max_concurrent: AtomicU64,
    in_flight: AtomicU64,
}

impl ConnLog {
    pub fn accepted(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
    pub fn closed(&self) -> usize {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.closed.is_some())
            .count()
    }
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.conns.lock().unwrap().iter().map(|c| c.peer).collect()
    }
    /// Wait (at most `limit`) until `n` connections have closed.
    pub async fn wait_closed(&self, n: usize, limit: Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if self.closed() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.closed() >= n
    }
}

/// An HTTP/1.1 + HTTP/2 backend that logs its connections. A request's `x-delay-ms` header
/// delays its response.
pub async fn conn_backend() -> (SocketAddr, Arc<ConnLog>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(ConnLog::default());
    let lg = log.clone();
    tokio::spawn(async move {
        while let Ok((s, peer)) = l.accept().await {
            let idx = {
                let mut c = lg.conns.lock().unwrap();
                c.push(ConnRec {
                    peer,
                    opened: std::time::Instant::now(),
                    closed: None,
                });
                c.len() - 1
            };
            let lg2 = lg.clone();
            tokio::spawn(async move {
                let lg3 = lg2.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let lg = lg3.clone();
                    async move {
                        lg.versions.lock().unwrap().push(req.version());
                        let now = lg.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        lg.max_concurrent.fetch_max(now, Ordering::SeqCst);
                        let delay = req
                            .headers()
                            .get("x-delay-ms")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        lg.in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(
                            Response::builder()
                                .header("x-conn", idx.to_string())
                                .header("x-upstream-version", format!("{:?}", req.version()))
                                .body(Full::new(Bytes::from("ok")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
                lg2.conns.lock().unwrap()[idx].closed = Some(std::time::Instant::now());
            });
        }
    });
    (addr, log)
}

/// A listening socket whose accept queue is full and never drained: new connections to it
/// stay unanswered (their SYNs are dropped), so connects time out. Keep the returned value alive.
pub fn blackhole() -> (SocketAddr, Vec<std::net::TcpStream>, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => fillers.push(c),
            Err(_) => return (addr, fillers, s),
        }
    }
    panic!("the accept queue of {addr} never filled");
}
