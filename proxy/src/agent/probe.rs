//! The application probes the webhook moved to the proxy (`ISTIO_KUBE_APP_PROBERS`): parsed once at
//! start, run against the app when the kubelet asks `/app-health/<container>/<kind>` (or an
//! `/app-lifecycle/...` hook), with the answers Istio's agent gives: the app's own status for
//! HTTP, 200 for a TCP connect or a SERVING gRPC health check, 500 for anything else.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;

use super::AgentError;

/// Kubernetes' default `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The kubelet reads at most 10 KiB of a probe's body; so do we.
const MAX_BODY: usize = 10 * 1024;

/// What one original probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    Http {
        https: bool,
        /// Connect here instead of the app's address (`httpGet.host`).
        host: Option<String>,
        port: u16,
        /// Path and query, as given.
        path: String,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Grpc {
        port: u16,
        /// Health service name; empty = the server as a whole.
        service: String,
    },
}

/// One original probe with its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prober {
    pub kind: ProbeKind,
    pub timeout: Duration,
}

/// A probe's answer to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub status: StatusCode,
    pub body: Bytes,
}

impl ProbeOutcome {
    fn ok() -> Self {
        ProbeOutcome {
            status: StatusCode::OK,
            body: Bytes::new(),
        }
    }
    fn fail(why: String) -> Self {
        ProbeOutcome {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::from(why + "\n"),
        }
    }
}

/// Parse `ISTIO_KUBE_APP_PROBERS`: a JSON object keyed by status-port path. Errors name the key
/// and field, as a pod whose probes cannot run should not start silently.
pub fn parse_probers(json: &str) -> Result<BTreeMap<String, Prober>, AgentError> {
    if json.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let v: Value = serde_json::from_str(json).map_err(|e| AgentError::Probers {
        at: "ISTIO_KUBE_APP_PROBERS".into(),
        why: format!("not JSON: {e}"),
    })?;
    let Value::Object(map) = v else {
        return Err(AgentError::Probers {
            at: "ISTIO_KUBE_APP_PROBERS".into(),
            why: "expected a JSON object keyed by /app-health/<container>/<probe>".into(),
        });
    };
    let mut out = BTreeMap::new();
    for (path, spec) in map {
        if !(path.starts_with("/app-health/") || path.starts_with("/app-lifecycle/")) {
            return Err(AgentError::Probers {
                at: format!("ISTIO_KUBE_APP_PROBERS[{path:?}]"),
                why: "key must start with /app-health/ or /app-lifecycle/".into(),
            });
        }
        let p = parse_prober(&spec, &format!("ISTIO_KUBE_APP_PROBERS[{path:?}]"))?;
        out.insert(path, p);
    }
    Ok(out)
}

fn bad(at: &str, why: impl Into<String>) -> AgentError {
    AgentError::Probers {
        at: at.to_string(),
        why: why.into(),
    }
}

fn port_of(v: Option<&Value>, at: &str) -> Result<u16, AgentError> {
    let at = format!("{at}.port");
    let n = match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        None => return Err(bad(&at, "missing")),
        Some(other) => return Err(bad(&at, format!("expected a number, got {other}"))),
    };
    n.and_then(|n| u16::try_from(n).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            bad(
                &at,
                "expected a port number 1-65535 (named ports are resolved by the injector)",
            )
        })
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn parse_prober(spec: &Value, at: &str) -> Result<Prober, AgentError> {
    let timeout = match spec.get("timeoutSeconds") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT,
        Some(v) => match v.as_u64() {
            Some(0) => DEFAULT_TIMEOUT,
            Some(s) => Duration::from_secs(s),
            None => {
                return Err(bad(
                    &format!("{at}.timeoutSeconds"),
                    "expected a positive integer",
                ));
            }
        },
    };
    let kind = if let Some(h) = spec.get("httpGet") {
        let hat = format!("{at}.httpGet");
        let https = match str_of(h, "scheme") {
            None => false,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) => {
                return Err(bad(
                    &format!("{hat}.scheme"),
                    format!("{s:?}: expected HTTP or HTTPS"),
                ));
            }
        };
        let mut path = str_of(h, "path").unwrap_or("/").to_string();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(bad(
                &format!("{hat}.path"),
                format!("{path:?} is not a valid request path"),
            ));
        }
        let mut headers = Vec::new();
        if let Some(list) = h.get("httpHeaders").and_then(Value::as_array) {
            for (i, kv) in list.iter().enumerate() {
                let kat = format!("{hat}.httpHeaders[{i}]");
                let name = str_of(kv, "name").ok_or_else(|| bad(&kat, "missing name"))?;
                let value = kv.get("value").and_then(Value::as_str).unwrap_or("");
                let name =
                    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                        bad(
                            &format!("{kat}.name"),
                            format!("{name:?} is not a header name"),
                        )
                    })?;
                let value = HeaderValue::from_str(value).map_err(|_| {
                    bad(
                        &format!("{kat}.value"),
                        format!("{value:?} is not a header value"),
                    )
                })?;
                headers.push((name, value));
            }
        }
        ProbeKind::Http {
            https,
            host: str_of(h, "host").map(str::to_string),
            port: port_of(h.get("port"), &hat)?,
            path,
            headers,
        }
    } else if let Some(t) = spec.get("tcpSocket") {
        let tat = format!("{at}.tcpSocket");
        ProbeKind::Tcp {
            host: str_of(t, "host").map(str::to_string),
            port: port_of(t.get("port"), &tat)?,
        }
    } else if let Some(g) = spec.get("grpc") {
        let gat = format!("{at}.grpc");
        ProbeKind::Grpc {
            port: port_of(g.get("port"), &gat)?,
            service: g
                .get("service")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }
    } else {
        return Err(bad(at, "expected one of httpGet, tcpSocket, grpc"));
    };
    Ok(Prober { kind, timeout })
}

