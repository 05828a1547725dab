//! The client's protocol state, free of I/O: which resources the proxy holds per type, which responses are
//! waiting to be applied, and the ACK/NACK requests to send back.

use std::collections::{BTreeMap, BTreeSet};

use halyard_config::ProxyResources;
use halyard_config::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    ErrorDetail, Node, Resource,
};
use halyard_config::type_urls::PUSH_ORDER;

/// gRPC INVALID_ARGUMENT: the code a NACK carries for config the proxy refused.
const INVALID_ARGUMENT: i32 = 3;

/// Resources of one type, by name.
pub(crate) type TypeSet = BTreeMap<String, Resource>;

/// Every resource the proxy runs on, per type URL, plus the version of the last accepted response per type.
/// Survives reconnects: it is the proxy's last good config.
#[derive(Debug, Default, Clone)]
pub(crate) struct Accepted {
    pub sets: BTreeMap<String, TypeSet>,
    pub versions: BTreeMap<String, String>,
}

impl Accepted {
    /// Names and versions held for a type (a delta stream's `initial_resource_versions`).
    pub fn resource_versions(&self, type_url: &str) -> BTreeMap<String, String> {
        self.sets
            .get(type_url)
            .map(|set| {
                set.iter()
                    .map(|(name, r)| (name.clone(), r.version.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One response received, normalised over both protocol forms.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    /// For state-of-the-world responses every resource of the type; for delta the changed ones.
    pub resources: Vec<Resource>,
    /// Delta only: names to drop.
    pub removed: Vec<String>,
    /// State of the world replaces the whole type; delta patches it.
    pub replace: bool,
}

impl From<DiscoveryResponse> for Update {
    fn from(r: DiscoveryResponse) -> Self {
        Update {
            type_url: r.type_url,
            version: r.version_info,
            nonce: r.nonce,
            resources: r.resources,
            removed: Vec::new(),
            replace: true,
        }
    }
}

impl From<DeltaDiscoveryResponse> for Update {
    fn from(r: DeltaDiscoveryResponse) -> Self {
        Update {
            type_url: r.type_url,
            version: r.system_version_info,
            nonce: r.nonce,
            resources: r.resources,
            removed: r.removed_resources,
            replace: false,
        }
    }
}

/// The answer to one response: an ACK (no error) or a NACK with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub type_url: String,
    /// The version now held for the type: the new one on ACK, the previous one on NACK.
    pub version: String,
    pub nonce: String,
    pub error: Option<String>,
}

impl Reply {
    pub fn into_sotw(self) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.version,
            node: None,
            resource_names: Vec::new(),
            type_url: self.type_url,
            response_nonce: self.nonce,
            error_detail: self.error.map(|message| ErrorDetail {
                code: INVALID_ARGUMENT,
                message,
            }),
        }
    }

    pub fn into_delta(self) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: None,
            type_url: self.type_url,
            resource_names_subscribe: Vec::new(),
            resource_names_unsubscribe: Vec::new(),
            initial_resource_versions: BTreeMap::new(),
            response_nonce: self.nonce,
            error_detail: self.error.map(|message| ErrorDetail {
                code: INVALID_ARGUMENT,
                message,
            }),
        }
    }
}

/// The first request of each type on a new state-of-the-world stream (wildcard subscription).
pub(crate) fn sotw_subscriptions(node: &Node, accepted: &Accepted) -> Vec<DiscoveryRequest> {
    PUSH_ORDER
        .iter()
        .map(|type_url| DiscoveryRequest {
            version_info: accepted
                .versions
                .get(*type_url)
                .cloned()
                .unwrap_or_default(),
            node: Some(node.clone()),
            resource_names: Vec::new(),
            type_url: type_url.to_string(),
            response_nonce: String::new(),
            error_detail: None,
        })
        .collect()
}

/// The first request of each type on a new delta stream, telling the server what the proxy already holds.
pub(crate) fn delta_subscriptions(node: &Node, accepted: &Accepted) -> Vec<DeltaDiscoveryRequest> {
    PUSH_ORDER
        .iter()
        .map(|type_url| DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: type_url.to_string(),
            resource_names_subscribe: Vec::new(),
            resource_names_unsubscribe: Vec::new(),
            initial_resource_versions: accepted.resource_versions(type_url),
            response_nonce: String::new(),
            error_detail: None,
        })
        .collect()
}

