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
    Balancer, LbPolicy, Locality, distribute_weights, failover_priorities, health_percent,
    label_priorities, pick_level, priority_load,
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
        let here = Locality::parse(node.locality);
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
                (lv.into_iter().map(Some).collect(), None)
            } else {
                let failover: Vec<(String, String)> = setting
                    .map(|s| {
                        s.failover
                            .iter()
                            .map(|f| (f.from.clone(), f.to.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
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
            let mask: Vec<bool> = (0..eps.len())
                .map(|i| eps[i].healthy && members.contains(&i))
                .collect();
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
        let health = |skipping: bool| -> Vec<u64> {
            self.levels
                .iter()
                .enumerate()
                .map(|(l, lv)| {
                    if skipping && skip.contains(&(l as u32)) {
                        0
                    } else {
                        let up = lv.members.iter().filter(|&&i| ok(i)).count();
                        health_percent(up, lv.members.len())
                    }
                })
                .collect()
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
