//! The protocol state of one proxy's stream, free of I/O: which responses to send for a request or a push, and
//! the ACK/NACK bookkeeping per type (Istio's `ShouldRespond` rules).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use halyard_config::discovery::Node;
use halyard_config::type_urls::PUSH_ORDER;
use halyard_config::wire::short_name;

use super::output::{ProxyOutput, TypeOutput, WireResource, diff};
use super::status::{ProxyStatus, TypeStatus};

/// State of the world or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    StateOfTheWorld,
    Delta,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::StateOfTheWorld => "sotw",
            Mode::Delta => "delta",
        }
    }
}

/// A request of either form, normalised.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    /// State of the world: the subscribed names (empty = all).
    pub names: Vec<String>,
    pub error: Option<String>,
    /// Delta: what the proxy already holds, on its first request of a type.
    pub initial_versions: BTreeMap<String, String>,
    /// Delta: names added to the subscription (`*` = wildcard; on the first request, empty = wildcard).
    pub subscribe: Vec<String>,
    /// Delta: names dropped from the subscription (`*` leaves the wildcard).
    pub unsubscribe: Vec<String>,
}

/// A response of either form, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub type_url: &'static str,
    pub version: String,
    pub nonce: String,
    pub resources: Payload,
    /// Delta only.
    pub removed: Vec<String>,
}

/// The resources a response carries, as references to their encoded entries (never copies).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Every resource of a set (state of the world).
    All(Arc<TypeOutput>),
    /// Only these, in name order (delta upserts).
    Only(Vec<WireResource>),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::All(set) => set.len(),
            Payload::Only(list) => list.len(),
        }
    }

    /// Names in name order.
    #[cfg(test)]
    pub fn names(&self) -> Vec<&str> {
        match self {
            Payload::All(set) => set.iter().map(|r| &*r.name).collect(),
            Payload::Only(list) => list.iter().map(|r| &*r.name).collect(),
        }
    }

    /// The encoded `resources` entries, as chunks of a response body.
    pub fn chunks(&self) -> Vec<Bytes> {
        match self {
            Payload::All(set) => set.chunks(),
            Payload::Only(list) => list.iter().map(|r| r.entry().clone()).collect(),
        }
    }
}

/// Which resources of a type a proxy asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
}

impl Subscription {
    /// State of the world: the request's names, none meaning all.
    fn sotw(names: &[String]) -> Self {
        Subscription {
            wildcard: names.is_empty(),
            names: names.iter().cloned().collect(),
        }
    }

    /// Delta, first request of a type: no names (or `*`) means all.
    fn delta_initial(subscribe: &[String]) -> Self {
        let mut s = Subscription {
            wildcard: subscribe.is_empty(),
            names: BTreeSet::new(),
        };
        s.change(subscribe, &[]);
        s
    }

    /// Applies a delta request's changes; true when it asked for anything it did not have.
    fn change(&mut self, subscribe: &[String], unsubscribe: &[String]) -> bool {
        let mut added = false;
        for name in unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.names.remove(name);
            }
        }
        for name in subscribe {
            if name == "*" {
                added |= !self.wildcard;
                self.wildcard = true;
            } else {
                added |= self.names.insert(name.clone()) && !self.wildcard;
            }
        }
        added
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// What a request turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    Subscribe,
    Ack,
    Nack(String),
    /// It answered a response older than the last one sent (Istio's expired nonce): ignored.
    Expired,
    UnknownType,
}

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    subscription: Subscription,
    /// What the proxy holds once it accepts the last response (state of the world: that response's set).
    sent: Option<Arc<TypeOutput>>,
    /// What the proxy held at its last ACK.
    acked: Option<Arc<TypeOutput>>,
    status: TypeStatus,
}

struct Pending {
    since: Instant,
    awaiting: BTreeSet<&'static str>,
}

/// One stream.
pub struct Connection {
    mode: Mode,
    node: Node,
    connection_id: String,
    control_plane: String,
    connected_at_unix: u64,
    types: BTreeMap<&'static str, TypeState>,
    next_nonce: u64,
    output: Option<Arc<ProxyOutput>>,
    config_version: u64,
    pending: Option<Pending>,
}

