//! Resilience (issue 4): fault injection, timeouts, retries, circuit breaking, outlier detection
//! and mirroring.
//!
//! The decisions are pure types ([`fault::FaultPolicy`], [`retry::RetryPolicy`],
//! [`circuit::Limits`] / [`circuit::RetryBudget`], [`outlier::OutlierDetector`]); the request path
//! calls them through [`forward::send`], the attempt loop. Route policies are compiled into
//! [`RoutePolicy`] (on `route::Forward`), cluster policies into [`ClusterState`] (on
//! `cluster::Cluster`), both from `halyard_config` resources.
//!
//! State lives with the compiled config: a config change starts a cluster's circuit-breaker
//! counters and outlier state afresh (requests in flight keep the state they started with).

pub mod circuit;
pub mod fault;
pub mod forward;
pub mod locality;
pub mod outlier;
pub mod report;
pub mod retry;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use halyard_config::resources as r;

use crate::error::ConfigError;
use circuit::{Circuit, Limits, RetryBudget};
use fault::{AbortWith, FaultPolicy};
use outlier::{Observation, OutlierConfig, OutlierDetector};
use retry::{RetryOnSet, RetryPolicy};

fn invalid(at: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        at: at.to_string(),
        why: why.into(),
    }
}

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

fn percent(p: f64, at: &str) -> Result<f64, ConfigError> {
    if !(0.0..=100.0).contains(&p) {
        return Err(invalid(
            at,
            format!("percentage {p} is not between 0 and 100"),
        ));
    }
    Ok(p)
}

/// One mirror destination of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPolicy {
    /// Index in the snapshot's cluster table.
    pub cluster: usize,
    pub percent: f64,
}

/// The resilience part of a route (`route::Forward`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutePolicy {
    /// No retries by default (the translator fills Istio's default policy).
    pub retry: RetryPolicy,
    pub fault: FaultPolicy,
    pub mirrors: Vec<MirrorPolicy>,
}

