//! The compiled runtime form of a `ProxyResources`: listeners with their chains, route tables
//! with pre-compiled matchers, and the cluster table with endpoints bound to shared pools.
//! Built off the request path and swapped in atomically.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

use crate::cluster::{Cluster, ClusterKind};
use crate::error::ConfigError;
use crate::lb::{HashKey, LbPolicy};
use crate::metrics::{Metrics, Peers, Reporter, Service, Workload};
use crate::route::{
    Action, CorsPolicy, Forward, HeaderMatch, HeaderOps, Redirect, RequestMatch, Rewrite, Route,
    RouteTable, StringMatch, VirtualHost, WeightedClusters,
};
use crate::upstream::{Endpoint, Registry, UpstreamProtocol};

/// Who this proxy is: the source of outbound requests and the destination of inbound ones.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub id: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub workload: String,
    pub principal: String,
    /// `region/zone/subzone`, for locality load balancing (empty: unknown).
    pub locality: String,
}

impl NodeInfo {
    pub fn workload_labels(&self) -> Workload {
        Workload {
            workload: self.workload.clone(),
            namespace: self.namespace.clone(),
            app: self.labels.get("app").cloned().unwrap_or_default(),
            version: self.labels.get("version").cloned().unwrap_or_default(),
            principal: self.principal.clone(),
        }
    }
}

/// An IP prefix (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.trim().parse().ok().filter(|l| *l <= max)?,
            None => max,
        };
        Some(Cidr { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Transport seen on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Any,
    Raw,
    Tls,
}

/// How specifically a chain matched: (port, prefix length, server name, transport, ALPN, source).
pub type Specificity = (u8, u8, u8, u8, u8, u8);

/// Compiled `FilterChainMatch`.
#[derive(Debug, Clone)]
pub struct ChainMatch {
    pub ports: Vec<u16>,
    pub prefixes: Vec<Cidr>,
    pub server_names: Vec<String>,
    pub transport: Transport,
    pub alpn: Vec<String>,
    pub sources: Vec<Cidr>,
}

/// What is known about a connection when choosing its chain.
#[derive(Debug, Clone, Copy)]
pub struct ConnMeta<'a> {
    pub destination: SocketAddr,
    pub source: SocketAddr,
    pub tls: bool,
    pub sni: Option<&'a str>,
    pub alpn: &'a [String],
}

fn sni_score(patterns: &[String], sni: Option<&str>) -> Option<u8> {
    if patterns.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    let mut best = None;
    for p in patterns {
        if p == sni {
            return Some(2);
        }
        if let Some(suffix) = p.strip_prefix('*')
            && sni.len() > suffix.len()
            && sni.ends_with(suffix)
        {
            best = Some(1);
        }
    }
    best
}

impl ChainMatch {
    /// `None` if the chain does not apply; otherwise a specificity score (higher wins), compared
    /// in Envoy's order: port, destination prefix length, server name, transport, ALPN, source.
    pub fn score(&self, c: &ConnMeta<'_>) -> Option<Specificity> {
        let port = if self.ports.is_empty() {
            0
        } else if self.ports.contains(&c.destination.port()) {
            1
        } else {
            return None;
        };
        let prefix = if self.prefixes.is_empty() {
            0
        } else {
            1 + self
                .prefixes
                .iter()
                .filter(|p| p.contains(c.destination.ip()))
                .map(|p| p.len)
                .max()?
        };
        let sni = sni_score(&self.server_names, c.sni)?;
        let transport = match self.transport {
            Transport::Any => 0,
            Transport::Tls if c.tls => 1,
            Transport::Raw if !c.tls => 1,
            _ => return None,
        };
        let alpn = if self.alpn.is_empty() {
            0
        } else if self.alpn.iter().any(|a| c.alpn.contains(a)) {
            1
        } else {
            return None;
        };
        let source = if self.sources.is_empty() {
            0
        } else if self.sources.iter().any(|s| s.contains(c.source.ip())) {
            1
        } else {
            return None;
        };
        Some((port, prefix, sni, transport, alpn, source))
    }

    /// Does choosing among chains need to look at the first bytes (TLS vs plaintext, SNI, ALPN)?
    pub fn needs_tls_info(&self) -> bool {
        !self.server_names.is_empty() || self.transport != Transport::Any || !self.alpn.is_empty()
    }
}

/// HTTP codec of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Auto,
    Http1,
    Http2,
}

/// What a chain does with a connection.
#[derive(Debug, Clone)]
pub enum Handler {
    Http { route_key: String, codec: Codec },
    Tcp { clusters: WeightedClusters },
}

#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    pub matcher: ChainMatch,
    pub handler: Handler,
}

