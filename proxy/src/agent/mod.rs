//! The pod-side agent port (15020, Istio's pilot-agent status server), what injected pods rely on:
//!
//! * `/app-health/<container>/{livez,readyz,startupz}` and `/app-lifecycle/<container>/...`: the
//!   app's original probes (from `ISTIO_KUBE_APP_PROBERS`), run against the app ([`probe`]);
//! * `/healthz/ready`: the proxy's readiness, as on 15021;
//! * `/stats/prometheus`: the proxy's metrics merged with the app's own, scraped from the target
//!   its original `prometheus.io/*` annotations named (`ISTIO_PROMETHEUS_ANNOTATIONS`);
//! * `/quitquitquit` (POST): drain and exit 0 (how a Job's main container stops the sidecar).

pub mod probe;
mod tls;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::admin::{prometheus_text, readiness, reply};
use crate::body::Body;
use crate::proxy::Proxy;
pub use probe::{ProbeKind, ProbeOutcome, Prober};

/// Bad agent input (env of the injected proxy container).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("{at}: {why}")]
    Probers { at: String, why: String },
    #[error("ISTIO_PROMETHEUS_ANNOTATIONS: {0}")]
    Prometheus(String),
}

/// Where the app's own metrics are (its original `prometheus.io/*` annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppScrape {
    pub port: u16,
    pub path: String,
}

/// Default upper bound of an app scrape when Prometheus sends no timeout header.
const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The app's metrics text kept at most (a runaway exporter must not exhaust the proxy).
const MAX_APP_METRICS: usize = 32 * 1024 * 1024;

/// Parse `ISTIO_PROMETHEUS_ANNOTATIONS` (`{"prometheus.io/scrape":"true","prometheus.io/port":"9090",
/// "prometheus.io/path":"/metrics"}`). `None`: nothing to scrape (unset, `scrape: false`, no port).
pub fn parse_app_scrape(json: &str) -> Result<Option<AppScrape>, AgentError> {
    if json.trim().is_empty() {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_str(json).map_err(|e| AgentError::Prometheus(format!("not JSON: {e}")))?;
    let get = |k: &str| v.get(k).and_then(Value::as_str).map(str::trim);
    if get("prometheus.io/scrape").is_some_and(|s| s.eq_ignore_ascii_case("false")) {
        return Ok(None);
    }
    let Some(port) = get("prometheus.io/port").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        AgentError::Prometheus(format!(
            "prometheus.io/port {port:?} is not a port number 1-65535"
        ))
    })?;
    let mut path = get("prometheus.io/path")
        .filter(|p| !p.is_empty())
        .unwrap_or("/metrics")
        .to_string();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(AgentError::Prometheus(format!(
            "prometheus.io/path {path:?} is not a request path"
        )));
    }
    Ok(Some(AppScrape { port, path }))
}

/// What the agent port serves besides the proxy's own state.
#[derive(Debug, Default)]
pub struct Agent {
    pub probers: BTreeMap<String, Prober>,
    pub app_scrape: Option<AppScrape>,
    /// Host of the app (pod IP; the app address in local mode) for probes naming no host.
    pub app_host: String,
    scrapes: AtomicU64,
    scrape_failures: AtomicU64,
}

impl Agent {
    pub fn new(
        probers: BTreeMap<String, Prober>,
        app_scrape: Option<AppScrape>,
        app_host: impl Into<String>,
    ) -> Self {
        Agent {
            probers,
            app_scrape,
            app_host: app_host.into(),
            ..Default::default()
        }
    }

    /// From the env values the injector sets (empty strings = unset).
    pub fn from_env_values(
        probers_json: &str,
        prometheus_json: &str,
        app_host: impl Into<String>,
    ) -> Result<Self, AgentError> {
        Ok(Agent::new(
            probe::parse_probers(probers_json)?,
            parse_app_scrape(prometheus_json)?,
            app_host,
        ))
    }
}

