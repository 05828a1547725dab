//! The Bookinfo-like sample services (`halyard demo-app`): `productpage` calls `details` and `reviews`;
//! `reviews` v2 and v3 call `ratings`. Every reply is JSON naming the service and version that produced it and
//! the calls it made, so the tour can count versions and statuses from the traffic itself.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The port every sample service listens on, as in Bookinfo.
pub const SERVICE_PORT: u16 = 9080;

/// Headers an application must copy from its inbound request to its outbound calls so that header routing
/// (`end-user`) and tracing keep working across hops (the list Bookinfo's productpage forwards).
pub const FORWARDED_HEADERS: &[&str] = &[
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
];

/// Upper bound on one outbound call made by a sample service, so that a hung dependency cannot hang the app.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A sample service's reply body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub service: String,
    pub version: String,
    /// The calls this service made to produce the reply, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<Call>,
    /// Set when the reply is an error (then the HTTP status is not 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Service-specific content (book details, review texts, star ratings).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

/// One outbound call made by a sample service, as it observed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Call {
    pub service: String,
    /// HTTP status received, or `None` when no response arrived (connection error, local timeout).
    pub status: Option<u16>,
    pub elapsed_ms: u64,
    /// The callee's reply when its body was a sample-service reply (proxies' own error bodies are not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Box<Reply>>,
    /// The proxy's `x-envoy-*`-style error detail or the transport error, when the call did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Call {
    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }
}

impl Reply {
    /// The first call this reply made to `service`.
    pub fn call(&self, service: &str) -> Option<&Call> {
        self.calls.iter().find(|c| c.service == service)
    }
}