/// Resolve `host` (an IP or a name) and port to socket addresses.
async fn target(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

/// Connect to the app; `bypass_capture` when `host` is the pod's own address (the probe named
/// no host), as the kubelet's probes would arrive from outside the pod's capture.
async fn connect(host: &str, port: u16, bypass_capture: bool) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in target(host, port).await? {
        let attempt = if bypass_capture {
            crate::upstream::connect_bypassing_capture(addr).await
        } else {
            TcpStream::connect(addr).await
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address"))
    }))
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Prober {
    /// Run the probe against the app at `app_host` (unless the probe names a host); `incoming`
    /// are the kubelet's request headers, forwarded as Istio's agent does.
    pub async fn run(&self, app_host: &str, incoming: &HeaderMap) -> ProbeOutcome {
        let work = async {
            match &self.kind {
                ProbeKind::Http {
                    https,
                    host,
                    port,
                    path,
                    headers,
                } => {
                    let bypass = host.is_none();
                    let host = host.as_deref().unwrap_or(app_host);
                    http_probe(*https, host, *port, path, headers, incoming, bypass).await
                }
                ProbeKind::Tcp { host, port } => {
                    let bypass = host.is_none();
                    let host = host.as_deref().unwrap_or(app_host);
                    match connect(host, *port, bypass).await {
                        Ok(_) => ProbeOutcome::ok(),
                        Err(e) => {
                            ProbeOutcome::fail(format!("tcp probe {}: {e}", authority(host, *port)))
                        }
                    }
                }
                ProbeKind::Grpc { port, service } => grpc_probe(app_host, *port, service).await,
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(o) => o,
            Err(_) => ProbeOutcome::fail(format!(
                "probe timed out after {}s",
                self.timeout.as_secs_f64()
            )),
        }
    }
}

/// Headers that describe the kubelet's own connection, not the probe.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "content-length"
    )
}