impl Connection {
    pub fn new(
        mode: Mode,
        node: Node,
        connection_id: String,
        control_plane: String,
        connected_at_unix: u64,
    ) -> Self {
        let types = PUSH_ORDER
            .iter()
            .map(|t| {
                let state = TypeState {
                    status: TypeStatus {
                        type_url: t.to_string(),
                        ..TypeStatus::default()
                    },
                    ..TypeState::default()
                };
                (*t, state)
            })
            .collect();
        Connection {
            mode,
            node,
            connection_id,
            control_plane,
            connected_at_unix,
            types,
            next_nonce: 0,
            output: None,
            config_version: 0,
            pending: None,
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn output(&self) -> Option<&Arc<ProxyOutput>> {
        self.output.as_ref()
    }

    /// Handles one request. Returns the responses to send, what the request was, and, when it completed a
    /// push, how long that push took to converge.
    pub fn on_request(
        &mut self,
        req: Incoming,
        now: Instant,
    ) -> (Vec<Outgoing>, RequestKind, Option<Duration>) {
        let Some(type_url) = PUSH_ORDER.iter().copied().find(|t| *t == req.type_url) else {
            return (Vec::new(), RequestKind::UnknownType, None);
        };
        let mode = self.mode;
        let Some(state) = self.types.get_mut(type_url) else {
            return (Vec::new(), RequestKind::UnknownType, None);
        };

        if let Some(reason) = req.error {
            state.status.nack = Some(reason.clone());
            if mode == Mode::Delta {
                // the proxy kept what it had: diff the next push against that
                state.sent = state.acked.clone();
            }
            let converged = self.settle(type_url, &req.nonce, now);
            return (Vec::new(), RequestKind::Nack(reason), converged);
        }

        if mode == Mode::Delta {
            return self.on_delta_request(type_url, req, now);
        }
        let Some(state) = self.types.get_mut(type_url) else {
            return (Vec::new(), RequestKind::UnknownType, None);
        };
        if req.nonce.is_empty() {
            // first request of this type on the stream, or a reconnect
            state.subscribed = true;
            state.subscription = Subscription::sotw(&req.names);
            state.sent = None;
            state.acked = None;
            let out = self.respond_current(type_url);
            return (out.into_iter().collect(), RequestKind::Subscribe, None);
        }

        if state.status.nonce_sent.as_deref() != Some(req.nonce.as_str()) {
            return (Vec::new(), RequestKind::Expired, None);
        }

        state.status.nonce_acked = Some(req.nonce.clone());
        state.status.version_acked = Some(req.version);
        state.status.nack = None;
        state.acked = state.sent.clone();
        let subscription = Subscription::sotw(&req.names);
        let names_changed = state.subscription != subscription;
        state.subscription = subscription;
        let converged = self.settle(type_url, &req.nonce, now);
        let out = if names_changed {
            self.respond_current(type_url).into_iter().collect()
        } else {
            Vec::new()
        };
        (out, RequestKind::Ack, converged)
    }

    /// A delta request: a first subscribe, an ACK, or a change of subscription (any of them may carry
    /// `resource_names_subscribe` / `resource_names_unsubscribe`).
    fn on_delta_request(
        &mut self,
        type_url: &'static str,
        req: Incoming,
        now: Instant,
    ) -> (Vec<Outgoing>, RequestKind, Option<Duration>) {
        let Some(state) = self.types.get_mut(type_url) else {
            return (Vec::new(), RequestKind::UnknownType, None);
        };
        if !state.subscribed {
            state.subscribed = true;
            state.subscription = Subscription::delta_initial(&req.subscribe);
            state.subscription.change(&[], &req.unsubscribe);
            // what the proxy holds (a reconnect), so that only differences are sent
            state.sent = Some(Arc::new(TypeOutput::from_versions(&req.initial_versions)));
            state.acked = state.sent.clone();
            let out = self.respond_current(type_url);
            return (out.into_iter().collect(), RequestKind::Subscribe, None);
        }

        let mut kind = RequestKind::Subscribe;
        let mut converged = None;
        if !req.nonce.is_empty() {
            if state.status.nonce_sent.as_deref() == Some(req.nonce.as_str()) {
                state.status.nonce_acked = Some(req.nonce.clone());
                state.status.version_acked = Some(req.version.clone());
                state.status.nack = None;
                state.acked = state.sent.clone();
                kind = RequestKind::Ack;
            } else {
                kind = RequestKind::Expired;
            }
        }

        let added = state.subscription.change(&req.subscribe, &req.unsubscribe);
        if !req.unsubscribe.is_empty() {
            // the proxy dropped what it no longer wants: a later subscribe must send it again
            let dropped: Vec<String> = req
                .unsubscribe
                .iter()
                .filter(|n| !state.subscription.wants(n))
                .cloned()
                .collect();
            let drop =
                |set: &Option<Arc<TypeOutput>>| set.as_ref().map(|s| Arc::new(s.without(&dropped)));
            state.sent = drop(&state.sent);
            state.acked = drop(&state.acked);
        }
        if kind == RequestKind::Ack {
            converged = self.settle(type_url, &req.nonce, now);
        }
        let out = if added {
            self.respond_current(type_url).into_iter().collect()
        } else {
            Vec::new()
        };
        (out, kind, converged)
    }

    /// A new config for this proxy: the responses for every subscribed type that changed, clusters first and
    /// removals last (make-before-break), so that nothing ever references a resource the proxy lacks.
    pub fn on_push(
        &mut self,
        output: Arc<ProxyOutput>,
        config_version: u64,
        first_change: Instant,
    ) -> Vec<Outgoing> {
        self.output = Some(output.clone());
        self.config_version = config_version;
        let mut adds = Vec::new();
        let mut removals = Vec::new();
        for type_url in PUSH_ORDER {
            let Some(state) = self.types.get(type_url) else {
                continue;
            };
            // a type whose first response is still owed is answered now; its subscribe is the trigger
            if !state.subscribed {
                continue;
            }
            // the first response of a type is owed whatever changed (a subscribe that came before any config)
            if state.status.nonce_sent.is_none() {
                adds.push((type_url, Phase::Initial));
                continue;
            }
            let new = self.wanted(type_url, &output);
            let Some(old) = state.sent.clone() else {
                adds.push((type_url, Phase::Initial));
                continue;
            };
            if old.same_as(&new) {
                continue;
            }
            let d = diff(&old, &new);
            // the same resources reached by another route (e.g. a filtered set): nothing to send
            if d.is_empty() {
                continue;
            }
            match (d.upserted.is_empty(), d.removed.is_empty()) {
                (_, true) => adds.push((type_url, Phase::Add(new, d.upserted))),
                (true, false) => removals.push((type_url, new, d.removed)),
                (false, false) => {
                    adds.push((
                        type_url,
                        Phase::Bridge(new.union_with_removed(&old), d.upserted),
                    ));
                    removals.push((type_url, new, d.removed));
                }
            }
        }
        let mut out = Vec::new();
        for (type_url, phase) in adds {
            let response = match (self.mode, phase) {
                (_, Phase::Initial) => match self.respond_current(type_url) {
                    Some(response) => response,
                    None => continue,
                },
                (Mode::StateOfTheWorld, Phase::Add(set, _)) => self.full_response(type_url, set),
                (Mode::StateOfTheWorld, Phase::Bridge(union, _)) => {
                    self.full_response(type_url, Arc::new(union))
                }
                (Mode::Delta, Phase::Add(set, upserted)) => {
                    self.delta_response(type_url, set, upserted, Vec::new())
                }
                (Mode::Delta, Phase::Bridge(union, upserted)) => {
                    self.delta_response(type_url, Arc::new(union), upserted, Vec::new())
                }
            };
            out.push(response);
        }
        for (type_url, set, removed) in removals.into_iter().rev() {
            let response = match self.mode {
                Mode::StateOfTheWorld => self.full_response(type_url, set),
                Mode::Delta => self.delta_response(type_url, set, Vec::new(), removed),
            };
            out.push(response);
        }
        if !out.is_empty() {
            let awaiting: BTreeSet<&'static str> = out.iter().map(|o| o.type_url).collect();
            match &mut self.pending {
                // the clock keeps running from the oldest change the proxy has not converged on
                Some(p) => p.awaiting.extend(awaiting),
                None => {
                    self.pending = Some(Pending {
                        since: first_change,
                        awaiting,
                    })
                }
            }
        }
        out
    }

    /// The `/debug/syncz` view of this stream.
    pub fn status(&self) -> ProxyStatus {
        ProxyStatus {
            proxy_id: self.node.id.clone(),
            connection_id: self.connection_id.clone(),
            namespace: self.node.namespace.clone(),
            proxy_version: self.node.proxy_version.clone(),
            control_plane: self.control_plane.clone(),
            protocol: self.mode.name().to_string(),
            connected_at_unix: self.connected_at_unix,
            config_version: self.config_version,
            types: self
                .types
                .iter()
                .map(|(t, s)| {
                    let mut status = s.status.clone();
                    status.subscribed = s.subscribed;
                    status.status = Some(status.state());
                    (short_name(t).to_string(), status)
                })
                .collect(),
        }
    }

    /// The set the proxy subscribed to: the shared one unless it asked for particular names, so that 1,000
    /// proxies with the same config hold one copy of it.
    fn wanted(&self, type_url: &'static str, output: &ProxyOutput) -> Arc<TypeOutput> {
        let all = output.of_type(type_url);
        match self.types.get(type_url) {
            Some(s) if !s.subscription.wildcard => {
                Arc::new(all.filtered(|n| s.subscription.names.contains(n)))
            }
            _ => all,
        }
    }

    /// The answer to a subscribe: everything current (state of the world) or the difference from what the
    /// proxy says it holds (delta, always answered so the proxy knows the type is in sync).
    fn respond_current(&mut self, type_url: &'static str) -> Option<Outgoing> {
        let output = self.output.clone()?;
        let set = self.wanted(type_url, &output);
        Some(match self.mode {
            Mode::StateOfTheWorld => self.full_response(type_url, set),
            Mode::Delta => {
                let known = self
                    .types
                    .get(type_url)
                    .and_then(|s| s.sent.clone())
                    .unwrap_or_else(|| Arc::new(TypeOutput::new(Vec::new())));
                let d = diff(&known, &set);
                self.delta_response(type_url, set, d.upserted, d.removed)
            }
        })
    }

    fn full_response(&mut self, type_url: &'static str, set: Arc<TypeOutput>) -> Outgoing {
        let resources = Payload::All(set.clone());
        self.record_sent(type_url, set, resources, Vec::new())
    }

    fn delta_response(
        &mut self,
        type_url: &'static str,
        set: Arc<TypeOutput>,
        upserted: Vec<WireResource>,
        removed: Vec<String>,
    ) -> Outgoing {
        self.record_sent(type_url, set, Payload::Only(upserted), removed)
    }

    fn record_sent(
        &mut self,
        type_url: &'static str,
        set: Arc<TypeOutput>,
        resources: Payload,
        removed: Vec<String>,
    ) -> Outgoing {
        self.next_nonce += 1;
        let nonce = format!("{}-{}", self.connection_id, self.next_nonce);
        let version = set.version();
        if let Some(state) = self.types.get_mut(type_url) {
            state.status.nonce_sent = Some(nonce.clone());
            state.status.version_sent = Some(version.clone());
            state.status.resources_sent = set.len();
            state.sent = Some(set);
        }
        Outgoing {
            type_url,
            version,
            nonce,
            resources,
            removed,
        }
    }

    /// The proxy answered the latest response of `type_url`; returns the convergence time once every type
    /// of the pending push is answered.
    fn settle(&mut self, type_url: &'static str, nonce: &str, now: Instant) -> Option<Duration> {
        let latest = self
            .types
            .get(type_url)
            .and_then(|s| s.status.nonce_sent.as_deref())
            == Some(nonce);
        let pending = self.pending.as_mut()?;
        if latest {
            pending.awaiting.remove(type_url);
        }
        if pending.awaiting.is_empty() {
            let since = pending.since;
            self.pending = None;
            return Some(now.saturating_duration_since(since));
        }
        None
    }
}

enum Phase {
    /// First response of a type on this stream.
    Initial,
    /// Additions and changes only.
    Add(Arc<TypeOutput>, Vec<WireResource>),
    /// Additions while keeping resources about to be removed (their removal follows at the end).
    Bridge(TypeOutput, Vec<WireResource>),
}

#[cfg(test)]
mod tests {
    use halyard_config::ProxyResources;
    use halyard_config::resources::{
        Cluster, ClusterEndpoints, Listener, RouteConfiguration, VirtualHost,
    };
    use halyard_config::type_urls::{CLUSTER, ENDPOINTS, LISTENER, ROUTE};

    use super::*;

    fn node() -> Node {
        Node {
            id: "productpage-v1-1.default".into(),
            namespace: "default".into(),
            ..Node::default()
        }
    }

    /// `route` names the one virtual host of route config `9080`, so changing it changes the route.
    fn output(clusters: &[&str], route: &str) -> Arc<ProxyOutput> {
        let resources = ProxyResources {
            clusters: clusters
                .iter()
                .map(|c| Cluster {
                    name: c.to_string(),
                    ..Cluster::default()
                })
                .collect(),
            endpoints: clusters
                .iter()
                .map(|c| ClusterEndpoints {
                    cluster_name: c.to_string(),
                    ..ClusterEndpoints::default()
                })
                .collect(),
            listeners: vec![Listener {
                name: "0.0.0.0_15001".into(),
                ..Listener::default()
            }],
            route_configs: vec![RouteConfiguration {
                name: "9080".to_string(),
                virtual_hosts: vec![VirtualHost {
                    name: route.to_string(),
                    ..VirtualHost::default()
                }],
                ..RouteConfiguration::default()
            }],
            ..ProxyResources::default()
        };
        Arc::new(ProxyOutput::new(&resources))
    }

    fn subscribe(conn: &mut Connection, type_url: &str) -> Vec<Outgoing> {
        let (out, kind, _) = conn.on_request(
            Incoming {
                type_url: type_url.into(),
                ..Incoming::default()
            },
            Instant::now(),
        );
        assert_eq!(kind, RequestKind::Subscribe);
        out
    }

    fn ack(conn: &mut Connection, out: &Outgoing) -> (RequestKind, Option<Duration>) {
        let (_, kind, converged) = conn.on_request(
            Incoming {
                type_url: out.type_url.into(),
                version: out.version.clone(),
                nonce: out.nonce.clone(),
                ..Incoming::default()
            },
            Instant::now(),
        );
        (kind, converged)
    }

    fn connected(mode: Mode, initial: Arc<ProxyOutput>) -> (Connection, Vec<Outgoing>) {
        let mut conn = Connection::new(mode, node(), "c-1".into(), "cp".into(), 0);
        conn.on_push(initial, 1, Instant::now());
        let mut sent = Vec::new();
        for t in PUSH_ORDER {
            sent.extend(subscribe(&mut conn, t));
        }
        for o in &sent {
            ack(&mut conn, o);
        }
        (conn, sent)
    }

    #[test]
    fn subscribe_answers_with_everything_current() {
        let (conn, sent) = connected(Mode::StateOfTheWorld, output(&["a", "b"], "9080"));
        let clusters = sent.iter().find(|o| o.type_url == CLUSTER).unwrap();
        assert_eq!(clusters.resources.len(), 2);
        let status = conn.status();
        assert!(
            status
                .types
                .values()
                .all(|t| t.status == Some(super::super::status::SyncState::Synced))
        );
    }

    #[test]
    fn push_sends_only_changed_types_in_dependency_order() {
        let (mut conn, _) = connected(Mode::StateOfTheWorld, output(&["a"], "9080"));
        let out = conn.on_push(output(&["a", "b"], "9080-v2"), 2, Instant::now());
        let order: Vec<&str> = out.iter().map(|o| o.type_url).collect();
        assert_eq!(order, vec![CLUSTER, ENDPOINTS, ROUTE]);
        // the unchanged listener is not resent
        assert!(!order.contains(&LISTENER));
    }

    #[test]
    fn nothing_is_sent_when_the_output_did_not_change() {
        let (mut conn, _) = connected(Mode::StateOfTheWorld, output(&["a"], "9080"));
        assert!(
            conn.on_push(output(&["a"], "9080"), 2, Instant::now())
                .is_empty()
        );
    }

    #[test]
    fn removals_come_after_the_routes_that_stop_using_them() {
        let (mut conn, _) = connected(Mode::StateOfTheWorld, output(&["a", "old"], "9080"));
        let out = conn.on_push(output(&["a", "new"], "9080-v2"), 2, Instant::now());
        let order: Vec<&str> = out.iter().map(|o| o.type_url).collect();
        // bridge (old ∪ new) clusters and endpoints, then routes, then the final sets in reverse order
        assert_eq!(order, vec![CLUSTER, ENDPOINTS, ROUTE, ENDPOINTS, CLUSTER]);
        assert_eq!(out[0].resources.names(), vec!["a", "new", "old"]);
        assert_eq!(out[4].resources.names(), vec!["a", "new"]);
    }

    #[test]
    fn delta_sends_upserts_then_removals() {
        let (mut conn, _) = connected(Mode::Delta, output(&["a", "old"], "9080"));
        let out = conn.on_push(output(&["a", "new"], "9080"), 2, Instant::now());
        let order: Vec<&str> = out.iter().map(|o| o.type_url).collect();
        assert_eq!(order, vec![CLUSTER, ENDPOINTS, ENDPOINTS, CLUSTER]);
        assert_eq!(out[0].resources.names(), vec!["new"]);
        assert!(out[0].removed.is_empty());
        assert_eq!(out[3].removed, vec!["old".to_string()]);
        assert_eq!(out[3].resources.len(), 0);
    }

    #[test]
    fn delta_reconnect_sends_only_differences() {
        let first = output(&["a", "b"], "9080");
        let mut conn = Connection::new(Mode::Delta, node(), "c-2".into(), "cp".into(), 0);
        conn.on_push(output(&["a", "c"], "9080"), 1, Instant::now());
        let held: BTreeMap<String, String> = first
            .of_type(CLUSTER)
            .iter()
            .map(|r| (r.name.to_string(), r.version.to_string()))
            .collect();
        let (out, _, _) = conn.on_request(
            Incoming {
                type_url: CLUSTER.into(),
                initial_versions: held,
                ..Incoming::default()
            },
            Instant::now(),
        );
        assert_eq!(out.len(), 1, "a subscribe is always answered");
        assert_eq!(out[0].resources.names(), vec!["c"]);
        assert_eq!(out[0].removed, vec!["b".to_string()]);
    }

    /// Clusters with a given content (connect timeout), so that a test can change one of them.
    fn clusters_with(clusters: &[(&str, u64)]) -> Arc<ProxyOutput> {
        let resources = ProxyResources {
            clusters: clusters
                .iter()
                .map(|(name, timeout)| Cluster {
                    name: name.to_string(),
                    connect_timeout_ms: *timeout,
                    ..Cluster::default()
                })
                .collect(),
            ..ProxyResources::default()
        };
        Arc::new(ProxyOutput::new(&resources))
    }

    fn delta_request(
        conn: &mut Connection,
        nonce: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
    ) -> (Vec<Outgoing>, RequestKind) {
        let own = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let (out, kind, _) = conn.on_request(
            Incoming {
                type_url: CLUSTER.into(),
                nonce: nonce.into(),
                subscribe: own(subscribe),
                unsubscribe: own(unsubscribe),
                ..Incoming::default()
            },
            Instant::now(),
        );
        (out, kind)
    }

    #[test]
    fn delta_named_subscription_grows_and_shrinks() {
        let mut conn = Connection::new(Mode::Delta, node(), "c-3".into(), "cp".into(), 0);
        conn.on_push(
            clusters_with(&[("a", 1), ("b", 1), ("c", 1)]),
            1,
            Instant::now(),
        );
        let (out, kind) = delta_request(&mut conn, "", &["a"], &[]);
        assert_eq!(kind, RequestKind::Subscribe);
        assert_eq!(out[0].resources.names(), vec!["a"]);

        // an ACK that also subscribes to `b` gets `b` alone
        let (out, kind) = delta_request(&mut conn, &out[0].nonce, &["b"], &[]);
        assert_eq!(kind, RequestKind::Ack);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].resources.names(), vec!["b"]);
        assert!(out[0].removed.is_empty());
        let (_, kind) = delta_request(&mut conn, &out[0].nonce, &[], &[]);
        assert_eq!(kind, RequestKind::Ack);

        // a change to an unsubscribed resource sends nothing; a change to a subscribed one sends it alone
        let quiet = conn.on_push(
            clusters_with(&[("a", 1), ("b", 1), ("c", 2)]),
            2,
            Instant::now(),
        );
        assert!(quiet.is_empty(), "{quiet:?}");
        let out = conn.on_push(
            clusters_with(&[("a", 2), ("b", 1), ("c", 2)]),
            3,
            Instant::now(),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].resources.names(), vec!["a"]);

