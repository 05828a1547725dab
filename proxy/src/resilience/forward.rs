//! The attempt loop of the request path: circuit breaking, per-try and total timeouts, retries
//! with back-off on another endpoint, outlier accounting and mirroring. The decisions come from
//! the pure types of this module's siblings; this file does the I/O.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Response, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;

use super::circuit::{Admission, Overflow, RetryGuard};
use super::fault::{AbortWith, hit};
use super::outlier::Observation;
use super::retry::{AttemptOutcome, Overrides};
use super::{MirrorPolicy, RoutePolicy};
use crate::body::Body;
use crate::cluster::{Cluster, ClusterKind};
use crate::metrics::{PeersId, ResponseFlags};
use crate::snapshot::Snapshot;
use crate::upstream::{
    ActiveGuard, Registry, RequestHead, Upstream, UpstreamError, UpstreamProtocol,
};

/// Largest request body kept for replay (retries, mirrors); larger or unsized bodies stream once
/// and are not retried or mirrored.
pub const REPLAY_BUFFER_LIMIT: u64 = 64 * 1024;

/// Longest a mirrored request may take when the route has no timeout.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Held until the response body ends: the circuit-breaker slot and the retry (if any).
#[derive(Debug, Default)]
pub struct Hold {
    _admission: Option<Admission>,
    _retry: Option<RetryGuard>,
}

/// Where and how to forward one request.
#[derive(Debug)]
pub struct Target<'a> {
    pub snap: &'a Snapshot,
    pub registry: &'a Registry,
    pub cluster: &'a Arc<Cluster>,
    pub policy: &'a RoutePolicy,
    /// The route's total timeout.
    pub timeout: Option<Duration>,
    pub protocol: UpstreamProtocol,
    /// Consistent-hash key of the request.
    pub hash: Option<u64>,
    /// `OriginalDst` clusters: where the connection was going.
    pub original_dst: SocketAddr,
    pub upgrade: bool,
    /// The request's authority, for the mirrors' `-shadow` authority.
    pub authority: &'a str,
}

/// An upstream response.
#[derive(Debug)]
pub struct Forwarded {
    pub resp: Response<Body>,
    pub upstream: Arc<Upstream>,
    pub peers: Arc<PeersId>,
    pub active: ActiveGuard,
    pub hold: Hold,
    pub flags: ResponseFlags,
    /// When the successful attempt started.
    pub attempt_start: Instant,
}

/// A reply the proxy makes itself.
#[derive(Debug)]
pub struct LocalReply {
    pub status: StatusCode,
    pub body: String,
    pub flags: ResponseFlags,
    pub peers: Arc<PeersId>,
    pub upstream: Option<SocketAddr>,
}

/// The response to an injected abort.
pub fn abort_response(with: AbortWith) -> Response<Body> {
    const BODY: &str = "fault filter abort";
    let mut resp = match with {
        AbortWith::Http(s) => {
            let mut r = Response::new(Body::full(BODY));
            *r.status_mut() = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(BODY.len()));
            r
        }
        AbortWith::Grpc(g) => {
            // Trailers-only gRPC response.
            let mut r = Response::new(Body::Empty);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            r.headers_mut().insert("grpc-status", HeaderValue::from(g));
            r.headers_mut()
                .insert("grpc-message", HeaderValue::from_static(BODY));
            r
        }
    };
    resp.headers_mut().remove(header::TRANSFER_ENCODING);
    resp
}

