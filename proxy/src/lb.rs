//! Load balancers: pure endpoint picks over a compiled endpoint list.
//!
//! Nothing here does I/O; the caller supplies the random numbers, the request hash and the live
//! per-endpoint state (active requests, availability) through [`LbTarget`].

use std::sync::atomic::{AtomicU64, Ordering};

/// What a balancer needs to know about one endpoint.
pub trait LbTarget {
    /// Relative weight (>= 1).
    fn weight(&self) -> u32;
    /// Requests in flight (LEAST_REQUEST).
    fn active(&self) -> u32;
    /// False while the endpoint is ejected (outlier detection) or marked unhealthy at runtime.
    fn available(&self) -> bool;
}

/// The load-balancing policy of a cluster, from DestinationRule `trafficPolicy.loadBalancer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    LeastRequest,
    /// Consistent hashing (Maglev); the key comes from the request, see [`HashKey`].
    ConsistentHash(HashKey),
}

/// Where a consistent-hash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(String),
    /// Cookie name, path and TTL in seconds; the proxy issues the cookie when absent and ttl > 0.
    Cookie {
        name: String,
        path: String,
        ttl_secs: u64,
    },
    SourceIp,
    QueryParameter(String),
}

/// Maglev lookup table size: a prime, Envoy's default.
pub const MAGLEV_TABLE_SIZE: usize = 65537;

/// A compiled balancer for one endpoint list. Built once per config version; cheap to pick from
/// concurrently (one atomic counter for round robin, otherwise read-only).
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    /// Indices of endpoints that are healthy by config (EDS health); the only candidates.
    healthy: Vec<u32>,
    /// Cumulative weights over `healthy`, for weighted random and weighted round robin.
    cumulative: Vec<u64>,
    total_weight: u64,
    uniform: bool,
    /// Stride coprime with `total_weight`, so weighted round robin interleaves endpoints.
    stride: u64,
    counter: AtomicU64,
    maglev: Option<Vec<u32>>,
}

/// Stable 64-bit hash (FNV-1a with a final avalanche), used for hash keys and Maglev permutations.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Balancer {
    /// `keys` are stable endpoint identities (their addresses) used for Maglev placement;
    /// `weights` and `healthy` are per endpoint, same length as `keys`.
    pub fn new(policy: LbPolicy, keys: &[String], weights: &[u32], healthy: &[bool]) -> Self {
        let idx: Vec<u32> = (0..keys.len() as u32)
            .filter(|i| healthy.get(*i as usize).copied().unwrap_or(false))
            .collect();
        let w = |i: u32| u64::from(weights.get(i as usize).copied().unwrap_or(1).max(1));
        let mut cumulative = Vec::with_capacity(idx.len());
        let mut total = 0u64;
        for &i in &idx {
            total += w(i);
            cumulative.push(total);
        }
        let uniform = idx.windows(2).all(|p| w(p[0]) == w(p[1]));
        let mut stride = 1;
        if !uniform && total > 2 {
            // Golden-ratio stride, nudged until coprime: each cycle of `total` picks visits every
            // weight unit once, so proportions are exact per cycle and picks are interleaved.
            stride = ((total as f64) * 0.618_033_988_75) as u64;
            stride = stride.max(1);
            while gcd(stride, total) != 1 {
                stride += 1;
            }
        }
        let maglev = match policy {
            LbPolicy::ConsistentHash(_) if !idx.is_empty() => {
                let hk: Vec<&str> = idx.iter().map(|&i| keys[i as usize].as_str()).collect();
                let hw: Vec<u64> = idx.iter().map(|&i| w(i)).collect();
                Some(
                    maglev_table(&hk, &hw, MAGLEV_TABLE_SIZE)
                        .into_iter()
                        .map(|slot| idx[slot as usize])
                        .collect(),
                )
            }
            _ => None,
        };
        Balancer {
            policy,
            healthy: idx,
            cumulative,
            total_weight: total,
            uniform,
            stride,
            counter: AtomicU64::new(0),
            maglev,
        }
    }

    pub fn policy(&self) -> &LbPolicy {
        &self.policy
    }

    /// Number of endpoints that may be picked.
    pub fn healthy_len(&self) -> usize {
        self.healthy.len()
    }

    /// Pick an endpoint index. `rand` supplies uniform random u64s; `hash` is the request's
    /// consistent-hash key when the policy needs one (a missing key falls back to random).
    /// Endpoints that are not `available()` are skipped; `None` means no healthy upstream.
    pub fn pick<T: LbTarget>(
        &self,
        targets: &[T],
        hash: Option<u64>,
        rand: &mut impl FnMut() -> u64,
    ) -> Option<usize> {
        let n = self.healthy.len();
        if n == 0 {
            return None;
        }
        let first = match (&self.policy, hash, &self.maglev) {
            (LbPolicy::ConsistentHash(_), Some(h), Some(table)) => {
                table[(h % table.len() as u64) as usize] as usize
            }
            (LbPolicy::RoundRobin, _, _) => {
                let c = self.counter.fetch_add(1, Ordering::Relaxed);
                self.weighted_slot(c.wrapping_mul(self.stride) % self.total_weight)
            }
            (LbPolicy::LeastRequest, _, _) if n > 1 => {
                let a = self.weighted_slot(rand() % self.total_weight);
                let b = self.weighted_slot(rand() % self.total_weight);
                let load = |i: usize| {
                    let t = &targets[i];
                    // Compare active/weight without division.
                    (u64::from(t.active()) + 1) * 1_000_000 / u64::from(t.weight().max(1))
                };
                if load(b) < load(a) { b } else { a }
            }
            _ => self.weighted_slot(rand() % self.total_weight),
        };
        if targets.get(first).is_some_and(|t| t.available()) {
            return Some(first);
        }
        // The picked endpoint is ejected: walk the healthy list from a random point.
        let start = (rand() % n as u64) as usize;
        (0..n)
            .map(|k| self.healthy[(start + k) % n] as usize)
            .find(|&i| targets.get(i).is_some_and(|t| t.available()))
    }

    /// Map a weight unit in `0..total_weight` to the endpoint that owns it.
    fn weighted_slot(&self, unit: u64) -> usize {
        if self.uniform {
            let per = self.total_weight / self.healthy.len() as u64;
            return self.healthy[(unit / per.max(1)) as usize % self.healthy.len()] as usize;
        }
        let pos = self.cumulative.partition_point(|&c| c <= unit);
        self.healthy[pos.min(self.healthy.len() - 1)] as usize
    }
}

