//! A compiled cluster: endpoints (with their shared pools), balancer and metric labels.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::lb::{Balancer, HashKey, LbPolicy};
use crate::metrics::PeersId;
use crate::resilience::ClusterState;
use crate::resilience::locality::LocalityLb;
use crate::upstream::{Endpoint, PoolSettings, UpstreamProtocol};

/// How a cluster finds its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// Endpoints from the config (EDS or static).
    Endpoints,
    /// Connect to the connection's original destination (`PassthroughCluster`, inbound capture).
    OriginalDst,
    /// Refuse (`BlackHoleCluster`): 502 for HTTP, close for TCP.
    Blackhole,
}

/// One cluster of a config version.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub kind: ClusterKind,
    pub protocol: UpstreamProtocol,
    /// Speak to the upstream in the downstream's HTTP version (Istio's `USE_DOWNSTREAM_PROTOCOL`).
    pub use_downstream_protocol: bool,
    pub endpoints: Vec<Endpoint>,
    pub balancer: Balancer,
    /// Metric labels for requests sent to this cluster.
    pub peers: Arc<PeersId>,
    /// Circuit breaker, retry budget and outlier detection (issue 4).
    pub resilience: ClusterState,
    /// In-mesh upstream: requests carry this proxy's peer metadata and responses' is read.
    pub peer_metadata: bool,
    /// Connection settings of the cluster's pools (also for `OriginalDst` and TCP connects).
    pub pool: PoolSettings,
    /// Locality priorities / weights, when they change the pick.
    pub locality: Option<LocalityLb>,
}

impl Cluster {
    pub fn new(
        name: String,
        kind: ClusterKind,
        protocol: UpstreamProtocol,
        use_downstream_protocol: bool,
        policy: LbPolicy,
        endpoints: Vec<Endpoint>,
        peers: Arc<PeersId>,
    ) -> Self {
        let keys: Vec<String> = endpoints
            .iter()
            .map(|e| e.upstream.addr.to_string())
            .collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let healthy: Vec<bool> = endpoints.iter().map(|e| e.healthy).collect();
        Cluster {
            name,
            kind,
            protocol,
            use_downstream_protocol,
            balancer: Balancer::new(policy, &keys, &weights, &healthy),
            endpoints,
            peers,
            resilience: ClusterState::default(),
            peer_metadata: false,
            pool: PoolSettings::default(),
            locality: None,
        }
    }

    /// Set the locality plan (`resilience::locality`).
    pub fn with_locality(mut self, locality: Option<LocalityLb>) -> Self {
        self.locality = locality;
        self
    }

    /// Locality level of endpoint `i` (0 when locality does not apply).
    pub fn level_of(&self, i: usize) -> u32 {
        self.locality
            .as_ref()
            .and_then(|l| l.level_of(i))
            .unwrap_or(0)
    }

    /// Set the connection settings (DestinationRule `connectionPool`) the cluster's pools use.
    pub fn with_pool(mut self, pool: PoolSettings) -> Self {
        self.pool = pool;
        self
    }

    /// Mark the cluster as in-mesh for the metadata exchange (`peer` module).
    pub fn with_peer_metadata(mut self, in_mesh: bool) -> Self {
        self.peer_metadata = in_mesh;
        self
    }

    /// Attach the cluster's resilience state (connection pool limits, outlier detection).
    pub fn with_resilience(mut self, state: ClusterState) -> Self {
        self.resilience = state;
        self
    }

    /// Pick an endpoint (index and endpoint), skipping outlier-ejected endpoints and, when
    /// possible, those in `avoid` (retries go to another endpoint than the failed ones). With a
    /// locality plan the nearest healthy level is used, leaving the levels in `skip_levels`
    /// (retries with `retryRemoteLocalities`) while another level has healthy endpoints.
    pub fn pick_excluding(
        &self,
        hash: Option<u64>,
        avoid: &[usize],
        skip_levels: &[u32],
    ) -> Option<(usize, &Endpoint)> {
        let state = &self.resilience;
        if self.locality.is_none() && !state.has_outlier_detection() && avoid.is_empty() {
            let mut rng = rand::rng();
            let mut r = || rand::Rng::random::<u64>(&mut rng);
            let i = self.balancer.pick(&self.endpoints, hash, &mut r)?;
            return self.endpoints.get(i).map(|e| (i, e));
        }
        state.tick();
        struct Candidate<'a> {
            ep: &'a Endpoint,
            ok: bool,
        }
        impl crate::lb::LbTarget for Candidate<'_> {
            fn weight(&self) -> u32 {
                crate::lb::LbTarget::weight(self.ep)
            }
            fn active(&self) -> u32 {
                crate::lb::LbTarget::active(self.ep)
            }
            fn available(&self) -> bool {
                self.ok && crate::lb::LbTarget::available(self.ep)
            }
        }
        let mut rng = rand::rng();
        let mut r = || rand::Rng::random::<u64>(&mut rng);
        let mut pick = |balancer: &crate::lb::Balancer, skip_avoided: bool| {
            let c: Vec<Candidate<'_>> = self
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, ep)| Candidate {
                    ep,
                    ok: !(state.is_ejected(i) || (skip_avoided && avoid.contains(&i))),
                })
                .collect();
            balancer.pick(&c, hash, &mut r)
        };
        let mut pick_from = |balancer: &crate::lb::Balancer| {
            pick(balancer, true).or_else(|| {
                if avoid.is_empty() {
                    None
                } else {
                    pick(balancer, false)
                }
            })
        };
        if let Some(loc) = &self.locality {
            let ok = |i: usize| {
                self.endpoints
                    .get(i)
                    .is_some_and(|e| e.healthy && e.upstream.is_available())
                    && !state.is_ejected(i)
            };
            let mut roll = || rand::random::<u64>();
            if let Some(i) = loc
                .choose(ok, skip_levels, &mut roll)
                .and_then(&mut pick_from)
            {
                return self.endpoints.get(i).map(|e| (i, e));
            }
        }
        let i = pick_from(&self.balancer)?;
        self.endpoints.get(i).map(|e| (i, e))
    }

    pub fn hash_key(&self) -> Option<&HashKey> {
        match self.balancer.policy() {
            LbPolicy::ConsistentHash(k) => Some(k),
            _ => None,
        }
    }

    /// Pick an endpoint; `None` means no healthy upstream.
    pub fn pick(&self, hash: Option<u64>) -> Option<&Endpoint> {
        self.pick_excluding(hash, &[], &[]).map(|(_, e)| e)
    }

    pub fn endpoint_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.endpoints.iter().map(|e| e.upstream.addr)
    }
}
