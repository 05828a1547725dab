//! The translator: mesh model + proxy node -> the proxy's resources. Pure: no I/O, no clock.
//!
//! # Shared and per-proxy parts
//!
//! A push to 1,000 proxies must not translate 1,000 times. The output splits in two:
//!
//! - [`translate_shared`]: outbound listeners, route tables, clusters and endpoints, gateway
//!   listeners. They depend only on the proxy's *scope*: namespace, proxy type, the `Sidecar` that
//!   applies, the Gateways selecting it, the DestinationRule `workloadSelector`s and VirtualService
//!   `sourceLabels` it matches, and local-mode bind settings. [`scope_key`] returns exactly that, so
//!   the control plane computes the shared part once per distinct key (typically once per
//!   namespace) and reuses it (e.g. as `Arc`) for every proxy with the same key.
//! - [`translate_local`]: the inbound side (inbound listener, `inbound|<port>||` clusters,
//!   InboundPassthroughCluster) and the authorization policies; small, per proxy.
//!
//! Resource names never collide between the two parts, so [`merge`] (or the discovery server,
//! type by type) can simply concatenate them. [`translate`] does all three.

mod authz;
mod clusters;
mod listeners;
mod routes;

/// Istio's retry policy of a route whose VirtualService sets no `retries`.
pub use routes::default_retry;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use halyard_crds::networking::{SidecarSpec, VirtualServiceSpec};

use crate::ProxyResources;
use crate::discovery::{InterceptionMode, Node, ProxyType};
use crate::mesh::{
    Cfg, MeshModel, OutboundPolicy, ServiceInfo, host_matches, qualify_gateway, selector_matches,
};

/// A node the translator cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("node {id:?}: `namespace` is empty; the proxy must report its namespace")]
    MissingNamespace { id: String },
    #[error("node with empty `id`: the proxy must report `<pod>.<namespace>`")]
    MissingId,
}

/// Everything the shared part of the translation depends on. Equal keys give equal
/// [`translate_shared`] output for the same model.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    pub namespace: String,
    pub router: bool,
    /// `namespace/name` of the Sidecar resource that applies, if any.
    pub sidecar: Option<String>,
    /// `namespace/name` of the Gateways selecting a router.
    pub gateways: Vec<String>,
    /// Indexes (in model order) of DestinationRules whose `workloadSelector` matches the node.
    pub selected_destination_rules: Vec<usize>,
    /// Indexes of VirtualServices with `sourceLabels` matches the node satisfies.
    pub source_matched_virtual_services: Vec<usize>,
    /// Routers: the Kubernetes Services selecting the gateway (they map server ports to
    /// listen ports).
    pub gateway_services: Vec<String>,
    /// Local mode: interception NONE (sidecars) or a gateway bind address, and that address.
    pub explicit_listeners: Option<String>,
}

/// What the translation of one node needs to know about it, resolved once.
pub(crate) struct Scope<'m> {
    pub model: &'m MeshModel,
    pub node: &'m Node,
    pub namespace: &'m str,
    pub labels: &'m BTreeMap<String, String>,
    pub sidecar: Option<&'m Cfg<SidecarSpec>>,
    pub gateways: Vec<usize>,
    pub router: bool,
    /// VirtualServices this proxy may see, oldest first (computed once per scope).
    visible_virtual_services: Vec<&'m Cfg<VirtualServiceSpec>>,
}

