//! Admin (15000, localhost), status (15021) and Prometheus (15090) endpoints.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body::Body;
use crate::error::ProxyError;
use crate::proxy::Proxy;

/// Which endpoints a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything (bind to localhost).
    Admin,
    /// `/healthz/ready` only.
    Status,
    /// `/stats/prometheus` only.
    Prometheus,
}

/// Bind and serve one admin-type port until the process ends.
pub async fn serve(proxy: Arc<Proxy>, addr: SocketAddr, role: Role) -> Result<(), ProxyError> {
    let what = match role {
        Role::Admin => "admin",
        Role::Status => "status",
        Role::Prometheus => "prometheus",
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Serve { what, addr, source })?;
    tracing::info!(%addr, what, "listening");
    serve_listener(proxy, listener, role).await;
    Ok(())
}

/// Serve on an already bound listener.
pub async fn serve_listener(proxy: Arc<Proxy>, listener: TcpListener, role: Role) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(handle(&proxy, req, role)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

pub(crate) fn reply(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Body::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

fn query<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    crate::route::query_param(req.uri().query(), key)
}

fn handle(proxy: &Proxy, req: Request<Incoming>, role: Role) -> Response<Body> {
    let path = req.uri().path();
    match (role, path) {
        (Role::Status | Role::Admin, "/healthz/ready") => readiness(proxy),
        (Role::Prometheus | Role::Admin, "/stats/prometheus") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus_text(proxy),
        ),
        (Role::Admin, _) => admin(proxy, &req, path),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `/healthz/ready` (15021, admin, and the agent port 15020): 200 once config is applied and
/// until draining starts.
pub fn readiness(proxy: &Proxy) -> Response<Body> {
    let shared = proxy.shared();
    if shared.ready.load(Ordering::Relaxed) && !*shared.drain.borrow() {
        reply(StatusCode::OK, "text/plain", "")
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: no config applied yet or draining\n",
        )
    }
}

/// The proxy's own metrics in Prometheus text (15090, admin, and merged on 15020).
pub fn prometheus_text(proxy: &Proxy) -> String {
    let shared = proxy.shared();
    let mut out = String::with_capacity(16 * 1024);
    shared.metrics.render(&mut out);
    crate::resilience::report::prometheus(&shared.state.load(), &mut out);
    out
}

fn state_name(proxy: &Proxy) -> &'static str {
    let s = proxy.shared();
    if *s.drain.borrow() {
        "DRAINING"
    } else if s.ready.load(Ordering::Relaxed) {
        "LIVE"
    } else {
        "PRE_INITIALIZING"
    }
}

