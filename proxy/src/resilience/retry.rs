//! Retry policy (VirtualService `retries`), request-level overrides and exponential back-off with
//! jitter. Pure: the request path reports each attempt's [`AttemptOutcome`] and asks whether to
//! try again and how long to wait.

use std::time::Duration;

use http::HeaderMap;

/// One `retryOn` condition (Envoy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum RetryOn {
    /// Any 5xx, a reset, a connect failure or a per-try timeout.
    FiveXx = 1,
    /// 502, 503, 504, a connect failure or a per-try timeout.
    GatewayError = 1 << 1,
    /// Reset/disconnect before response headers (including per-try timeouts).
    Reset = 1 << 2,
    ConnectFailure = 1 << 3,
    /// 409.
    Retriable4xx = 1 << 4,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream = 1 << 5,
    RetriableStatusCodes = 1 << 6,
    RetriableHeaders = 1 << 7,
    GrpcCancelled = 1 << 8,
    GrpcDeadlineExceeded = 1 << 9,
    GrpcInternal = 1 << 10,
    GrpcResourceExhausted = 1 << 11,
    GrpcUnavailable = 1 << 12,
}

impl RetryOn {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "5xx" => RetryOn::FiveXx,
            "gateway-error" => RetryOn::GatewayError,
            "reset" | "reset-before-request" => RetryOn::Reset,
            "connect-failure" => RetryOn::ConnectFailure,
            "retriable-4xx" => RetryOn::Retriable4xx,
            "refused-stream" => RetryOn::RefusedStream,
            "retriable-status-codes" => RetryOn::RetriableStatusCodes,
            "retriable-headers" => RetryOn::RetriableHeaders,
            "cancelled" => RetryOn::GrpcCancelled,
            "deadline-exceeded" => RetryOn::GrpcDeadlineExceeded,
            "internal" => RetryOn::GrpcInternal,
            "resource-exhausted" => RetryOn::GrpcResourceExhausted,
            "unavailable" => RetryOn::GrpcUnavailable,
            _ => return None,
        })
    }
}

/// A set of [`RetryOn`] conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOnSet(u16);

impl RetryOnSet {
    pub fn with(self, c: RetryOn) -> Self {
        RetryOnSet(self.0 | c as u16)
    }
    pub fn has(self, c: RetryOn) -> bool {
        self.0 & (c as u16) != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Parse a comma-separated list (`x-envoy-retry-on` or `retryOn`); unknown names are
    /// returned separately.
    pub fn parse_list(list: &str) -> (Self, Vec<String>) {
        let mut set = RetryOnSet::default();
        let mut unknown = Vec::new();
        for c in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            match RetryOn::parse(c) {
                Some(r) => set = set.with(r),
                None => unknown.push(c.to_string()),
            }
        }
        (set, unknown)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Response headers arrived: HTTP status and, for gRPC, a `grpc-status` in the headers
    /// (trailers-only responses).
    Response { status: u16, grpc: Option<u32> },
    /// TCP connect failed or timed out, or the handshake failed: nothing reached the upstream.
    ConnectFailure,
    /// HTTP/2 stream refused by the peer.
    RefusedStream,
    /// Reset or closed before response headers.
    Reset,
    /// No response headers within the per-try timeout.
    PerTryTimeout,
}

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub num_retries: u32,
    pub retry_on: RetryOnSet,
    pub per_try_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// `retriable-headers`: retry when the response carries one of these headers.
    pub retriable_headers: Vec<http::HeaderName>,
    pub base_interval: Duration,
    pub max_interval: Duration,
    /// Try to avoid endpoints already tried.
    pub avoid_previous_hosts: bool,
    pub host_selection_max_attempts: u32,
    /// Retries may leave the locality levels already tried (`retryRemoteLocalities`).
    pub retry_remote_localities: bool,
}

/// Envoy's default back-off base.
pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

impl Default for RetryPolicy {
    /// No retries.
    fn default() -> Self {
        RetryPolicy {
            num_retries: 0,
            retry_on: RetryOnSet::default(),
            per_try_timeout: None,
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
            base_interval: DEFAULT_BASE_INTERVAL,
            max_interval: DEFAULT_BASE_INTERVAL * 10,
            avoid_previous_hosts: true,
            host_selection_max_attempts: 5,
            retry_remote_localities: false,
        }
    }
}