/// Which sample service a process plays; decides its dependencies and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Productpage => "productpage",
            Role::Details => "details",
            Role::Reviews => "reviews",
            Role::Ratings => "ratings",
        }
    }

    /// The services this role calls for a given version, in call order (Bookinfo: reviews v1 shows no stars).
    pub fn dependencies(self, version: &str) -> &'static [&'static str] {
        match (self, version) {
            (Role::Productpage, _) => &["details", "reviews"],
            (Role::Reviews, "v1") => &[],
            (Role::Reviews, _) => &["ratings"],
            (Role::Details | Role::Ratings, _) => &[],
        }
    }

    /// Static content of the role's reply (what Bookinfo's page would show).
    fn data(self, version: &str) -> serde_json::Value {
        match (self, version) {
            (Role::Details, _) => serde_json::json!({
                "id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback", "pages": 200,
            }),
            (Role::Reviews, v) => {
                let stars = match v {
                    "v2" => Some("black"),
                    "v3" => Some("red"),
                    _ => None,
                };
                serde_json::json!({
                    "reviews": [
                        {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare."},
                        {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."},
                    ],
                    "stars": stars,
                })
            }
            (Role::Ratings, _) => serde_json::json!({"ratings": {"Reviewer1": 5, "Reviewer2": 4}}),
            (Role::Productpage, _) => serde_json::Value::Null,
        }
    }
}

/// `halyard demo-app`: run one sample service.
#[derive(Debug, Clone, clap::Args)]
pub struct AppArgs {
    /// Which service to play.
    #[arg(long, value_enum)]
    pub service: Role,
    /// The version label it reports (`v1`, `v2`, `v3`).
    #[arg(long, default_value = "v1")]
    pub version: String,
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where to send calls to a dependency, `NAME=ADDRESS` (repeatable); the `Host` header stays `NAME:9080`, so
    /// ADDRESS can be the service's VIP, a sidecar's outbound listener, or the dependency itself.
    #[arg(long = "dep", value_parser = parse_dependency)]
    pub deps: Vec<(String, SocketAddr)>,
    /// Namespace of the dependencies: calls carry `Host: NAME.<namespace>.svc.cluster.local:9080`, the name
    /// every sidecar's route table knows (short names are only served within the same namespace).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Artificial delay before every reply, in milliseconds (a request's `delay_ms` query parameter adds to it).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Exit when standard input reaches end of file (the parent demo process died).
    #[arg(long)]
    pub exit_with_parent: bool,
}

fn parse_dependency(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s.split_once('=').ok_or_else(|| {
        format!("dependency `{s}`: expected NAME=ADDRESS, e.g. reviews=127.10.0.3:9080")
    })?;
    let addr = addr
        .parse()
        .map_err(|e| format!("dependency `{s}`: address `{addr}` is not IP:PORT: {e}"))?;
    Ok((name.to_string(), addr))
}

/// A sample service: its identity, where its dependencies are, and a shared keep-alive HTTP client.
pub struct App {
    role: Role,
    version: String,
    deps: BTreeMap<String, SocketAddr>,
    namespace: String,
    delay: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl App {
    pub fn new(args: &AppArgs) -> anyhow::Result<Arc<App>> {
        let deps: BTreeMap<String, SocketAddr> = args.deps.iter().cloned().collect();
        for dep in args.service.dependencies(&args.version) {
            if !deps.contains_key(*dep) {
                anyhow::bail!(
                    "{} {} calls `{dep}` but no `--dep {dep}=ADDRESS` was given",
                    args.service.name(),
                    args.version
                );
            }
        }
        Ok(Arc::new(App {
            role: args.service,
            version: args.version.clone(),
            deps,
            namespace: args.namespace.clone(),
            delay: Duration::from_millis(args.delay_ms),
            client: http_client(),
        }))
    }

    fn reply(&self) -> Reply {
        Reply {
            service: self.role.name().to_string(),
            version: self.version.clone(),
            calls: Vec::new(),
            error: None,
            data: self.role.data(&self.version),
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/health" {
            return json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}));
        }
        let extra = query_param(req.uri().query(), "delay_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        let delay = self.delay + extra;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let forwarded = forwarded_headers(req.headers());
        let mut reply = self.reply();
        let deps = self.role.dependencies(&self.version);
        // Calls run concurrently, as productpage's do, and are reported in dependency order.
        let calls =
            futures::future::join_all(deps.iter().map(|dep| self.call(dep, &forwarded))).await;
        reply.calls = calls;
        let status = reply_status(&reply.calls);
        if status != StatusCode::OK {
            let failed: Vec<String> = reply
                .calls
                .iter()
                .filter(|c| !c.succeeded())
                .map(|c| match c.status {
                    Some(s) => format!("{} returned {s} after {} ms", c.service, c.elapsed_ms),
                    None => format!(
                        "{} failed after {} ms: {}",
                        c.service,
                        c.elapsed_ms,
                        c.error.as_deref().unwrap_or("no response")
                    ),
                })
                .collect();
            reply.error = Some(failed.join("; "));
            reply.data = serde_json::Value::Null;
        }
        json_response(status, &reply)
    }

    async fn call(&self, service: &str, forwarded: &[(String, HeaderValue)]) -> Call {
        let started = Instant::now();
        let outcome = match self.deps.get(service) {
            Some(addr) => {
                let host = format!(
                    "{service}.{}.svc.cluster.local:{SERVICE_PORT}",
                    self.namespace
                );
                tokio::time::timeout(
                    CALL_TIMEOUT,
                    get(
                        &self.client,
                        *addr,
                        &host,
                        &Role::path_for(service),
                        forwarded,
                    ),
                )
                .await
                .unwrap_or_else(|_| Err(format!("no response within {CALL_TIMEOUT:?}")))
            }
            None => Err(format!("no address configured for `{service}`")),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok((status, headers, body)) => {
                let reply = serde_json::from_slice::<Reply>(&body).ok().map(Box::new);
                let error = (!(200..300).contains(&status)).then(|| {
                    let flags = headers
                        .get("x-halyard-response-flags")
                        .or_else(|| headers.get("x-envoy-response-flags"))
                        .and_then(|v| v.to_str().ok());
                    let text = String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>();
                    match flags {
                        Some(f) => format!("[{f}] {text}"),
                        None => text,
                    }
                });
                Call {
                    service: service.to_string(),
                    status: Some(status),
                    elapsed_ms,
                    reply,
                    error,
                }
            }
            Err(error) => Call {
                service: service.to_string(),
                status: None,
                elapsed_ms,
                reply: None,
                error: Some(error),
            },
        }
    }
}

impl Role {
    /// The path used to call a dependency by name (product 0, as Bookinfo's productpage does).
    fn path_for(service: &str) -> String {
        match service {
            "productpage" => "/productpage".to_string(),
            other => format!("/{other}/0"),
        }
    }
}