impl<'m> Scope<'m> {
    pub(crate) fn new(model: &'m MeshModel, node: &'m Node) -> Scope<'m> {
        let namespace = node.namespace.as_str();
        let labels = &node.labels;
        let router = node.proxy_type() == ProxyType::Router;
        // Sidecar resources configure sidecars only, never gateways.
        let sidecar = (!router)
            .then(|| select_sidecar(model, namespace, labels))
            .flatten();
        let gateways = if router {
            model
                .gateways
                .iter()
                .enumerate()
                .filter(|(_, g)| {
                    !g.spec.selector.is_empty() && selector_matches(&g.spec.selector, labels)
                })
                .map(|(i, _)| i)
                .collect()
        } else {
            Vec::new()
        };
        let mut scope = Scope {
            model,
            node,
            namespace,
            labels,
            sidecar,
            gateways,
            router,
            visible_virtual_services: Vec::new(),
        };
        scope.visible_virtual_services = model
            .virtual_services
            .iter()
            .filter(|vs| scope.virtual_service_visible(vs))
            .collect();
        scope
    }

    pub(crate) fn key(&self) -> ScopeKey {
        let m = self.model;
        let selected_destination_rules = m
            .destination_rules
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                d.meta.namespace == self.namespace
                    && d.spec
                        .workload_selector
                        .as_ref()
                        .is_some_and(|s| selector_matches(&s.match_labels, self.labels))
            })
            .map(|(i, _)| i)
            .collect();
        let source_matched_virtual_services = m
            .virtual_services
            .iter()
            .enumerate()
            .filter(|(_, vs)| {
                uses_source_labels(&vs.spec) && source_labels_any_match(&vs.spec, self.labels)
            })
            .map(|(i, _)| i)
            .collect();
        let explicit_listeners = (self.node.interception_mode() == InterceptionMode::None
            || (self.router && !self.node.local_bind_address.is_empty()))
        .then(|| self.node.local_bind_address.clone());
        let gateway_services = if self.router {
            m.services
                .iter()
                .filter(|s| {
                    s.kube_name.is_some()
                        && s.namespace == self.namespace
                        && s.selector.as_ref().is_some_and(|sel| {
                            !sel.is_empty() && selector_matches(sel, self.labels)
                        })
                })
                .map(|s| s.host.clone())
                .collect()
        } else {
            Vec::new()
        };
        ScopeKey {
            gateway_services,
            namespace: self.namespace.to_string(),
            router: self.router,
            sidecar: self
                .sidecar
                .map(|s| format!("{}/{}", s.meta.namespace, s.meta.name)),
            gateways: self
                .gateways
                .iter()
                .map(|i| {
                    let g = &m.gateways[*i];
                    format!("{}/{}", g.meta.namespace, g.meta.name)
                })
                .collect(),
            selected_destination_rules,
            source_matched_virtual_services,
            explicit_listeners,
        }
    }

    /// The effective outbound traffic policy: the Sidecar's, else the mesh's.
    pub(crate) fn outbound_policy(&self) -> OutboundPolicy {
        use halyard_crds::networking::OutboundTrafficPolicyMode;
        match self
            .sidecar
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
        {
            Some(OutboundTrafficPolicyMode::RegistryOnly) => OutboundPolicy::RegistryOnly,
            Some(OutboundTrafficPolicyMode::AllowAny) => OutboundPolicy::AllowAny,
            None => self.model.mesh.outbound_traffic_policy,
        }
    }

    /// Sidecar egress `hosts` (`ns/host`) admit config of namespace `ns` for `host`, on `port`
    /// when given. An egress listener with a `port` governs that port only; listeners without
    /// one govern every port no port-specific listener names.
    fn egress_allows(&self, ns: &str, host: &str, port: Option<u32>) -> bool {
        let Some(sc) = self.sidecar else {
            return true;
        };
        if sc.spec.egress.is_empty() {
            return true;
        }
        let port_of = |e: &halyard_crds::networking::IstioEgressListener| {
            e.port.as_ref().and_then(|p| p.number).filter(|n| *n != 0)
        };
        let claimed = port.is_some_and(|p| sc.spec.egress.iter().any(|e| port_of(e) == Some(p)));
        sc.spec
            .egress
            .iter()
            .filter(|e| match (port, port_of(e)) {
                // Any port will do when asking about a host as a whole.
                (None, _) => true,
                (Some(p), Some(ep)) => p == ep,
                (Some(_), None) => !claimed,
            })
            .flat_map(|e| e.hosts.iter())
            .any(|entry| {
                let (ens, ehost) = entry.split_once('/').unwrap_or(("*", entry.as_str()));
                let ns_ok = match ens {
                    "*" => true,
                    // `.` is the proxy's namespace, also for a root-namespace default Sidecar.
                    "." => ns == self.namespace,
                    "~" => false,
                    other => other == ns,
                };
                ns_ok && (ehost == "*" || host_matches(ehost, host) || host_matches(host, ehost))
            })
    }

    /// Whether this proxy may use `svc` on `port` (Sidecar egress, per port).
    pub(crate) fn port_visible(&self, svc: &ServiceInfo, port: u32) -> bool {
        self.egress_allows(&svc.namespace, &svc.host, Some(port))
    }

    /// Services this proxy may reach (exportTo and Sidecar egress).
    pub(crate) fn services(&self) -> impl Iterator<Item = &'m ServiceInfo> + '_ {
        self.model.services.iter().filter(move |s| {
            s.export_to.visible_to(self.namespace)
                && self.egress_allows(&s.namespace, &s.host, None)
        })
    }

    /// VirtualServices visible to this proxy (exportTo and Sidecar egress).
    pub(crate) fn virtual_service_visible(&self, vs: &Cfg<VirtualServiceSpec>) -> bool {
        vs.export_to.visible_to(self.namespace)
            && (self.router
                || vs
                    .hosts
                    .iter()
                    .any(|h| self.egress_allows(&vs.meta.namespace, h, None)))
    }

    /// The VirtualService that owns `host` for gateway context `gateway` (`mesh` or
    /// `ns/name`): most specific matching host wins, then the oldest.
    pub(crate) fn virtual_service_for(
        &self,
        host: &str,
        gateway: &str,
    ) -> Option<&'m Cfg<VirtualServiceSpec>> {
        let mut best: Option<(&'m Cfg<VirtualServiceSpec>, (bool, usize))> = None;
        for vs in &self.visible_virtual_services {
            if !binds_gateway(vs, gateway) {
                continue;
            }
            let Some(spec) = vs
                .hosts
                .iter()
                .filter(|p| host_matches(p, host))
                .map(|p| crate::mesh::host_specificity(p))
                .max()
            else {
                continue;
            };
            // Strictly greater: on a tie the earlier (older) VirtualService stays.
            if best.is_none_or(|(_, b)| spec > b) {
                best = Some((*vs, spec));
            }
        }
        best.map(|(vs, _)| vs)
    }
}

