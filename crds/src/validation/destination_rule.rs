//! DestinationRule rules: host, subsets, traffic policies (load balancer, connection pool, outlier detection,
//! client TLS, port-level settings, tunnel, proxy protocol), exportTo and workload selector.

use super::common::{
    duration_field, enum_field, non_negative, validate_export_to, validate_labels,
    validate_port_selector, validate_workload_selector,
};
use super::node::Node;
use super::report::Ctx;
use super::rules;

pub(crate) fn validate(spec: &Node, namespace: &str, cx: &mut Ctx) {
    match spec.str("host", cx) {
        Some(h) => cx.check(&spec.at("host"), rules::validate_wildcard_domain(h)),
        None => cx.err(&spec.at("host"), "host is required"),
    }
    if let Some(tp) = spec.get("trafficPolicy") {
        validate_traffic_policy(&tp, cx);
    }
    let mut names: Vec<&str> = Vec::new();
    for s in spec.list("subsets", cx) {
        if !s.is_object(cx) {
            continue;
        }
        let name = s.str_or_empty("name", cx);
        if names.contains(&name) {
            cx.err(&s.at("name"), format!("duplicate subset names: {name}"));
        }
        names.push(name);
        cx.check(&s.at("name"), rules::validate_subset_name(name));
        validate_labels(&s, "labels", cx);
        if let Some(tp) = s.get("trafficPolicy") {
            validate_traffic_policy(&tp, cx);
        }
    }
    let selector = spec.get("workloadSelector");
    validate_export_to(spec, namespace, false, selector.is_some(), cx);
    if let Some(sel) = selector {
        validate_workload_selector(&sel, cx);
    }
}

const POLICY_FIELDS: &[&str] = &[
    "outlierDetection",
    "connectionPool",
    "loadBalancer",
    "tls",
    "portLevelSettings",
    "tunnel",
    "proxyProtocol",
];

/// A traffic policy (top level or per subset).
pub(crate) fn validate_traffic_policy(tp: &Node, cx: &mut Ctx) {
    if !tp.is_object(cx) {
        return;
    }
    if !POLICY_FIELDS.iter().any(|f| tp.has(f)) {
        cx.err(&tp.path, "traffic policy must have at least one field");
        return;
    }
    if tp.has("tunnel") && tp.has("proxyProtocol") {
        cx.err(
            &tp.path,
            "tunnel and proxyProtocol must not be set together",
        );
        return;
    }
    validate_policy_parts(tp, cx);
    for pl in tp.list("portLevelSettings", cx) {
        if !pl.is_object(cx) {
            continue;
        }
        match pl.get("port") {
            None => cx.err(&pl.at("port"), "portTrafficPolicy must have valid port"),
            Some(p) => validate_port_selector(&p, cx),
        }
        if !["outlierDetection", "connectionPool", "loadBalancer", "tls"]
            .iter()
            .any(|f| pl.has(f))
        {
            cx.err(&pl.path, "port traffic policy must have at least one field");
        } else {
            validate_policy_parts(&pl, cx);
        }
    }
    if let Some(t) = tp.obj("tunnel", cx) {
        validate_tunnel(&t, cx);
    }
    if let Some(pp) = tp.obj("proxyProtocol", cx) {
        enum_field(&pp, "version", &["V1", "V2"], cx);
    }
}

/// The parts a port-level policy shares with the whole policy.
fn validate_policy_parts(tp: &Node, cx: &mut Ctx) {
    let outlier = tp.obj("outlierDetection", cx);
    if let Some(o) = &outlier {
        validate_outlier_detection(o, cx);
    }
    if let Some(cp) = tp.get("connectionPool") {
        validate_connection_pool(&cp, cx);
    }
    if let Some(lb) = tp.obj("loadBalancer", cx) {
        validate_load_balancer(&lb, outlier.is_some(), cx);
    }
    if let Some(tls) = tp.obj("tls", cx) {
        validate_client_tls(&tls, cx);
    }
}

fn validate_tunnel(t: &Node, cx: &mut Ctx) {
    let protocol = t.str_or_empty("protocol", cx);
    if !protocol.is_empty() && protocol != "CONNECT" && protocol != "POST" {
        cx.err(
            &t.at("protocol"),
            "tunnel protocol must be \"CONNECT\" or \"POST\"",
        );
    }
    let host = t.str_or_empty("targetHost", cx);
    if let (Err(fqdn), Err(ip)) = (rules::validate_fqdn(host), rules::validate_ip_address(host)) {
        cx.err(
            &t.at("targetHost"),
            format!("tunnel target host must be valid FQDN or IP address: {fqdn}; {ip}"),
        );
    }
    let port = t.i64("targetPort", cx).unwrap_or(0);
    if let Err(e) = rules::validate_port(port) {
        cx.err(
            &t.at("targetPort"),
            format!("tunnel target port is invalid: {e}"),
        );
    }
}