/// Serve the agent port on a bound listener until the process ends.
pub async fn serve_listener(proxy: Arc<Proxy>, listener: TcpListener, agent: Arc<Agent>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let proxy = proxy.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                let agent = agent.clone();
                async move { Ok::<_, Infallible>(handle(&proxy, &agent, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(proxy: &Proxy, agent: &Agent, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    match path {
        "/healthz/ready" => readiness(proxy),
        "/stats/prometheus" => merged_metrics(proxy, agent, &req).await,
        "/quitquitquit" if req.method() != Method::POST => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n")
        }
        "/quitquitquit" => {
            tracing::info!("/quitquitquit on the agent port: draining and exiting");
            proxy.shared().quit.send_replace(true);
            reply(StatusCode::OK, "text/plain", "OK\n")
        }
        _ => match agent.probers.get(path) {
            Some(p) => {
                let o = p.run(&agent.app_host, req.headers()).await;
                if o.status.is_server_error() {
                    tracing::debug!(path, body = %String::from_utf8_lossy(&o.body), "app probe failed");
                }
                reply_status(o.status, o.body)
            }
            None if path.starts_with("/app-health/") || path.starts_with("/app-lifecycle/") => {
                reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no app probe registered for {path}\n"),
                )
            }
            None => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        },
    }
}

fn reply_status(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Prometheus' own deadline for this scrape, if it sent one.
fn scrape_timeout(req: &Request<Incoming>) -> Duration {
    req.headers()
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_SCRAPE_TIMEOUT, |s| {
            Duration::from_secs_f64(s.min(60.0))
        })
}

async fn merged_metrics(proxy: &Proxy, agent: &Agent, req: &Request<Incoming>) -> Response<Body> {
    let mut out = prometheus_text(proxy);
    if let Some(app) = &agent.app_scrape {
        agent.scrapes.fetch_add(1, Ordering::Relaxed);
        match scrape_app(&agent.app_host, app, scrape_timeout(req)).await {
            Ok(text) => {
                if !out.ends_with('\n') && !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&String::from_utf8_lossy(&text));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            Err(e) => {
                // The proxy's metrics are still served: an app failure must not hide them.
                agent.scrape_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, port = app.port, path = %app.path, "scraping the app's metrics failed");
            }
        }
    }
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# TYPE istio_agent_scrapes_total counter\nistio_agent_scrapes_total {}\n\
# TYPE istio_agent_scrape_failures_total counter\nistio_agent_scrape_failures_total{{type=\"application\"}} {}\n",
        agent.scrapes.load(Ordering::Relaxed),
        agent.scrape_failures.load(Ordering::Relaxed),
    );
    reply(StatusCode::OK, "text/plain; version=0.0.4", out)
}

async fn scrape_app(host: &str, app: &AppScrape, timeout: Duration) -> Result<Bytes, String> {
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", app.port)
    } else {
        format!("{host}:{}", app.port)
    };
    let work = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(app.path.as_str())
            .header(header::HOST, addr.as_str())
            .header(header::ACCEPT, "text/plain;version=0.0.4;q=1,*/*;q=0.1")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("GET {addr}{}: HTTP {}", app.path, resp.status()));
        }
        Limited::new(resp.into_body(), MAX_APP_METRICS)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("GET {addr}{}: {e}", app.path))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("GET {addr}{}: no answer within {timeout:?}", app.path))?
}

/// The address the agent port binds by default in a sidecar (all interfaces: the kubelet and
/// Prometheus reach it on the pod IP).
pub const DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 15020);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_annotations() {
        let s = parse_app_scrape(
            r#"{"prometheus.io/scrape":"true","prometheus.io/port":"9090","prometheus.io/path":"stats"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s,
            AppScrape {
                port: 9090,
                path: "/stats".into()
            }
        );
        let d = parse_app_scrape(r#"{"prometheus.io/port":"8080"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(d.path, "/metrics");
        assert_eq!(
            parse_app_scrape(r#"{"prometheus.io/scrape":"false","prometheus.io/port":"1"}"#)
                .unwrap(),
            None
        );
        assert_eq!(parse_app_scrape("").unwrap(), None);
        assert_eq!(
            parse_app_scrape(r#"{"prometheus.io/scrape":"true"}"#).unwrap(),
            None
        );
        let e = parse_app_scrape(r#"{"prometheus.io/port":"http"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prometheus.io/port"), "{e}");
        assert!(parse_app_scrape("nope").is_err());
    }
}