/// What to do after a response arrived.
#[derive(Debug)]
pub(crate) enum Step {
    /// Still collecting the first response of every type on this stream.
    Wait,
    /// Hand `resources` to the sink; then call [`Stream::applied`] with its verdict.
    Apply(Box<ProxyResources>),
    /// The responses could not even be decoded: NACK them without calling the sink.
    Reject(Vec<Reply>),
}

/// Per-stream state. On a new stream every subscribed type is resynced before anything is applied, so a
/// reconnecting proxy swaps from its last good config to the new one in one step.
#[derive(Debug)]
pub(crate) struct Stream {
    awaiting_first: BTreeSet<String>,
    batch: Vec<Update>,
    candidate: Option<Accepted>,
}

impl Stream {
    pub fn new() -> Self {
        Stream {
            awaiting_first: PUSH_ORDER.iter().map(|t| t.to_string()).collect(),
            batch: Vec::new(),
            candidate: None,
        }
    }

    /// Whether every type has been received once on this stream.
    pub fn synced(&self) -> bool {
        self.awaiting_first.is_empty()
    }

    /// Takes one response; `accepted` is the config the proxy currently runs on.
    pub fn receive(&mut self, accepted: &Accepted, update: Update) -> Step {
        self.awaiting_first.remove(&update.type_url);
        self.batch.push(update);
        if !self.awaiting_first.is_empty() {
            return Step::Wait;
        }
        let mut candidate = accepted.clone();
        for update in &self.batch {
            merge(&mut candidate, update);
        }
        match halyard_config::wire::assemble(&candidate.sets, &version_of(&candidate)) {
            Ok(resources) => {
                self.candidate = Some(candidate);
                Step::Apply(Box::new(resources))
            }
            Err(err) => Step::Reject(self.replies(accepted, Some(err.to_string()))),
        }
    }

    /// The sink's verdict on the last [`Step::Apply`]: on success the candidate becomes the accepted config.
    pub fn applied(&mut self, accepted: &mut Accepted, verdict: Result<(), String>) -> Vec<Reply> {
        let candidate = self.candidate.take();
        match (verdict, candidate) {
            (Ok(()), Some(candidate)) => {
                *accepted = candidate;
                self.replies(accepted, None)
            }
            (Err(reason), _) => self.replies(accepted, Some(reason)),
            (Ok(()), None) => Vec::new(),
        }
    }

    /// ACKs (error `None`) or NACKs every response of the current batch, which is then cleared.
    fn replies(&mut self, accepted: &Accepted, error: Option<String>) -> Vec<Reply> {
        self.batch
            .drain(..)
            .map(|update| Reply {
                version: accepted
                    .versions
                    .get(&update.type_url)
                    .cloned()
                    .unwrap_or_default(),
                type_url: update.type_url,
                nonce: update.nonce,
                error: error.clone(),
            })
            .collect()
    }
}

fn merge(into: &mut Accepted, update: &Update) {
    let set = into.sets.entry(update.type_url.clone()).or_default();
    if update.replace {
        set.clear();
    }
    for name in &update.removed {
        set.remove(name);
    }
    for resource in &update.resources {
        set.insert(resource.name.clone(), resource.clone());
    }
    into.versions
        .insert(update.type_url.clone(), update.version.clone());
}

