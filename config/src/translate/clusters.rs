//! Services + DestinationRules -> outbound clusters (one per port, plus one per subset) and
//! their endpoints; the passthrough and blackhole clusters.

use std::collections::BTreeSet;

use halyard_crds::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection as IstioOutlier, SimpleLb,
    Subset, TrafficPolicy,
};

use super::Scope;
use super::routes::duration_ms;
use crate::ClusterName;
use crate::mesh::{Cfg, Resolution, ServiceInfo, host_matches, host_specificity, selector_matches};
use crate::resources::{
    Cluster, ClusterEndpoints, ConnectionPool, ConsistentHash, Endpoint, LoadBalancer,
    LocalityLoadBalancing, OutlierDetection, ProxyResources, RetryBudget, Secret, TlsCertificate,
    UpstreamTls, ValidationContext, cluster, connection_pool, consistent_hash, load_balancer,
    locality_load_balancing, secret, upstream_tls,
};

/// The workload certificate and mesh root, as Istio's SDS names them. The certificate
/// authority (not the translator) provides their content.
pub(crate) const WORKLOAD_CERT_SECRET: &str = "default";
pub(crate) const ROOT_CA_SECRET: &str = "ROOTCA";

/// The DestinationRule for `svc` as seen by this proxy: the proxy's namespace (a
/// workloadSelector match first), then the service's namespace, then the root namespace; within a
/// namespace the most specific host, then the oldest.
pub(crate) fn destination_rule_for<'m>(
    scope: &Scope<'m>,
    svc: &ServiceInfo,
) -> Option<&'m Cfg<DestinationRuleSpec>> {
    let model = scope.model;
    let candidates = |ns: &str, selected: bool| {
        let mut best: Option<(&'m Cfg<DestinationRuleSpec>, (bool, usize))> = None;
        for dr in &model.destination_rules {
            if dr.meta.namespace != ns || !dr.export_to.visible_to(scope.namespace) {
                continue;
            }
            let has_selector = dr
                .spec
                .workload_selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty());
            if has_selector != selected {
                continue;
            }
            if selected {
                let matches = ns == scope.namespace
                    && dr
                        .spec
                        .workload_selector
                        .as_ref()
                        .is_some_and(|s| selector_matches(&s.match_labels, scope.labels));
                if !matches {
                    continue;
                }
            }
            let Some(spec) = dr
                .hosts
                .iter()
                .filter(|h| host_matches(h, &svc.host))
                .map(|h| host_specificity(h))
                .max()
            else {
                continue;
            };
            if best.is_none_or(|(_, b)| spec > b) {
                best = Some((dr, spec));
            }
        }
        best.map(|(d, _)| d)
    };
    candidates(scope.namespace, true)
        .or_else(|| candidates(scope.namespace, false))
        .or_else(|| candidates(&svc.namespace, false))
        .or_else(|| candidates(&model.mesh.root_namespace, false))
}

