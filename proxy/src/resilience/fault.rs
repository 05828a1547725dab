//! Fault injection (VirtualService `fault`): pure decisions, the request path sleeps or answers.

use std::time::Duration;

/// How an injected abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortWith {
    /// An HTTP status (`httpStatus`).
    Http(u16),
    /// A gRPC status code (`grpcStatus`), sent as a trailers-only response with HTTP 200.
    Grpc(u32),
}

/// The compiled `fault` of one route. Percentages are 0..=100 (Istio's `percentage.value`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPolicy {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(AbortWith, f64)>,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultDecision {
    pub delay: Option<Duration>,
    pub abort: Option<AbortWith>,
}

/// True for a uniform `unit` in `[0, 1)` when `percent` (0..=100) of requests should be hit.
pub fn hit(percent: f64, unit: f64) -> bool {
    if percent.is_nan() || percent <= 0.0 {
        return false;
    }
    percent >= 100.0 || unit * 100.0 < percent
}

impl FaultPolicy {
    pub fn is_empty(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }

    /// Decide with two independent uniform numbers in `[0, 1)` (delay, abort), as Envoy draws
    /// the delay and the abort separately.
    pub fn decide(&self, unit_delay: f64, unit_abort: f64) -> FaultDecision {
        FaultDecision {
            delay: self
                .delay
                .filter(|(d, p)| !d.is_zero() && hit(*p, unit_delay))
                .map(|(d, _)| d),
            abort: self
                .abort
                .filter(|(_, p)| hit(*p, unit_abort))
                .map(|(a, _)| a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_select_the_expected_share() {
        let f = FaultPolicy {
            delay: Some((Duration::from_millis(5), 10.0)),
            abort: Some((AbortWith::Http(503), 50.0)),
        };
        let (mut delayed, mut aborted) = (0, 0);
        for i in 0..1000 {
            let u = f64::from(i) / 1000.0;
            let d = f.decide(u, u);
            delayed += usize::from(d.delay.is_some());
            aborted += usize::from(d.abort.is_some());
        }
        assert_eq!(delayed, 100);
        assert_eq!(aborted, 500);
    }

    #[test]
    fn edges_zero_hundred_and_zero_delay() {
        assert!(!hit(0.0, 0.0));
        assert!(!hit(f64::NAN, 0.0));
        assert!(hit(100.0, 0.999_999));
        assert!(hit(0.1, 0.0009));
        assert!(!hit(0.1, 0.001));
        let f = FaultPolicy {
            delay: Some((Duration::ZERO, 100.0)),
            abort: Some((AbortWith::Grpc(14), 100.0)),
        };
        assert_eq!(
            f.decide(0.5, 0.5),
            FaultDecision {
                delay: None,
                abort: Some(AbortWith::Grpc(14))
            }
        );
        assert!(FaultPolicy::default().is_empty());
        assert_eq!(
            FaultPolicy::default().decide(0.0, 0.0),
            FaultDecision::default()
        );
    }
}