/// Direction of a listener (decides the metrics reporter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
    Gateway,
}

impl Direction {
    pub fn reporter(self) -> Reporter {
        match self {
            Direction::Inbound => Reporter::Destination,
            Direction::Outbound | Direction::Gateway => Reporter::Source,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerRt {
    pub name: String,
    pub address: SocketAddr,
    pub direction: Direction,
    pub use_original_dst: bool,
    pub chains: Vec<Chain>,
    pub default_chain: Option<Chain>,
    /// Sniff the first bytes before choosing a chain.
    pub sniff: bool,
}

impl ListenerRt {
    /// The most specific chain for a connection (ties: first listed), else the default chain.
    pub fn select(&self, c: &ConnMeta<'_>) -> Option<&Chain> {
        let mut best: Option<(&Chain, Specificity)> = None;
        for ch in &self.chains {
            if let Some(s) = ch.matcher.score(c)
                && best.is_none_or(|(_, b)| s > b)
            {
                best = Some((ch, s));
            }
        }
        best.map(|(c, _)| c).or(self.default_chain.as_ref())
    }
}

/// One compiled config version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: String,
    pub resources: Arc<ProxyResources>,
    pub listeners: Vec<ListenerRt>,
    pub listener_index: HashMap<String, usize>,
    pub routes: HashMap<String, Arc<RouteTable>>,
    pub clusters: Vec<Arc<Cluster>>,
    pub cluster_index: HashMap<String, usize>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot {
            version: String::new(),
            resources: Arc::new(ProxyResources::default()),
            listeners: Vec::new(),
            listener_index: HashMap::new(),
            routes: HashMap::new(),
            clusters: Vec::new(),
            cluster_index: HashMap::new(),
        }
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerRt> {
        self.listener_index
            .get(name)
            .and_then(|i| self.listeners.get(*i))
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.cluster_index
            .get(name)
            .and_then(|i| self.clusters.get(*i))
    }
}

/// Inputs of compilation that outlive one config version.
#[derive(Debug, Clone, Copy)]
pub struct CompileCtx<'a> {
    pub metrics: &'a Metrics,
    pub registry: &'a Registry,
    pub node: &'a NodeInfo,
    /// Last good DNS answers (DNS clusters compile from them; `dns` refreshes them).
    pub dns: &'a crate::dns::DnsCache,
}

/// Index meaning "cluster named by a route but absent": answered 503 at request time.
pub const MISSING_CLUSTER: usize = usize::MAX;

fn inv(at: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        at: at.into(),
        why: why.into(),
    }
}

/// Service labels from an FQDN: `name.namespace.svc.<domain>` gives name and namespace.
fn service_labels(host: &str) -> Service {
    let mut parts = host.split('.');
    let (name, ns) = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(ns), Some("svc")) => (n.to_string(), ns.to_string()),
        _ => (host.to_string(), String::new()),
    };
    Service {
        host: host.to_string(),
        name,
        namespace: ns,
    }
}

fn string_match(m: &r::StringMatch, at: &str) -> Result<Option<StringMatch>, ConfigError> {
    use r::string_match::Kind;
    let re = |p: &str| {
        StringMatch::regex(p).map_err(|e| ConfigError::Regex {
            at: at.to_string(),
            pattern: p.to_string(),
            why: e.to_string(),
        })
    };
    Ok(match &m.kind {
        None => None,
        Some(Kind::Present(_)) => Some(StringMatch::Prefix(String::new())),
        Some(Kind::Regex(p)) => Some(re(&if m.ignore_case {
            format!("(?i){p}")
        } else {
            p.clone()
        })?),
        Some(Kind::Exact(e)) if m.ignore_case => Some(re(&format!("(?i){}", regex::escape(e)))?),
        Some(Kind::Prefix(p)) if m.ignore_case => Some(re(&format!("(?i){}.*", regex::escape(p)))?),
        Some(Kind::Exact(e)) => Some(StringMatch::Exact(e.clone())),
        Some(Kind::Prefix(p)) => Some(StringMatch::Prefix(p.clone())),
    })
}

fn header_name(n: &str, at: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
        .map_err(|_| inv(at, format!("{n:?} is not a valid header name")))
}

fn header_value(v: &str, at: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(v).map_err(|_| inv(at, format!("{v:?} is not a valid header value")))
}

fn header_ops(h: Option<&r::HeaderOperations>, at: &str) -> Result<HeaderOps, ConfigError> {
    let Some(h) = h else {
        return Ok(HeaderOps::default());
    };
    let mut ops = HeaderOps::default();
    for (n, v) in &h.set {
        ops.set.push((header_name(n, at)?, header_value(v, at)?));
    }
    for (n, v) in &h.add {
        ops.add.push((header_name(n, at)?, header_value(v, at)?));
    }
    for n in &h.remove {
        ops.remove.push(header_name(n, at)?);
    }
    Ok(ops)
}