/// Whether a VirtualService applies to a gateway context (`mesh` when it lists none).
pub(crate) fn binds_gateway(vs: &Cfg<VirtualServiceSpec>, gateway: &str) -> bool {
    crate::mesh::vs_gateways(vs).iter().any(|g| g == gateway)
}

/// Match-level `gateways` narrow the route to those gateways (qualified in the VS namespace).
pub(crate) fn match_gateways_allow(gateways: &[String], vs_ns: &str, gateway: &str) -> bool {
    gateways.is_empty()
        || gateways
            .iter()
            .any(|g| qualify_gateway(g, vs_ns) == gateway)
}

fn uses_source_labels(vs: &VirtualServiceSpec) -> bool {
    vs.http
        .iter()
        .flat_map(|r| r.r#match.iter())
        .any(|m| !m.source_labels.is_empty())
        || vs
            .tcp
            .iter()
            .flat_map(|r| r.r#match.iter())
            .any(|m| !m.source_labels.is_empty())
        || vs
            .tls
            .iter()
            .flat_map(|r| r.r#match.iter())
            .any(|m| !m.source_labels.is_empty())
}

fn source_labels_any_match(vs: &VirtualServiceSpec, labels: &BTreeMap<String, String>) -> bool {
    let sets = vs
        .http
        .iter()
        .flat_map(|r| r.r#match.iter().map(|m| &m.source_labels))
        .chain(
            vs.tcp
                .iter()
                .flat_map(|r| r.r#match.iter().map(|m| &m.source_labels)),
        )
        .chain(
            vs.tls
                .iter()
                .flat_map(|r| r.r#match.iter().map(|m| &m.source_labels)),
        );
    let mut any = false;
    for set in sets {
        if !set.is_empty() && selector_matches(set, labels) {
            any = true;
        }
    }
    any
}

/// Istio's Sidecar selection: one whose workloadSelector matches in the node's namespace, else
/// the namespace's selector-less one, else the root namespace's selector-less one.
fn select_sidecar<'m>(
    model: &'m MeshModel,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'m Cfg<SidecarSpec>> {
    fn no_selector(s: &&Cfg<SidecarSpec>) -> bool {
        s.spec
            .workload_selector
            .as_ref()
            .is_none_or(|w| w.labels.is_empty())
    }
    let in_ns = |n: &str| -> Vec<&'m Cfg<SidecarSpec>> {
        model
            .sidecars
            .iter()
            .filter(|s| s.meta.namespace == n)
            .collect()
    };
    let own = in_ns(ns);
    own.iter()
        .find(|s| {
            s.spec
                .workload_selector
                .as_ref()
                .is_some_and(|w| !w.labels.is_empty() && selector_matches(&w.labels, labels))
        })
        .or_else(|| own.iter().find(|s| no_selector(s)))
        .copied()
        .or_else(|| {
            in_ns(&model.mesh.root_namespace)
                .into_iter()
                .find(no_selector)
        })
}

fn check_node(node: &Node) -> Result<(), TranslateError> {
    if node.id.is_empty() {
        return Err(TranslateError::MissingId);
    }
    if node.namespace.is_empty() {
        return Err(TranslateError::MissingNamespace {
            id: node.id.clone(),
        });
    }
    Ok(())
}

/// The cache key of the shared part for `node`.
pub fn scope_key(model: &MeshModel, node: &Node) -> ScopeKey {
    Scope::new(model, node).key()
}

/// The part of `node`'s resources shared by every node with the same [`scope_key`]: outbound
/// (or gateway) listeners, route tables, outbound clusters and their endpoints, and the secrets
/// they reference by file.
pub fn translate_shared(model: &MeshModel, node: &Node) -> ProxyResources {
    let scope = Scope::new(model, node);
    let mut out = ProxyResources::default();
    clusters::outbound(&scope, &mut out);
    if scope.router {
        listeners::gateway(&scope, &mut out);
    } else {
        listeners::outbound(&scope, &mut out);
    }
    sort_and_dedup(&mut out);
    out
}

/// The per-node part: inbound listener(s) and clusters, authorization policies.
pub fn translate_local(model: &MeshModel, node: &Node) -> ProxyResources {
    let scope = Scope::new(model, node);
    let mut out = ProxyResources::default();
    if !scope.router {
        listeners::inbound(&scope, &mut out);
    }
    authz::policies(&scope, &mut out);
    sort_and_dedup(&mut out);
    out
}

/// Concatenates a shared and a local part (their names are disjoint by construction, so only
/// the order is restored).
pub fn merge(shared: &ProxyResources, local: &ProxyResources) -> ProxyResources {
    fn join<T: Clone>(a: &[T], b: &[T], key: impl Fn(&T) -> &str) -> Vec<T> {
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        // Both inputs are sorted: the stable sort only interleaves the few local entries.
        v.sort_by(|x, y| key(x).cmp(key(y)));
        v
    }
    ProxyResources {
        version: shared.version.clone(),
        listeners: join(&shared.listeners, &local.listeners, |l| &l.name),
        route_configs: join(&shared.route_configs, &local.route_configs, |r| &r.name),
        clusters: join(&shared.clusters, &local.clusters, |c| &c.name),
        endpoints: join(&shared.endpoints, &local.endpoints, |e| &e.cluster_name),
        secrets: join(&shared.secrets, &local.secrets, |s| &s.name),
        authorization: join(&shared.authorization, &local.authorization, |a| &a.name),
    }
}

/// The whole configuration of `node`.
pub fn translate(model: &MeshModel, node: &Node) -> Result<ProxyResources, TranslateError> {
    check_node(node)?;
    Ok(merge(
        &translate_shared(model, node),
        &translate_local(model, node),
    ))
}

/// One model plus a cache of shared parts keyed by [`ScopeKey`]: build one per config change,
/// call [`Translator::translate`] for every proxy (from any thread). The shared part is computed
/// once per distinct scope; only the small local part is computed per proxy.
pub struct Translator {
    model: Arc<MeshModel>,
    shared: Mutex<HashMap<ScopeKey, Arc<ProxyResources>>>,
}

impl Translator {
    pub fn new(model: impl Into<Arc<MeshModel>>) -> Translator {
        Translator {
            model: model.into(),
            shared: Mutex::new(HashMap::new()),
        }
    }

    pub fn model(&self) -> &MeshModel {
        &self.model
    }

    /// The shared part for `node`, from the cache when another node of the same scope asked
    /// before.
    pub fn shared(&self, node: &Node) -> Arc<ProxyResources> {
        let key = scope_key(&self.model, node);
        let cached = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(hit) = cached {
            return hit;
        }
        // Computed outside the lock: two threads may race on a new scope; both results are equal.
        let fresh = Arc::new(translate_shared(&self.model, node));
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(fresh)
            .clone()
    }

    /// `node`'s configuration as (shared part, local part), without copying the shared part:
    /// the discovery server can encode the shared resources once per scope
    /// (`wire::split` on the `Arc`) and only the local ones per proxy.
    pub fn parts(
        &self,
        node: &Node,
    ) -> Result<(Arc<ProxyResources>, ProxyResources), TranslateError> {
        check_node(node)?;
        Ok((self.shared(node), translate_local(&self.model, node)))
    }

    /// `node`'s whole configuration (equal to [`translate`]).
    pub fn translate(&self, node: &Node) -> Result<ProxyResources, TranslateError> {
        check_node(node)?;
        Ok(merge(
            &self.shared(node),
            &translate_local(&self.model, node),
        ))
    }

    /// Number of distinct scopes translated so far.
    pub fn cached_scopes(&self) -> usize {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Deterministic output (sorted by name; the first of equal names kept).
fn sort_and_dedup(out: &mut ProxyResources) {
    fn by<T>(v: &mut Vec<T>, key: impl Fn(&T) -> &str) {
        let mut seen = BTreeSet::new();
        v.retain(|x| seen.insert(key(x).to_string()));
        v.sort_by(|a, b| key(a).cmp(key(b)));
    }
    by(&mut out.listeners, |l| &l.name);
    by(&mut out.route_configs, |r| &r.name);
    by(&mut out.clusters, |c| &c.name);
    by(&mut out.endpoints, |e| &e.cluster_name);
    by(&mut out.secrets, |s| &s.name);
    // Policy order carries no meaning: evaluation goes by action.
    by(&mut out.authorization, |a| &a.name);
}