/// The assembled config's version: the per-type versions, in push order, joined.
fn version_of(accepted: &Accepted) -> String {
    PUSH_ORDER
        .iter()
        .filter_map(|t| accepted.versions.get(*t).map(String::as_str))
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use halyard_config::resources::Cluster;
    use halyard_config::type_urls::CLUSTER;

    use super::*;

    fn clusters(names: &[&str]) -> Vec<Resource> {
        let r = ProxyResources {
            clusters: names
                .iter()
                .map(|n| Cluster {
                    name: n.to_string(),
                    ..Cluster::default()
                })
                .collect(),
            ..ProxyResources::default()
        };
        halyard_config::wire::split(&r, CLUSTER)
    }

    fn update(type_url: &str, nonce: &str, resources: Vec<Resource>) -> Update {
        Update {
            type_url: type_url.to_string(),
            version: format!("v-{nonce}"),
            nonce: nonce.to_string(),
            resources,
            removed: Vec::new(),
            replace: true,
        }
    }

    /// Feeds the first response of every type; the cluster response carries `names`.
    fn initial(stream: &mut Stream, accepted: &Accepted, names: &[&str]) -> Step {
        let mut last = Step::Wait;
        for (i, t) in PUSH_ORDER.iter().enumerate() {
            let resources = if *t == CLUSTER {
                clusters(names)
            } else {
                Vec::new()
            };
            last = stream.receive(accepted, update(t, &i.to_string(), resources));
        }
        last
    }

    #[test]
    fn waits_for_every_type_then_applies_once_and_acks_all() {
        let mut accepted = Accepted::default();
        let mut stream = Stream::new();
        let first = stream.receive(&accepted, update(CLUSTER, "0", clusters(&["a"])));
        assert!(matches!(first, Step::Wait));
        let mut stream = Stream::new();
        let Step::Apply(resources) = initial(&mut stream, &accepted, &["a", "b"]) else {
            panic!("expected an apply after every type arrived");
        };
        assert_eq!(resources.clusters.len(), 2);
        let replies = stream.applied(&mut accepted, Ok(()));
        assert_eq!(replies.len(), PUSH_ORDER.len());
        assert!(replies.iter().all(|r| r.error.is_none()));
        assert_eq!(accepted.sets[CLUSTER].len(), 2);
        assert!(stream.synced());
    }

    #[test]
    fn a_refused_update_is_nacked_with_the_previous_version_and_not_kept() {
        let mut accepted = Accepted::default();
        let mut stream = Stream::new();
        initial(&mut stream, &accepted, &["a"]);
        stream.applied(&mut accepted, Ok(()));
        let before = accepted.versions[CLUSTER].clone();

        let step = stream.receive(&accepted, update(CLUSTER, "9", clusters(&["a", "bad"])));
        assert!(matches!(step, Step::Apply(_)));
        let replies = stream.applied(&mut accepted, Err("cluster bad: refused".into()));
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].nonce, "9");
        assert_eq!(replies[0].version, before);
        assert_eq!(replies[0].error.as_deref(), Some("cluster bad: refused"));
        assert_eq!(
            accepted.sets[CLUSTER].len(),
            1,
            "the refused config is not kept"
        );
        let request = replies[0].clone().into_sotw();
        assert_eq!(request.error_detail.map(|e| e.code), Some(INVALID_ARGUMENT));
    }

    #[test]
    fn delta_updates_patch_and_remove() {
        let mut accepted = Accepted::default();
        let mut stream = Stream::new();
        initial(&mut stream, &accepted, &["a", "b"]);
        stream.applied(&mut accepted, Ok(()));
        let delta = Update {
            removed: vec!["a".to_string()],
            replace: false,
            ..update(CLUSTER, "7", clusters(&["c"]))
        };
        let Step::Apply(resources) = stream.receive(&accepted, delta) else {
            panic!("expected an apply");
        };
        let names: Vec<_> = resources.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["b", "c"]);
        stream.applied(&mut accepted, Ok(()));
        assert_eq!(
            accepted
                .resource_versions(CLUSTER)
                .keys()
                .collect::<Vec<_>>(),
            vec!["b", "c"]
        );
    }

    #[test]
    fn undecodable_resources_are_rejected_without_the_sink() {
        let accepted = Accepted::default();
        let mut stream = Stream::new();
        let mut bad = clusters(&["a"]);
        if let Some(any) = bad[0].resource.as_mut() {
            any.value = vec![0xff, 0xff, 0xff];
        }
        let mut step = Step::Wait;
        for (i, t) in PUSH_ORDER.iter().enumerate() {
            let resources = if *t == CLUSTER {
                bad.clone()
            } else {
                Vec::new()
            };
            step = stream.receive(&accepted, update(t, &i.to_string(), resources));
        }
        let Step::Reject(replies) = step else {
            panic!("expected a rejection");
        };
        assert_eq!(replies.len(), PUSH_ORDER.len());
        assert!(replies.iter().all(|r| r.error.is_some()));
    }
}