impl RoutePolicy {
    /// Compile a route's `retry`, `fault` and `mirrors`; mirrors naming an unknown cluster are
    /// dropped (with a warning), like Istio's missing mirror destinations.
    pub fn compile(
        a: &r::RouteAction,
        at: &str,
        clusters: &HashMap<String, usize>,
    ) -> Result<Self, ConfigError> {
        let mut out = RoutePolicy::default();
        if let Some(rp) = &a.retry {
            let rat = format!("{at}.retry");
            let (retry_on, unknown) = RetryOnSet::parse_list(&rp.retry_on.join(","));
            // Istio also accepts conditions that cannot happen here (`envoy-ratelimited`,
            // `http3-post-connect-failure`); they never match, so they are ignored, not refused.
            if !unknown.is_empty() {
                tracing::warn!(at = %rat, conditions = ?unknown, "retry conditions ignored");
            }
            let codes = rp
                .retriable_status_codes
                .iter()
                .map(|c| {
                    u16::try_from(*c)
                        .ok()
                        .filter(|c| (100..600).contains(c))
                        .ok_or_else(|| {
                            invalid(
                                &format!("{rat}.retriableStatusCodes"),
                                format!("{c} is not an HTTP status"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let base = ms(rp.base_interval_ms).unwrap_or(retry::DEFAULT_BASE_INTERVAL);
            out.retry = RetryPolicy {
                num_retries: rp.num_retries,
                retry_on,
                per_try_timeout: ms(rp.per_try_timeout_ms),
                retriable_status_codes: codes,
                retriable_headers: Vec::new(),
                base_interval: base,
                max_interval: ms(rp.max_interval_ms).unwrap_or(base * 10).max(base),
                avoid_previous_hosts: rp.avoid_previous_hosts,
                host_selection_max_attempts: rp.host_selection_max_attempts.max(1),
                retry_remote_localities: rp.retry_remote_localities,
            };
        }
        if let Some(f) = &a.fault {
            let fat = format!("{at}.fault");
            if let Some(d) = &f.delay {
                let p = percent(d.percentage, &format!("{fat}.delay.percentage"))?;
                out.fault.delay = Some((Duration::from_millis(d.fixed_delay_ms), p));
            }
            if let Some(ab) = &f.abort {
                use r::fault_injection::abort::Error;
                let p = percent(ab.percentage, &format!("{fat}.abort.percentage"))?;
                let with = match ab.error {
                    Some(Error::HttpStatus(s)) => AbortWith::Http(
                        u16::try_from(s)
                            .ok()
                            .filter(|s| (200..600).contains(s))
                            .ok_or_else(|| {
                                invalid(
                                    &format!("{fat}.abort.httpStatus"),
                                    format!("{s} is not between 200 and 599"),
                                )
                            })?,
                    ),
                    Some(Error::GrpcStatus(g)) if g <= 16 => AbortWith::Grpc(g),
                    Some(Error::GrpcStatus(g)) => {
                        return Err(invalid(
                            &format!("{fat}.abort.grpcStatus"),
                            format!("{g} is not a gRPC status code (0-16)"),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            &format!("{fat}.abort"),
                            "abort needs httpStatus or grpcStatus",
                        ));
                    }
                };
                out.fault.abort = Some((with, p));
            }
        }
        for (i, m) in a.mirrors.iter().enumerate() {
            let mat = format!("{at}.mirrors[{i}]");
            let p = percent(m.percentage, &format!("{mat}.percentage"))?;
            match clusters.get(&m.cluster) {
                Some(&cluster) => out.mirrors.push(MirrorPolicy {
                    cluster,
                    percent: p,
                }),
                None => {
                    tracing::warn!(at = %mat, cluster = %m.cluster, "mirror cluster not found; mirror skipped")
                }
            }
        }
        Ok(out)
    }
}

/// Live resilience state of one cluster: circuit breaker, retry budget, outlier detection.
#[derive(Debug)]
pub struct ClusterState {
    pub circuit: Circuit,
    outlier: Option<Mutex<OutlierDetector>>,
    /// Per endpoint, mirrors the detector (read on every pick without the lock).
    ejected: Vec<AtomicBool>,
    panic: AtomicBool,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::new(Limits::default(), None, 0)
    }
}

impl ClusterState {
    pub fn new(limits: Limits, outlier: Option<OutlierConfig>, endpoints: usize) -> Self {
        ClusterState {
            circuit: Circuit::new(limits),
            outlier: outlier
                .map(|c| Mutex::new(OutlierDetector::new(c, endpoints, Instant::now()))),
            ejected: (0..endpoints).map(|_| AtomicBool::new(false)).collect(),
            panic: AtomicBool::new(false),
        }
    }

    /// Compile a cluster's `connection_pool`, `outlier_detection` and `retry_budget`.
    pub fn compile(c: &r::Cluster, endpoints: usize, at: &str) -> Result<Self, ConfigError> {
        let nz = |v: u32| (v > 0).then_some(v);
        let mut limits = Limits::default();
        if let Some(cp) = &c.connection_pool {
            if let Some(t) = &cp.tcp {
                limits.max_connections = nz(t.max_connections);
            }
            if let Some(h) = &cp.http {
                limits.max_pending_requests = nz(h.http1_max_pending_requests);
                limits.max_requests = nz(h.http2_max_requests);
                limits.max_requests_per_connection = nz(h.max_requests_per_connection);
                limits.max_retries = nz(h.max_retries);
            }
        }
        if let Some(b) = &c.retry_budget {
            limits.retry_budget = Some(RetryBudget {
                percent: percent(b.percent, &format!("{at}.retryBudget.percent"))?,
                min_concurrency: b.min_retry_concurrency,
            });
        }
        let outlier = c.outlier_detection.as_ref().map(|o| {
            let d = OutlierConfig::default();
            OutlierConfig {
                consecutive_5xx: o
                    .consecutive_5xx_errors
                    .or(o.consecutive_errors)
                    .unwrap_or(d.consecutive_5xx),
                consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
                split_local_origin: o.split_external_local_origin_errors,
                consecutive_local_origin: o
                    .consecutive_local_origin_failures
                    .unwrap_or(d.consecutive_local_origin),
                interval: ms(o.interval_ms).unwrap_or(d.interval),
                base_ejection_time: ms(o.base_ejection_time_ms).unwrap_or(d.base_ejection_time),
                max_ejection_time: d.max_ejection_time,
                max_ejection_percent: o.max_ejection_percent.unwrap_or(d.max_ejection_percent),
                min_health_percent: o.min_health_percent,
            }
        });
        Ok(ClusterState::new(limits, outlier, endpoints))
    }

    pub fn has_outlier_detection(&self) -> bool {
        self.outlier.is_some()
    }

    /// Is endpoint `i` ejected (and not overridden by `minHealthPercent` panic)?
    pub fn is_ejected(&self, i: usize) -> bool {
        !self.panic.load(Ordering::Relaxed)
            && self
                .ejected
                .get(i)
                .is_some_and(|e| e.load(Ordering::Relaxed))
    }

    /// Is endpoint `i` ejected by the detector right now (for `/clusters`)?
    pub fn ejected_now(&self, i: usize) -> bool {
        self.ejected
            .get(i)
            .is_some_and(|e| e.load(Ordering::Relaxed))
    }

    fn with_detector(&self, f: impl FnOnce(&mut OutlierDetector)) {
        let Some(m) = &self.outlier else { return };
        let mut d = m.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d);
        for (i, e) in self.ejected.iter().enumerate() {
            e.store(d.is_ejected(i), Ordering::Relaxed);
        }
        self.panic.store(d.panic(), Ordering::Relaxed);
    }

    /// Run due outlier sweeps (ejected endpoints return after their time).
    pub fn tick(&self) {
        self.with_detector(|d| {
            d.tick(Instant::now());
        });
    }

    /// Report the result of one exchange with endpoint `i`.
    pub fn observe(&self, i: usize, obs: Observation, cluster: &str) {
        self.with_detector(|d| {
            if let Some(reason) = d.record(i, obs, Instant::now()) {
                tracing::info!(cluster, endpoint = i, ?reason, "outlier ejected");
            }
        });
    }

    /// Outlier counters and ejected count, when outlier detection is on.
    pub fn outlier_stats(&self) -> Option<(outlier::OutlierStats, usize)> {
        let m = self.outlier.as_ref()?;
        let d = m.lock().unwrap_or_else(|e| e.into_inner());
        Some((d.stats, d.ejected_count()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn compile_route_policy() {
        let a = r::RouteAction {
            retry: Some(r::RetryPolicy {
                num_retries: 3,
                retry_on: vec!["5xx".into(), "retriable-status-codes".into()],
                per_try_timeout_ms: 500,
                retriable_status_codes: vec![418],
                ..Default::default()
            }),
            fault: Some(r::FaultInjection {
                delay: Some(r::fault_injection::Delay {
                    fixed_delay_ms: 7000,
                    percentage: 100.0,
                }),
                abort: Some(r::fault_injection::Abort {
                    error: Some(r::fault_injection::abort::Error::HttpStatus(500)),
                    percentage: 10.0,
                }),
            }),
            mirrors: vec![
                r::Mirror {
                    cluster: "m".into(),
                    percentage: 50.0,
                },
                r::Mirror {
                    cluster: "absent".into(),
                    percentage: 100.0,
                },
            ],
            ..Default::default()
        };
        let idx: HashMap<String, usize> = [("m".to_string(), 4)].into_iter().collect();
        let p = RoutePolicy::compile(&a, "r", &idx).unwrap();
        assert_eq!(p.retry.num_retries, 3);
        assert_eq!(p.retry.per_try_timeout, Some(Duration::from_millis(500)));
        assert_eq!(p.retry.retriable_status_codes, vec![418]);
        assert_eq!(p.fault.delay, Some((Duration::from_secs(7), 100.0)));
        assert_eq!(p.fault.abort, Some((AbortWith::Http(500), 10.0)));
        assert_eq!(
            p.mirrors,
            vec![MirrorPolicy {
                cluster: 4,
                percent: 50.0
            }]
        );
        let mut odd = a.clone();
        odd.retry.as_mut().unwrap().retry_on = vec!["envoy-ratelimited".into(), "reset".into()];
        let p = RoutePolicy::compile(&odd, "r", &idx).unwrap();
        assert_eq!(
            p.retry.retry_on,
            RetryOnSet::default().with(retry::RetryOn::Reset)
        );
        let mut bad = a.clone();
        bad.retry.as_mut().unwrap().retriable_status_codes = vec![1000];
        let e = RoutePolicy::compile(&bad, "vh.routes[0]", &idx).unwrap_err();
        assert!(
            e.to_string()
                .contains("vh.routes[0].retry.retriableStatusCodes"),
            "{e}"
        );
        let mut bad = a;
        bad.fault
            .as_mut()
            .unwrap()
            .abort
            .as_mut()
            .unwrap()
            .percentage = 150.0;
        assert!(RoutePolicy::compile(&bad, "r", &idx).is_err());
    }

    #[test]
    fn compile_cluster_state() {
        let c = r::Cluster {
            connection_pool: Some(r::ConnectionPool {
                tcp: Some(r::connection_pool::Tcp {
                    max_connections: 1,
                    ..Default::default()
                }),
                http: Some(r::connection_pool::Http {
                    http1_max_pending_requests: 1,
                    max_requests_per_connection: 1,
                    ..Default::default()
                }),
            }),
            outlier_detection: Some(r::OutlierDetection {
                consecutive_5xx_errors: Some(1),
                interval_ms: 1000,
                base_ejection_time_ms: 3000,
                max_ejection_percent: Some(100),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = ClusterState::compile(&c, 2, "c").unwrap();
        assert_eq!(s.circuit.limits.max_connections, Some(1));
        assert_eq!(s.circuit.limits.max_pending_requests, Some(1));
        assert_eq!(s.circuit.limits.max_requests_per_connection, Some(1));
        assert_eq!(s.circuit.limits.max_requests, None);
        assert!(!s.is_ejected(1));
        s.observe(1, Observation::Status(500), "c");
        assert!(s.is_ejected(1));
        assert!(!s.is_ejected(0));
        assert_eq!(s.outlier_stats().unwrap().1, 1);
    }
}