        // unsubscribing needs no answer; the dropped resource is no longer pushed, and comes back whole
        // on a new subscribe
        let (none, _) = delta_request(&mut conn, &out[0].nonce, &[], &["a"]);
        assert!(none.is_empty());
        assert!(
            conn.on_push(
                clusters_with(&[("a", 3), ("b", 1), ("c", 2)]),
                4,
                Instant::now()
            )
            .is_empty()
        );
        let (out, kind) = delta_request(&mut conn, "", &["a"], &[]);
        assert_eq!(kind, RequestKind::Subscribe);
        assert_eq!(out[0].resources.names(), vec!["a"]);
        assert_eq!(conn.status().types["cds"].resources_sent, 2);

        // switching to the wildcard sends what was missing
        let (out, _) = delta_request(&mut conn, &out[0].nonce, &["*"], &[]);
        assert_eq!(out[0].resources.names(), vec!["c"]);
    }

    #[test]
    fn nack_is_recorded_and_cleared_by_the_next_ack() {
        let (mut conn, _) = connected(Mode::StateOfTheWorld, output(&["a"], "9080"));
        let out = conn.on_push(output(&["a", "bad"], "9080"), 2, Instant::now());
        let clusters = out.iter().find(|o| o.type_url == CLUSTER).unwrap().clone();
        let (_, kind, _) = conn.on_request(
            Incoming {
                type_url: CLUSTER.into(),
                version: "previous".into(),
                nonce: clusters.nonce.clone(),
                error: Some("cluster bad: invalid".into()),
                ..Incoming::default()
            },
            Instant::now(),
        );
        assert_eq!(kind, RequestKind::Nack("cluster bad: invalid".into()));
        let status = conn.status();
        assert_eq!(status.state("cds"), super::super::status::SyncState::Nacked);
        assert_eq!(
            status.types["cds"].nack.as_deref(),
            Some("cluster bad: invalid")
        );

        let out = conn.on_push(output(&["a", "good"], "9080"), 3, Instant::now());
        for o in &out {
            ack(&mut conn, o);
        }
        assert_eq!(
            conn.status().state("cds"),
            super::super::status::SyncState::Synced
        );
        assert_eq!(conn.status().config_version, 3);
    }

    #[test]
    fn stale_nonces_are_ignored_and_convergence_is_measured_once() {
        let (mut conn, _) = connected(Mode::StateOfTheWorld, output(&["a"], "9080"));
        let t0 = Instant::now();
        let first = conn.on_push(output(&["a", "b"], "9080"), 2, t0);
        let second = conn.on_push(output(&["a", "b", "c"], "9080"), 3, t0);
        assert_eq!(
            conn.status().state("cds"),
            super::super::status::SyncState::Stale
        );
        // answering the older response is an expired nonce
        let (kind, converged) = ack(&mut conn, &first[0]);
        assert_eq!(kind, RequestKind::Expired);
        assert!(converged.is_none());
        let mut converged = Vec::new();
        for o in &second {
            converged.push(ack(&mut conn, o).1);
        }
        assert_eq!(converged.iter().filter(|c| c.is_some()).count(), 1);
        assert!(converged.last().unwrap().is_some());
    }

    #[test]
    fn unknown_types_are_ignored() {
        let mut conn = Connection::new(Mode::StateOfTheWorld, node(), "c".into(), "cp".into(), 0);
        let (out, kind, _) = conn.on_request(
            Incoming {
                type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                ..Incoming::default()
            },
            Instant::now(),
        );
        assert!(out.is_empty());
        assert_eq!(kind, RequestKind::UnknownType);
    }
}
