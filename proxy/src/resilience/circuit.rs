//! Circuit breaking (DestinationRule `connectionPool`) and the retry budget, per cluster.
//!
//! Limits are checked with atomics when a request starts; an overflow is answered at once with
//! 503 `UO`. HTTP/1.1 requests hold one connection each, so `maxConnections` bounds the requests
//! in flight towards the cluster and `http1MaxPendingRequests` bounds those waiting for one;
//! `http2MaxRequests` bounds requests in flight of any protocol.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Envoy's retry budget (`retryBudget`): concurrent retries may be `percent` of the active
/// requests, and at least `min_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub percent: f64,
    pub min_concurrency: u32,
}

impl RetryBudget {
    /// May one more retry start with `active_retries` retries and `active_requests` requests
    /// in flight?
    pub fn allows(&self, active_retries: u64, active_requests: u64) -> bool {
        let by_share = (active_requests as f64 * self.percent / 100.0).floor() as u64;
        active_retries < by_share.max(u64::from(self.min_concurrency))
    }
}

/// Limits of one cluster; `None` = unlimited.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub retry_budget: Option<RetryBudget>,
}

impl Limits {
    /// May one more retry start? A configured retry budget (DestinationRule `retryBudget`) wins
    /// over a fixed `maxRetries`; with neither, retries are not limited, as in Istio (which sets
    /// Envoy's max_retries to 2^32-1): its documented examples rely on retries hiding a 50% fault
    /// under concurrent load.
    pub fn retry_allowed(&self, active_retries: u64, active_requests: u64) -> bool {
        match (self.max_retries, self.retry_budget) {
            (Some(m), None) => active_retries < u64::from(m),
            (_, Some(b)) => b.allows(active_retries, active_requests),
            (None, None) => true,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("upstream max requests exceeded (http2MaxRequests)")]
    Requests,
    #[error("upstream max pending requests exceeded (http1MaxPendingRequests)")]
    Pending,
    #[error("timed out waiting for an upstream connection (maxConnections)")]
    PendingTimeout,
}

/// Counters shown by `/clusters` and `/stats` (Envoy's names).
#[derive(Debug, Default)]
pub struct CircuitStats {
    pub rq_active: AtomicU64,
    pub rq_pending_active: AtomicU64,
    pub rq_retry_active: AtomicU64,
    /// Requests refused for `maxConnections` + `http1MaxPendingRequests`.
    pub rq_pending_overflow: AtomicU64,
    /// Requests refused for `http2MaxRequests`.
    pub rq_overflow: AtomicU64,
    /// Requests that found every connection busy (and waited, or were refused).
    pub cx_overflow: AtomicU64,
    pub rq_retry: AtomicU64,
    pub rq_retry_overflow: AtomicU64,
    pub rq_retry_success: AtomicU64,
    pub rq_timeout: AtomicU64,
    pub rq_per_try_timeout: AtomicU64,
}

/// Live circuit-breaker state of one cluster.
#[derive(Debug)]
pub struct Circuit {
    pub limits: Limits,
    slots: Option<Arc<Semaphore>>,
    pub stats: Arc<CircuitStats>,
}

/// A request admitted to the cluster; releases its slot when dropped (response body done).
#[derive(Debug)]
pub struct Admission {
    stats: Arc<CircuitStats>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.stats.rq_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in flight; counts against `maxRetries` / the budget until dropped.
#[derive(Debug)]
pub struct RetryGuard(Arc<CircuitStats>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.rq_retry_active.fetch_sub(1, Ordering::Relaxed);
    }
}

struct PendingGuard<'a>(&'a CircuitStats);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.rq_pending_active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Circuit {
    pub fn new(limits: Limits) -> Self {
        let slots = limits.max_connections.map(|n| {
            Arc::new(Semaphore::new(
                (n as usize).clamp(1, Semaphore::MAX_PERMITS),
            ))
        });
        Circuit {
            limits,
            slots,
            stats: Arc::new(CircuitStats::default()),
        }
    }

