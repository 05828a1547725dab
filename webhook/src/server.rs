//! The HTTPS admission server: axum routes served over rustls by hyper-util, one task per connection.
//!
//! Hardening: 415 unless `Content-Type: application/json`; 413 above the body limit (checked from
//! `Content-Length` and while reading); 400 with a message (and the review's uid when readable) for malformed
//! reviews; timeouts on the TLS handshake, on reading request headers and on reading the body, so slow clients
//! cannot hold connections; handlers are pure functions that return errors instead of panicking.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::inject::Injector;
use crate::mesh::MeshConfig;
use crate::metrics::Metrics;
use crate::review::{self, Verdict};
use crate::template::InjectionTemplate;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest accepted request body. UPDATE reviews carry two objects of up to ~1.5 MiB each.
    pub body_limit: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            body_limit: 6 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppState {
    /// Swapped whole when the template or mesh config file changes (see [`watch_config_files`]).
    pub injector: Arc<ArcSwap<Injector>>,
    pub metrics: Arc<Metrics>,
    pub options: ServerOptions,
    /// Set once the listener serves; `/readyz` reports it.
    pub ready: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(injector: Injector, options: ServerOptions) -> Self {
        AppState {
            injector: Arc::new(ArcSwap::from_pointee(injector)),
            metrics: Arc::new(Metrics::default()),
            options,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/inject", post(inject))
        .route("/validate", post(validate))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn plain(code: StatusCode, message: String) -> Response {
    (code, format!("{message}\n")).into_response()
}

/// Reads a JSON body within the server's limits; the error is the response to send.
async fn read_body(options: &ServerOptions, req: Request) -> Result<Bytes, Response> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {content_type:?}, expected application/json"),
        ));
    }
    let limit = options.body_limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than the limit of {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), limit);
    match tokio::time::timeout(options.body_timeout, body.collect()).await {
        Err(_) => Err(plain(
            StatusCode::REQUEST_TIMEOUT,
            "timed out reading the request body".into(),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(plain(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn json_response(code: u16, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn inject(State(state): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let body = match read_body(&state.options, req).await {
        Ok(b) => b,
        Err(resp) => {
            state
                .metrics
                .record_inject(Verdict::BadRequest, start.elapsed());
            return resp;
        }
    };
    let (code, out, verdict) =
        review::respond(&body, |r| review::handle_inject(r, &state.injector.load()));
    state.metrics.record_inject(verdict, start.elapsed());
    json_response(code, out)
}

async fn validate(State(state): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let body = match read_body(&state.options, req).await {
        Ok(b) => b,
        Err(resp) => {
            state
                .metrics
                .record_validate(Verdict::BadRequest, start.elapsed());
            return resp;
        }
    };
    let (code, out, verdict) = review::respond(&body, review::handle_validate);
    state.metrics.record_validate(verdict, start.elapsed());
    json_response(code, out)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Serves `state`'s routes over TLS on `listener` until `shutdown` completes, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let options = state.options.clone();
    let ready = state.ready.clone();
    let app = router(state);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    ready.store(true, Ordering::Relaxed);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let options = options.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(20)));
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    ready.store(false, Ordering::Relaxed);
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing");
    }
    Ok(())
}

fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Polls the injection template and mesh config files (as mounted from ConfigMaps the operator writes) and
/// swaps in a new injector when they change and parse; a file that does not parse is logged and the
/// previous injector keeps serving. Runs until the task is dropped.
pub async fn watch_config_files(
    injector: Arc<ArcSwap<Injector>>,
    template: Option<std::path::PathBuf>,
    mesh: Option<std::path::PathBuf>,
    every: Duration,
) {
    let stamps = |t: &Option<std::path::PathBuf>, m: &Option<std::path::PathBuf>| {
        (
            t.as_deref().and_then(modified),
            m.as_deref().and_then(modified),
        )
    };
    let mut seen = stamps(&template, &mesh);
    loop {
        tokio::time::sleep(every).await;
        let now = stamps(&template, &mesh);
        if now == seen {
            continue;
        }
        let loaded = (|| -> Result<Injector, crate::Error> {
            let t = match &template {
                Some(p) => InjectionTemplate::from_file(p)?,
                None => InjectionTemplate::builtin()?,
            };
            let m = match &mesh {
                Some(p) => MeshConfig::from_file(p)?,
                None => MeshConfig::default(),
            };
            Ok(Injector::new(t, m))
        })();
        match loaded {
            Ok(new) => {
                injector.store(Arc::new(new));
                seen = now;
                tracing::info!("injection template / mesh config reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "injection config changed but cannot be loaded; keeping the previous one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn template_file_changes_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("template.yaml");
        let mut t = InjectionTemplate::builtin().unwrap();
        std::fs::write(&path, t.to_yaml().unwrap()).unwrap();
        let state = AppState::new(
            Injector::new(t.clone(), MeshConfig::default()),
            ServerOptions::default(),
        );
        let watcher = tokio::spawn(watch_config_files(
            state.injector.clone(),
            Some(path.clone()),
            None,
            Duration::from_millis(20),
        ));
        tokio::time::sleep(Duration::from_millis(60)).await;
        // A broken file keeps the old injector.
        std::fs::write(&path, "proxy: [").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(state.injector.load().template, t);
        t.proxy.image = "registry.example/proxy:2".into();
        std::fs::write(&path, t.to_yaml().unwrap()).unwrap();
        let mut swapped = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if state.injector.load().template.proxy.image == "registry.example/proxy:2" {
                swapped = true;
                break;
            }
        }
        watcher.abort();
        assert!(swapped, "template change not picked up");
    }
}
