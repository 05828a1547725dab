//! Locality-aware load balancing, as Istio configures Envoy: endpoints are split into priority
//! levels by proximity to the proxy (same subzone > zone > region > others, or the
//! DestinationRule's `failover` / `failoverPriority`), and traffic goes to the nearest level
//! while it is healthy enough, spilling over (Envoy's 1.4 overprovisioning) as its endpoints are
//! ejected. Istio applies failover only to clusters with outlier detection (without it nothing
//! would ever mark a level unhealthy); `distribute` weights localities instead and applies
//! without it. Retries leave the levels already tried only with `retryRemoteLocalities`.

use std::collections::BTreeMap;

use halyard_config::resources as r;

use crate::lb::{
    Balancer, LbPolicy, Locality, compact_levels, distribute_weights, failover_priorities,
    health_percent, label_priorities, pick_level, priority_load,
};
use crate::upstream::Endpoint;

/// Labels `failoverPriority` compares through the localities and networks rather than labels.
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
const NETWORK_LABEL: &str = "topology.istio.io/network";

/// Endpoints of one level sharing a locality weight (`distribute`), with their own balancer.
#[derive(Debug)]
struct Group {
    members: Vec<usize>,
    weight: u64,
    balancer: Balancer,
}

#[derive(Debug)]
struct Level {
    members: Vec<usize>,
    groups: Vec<Group>,
}

/// The locality plan of one cluster.
#[derive(Debug)]
pub struct LocalityLb {
    /// Per endpoint: its level (`None`: `distribute` sends it nothing).
    level_of: Vec<Option<u32>>,
    levels: Vec<Level>,
}

/// The node's side of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct NodeSide<'a> {
    pub locality: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// The proxy's locality: `node.locality` (`--locality`, else the one the control plane pushed,
/// see `snapshot::with_pushed_locality`), else (as the control plane reads workloads) its
/// `istio-locality` label (`region.zone.subzone` or with `/`), else the topology labels
/// `topology.kubernetes.io/region`, `topology.kubernetes.io/zone`, `topology.istio.io/subzone`.
pub fn node_locality(node: NodeSide<'_>) -> String {
    if !node.locality.is_empty() {
        return node.locality.to_string();
    }
    if let Some(l) = node.labels.get("istio-locality") {
        return if l.contains('/') {
            l.clone()
        } else {
            l.replace('.', "/")
        };
    }
    let get = |k: &str| node.labels.get(k).map_or("", String::as_str);
    let (region, zone, subzone) = (get(REGION_LABEL), get(ZONE_LABEL), get(SUBZONE_LABEL));
    if region.is_empty() && zone.is_empty() && subzone.is_empty() {
        return String::new();
    }
    format!("{region}/{zone}/{subzone}")
}