fn request_match(
    m: &r::RouteMatch,
    at: &str,
    node: &NodeInfo,
) -> Result<Option<RequestMatch>, ConfigError> {
    // Source selectors are resolved against this proxy: a match for other workloads is dropped.
    if m.source_labels
        .iter()
        .any(|(k, v)| node.labels.get(k) != Some(v))
        || (!m.source_namespace.is_empty() && m.source_namespace != node.namespace)
    {
        return Ok(None);
    }
    let sm = |f: &Option<r::StringMatch>, what: &str| -> Result<Option<StringMatch>, ConfigError> {
        match f {
            Some(s) => string_match(s, &format!("{at}.{what}")),
            None => Ok(None),
        }
    };
    let mut out = RequestMatch {
        uri: sm(&m.uri, "uri")?,
        scheme: sm(&m.scheme, "scheme")?,
        method: sm(&m.method, "method")?,
        authority: sm(&m.authority, "authority")?,
        port: if m.port == 0 {
            None
        } else {
            Some(
                u16::try_from(m.port)
                    .map_err(|_| inv(format!("{at}.port"), "port out of range"))?,
            )
        },
        ..Default::default()
    };
    for (i, h) in m.headers.iter().enumerate() {
        let hat = format!("{at}.headers[{i}]");
        let name = header_name(&h.name, &hat)?;
        let cond = match &h.value {
            Some(v) => match string_match(v, &hat)? {
                Some(s) => HeaderMatch::Value(s),
                None => HeaderMatch::Present,
            },
            None => HeaderMatch::Present,
        };
        // Present-kind matches are a plain presence test.
        let cond = match cond {
            HeaderMatch::Value(StringMatch::Prefix(p)) if p.is_empty() => HeaderMatch::Present,
            c => c,
        };
        if h.invert {
            out.without_headers.push((name, cond));
        } else {
            out.headers.push((name, cond));
        }
    }
    for (i, q) in m.query_params.iter().enumerate() {
        let qat = format!("{at}.queryParams[{i}]");
        let cond = match &q.value {
            Some(v) => string_match(v, &qat)?.unwrap_or(StringMatch::Prefix(String::new())),
            None => StringMatch::Prefix(String::new()),
        };
        out.query_params.push((q.name.clone(), cond));
    }
    Ok(Some(out))
}

fn weighted(
    list: &[r::WeightedCluster],
    at: &str,
    index: &HashMap<String, usize>,
) -> Result<WeightedClusters, ConfigError> {
    let mut dests = Vec::with_capacity(list.len());
    let single = list.len() == 1;
    for (i, w) in list.iter().enumerate() {
        let wat = format!("{at}.clusters[{i}]");
        let idx = index.get(&w.name).copied().unwrap_or(MISSING_CLUSTER);
        // A lone destination without a weight carries all traffic.
        let weight = if single && w.weight == 0 { 1 } else { w.weight };
        dests.push((
            idx,
            weight,
            header_ops(w.request_headers.as_ref(), &wat)?,
            header_ops(w.response_headers.as_ref(), &wat)?,
        ));
    }
    Ok(WeightedClusters::with_headers(dests))
}

fn cors(c: &r::CorsPolicy, at: &str) -> Result<CorsPolicy, ConfigError> {
    let mut out = CorsPolicy::default();
    for (i, o) in c.allow_origins.iter().enumerate() {
        if let Some(m) = string_match(o, &format!("{at}.allowOrigins[{i}]"))? {
            out.allow_origins.push(m);
        }
    }
    let join = |v: &[String]| -> Result<Option<HeaderValue>, ConfigError> {
        if v.is_empty() {
            Ok(None)
        } else {
            header_value(&v.join(","), at).map(Some)
        }
    };
    out.allow_methods = join(&c.allow_methods)?;
    out.allow_headers = join(&c.allow_headers)?;
    out.expose_headers = join(&c.expose_headers)?;
    out.max_age = (c.max_age_seconds > 0).then(|| HeaderValue::from(c.max_age_seconds));
    out.allow_credentials = c.allow_credentials.unwrap_or(false);
    Ok(out)
}

