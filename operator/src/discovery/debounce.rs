//! Push debouncing (Istio's PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX) as a pure state machine over instants.

use std::time::{Duration, Instant};

/// Quiet period and maximum delay of the push debouncer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceSettings {
    /// A push fires once no change arrived for this long.
    pub quiet: Duration,
    /// ...or once the first pending change is this old, whatever keeps arriving.
    pub max_delay: Duration,
}

impl Default for DebounceSettings {
    fn default() -> Self {
        DebounceSettings {
            quiet: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Collects change notifications and says when the merged batch is due.
#[derive(Debug)]
pub struct Debouncer {
    settings: DebounceSettings,
    first: Option<Instant>,
    last: Option<Instant>,
    merged: u64,
}

/// One batch of changes ready to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueBatch {
    /// When the oldest change in the batch arrived (start of the convergence clock).
    pub first_change: Instant,
    /// How many change notifications were merged into this batch.
    pub merged: u64,
}

impl Debouncer {
    pub fn new(settings: DebounceSettings) -> Self {
        Debouncer {
            settings,
            first: None,
            last: None,
            merged: 0,
        }
    }

    /// Records one change notification received at `now`.
    pub fn record(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.merged += 1;
    }

    /// When the pending batch becomes due, if any change is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.settings.quiet).min(first + self.settings.max_delay))
    }

    /// Takes the pending batch if it is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<DueBatch> {
        if self.deadline()? > now {
            return None;
        }
        let batch = DueBatch {
            first_change: self.first.take()?,
            merged: std::mem::take(&mut self.merged),
        };
        self.last = None;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DebounceSettings {
        DebounceSettings {
            quiet: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        }
    }

    #[test]
    fn nothing_pending_means_no_deadline() {
        let mut d = Debouncer::new(settings());
        assert_eq!(d.deadline(), None);
        assert_eq!(d.take_due(Instant::now()), None);
    }

    #[test]
    fn fires_after_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(settings());
        d.record(t0);
        d.record(t0 + Duration::from_millis(50));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(150)));
        assert_eq!(d.take_due(t0 + Duration::from_millis(149)), None);
        let batch = d.take_due(t0 + Duration::from_millis(150)).unwrap();
        assert_eq!(batch.first_change, t0);
        assert_eq!(batch.merged, 2);
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn continuous_changes_are_cut_at_max_delay() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(settings());
        for i in 0..=20 {
            d.record(t0 + Duration::from_millis(60 * i));
        }
        // the quiet period never elapses, but the batch is due 1 s after the first change
        assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(1000)));
        assert!(d.take_due(t0 + Duration::from_millis(1000)).is_some());
    }

    #[test]
    fn a_new_batch_starts_after_a_push() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(settings());
        d.record(t0);
        d.take_due(t0 + Duration::from_secs(1)).unwrap();
        let t1 = t0 + Duration::from_secs(2);
        d.record(t1);
        assert_eq!(d.deadline(), Some(t1 + Duration::from_millis(100)));
    }
}