impl RetryPolicy {
    /// Istio's policy for routes that set no `retries`.
    pub fn istio_default() -> Self {
        let (retry_on, _) = RetryOnSet::parse_list(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        );
        RetryPolicy {
            num_retries: 2,
            retry_on,
            retriable_status_codes: vec![503],
            ..Default::default()
        }
    }

    /// Should an attempt that ended with `outcome` (and response `headers`, if any) be retried,
    /// conditions permitting (attempt counts and budgets are checked by the caller)?
    pub fn retriable(&self, outcome: AttemptOutcome, headers: Option<&HeaderMap>) -> bool {
        let on = self.retry_on;
        match outcome {
            AttemptOutcome::ConnectFailure => {
                on.has(RetryOn::ConnectFailure)
                    || on.has(RetryOn::FiveXx)
                    || on.has(RetryOn::GatewayError)
                    || on.has(RetryOn::Reset)
            }
            AttemptOutcome::RefusedStream => {
                on.has(RetryOn::RefusedStream) || on.has(RetryOn::FiveXx) || on.has(RetryOn::Reset)
            }
            AttemptOutcome::Reset => on.has(RetryOn::Reset) || on.has(RetryOn::FiveXx),
            AttemptOutcome::PerTryTimeout => {
                on.has(RetryOn::FiveXx) || on.has(RetryOn::GatewayError) || on.has(RetryOn::Reset)
            }
            AttemptOutcome::Response { status, grpc } => {
                if (on.has(RetryOn::FiveXx) && (500..600).contains(&status))
                    || (on.has(RetryOn::GatewayError) && matches!(status, 502..=504))
                    || (on.has(RetryOn::Retriable4xx) && status == 409)
                    || (on.has(RetryOn::RetriableStatusCodes)
                        && self.retriable_status_codes.contains(&status))
                {
                    return true;
                }
                if on.has(RetryOn::RetriableHeaders)
                    && let Some(h) = headers
                    && self.retriable_headers.iter().any(|n| h.contains_key(n))
                {
                    return true;
                }
                match grpc {
                    Some(1) => on.has(RetryOn::GrpcCancelled),
                    Some(4) => on.has(RetryOn::GrpcDeadlineExceeded),
                    Some(8) => on.has(RetryOn::GrpcResourceExhausted),
                    Some(13) => on.has(RetryOn::GrpcInternal),
                    Some(14) => on.has(RetryOn::GrpcUnavailable),
                    _ => false,
                }
            }
        }
    }

