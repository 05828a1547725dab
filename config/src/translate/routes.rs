//! VirtualService http routes -> `Route`s (one per match, in order, as Istio generates them).

use halyard_crds::networking::{
    Destination, HttpMatchRequest, HttpRoute, RedirectPortSelection, StringMatch as IstioMatch,
    UnmatchedPreflights, VirtualServiceSpec,
};
use halyard_crds::validation::rules::{GRPC_STATUSES, parse_duration};

use super::{Scope, match_gateways_allow};
use crate::ClusterName;
use crate::mesh::{Cfg, selector_matches};
use crate::resources::{
    CorsPolicy, DirectResponseAction, FaultInjection, HeaderOperations, KeyValueMatch, Mirror,
    RedirectAction, RegexRewrite, RetryPolicy, Rewrite, Route, RouteAction, RouteMatch,
    StringMatch, WeightedCluster, fault_injection, redirect_action, route, string_match,
};

/// Istio's retry policy on every generated route without `retries`.
pub fn default_retry() -> RetryPolicy {
    RetryPolicy {
        num_retries: 2,
        retry_on: [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        per_try_timeout_ms: 0,
        retriable_status_codes: vec![503],
        base_interval_ms: 25,
        max_interval_ms: 250,
        avoid_previous_hosts: true,
        host_selection_max_attempts: 5,
        retry_remote_localities: false,
    }
}

/// A Go/protobuf duration string in milliseconds; unparsable values (rejected earlier by
/// validation) count as unset.
pub(crate) fn duration_ms(s: Option<&str>) -> u64 {
    s.and_then(|s| parse_duration(s).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The implicit route of a service without a VirtualService: everything to
/// `outbound|<port>||<host>`, Istio's default retries, no timeout.
pub(crate) fn default_route(host: &str, port: u32) -> Route {
    Route {
        name: "default".to_string(),
        matches: Vec::new(),
        action: Some(route::Action::Route(RouteAction {
            clusters: vec![WeightedCluster {
                name: ClusterName::outbound(port, "", host).to_string(),
                weight: 100,
                ..Default::default()
            }],
            retry: Some(default_retry()),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The cluster a destination names, as seen from a route on `port`.
pub(crate) fn destination_cluster(
    scope: &Scope<'_>,
    dest: &Destination,
    vs_ns: &str,
    port: u32,
) -> String {
    let host = scope.model.resolve_host(&dest.host, vs_ns);
    let dest_port = dest
        .port
        .as_ref()
        .and_then(|p| p.number)
        .unwrap_or_else(|| {
            // Unset port: the service's only port, else the port the request came in on.
            let svc = scope.model.service(&host);
            match svc {
                Some(s) if s.ports.len() == 1 => s.ports[0].port,
                Some(s) if s.port(port).is_none() => s.ports.first().map_or(port, |p| p.port),
                _ => port,
            }
        });
    ClusterName::outbound(dest_port, dest.subset.as_deref().unwrap_or(""), &host).to_string()
}

/// The routes of `vs` for gateway context `gateway` on `port`, in order. Matches whose
/// `gateways`, `port`, `sourceLabels` or `sourceNamespace` exclude this proxy are dropped; a rule
/// left without matches is dropped with them.
pub(crate) fn http_routes(
    scope: &Scope<'_>,
    vs: &Cfg<VirtualServiceSpec>,
    gateway: &str,
    port: u32,
) -> Vec<Route> {
    let mut out = Vec::new();
    for rule in &vs.spec.http {
        if rule.delegate.is_some() {
            continue;
        }
        if rule.r#match.is_empty() {
            out.push(route_for(scope, vs, rule, None, port));
            continue;
        }
        for m in &rule.r#match {
            if !match_applies(scope, m, &vs.meta.namespace, gateway, port) {
                continue;
            }
            out.push(route_for(scope, vs, rule, Some(m), port));
        }
    }
    out
}

fn match_applies(
    scope: &Scope<'_>,
    m: &HttpMatchRequest,
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

fn route_for(
    scope: &Scope<'_>,
    vs: &Cfg<VirtualServiceSpec>,
    rule: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    port: u32,
) -> Route {
    let vs_ns = vs.meta.namespace.as_str();
    let action = if let Some(r) = &rule.redirect {
        route::Action::Redirect(RedirectAction {
            uri: r.uri.clone().unwrap_or_default(),
            authority: r.authority.clone().unwrap_or_default(),
            port: r.port.unwrap_or(0),
            derive_port: match r.derive_port {
                Some(RedirectPortSelection::FromProtocolDefault) => {
                    redirect_action::DerivePort::FromProtocolDefault as i32
                }
                Some(RedirectPortSelection::FromRequestPort) => {
                    redirect_action::DerivePort::FromRequestPort as i32
                }
                None => redirect_action::DerivePort::None as i32,
            },
            scheme: r.scheme.clone().unwrap_or_default(),
            response_code: r.redirect_code.unwrap_or(301),
        })
    } else if let Some(d) = &rule.direct_response {
        route::Action::DirectResponse(DirectResponseAction {
            status: d.status,
            body: d
                .body
                .as_ref()
                .and_then(|b| b.string.clone())
                .unwrap_or_default(),
        })
    } else {
        let single = rule.route.len() == 1;
        let clusters = rule
            .route
            .iter()
            .map(|d| WeightedCluster {
                name: destination_cluster(scope, &d.destination, vs_ns, port),
                // A lone destination takes all traffic whatever its weight says.
                weight: if single {
                    100
                } else {
                    u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0)
                },
                request_headers: d
                    .headers
                    .as_ref()
                    .and_then(|h| h.request.as_ref())
                    .map(header_ops),
                response_headers: d
                    .headers
                    .as_ref()
                    .and_then(|h| h.response.as_ref())
                    .map(header_ops),
            })
            .collect();
        route::Action::Route(RouteAction {
            clusters,
            timeout_ms: duration_ms(rule.timeout.as_deref()),
            retry: retry_policy(rule),
            fault: rule.fault.as_ref().map(fault),
            mirrors: mirrors(scope, rule, vs_ns, port),
            rewrite: rule.rewrite.as_ref().map(|rw| Rewrite {
                // Istio: rewrite.uri replaces the matched prefix for prefix matches (and for
                // routes without a uri match, whose implied prefix is `/`), the whole path else.
                uri_prefix: match m.and_then(|m| m.uri.as_ref()) {
                    Some(u) if u.prefix.is_some() => rw.uri.clone().unwrap_or_default(),
                    None => rw.uri.clone().unwrap_or_default(),
                    Some(_) => String::new(),
                },
                uri: match m.and_then(|m| m.uri.as_ref()) {
                    Some(u) if u.prefix.is_none() => rw.uri.clone().unwrap_or_default(),
                    _ => String::new(),
                },
                uri_regex: rw.uri_regex_rewrite.as_ref().map(|r| RegexRewrite {
                    pattern: r.r#match.clone().unwrap_or_default(),
                    substitution: r.rewrite.clone().unwrap_or_default(),
                }),
                authority: rw.authority.clone().unwrap_or_default(),
            }),
            cors: rule.cors_policy.as_ref().map(|c| CorsPolicy {
                allow_origins: c
                    .allow_origins
                    .iter()
                    .filter_map(string_match)
                    .chain(c.allow_origin.iter().map(|o| StringMatch {
                        kind: Some(string_match::Kind::Exact(o.clone())),
                        ignore_case: false,
                    }))
                    .collect(),
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                max_age_seconds: duration_ms(c.max_age.as_deref()) / 1000,
                allow_credentials: c.allow_credentials,
                forward_unmatched_preflights: c.unmatched_preflights
                    == Some(UnmatchedPreflights::Forward),
            }),
        })
    };
    Route {
        name: rule.name.clone().unwrap_or_default(),
        matches: m.map(route_match).into_iter().collect(),
        action: Some(action),
        request_headers: rule
            .headers
            .as_ref()
            .and_then(|h| h.request.as_ref())
            .map(header_ops),
        response_headers: rule
            .headers
            .as_ref()
            .and_then(|h| h.response.as_ref())
            .map(header_ops),
        config: vs.meta.origin.clone(),
    }
}

fn header_ops(h: &halyard_crds::networking::HeaderOperations) -> HeaderOperations {
    HeaderOperations {
        set: h.set.clone(),
        add: h.add.clone(),
        remove: h.remove.clone(),
    }
}

/// Istio StringMatch -> ours; `{}` (no kind) means "present" for headers and query params.
fn string_match(m: &IstioMatch) -> Option<StringMatch> {
    let kind = if let Some(v) = &m.exact {
        string_match::Kind::Exact(v.clone())
    } else if let Some(v) = &m.prefix {
        string_match::Kind::Prefix(v.clone())
    } else if let Some(v) = &m.regex {
        string_match::Kind::Regex(v.clone())
    } else {
        return None;
    };
    Some(StringMatch {
        kind: Some(kind),
        ignore_case: false,
    })
}

fn key_value(name: &str, m: &IstioMatch, invert: bool) -> KeyValueMatch {
    KeyValueMatch {
        name: name.to_string(),
        value: Some(string_match(m).unwrap_or(StringMatch {
            kind: Some(string_match::Kind::Present(true)),
            ignore_case: false,
        })),
        invert,
    }
}

pub(crate) fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let mut uri = m.uri.as_ref().and_then(string_match);
    if let Some(u) = uri.as_mut() {
        u.ignore_case = m.ignore_uri_case.unwrap_or(false);
    }
    RouteMatch {
        name: m.name.clone().unwrap_or_default(),
        uri,
        scheme: m.scheme.as_ref().and_then(string_match),
        method: m.method.as_ref().and_then(string_match),
        authority: m.authority.as_ref().and_then(string_match),
        headers: m
            .headers
            .iter()
            .map(|(k, v)| key_value(k, v, false))
            .chain(m.without_headers.iter().map(|(k, v)| key_value(k, v, true)))
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|(k, v)| key_value(k, v, false))
            .collect(),
        port: m.port.unwrap_or(0),
        // Resolved against this proxy already (see `match_applies`).
        source_labels: Default::default(),
        source_namespace: String::new(),
    }
}

fn retry_policy(rule: &HttpRoute) -> Option<RetryPolicy> {
    let Some(r) = &rule.retries else {
        return Some(default_retry());
    };
    let attempts = r.attempts.unwrap_or(2);
    if attempts <= 0 {
        return None;
    }
    let mut policy = default_retry();
    policy.num_retries = u32::try_from(attempts).unwrap_or(0);
    if let Some(on) = &r.retry_on {
        policy.retry_on.clear();
        policy.retriable_status_codes.clear();
        for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            // Istio: a bare status code means "retry on this status".
            match cond.parse::<u32>() {
                Ok(code) => {
                    policy.retriable_status_codes.push(code);
                    if !policy
                        .retry_on
                        .iter()
                        .any(|c| c == "retriable-status-codes")
                    {
                        policy.retry_on.push("retriable-status-codes".to_string());
                    }
                }
                Err(_) => policy.retry_on.push(cond.to_string()),
            }
        }
    }
    policy.per_try_timeout_ms = duration_ms(r.per_try_timeout.as_deref());
    if r.backoff.is_some() {
        policy.base_interval_ms = duration_ms(r.backoff.as_deref());
        policy.max_interval_ms = policy.base_interval_ms.saturating_mul(10);
    }
    policy.avoid_previous_hosts = r.retry_ignore_previous_hosts.unwrap_or(true);
    policy.retry_remote_localities = r.retry_remote_localities.unwrap_or(false);
    Some(policy)
}

/// Percent with Istio's default: unset means every request.
fn percent(p: Option<&halyard_crds::networking::Percent>, legacy: Option<i32>) -> f64 {
    p.and_then(|p| p.value)
        .or(legacy.map(f64::from))
        .unwrap_or(100.0)
}

fn fault(f: &halyard_crds::networking::HttpFaultInjection) -> FaultInjection {
    FaultInjection {
        delay: f.delay.as_ref().map(|d| fault_injection::Delay {
            fixed_delay_ms: duration_ms(d.fixed_delay.as_deref()),
            percentage: percent(d.percentage.as_ref(), d.percent),
        }),
        abort: f.abort.as_ref().map(|a| fault_injection::Abort {
            error: if let Some(code) = a.http_status {
                Some(fault_injection::abort::Error::HttpStatus(
                    u32::try_from(code).unwrap_or(500),
                ))
            } else {
                a.grpc_status.as_deref().map(|s| {
                    let code = GRPC_STATUSES.iter().position(|g| *g == s).unwrap_or(2);
                    fault_injection::abort::Error::GrpcStatus(u32::try_from(code).unwrap_or(2))
                })
            },
            percentage: percent(a.percentage.as_ref(), None),
        }),
    }
}

fn mirrors(scope: &Scope<'_>, rule: &HttpRoute, vs_ns: &str, port: u32) -> Vec<Mirror> {
    let mut out = Vec::new();
    if let Some(m) = &rule.mirror {
        let pct = rule
            .mirror_percentage
            .as_ref()
            .and_then(|p| p.value)
            .or(rule
                .mirror_percent
                .or(rule.mirror_percent_alias)
                .map(f64::from))
            .unwrap_or(100.0);
        out.push(Mirror {
            cluster: destination_cluster(scope, m, vs_ns, port),
            percentage: pct,
        });
    }
    for m in &rule.mirrors {
        out.push(Mirror {
            cluster: destination_cluster(scope, &m.destination, vs_ns, port),
            percentage: m.percentage.as_ref().and_then(|p| p.value).unwrap_or(100.0),
        });
    }
    out
}
