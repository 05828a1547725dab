//! Monitoring and debug HTTP (Istio's port 15014): `/metrics`, `/ready` and `/debug/*`.

pub mod client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::discovery::DiscoveryServer;
use crate::discovery::status::SyncReport;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::MeshSnapshot;

/// What the debug endpoints read. Cheap to clone.
#[derive(Clone)]
pub struct DebugState {
    pub discovery: DiscoveryServer,
    pub snapshots: watch::Receiver<Option<Arc<MeshSnapshot>>>,
    pub metrics: Arc<Metrics>,
    /// True once the registry has synced and the discovery port is serving.
    pub ready: watch::Receiver<bool>,
}

/// The router of every monitoring and debug endpoint.
pub fn router(state: DebugState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/config_dump", get(config_dump))
        .with_state(state)
}

/// Serves the debug endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: DebugState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Serve {
            what: "debug/monitoring",
            address: addr.map(|a| a.to_string()).unwrap_or_default(),
            source: Box::new(source),
        })
}

async fn metrics(State(state): State<DebugState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn ready(State(state): State<DebugState>) -> Response {
    if *state.ready.borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the service registry has not completed its initial sync\n",
        )
            .into_response()
    }
}

async fn syncz(State(state): State<DebugState>) -> Response {
    let config_version = state
        .snapshots
        .borrow()
        .as_ref()
        .map(|s| s.version)
        .unwrap_or(0);
    let report = SyncReport {
        config_version,
        proxies: state.discovery.statuses(),
    };
    json(&report)
}

async fn configz(State(state): State<DebugState>) -> Response {
    let snapshot = state.snapshots.borrow().clone();
    match snapshot {
        Some(s) => json(&s.configz()),
        None => not_synced(),
    }
}

async fn registryz(State(state): State<DebugState>) -> Response {
    let snapshot = state.snapshots.borrow().clone();
    match snapshot {
        Some(s) => json(&s.registryz()),
        None => not_synced(),
    }
}

async fn config_dump(
    State(state): State<DebugState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(proxy_id) = query.get("proxyID").filter(|p| !p.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "missing query parameter proxyID (e.g. /debug/config_dump?proxyID=productpage-v1-1.default)\n",
        )
            .into_response();
    };
    match state.discovery.config_dump(proxy_id) {
        Some(resources) => json(&*resources),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "proxy {proxy_id:?} is not connected to this control plane, or has no config yet\n"
            ),
        )
            .into_response(),
    }
}

fn not_synced() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the service registry has not completed its initial sync\n",
    )
        .into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response as JSON: {err}\n"),
        )
            .into_response(),
    }
}