/// Build a weighted Maglev lookup table of `size` slots (size must be prime) for endpoints
/// identified by `keys`. Each entry is an index into `keys`. Removing one of N endpoints moves
/// about 1/N of the slots.
pub fn maglev_table(keys: &[&str], weights: &[u64], size: usize) -> Vec<u32> {
    let n = keys.len();
    let mut table = vec![u32::MAX; size];
    if n == 0 {
        return Vec::new();
    }
    let m = size as u64;
    let offsets: Vec<u64> = keys.iter().map(|k| hash64(k.as_bytes()) % m).collect();
    let skips: Vec<u64> = keys
        .iter()
        .map(|k| mix64(hash64(k.as_bytes()) ^ 0x5bd1_e995_1234_5678) % (m - 1) + 1)
        .collect();
    let max_w = weights.iter().copied().max().unwrap_or(1).max(1);
    let mut next = vec![0u64; n];
    let mut credit = vec![0u64; n];
    let mut filled = 0usize;
    'outer: loop {
        for i in 0..n {
            credit[i] += weights.get(i).copied().unwrap_or(1).max(1);
            if credit[i] < max_w {
                continue;
            }
            credit[i] -= max_w;
            loop {
                let slot = ((offsets[i] + next[i] * skips[i]) % m) as usize;
                next[i] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break 'outer;
            }
        }
    }
    table
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct T {
        w: u32,
        active: Cell<u32>,
        up: bool,
    }
    impl LbTarget for T {
        fn weight(&self) -> u32 {
            self.w
        }
        fn active(&self) -> u32 {
            self.active.get()
        }
        fn available(&self) -> bool {
            self.up
        }
    }
    fn targets(ws: &[u32]) -> Vec<T> {
        ws.iter()
            .map(|&w| T {
                w,
                active: Cell::new(0),
                up: true,
            })
            .collect()
    }
    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(s)
        }
    }

    #[test]
    fn round_robin_uniform_cycles() {
        let t = targets(&[1, 1, 1]);
        let b = Balancer::new(LbPolicy::RoundRobin, &keys(3), &[1, 1, 1], &[true; 3]);
        let mut r = rng(1);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&t, None, &mut r).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_weighted_exact_per_cycle_and_interleaved() {
        let t = targets(&[1, 3]);
        let b = Balancer::new(LbPolicy::RoundRobin, &keys(2), &[1, 3], &[true; 2]);
        let mut r = rng(1);
        let picks: Vec<usize> = (0..400)
            .map(|_| b.pick(&t, None, &mut r).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 100);
        // never more than 3 of the heavy one in a row with a 1:3 split
        let max_run = picks.split(|&p| p == 0).map(|run| run.len()).max().unwrap();
        assert!(max_run <= 3, "{max_run}");
    }

    #[test]
    fn unhealthy_by_config_never_picked_and_none_when_all_down() {
        let t = targets(&[1, 1, 1]);
        let b = Balancer::new(LbPolicy::Random, &keys(3), &[1, 1, 1], &[true, false, true]);
        let mut r = rng(2);
        for _ in 0..1000 {
            assert_ne!(b.pick(&t, None, &mut r), Some(1));
        }
        let none = Balancer::new(LbPolicy::RoundRobin, &keys(2), &[1, 1], &[false, false]);
        assert_eq!(none.pick(&t, None, &mut r), None);
    }

    #[test]
    fn ejected_at_runtime_is_skipped() {
        let mut t = targets(&[1, 1]);
        t[0].up = false;
        let b = Balancer::new(LbPolicy::RoundRobin, &keys(2), &[1, 1], &[true; 2]);
        let mut r = rng(3);
        for _ in 0..100 {
            assert_eq!(b.pick(&t, None, &mut r), Some(1));
        }
        t[1].up = false;
        assert_eq!(b.pick(&t, None, &mut r), None);
    }

    #[test]
    fn random_respects_weights() {
        let t = targets(&[1, 4]);
        let b = Balancer::new(LbPolicy::Random, &keys(2), &[1, 4], &[true; 2]);
        let mut r = rng(4);
        let n = 20_000;
        let heavy = (0..n)
            .filter(|_| b.pick(&t, None, &mut r) == Some(1))
            .count();
        let share = heavy as f64 / n as f64;
        assert!((share - 0.8).abs() < 0.02, "{share}");
    }

    #[test]
    fn least_request_prefers_idle_endpoint() {
        let t = targets(&[1, 1]);
        t[0].active.set(50);
        let b = Balancer::new(LbPolicy::LeastRequest, &keys(2), &[1, 1], &[true; 2]);
        let mut r = rng(5);
        let n = 1000;
        let idle = (0..n)
            .filter(|_| b.pick(&t, None, &mut r) == Some(1))
            .count();
        // p2c picks the busy one only when both choices land on it (~1/4).
        assert!(idle > 650, "{idle}");
    }

    #[test]
    fn maglev_same_key_same_endpoint_and_minimal_remap() {
        let n = 10;
        let ks = keys(n);
        let t = targets(&vec![1; n]);
        let policy = LbPolicy::ConsistentHash(HashKey::Header("x-user".into()));
        let b = Balancer::new(policy.clone(), &ks, &vec![1; n], &vec![true; n]);
        let mut r = rng(6);
        let before: Vec<usize> = (0..10_000u64)
            .map(|k| b.pick(&t, Some(hash64(&k.to_le_bytes())), &mut r).unwrap())
            .collect();
        let again: Vec<usize> = (0..10_000u64)
            .map(|k| b.pick(&t, Some(hash64(&k.to_le_bytes())), &mut r).unwrap())
            .collect();
        assert_eq!(before, again);
        // Remove endpoint 3 (same keys for the others).
        let mut health = vec![true; n];
        health[3] = false;
        let b2 = Balancer::new(policy, &ks, &vec![1; n], &health);
        let moved = (0..10_000u64)
            .filter(|&k| {
                let old = before[k as usize];
                let new = b2.pick(&t, Some(hash64(&k.to_le_bytes())), &mut r).unwrap();
                assert_ne!(new, 3);
                old != new
            })
            .count();
        let frac = moved as f64 / 10_000.0;
        // Ideal is 1/N = 0.10 (the keys that were on the removed endpoint).
        assert!(frac > 0.07 && frac < 0.15, "{frac}");
    }

    #[test]
    fn maglev_weights_shape_table_share() {
        let table = maglev_table(&["a", "b"], &[1, 3], 65537);
        let b_share = table.iter().filter(|&&i| i == 1).count() as f64 / 65537.0;
        assert!((b_share - 0.75).abs() < 0.01, "{b_share}");
    }
}
