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

/// A locality, `region/zone/subzone` (parts may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    pub fn parse(s: &str) -> Self {
        let mut p = s.trim().splitn(3, '/').map(str::to_string);
        Locality {
            region: p.next().unwrap_or_default(),
            zone: p.next().unwrap_or_default(),
            subzone: p.next().unwrap_or_default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }

    /// Istio's locality match for `distribute` / `failover` rules: `*` or an empty part of the
    /// pattern matches any value (`us-west/*`, `us-west/zone1`).
    pub fn matches(&self, pattern: &str) -> bool {
        let p = Locality::parse(pattern);
        let part = |rule: &str, mine: &str, any_if_empty: bool| {
            rule == "*" || (any_if_empty && rule.is_empty()) || rule == mine
        };
        part(&p.region, &self.region, false)
            && part(&p.zone, &self.zone, true)
            && part(&p.subzone, &self.subzone, true)
    }

    /// Istio's default failover priority of an endpoint in `other` seen from `self`: 0 same
    /// subzone, 1 same zone, 2 same region, 3 another region.
    pub fn proximity(&self, other: &Locality) -> u32 {
        if self.region != other.region {
            3
        } else if self.zone != other.zone {
            2
        } else if self.subzone != other.subzone {
            1
        } else {
            0
        }
    }
}

/// Envoy's default overprovisioning factor (1.4, in percent): a priority level keeps all its
/// traffic while at least 1/1.4 (about 71%) of its endpoints are healthy.
pub const OVERPROVISIONING: u64 = 140;

/// Health of a group of endpoints as Envoy counts it: `min(100, 1.4 * healthy / total)` percent.
pub fn health_percent(healthy: usize, total: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    (OVERPROVISIONING * healthy as u64 / total as u64).min(100)
}

/// Envoy's priority load: each level takes as much of the traffic (in percent) as its health
/// allows, the rest spills to the next level; when the levels together are less than 100%
/// healthy the loads are scaled up. `None` when no level has a healthy endpoint.
pub fn priority_load(health: &[u64]) -> Option<Vec<u64>> {
    let total: u64 = health.iter().sum::<u64>().min(100);
    if total == 0 {
        return None;
    }
    let mut left = 100u64;
    let mut load: Vec<u64> = health
        .iter()
        .map(|h| {
            let l = (h * 100 / total).min(left);
            left -= l;
            l
        })
        .collect();
    // Rounding remainder goes to the first level with healthy endpoints.
    if left > 0
        && let Some(i) = health.iter().position(|&h| h > 0)
    {
        load[i] += left;
    }
    Some(load)
}

/// The level a roll in `0..100` falls in, given [`priority_load`]'s percentages.
pub fn pick_level(load: &[u64], roll: u64) -> usize {
    let mut acc = 0;
    for (i, l) in load.iter().enumerate() {
        acc += l;
        if roll < acc {
            return i;
        }
    }
    load.iter().rposition(|&l| l > 0).unwrap_or(0)
}

/// Istio's locality failover priorities of endpoints (`localities`) seen from `node`:
/// proximity (same subzone > zone > region > other), and with `failover` rules (`from` region
/// → `to` region) the regions that are not the `to` of the node's region come after it. The
/// result is compacted to consecutive levels starting at 0.
pub fn failover_priorities(
    node: &Locality,
    localities: &[Locality],
    failover: &[(String, String)],
) -> Vec<u32> {
    let raw: Vec<u32> = localities
        .iter()
        .map(|l| {
            let p = node.proximity(l);
            match failover.iter().find(|(from, _)| *from == node.region) {
                Some((_, to)) if p == 3 && l.region != *to => 4,
                _ => p,
            }
        })
        .collect();
    compact_levels(&raw)
}

/// Istio's `failoverPriority`: with N labels, endpoints matching the node on all N have level
/// 0, on the first N-1 level 1, ..., on none level N. A `key=value` entry matches endpoints with
/// that value whatever the node's. `value_of(i, key)` is endpoint `i`'s value, `node_value(key)`
/// the node's.
pub fn label_priorities<'a>(
    labels: &[String],
    n: usize,
    value_of: impl Fn(usize, &str) -> Option<&'a str>,
    node_value: impl Fn(&str) -> Option<&'a str>,
) -> Vec<u32> {
    let raw: Vec<u32> = (0..n)
        .map(|i| {
            let matched = labels
                .iter()
                .take_while(|entry| {
                    let (key, want) = match entry.split_once('=') {
                        Some((k, v)) => (k, Some(v)),
                        None => (entry.as_str(), node_value(entry)),
                    };
                    want.is_some() && value_of(i, key) == want
                })
                .count();
            (labels.len() - matched) as u32
        })
        .collect();
    compact_levels(&raw)
}

/// Renumber levels to 0..k keeping their order.
pub fn compact_levels(raw: &[u32]) -> Vec<u32> {
    let mut levels: Vec<u32> = raw.to_vec();
    levels.sort_unstable();
    levels.dedup();
    raw.iter()
        .map(|p| levels.binary_search(p).unwrap_or(0) as u32)
        .collect()
}

