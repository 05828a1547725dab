//! Listeners and route tables: sidecar outbound (capture 15001 or explicit local-mode
//! listeners), sidecar inbound (capture 15006 or explicit), and gateway listeners from Gateway
//! servers with their bound VirtualServices.

use std::collections::{BTreeMap, BTreeSet};

use halyard_crds::networking::{
    GatewaySpec, L4MatchAttributes, RouteDestination, Server, ServerTlsMode, TlsProtocol,
    VirtualServiceSpec,
};
use halyard_crds::security::MutualTlsMode;

use super::clusters::{ROOT_CA_SECRET, WORKLOAD_CERT_SECRET, file_cert_secret, file_root_secret};
use super::routes::{default_route, destination_cluster, http_routes};
use super::{Scope, binds_gateway, match_gateways_allow};
use crate::ClusterName;
use crate::discovery::{InterceptionMode, Node};
use crate::mesh::{
    Cfg, OutboundPolicy, ServiceInfo, TargetPort, explicit_protocol, host_matches, is_http,
    port_protocol, selector_matches,
};
use crate::resources::{
    Cluster, ClusterEndpoints, DirectResponseAction, DownstreamTls, Endpoint, FilterChain,
    FilterChainMatch, HttpConnectionManager, Listener, Protocol, ProxyResources, Route,
    RouteAction, RouteConfiguration, TcpProxy, VirtualHost, WeightedCluster, cluster,
    downstream_tls, filter_chain, filter_chain_match, http_connection_manager, listener, route,
};

pub(crate) const OUTBOUND_CAPTURE_PORT: u32 = 15001;
pub(crate) const INBOUND_CAPTURE_PORT: u32 = 15006;
const ANY_ADDRESS: &str = "0.0.0.0";

fn listener_name(address: &str, port: u32) -> String {
    format!("{address}_{port}")
}

fn http_chain(name: String, m: FilterChainMatch, route_name: String, stat: String) -> FilterChain {
    FilterChain {
        name,
        r#match: Some(m),
        tls: None,
        handler: Some(filter_chain::Handler::Http(HttpConnectionManager {
            route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfigName(
                route_name,
            )),
            stat_prefix: stat,
            ..Default::default()
        })),
        enforce_authorization: false,
        config: String::new(),
    }
}

fn tcp_chain(
    name: String,
    m: FilterChainMatch,
    clusters: Vec<WeightedCluster>,
    config: &str,
) -> FilterChain {
    FilterChain {
        r#match: Some(m),
        tls: None,
        handler: Some(filter_chain::Handler::Tcp(TcpProxy {
            stat_prefix: name.clone(),
            clusters,
            idle_timeout_ms: 0,
            config: config.to_string(),
        })),
        name,
        enforce_authorization: false,
        config: config.to_string(),
    }
}

fn one_cluster(name: String) -> Vec<WeightedCluster> {
    vec![WeightedCluster {
        name,
        weight: 100,
        ..Default::default()
    }]
}

/// `10.0.0.1` -> `10.0.0.1/32`; CIDRs stay.
fn prefix(addr: &str) -> String {
    if addr.contains('/') {
        addr.to_string()
    } else if addr.contains(':') {
        format!("{addr}/128")
    } else {
        format!("{addr}/32")
    }
}

/// Host names a sidecar in `scope` may use for `svc` on `port`: for hosts in the cluster domain
/// (`name.ns.svc.<suffix>`, Kubernetes Services and ServiceEntries alike) the short name (same
/// namespace only), `name.ns` and `name.ns.svc`; then the host and the VIPs; each with and
/// without port.
fn domains(scope: &Scope<'_>, svc: &ServiceInfo, port: u32) -> Vec<String> {
    let mut names = Vec::new();
    let cluster_domain = format!(".svc.{}", scope.model.mesh_config().domain_suffix);
    if let Some((name, ns)) = svc
        .host
        .strip_suffix(&cluster_domain)
        .and_then(|h| h.split_once('.'))
        .filter(|(_, ns)| !ns.contains('.'))
    {
        if ns == scope.namespace {
            names.push(name.to_string());
        }
        names.push(format!("{name}.{ns}"));
        names.push(format!("{name}.{ns}.svc"));
    }
    names.push(svc.host.clone());
    names.extend(svc.addresses.iter().filter(|a| !a.contains('/')).cloned());
    names
        .into_iter()
        .flat_map(|n| {
            let with_port = format!("{n}:{port}");
            [n, with_port]
        })
        .collect()
}

fn weighted(
    scope: &Scope<'_>,
    route: &[RouteDestination],
    vs_ns: &str,
    port: u32,
) -> Vec<WeightedCluster> {
    let single = route.len() == 1;
    route
        .iter()
        .map(|d| WeightedCluster {
            name: destination_cluster(scope, &d.destination, vs_ns, port),
            weight: if single {
                100
            } else {
                u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0)
            },
            ..Default::default()
        })
        .collect()
}