/// Adds every outbound cluster (and endpoints) the proxy may use, plus the fixed clusters.
pub(crate) fn outbound(scope: &Scope<'_>, out: &mut ProxyResources) {
    for svc in scope.services() {
        let dr = destination_rule_for(scope, svc);
        for port in svc.ports.iter().filter(|p| scope.port_visible(svc, p.port)) {
            build(scope, svc, port.port, None, dr, out);
            if let Some(dr) = dr {
                for subset in &dr.spec.subsets {
                    build(scope, svc, port.port, Some(subset), Some(dr), out);
                }
            }
        }
    }
    out.clusters.push(Cluster {
        name: ClusterName::Passthrough.to_string(),
        r#type: cluster::DiscoveryType::OriginalDst as i32,
        connect_timeout_ms: scope.model.mesh.connect_timeout_ms,
        load_balancer: Some(LoadBalancer {
            policy: load_balancer::Policy::Passthrough as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    out.clusters.push(Cluster {
        name: ClusterName::BlackHole.to_string(),
        r#type: cluster::DiscoveryType::Blackhole as i32,
        ..Default::default()
    });
}

/// Top-level policy, overridden field by field by the port-level settings for `port`, then by
/// the subset's policy (and its port-level settings), as Istio merges them.
fn effective_policy(
    dr: Option<&Cfg<DestinationRuleSpec>>,
    subset: Option<&Subset>,
    port: u32,
) -> TrafficPolicy {
    fn apply(base: &mut TrafficPolicy, over: &TrafficPolicy, port: u32) {
        if over.connection_pool.is_some() {
            base.connection_pool = over.connection_pool.clone();
        }
        if over.load_balancer.is_some() {
            base.load_balancer = over.load_balancer.clone();
        }
        if over.outlier_detection.is_some() {
            base.outlier_detection = over.outlier_detection.clone();
        }
        if over.tls.is_some() {
            base.tls = over.tls.clone();
        }
        if over.retry_budget.is_some() {
            base.retry_budget = over.retry_budget.clone();
        }
        for pl in &over.port_level_settings {
            if pl.port.as_ref().and_then(|p| p.number) != Some(port) {
                continue;
            }
            if pl.connection_pool.is_some() {
                base.connection_pool = pl.connection_pool.clone();
            }
            if pl.load_balancer.is_some() {
                base.load_balancer = pl.load_balancer.clone();
            }
            if pl.outlier_detection.is_some() {
                base.outlier_detection = pl.outlier_detection.clone();
            }
            if pl.tls.is_some() {
                base.tls = pl.tls.clone();
            }
        }
    }
    let mut policy = TrafficPolicy::default();
    if let Some(top) = dr.and_then(|d| d.spec.traffic_policy.as_ref()) {
        apply(&mut policy, top, port);
    }
    if let Some(sub) = subset.and_then(|s| s.traffic_policy.as_ref()) {
        apply(&mut policy, sub, port);
    }
    policy
}

fn build(
    scope: &Scope<'_>,
    svc: &ServiceInfo,
    port: u32,
    subset: Option<&Subset>,
    dr: Option<&Cfg<DestinationRuleSpec>>,
    out: &mut ProxyResources,
) {
    let Some(sp) = svc.port(port) else { return };
    let subset_name = subset.map_or("", |s| s.name.as_str());
    let name = ClusterName::outbound(port, subset_name, &svc.host).to_string();
    let policy = effective_policy(dr, subset, port);
    let config = dr.map_or_else(|| svc.origin.clone(), |d| d.meta.origin.clone());
    let discovery = match svc.resolution {
        Resolution::Static => cluster::DiscoveryType::Eds,
        Resolution::Dns => cluster::DiscoveryType::StrictDns,
        Resolution::DnsRoundRobin => cluster::DiscoveryType::LogicalDns,
        Resolution::Passthrough => cluster::DiscoveryType::OriginalDst,
    };
    let http = policy
        .connection_pool
        .as_ref()
        .and_then(|c| c.http.as_ref());
    let upstream_protocol = if http.and_then(|h| h.use_client_protocol) == Some(true) {
        cluster::UpstreamProtocol::UseDownstream
    } else {
        match sp.protocol {
            crate::resources::Protocol::Http2 | crate::resources::Protocol::Grpc => {
                cluster::UpstreamProtocol::Http2
            }
            crate::resources::Protocol::Http => {
                // The DestinationRule's policy, else (unset or DEFAULT) the mesh's.
                let upgrade = match http.and_then(|h| h.h2_upgrade_policy) {
                    Some(H2UpgradePolicy::Upgrade) => true,
                    Some(H2UpgradePolicy::DoNotUpgrade) => false,
                    Some(H2UpgradePolicy::Default) | None => {
                        scope.model.mesh.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
                    }
                };
                if upgrade {
                    cluster::UpstreamProtocol::Http2
                } else {
                    cluster::UpstreamProtocol::Http1
                }
            }
            _ => cluster::UpstreamProtocol::UseDownstream,
        }
    };
    let connect_timeout_ms = policy
        .connection_pool
        .as_ref()
        .and_then(|c| c.tcp.as_ref())
        .map(|t| duration_ms(t.connect_timeout.as_deref()))
        .filter(|ms| *ms > 0)
        .unwrap_or(scope.model.mesh.connect_timeout_ms);

    let endpoints: Vec<Endpoint> = svc
        .endpoints
        .iter()
        .filter(|e| subset.is_none_or(|s| selector_matches(&s.labels, &e.labels)))
        .filter_map(|e| {
            Some(Endpoint {
                address: e.address.clone(),
                port: *e.ports.get(&port)?,
                labels: e.labels.clone(),
                locality: e.locality.clone(),
                weight: e.weight,
                health: e.health as i32,
                identity: e.identity.clone(),
                mesh_tls: e.mesh_tls,
                network: e.network.clone(),
            })
        })
        .collect();
    let identities: Vec<String> = if svc.subject_alt_names.is_empty() {
        endpoints
            .iter()
            .map(|e| e.identity.clone())
            .filter(|i| !i.is_empty())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        svc.subject_alt_names.clone()
    };
    let sni = format!("outbound_.{port}_.{subset_name}_.{}", svc.host);
    let tls = upstream_tls(
        scope,
        svc,
        policy.tls.as_ref(),
        &identities,
        &sni,
        &config,
        out,
    );

    out.clusters.push(Cluster {
        name: name.clone(),
        r#type: discovery as i32,
        service_host: svc.host.clone(),
        port,
        subset: subset_name.to_string(),
        protocol: sp.protocol as i32,
        upstream_protocol: upstream_protocol as i32,
        connect_timeout_ms,
        load_balancer: Some(load_balancer(
            policy.load_balancer.as_ref(),
            scope.model.mesh.locality_lb_setting.as_ref(),
        )),
        connection_pool: policy.connection_pool.as_ref().map(connection_pool),
        outlier_detection: policy.outlier_detection.as_ref().map(outlier),
        tls: Some(tls),
        retry_budget: policy.retry_budget.as_ref().map(|b| RetryBudget {
            percent: b.percent.unwrap_or(20.0),
            min_retry_concurrency: b.min_retry_concurrency.unwrap_or(3),
        }),
        config: config.clone(),
    });
    if discovery != cluster::DiscoveryType::OriginalDst {
        out.endpoints.push(ClusterEndpoints {
            cluster_name: name,
            endpoints,
            config: svc.origin.clone(),
        });
    }
}

/// The cluster's load balancer; `mesh_locality` (MeshConfig `localityLbSetting`) applies when
/// the DestinationRule sets no `localityLbSetting` (Istio: the rule's replaces the mesh's whole).
fn load_balancer(
    lb: Option<&LoadBalancerSettings>,
    mesh_locality: Option<&LocalityLoadBalancerSetting>,
) -> LoadBalancer {
    let Some(lb) = lb else {
        return LoadBalancer {
            locality: mesh_locality.map(locality_lb),
            ..LoadBalancer::default()
        };
    };
    let mut out = LoadBalancer {
        policy: match lb.simple {
            Some(SimpleLb::RoundRobin) => load_balancer::Policy::RoundRobin,
            Some(SimpleLb::Random) => load_balancer::Policy::Random,
            Some(SimpleLb::Passthrough) => load_balancer::Policy::Passthrough,
            Some(SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified) | None => {
                load_balancer::Policy::LeastRequest
            }
        } as i32,
        warmup_duration_ms: duration_ms(lb.warmup_duration_secs.as_deref())
            .max(duration_ms(lb.warmup.as_ref().map(|w| w.duration.as_str()))),
        ..Default::default()
    };
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            Some(consistent_hash::Key::HttpHeaderName(h.clone()))
        } else if let Some(c) = &ch.http_cookie {
            Some(consistent_hash::Key::HttpCookie(consistent_hash::Cookie {
                name: c.name.clone(),
                path: c.path.clone().unwrap_or_default(),
                ttl_ms: duration_ms(c.ttl.as_deref()),
            }))
        } else if ch.use_source_ip == Some(true) {
            Some(consistent_hash::Key::UseSourceIp(true))
        } else {
            ch.http_query_parameter_name
                .clone()
                .map(consistent_hash::Key::HttpQueryParameterName)
        };
        let maglev = ch.maglev.is_some();
        out.policy = if maglev {
            load_balancer::Policy::Maglev as i32
        } else {
            load_balancer::Policy::RingHash as i32
        };
        out.consistent_hash = Some(ConsistentHash {
            key,
            minimum_ring_size: ch
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .unwrap_or(if maglev { 0 } else { 1024 }),
            table_size: ch
                .maglev
                .as_ref()
                .and_then(|m| m.table_size)
                .unwrap_or(if maglev { 65537 } else { 0 }),
        });
    }
    out.locality = lb
        .locality_lb_setting
        .as_ref()
        .or(mesh_locality)
        .map(locality_lb);
    out
}

fn locality_lb(l: &LocalityLoadBalancerSetting) -> LocalityLoadBalancing {
    LocalityLoadBalancing {
        enabled: l.enabled.unwrap_or(true),
        distribute: l
            .distribute
            .iter()
            .map(|d| locality_load_balancing::Distribute {
                from: d.from.clone().unwrap_or_default(),
                to: d.to.clone(),
            })
            .collect(),
        failover: l
            .failover
            .iter()
            .map(|f| locality_load_balancing::Failover {
                from: f.from.clone().unwrap_or_default(),
                to: f.to.clone().unwrap_or_default(),
            })
            .collect(),
        failover_priority: l.failover_priority.clone(),
    }
}

fn non_negative(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

fn connection_pool(c: &ConnectionPoolSettings) -> ConnectionPool {
    ConnectionPool {
        tcp: c.tcp.as_ref().map(|t| connection_pool::Tcp {
            max_connections: non_negative(t.max_connections),
            connect_timeout_ms: duration_ms(t.connect_timeout.as_deref()),
            keepalive_probes: t.tcp_keepalive.as_ref().and_then(|k| k.probes).unwrap_or(0),
            keepalive_time_ms: duration_ms(
                t.tcp_keepalive.as_ref().and_then(|k| k.time.as_deref()),
            ),
            keepalive_interval_ms: duration_ms(
                t.tcp_keepalive.as_ref().and_then(|k| k.interval.as_deref()),
            ),
            max_connection_duration_ms: duration_ms(t.max_connection_duration.as_deref()),
            idle_timeout_ms: duration_ms(t.idle_timeout.as_deref()),
        }),
        http: c.http.as_ref().map(|h| connection_pool::Http {
            http1_max_pending_requests: non_negative(h.http1_max_pending_requests),
            http2_max_requests: non_negative(h.http2_max_requests),
            max_requests_per_connection: non_negative(h.max_requests_per_connection),
            max_retries: non_negative(h.max_retries),
            idle_timeout_ms: duration_ms(h.idle_timeout.as_deref()),
            h2_upgrade_policy: match h.h2_upgrade_policy {
                Some(H2UpgradePolicy::Upgrade) => connection_pool::http::H2UpgradePolicy::Upgrade,
                Some(H2UpgradePolicy::DoNotUpgrade) => {
                    connection_pool::http::H2UpgradePolicy::DoNotUpgrade
                }
                Some(H2UpgradePolicy::Default) | None => {
                    connection_pool::http::H2UpgradePolicy::Default
                }
            } as i32,
            use_client_protocol: h.use_client_protocol.unwrap_or(false),
            max_concurrent_streams: non_negative(h.max_concurrent_streams),
        }),
    }
}

fn outlier(o: &IstioOutlier) -> OutlierDetection {
    OutlierDetection {
        consecutive_errors: o.consecutive_errors.and_then(|v| u32::try_from(v).ok()),
        consecutive_gateway_errors: o.consecutive_gateway_errors,
        consecutive_5xx_errors: o.consecutive5xx_errors,
        split_external_local_origin_errors: o.split_external_local_origin_errors.unwrap_or(false),
        consecutive_local_origin_failures: o.consecutive_local_origin_failures,
        interval_ms: duration_ms(o.interval.as_deref()),
        base_ejection_time_ms: duration_ms(o.base_ejection_time.as_deref()),
        max_ejection_percent: o.max_ejection_percent.and_then(|v| u32::try_from(v).ok()),
        min_health_percent: non_negative(o.min_health_percent),
    }
}

/// Secret name for mounted files, emitting the Secret that points the proxy at them.
pub(crate) fn file_cert_secret(
    cert: &str,
    key: &str,
    config: &str,
    out: &mut ProxyResources,
) -> String {
    let name = format!("file-cert:{cert}~{key}");
    out.secrets.push(Secret {
        name: name.clone(),
        kind: Some(secret::Kind::TlsCertificate(TlsCertificate {
            certificate_chain_file: cert.to_string(),
            private_key_file: key.to_string(),
            ..Default::default()
        })),
        config: config.to_string(),
    });
    name
}

pub(crate) fn file_root_secret(ca: &str, config: &str, out: &mut ProxyResources) -> String {
    let name = format!("file-root:{ca}");
    out.secrets.push(Secret {
        name: name.clone(),
        kind: Some(secret::Kind::ValidationContext(ValidationContext {
            trusted_ca_file: ca.to_string(),
            ..Default::default()
        })),
        config: config.to_string(),
    });
    name
}

fn upstream_tls(
    scope: &Scope<'_>,
    svc: &ServiceInfo,
    tls: Option<&ClientTlsSettings>,
    identities: &[String],
    sni: &str,
    config: &str,
    out: &mut ProxyResources,
) -> UpstreamTls {
    let istio_mutual = |mode: upstream_tls::Mode| UpstreamTls {
        mode: mode as i32,
        sni: sni.to_string(),
        subject_alt_names: identities.to_vec(),
        certificate_secret: WORKLOAD_CERT_SECRET.to_string(),
        validation_secret: ROOT_CA_SECRET.to_string(),
        insecure_skip_verify: false,
        alpn: vec!["istio".to_string()],
    };
    let Some(tls) = tls.filter(|t| t.mode.is_some()) else {
        if !svc.mesh_external && scope.model.mesh.enable_auto_mtls {
            return istio_mutual(upstream_tls::Mode::AutoIstioMutual);
        }
        return UpstreamTls::default();
    };
    match tls.mode {
        Some(ClientTlsMode::IstioMutual) => {
            let mut t = istio_mutual(upstream_tls::Mode::IstioMutual);
            if !tls.subject_alt_names.is_empty() {
                t.subject_alt_names = tls.subject_alt_names.clone();
            }
            if let Some(sni) = &tls.sni {
                t.sni = sni.clone();
            }
            t
        }
        Some(mode @ (ClientTlsMode::Simple | ClientTlsMode::Mutual)) => {
            let mutual = mode == ClientTlsMode::Mutual;
            let (certificate_secret, validation_secret) = match &tls.credential_name {
                // The control plane's secret source serves `kubernetes://` names.
                Some(cred) => (
                    if mutual {
                        format!("kubernetes://{cred}")
                    } else {
                        String::new()
                    },
                    format!("kubernetes://{cred}-cacert"),
                ),
                None => {
                    let cert = match (&tls.client_certificate, &tls.private_key) {
                        (Some(c), Some(k)) if mutual => file_cert_secret(c, k, config, out),
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
            UpstreamTls {
                mode: if mutual {
                    upstream_tls::Mode::Mutual
                } else {
                    upstream_tls::Mode::Simple
                } as i32,
                sni: tls.sni.clone().unwrap_or_default(),
                subject_alt_names: tls.subject_alt_names.clone(),
                certificate_secret,
                validation_secret,
                insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
                alpn: Vec::new(),
            }
        }
        Some(ClientTlsMode::Disable) | None => UpstreamTls::default(),
    }
}
