//! Outlier detection (DestinationRule `outlierDetection`): passive health checking per cluster.
//!
//! [`OutlierDetector`] is pure (time is passed in): the request path reports each attempt's
//! result for an endpoint index; an endpoint is ejected as soon as it reaches a consecutive-error
//! threshold (if `maxEjectionPercent` allows), for `baseEjectionTime` × its number of ejections,
//! and returns at the first sweep (every `interval`) after that time.

use std::time::{Duration, Instant};

/// Result of one exchange with an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Response headers with this status.
    Status(u16),
    /// Connect failure (or refused) — a local-origin error.
    ConnectFailure,
    /// Reset before headers — local origin.
    Reset,
    /// No response in time — local origin.
    Timeout,
}

/// Compiled `outlierDetection`; thresholds of 0 are off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub split_local_origin: bool,
    pub consecutive_local_origin: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

impl Default for OutlierConfig {
    /// Istio's defaults when `outlierDetection` is present.
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            split_local_origin: false,
            consecutive_local_origin: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectReason {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
}

#[derive(Debug, Clone, Default)]
struct Host {
    c5xx: u32,
    cgw: u32,
    clocal: u32,
    ejected_until: Option<Instant>,
    /// Ejection multiplier: +1 per ejection, -1 per interval spent healthy.
    multiplier: u32,
    ejections: u64,
}

/// Counters (Envoy's `outlier_detection.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutlierStats {
    pub ejections_total: u64,
    pub ejections_consecutive_5xx: u64,
    pub ejections_consecutive_gateway: u64,
    pub ejections_consecutive_local_origin: u64,
    /// Ejections skipped because `maxEjectionPercent` was reached.
    pub ejections_overflow: u64,
}

/// Outlier state of one cluster's endpoints.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    cfg: OutlierConfig,
    hosts: Vec<Host>,
    next_sweep: Instant,
    pub stats: OutlierStats,
}