fn l4_match_applies(
    scope: &Scope<'_>,
    m: &L4MatchAttributes,
    vs_ns: &str,
    gateway: &str,
    port: u32,
) -> bool {
    match_gateways_allow(&m.gateways, vs_ns, gateway)
        && m.port.is_none_or(|p| p == port)
        && (m.source_labels.is_empty() || selector_matches(&m.source_labels, scope.labels))
        && m.source_namespace
            .as_deref()
            .is_none_or(|ns| ns == scope.namespace)
}

// ---------------------------------------------------------------------------------------------
// Sidecar outbound
// ---------------------------------------------------------------------------------------------

/// The route table `<port>` of a sidecar: one virtual host per HTTP service on that port, plus
/// Istio's catch-all (`allow_any` to PassthroughCluster, or `block_all` answering 502).
fn sidecar_route_config(
    scope: &Scope<'_>,
    port: u32,
    services: &[&ServiceInfo],
) -> RouteConfiguration {
    let mut used = BTreeSet::new();
    let mut virtual_hosts = Vec::new();
    for svc in services {
        let vs = scope
            .virtual_service_for(&svc.host, "mesh")
            .filter(|vs| !vs.spec.http.is_empty());
        let routes = match vs {
            Some(vs) => http_routes(scope, vs, "mesh", port),
            None => {
                let mut r = default_route(&svc.host, port);
                r.config = svc.origin.clone();
                vec![r]
            }
        };
        // A domain may appear in one virtual host only; the first service keeps it.
        let domains: Vec<String> = domains(scope, svc, port)
            .into_iter()
            .filter(|d| used.insert(d.clone()))
            .collect();
        virtual_hosts.push(VirtualHost {
            name: format!("{}:{port}", svc.host),
            domains,
            routes,
            require_tls: false,
            config: vs.map_or_else(|| svc.origin.clone(), |v| v.meta.origin.clone()),
        });
    }
    virtual_hosts.push(catch_all(scope.outbound_policy()));
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        config: String::new(),
    }
}

fn catch_all(policy: OutboundPolicy) -> VirtualHost {
    match policy {
        OutboundPolicy::AllowAny => VirtualHost {
            name: "allow_any".to_string(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "allow_any".to_string(),
                action: Some(route::Action::Route(RouteAction {
                    clusters: one_cluster(ClusterName::Passthrough.to_string()),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        },
        OutboundPolicy::RegistryOnly => VirtualHost {
            name: "block_all".to_string(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "block_all".to_string(),
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 502,
                    body: String::new(),
                })),
                ..Default::default()
            }],
            ..Default::default()
        },
    }
}

/// Chains for one non-HTTP service port: VirtualService tls (by SNI) and tcp routes, then the
/// service's own cluster.
fn tcp_service_chains(scope: &Scope<'_>, svc: &ServiceInfo, port: u32) -> Vec<FilterChain> {
    let vips: Vec<String> = svc.addresses.iter().map(|a| prefix(a)).collect();
    let base = ClusterName::outbound(port, "", &svc.host).to_string();
    let mut chains = Vec::new();
    let vs = scope.virtual_service_for(&svc.host, "mesh");
    let mut covered = false;
    if let Some(vs) = vs {
        let ns = vs.meta.namespace.as_str();
        for (i, r) in vs.spec.tls.iter().enumerate() {
            for (j, m) in r.r#match.iter().enumerate() {
                if !match_gateways_allow(&m.gateways, ns, "mesh")
                    || m.port.is_some_and(|p| p != port)
                    || !(m.source_labels.is_empty()
                        || selector_matches(&m.source_labels, scope.labels))
                {
                    continue;
                }
                let prefixes = if m.destination_subnets.is_empty() {
                    vips.clone()
                } else {
                    m.destination_subnets.iter().map(|s| prefix(s)).collect()
                };
                chains.push(tcp_chain(
                    format!("{base}#tls{i}.{j}"),
                    FilterChainMatch {
                        destination_ports: vec![port],
                        destination_prefixes: prefixes,
                        server_names: m.sni_hosts.clone(),
                        transport: filter_chain_match::Transport::Tls as i32,
                        ..Default::default()
                    },
                    weighted(scope, &r.route, ns, port),
                    &vs.meta.origin,
                ));
            }
        }
        'routes: for (i, r) in vs.spec.tcp.iter().enumerate() {
            if r.r#match.is_empty() {
                chains.push(tcp_chain(
                    format!("{base}#tcp{i}"),
                    FilterChainMatch {
                        destination_ports: vec![port],
                        destination_prefixes: vips.clone(),
                        ..Default::default()
                    },
                    weighted(scope, &r.route, ns, port),
                    &vs.meta.origin,
                ));
                covered = true;
                break 'routes;
            }
            for (j, m) in r.r#match.iter().enumerate() {
                if !l4_match_applies(scope, m, ns, "mesh", port) {
                    continue;
                }
                let subnets = !m.destination_subnets.is_empty();
                chains.push(tcp_chain(
                    format!("{base}#tcp{i}.{j}"),
                    FilterChainMatch {
                        destination_ports: vec![port],
                        destination_prefixes: if subnets {
                            m.destination_subnets.iter().map(|s| prefix(s)).collect()
                        } else {
                            vips.clone()
                        },
                        source_prefixes: m.source_subnet.iter().map(|s| prefix(s)).collect(),
                        ..Default::default()
                    },
                    weighted(scope, &r.route, ns, port),
                    &vs.meta.origin,
                ));
                if !subnets && m.source_subnet.is_none() {
                    covered = true;
                    break 'routes;
                }
            }
        }
    }
    if !covered {
        chains.push(tcp_chain(
            base.clone(),
            FilterChainMatch {
                destination_ports: vec![port],
                destination_prefixes: vips,
                ..Default::default()
            },
            one_cluster(base),
            &svc.origin,
        ));
    }
    chains
}