    /// Admit one request: refused at once when over `http2MaxRequests`, or when every HTTP/1.1
    /// connection is busy and `http1MaxPendingRequests` are already waiting; otherwise waits
    /// (at most `wait`) for a connection.
    pub async fn admit(&self, http1: bool, wait: Option<Duration>) -> Result<Admission, Overflow> {
        let st = &self.stats;
        let active = st.rq_active.fetch_add(1, Ordering::Relaxed);
        let admission = |slot| Admission {
            stats: st.clone(),
            _slot: slot,
        };
        if self
            .limits
            .max_requests
            .is_some_and(|m| active >= u64::from(m))
        {
            st.rq_active.fetch_sub(1, Ordering::Relaxed);
            st.rq_overflow.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow::Requests);
        }
        let (true, Some(slots)) = (http1, &self.slots) else {
            return Ok(admission(None));
        };
        if let Ok(p) = slots.clone().try_acquire_owned() {
            return Ok(admission(Some(p)));
        }
        st.cx_overflow.fetch_add(1, Ordering::Relaxed);
        let pending = st.rq_pending_active.fetch_add(1, Ordering::Relaxed);
        let _pending = PendingGuard(st);
        if self
            .limits
            .max_pending_requests
            .is_some_and(|m| pending >= u64::from(m))
        {
            st.rq_active.fetch_sub(1, Ordering::Relaxed);
            st.rq_pending_overflow.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow::Pending);
        }
        let acquire = slots.clone().acquire_owned();
        let got = match wait {
            Some(w) => tokio::time::timeout(w, acquire).await.ok(),
            None => Some(acquire.await),
        };
        match got {
            Some(Ok(p)) => Ok(admission(Some(p))),
            _ => {
                st.rq_active.fetch_sub(1, Ordering::Relaxed);
                Err(Overflow::PendingTimeout)
            }
        }
    }

    /// Start a retry if `maxRetries` / the retry budget allow it.
    pub fn try_retry(&self) -> Option<RetryGuard> {
        let st = &self.stats;
        let retries = st.rq_retry_active.load(Ordering::Relaxed);
        if !self
            .limits
            .retry_allowed(retries, st.rq_active.load(Ordering::Relaxed))
        {
            st.rq_retry_overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        st.rq_retry_active.fetch_add(1, Ordering::Relaxed);
        st.rq_retry.fetch_add(1, Ordering::Relaxed);
        Some(RetryGuard(st.clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn budget_share_and_minimum() {
        let b = RetryBudget {
            percent: 20.0,
            min_concurrency: 3,
        };
        assert!(b.allows(2, 0));
        assert!(!b.allows(3, 10));
        assert!(b.allows(19, 100));
        assert!(!b.allows(20, 100));
        let fixed = Limits {
            max_retries: Some(1),
            ..Default::default()
        };
        assert!(fixed.retry_allowed(0, 1000));
        assert!(!fixed.retry_allowed(1, 1000));
        // Neither configured: unlimited, as in Istio.
        assert!(Limits::default().retry_allowed(1000, 10));
    }

    #[tokio::test]
    async fn pending_queue_and_overflow() {
        let c = Arc::new(Circuit::new(Limits {
            max_connections: Some(1),
            max_pending_requests: Some(1),
            ..Default::default()
        }));
        let first = c.admit(true, None).await.unwrap();
        // Second waits for the connection; third overflows at once.
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.admit(true, None).await.map(|_| ()) });
        while c.stats.rq_pending_active.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(c.admit(true, None).await.unwrap_err(), Overflow::Pending);
        assert_eq!(c.stats.rq_pending_overflow.load(Ordering::Relaxed), 1);
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(c.stats.rq_active.load(Ordering::Relaxed), 0);
        assert_eq!(c.stats.rq_pending_active.load(Ordering::Relaxed), 0);
        // HTTP/2 requests do not wait for HTTP/1.1 connections.
        let _a = c.admit(true, None).await.unwrap();
        let _b = c.admit(false, None).await.unwrap();
        let held = c.admit(true, Some(Duration::from_millis(10))).await;
        assert_eq!(held.unwrap_err(), Overflow::PendingTimeout);
    }

    #[tokio::test]
    async fn max_requests_and_retries() {
        let c = Circuit::new(Limits {
            max_requests: Some(2),
            max_retries: Some(1),
            ..Default::default()
        });
        let a = c.admit(false, None).await.unwrap();
        let _b = c.admit(true, None).await.unwrap();
        assert_eq!(c.admit(false, None).await.unwrap_err(), Overflow::Requests);
        drop(a);
        let _c = c.admit(false, None).await.unwrap();
        let r = c.try_retry().unwrap();
        assert!(c.try_retry().is_none());
        drop(r);
        assert!(c.try_retry().is_some());
        assert_eq!(c.stats.rq_retry_overflow.load(Ordering::Relaxed), 1);
        assert_eq!(c.stats.rq_overflow.load(Ordering::Relaxed), 1);
    }
}