fn route(
    rt: &r::Route,
    at: &str,
    ctx: &CompileCtx<'_>,
    index: &HashMap<String, usize>,
) -> Result<Option<Route>, ConfigError> {
    let mut matches = Vec::with_capacity(rt.matches.len());
    for (i, m) in rt.matches.iter().enumerate() {
        if let Some(m) = request_match(m, &format!("{at}.matches[{i}]"), ctx.node)? {
            matches.push(m);
        }
    }
    if !rt.matches.is_empty() && matches.is_empty() {
        return Ok(None); // every match was for another source workload
    }
    let mut cors_policy = None;
    let action = match &rt.action {
        None => {
            return Err(inv(
                at,
                "route has no action (route, redirect or directResponse)",
            ));
        }
        Some(r::route::Action::Route(a)) => {
            let mut rewrite = Rewrite::default();
            if let Some(rw) = &a.rewrite {
                if !rw.uri_prefix.is_empty() {
                    rewrite.uri = Some(rw.uri_prefix.clone());
                }
                if !rw.uri.is_empty() {
                    rewrite.full_path = Some(rw.uri.clone());
                }
                if let Some(re) = &rw.uri_regex {
                    let rx = regex::Regex::new(&re.pattern).map_err(|e| ConfigError::Regex {
                        at: format!("{at}.rewrite.uriRegex"),
                        pattern: re.pattern.clone(),
                        why: e.to_string(),
                    })?;
                    rewrite.uri_regex = Some((rx, re.substitution.clone()));
                }
                if !rw.authority.is_empty() {
                    rewrite.authority = Some(rw.authority.clone());
                }
            }
            if let Some(c) = &a.cors {
                cors_policy = Some(cors(c, &format!("{at}.cors"))?);
            }
            let clusters = weighted(&a.clusters, &format!("{at}.route"), index)?;
            if clusters.is_empty() {
                return Err(inv(
                    format!("{at}.route.clusters"),
                    "no destination with a positive weight",
                ));
            }
            Action::Forward(Box::new(Forward {
                clusters,
                rewrite,
                timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
                resilience: crate::resilience::RoutePolicy::compile(a, at, index)?,
            }))
        }
        Some(r::route::Action::Redirect(rd)) => {
            let code = if rd.response_code == 0 {
                301
            } else {
                rd.response_code
            };
            let code = u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(StatusCode::is_redirection)
                .ok_or_else(|| {
                    inv(
                        format!("{at}.redirect.responseCode"),
                        format!("{code} is not a 3xx status"),
                    )
                })?;
            let port = match rd.derive_port() {
                r::redirect_action::DerivePort::FromProtocolDefault => {
                    Some(if rd.scheme == "https" { 443 } else { 80 })
                }
                _ if rd.port > 0 => Some(
                    u16::try_from(rd.port)
                        .map_err(|_| inv(format!("{at}.redirect.port"), "port out of range"))?,
                ),
                _ => None,
            };
            Action::Redirect(Redirect {
                scheme: (!rd.scheme.is_empty()).then(|| rd.scheme.clone()),
                authority: (!rd.authority.is_empty()).then(|| rd.authority.clone()),
                port,
                path: (!rd.uri.is_empty()).then(|| rd.uri.clone()),
                code,
            })
        }
        Some(r::route::Action::DirectResponse(d)) => {
            let status = u16::try_from(d.status)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    inv(
                        format!("{at}.directResponse.status"),
                        format!("{} is not an HTTP status", d.status),
                    )
                })?;
            Action::Direct {
                status,
                body: Bytes::from(d.body.clone()),
            }
        }
    };
    Ok(Some(Route {
        name: rt.name.clone(),
        matches,
        action,
        request_headers: header_ops(rt.request_headers.as_ref(), &format!("{at}.requestHeaders"))?,
        response_headers: header_ops(
            rt.response_headers.as_ref(),
            &format!("{at}.responseHeaders"),
        )?,
        cors: cors_policy,
    }))
}

fn route_table(
    rc: &r::RouteConfiguration,
    at: &str,
    ctx: &CompileCtx<'_>,
    index: &HashMap<String, usize>,
) -> Result<RouteTable, ConfigError> {
    let mut vhosts = Vec::with_capacity(rc.virtual_hosts.len());
    for (vi, vh) in rc.virtual_hosts.iter().enumerate() {
        let vat = format!("{at}.virtualHosts[{vi}]({})", vh.name);
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (ri, rt) in vh.routes.iter().enumerate() {
            if let Some(r) = route(rt, &format!("{vat}.routes[{ri}]"), ctx, index)? {
                routes.push(r);
            }
        }
        vhosts.push(VirtualHost {
            name: vh.name.clone(),
            domains: vh.domains.clone(),
            routes,
        });
    }
    Ok(RouteTable::new(rc.name.clone(), vhosts))
}

fn socket_addr(host: &str, port: u32, at: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    socket_addr_any(host, port, false, at)
}