impl LocalityLb {
    /// The plan for a cluster's endpoints; `srcs[i]` is the config endpoint behind `eps[i]`.
    /// `None` when locality does not change the pick (no node locality, disabled, failover
    /// without outlier detection, or a single level).
    pub fn compile(
        node: NodeSide<'_>,
        c: &r::Cluster,
        srcs: &[&r::Endpoint],
        eps: &[Endpoint],
        policy: &LbPolicy,
    ) -> Option<Self> {
        let n = eps.len().min(srcs.len());
        let here = Locality::parse(&node_locality(node));
        let setting = c.load_balancer.as_ref().and_then(|l| l.locality.as_ref());
        if n == 0 || here.is_empty() || setting.is_some_and(|s| !s.enabled) {
            return None;
        }
        let locs: Vec<Locality> = srcs[..n]
            .iter()
            .map(|e| Locality::parse(&e.locality))
            .collect();
        let weights: Vec<u32> = eps[..n].iter().map(|e| e.weight.max(1)).collect();
        let distribute: Vec<(String, Vec<(String, u32)>)> = setting
            .map(|s| {
                s.distribute
                    .iter()
                    .map(|d| {
                        let mut to: Vec<(String, u32)> =
                            d.to.iter().map(|(k, v)| (k.clone(), *v)).collect();
                        // Exact localities before wildcards, so `*` takes what is left.
                        to.sort_by_key(|(k, _)| (k.contains('*'), k.clone()));
                        (d.from.clone(), to)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let failover: Vec<(String, String)> = setting
            .map(|s| {
                s.failover
                    .iter()
                    .map(|f| (f.from.clone(), f.to.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let (level_of, shares): (Vec<Option<u32>>, Option<Vec<Option<u32>>>) =
            if !distribute.is_empty() {
                let shares = distribute_weights(&here, &distribute, &locs, &weights)?;
                let levels = shares.iter().map(|s| s.map(|_| 0)).collect();
                (levels, Some(shares))
            } else if c.outlier_detection.is_none() {
                return None;
            } else if let Some(labels) = setting
                .map(|s| &s.failover_priority)
                .filter(|l| !l.is_empty())
            {
                let value_of = |i: usize, key: &str| -> Option<&str> {
                    match key {
                        REGION_LABEL => Some(locs[i].region.as_str()),
                        ZONE_LABEL => Some(locs[i].zone.as_str()),
                        SUBZONE_LABEL => Some(locs[i].subzone.as_str()),
                        NETWORK_LABEL => Some(srcs[i].network.as_str()),
                        _ => srcs[i].labels.get(key).map(String::as_str),
                    }
                };
                let node_value = |key: &str| -> Option<&str> {
                    match key {
                        REGION_LABEL => Some(here.region.as_str()),
                        ZONE_LABEL => Some(here.zone.as_str()),
                        SUBZONE_LABEL => Some(here.subzone.as_str()),
                        _ => node.labels.get(key).map(String::as_str),
                    }
                };
                let lv = label_priorities(labels, n, value_of, node_value);
                let lv = if failover.is_empty() {
                    lv
                } else {
                    // Istio applies `failover` after `failoverPriority`: label level × 5 + the
                    // locality level (at most 5 of those), renumbered.
                    let by_locality = failover_priorities(&here, &locs, &failover);
                    let raw: Vec<u32> = lv
                        .iter()
                        .zip(&by_locality)
                        .map(|(l, p)| l * 5 + p)
                        .collect();
                    compact_levels(&raw)
                };
                (lv.into_iter().map(Some).collect(), None)
            } else {
                let lv = failover_priorities(&here, &locs, &failover);
                (lv.into_iter().map(Some).collect(), None)
            };
        let top = level_of.iter().flatten().copied().max()?;
        if top == 0 && shares.is_none() {
            return None;
        }
        let keys: Vec<String> = eps.iter().map(|e| e.upstream.addr.to_string()).collect();
        let all_weights: Vec<u32> = eps.iter().map(|e| e.weight).collect();
        let balancer_for = |members: &[usize]| {
            let mut mask = vec![false; eps.len()];
            for &i in members {
                mask[i] = eps[i].healthy;
            }
            Balancer::new(policy.clone(), &keys, &all_weights, &mask)
        };
        let levels = (0..=top)
            .map(|l| {
                let members: Vec<usize> = (0..n).filter(|&i| level_of[i] == Some(l)).collect();
                let groups = match &shares {
                    None => vec![Group {
                        balancer: balancer_for(&members),
                        members: members.clone(),
                        weight: 1,
                    }],
                    Some(shares) => {
                        let mut by_loc: Vec<(&Locality, Vec<usize>)> = Vec::new();
                        for &i in &members {
                            match by_loc.iter_mut().find(|(l, _)| **l == locs[i]) {
                                Some((_, v)) => v.push(i),
                                None => by_loc.push((&locs[i], vec![i])),
                            }
                        }
                        by_loc
                            .into_iter()
                            .map(|(_, m)| Group {
                                weight: m.iter().map(|&i| u64::from(shares[i].unwrap_or(0))).sum(),
                                balancer: balancer_for(&m),
                                members: m,
                            })
                            .collect()
                    }
                };
                Level { members, groups }
            })
            .collect();
        let mut level_of = level_of;
        level_of.resize(eps.len(), None);
        Some(LocalityLb { level_of, levels })
    }

    /// Endpoint `i`'s level.
    pub fn level_of(&self, i: usize) -> Option<u32> {
        self.level_of.get(i).copied().flatten()
    }

    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// Choose the balancer to pick from: a level by Envoy's priority load over the endpoints
    /// that are `ok` (levels in `skip` count as unhealthy unless every level is skipped), then
    /// (with `distribute`) a locality by weight times health. `None` when no level has an `ok`
    /// endpoint.
    pub fn choose(
        &self,
        ok: impl Fn(usize) -> bool,
        skip: &[u32],
        roll: &mut impl FnMut() -> u64,
    ) -> Option<&Balancer> {
        // Levels after those already summing to 100% get no load: they are not looked at,
        // so a healthy local level costs one pass over its own endpoints.
        let health = |skipping: bool| -> Vec<u64> {
            let mut out = vec![0u64; self.levels.len()];
            let mut sum = 0;
            for (l, lv) in self.levels.iter().enumerate() {
                if sum >= 100 {
                    break;
                }
                if !(skipping && skip.contains(&(l as u32))) {
                    let up = lv.members.iter().filter(|&&i| ok(i)).count();
                    out[l] = health_percent(up, lv.members.len());
                    sum += out[l];
                }
            }
            out
        };
        let load = priority_load(&health(true)).or_else(|| {
            if skip.is_empty() {
                None
            } else {
                priority_load(&health(false))
            }
        })?;
        let level = self.levels.get(pick_level(&load, roll() % 100))?;
        if let [only] = level.groups.as_slice() {
            return Some(&only.balancer);
        }
        let eff: Vec<u64> = level
            .groups
            .iter()
            .map(|g| {
                let up = g.members.iter().filter(|&&i| ok(i)).count();
                g.weight * health_percent(up, g.members.len())
            })
            .collect();
        let total: u64 = eff.iter().sum();
        if total == 0 {
            return None;
        }
        let mut x = roll() % total;
        for (g, w) in level.groups.iter().zip(&eff) {
            if x < *w {
                return Some(&g.balancer);
            }
            x -= w;
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::upstream::{PoolSettings, Upstream, UpstreamProtocol};
    use std::sync::Arc;

    fn plan(localities: &[&str]) -> (LocalityLb, Vec<Endpoint>) {
        let eps: Vec<Endpoint> = (0..localities.len())
            .map(|i| Endpoint {
                upstream: Arc::new(Upstream::new(
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    UpstreamProtocol::Http1,
                    PoolSettings::default(),
                )),
                weight: 1,
                healthy: true,
                peers: None,
            })
            .collect();
        let srcs: Vec<r::Endpoint> = localities
            .iter()
            .map(|l| r::Endpoint {
                locality: l.to_string(),
                ..Default::default()
            })
            .collect();
        let refs: Vec<&r::Endpoint> = srcs.iter().collect();
        let c = r::Cluster {
            outlier_detection: Some(r::OutlierDetection::default()),
            ..Default::default()
        };
        let labels = BTreeMap::new();
        let node = NodeSide {
            locality: "r1/z1/s1",
            labels: &labels,
        };
        let lb = LocalityLb::compile(node, &c, &refs, &eps, &LbPolicy::RoundRobin).unwrap();
        (lb, eps)
    }

    fn level_picked(
        lb: &LocalityLb,
        eps: &[Endpoint],
        ok: impl Fn(usize) -> bool + Copy,
        skip: &[u32],
        n: usize,
    ) -> Vec<usize> {
        let mut seed = 7u64;
        let mut roll = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 11
        };
        let mut per_level = vec![0; lb.levels()];
        for _ in 0..n {
            let b = lb.choose(ok, skip, &mut roll).unwrap();
            let i = b.pick(eps, None, &mut roll).unwrap();
            per_level[lb.level_of(i).unwrap() as usize] += 1;
        }
        per_level
    }

    #[test]
    fn levels_spill_over_and_skip_resets_when_all_skipped() {
        // Two local endpoints, two in another region.
        let (lb, eps) = plan(&["r1/z1/s1", "r1/z1/s1", "r2/z/a", "r2/z/b"]);
        assert_eq!(lb.levels(), 2);
        let all = |_| true;
        assert_eq!(level_picked(&lb, &eps, all, &[], 100), vec![100, 0]);
        // One of two local endpoints down: 70% stays local (1.4 overprovisioning).
        let half = |i| i != 0;
        let split = level_picked(&lb, &eps, half, &[], 2000);
        assert!((1250..=1550).contains(&split[0]), "{split:?}");
        // A retry that may leave the local level goes remote ...
        assert_eq!(level_picked(&lb, &eps, all, &[0], 100), vec![0, 100]);
        // ... and when every level was tried, all levels are candidates again.
        assert_eq!(level_picked(&lb, &eps, all, &[0, 1], 100), vec![100, 0]);
        // Nothing healthy anywhere: no choice (the cluster falls back to its plain balancer).
        let mut r = || 1u64;
        assert!(lb.choose(|_| false, &[], &mut r).is_none());
    }

    #[test]
    fn node_locality_from_flag_then_labels() {
        let labels = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let none = labels(&[]);
        let istio = labels(&[("istio-locality", "us-west.zone1.sub1")]);
        let topo = labels(&[(REGION_LABEL, "eu"), (ZONE_LABEL, "eu-1a")]);
        let at = |locality, labels| node_locality(NodeSide { locality, labels });
        assert_eq!(at("r/z/s", &istio), "r/z/s");
        assert_eq!(at("", &istio), "us-west/zone1/sub1");
        assert_eq!(at("", &topo), "eu/eu-1a/");
        assert_eq!(at("", &none), "");
    }

    #[test]
    fn no_plan_without_node_locality_or_outlier_detection() {
        let (_, eps) = plan(&["r1/z1/s1", "r2/z/a"]);
        let srcs = [
            r::Endpoint {
                locality: "r1/z1/s1".into(),
                ..Default::default()
            },
            r::Endpoint {
                locality: "r2/z/a".into(),
                ..Default::default()
            },
        ];
        let refs: Vec<&r::Endpoint> = srcs.iter().collect();
        let labels = BTreeMap::new();
        let here = NodeSide {
            locality: "r1/z1/s1",
            labels: &labels,
        };
        let nowhere = NodeSide {
            locality: "",
            labels: &labels,
        };
        let plain = r::Cluster::default();
        let with_od = r::Cluster {
            outlier_detection: Some(r::OutlierDetection::default()),
            ..Default::default()
        };
        let p = LbPolicy::RoundRobin;
        assert!(LocalityLb::compile(here, &plain, &refs, &eps, &p).is_none());
        assert!(LocalityLb::compile(nowhere, &with_od, &refs, &eps, &p).is_none());
        assert!(LocalityLb::compile(here, &with_od, &refs, &eps, &p).is_some());
        let disabled = r::Cluster {
            load_balancer: Some(r::LoadBalancer {
                locality: Some(r::LocalityLoadBalancing::default()),
                ..Default::default()
            }),
            ..with_od.clone()
        };
        assert!(LocalityLb::compile(here, &disabled, &refs, &eps, &p).is_none());
    }
}