fn passthrough_chain(policy: OutboundPolicy) -> FilterChain {
    let cluster = match policy {
        OutboundPolicy::AllowAny => ClusterName::Passthrough,
        OutboundPolicy::RegistryOnly => ClusterName::BlackHole,
    };
    tcp_chain(
        cluster.to_string(),
        FilterChainMatch::default(),
        one_cluster(cluster.to_string()),
        "",
    )
}

pub(crate) fn outbound(scope: &Scope<'_>, out: &mut ProxyResources) {
    // Port -> HTTP services on it, in host order.
    let mut http_ports: BTreeMap<u32, Vec<&ServiceInfo>> = BTreeMap::new();
    let mut tcp_ports: Vec<(&ServiceInfo, u32)> = Vec::new();
    for svc in scope.services() {
        for p in svc.ports.iter().filter(|p| scope.port_visible(svc, p.port)) {
            if is_http(p.protocol) {
                http_ports.entry(p.port).or_default().push(svc);
            } else {
                tcp_ports.push((svc, p.port));
            }
        }
    }
    for (port, services) in &http_ports {
        out.route_configs
            .push(sidecar_route_config(scope, *port, services));
    }

    let explicit = scope.node.interception_mode() == InterceptionMode::None;
    if !explicit {
        let mut chains = Vec::new();
        for port in http_ports.keys() {
            chains.push(http_chain(
                listener_name(ANY_ADDRESS, *port),
                FilterChainMatch {
                    destination_ports: vec![*port],
                    ..Default::default()
                },
                port.to_string(),
                format!("outbound_0.0.0.0_{port}"),
            ));
        }
        for (svc, port) in &tcp_ports {
            chains.extend(tcp_service_chains(scope, svc, *port));
        }
        out.listeners.push(Listener {
            name: listener_name(ANY_ADDRESS, OUTBOUND_CAPTURE_PORT),
            address: ANY_ADDRESS.to_string(),
            port: OUTBOUND_CAPTURE_PORT,
            direction: listener::Direction::Outbound as i32,
            use_original_dst: true,
            filter_chains: chains,
            default_chain: Some(passthrough_chain(scope.outbound_policy())),
            config: String::new(),
            locality: String::new(),
        });
        return;
    }

    // Local mode: explicit listeners, on the node's bind address or on each service VIP.
    let bind = scope.node.local_bind_address.as_str();
    let explicit_listener =
        |address: &str, port: u32, chain: FilterChain, out: &mut ProxyResources| {
            out.listeners.push(Listener {
                name: listener_name(address, port),
                address: address.to_string(),
                port,
                direction: listener::Direction::Outbound as i32,
                use_original_dst: false,
                filter_chains: vec![chain],
                default_chain: None,
                config: String::new(),
                locality: String::new(),
            });
        };
    let http_chain_for = |address: &str, port: u32| {
        http_chain(
            listener_name(address, port),
            FilterChainMatch::default(),
            port.to_string(),
            format!("outbound_{address}_{port}"),
        )
    };
    let tcp_chain_for = |svc: &ServiceInfo, port: u32| {
        // An explicit listener has no original destination, SNI or subnet to match on: it takes
        // the service's catch-all, which `tcp_service_chains` always lists last (the first
        // unconditional tcp route, else the service's own cluster).
        let mut chain = tcp_service_chains(scope, svc, port)
            .pop()
            .unwrap_or_else(|| passthrough_chain(OutboundPolicy::RegistryOnly));
        chain.r#match = None;
        chain
    };
    if bind.is_empty() {
        for (port, services) in &http_ports {
            for svc in services {
                for vip in svc.addresses.iter().filter(|a| !a.contains('/')) {
                    explicit_listener(vip, *port, http_chain_for(vip, *port), out);
                }
            }
        }
        for (svc, port) in &tcp_ports {
            for vip in svc.addresses.iter().filter(|a| !a.contains('/')) {
                explicit_listener(vip, *port, tcp_chain_for(svc, *port), out);
            }
        }
    } else {
        for port in http_ports.keys() {
            explicit_listener(bind, *port, http_chain_for(bind, *port), out);
        }
        for (svc, port) in &tcp_ports {
            // One listener per port: an HTTP service or the first TCP service keeps it.
            if http_ports.contains_key(port)
                || out
                    .listeners
                    .iter()
                    .any(|l| l.name == listener_name(bind, *port))
            {
                continue;
            }
            explicit_listener(bind, *port, tcp_chain_for(svc, *port), out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sidecar inbound
// ---------------------------------------------------------------------------------------------

struct WorkloadPort {
    port: u32,
    protocol: Protocol,
    config: String,
}

/// The ports the workload serves: target ports of the Services selecting it, then the ports
/// the node declares (local mode).
fn workload_ports(scope: &Scope<'_>) -> Vec<WorkloadPort> {
    let pod_name = scope
        .node
        .id
        .strip_suffix(&format!(".{}", scope.namespace))
        .unwrap_or(&scope.node.id);
    let pod = scope
        .model
        .pods
        .get(&(scope.namespace.to_string(), pod_name.to_string()));
    let mut out: Vec<WorkloadPort> = Vec::new();
    for svc in &scope.model.services {
        let selects = svc.kube_name.is_some()
            && svc.namespace == scope.namespace
            && svc
                .selector
                .as_ref()
                .is_some_and(|s| !s.is_empty() && selector_matches(s, scope.labels));
        if !selects {
            continue;
        }
        for p in &svc.ports {
            let target = match &p.target {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(name) => {
                    pod.and_then(|pod| pod.container_ports.get(name).copied())
                }
            };
            if let Some(port) = target
                && !out.iter().any(|w| w.port == port)
            {
                out.push(WorkloadPort {
                    port,
                    protocol: p.protocol,
                    config: svc.origin.clone(),
                });
            }
        }
    }
    for wp in &scope.node.workload_ports {
        if !out.iter().any(|w| w.port == wp.port) {
            out.push(WorkloadPort {
                port: wp.port,
                protocol: explicit_protocol(&wp.protocol)
                    .unwrap_or_else(|| port_protocol(&wp.name, None)),
                config: String::new(),
            });
        }
    }
    out.sort_by_key(|w| w.port);
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerMode {
    Strict,
    Permissive,
    Disable,
}

/// PeerAuthentication for the workload (and one port): root namespace, then namespace, then the
/// workload's own policy, each overriding the previous unless UNSET; port-level last.
fn peer_mode(scope: &Scope<'_>, port: Option<u32>) -> PeerMode {
    let m = scope.model;
    let apply = |mode: Option<MutualTlsMode>, cur: PeerMode| match mode {
        Some(MutualTlsMode::Strict) => PeerMode::Strict,
        Some(MutualTlsMode::Permissive) => PeerMode::Permissive,
        Some(MutualTlsMode::Disable) => PeerMode::Disable,
        Some(MutualTlsMode::Unset) | None => cur,
    };
    let no_selector = |pa: &&Cfg<halyard_crds::security::PeerAuthenticationSpec>| {
        pa.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let mut mode = PeerMode::Permissive;
    if let Some(pa) = m
        .peer_authentications
        .iter()
        .filter(|p| p.meta.namespace == m.mesh.root_namespace)
        .find(no_selector)
    {
        mode = apply(pa.spec.mtls.as_ref().and_then(|t| t.mode), mode);
    }
    if scope.namespace != m.mesh.root_namespace
        && let Some(pa) = m
            .peer_authentications
            .iter()
            .filter(|p| p.meta.namespace == scope.namespace)
            .find(no_selector)
    {
        mode = apply(pa.spec.mtls.as_ref().and_then(|t| t.mode), mode);
    }
    let workload = m.peer_authentications.iter().find(|p| {
        p.meta.namespace == scope.namespace
            && p.spec.selector.as_ref().is_some_and(|s| {
                !s.match_labels.is_empty() && selector_matches(&s.match_labels, scope.labels)
            })
    });
    if let Some(pa) = workload {
        mode = apply(pa.spec.mtls.as_ref().and_then(|t| t.mode), mode);
        if let Some(pl) = port.and_then(|p| pa.spec.port_level_mtls.get(&p.to_string())) {
            mode = apply(pl.mode, mode);
        }
    }
    mode
}

fn istio_mtls(alpn: Vec<String>) -> DownstreamTls {
    DownstreamTls {
        mode: downstream_tls::Mode::IstioMutual as i32,
        certificate_secret: WORKLOAD_CERT_SECRET.to_string(),
        validation_secret: ROOT_CA_SECRET.to_string(),
        alpn,
        ..Default::default()
    }
}

/// mTLS and/or plaintext variants of a chain per PeerAuthentication mode.
fn peer_chains(
    mode: PeerMode,
    name: &str,
    ports: Vec<u32>,
    handler: filter_chain::Handler,
    config: &str,
) -> Vec<FilterChain> {
    let chain = |suffix: &str,
                 transport: filter_chain_match::Transport,
                 alpn: Vec<String>,
                 tls: Option<DownstreamTls>| FilterChain {
        name: format!("{name}{suffix}"),
        r#match: Some(FilterChainMatch {
            destination_ports: ports.clone(),
            transport: transport as i32,
            application_protocols: alpn,
            ..Default::default()
        }),
        tls,
        handler: Some(handler.clone()),
        enforce_authorization: true,
        config: config.to_string(),
    };
    let server_alpn = vec![
        "istio".to_string(),
        "h2".to_string(),
        "http/1.1".to_string(),
    ];
    match mode {
        PeerMode::Strict => vec![chain(
            "#mtls",
            filter_chain_match::Transport::Tls,
            Vec::new(),
            Some(istio_mtls(server_alpn)),
        )],
        // Mesh clients announce ALPN `istio`; other TLS (the app's own) passes through as bytes.
        PeerMode::Permissive => vec![
            chain(
                "#mtls",
                filter_chain_match::Transport::Tls,
                vec!["istio".to_string()],
                Some(istio_mtls(server_alpn)),
            ),
            chain(
                "#plaintext",
                filter_chain_match::Transport::Any,
                Vec::new(),
                None,
            ),
        ],
        PeerMode::Disable => vec![chain(
            "#plaintext",
            filter_chain_match::Transport::Any,
            Vec::new(),
            None,
        )],
    }
}

/// Where the inbound clusters deliver to: the configured app address; else, with capture, the
/// pod's own IP as Istio does since 1.10 (apps bound only to it are reachable; the proxy connects
/// from the passthrough source 127.0.0.6, which the capture rules let through); else loopback.
/// Local mode's node IPs are the proxy's own inbound addresses, never the app's.
fn inbound_app_address(node: &Node, explicit: bool) -> String {
    let pod_ip = node
        .ip_addresses
        .iter()
        .map(|ip| ip.trim())
        .find(|ip| ip.parse::<std::net::IpAddr>().is_ok());
    match (node.app_address.trim(), pod_ip) {
        (configured, _) if !configured.is_empty() => configured.to_string(),
        ("", Some(ip)) if !explicit => ip.to_string(),
        _ => "127.0.0.1".to_string(),
    }
}

pub(crate) fn inbound(scope: &Scope<'_>, out: &mut ProxyResources) {
    let explicit = scope.node.interception_mode() == InterceptionMode::None;
    let app_address = inbound_app_address(scope.node, explicit);
    let pod_name = scope
        .node
        .id
        .strip_suffix(&format!(".{}", scope.namespace))
        .unwrap_or(&scope.node.id);
    let locality =
        scope
            .model
            .workload_locality(scope.namespace, pod_name, &scope.node.ip_addresses);
    let mut capture_chains = Vec::new();
    for wp in workload_ports(scope) {
        let cluster_name = ClusterName::Inbound { port: wp.port }.to_string();
        let handler = if is_http(wp.protocol) {
            filter_chain::Handler::Http(HttpConnectionManager {
                route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
                    RouteConfiguration {
                        name: cluster_name.clone(),
                        virtual_hosts: vec![VirtualHost {
                            name: format!("inbound|http|{}", wp.port),
                            domains: vec!["*".to_string()],
                            routes: vec![Route {
                                name: "default".to_string(),
                                action: Some(route::Action::Route(RouteAction {
                                    clusters: one_cluster(cluster_name.clone()),
                                    ..Default::default()
                                })),
                                config: wp.config.clone(),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        config: wp.config.clone(),
                    },
                )),
                stat_prefix: format!("inbound_0.0.0.0_{}", wp.port),
                ..Default::default()
            })
        } else {
            filter_chain::Handler::Tcp(TcpProxy {
                stat_prefix: cluster_name.clone(),
                clusters: one_cluster(cluster_name.clone()),
                idle_timeout_ms: 0,
                config: wp.config.clone(),
            })
        };
        let mode = peer_mode(scope, Some(wp.port));
        out.clusters.push(Cluster {
            name: cluster_name.clone(),
            r#type: cluster::DiscoveryType::Static as i32,
            port: wp.port,
            protocol: wp.protocol as i32,
            upstream_protocol: match wp.protocol {
                Protocol::Http2 | Protocol::Grpc => cluster::UpstreamProtocol::Http2,
                Protocol::Http => cluster::UpstreamProtocol::Http1,
                _ => cluster::UpstreamProtocol::UseDownstream,
            } as i32,
            connect_timeout_ms: scope.model.mesh.connect_timeout_ms,
            config: wp.config.clone(),
            ..Default::default()
        });
        out.endpoints.push(ClusterEndpoints {
            cluster_name: cluster_name.clone(),
            endpoints: vec![Endpoint {
                address: app_address.clone(),
                port: wp.port,
                weight: 1,
                ..Default::default()
            }],
            config: wp.config.clone(),
        });
        if explicit {
            let address = scope
                .node
                .ip_addresses
                .first()
                .cloned()
                .unwrap_or_else(|| ANY_ADDRESS.to_string());
            out.listeners.push(Listener {
                name: listener_name(&address, wp.port),
                address,
                port: wp.port,
                direction: listener::Direction::Inbound as i32,
                use_original_dst: false,
                filter_chains: peer_chains(mode, &cluster_name, Vec::new(), handler, &wp.config),
                default_chain: None,
                config: wp.config.clone(),
                locality: locality.clone(),
            });
        } else {
            capture_chains.extend(peer_chains(
                mode,
                &cluster_name,
                vec![wp.port],
                handler,
                &wp.config,
            ));
        }
    }
    if explicit {
        return;
    }
    out.clusters.push(Cluster {
        name: ClusterName::InboundPassthrough.to_string(),
        r#type: cluster::DiscoveryType::OriginalDst as i32,
        connect_timeout_ms: scope.model.mesh.connect_timeout_ms,
        ..Default::default()
    });
    // Ports no Service declares: straight to the original destination, same peer rules.
    let passthrough = filter_chain::Handler::Tcp(TcpProxy {
        stat_prefix: ClusterName::InboundPassthrough.to_string(),
        clusters: one_cluster(ClusterName::InboundPassthrough.to_string()),
        idle_timeout_ms: 0,
        config: String::new(),
    });
    let mut pass = peer_chains(
        peer_mode(scope, None),
        &ClusterName::InboundPassthrough.to_string(),
        Vec::new(),
        passthrough,
        "",
    );
    // The plaintext variant, if any, is the listener's fallback.
    let default_chain = pass
        .iter()
        .position(|c| c.tls.is_none())
        .map(|i| pass.remove(i))
        .map(|mut c| {
            c.r#match = None;
            c
        });
    capture_chains.extend(pass);
    out.listeners.push(Listener {
        name: listener_name(ANY_ADDRESS, INBOUND_CAPTURE_PORT),
        address: ANY_ADDRESS.to_string(),
        port: INBOUND_CAPTURE_PORT,
        direction: listener::Direction::Inbound as i32,
        use_original_dst: true,
        filter_chains: capture_chains,
        default_chain,
        config: String::new(),
        locality,
    });
}

// ---------------------------------------------------------------------------------------------
// Gateways
// ---------------------------------------------------------------------------------------------

/// Splits a Gateway server host `ns/host` (namespace `*`, `.` or a name; none = any).
fn server_host<'a>(entry: &'a str, gw_ns: &str) -> (Option<String>, &'a str) {
    match entry.split_once('/') {
        Some(("*", h)) => (None, h),
        Some((".", h)) => (Some(gw_ns.to_string()), h),
        Some((ns, h)) => (Some(ns.to_string()), h),
        None => (None, entry),
    }
}

/// The domains a VirtualService contributes to a server: the intersection of its hosts with
/// the server's hosts (the more specific of each matching pair).
fn gateway_domains(vs: &Cfg<VirtualServiceSpec>, server: &Server, gw_ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in &server.hosts {
        let (ns, pattern) = server_host(entry, gw_ns);
        if ns.as_deref().is_some_and(|ns| ns != vs.meta.namespace) {
            continue;
        }
        for h in &vs.hosts {
            let d = if host_matches(pattern, h) {
                h.clone()
            } else if host_matches(h, pattern) {
                pattern.to_string()
            } else {
                continue;
            };
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

fn gateway_virtual_hosts(
    scope: &Scope<'_>,
    gw: &Cfg<GatewaySpec>,
    gw_name: &str,
    server: &Server,
    listen_port: u32,
    used: &mut BTreeSet<String>,
) -> Vec<VirtualHost> {
    let mut out = Vec::new();
    let https_redirect = server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true);
    for vs in &scope.model.virtual_services {
        if !binds_gateway(vs, gw_name)
            || !scope.virtual_service_visible(vs)
            || vs.spec.http.is_empty()
        {
            continue;
        }
        for domain in gateway_domains(vs, server, &gw.meta.namespace) {
            // Oldest VirtualService keeps a domain (conflicts are reported by the model).
            if !used.insert(domain.clone()) {
                continue;
            }
            let domains = if domain == "*" {
                vec!["*".to_string()]
            } else {
                vec![domain.clone(), format!("{domain}:{listen_port}")]
            };
            out.push(VirtualHost {
                name: format!("{domain}:{listen_port}"),
                domains,
                routes: http_routes(scope, vs, gw_name, server.port.number),
                require_tls: https_redirect,
                config: vs.meta.origin.clone(),
            });
        }
    }
    out
}

fn tls_version(v: Option<TlsProtocol>) -> String {
    match v {
        Some(TlsProtocol::Tlsv10) => "TLSV1_0",
        Some(TlsProtocol::Tlsv11) => "TLSV1_1",
        Some(TlsProtocol::Tlsv12) => "TLSV1_2",
        Some(TlsProtocol::Tlsv13) => "TLSV1_3",
        Some(TlsProtocol::TlsAuto) | None => "",
    }
    .to_string()
}

/// TLS a gateway server terminates; `None` for passthrough or plaintext.
fn server_tls(server: &Server, config: &str, out: &mut ProxyResources) -> Option<DownstreamTls> {
    let tls = server.tls.as_ref()?;
    let mode = match tls.mode? {
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => return None,
        ServerTlsMode::Simple => downstream_tls::Mode::Simple,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => downstream_tls::Mode::Mutual,
        ServerTlsMode::IstioMutual => {
            return Some(istio_mtls(vec!["h2".to_string(), "http/1.1".to_string()]));
        }
    };
    let credential = tls
        .credential_name
        .clone()
        .or_else(|| tls.credential_names.first().cloned());
    let (certificate_secret, validation_secret) = match credential {
        Some(cred) => (
            format!("kubernetes://{cred}"),
            if mode == downstream_tls::Mode::Mutual {
                tls.ca_cert_credential_name.clone().map_or_else(
                    || format!("kubernetes://{cred}-cacert"),
                    |c| format!("kubernetes://{c}"),
                )
            } else {
                String::new()
            },
        ),
        None => {
            let cert = match (&tls.server_certificate, &tls.private_key) {
                (Some(c), Some(k)) => file_cert_secret(c, k, config, out),
                _ => String::new(),
            };
            let ca = tls
                .ca_certificates
                .as_deref()
                .map(|ca| file_root_secret(ca, config, out))
                .unwrap_or_default();
            (cert, ca)
        }
    };
    Some(DownstreamTls {
        mode: mode as i32,
        certificate_secret,
        validation_secret,
        subject_alt_names: tls.subject_alt_names.clone(),
        alpn: vec!["h2".to_string(), "http/1.1".to_string()],
        min_protocol_version: tls_version(tls.min_protocol_version),
        max_protocol_version: tls_version(tls.max_protocol_version),
        cipher_suites: tls.cipher_suites.clone(),
    })
}

fn server_names(server: &Server, gw_ns: &str) -> Vec<String> {
    server
        .hosts
        .iter()
        .map(|h| server_host(h, gw_ns).1.to_string())
        .filter(|h| h != "*")
        .collect()
}

/// TCP/TLS routes of VirtualServices bound to the gateway, for a server on `port`.
fn gateway_l4_chains(
    scope: &Scope<'_>,
    gw: &Cfg<GatewaySpec>,
    gw_name: &str,
    server: &Server,
    tls: Option<DownstreamTls>,
    passthrough: bool,
) -> Vec<FilterChain> {
    let port = server.port.number;
    let mut chains = Vec::new();
    for vs in &scope.model.virtual_services {
        if !binds_gateway(vs, gw_name) || !scope.virtual_service_visible(vs) {
            continue;
        }
        if gateway_domains(vs, server, &gw.meta.namespace).is_empty() {
            continue;
        }
        let ns = vs.meta.namespace.as_str();
        if passthrough {
            for (i, r) in vs.spec.tls.iter().enumerate() {
                for (j, m) in r.r#match.iter().enumerate() {
                    if !match_gateways_allow(&m.gateways, ns, gw_name)
                        || m.port.is_some_and(|p| p != port)
                    {
                        continue;
                    }
                    chains.push(tcp_chain(
                        format!("{}#{}/{}#tls{i}.{j}", port, vs.meta.namespace, vs.meta.name),
                        FilterChainMatch {
                            server_names: m.sni_hosts.clone(),
                            transport: filter_chain_match::Transport::Tls as i32,
                            ..Default::default()
                        },
                        weighted(scope, &r.route, ns, port),
                        &vs.meta.origin,
                    ));
                }
            }
        } else {
            let found = vs.spec.tcp.iter().enumerate().find(|(_, r)| {
                r.r#match.is_empty()
                    || r.r#match
                        .iter()
                        .any(|m| l4_match_applies(scope, m, ns, gw_name, port))
            });
            if let Some((i, r)) = found {
                let mut c = tcp_chain(
                    format!("{}#{}/{}#tcp{i}", port, vs.meta.namespace, vs.meta.name),
                    FilterChainMatch {
                        server_names: if tls.is_some() {
                            server_names(server, &gw.meta.namespace)
                        } else {
                            Vec::new()
                        },
                        ..Default::default()
                    },
                    weighted(scope, &r.route, ns, port),
                    &vs.meta.origin,
                );
                c.tls = tls.clone();
                c.enforce_authorization = true;
                chains.push(c);
                // One TCP destination per server: the first bound VirtualService wins.
                break;
            }
        }
    }
    chains
}

/// Istio listens on the gateway Service's target port for a server port (Service port 80 ->
/// pod port 8080, so the gateway needs no privileged port); the server port when no Service of
/// the gateway's namespace selecting it maps the port.
fn gateway_target_port(scope: &Scope<'_>, port: u32) -> u32 {
    scope
        .model
        .services
        .iter()
        .filter(|s| {
            s.kube_name.is_some()
                && s.namespace == scope.namespace
                && s.selector
                    .as_ref()
                    .is_some_and(|sel| !sel.is_empty() && selector_matches(sel, scope.labels))
        })
        .filter_map(|s| s.port(port))
        .find_map(|p| match p.target {
            TargetPort::Number(n) => Some(n),
            TargetPort::Name(_) => None,
        })
        .unwrap_or(port)
}

pub(crate) fn gateway(scope: &Scope<'_>, out: &mut ProxyResources) {
    // Listen port -> (address, chains, plaintext HTTP virtual hosts).
    struct Port {
        address: String,
        chains: Vec<FilterChain>,
        http_hosts: Vec<VirtualHost>,
        http_used: BTreeSet<String>,
        config: String,
    }
    let mut ports: BTreeMap<u32, Port> = BTreeMap::new();
    for gi in &scope.gateways {
        let gw = &scope.model.gateways[*gi];
        let gw_name = format!("{}/{}", gw.meta.namespace, gw.meta.name);
        for server in &gw.spec.servers {
            let listen = server
                .port
                .target_port
                .unwrap_or_else(|| gateway_target_port(scope, server.port.number));
            let entry = ports.entry(listen).or_insert_with(|| Port {
                // Local mode: gateways sharing a host bind the node's address.
                address: server.bind.clone().unwrap_or_else(|| {
                    if scope.node.local_bind_address.is_empty() {
                        ANY_ADDRESS.to_string()
                    } else {
                        scope.node.local_bind_address.clone()
                    }
                }),
                chains: Vec::new(),
                http_hosts: Vec::new(),
                http_used: BTreeSet::new(),
                config: gw.meta.origin.clone(),
            });
            let protocol = explicit_protocol(&server.port.protocol).unwrap_or(Protocol::Tcp);
            let passthrough = server.tls.as_ref().and_then(|t| t.mode).is_some_and(|m| {
                matches!(
                    m,
                    ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                )
            });
            let tls = server_tls(server, &gw.meta.origin, out);
            if is_http(protocol) && tls.is_none() {
                let hosts = gateway_virtual_hosts(
                    scope,
                    gw,
                    &gw_name,
                    server,
                    listen,
                    &mut entry.http_used,
                );
                entry.http_hosts.extend(hosts);
            } else if (is_http(protocol) || protocol == Protocol::Https) && !passthrough {
                let route_name = format!(
                    "https.{}.{}.{}.{}",
                    server.port.number, server.port.name, gw.meta.name, gw.meta.namespace
                );
                let mut used = BTreeSet::new();
                let virtual_hosts =
                    gateway_virtual_hosts(scope, gw, &gw_name, server, listen, &mut used);
                out.route_configs.push(RouteConfiguration {
                    name: route_name.clone(),
                    virtual_hosts,
                    config: gw.meta.origin.clone(),
                });
                let mut chain = http_chain(
                    route_name.clone(),
                    FilterChainMatch {
                        server_names: server_names(server, &gw.meta.namespace),
                        transport: filter_chain_match::Transport::Tls as i32,
                        ..Default::default()
                    },
                    route_name,
                    format!("gateway_{listen}"),
                );
                if let Some(filter_chain::Handler::Http(h)) = chain.handler.as_mut() {
                    h.use_remote_address = true;
                }
                chain.tls = tls;
                chain.enforce_authorization = true;
                chain.config = gw.meta.origin.clone();
                entry.chains.push(chain);
            } else {
                entry.chains.extend(gateway_l4_chains(
                    scope,
                    gw,
                    &gw_name,
                    server,
                    tls,
                    passthrough,
                ));
            }
        }
    }
    for (listen, p) in ports {
        let mut chains = p.chains;
        if !p.http_hosts.is_empty() || chains.is_empty() {
            let route_name = format!("http.{listen}");
            out.route_configs.push(RouteConfiguration {
                name: route_name.clone(),
                virtual_hosts: p.http_hosts,
                config: p.config.clone(),
            });
            let mut chain = http_chain(
                route_name.clone(),
                FilterChainMatch::default(),
                route_name,
                format!("gateway_{listen}"),
            );
            if let Some(filter_chain::Handler::Http(h)) = chain.handler.as_mut() {
                h.use_remote_address = true;
            }
            chain.enforce_authorization = true;
            chain.config = p.config.clone();
            chains.push(chain);
        }
        out.listeners.push(Listener {
            name: listener_name(&p.address, listen),
            address: p.address,
            port: listen,
            direction: listener::Direction::Gateway as i32,
            use_original_dst: false,
            filter_chains: chains,
            default_chain: None,
            config: p.config,
            locality: String::new(),
        });
    }
}
