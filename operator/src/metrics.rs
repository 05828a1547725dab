//! Control-plane metrics in the Prometheus text format, under Istio's names so dashboards carry over.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Istio's `pilot_proxy_convergence_time` buckets, in seconds.
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// All metrics of one control plane. Shared by reference; every update is lock-free except labelled counters.
#[derive(Debug, Default)]
pub struct Metrics {
    connected: AtomicI64,
    pushes: LabelledCounter,
    send_errors: LabelledCounter,
    rejects: LabelledCounter,
    expired_nonces: LabelledCounter,
    internal_errors: AtomicU64,
    debounced_pushes: AtomicU64,
    convergence: Histogram,
}

impl Metrics {
    pub fn proxy_connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn proxy_disconnected(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connected_proxies(&self) -> i64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// One response of type `short_type` (`cds`, `eds`, ...) written to a proxy.
    pub fn push_sent(&self, short_type: &str) {
        self.pushes.inc(short_type);
    }

    pub fn pushes(&self, short_type: &str) -> u64 {
        self.pushes.get(short_type)
    }

    /// A response could not be written to a proxy's stream.
    pub fn push_send_error(&self, short_type: &str) {
        self.send_errors.inc(short_type);
    }

    /// A proxy NACKed a response.
    pub fn push_rejected(&self, short_type: &str) {
        self.rejects.inc(short_type);
    }

    pub fn rejects(&self, short_type: &str) -> u64 {
        self.rejects.get(short_type)
    }

    /// A request carried a nonce other than the last one sent: an outdated ACK, ignored.
    pub fn expired_nonce(&self, short_type: &str) {
        self.expired_nonces.inc(short_type);
    }

    /// A proxy's config could not be computed.
    pub fn internal_error(&self) {
        self.internal_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn internal_errors(&self) -> u64 {
        self.internal_errors.load(Ordering::Relaxed)
    }

    /// A debounced batch of changes became a push.
    pub fn debounced_push(&self) {
        self.debounced_pushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Time from a config change to a proxy having ACKed everything it was sent for it.
    pub fn observe_convergence(&self, elapsed: Duration) {
        self.convergence.observe(elapsed.as_secs_f64());
    }

    pub fn convergence_count(&self) -> u64 {
        self.convergence.count.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        gauge(
            &mut out,
            "pilot_xds",
            "Number of proxies connected to this control plane using the discovery protocol.",
            self.connected.load(Ordering::Relaxed),
        );
        self.pushes.render(
            &mut out,
            "pilot_xds_pushes",
            "Responses pushed to proxies, by type.",
        );
        self.send_errors.render(
            &mut out,
            "pilot_xds_send_errors",
            "Responses that could not be written to a proxy's stream, by type.",
        );
        self.rejects.render(
            &mut out,
            "pilot_total_xds_rejects",
            "Responses NACKed by proxies, by type.",
        );
        self.expired_nonces.render(
            &mut out,
            "pilot_xds_expired_nonce",
            "Requests that acknowledged an outdated nonce, by type.",
        );
        counter(
            &mut out,
            "pilot_total_xds_internal_errors",
            "Proxy configs that could not be computed.",
            self.internal_errors.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "pilot_debounce_pushes",
            "Debounced batches of changes that triggered a push.",
            self.debounced_pushes.load(Ordering::Relaxed),
        );
        self.convergence.render(
            &mut out,
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration.",
        );
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// A counter with one `type` label.
#[derive(Debug, Default)]
struct LabelledCounter(Mutex<BTreeMap<String, u64>>);

impl LabelledCounter {
    fn inc(&self, label: &str) {
        // a poisoned lock only means another thread panicked mid-increment; the map is still usable
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(label.to_string()).or_default() += 1;
    }

    fn get(&self, label: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(label).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (label, value) in map.iter() {
            let _ = writeln!(out, "{name}{{type=\"{label}\"}} {value}");
        }
    }
}

#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; CONVERGENCE_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so that it can be an atomic integer.
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (bound, bucket) in CONVERGENCE_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in CONVERGENCE_BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_istio_names_and_labels() {
        let m = Metrics::default();
        m.proxy_connected();
        m.proxy_connected();
        m.proxy_disconnected();
        m.push_sent("cds");
        m.push_sent("cds");
        m.push_sent("rds");
        m.push_rejected("rds");
        m.internal_error();
        let text = m.render();
        assert!(text.contains("\npilot_xds 1\n"), "{text}");
        assert!(text.contains("pilot_xds_pushes{type=\"cds\"} 2"), "{text}");
        assert!(text.contains("pilot_xds_pushes{type=\"rds\"} 1"), "{text}");
        assert!(
            text.contains("pilot_total_xds_rejects{type=\"rds\"} 1"),
            "{text}"
        );
        assert!(text.contains("pilot_total_xds_internal_errors 1"), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_convergence(Duration::from_millis(50));
        m.observe_convergence(Duration::from_millis(700));
        m.observe_convergence(Duration::from_secs(60));
        let text = m.render();
        assert!(
            text.contains("pilot_proxy_convergence_time_bucket{le=\"0.1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pilot_proxy_convergence_time_bucket{le=\"1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("pilot_proxy_convergence_time_bucket{le=\"30\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("pilot_proxy_convergence_time_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("pilot_proxy_convergence_time_count 3"),
            "{text}"
        );
    }
}