fn admin(proxy: &Proxy, req: &Request<Incoming>, path: &str) -> Response<Body> {
    let shared = proxy.shared();
    let snap = shared.state.load_full();
    let json = query(req, "format") == Some("json");
    match path {
        "/" | "/help" => reply(
            StatusCode::OK,
            "text/plain",
            "admin commands are:\n  /clusters\n  /config_dump\n  /drain_listeners (POST)\n  /healthz/ready\n  /listeners\n  /logging?level=<level>\n  /quitquitquit (POST)\n  /ready\n  /server_info\n  /stats\n  /stats/prometheus\n",
        ),
        "/config_dump" => match serde_json::to_string_pretty(&*snap.resources) {
            Ok(s) => reply(StatusCode::OK, "application/json", s),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("config_dump: {e}\n"),
            ),
        },
        "/ready" => {
            let st = state_name(proxy);
            let code = if st == "LIVE" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(code, "text/plain", format!("{st}\n"))
        }
        "/server_info" => {
            let v = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "state": state_name(proxy),
                "uptime_seconds": shared.started.elapsed().as_secs(),
                "node": {
                    "id": shared.node.id,
                    "namespace": shared.node.namespace,
                    "workload": shared.node.workload,
                    "labels": shared.node.labels,
                },
                "config_version": snap.version,
                "config_applied": shared.stats.config_applied.load(Ordering::Relaxed),
                "config_rejected": shared.stats.config_rejected.load(Ordering::Relaxed),
                "last_rejection": shared.last_error.lock().ok().and_then(|e| e.clone()),
            });
            reply(StatusCode::OK, "application/json", v.to_string())
        }
        "/listeners" => {
            let bound = proxy.listener_addrs();
            if json {
                let v: Vec<_> = snap
                    .listeners
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "name": l.name,
                            "address": bound.get(&l.name).copied().unwrap_or(l.address).to_string(),
                            "chains": l.chains.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({ "listener_statuses": v }).to_string(),
                )
            } else {
                let mut out = String::new();
                for l in &snap.listeners {
                    let _ = writeln!(
                        out,
                        "{}::{}",
                        l.name,
                        bound.get(&l.name).copied().unwrap_or(l.address)
                    );
                }
                reply(StatusCode::OK, "text/plain", out)
            }
        }
        "/clusters" => {
            if json {
                let v: Vec<_> = snap
                    .clusters
                    .iter()
                    .map(|c| {
                        let hosts: Vec<_> = c
                            .endpoints
                            .iter()
                            .enumerate()
                            .map(|(i, e)| {
                                let s = &e.upstream.stats;
                                serde_json::json!({
                                    "address": e.upstream.addr.to_string(),
                                    "weight": e.weight,
                                    "health_status": if !e.healthy { "UNHEALTHY" } else if !e.upstream.is_available() || c.resilience.ejected_now(i) { "EJECTED" } else { "HEALTHY" },
                                    "stats": {
                                        "cx_total": s.cx_total.load(Ordering::Relaxed),
                                        "cx_connect_fail": s.cx_connect_fail.load(Ordering::Relaxed),
                                        "rq_total": s.rq_total.load(Ordering::Relaxed),
                                        "rq_success": s.rq_success.load(Ordering::Relaxed),
                                        "rq_error": s.rq_error.load(Ordering::Relaxed),
                                        "rq_active": e.upstream.active_requests(),
                                        "cx_idle": e.upstream.idle_connections(),
                                    }
                                })
                            })
                            .collect();
                        serde_json::json!({ "name": c.name, "host_statuses": hosts, "resilience": crate::resilience::report::json(c) })
                    })
                    .collect();
                reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({ "cluster_statuses": v }).to_string(),
                )
            } else {
                let mut out = String::new();
                for c in &snap.clusters {
                    crate::resilience::report::text(c, &mut out);
                    for (i, e) in c.endpoints.iter().enumerate() {
                        let s = &e.upstream.stats;
                        let p = format!("{}::{}", c.name, e.upstream.addr);
                        let health = if !e.healthy {
                            "/failed_eds_health"
                        } else if !e.upstream.is_available() || c.resilience.ejected_now(i) {
                            "/failed_outlier_check"
                        } else {
                            "healthy"
                        };
                        let _ =
                            writeln!(out, "{p}::cx_total::{}", s.cx_total.load(Ordering::Relaxed));
                        let _ = writeln!(
                            out,
                            "{p}::cx_connect_fail::{}",
                            s.cx_connect_fail.load(Ordering::Relaxed)
                        );
                        let _ = writeln!(out, "{p}::rq_active::{}", e.upstream.active_requests());
                        let _ =
                            writeln!(out, "{p}::rq_total::{}", s.rq_total.load(Ordering::Relaxed));
                        let _ = writeln!(
                            out,
                            "{p}::rq_success::{}",
                            s.rq_success.load(Ordering::Relaxed)
                        );
                        let _ =
                            writeln!(out, "{p}::rq_error::{}", s.rq_error.load(Ordering::Relaxed));
                        let _ = writeln!(out, "{p}::weight::{}", e.weight);
                        let _ = writeln!(out, "{p}::health_flags::{health}");
                    }
                }
                reply(StatusCode::OK, "text/plain", out)
            }
        }
        "/stats" => {
            let st = &shared.stats;
            let mut out = String::new();
            let _ = writeln!(
                out,
                "server.live: {}",
                u8::from(state_name(proxy) == "LIVE")
            );
            let _ = writeln!(out, "server.uptime: {}", shared.started.elapsed().as_secs());
            let _ = writeln!(
                out,
                "server.downstream_cx_total: {}",
                st.downstream_cx_total.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "server.downstream_cx_active: {}",
                st.downstream_cx_active.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "halyard.config_applied: {}",
                st.config_applied.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "halyard.config_rejected: {}",
                st.config_rejected.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "cluster_manager.active_clusters: {}",
                snap.clusters.len()
            );
            for c in &snap.clusters {
                let sum = |f: fn(&crate::upstream::UpstreamStats) -> u64| -> u64 {
                    c.endpoints.iter().map(|e| f(&e.upstream.stats)).sum()
                };
                let _ = writeln!(
                    out,
                    "cluster.{}.upstream_rq_total: {}",
                    c.name,
                    sum(|s| s.rq_total.load(Ordering::Relaxed))
                );
                let _ = writeln!(
                    out,
                    "cluster.{}.upstream_cx_total: {}",
                    c.name,
                    sum(|s| s.cx_total.load(Ordering::Relaxed))
                );
                let _ = writeln!(
                    out,
                    "cluster.{}.upstream_cx_connect_fail: {}",
                    c.name,
                    sum(|s| s.cx_connect_fail.load(Ordering::Relaxed))
                );
                let _ = writeln!(
                    out,
                    "cluster.{}.membership_total: {}",
                    c.name,
                    c.endpoints.len()
                );
                let _ = writeln!(
                    out,
                    "cluster.{}.membership_healthy: {}",
                    c.name,
                    c.balancer.healthy_len()
                );
                crate::resilience::report::stats(c, &mut out);
            }
            reply(StatusCode::OK, "text/plain", out)
        }
        "/logging" => match (query(req, "level"), shared.log_reloader.as_ref()) {
            (Some(level), Some(reload)) => match reload(level) {
                Ok(()) => reply(
                    StatusCode::OK,
                    "text/plain",
                    format!("active level: {level}\n"),
                ),
                Err(e) => reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("level {level:?}: {e}\n"),
                ),
            },
            (Some(_), None) => reply(
                StatusCode::NOT_IMPLEMENTED,
                "text/plain",
                "log level is not adjustable in this process\n",
            ),
            (None, _) => reply(
                StatusCode::OK,
                "text/plain",
                "usage: /logging?level=<trace|debug|info|warn|error or an env-filter directive>\n",
            ),
        },
        "/drain_listeners" | "/quitquitquit" if req.method() != Method::POST => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n")
        }
        "/drain_listeners" => {
            proxy.drain();
            reply(StatusCode::OK, "text/plain", "OK\n")
        }
        "/quitquitquit" => {
            shared.quit.send_replace(true);
            reply(StatusCode::OK, "text/plain", "OK\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("unknown admin path {path}; see /help\n"),
        ),
    }
}
