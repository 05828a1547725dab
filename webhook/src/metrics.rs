//! Prometheus counters and histograms of the admission server, rendered in the text exposition format.
//! Names are Istio's: `sidecar_injection_*` for injection and `galley_validation_*` for validation.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::review::Verdict;

/// Upper bounds in seconds; admission work is sub-millisecond, the API server's timeout is 30 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    inject_requests: AtomicU64,
    inject_success: AtomicU64,
    inject_skip: AtomicU64,
    inject_failure: AtomicU64,
    inject_time: Histogram,
    validate_requests: AtomicU64,
    validate_passed: AtomicU64,
    validate_failed: Mutex<BTreeMap<&'static str, u64>>,
    validate_time: Histogram,
}

impl Metrics {
    pub fn record_inject(&self, verdict: Verdict, took: Duration) {
        self.inject_requests.fetch_add(1, Ordering::Relaxed);
        let counter = match verdict {
            Verdict::Success => &self.inject_success,
            Verdict::Skip => &self.inject_skip,
            Verdict::Denied(_) | Verdict::BadRequest => &self.inject_failure,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inject_time.observe(took);
    }

    pub fn record_validate(&self, verdict: Verdict, took: Duration) {
        self.validate_requests.fetch_add(1, Ordering::Relaxed);
        let reason = match verdict {
            Verdict::Success | Verdict::Skip => None,
            Verdict::Denied(reason) => Some(reason),
            Verdict::BadRequest => Some("bad_request"),
        };
        match reason {
            None => {
                self.validate_passed.fetch_add(1, Ordering::Relaxed);
            }
            Some(reason) => {
                // A poisoned lock only means another thread panicked mid-increment; the map is still usable.
                let mut failed = self
                    .validate_failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                *failed.entry(reason).or_default() += 1;
            }
        }
        self.validate_time.observe(took);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "sidecar_injection_requests_total",
            "Total number of injection requests.",
            &self.inject_requests,
        );
        counter(
            &mut out,
            "sidecar_injection_success_total",
            "Total number of successful injections.",
            &self.inject_success,
        );
        counter(
            &mut out,
            "sidecar_injection_skip_total",
            "Total number of skipped injections.",
            &self.inject_skip,
        );
        counter(
            &mut out,
            "sidecar_injection_failure_total",
            "Total number of failed injections.",
            &self.inject_failure,
        );
        self.inject_time.render(
            "sidecar_injection_time_seconds",
            "Time to handle an injection request.",
            &mut out,
        );
        counter(
            &mut out,
            "galley_validation_requests_total",
            "Total number of validation requests.",
            &self.validate_requests,
        );
        counter(
            &mut out,
            "galley_validation_passed",
            "Resources that passed validation (or needed none).",
            &self.validate_passed,
        );
        let _ = writeln!(
            out,
            "# HELP galley_validation_failed Resource validation failures, by reason.\n# TYPE galley_validation_failed counter"
        );
        let failed = self
            .validate_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (reason, n) in failed.iter() {
            let _ = writeln!(out, "galley_validation_failed{{reason=\"{reason}\"}} {n}");
        }
        drop(failed);
        self.validate_time.render(
            "galley_validation_time_seconds",
            "Time to handle a validation request.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets() {
        let m = Metrics::default();
        m.record_inject(Verdict::Success, Duration::from_micros(300));
        m.record_inject(Verdict::Skip, Duration::from_millis(2));
        m.record_inject(Verdict::Denied("x"), Duration::from_secs(2));
        m.record_validate(Verdict::Denied("invalid_config"), Duration::from_micros(50));
        let text = m.render();
        assert!(text.contains("sidecar_injection_requests_total 3\n"));
        assert!(text.contains("sidecar_injection_success_total 1\n"));
        assert!(text.contains("sidecar_injection_skip_total 1\n"));
        assert!(text.contains("sidecar_injection_failure_total 1\n"));
        assert!(text.contains("sidecar_injection_time_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("sidecar_injection_time_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("galley_validation_failed{reason=\"invalid_config\"} 1\n"));
    }
}