/// A failed dependency fails the reply with 502 Bad Gateway; the dependency's own status stays in the
/// body's `calls`. Not 503: Istio's default retry policy retries 503 at every hop, which would multiply an
/// injected fault on its way back to the client and blur what the demo measures.
pub fn reply_status(calls: &[Call]) -> StatusCode {
    if calls.iter().all(Call::succeeded) {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    }
}

/// The headers of `inbound` to copy onto outbound calls.
pub fn forwarded_headers(inbound: &HeaderMap) -> Vec<(String, HeaderValue)> {
    FORWARDED_HEADERS
        .iter()
        .filter_map(|name| inbound.get(*name).map(|v| (name.to_string(), v.clone())))
        .collect()
}

/// The value of query parameter `name` (no percent-decoding: the demo's knobs are plain numbers).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A keep-alive HTTP/1.1 client (one shared connection pool per process).
pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// GET `path` from `addr` with `Host: host` and extra headers; returns status, headers and body.
pub async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(String, HeaderValue)],
) -> Result<(u16, HeaderMap, Bytes), String> {
    let uri = format!("http://{addr}{path}");
    let mut builder = Request::get(&uri).header(header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.clone());
    }
    let req = builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("building GET {uri}: {e}"))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("GET {uri} (Host {host}): {}", error_chain(&e)))?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading body of GET {uri}: {e}"))?
        .to_bytes();
    Ok((status, parts.headers, body))
}

/// An error and its sources on one line (hyper's top-level messages alone are vague).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes =
        serde_json::to_vec(body).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serve `app` on an already-bound listener until the task is dropped.
pub async fn serve(app: Arc<App>, listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Running out of file descriptors is transient under the demo's load; keep serving.
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `halyard demo-app`.
pub async fn run(args: AppArgs) -> anyhow::Result<()> {
    let app = App::new(&args)?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "{} {}: binding {}",
            args.service.name(),
            args.version,
            args.listen
        )
    })?;
    eprintln!(
        "{} {} listening on {} (deps: {:?})",
        args.service.name(),
        args.version,
        args.listen,
        args.deps
    );
    if args.exit_with_parent {
        tokio::select! {
            r = serve(app, listener) => r,
            () = super::supervisor::parent_gone() => Ok(()),
        }
    } else {
        serve(app, listener).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(service: &str, status: Option<u16>) -> Call {
        Call {
            service: service.into(),
            status,
            elapsed_ms: 1,
            reply: None,
            error: None,
        }
    }

    #[test]
    fn any_failed_dependency_fails_the_reply_with_502() {
        assert_eq!(reply_status(&[]), StatusCode::OK);
        assert_eq!(reply_status(&[call("a", Some(200))]), StatusCode::OK);
        for failed in [Some(503), Some(504), Some(404), None] {
            assert_eq!(
                reply_status(&[call("a", Some(200)), call("b", failed)]),
                StatusCode::BAD_GATEWAY
            );
        }
    }

    #[test]
    fn forwards_routing_and_trace_headers_only() {
        let mut h = HeaderMap::new();
        h.insert("end-user", HeaderValue::from_static("jason"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        h.insert("cookie", HeaderValue::from_static("secret"));
        let names: Vec<String> = forwarded_headers(&h).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["end-user", "x-request-id"]);
    }

    #[test]
    fn query_param_finds_plain_values() {
        assert_eq!(query_param(Some("a=1&delay_ms=20"), "delay_ms"), Some("20"));
        assert_eq!(query_param(Some("delay_ms"), "delay_ms"), None);
        assert_eq!(query_param(None, "delay_ms"), None);
    }

    #[test]
    fn dependency_flag_is_validated() {
        assert!(parse_dependency("reviews=127.10.0.3:9080").is_ok());
        let err = parse_dependency("reviews").unwrap_err();
        assert!(err.contains("NAME=ADDRESS"), "{err}");
        let err = parse_dependency("reviews=localhost").unwrap_err();
        assert!(err.contains("localhost"), "{err}");
    }

    #[test]
    fn reviews_v1_shows_no_stars_and_calls_nothing() {
        assert!(Role::Reviews.dependencies("v1").is_empty());
        assert_eq!(Role::Reviews.dependencies("v2"), &["ratings"]);
        assert_eq!(Role::Reviews.data("v1")["stars"], serde_json::Value::Null);
        assert_eq!(Role::Reviews.data("v3")["stars"], "red");
    }
}
