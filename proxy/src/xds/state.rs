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