/// Istio's `distribute` weights: for the first rule whose `from` matches the node, each `to`
/// pattern's weight is shared by the endpoints' localities it matches (in proportion to their
/// endpoints' weights); localities matched by no `to` get no traffic (`None`). `None` overall
/// when no rule applies to the node.
pub fn distribute_weights(
    node: &Locality,
    rules: &[(String, Vec<(String, u32)>)],
    localities: &[Locality],
    weights: &[u32],
) -> Option<Vec<Option<u32>>> {
    let (_, to) = rules.iter().find(|(from, _)| node.matches(from))?;
    let mut out: Vec<Option<u32>> = vec![None; localities.len()];
    let mut taken = vec![false; localities.len()];
    for (pattern, weight) in to {
        let idx: Vec<usize> = (0..localities.len())
            .filter(|&i| !taken[i] && localities[i].matches(pattern))
            .collect();
        let total: u64 = idx
            .iter()
            .map(|&i| u64::from(weights.get(i).copied().unwrap_or(1).max(1)))
            .sum();
        for &i in &idx {
            taken[i] = true;
            let w = u64::from(weights.get(i).copied().unwrap_or(1).max(1));
            // Scaled by 1000 so shares of a small weight do not round to nothing.
            let share = (w * u64::from(*weight) * 1000).div_ceil(total.max(1));
            if share > 0 {
                out[i] = Some(u32::try_from(share).unwrap_or(u32::MAX));
            }
        }
    }
    Some(out)
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

    #[test]
    fn locality_match_and_proximity() {
        let l = Locality::parse("us-west/zone1/sub1");
        assert!(l.matches("us-west/zone1/sub1"));
        assert!(l.matches("us-west/zone1/*"));
        assert!(l.matches("us-west/*"));
        assert!(l.matches("us-west"));
        assert!(l.matches("*"));
        assert!(!l.matches("us-east/*"));
        assert!(!l.matches("us-west/zone2/*"));
        let p = |s: &str| l.proximity(&Locality::parse(s));
        assert_eq!(p("us-west/zone1/sub1"), 0);
        assert_eq!(p("us-west/zone1/sub2"), 1);
        assert_eq!(p("us-west/zone2/sub1"), 2);
        assert_eq!(p("us-east/zone1/sub1"), 3);
    }

    #[test]
    fn priority_load_spills_over_like_envoy() {
        // Healthy local level keeps everything.
        assert_eq!(priority_load(&[100, 100]).unwrap(), vec![100, 0]);
        // 1 of 2 healthy: 70% stays, 30% spills.
        let h = health_percent(1, 2);
        assert_eq!(h, 70);
        assert_eq!(priority_load(&[h, 100]).unwrap(), vec![70, 30]);
        // Local level gone: everything to the next.
        assert_eq!(priority_load(&[0, 100, 100]).unwrap(), vec![0, 100, 0]);
        // Less than 100% in total: scaled.
        assert_eq!(priority_load(&[35, 35]).unwrap(), vec![50, 50]);
        assert_eq!(priority_load(&[0, 0]), None);
        assert_eq!(pick_level(&[70, 30], 69), 0);
        assert_eq!(pick_level(&[70, 30], 70), 1);
        assert_eq!(pick_level(&[0, 100], 0), 1);
    }

    #[test]
    fn failover_and_label_priorities() {
        let node = Locality::parse("us-west/zone1/sub1");
        let eps: Vec<Locality> = [
            "us-west/zone1/sub1",
            "us-west/zone2/a",
            "us-east/zone1/a",
            "eu-west/z/a",
        ]
        .iter()
        .map(|s| Locality::parse(s))
        .collect();
        assert_eq!(failover_priorities(&node, &eps, &[]), vec![0, 1, 2, 2]);
        let fo = vec![("us-west".to_string(), "eu-west".to_string())];
        assert_eq!(failover_priorities(&node, &eps, &fo), vec![0, 1, 3, 2]);

        let labels = vec!["net".to_string(), "zone".to_string()];
        let ep_labels = [("n1", "z1"), ("n1", "z2"), ("n2", "z1")];
        let value_of = |i: usize, k: &str| match k {
            "net" => Some(ep_labels[i].0),
            "zone" => Some(ep_labels[i].1),
            _ => None,
        };
        let node_value = |k: &str| match k {
            "net" => Some("n1"),
            "zone" => Some("z1"),
            _ => None,
        };
        assert_eq!(
            label_priorities(&labels, 3, value_of, node_value),
            vec![0, 1, 2]
        );
        let forced = vec!["net=n2".to_string()];
        assert_eq!(
            label_priorities(&forced, 3, value_of, node_value),
            vec![1, 1, 0]
        );
    }

    #[test]
    fn distribute_shares_weights() {
        let node = Locality::parse("us-west/zone1/sub1");
        let eps: Vec<Locality> = [
            "us-west/zone1/a",
            "us-west/zone2/a",
            "us-west/zone2/b",
            "us-east/x/y",
        ]
        .iter()
        .map(|s| Locality::parse(s))
        .collect();
        let rules = vec![(
            "us-west/zone1/*".to_string(),
            vec![
                ("us-west/zone1/*".to_string(), 80),
                ("us-west/zone2/*".to_string(), 20),
            ],
        )];
        let w = distribute_weights(&node, &rules, &eps, &[1, 1, 1, 1]).unwrap();
        assert_eq!(w, vec![Some(80_000), Some(10_000), Some(10_000), None]);
        let other = Locality::parse("eu/x/y");
        assert_eq!(distribute_weights(&other, &rules, &eps, &[1; 4]), None);
    }
}
