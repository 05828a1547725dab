//! Circuit-breaker and outlier-detection state for the admin endpoints (`/clusters`, `/stats`,
//! `/stats/prometheus`), with Envoy's names.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::cluster::Cluster;
use crate::snapshot::Snapshot;

fn limit(v: Option<u32>) -> u64 {
    v.map_or(u64::from(u32::MAX), u64::from)
}

/// `(name, value)` counters of one cluster.
pub fn counters(c: &Cluster) -> Vec<(&'static str, u64)> {
    let st = &c.resilience.circuit.stats;
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut v = vec![
        ("upstream_rq_active", l(&st.rq_active)),
        ("upstream_rq_pending_active", l(&st.rq_pending_active)),
        ("upstream_rq_pending_overflow", l(&st.rq_pending_overflow)),
        ("upstream_cx_overflow", l(&st.cx_overflow)),
        ("upstream_rq_overflow", l(&st.rq_overflow)),
        ("upstream_rq_retry", l(&st.rq_retry)),
        ("upstream_rq_retry_success", l(&st.rq_retry_success)),
        ("upstream_rq_retry_overflow", l(&st.rq_retry_overflow)),
        ("upstream_rq_timeout", l(&st.rq_timeout)),
        ("upstream_rq_per_try_timeout", l(&st.rq_per_try_timeout)),
    ];
    if let Some((o, active)) = c.resilience.outlier_stats() {
        v.extend([
            ("outlier_detection.ejections_active", active as u64),
            ("outlier_detection.ejections_total", o.ejections_total),
            (
                "outlier_detection.ejections_consecutive_5xx",
                o.ejections_consecutive_5xx,
            ),
            (
                "outlier_detection.ejections_consecutive_gateway_failure",
                o.ejections_consecutive_gateway,
            ),
            (
                "outlier_detection.ejections_consecutive_local_origin_failure",
                o.ejections_consecutive_local_origin,
            ),
            ("outlier_detection.ejections_overflow", o.ejections_overflow),
        ]);
    }
    v
}

/// Cluster-level lines of the text `/clusters` output.
pub fn text(c: &Cluster, out: &mut String) {
    let lim = &c.resilience.circuit.limits;
    let n = &c.name;
    for (k, v) in [
        ("max_connections", lim.max_connections),
        ("max_pending_requests", lim.max_pending_requests),
        ("max_requests", lim.max_requests),
        ("max_retries", lim.max_retries),
    ] {
        let _ = writeln!(out, "{n}::default_priority::{k}::{}", limit(v));
    }
    for (k, v) in counters(c) {
        let _ = writeln!(out, "{n}::{k}::{v}");
    }
    // Envoy's per-host priority line, when locality levels the endpoints.
    if c.locality.is_some() {
        for (i, e) in c.endpoints.iter().enumerate() {
            let _ = writeln!(out, "{n}::{}::priority::{}", e.upstream.addr, c.level_of(i));
        }
    }
}

/// Lines of `/stats`.
pub fn stats(c: &Cluster, out: &mut String) {
    for (k, v) in counters(c) {
        let _ = writeln!(out, "cluster.{}.{k}: {v}", c.name);
    }
}

/// The JSON `/clusters` part.
pub fn json(c: &Cluster) -> serde_json::Value {
    let lim = &c.resilience.circuit.limits;
    let stats: serde_json::Map<String, serde_json::Value> = counters(c)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    serde_json::json!({
        "circuit_breakers": {
            "max_connections": limit(lim.max_connections),
            "max_pending_requests": limit(lim.max_pending_requests),
            "max_requests": limit(lim.max_requests),
            "max_retries": limit(lim.max_retries),
        },
        "stats": stats,
        "connection_pool": pool_json(&c.pool),
        "locality_priorities": c.locality.as_ref().map(|_| {
            (0..c.endpoints.len()).map(|i| c.level_of(i)).collect::<Vec<_>>()
        }),
    })
}

fn pool_json(p: &crate::upstream::PoolSettings) -> serde_json::Value {
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    serde_json::json!({
        "connect_timeout_ms": p.connect_timeout.as_millis() as u64,
        "idle_timeout_ms": ms(p.idle_timeout),
        "tcp_idle_timeout_ms": ms(p.tcp_idle_timeout),
        "max_connection_duration_ms": ms(p.max_connection_duration),
        "max_requests_per_connection": p.max_requests_per_connection,
        "max_concurrent_streams": p.max_concurrent_streams,
        "tcp_keepalive": p.keepalive.map(|k| serde_json::json!({
            "probes": k.probes,
            "time_ms": ms(k.time),
            "interval_ms": ms(k.interval),
        })),
    })
}

/// Prometheus gauges/counters (`envoy_cluster_*{cluster_name=..}`), as Envoy's stats sink names
/// them.
pub fn prometheus(snap: &Snapshot, out: &mut String) {
    for c in &snap.clusters {
        for (k, v) in counters(c) {
            let name = k.replace('.', "_");
            let _ = writeln!(
                out,
                "envoy_cluster_{name}{{cluster_name=\"{}\"}} {v}",
                c.name.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
    }
}