fn validate_outlier_detection(o: &Node, cx: &mut Ctx) {
    duration_field(o, "baseEjectionTime", cx);
    duration_field(o, "interval", cx);
    if o.i64("consecutiveErrors", cx).is_some_and(|v| v != 0) {
        cx.warn(
            &o.at("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    let split = o
        .bool("splitExternalLocalOriginErrors", cx)
        .unwrap_or(false);
    if !split
        && o.i64("consecutiveLocalOriginFailures", cx)
            .is_some_and(|v| v > 0)
    {
        cx.err(
            &o.at("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    for key in ["maxEjectionPercent", "minHealthPercent"] {
        if let Some(v) = o.i64(key, cx) {
            cx.check(&o.at(key), rules::validate_percent(v));
        }
    }
    for key in ["consecutiveGatewayErrors", "consecutive5xxErrors"] {
        if o.i64(key, cx).is_some_and(|v| v < 0) {
            cx.err(&o.at(key), format!("{key} must be non-negative"));
        }
    }
}

/// Connection pool settings (also used by Sidecar ingress listeners).
pub(crate) fn validate_connection_pool(cp: &Node, cx: &mut Ctx) {
    if !cp.is_object(cx) {
        return;
    }
    let http = cp.obj("http", cx);
    let tcp = cp.obj("tcp", cx);
    if http.is_none() && tcp.is_none() {
        cx.err(&cp.path, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = http {
        non_negative(
            &h,
            "http1MaxPendingRequests",
            "http1 max pending requests",
            cx,
        );
        non_negative(&h, "http2MaxRequests", "http2 max requests", cx);
        non_negative(
            &h,
            "maxRequestsPerConnection",
            "max requests per connection",
            cx,
        );
        non_negative(&h, "maxRetries", "max retries", cx);
        non_negative(&h, "maxConcurrentStreams", "max concurrent streams", cx);
        duration_field(&h, "idleTimeout", cx);
        let policy = enum_field(
            &h,
            "h2UpgradePolicy",
            &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
            cx,
        );
        if policy == Some("UPGRADE") && h.bool("useClientProtocol", cx) == Some(true) {
            cx.err(
                &h.at("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
    }
    if let Some(t) = tcp {
        non_negative(&t, "maxConnections", "max connections", cx);
        duration_field(&t, "connectTimeout", cx);
        duration_field(&t, "maxConnectionDuration", cx);
        duration_field(&t, "idleTimeout", cx);
        if let Some(ka) = t.obj("tcpKeepalive", cx) {
            duration_field(&ka, "time", cx);
            duration_field(&ka, "interval", cx);
        }
    }
}

fn validate_load_balancer(lb: &Node, has_outlier: bool, cx: &mut Ctx) {
    enum_field(
        lb,
        "simple",
        &[
            "UNSPECIFIED",
            "LEAST_CONN",
            "RANDOM",
            "PASSTHROUGH",
            "ROUND_ROBIN",
            "LEAST_REQUEST",
        ],
        cx,
    );
    if lb.has("simple") && lb.has("consistentHash") {
        cx.err(&lb.path, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = lb.obj("consistentHash", cx) {
        validate_consistent_hash(&ch, cx);
    }
    if let Some(l) = lb.obj("localityLbSetting", cx) {
        validate_locality_lb(&l, has_outlier, cx);
    }
    duration_field(lb, "warmupDurationSecs", cx);
    if let Some(w) = lb.obj("warmup", cx) {
        duration_field(&w, "duration", cx);
    }
}

fn validate_consistent_hash(ch: &Node, cx: &mut Ctx) {
    let keys = [
        "httpHeaderName",
        "httpCookie",
        "useSourceIp",
        "httpQueryParameterName",
    ];
    let set: Vec<&str> = keys.into_iter().filter(|k| ch.has(k)).collect();
    if set.len() > 1 {
        cx.err(
            &ch.path,
            format!("only one hash key may be set, found {}", set.join(", ")),
        );
    }
    if let Some(c) = ch.obj("httpCookie", cx) {
        if c.str_or_empty("name", cx).is_empty() {
            cx.err(&c.at("name"), "name required for HttpCookie");
        }
        duration_field(&c, "ttl", cx);
    }
    let ring = ch.i64("minimumRingSize", cx).unwrap_or(0);
    if ring != 0 {
        cx.warn(
            &ch.at("minimumRingSize"),
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
        );
        if ch.has("ringHash") || ch.has("maglev") {
            cx.err(
                &ch.at("minimumRingSize"),
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
    }
    if ch.has("ringHash") && ch.has("maglev") {
        cx.err(&ch.path, "only one of ringHash or maglev may be set");
    }
    if let Some(m) = ch.obj("maglev", cx) {
        let size = m.i64("tableSize", cx).unwrap_or(0);
        let path = m.at("tableSize");
        if size == 0 {
            cx.err(&path, "tableSize must be set for maglev");
        }
        if size >= 5_000_011 {
            cx.err(&path, "tableSize must be less than 5000011 for maglev");
        }
        if size < 0 || !rules::is_prime(size.unsigned_abs()) {
            cx.err(&path, "tableSize must be a prime number for maglev");
        }
    }
}

const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

fn validate_locality_lb(l: &Node, has_outlier: bool, cx: &mut Ctx) {
    let distribute = l.list("distribute", cx);
    let failover = l.list("failover", cx);
    let priority = l.str_list("failoverPriority", cx);
    if !distribute.is_empty() && !failover.is_empty() {
        cx.err(
            &l.path,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !failover.is_empty()
        && let Some((path, p)) = priority.iter().find(|(_, p)| TOPOLOGY_LABELS.contains(p))
    {
        cx.err(path, format!("can not simultaneously set 'failover' and topology label '{p}' in 'failover_priority'"));
        return;
    }
    let mut sources: Vec<(String, String)> = Vec::new();
    for d in &distribute {
        if !d.is_object(cx) {
            continue;
        }
        sources.push((d.at("from"), d.str_or_empty("from", cx).to_string()));
        let mut total: i64 = 0;
        let mut targets = Vec::new();
        let mut bad_weight = false;
        for (loc, w) in d.map("to", cx) {
            targets.push((w.path.clone(), loc.to_string()));
            let weight = w.as_i64(cx).unwrap_or(0);
            if !(1..=100).contains(&weight) {
                cx.err(&w.path, "locality weight must be in range [1, 100]");
                bad_weight = true;
                break;
            }
            total += weight;
        }
        if bad_weight {
            return;
        }
        if total != 100 {
            cx.err(&d.at("to"), format!("total locality weight {total} != 100"));
            return;
        }
        validate_localities(&targets, cx);
    }
    validate_localities(&sources, cx);
    if (!failover.is_empty() || !priority.is_empty()) && !has_outlier {
        cx.warn(
            &l.path,
            "outlier detection policy must be provided for failover",
        );
    }
    for f in &failover {
        if !f.is_object(cx) {
            continue;
        }
        let from = f.str_or_empty("from", cx);
        let to = f.str_or_empty("to", cx);
        if from == to {
            cx.err(
                &f.path,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            cx.err(&f.path, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            cx.err(
                &f.path,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Localities (`region/zone/subzone`, trailing `*` allowed) must be well-formed and must not overlap.
fn validate_localities(localities: &[(String, String)], cx: &mut Ctx) {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for (path, loc) in localities {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            cx.err(
                path,
                format!(
                    "locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
                ),
            );
            return;
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            cx.err(
                path,
                format!("locality {loc} must not contain empty region/zone/subzone info"),
            );
            return;
        }
        // Two localities overlap when one is a prefix of the other, treating `*` as "everything below".
        let overlaps = seen.iter().any(|prev| {
            for (a, b) in prev.iter().zip(parts.iter()) {
                if *a == "*" {
                    return true;
                }
                if a != b {
                    return false;
                }
            }
            true
        });
        if overlaps {
            cx.err(
                path,
                format!("locality {loc} overlap with previous specified ones"),
            );
            return;
        }
        seen.push(parts);
    }
}

/// Client-side TLS settings (DestinationRule `tls`).
pub(crate) fn validate_client_tls(tls: &Node, cx: &mut Ctx) {
    let mode = enum_field(
        tls,
        "mode",
        &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"],
        cx,
    )
    .unwrap_or("DISABLE");
    let s = |k: &str, cx: &mut Ctx| tls.str_or_empty(k, cx).to_string();
    let ca = s("caCertificates", cx);
    let cred = s("credentialName", cx);
    let cert = s("clientCertificate", cx);
    let key = s("privateKey", cx);
    let crl = s("caCrl", cx);
    let has_sans = tls.has("subjectAltNames");
    if tls.bool("insecureSkipVerify", cx) == Some(true) {
        if mode == "SIMPLE" && (!ca.is_empty() || !cred.is_empty() || has_sans) {
            cx.err(
                &tls.path,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
        if mode == "MUTUAL" && (!ca.is_empty() || has_sans) {
            cx.err(&tls.path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true");
        }
    }
    if (mode == "SIMPLE" || mode == "MUTUAL") && !cred.is_empty() {
        if !cert.is_empty() || !ca.is_empty() || !key.is_empty() || !crl.is_empty() {
            cx.err(
                &tls.at("credentialName"),
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        return;
    }
    if mode == "MUTUAL" {
        if cert.is_empty() {
            cx.err(
                &tls.at("clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if key.is_empty() {
            cx.err(&tls.at("privateKey"), "private key required for mutual tls");
        }
    }
}