async fn http_probe(
    https: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    incoming: &HeaderMap,
    bypass_capture: bool,
) -> ProbeOutcome {
    let auth = authority(host, port);
    let fail = |why: String| {
        ProbeOutcome::fail(format!(
            "http probe {}://{auth}{path}: {why}",
            if https { "https" } else { "http" }
        ))
    };
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = match path.parse::<Uri>() {
        Ok(u) => u,
        Err(e) => return fail(e.to_string()),
    };
    for (n, v) in incoming {
        if forwardable(n) {
            req.headers_mut().append(n.clone(), v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&auth) {
        req.headers_mut().insert(header::HOST, v);
    }
    if !req.headers().contains_key(header::USER_AGENT) {
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static("kube-probe/halyard"),
        );
    }
    // The probe's own headers win, `Host` included (as with the kubelet).
    for (n, v) in headers {
        req.headers_mut().insert(n.clone(), v.clone());
    }
    let tcp = match connect(host, port, bypass_capture).await {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let resp = if https {
        let tls = match super::tls::connect_insecure(host, tcp).await {
            Ok(s) => s,
            Err(e) => return fail(format!("TLS handshake: {e}")),
        };
        send_h1(TokioIo::new(tls), req).await
    } else {
        send_h1(TokioIo::new(tcp), req).await
    };
    match resp {
        Ok(o) => o,
        Err(e) => fail(e),
    }
}

async fn send_h1<T>(io: T, req: Request<Full<Bytes>>) -> Result<ProbeOutcome, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // A body beyond the limit is cut, not an error: the status is what counts.
    let mut body = Vec::new();
    let mut stream = resp.into_body();
    while body.len() < MAX_BODY {
        match stream.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    let room = MAX_BODY - body.len();
                    body.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    Ok(ProbeOutcome {
        status,
        body: Bytes::from(body),
    })
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

async fn grpc_probe(host: &str, port: u16, service: &str) -> ProbeOutcome {
    let auth = authority(host, port);
    match grpc_check(host, port, service).await {
        Ok(SERVING) => ProbeOutcome::ok(),
        Ok(other) => {
            let name = match other {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "unrecognised",
            };
            ProbeOutcome::fail(format!(
                "grpc probe {auth} service {service:?}: status {name} ({other})"
            ))
        }
        Err(e) => ProbeOutcome::fail(format!("grpc probe {auth} service {service:?}: {e}")),
    }
}

/// One unary `grpc.health.v1.Health/Check` over HTTP/2 prior knowledge.
async fn grpc_check(host: &str, port: u16, service: &str) -> Result<i32, String> {
    use prost::Message as _;
    // gRPC probes have no host of their own: always the pod's address.
    let tcp = connect(host, port, true).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| format!("http/2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let msg = HealthCheckRequest {
        service: service.to_string(),
    }
    .encode_to_vec();
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let uri: Uri = format!(
        "http://{}/grpc.health.v1.Health/Check",
        authority(host, port)
    )
    .parse()
    .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "halyard-grpc-probe")
        .body(Full::new(Bytes::from(frame)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status()));
    }
    let headers = resp.headers().clone();
    let collected = Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    // Trailers-only responses carry grpc-status in the headers.
    let grpc_status = trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .ok_or("no grpc-status in the response")?;
    if grpc_status != 0 {
        let msg = trailers
            .get("grpc-message")
            .or_else(|| headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(format!("grpc-status {grpc_status} {msg}"));
    }
    let body = collected.to_bytes();
    if body.len() < 5 {
        return Err("empty response message".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let payload = body.get(5..5 + len).ok_or("truncated response message")?;
    HealthCheckResponse::decode(payload)
        .map(|r| r.status)
        .map_err(|e| format!("undecodable HealthCheckResponse: {e}"))
}

/// The probers by path, shared by connections.
pub type Probers = Arc<BTreeMap<String, Prober>>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_injector_format() {
        let p = parse_probers(
            r#"{"/app-health/web/livez":{"httpGet":{"path":"healthz","port":8080,"scheme":"HTTPS","httpHeaders":[{"name":"X-Probe","value":"1"}]},"timeoutSeconds":3},
                "/app-health/web/readyz":{"tcpSocket":{"port":"3333"}},
                "/app-health/grpc/startupz":{"grpc":{"port":9000,"service":"svc"}}}"#,
        )
        .unwrap();
        let live = &p["/app-health/web/livez"];
        assert_eq!(live.timeout, Duration::from_secs(3));
        let ProbeKind::Http {
            https,
            port,
            path,
            headers,
            ..
        } = &live.kind
        else {
            panic!("{live:?}")
        };
        assert!(*https);
        assert_eq!((*port, path.as_str()), (8080, "/healthz"));
        assert_eq!(headers[0].0.as_str(), "x-probe");
        assert_eq!(
            p["/app-health/web/readyz"].kind,
            ProbeKind::Tcp {
                host: None,
                port: 3333
            }
        );
        assert_eq!(p["/app-health/web/readyz"].timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            p["/app-health/grpc/startupz"].kind,
            ProbeKind::Grpc {
                port: 9000,
                service: "svc".into()
            }
        );
        assert!(parse_probers("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_key_and_field() {
        let e = parse_probers(r#"{"/app-health/a/livez":{"httpGet":{"port":"http"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/app-health/a/livez") && e.contains("httpGet.port"),
            "{e}"
        );
        let e = parse_probers(r#"{"/other":{"tcpSocket":{"port":1}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/app-health/"), "{e}");
        let e = parse_probers(r#"{"/app-health/a/livez":{"exec":{}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("httpGet, tcpSocket, grpc"), "{e}");
        assert!(parse_probers("[1]").is_err());
        assert!(parse_probers("{").is_err());
    }
}