/// `allow_zero`: listeners may ask for an ephemeral port (tests, benchmarks).
fn socket_addr_any(
    host: &str,
    port: u32,
    allow_zero: bool,
    at: &str,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0 || allow_zero)
        .ok_or_else(|| inv(at, format!("port {port} is not between 1 and 65535")))?;
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // DNS clusters: resolved when the config is compiled.
    (host, port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| inv(at, format!("cannot resolve {host:?}: {e}")))
}

/// An endpoint's addresses: its IP, or for a DNS cluster the last good answer for its name
/// (resolved now when there is none yet). A name that does not resolve leaves the endpoint without
/// addresses until a refresh succeeds, as Envoy does, instead of refusing the whole config.
fn endpoint_addrs(
    c: &r::Cluster,
    e: &r::Endpoint,
    at: &str,
    ctx: &CompileCtx<'_>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    if !crate::dns::is_dns(c) || !crate::dns::is_name(&e.address) {
        return socket_addr(&e.address, e.port, at);
    }
    let port = u16::try_from(e.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| inv(at, format!("port {} is not between 1 and 65535", e.port)))?;
    if ctx.dns.get(&e.address, port).is_none() {
        match (e.address.as_str(), port).to_socket_addrs() {
            Ok(a) => {
                ctx.dns.put(&e.address, port, a.collect());
            }
            Err(err) => tracing::warn!(
                host = %e.address, cluster = %c.name, error = %err,
                "DNS resolution failed; no address until a refresh succeeds"
            ),
        }
    }
    let addrs = ctx.dns.get(&e.address, port).unwrap_or_default();
    Ok(crate::dns::select(c, addrs))
}

pub(crate) fn cluster(
    c: &r::Cluster,
    at: &str,
    ctx: &CompileCtx<'_>,
    endpoints: Option<&r::ClusterEndpoints>,
) -> Result<Cluster, ConfigError> {
    use r::cluster::DiscoveryType as D;
    let inbound = c.name.starts_with("inbound|") || c.name == "InboundPassthroughCluster";
    let me = ctx.node.workload_labels();
    let service = if c.service_host.is_empty() {
        Service::default()
    } else {
        service_labels(&c.service_host)
    };
    let base = if inbound {
        Peers {
            source: Workload::default(),
            destination: me.clone(),
            service: service.clone(),
        }
    } else {
        Peers {
            source: me.clone(),
            destination: Workload::default(),
            service: service.clone(),
        }
    };
    let peers = ctx.metrics.intern(base.clone());
    let kind = match c.r#type() {
        D::Eds | D::Static | D::StrictDns | D::LogicalDns => ClusterKind::Endpoints,
        D::OriginalDst => ClusterKind::OriginalDst,
        D::Blackhole => ClusterKind::Blackhole,
    };
    let (protocol, use_downstream) = match c.upstream_protocol() {
        r::cluster::UpstreamProtocol::Http1 => (UpstreamProtocol::Http1, false),
        r::cluster::UpstreamProtocol::Http2 => (UpstreamProtocol::Http2, false),
        r::cluster::UpstreamProtocol::UseDownstream => match c.protocol() {
            r::Protocol::Http2 | r::Protocol::Grpc => (UpstreamProtocol::Http2, false),
            _ => (UpstreamProtocol::Http1, true),
        },
    };
    let policy = match &c.load_balancer {
        None => LbPolicy::LeastRequest,
        Some(lb) => {
            use r::load_balancer::Policy as P;
            match lb.policy() {
                P::LeastRequest => LbPolicy::LeastRequest,
                P::RoundRobin | P::Passthrough => LbPolicy::RoundRobin,
                P::Random => LbPolicy::Random,
                P::RingHash | P::Maglev => {
                    use r::consistent_hash::Key;
                    let key = lb
                        .consistent_hash
                        .as_ref()
                        .and_then(|h| h.key.as_ref())
                        .ok_or_else(|| {
                            inv(
                                format!("{at}.loadBalancer.consistentHash"),
                                "consistent hashing needs a key",
                            )
                        })?;
                    LbPolicy::ConsistentHash(match key {
                        Key::HttpHeaderName(h) => HashKey::Header(h.to_ascii_lowercase()),
                        Key::HttpCookie(ck) => HashKey::Cookie {
                            name: ck.name.clone(),
                            path: ck.path.clone(),
                            ttl_secs: ck.ttl_ms.div_ceil(1000),
                        },
                        Key::UseSourceIp(_) => HashKey::SourceIp,
                        Key::HttpQueryParameterName(q) => HashKey::QueryParameter(q.clone()),
                    })
                }
            }
        }
    };
    let pool = crate::upstream::PoolSettings::from_cluster(c);
    let mut eps = Vec::new();
    let mut srcs = Vec::new();
    if kind == ClusterKind::Endpoints
        && let Some(ce) = endpoints
    {
        for (i, e) in ce.endpoints.iter().enumerate() {
            let eat = format!("endpoints[{}]({}).endpoints[{i}]", c.name, ce.cluster_name);
            for addr in endpoint_addrs(c, e, &eat, ctx)? {
                let peers = if inbound {
                    None
                } else {
                    let mut p = base.clone();
                    p.destination = Workload {
                        workload: e.labels.get("workload").cloned().unwrap_or_default(),
                        namespace: service.namespace.clone(),
                        app: e.labels.get("app").cloned().unwrap_or_default(),
                        version: e.labels.get("version").cloned().unwrap_or_default(),
                        principal: e.identity.clone(),
                    };
                    (p != base).then(|| ctx.metrics.intern(p))
                };
                srcs.push(e);
                eps.push(Endpoint {
                    upstream: ctx.registry.get_with(addr, protocol, pool),
                    weight: e.weight.max(1),
                    healthy: e.health() == r::endpoint::Health::Healthy,
                    peers,
                });
            }
        }
    }
    let resilience = crate::resilience::ClusterState::compile(c, eps.len(), at)?;
    let locality = crate::resilience::locality::LocalityLb::compile(
        crate::resilience::locality::NodeSide {
            locality: &ctx.node.locality,
            labels: &ctx.node.labels,
        },
        c,
        &srcs,
        &eps,
        &policy,
    );
    let in_mesh = !inbound && kind == ClusterKind::Endpoints && is_in_mesh(c, endpoints);
    Ok(Cluster::new(
        c.name.clone(),
        kind,
        protocol,
        use_downstream,
        policy,
        eps,
        peers,
    )
    .with_resilience(resilience)
    .with_locality(locality)
    .with_peer_metadata(in_mesh)
    .with_pool(pool))
}