    /// Back-off before retry number `retry` (1-based): a uniform random wait in
    /// `[0, min(base * 2^(retry-1), max))` ("full jitter", as Envoy). `unit` is in `[0, 1)`.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let shift = retry.saturating_sub(1).min(20);
        let ceiling = self
            .base_interval
            .saturating_mul(1u32 << shift)
            .min(self.max_interval.max(self.base_interval));
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Request headers that override the route's timeouts and retry count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    /// `x-envoy-upstream-rq-timeout-ms`; `Some(None)` = 0 = no timeout.
    pub timeout: Option<Option<Duration>>,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`.
    pub per_try_timeout: Option<Duration>,
    /// `x-envoy-max-retries`.
    pub max_retries: Option<u32>,
}

pub static RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
pub static RQ_PER_TRY_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
pub static MAX_RETRIES: http::HeaderName = http::HeaderName::from_static("x-envoy-max-retries");

fn num(h: &HeaderMap, n: &http::HeaderName) -> Option<u64> {
    h.get(n)?.to_str().ok()?.trim().parse().ok()
}

impl Overrides {
    /// Read (and remove, as Envoy does) the override headers; malformed values are ignored.
    pub fn take(h: &mut HeaderMap) -> Self {
        if !crate::http::any_header(h, |n| n.as_str().starts_with("x-envoy-")) {
            return Overrides::default();
        }
        let o = Overrides {
            timeout: num(h, &RQ_TIMEOUT_MS).map(|ms| (ms > 0).then(|| Duration::from_millis(ms))),
            per_try_timeout: num(h, &RQ_PER_TRY_TIMEOUT_MS)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            max_retries: num(h, &MAX_RETRIES).map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        };
        h.remove(&RQ_TIMEOUT_MS);
        h.remove(&RQ_PER_TRY_TIMEOUT_MS);
        h.remove(&MAX_RETRIES);
        o
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn resp(status: u16) -> AttemptOutcome {
        AttemptOutcome::Response { status, grpc: None }
    }

    #[test]
    fn istio_default_retries_connect_failures_and_503_only() {
        let p = RetryPolicy::istio_default();
        assert_eq!(p.num_retries, 2);
        assert!(p.retriable(AttemptOutcome::ConnectFailure, None));
        assert!(p.retriable(AttemptOutcome::RefusedStream, None));
        assert!(p.retriable(resp(503), None));
        assert!(!p.retriable(resp(500), None));
        assert!(!p.retriable(resp(502), None));
        assert!(!p.retriable(AttemptOutcome::Reset, None));
        assert!(!p.retriable(AttemptOutcome::PerTryTimeout, None));
        let grpc = |g| AttemptOutcome::Response {
            status: 200,
            grpc: Some(g),
        };
        assert!(p.retriable(grpc(14), None));
        assert!(p.retriable(grpc(1), None));
        assert!(!p.retriable(grpc(13), None));
    }

    #[test]
    fn conditions() {
        let mk = |s: &str| {
            let (retry_on, unknown) = RetryOnSet::parse_list(s);
            assert!(unknown.is_empty(), "{unknown:?}");
            RetryPolicy {
                num_retries: 3,
                retry_on,
                retriable_status_codes: vec![418],
                retriable_headers: vec![http::HeaderName::from_static("x-retry-me")],
                ..Default::default()
            }
        };
        let five = mk("5xx");
        assert!(five.retriable(resp(500), None));
        assert!(five.retriable(AttemptOutcome::Reset, None));
        assert!(five.retriable(AttemptOutcome::PerTryTimeout, None));
        assert!(!five.retriable(resp(404), None));
        let gw = mk("gateway-error");
        assert!(gw.retriable(resp(504), None));
        assert!(!gw.retriable(resp(500), None));
        assert!(!gw.retriable(AttemptOutcome::Reset, None));
        assert!(mk("retriable-4xx").retriable(resp(409), None));
        assert!(!mk("retriable-4xx").retriable(resp(404), None));
        assert!(mk("retriable-status-codes").retriable(resp(418), None));
        assert!(mk("reset").retriable(AttemptOutcome::Reset, None));
        assert!(!mk("connect-failure").retriable(AttemptOutcome::Reset, None));
        let mut h = HeaderMap::new();
        h.insert("x-retry-me", http::HeaderValue::from_static("1"));
        assert!(mk("retriable-headers").retriable(resp(200), Some(&h)));
        assert!(!mk("retriable-headers").retriable(resp(200), Some(&HeaderMap::new())));
        for (name, code) in [
            ("cancelled", 1),
            ("deadline-exceeded", 4),
            ("resource-exhausted", 8),
            ("internal", 13),
            ("unavailable", 14),
        ] {
            let p = mk(name);
            let o = AttemptOutcome::Response {
                status: 200,
                grpc: Some(code),
            };
            assert!(p.retriable(o, None), "{name}");
            assert!(!mk("5xx").retriable(o, None), "{name}");
        }
        let (_, unknown) = RetryOnSet::parse_list("5xx, bogus");
        assert_eq!(unknown, vec!["bogus"]);
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let p = RetryPolicy {
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            ..Default::default()
        };
        assert_eq!(p.backoff(1, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(1, 0.5), Duration::from_micros(12_500));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(25));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(50));
        assert_eq!(p.backoff(10, 0.5), Duration::from_millis(125));
        assert!(p.backoff(1000, 0.999) < Duration::from_millis(250));
    }

    #[test]
    fn override_headers_are_read_and_removed() {
        let mut h = HeaderMap::new();
        h.insert(&RQ_TIMEOUT_MS, http::HeaderValue::from_static("1500"));
        h.insert(&MAX_RETRIES, http::HeaderValue::from_static("4"));
        h.insert(&RQ_PER_TRY_TIMEOUT_MS, http::HeaderValue::from_static("x"));
        let o = Overrides::take(&mut h);
        assert_eq!(o.timeout, Some(Some(Duration::from_millis(1500))));
        assert_eq!(o.max_retries, Some(4));
        assert_eq!(o.per_try_timeout, None);
        assert!(h.is_empty());
        let mut z = HeaderMap::new();
        z.insert(&RQ_TIMEOUT_MS, http::HeaderValue::from_static("0"));
        assert_eq!(Overrides::take(&mut z).timeout, Some(None));
    }
}