/// `host[:port]` → `host-shadow[:port]` (Envoy's mirror authority).
pub fn shadow_authority(authority: &str) -> String {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => authority.split_at(end + 1),
            None => (authority, ""),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => authority.split_at(h.len()),
            _ => (authority, ""),
        }
    };
    format!("{host}-shadow{port}")
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn is_refused_stream(e: &UpstreamError) -> bool {
    let UpstreamError::Reset { source, .. } = e else {
        return false;
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cur {
        if err.to_string().contains("refused stream") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Forward with the route's and cluster's policies. `head.uri`/`headers`/`version` are ready
/// for `t.protocol`; `body` is the downstream body.
pub async fn send(
    t: Target<'_>,
    parts: http::request::Parts,
    body: Body,
) -> Result<Forwarded, LocalReply> {
    let cluster = t.cluster;
    let state = &cluster.resilience;
    let mut head = RequestHead {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
    };
    let overrides = Overrides::take(&mut head.headers);
    let policy = &t.policy.retry;
    let start = Instant::now();
    let deadline = overrides.timeout.unwrap_or(t.timeout).map(|d| start + d);
    let per_try = overrides.per_try_timeout.or(policy.per_try_timeout);
    let local = |status, body: &str, flags| LocalReply {
        status,
        body: body.to_string(),
        flags,
        peers: cluster.peers.clone(),
        upstream: None,
    };
    let timeout_reply = || {
        local(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream request timeout",
            ResponseFlags::UT,
        )
    };

    // Keep the body for replay when retries or mirrors may need it and it is small.
    let max_retries = if t.upgrade {
        0
    } else {
        overrides.max_retries.unwrap_or(policy.num_retries)
    };
    let wants_replay = max_retries > 0 || !t.policy.mirrors.is_empty();
    let hint = body.size_hint();
    let (mut streamed, replay): (Option<Body>, Option<Bytes>) = if body.is_end_stream() {
        (None, Some(Bytes::new()))
    } else if wants_replay && hint.upper().is_some_and(|u| u <= REPLAY_BUFFER_LIMIT) {
        match Box::pin(body.collect()).await {
            Ok(c) => (None, Some(c.to_bytes())),
            Err(e) => {
                return Err(local(
                    StatusCode::BAD_REQUEST,
                    &format!("error reading the request body: {e}"),
                    ResponseFlags::DC,
                ));
            }
        }
    } else {
        (Some(body), None)
    };
    let body_for = |replay: &Option<Bytes>, streamed: &mut Option<Body>| match replay {
        Some(b) if b.is_empty() => Body::Empty,
        Some(b) => Body::full(b.clone()),
        None => streamed.take().unwrap_or_default(),
    };

    if let Some(b) = &replay {
        for m in &t.policy.mirrors {
            mirror(&t, m, &head, b.clone(), deadline);
        }
    }

    // Circuit breaking: refused at once (503 UO) or queued for an HTTP/1.1 connection.
    let admission = match state
        .circuit
        .admit(t.protocol == UpstreamProtocol::Http1, remaining(deadline))
        .await
    {
        Ok(a) => a,
        Err(Overflow::PendingTimeout) => return Err(timeout_reply()),
        Err(o) => {
            tracing::debug!(cluster = %cluster.name, overflow = %o, "circuit breaker open");
            return Err(local(
                StatusCode::SERVICE_UNAVAILABLE,
                &crate::http::upstream_error_body("overflow"),
                ResponseFlags::UO,
            ));
        }
    };
    let close_after = t.protocol == UpstreamProtocol::Http1
        && !t.upgrade
        && state.circuit.limits.max_requests_per_connection == Some(1);
    if close_after {
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    let mut tried: Vec<usize> = Vec::new();
    let mut tried_levels: Vec<u32> = Vec::new();
    let mut retry_guard: Option<RetryGuard> = None;
    let mut attempt: u32 = 0;
    let mut last: Option<LocalReply> = None;
    loop {
        // Endpoint.
        let (index, upstream, peers) = match cluster.kind {
            ClusterKind::Endpoints => {
                let avoid: &[usize] = if policy.avoid_previous_hosts {
                    &tried
                } else {
                    &[]
                };
                let skip: &[u32] = if policy.retry_remote_localities {
                    &tried_levels
                } else {
                    &[]
                };
                match cluster.pick_excluding(t.hash, avoid, skip) {
                    Some((i, ep)) => {
                        let up = if cluster.use_downstream_protocol
                            && t.protocol == UpstreamProtocol::Http2
                        {
                            t.registry.get_with(
                                ep.upstream.addr,
                                UpstreamProtocol::Http2,
                                ep.upstream.settings,
                            )
                        } else {
                            ep.upstream.clone()
                        };
                        (
                            Some(i),
                            up,
                            ep.peers.clone().unwrap_or_else(|| cluster.peers.clone()),
                        )
                    }
                    None => {
                        return Err(last.unwrap_or_else(|| {
                            local(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "no healthy upstream",
                                ResponseFlags::UH,
                            )
                        }));
                    }
                }
            }
            _ => (
                None,
                t.registry
                    .get_with(t.original_dst, t.protocol, cluster.pool),
                cluster.peers.clone(),
            ),
        };

        let left = remaining(deadline);
        if left.is_some_and(|l| l.is_zero()) {
            return Err(timeout_reply());
        }
        let try_timeout = min_opt(per_try, left);
        let total_bound = try_timeout.is_some() && try_timeout == left;
        let body = body_for(&replay, &mut streamed);
        let mut active = upstream.begin();
        // The first attempt starts with the request's forwarding (one clock read less).
        let attempt_start = if attempt == 0 { start } else { Instant::now() };
        // The head is lent, not copied: an HTTP/1.1 attempt encodes it straight from here.
        let sent = upstream.send(&head, body, t.upgrade, &mut active);
        let result = match try_timeout {
            Some(d) => tokio::time::timeout(d, sent).await.ok(),
            None => Some(sent.await),
        };

        // Classify.
        let (outcome, reply) = match result {
            None => {
                state.circuit.stats.rq_per_try_timeout.fetch_add(
                    u64::from(!total_bound),
                    std::sync::atomic::Ordering::Relaxed,
                );
                if let Some(i) = index {
                    state.observe(i, Observation::Timeout, &cluster.name);
                }
                if total_bound {
                    state
                        .circuit
                        .stats
                        .rq_timeout
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(timeout_reply());
                }
                (AttemptOutcome::PerTryTimeout, Err(timeout_reply()))
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, cluster = %cluster.name, attempt, "upstream attempt failed");
                let connect = e.is_connect_failure();
                if let Some(i) = index {
                    let obs = if connect {
                        Observation::ConnectFailure
                    } else {
                        Observation::Reset
                    };
                    state.observe(i, obs, &cluster.name);
                }
                let outcome = if connect {
                    AttemptOutcome::ConnectFailure
                } else if is_refused_stream(&e) {
                    AttemptOutcome::RefusedStream
                } else {
                    AttemptOutcome::Reset
                };
                let flags = if connect {
                    ResponseFlags::UF
                } else {
                    ResponseFlags::UC
                };
                let mut r = local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &crate::http::upstream_error_body(e.reset_reason()),
                    flags,
                );
                r.peers = peers.clone();
                r.upstream = Some(upstream.addr);
                (outcome, Err(r))
            }
            Some(Ok(resp)) => {
                let status = resp.status().as_u16();
                if let Some(i) = index {
                    state.observe(i, Observation::Status(status), &cluster.name);
                }
                let outcome = AttemptOutcome::Response {
                    status,
                    grpc: grpc_status(resp.headers()),
                };
                (outcome, Ok(resp))
            }
        };
        let headers = reply.as_ref().ok().map(Response::headers);
        let retriable = policy.retriable(outcome, headers);
        let replayable = replay.is_some();
        let mut flags = ResponseFlags::NONE;
        if retriable && replayable && attempt < max_retries {
            if let Some(g) = state.circuit.try_retry() {
                retry_guard = Some(g);
                attempt += 1;
                if let Some(i) = index {
                    tried.push(i);
                    tried_levels.push(cluster.level_of(i));
                }
                drop(active);
                let wait = policy.backoff(attempt, rand::random::<f64>());
                let wait = min_opt(Some(wait), remaining(deadline)).unwrap_or_default();
                if let Err(r) = reply {
                    last = Some(r);
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            flags = ResponseFlags::URX;
        } else if retriable && attempt > 0 {
            flags = ResponseFlags::URX;
        }
        return match reply {
            Ok(resp) => {
                if attempt > 0 && resp.status().as_u16() < 500 {
                    state
                        .circuit
                        .stats
                        .rq_retry_success
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Forwarded {
                    resp,
                    upstream,
                    peers,
                    active,
                    hold: Hold {
                        _admission: Some(admission),
                        _retry: retry_guard,
                    },
                    flags,
                    attempt_start,
                })
            }
            Err(mut r) => {
                r.flags = r.flags.union(flags);
                Err(r)
            }
        };
    }
}

/// Fire and forget a copy of the request to a mirror cluster, with the `-shadow` authority.
fn mirror(
    t: &Target<'_>,
    m: &MirrorPolicy,
    head: &RequestHead,
    body: Bytes,
    deadline: Option<Instant>,
) {
    if !hit(m.percent, rand::random::<f64>()) {
        return;
    }
    let Some(cluster) = t.snap.clusters.get(m.cluster).cloned() else {
        return;
    };
    let Some((_, ep)) = cluster.pick_excluding(None, &[], &[]) else {
        return;
    };
    let upstream = ep.upstream.clone();
    let shadow = shadow_authority(t.authority);
    let mut head = head.clone();
    match upstream.protocol {
        UpstreamProtocol::Http1 => {
            head.version = Version::HTTP_11;
            let pq = head.uri.path_and_query().cloned();
            head.uri = pq.map(Uri::from).unwrap_or_else(|| Uri::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&shadow) {
                head.headers.insert(header::HOST, v);
            }
        }
        UpstreamProtocol::Http2 => {
            head.version = Version::HTTP_2;
            let mut up = http::uri::Parts::default();
            up.scheme = Some(Scheme::HTTP);
            up.authority = Authority::try_from(shadow.as_str()).ok();
            up.path_and_query = head.uri.path_and_query().cloned();
            if let Ok(u) = Uri::from_parts(up) {
                head.uri = u;
            }
            head.headers.remove(header::HOST);
        }
    }
    head.headers.remove(header::CONNECTION);
    let limit = remaining(deadline).unwrap_or(MIRROR_TIMEOUT);
    let body = if body.is_empty() {
        Body::Empty
    } else {
        Body::full(body)
    };
    tokio::spawn(async move {
        let mut active = upstream.begin();
        match tokio::time::timeout(limit, upstream.send(&head, body, false, &mut active)).await {
            Ok(Ok(resp)) => {
                // Drain so the connection can be reused; the result is ignored.
                let _ = tokio::time::timeout(limit, resp.into_body().collect()).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, cluster = %cluster.name, "mirror failed"),
            Err(_) => tracing::debug!(cluster = %cluster.name, "mirror timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_suffix_goes_on_the_host() {
        assert_eq!(shadow_authority("httpbin:8000"), "httpbin-shadow:8000");
        assert_eq!(shadow_authority("httpbin"), "httpbin-shadow");
        assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
    }

    #[test]
    fn abort_responses() {
        let r = abort_response(AbortWith::Http(503));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let g = abort_response(AbortWith::Grpc(14));
        assert_eq!(g.status(), StatusCode::OK);
        assert_eq!(g.headers()["grpc-status"], "14");
    }
}