/// Does an outbound cluster lead to mesh workloads (sidecars), so that peer metadata may go there?
/// Istio mTLS to it (explicit or auto, which the control plane sets only for services inside the
/// mesh) or endpoints marked as running a sidecar. Passthrough and MESH_EXTERNAL ServiceEntries
/// (plaintext or their own TLS, no sidecar endpoints) are out.
fn is_in_mesh(c: &r::Cluster, endpoints: Option<&r::ClusterEndpoints>) -> bool {
    use r::upstream_tls::Mode;
    let istio_tls = c
        .tls
        .as_ref()
        .is_some_and(|t| matches!(t.mode(), Mode::IstioMutual | Mode::AutoIstioMutual));
    istio_tls || endpoints.is_some_and(|e| e.endpoints.iter().any(|e| e.mesh_tls))
}

fn chain(
    ch: &r::FilterChain,
    at: &str,
    listener: &str,
    ctx: &CompileCtx<'_>,
    index: &HashMap<String, usize>,
    routes: &mut HashMap<String, Arc<RouteTable>>,
) -> Result<Option<Chain>, ConfigError> {
    if ch.tls.is_some() {
        // TLS termination by the proxy is not implemented: such chains never match, so TLS
        // connections fall through to chains that pass them on untouched.
        tracing::warn!(chain = %ch.name, listener, "TLS-terminating filter chain skipped (not supported)");
        return Ok(None);
    }
    let m = ch.r#match.clone().unwrap_or_default();
    let cidrs = |v: &[String], what: &str| -> Result<Vec<Cidr>, ConfigError> {
        v.iter()
            .map(|s| {
                Cidr::parse(s).ok_or_else(|| {
                    inv(
                        format!("{at}.match.{what}"),
                        format!("{s:?} is not an IP prefix"),
                    )
                })
            })
            .collect()
    };
    let matcher = ChainMatch {
        ports: m
            .destination_ports
            .iter()
            .map(|p| {
                u16::try_from(*p).map_err(|_| {
                    inv(
                        format!("{at}.match.destinationPorts"),
                        format!("{p} out of range"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        prefixes: cidrs(&m.destination_prefixes, "destinationPrefixes")?,
        server_names: m
            .server_names
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        transport: match m.transport() {
            r::filter_chain_match::Transport::Any => Transport::Any,
            r::filter_chain_match::Transport::RawBuffer => Transport::Raw,
            r::filter_chain_match::Transport::Tls => Transport::Tls,
        },
        alpn: m.application_protocols.clone(),
        sources: cidrs(&m.source_prefixes, "sourcePrefixes")?,
    };
    let handler = match &ch.handler {
        None => return Err(inv(at, "filter chain has no handler (http or tcp)")),
        Some(r::filter_chain::Handler::Http(hcm)) => {
            use r::http_connection_manager::RouteSpecifier as RS;
            let route_key = match &hcm.route_specifier {
                Some(RS::RouteConfigName(n)) => n.clone(),
                Some(RS::RouteConfig(rc)) => {
                    let key = format!("{listener}/{}", ch.name);
                    let t = route_table(rc, &format!("{at}.http.routeConfig"), ctx, index)?;
                    routes.insert(key.clone(), Arc::new(t));
                    key
                }
                None => {
                    return Err(inv(
                        format!("{at}.http"),
                        "no route config name or inline routes",
                    ));
                }
            };
            let codec = match hcm.codec() {
                r::http_connection_manager::Codec::Auto => Codec::Auto,
                r::http_connection_manager::Codec::Http1 => Codec::Http1,
                r::http_connection_manager::Codec::Http2 => Codec::Http2,
            };
            Handler::Http { route_key, codec }
        }
        Some(r::filter_chain::Handler::Tcp(t)) => {
            let clusters = weighted(&t.clusters, &format!("{at}.tcp"), index)?;
            if clusters.is_empty() {
                return Err(inv(
                    format!("{at}.tcp.clusters"),
                    "no destination with a positive weight",
                ));
            }
            Handler::Tcp { clusters }
        }
    };
    Ok(Some(Chain {
        name: ch.name.clone(),
        matcher,
        handler,
    }))
}

/// Validate and compile a whole config. Errors name the resource and field.
/// `node` with the locality the control plane pushed (on its inbound listeners) when it was given
/// none itself, `None` when that changes nothing. Precedence: `--locality` / `HALYARD_LOCALITY`
/// (an explicit choice), then the control plane's (it derives it as it derives the endpoints'
/// localities, e.g. the node zone from EndpointSlices, so the two compare alike), then the
/// proxy's own labels (`resilience::locality::node_locality`), which the control plane has also
/// seen when it knows the pod.
pub fn with_pushed_locality(node: &NodeInfo, res: &ProxyResources) -> Option<NodeInfo> {
    if !node.locality.is_empty() {
        return None;
    }
    let pushed = res
        .listeners
        .iter()
        .find(|l| !l.locality.is_empty())?
        .locality
        .clone();
    Some(NodeInfo {
        locality: pushed,
        ..node.clone()
    })
}

pub fn compile(res: &ProxyResources, ctx: &CompileCtx<'_>) -> Result<Snapshot, ConfigError> {
    let pushed = with_pushed_locality(ctx.node, res);
    let ctx = &CompileCtx {
        node: pushed.as_ref().unwrap_or(ctx.node),
        ..*ctx
    };
    let eps: HashMap<&str, &r::ClusterEndpoints> = res
        .endpoints
        .iter()
        .map(|e| (e.cluster_name.as_str(), e))
        .collect();
    let mut clusters = Vec::with_capacity(res.clusters.len());
    let mut cluster_index = HashMap::with_capacity(res.clusters.len());
    for (i, c) in res.clusters.iter().enumerate() {
        if c.name.is_empty() {
            return Err(inv(format!("clusters[{i}].name"), "empty cluster name"));
        }
        if cluster_index
            .insert(c.name.clone(), clusters.len())
            .is_some()
        {
            return Err(inv(
                format!("clusters[{i}]({})", c.name),
                "duplicate cluster name",
            ));
        }
        let at = format!("clusters[{i}]({})", c.name);
        clusters.push(Arc::new(cluster(
            c,
            &at,
            ctx,
            eps.get(c.name.as_str()).copied(),
        )?));
    }
    let mut routes = HashMap::new();
    for (i, rc) in res.route_configs.iter().enumerate() {
        let at = format!("routeConfigs[{i}]({})", rc.name);
        let t = route_table(rc, &at, ctx, &cluster_index)?;
        if routes.insert(rc.name.clone(), Arc::new(t)).is_some() {
            return Err(inv(at, "duplicate route config name"));
        }
    }
    let mut listeners = Vec::with_capacity(res.listeners.len());
    let mut listener_index = HashMap::new();
    let mut addrs = HashMap::new();
    for (i, l) in res.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]({})", l.name);
        let addr = socket_addr_any(&l.address, l.port, true, &format!("{at}.address"))?
            .into_iter()
            .next()
            .ok_or_else(|| inv(format!("{at}.address"), "no address"))?;
        if addr.port() != 0
            && let Some(other) = addrs.insert(addr, l.name.clone())
        {
            return Err(inv(
                at,
                format!("address {addr} already used by listener {other}"),
            ));
        }
        let mut chains = Vec::with_capacity(l.filter_chains.len());
        for (ci, ch) in l.filter_chains.iter().enumerate() {
            let cat = format!("{at}.filterChains[{ci}]({})", ch.name);
            if let Some(c) = chain(ch, &cat, &l.name, ctx, &cluster_index, &mut routes)? {
                chains.push(c);
            }
        }
        let default_chain = match &l.default_chain {
            Some(ch) => chain(
                ch,
                &format!("{at}.defaultChain"),
                &l.name,
                ctx,
                &cluster_index,
                &mut routes,
            )?,
            None => None,
        };
        let sniff = chains.iter().chain(default_chain.iter()).any(|c| {
            c.matcher.needs_tls_info()
                || matches!(
                    c.handler,
                    Handler::Http {
                        codec: Codec::Auto,
                        ..
                    }
                )
        });
        let direction = match l.direction() {
            r::listener::Direction::Outbound => Direction::Outbound,
            r::listener::Direction::Inbound => Direction::Inbound,
            r::listener::Direction::Gateway => Direction::Gateway,
        };
        if listener_index
            .insert(l.name.clone(), listeners.len())
            .is_some()
        {
            return Err(inv(at, "duplicate listener name"));
        }
        listeners.push(ListenerRt {
            name: l.name.clone(),
            address: addr,
            direction,
            use_original_dst: l.use_original_dst,
            chains,
            default_chain,
            sniff,
        });
    }
    Ok(Snapshot {
        version: res.version.clone(),
        resources: Arc::new(res.clone()),
        listeners,
        listener_index,
        routes,
        clusters,
        cluster_index,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
    }

    fn cm(ports: &[u16], prefixes: &[&str], sni: &[&str], transport: Transport) -> ChainMatch {
        ChainMatch {
            ports: ports.to_vec(),
            prefixes: prefixes.iter().map(|p| Cidr::parse(p).unwrap()).collect(),
            server_names: sni.iter().map(|s| s.to_string()).collect(),
            transport,
            alpn: vec![],
            sources: vec![],
        }
    }

    #[test]
    fn chain_selection_prefers_specific() {
        let mk = |name: &str, m: ChainMatch| Chain {
            name: name.into(),
            matcher: m,
            handler: Handler::Tcp {
                clusters: WeightedClusters::new([(0, 1)]),
            },
        };
        let l = ListenerRt {
            name: "l".into(),
            address: "127.0.0.1:15001".parse().unwrap(),
            direction: Direction::Outbound,
            use_original_dst: true,
            chains: vec![
                mk("any-port", cm(&[], &[], &[], Transport::Any)),
                mk("port", cm(&[9080], &[], &[], Transport::Any)),
                mk(
                    "port-subnet",
                    cm(&[9080], &["10.0.0.0/8"], &[], Transport::Any),
                ),
                mk(
                    "port-host",
                    cm(&[9080], &["10.0.0.5/32"], &[], Transport::Any),
                ),
                mk(
                    "tls-wild",
                    cm(&[443], &[], &["*.example.com"], Transport::Tls),
                ),
                mk(
                    "tls-exact",
                    cm(&[443], &[], &["a.example.com"], Transport::Tls),
                ),
            ],
            default_chain: None,
            sniff: true,
        };
        let pick = |dst: &str, sni: Option<&str>, tls: bool| {
            l.select(&ConnMeta {
                destination: dst.parse().unwrap(),
                source: "127.0.0.1:1".parse().unwrap(),
                tls,
                sni,
                alpn: &[],
            })
            .map(|c| c.name.clone())
        };
        assert_eq!(
            pick("10.0.0.5:9080", None, false).as_deref(),
            Some("port-host")
        );
        assert_eq!(
            pick("10.9.0.5:9080", None, false).as_deref(),
            Some("port-subnet")
        );
        assert_eq!(
            pick("192.168.0.1:9080", None, false).as_deref(),
            Some("port")
        );
        assert_eq!(
            pick("192.168.0.1:1", None, false).as_deref(),
            Some("any-port")
        );
        assert_eq!(
            pick("1.1.1.1:443", Some("a.example.com"), true).as_deref(),
            Some("tls-exact")
        );
        assert_eq!(
            pick("1.1.1.1:443", Some("b.example.com"), true).as_deref(),
            Some("tls-wild")
        );
        assert_eq!(
            pick("1.1.1.1:443", Some("other.org"), true).as_deref(),
            Some("any-port")
        );
    }

    #[test]
    fn service_labels_from_fqdn() {
        let s = service_labels("reviews.default.svc.cluster.local");
        assert_eq!(
            (s.name.as_str(), s.namespace.as_str()),
            ("reviews", "default")
        );
        let e = service_labels("api.example.com");
        assert_eq!(
            (e.name.as_str(), e.namespace.as_str()),
            ("api.example.com", "")
        );
    }
}