impl OutlierDetector {
    pub fn new(cfg: OutlierConfig, hosts: usize, now: Instant) -> Self {
        OutlierDetector {
            next_sweep: now + cfg.interval,
            cfg,
            hosts: vec![Host::default(); hosts],
            stats: OutlierStats::default(),
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.cfg
    }

    pub fn is_ejected(&self, host: usize) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.ejected_until.is_some())
    }

    pub fn ejected_count(&self) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.ejected_until.is_some())
            .count()
    }

    /// Times this endpoint was ejected.
    pub fn ejections_of(&self, host: usize) -> u64 {
        self.hosts.get(host).map_or(0, |h| h.ejections)
    }

    /// Below `minHealthPercent` healthy endpoints the balancer ignores ejections (Istio: outlier
    /// detection is disabled and all endpoints are used).
    pub fn panic(&self) -> bool {
        let n = self.hosts.len();
        n > 0 && (n - self.ejected_count()) * 100 < self.cfg.min_health_percent as usize * n
    }

    /// Record one result; returns the reason when this ejects the endpoint.
    pub fn record(&mut self, host: usize, obs: Observation, now: Instant) -> Option<EjectReason> {
        self.tick(now);
        let cfg = &self.cfg;
        let h = self.hosts.get_mut(host)?;
        let local = matches!(
            obs,
            Observation::ConnectFailure | Observation::Reset | Observation::Timeout
        );
        let mut reason = None;
        if local && cfg.split_local_origin {
            h.clocal += 1;
            if cfg.consecutive_local_origin > 0 && h.clocal >= cfg.consecutive_local_origin {
                reason = Some(EjectReason::ConsecutiveLocalOrigin);
            }
        } else {
            // Local-origin errors count as the status Envoy maps them to.
            let status = match obs {
                Observation::Status(s) => s,
                Observation::Timeout => 504,
                Observation::ConnectFailure | Observation::Reset => 503,
            };
            if status >= 500 {
                h.c5xx += 1;
            } else {
                h.c5xx = 0;
                if cfg.split_local_origin {
                    h.clocal = 0;
                }
            }
            if matches!(status, 502..=504) {
                h.cgw += 1;
            } else {
                h.cgw = 0;
            }
            if cfg.consecutive_5xx > 0 && h.c5xx >= cfg.consecutive_5xx {
                reason = Some(EjectReason::Consecutive5xx);
            } else if cfg.consecutive_gateway > 0 && h.cgw >= cfg.consecutive_gateway {
                reason = Some(EjectReason::ConsecutiveGateway);
            }
        }
        if h.ejected_until.is_some() {
            return None;
        }
        let reason = reason?;
        h.c5xx = 0;
        h.cgw = 0;
        h.clocal = 0;
        // Envoy: eject while the ejected share is below the maximum (so one is always allowed).
        let n = self.hosts.len();
        let ejected = self.ejected_count();
        if ejected * 100 >= self.cfg.max_ejection_percent as usize * n && ejected > 0 {
            self.stats.ejections_overflow += 1;
            return None;
        }
        let cfg = &self.cfg;
        let h = &mut self.hosts[host];
        h.multiplier = h.multiplier.saturating_add(1);
        h.ejections += 1;
        let time = cfg
            .base_ejection_time
            .saturating_mul(h.multiplier)
            .min(cfg.max_ejection_time.max(cfg.base_ejection_time));
        h.ejected_until = Some(now + time);
        self.stats.ejections_total += 1;
        match reason {
            EjectReason::Consecutive5xx => self.stats.ejections_consecutive_5xx += 1,
            EjectReason::ConsecutiveGateway => self.stats.ejections_consecutive_gateway += 1,
            EjectReason::ConsecutiveLocalOrigin => {
                self.stats.ejections_consecutive_local_origin += 1
            }
        }
        Some(reason)
    }

    /// Run the interval sweeps due by `now`: return endpoints whose ejection time has passed and
    /// decay the multiplier of endpoints that stayed healthy. Returns how many came back.
    pub fn tick(&mut self, now: Instant) -> usize {
        let mut back = 0;
        while now >= self.next_sweep {
            let at = self.next_sweep;
            for h in &mut self.hosts {
                match h.ejected_until {
                    Some(until) if until <= at => {
                        h.ejected_until = None;
                        back += 1;
                    }
                    Some(_) => {}
                    None => h.multiplier = h.multiplier.saturating_sub(1),
                }
            }
            self.next_sweep = at + self.cfg.interval.max(Duration::from_millis(1));
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 100,
            ..Default::default()
        }
    }

    #[test]
    fn consecutive_5xx_ejects_and_success_resets() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(cfg(), 3, t0);
        assert_eq!(d.record(0, Observation::Status(500), t0), None);
        assert_eq!(d.record(0, Observation::Status(503), t0), None);
        assert_eq!(d.record(0, Observation::Status(200), t0), None);
        assert_eq!(d.record(0, Observation::Status(500), t0), None);
        assert_eq!(d.record(0, Observation::Status(500), t0), None);
        assert!(!d.is_ejected(0));
        assert_eq!(
            d.record(0, Observation::ConnectFailure, t0),
            Some(EjectReason::Consecutive5xx)
        );
        assert!(d.is_ejected(0));
        assert_eq!(d.stats.ejections_total, 1);
    }

    #[test]
    fn ejection_time_grows_with_ejections_and_returns_at_a_sweep() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(cfg(), 2, t0);
        for _ in 0..3 {
            d.record(1, Observation::Status(500), t0);
        }
        assert!(d.is_ejected(1));
        assert_eq!(d.tick(t0 + Duration::from_millis(9_500)), 0);
        assert_eq!(d.tick(t0 + Duration::from_secs(10)), 1);
        assert!(!d.is_ejected(1));
        // Second ejection right away: 2 x base.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            d.record(1, Observation::Status(502), t1);
        }
        assert!(d.is_ejected(1));
        assert_eq!(d.ejections_of(1), 2);
        d.tick(t1 + Duration::from_secs(19));
        assert!(d.is_ejected(1));
        d.tick(t1 + Duration::from_secs(20));
        assert!(!d.is_ejected(1));
    }

    #[test]
    fn gateway_errors_and_split_local_origin() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(
            OutlierConfig {
                consecutive_5xx: 0,
                consecutive_gateway: 2,
                max_ejection_percent: 100,
                ..cfg()
            },
            2,
            t0,
        );
        d.record(0, Observation::Status(500), t0);
        d.record(0, Observation::Status(500), t0);
        assert!(!d.is_ejected(0), "500 is not a gateway error");
        d.record(0, Observation::Status(502), t0);
        assert_eq!(
            d.record(0, Observation::Timeout, t0),
            Some(EjectReason::ConsecutiveGateway)
        );
        let mut s = OutlierDetector::new(
            OutlierConfig {
                split_local_origin: true,
                consecutive_local_origin: 2,
                max_ejection_percent: 100,
                ..cfg()
            },
            2,
            t0,
        );
        s.record(0, Observation::Status(500), t0);
        s.record(0, Observation::Status(500), t0);
        s.record(0, Observation::ConnectFailure, t0);
        assert!(!s.is_ejected(0), "local origin errors are counted apart");
        assert_eq!(
            s.record(0, Observation::Reset, t0),
            Some(EjectReason::ConsecutiveLocalOrigin)
        );
    }

    #[test]
    fn max_ejection_percent_and_min_health() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(
            OutlierConfig {
                max_ejection_percent: 10,
                min_health_percent: 50,
                ..cfg()
            },
            3,
            t0,
        );
        for h in 0..3 {
            for _ in 0..3 {
                d.record(h, Observation::Status(500), t0);
            }
        }
        assert_eq!(d.ejected_count(), 1, "10% of 3 still allows one ejection");
        assert_eq!(d.stats.ejections_overflow, 2);
        assert!(!d.panic());
        let mut all = OutlierDetector::new(
            OutlierConfig {
                min_health_percent: 50,
                ..cfg()
            },
            3,
            t0,
        );
        for h in 0..2 {
            for _ in 0..3 {
                all.record(h, Observation::Status(500), t0);
            }
        }
        assert_eq!(all.ejected_count(), 2);
        assert!(all.panic(), "1 of 3 healthy is below 50%");
    }
}
