//! Opaque TCP (and TLS passthrough): pick a cluster and endpoint, connect, copy both ways with
//! half-close, count bytes and connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cluster::ClusterKind;
use crate::lb::{HashKey, hash64};
use crate::metrics::{Reporter, ResponseFlags};
use crate::proxy::Shared;
use crate::route::WeightedClusters;
use crate::snapshot::Snapshot;
use crate::upstream::connect_tcp;

/// Proxy one downstream connection to the chosen upstream until both directions close.
#[allow(clippy::too_many_arguments)]
pub async fn proxy<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    snap: &Snapshot,
    down: S,
    clusters: &WeightedClusters,
    destination: SocketAddr,
    listener: SocketAddr,
    peer: SocketAddr,
    reporter: Reporter,
) {
    let Some(cluster) = clusters
        .pick(rand::random())
        .and_then(|i| snap.clusters.get(i))
    else {
        return;
    };
    let metrics = &shared.metrics;
    let mut peers = cluster.peers.clone();
    let target = match cluster.kind {
        ClusterKind::Blackhole => None,
        // Without an original destination this would connect back to ourselves.
        ClusterKind::OriginalDst => (destination != listener).then_some(destination),
        ClusterKind::Endpoints => {
            let hash = match cluster.hash_key() {
                Some(HashKey::SourceIp) => Some(hash64(peer.ip().to_string().as_bytes())),
                _ => None,
            };
            cluster.pick(hash).map(|e| {
                if let Some(p) = &e.peers {
                    peers = p.clone();
                }
                e.upstream.addr
            })
        }
    };
    let Some(addr) = target else {
        let flags = if cluster.kind == ClusterKind::Endpoints {
            ResponseFlags::UH
        } else {
            ResponseFlags::NONE
        };
        let h = metrics.tcp(reporter, &peers, flags, false);
        h.opened();
        h.closed();
        return;
    };
    let up = match connect_tcp(addr, &cluster.pool).await {
        Ok(s) => s,
        _ => {
            let h = metrics.tcp(reporter, &peers, ResponseFlags::UF, false);
            h.opened();
            h.closed();
            return;
        }
    };
    let h = metrics.tcp(reporter, &peers, ResponseFlags::NONE, false);
    h.opened();
    let (dr, dw) = tokio::io::split(down);
    let (ur, uw) = up.into_split();
    let started = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        last.store(ns, Ordering::Relaxed);
    };
    // Counters move as bytes flow, so long-lived connections show up in metrics before they end.
    let copy = async {
        tokio::try_join!(
            pump(dr, uw, |n| {
                touch();
                h.bytes(0, n)
            }),
            pump(ur, dw, |n| {
                touch();
                h.bytes(n, 0)
            }),
        )
    };
    let pool = &cluster.pool;
    tokio::select! {
        res = copy => {
            if let Err(e) = res {
                tracing::debug!(error = %e, %addr, "tcp proxy ended with error");
            }
        }
        why = limits(pool.tcp_idle_timeout, pool.max_connection_duration, started, &last) => {
            // Dropping both directions closes both sockets.
            tracing::debug!(%addr, why, "tcp proxy connection closed");
        }
    }
    h.closed();
}

/// Resolves when the connection has been idle (no byte either way) for `idle` (DestinationRule
/// `tcp.idleTimeout`) or open for `max` (`tcp.maxConnectionDuration`); never without either.
async fn limits(
    idle: Option<Duration>,
    max: Option<Duration>,
    started: Instant,
    last: &AtomicU64,
) -> &'static str {
    loop {
        let idle_due =
            idle.map(|d| started + Duration::from_nanos(last.load(Ordering::Relaxed)) + d);
        let max_due = max.map(|d| started + d);
        let due = match (idle_due, max_due) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return std::future::pending().await,
        };
        let now = Instant::now();
        if now >= due {
            return if max_due.is_some_and(|m| now >= m) {
                "maxConnectionDuration"
            } else {
                "idleTimeout"
            };
        }
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Copy one direction until EOF, then half-close the other side's write half.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    count: impl Fn(u64),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..n]).await?;
        count(n as u64);
    }
}
