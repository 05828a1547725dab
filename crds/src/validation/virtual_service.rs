//! VirtualService rules (Istio's `ValidateVirtualService` and the HTTP/TLS/TCP route checks).

use serde_json::Value;

use super::common::{
    StringMatch, duration_field, string_match, validate_destination, validate_export_to,
    validate_gateway_names, validate_labels, validate_string_match,
};
use super::node::Node;
use super::report::Ctx;
use super::rules;

const MB: usize = 1024 * 1024;
const KB: usize = 1024;

pub(crate) fn validate(spec: &Node, namespace: &str, cx: &mut Ctx) {
    let hosts = spec.str_list("hosts", cx);
    let gateways = spec.str_list("gateways", cx);
    let delegate = hosts.is_empty();
    if delegate {
        if !gateways.is_empty() {
            cx.err(
                &spec.at("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if spec.len("tls") != 0 {
            cx.err(
                &spec.at("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if spec.len("tcp") != 0 {
            cx.err(
                &spec.at("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }

    validate_gateway_names(spec, "gateways", cx);
    // Bound to gateways unless the reserved `mesh` gateway is listed (or no gateway at all).
    let applies_to_gateway = !gateways.is_empty() && gateways.iter().all(|(_, g)| *g != "mesh");
    let applies_to_mesh = !applies_to_gateway;
    let sni = is_sni_host(spec);

    let mut all_hosts_valid = true;
    for (path, host) in &hosts {
        let r = if applies_to_gateway {
            validate_gateway_bound_host(sni, host)
        } else {
            rules::validate_wildcard_domain(host)
        };
        match r {
            Err(e) if !rules::is_ip_address(host) => {
                cx.err(path, e);
                all_hosts_valid = false;
            }
            Ok(()) if applies_to_mesh && *host == "*" => {
                cx.err(
                    path,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_hosts_valid = false;
            }
            _ => {}
        }
    }
    if all_hosts_valid {
        for (i, (_, a)) in hosts.iter().enumerate() {
            for (path, b) in hosts.iter().skip(i + 1) {
                if rules::hosts_match(a, b) {
                    cx.err(
                        path,
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }

    if spec.len("http") == 0 && spec.len("tcp") == 0 && spec.len("tls") == 0 {
        cx.err(
            &spec.path,
            "http, tcp or tls must be provided in virtual service",
        );
    }
    let http = spec.list("http", cx);
    for route in &http {
        if route.is_object(cx) {
            validate_http_route(route, delegate, applies_to_gateway, &gateways, cx);
        }
    }
    let host_names: Vec<&str> = hosts.iter().map(|(_, h)| *h).collect();
    let tls = spec.list("tls", cx);
    for route in &tls {
        if route.is_object(cx) {
            validate_tls_route(route, &host_names, applies_to_gateway, cx);
        }
    }
    let tcp = spec.list("tcp", cx);
    for route in &tcp {
        if route.is_object(cx) {
            validate_tcp_route(route, cx);
        }
    }
    validate_export_to(spec, namespace, false, false, cx);

    analyze_unreachable(&http, true, cx);
    analyze_unreachable(&tcp, false, cx);
    analyze_unreachable(&tls, false, cx);
}

fn is_sni_host(spec: &Node) -> bool {
    spec.v
        .get("tls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("match").and_then(Value::as_array))
        .flatten()
        .any(|m| {
            m.get("sniHosts")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        })
}

/// Hosts of gateway-bound services; auto-generated SNI names (`outbound_.80_._.svc`) are allowed too.
fn validate_gateway_bound_host(sni: bool, domain: &str) -> rules::RuleResult {
    let first = domain.split('.').next().unwrap_or(domain);
    if sni && first == "outbound_" {
        let rest = &domain["outbound_".len()..];
        let ok = rest.len() >= 2 && matches!(rest.as_bytes()[1], b'0'..=b'8');
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "domain name {domain:?} invalid (label {first:?} invalid)"
            ))
        };
    }
    rules::validate_wildcard_domain(domain)
}

fn validate_http_route(
    r: &Node,
    delegate: bool,
    applies_to_gateway: bool,
    gateways: &[(String, &str)],
    cx: &mut Ctx,
) {
    validate_http_route_conflict(r, delegate, cx);
    validate_http_match_requests(r, applies_to_gateway, gateways, cx);

    if let Some(h) = r.obj("headers", cx) {
        validate_header_operations(&h, cx);
    }
    if let Some(c) = r.obj("corsPolicy", cx) {
        validate_cors_policy(&c, cx);
    }
    if let Some(f) = r.obj("fault", cx) {
        validate_fault(&f, cx);
    }
    if let Some(p) = r.get("mirrorPercent") {
        if let Some(v) = p.as_i64(cx)
            && v > 100
        {
            cx.err(
                &p.path,
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        cx.warn(
            &p.path,
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = r.obj("mirrorPercentage", cx) {
        mirror_percentage(&p, "mirror_percentage", cx);
    }
    if let Some(m) = r.get("mirror") {
        validate_destination(&m, cx);
    }
    for m in r.list("mirrors", cx) {
        if !m.is_object(cx) {
            continue;
        }
        match m.get("destination") {
            None => cx.err(&m.at("destination"), "destination is required for mirrors"),
            Some(d) => validate_destination(&d, cx),
        }
        if let Some(p) = m.obj("percentage", cx) {
            mirror_percentage(&p, "mirror percentage", cx);
        }
    }
    if let Some(red) = r.obj("redirect", cx) {
        validate_redirect(&red, cx);
    }
    if let Some(d) = r.obj("directResponse", cx) {
        validate_direct_response(&d, cx);
    }
    if let Some(retries) = r.obj("retries", cx) {
        validate_retries(&retries, cx);
    }
    if let Some(rw) = r.obj("rewrite", cx) {
        validate_rewrite(&rw, cx);
    }
    validate_authority_rewrite(r, cx);
    validate_route_destinations(r, true, cx);
    duration_field(r, "timeout", cx);
}

fn mirror_percentage(p: &Node, what: &str, cx: &mut Ctx) {
    let Some(v) = p.f64("value", cx) else {
        return;
    };
    if v > 100.0 {
        cx.err(
            &p.at("value"),
            format!("{what} must have a max value of 100 (it has {v:.6})"),
        );
    }
    if v < 0.0 {
        cx.err(
            &p.at("value"),
            format!("{what} must have a min value of 0 (it has {v:.6})"),
        );
    }
}

fn validate_http_route_conflict(r: &Node, delegate: bool, cx: &mut Ctx) {
    let name = r.str_or_empty("name", cx);
    let has_route = r.list_present("route");
    let route_len = r.len("route");
    let (redirect, fault, rewrite, direct) = (
        r.has("redirect"),
        r.has("fault"),
        r.has("rewrite"),
        r.has("directResponse"),
    );
    // A root route hands everything to the delegate.
    if !delegate && r.has("delegate") {
        if redirect {
            cx.err(
                &r.at("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if has_route {
            cx.err(
                &r.at("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
        return;
    }
    if delegate && r.has("delegate") {
        cx.err(
            &r.at("delegate"),
            "delegate HTTP route cannot contain delegate",
        );
    }
    if redirect {
        if route_len > 0 {
            cx.err(
                &r.at("route"),
                "HTTP route cannot contain both route and redirect",
            );
        }
        if fault {
            cx.err(
                &r.at("fault"),
                "HTTP route cannot contain both fault and redirect",
            );
        }
        if rewrite {
            cx.err(
                &r.at("rewrite"),
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if direct {
            cx.err(
                &r.at("directResponse"),
                "HTTP route rule cannot contain both direct_response and redirect",
            );
        }
    } else if direct {
        if route_len > 0 {
            cx.err(
                &r.at("route"),
                "HTTP route cannot contain both route and direct_response",
            );
        }
        if fault {
            cx.err(
                &r.at("fault"),
                "HTTP route cannot contain both fault and direct_response",
            );
        }
        if rewrite {
            cx.err(
                &r.at("rewrite"),
                "HTTP route rule cannot contain both rewrite and direct_response",
            );
        }
    } else if route_len == 0 {
        cx.err(
            &r.at("route"),
            "HTTP route, redirect or direct_response is required",
        );
    }
    if r.has("mirror") && r.len("mirrors") > 0 {
        cx.err(
            &r.at("mirrors"),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
}

fn validate_http_match_requests(
    r: &Node,
    applies_to_gateway: bool,
    gateways: &[(String, &str)],
    cx: &mut Ctx,
) {
    for m in r.list("match", cx) {
        if !m.is_object(cx) {
            continue;
        }
        for (key, field) in [("headers", "headers"), ("withoutHeaders", "withoutHeaders")] {
            for (name, h) in m.map(key, cx) {
                cx.check(&h.path, rules::validate_header_name_or_jwt_claim(name));
                if rules::is_jwt_claim_route(name) && !applies_to_gateway {
                    let gws: Vec<&str> = gateways.iter().map(|(_, g)| *g).collect();
                    cx.err(
                        &h.path,
                        format!(
                            "JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: [{}]",
                            gws.join(" ")
                        ),
                    );
                }
                // In withoutHeaders, regex `*` means "header present", not an RE2 pattern.
                if key == "withoutHeaders" && h.v.get("regex").and_then(Value::as_str) == Some("*")
                {
                    continue;
                }
                validate_string_match(&h, field, false, cx);
            }
        }
        if let Some(u) = m.get("uri") {
            validate_string_match(&u, "uri", true, cx);
        }
        for key in ["scheme", "method", "authority"] {
            if let Some(s) = m.get(key) {
                validate_string_match(&s, key, false, cx);
            }
        }
        for (_, q) in m.map("queryParams", cx) {
            validate_string_match(&q, "queryParams", false, cx);
        }
        if let Some(p) = m.i64("port", cx)
            && p != 0
        {
            cx.check(&m.at("port"), rules::validate_port(p));
        }
        validate_labels(&m, "sourceLabels", cx);
        validate_gateway_names(&m, "gateways", cx);
        if let Some(ns) = m.str("sourceNamespace", cx)
            && !ns.is_empty()
            && !rules::is_dns1123_label(ns)
        {
            cx.err(
                &m.at("sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }
}

/// `headers.request` / `headers.response` set, add and remove.
fn validate_header_operations(h: &Node, cx: &mut Ctx) {
    for (side, request) in [("request", true), ("response", false)] {
        let Some(ops) = h.obj(side, cx) else {
            continue;
        };
        for key in ["set", "add"] {
            for (path, name, value) in ops.str_map(key, cx) {
                let r = if request {
                    rules::validate_header_operation_name_with_authority(name)
                } else {
                    rules::validate_header_operation_name(name)
                };
                cx.check(&path, r);
                cx.check(&path, rules::validate_header_value(value));
            }
        }
        for (path, name) in ops.str_list("remove", cx) {
            cx.check(&path, rules::validate_header_operation_name(name));
        }
    }
}

fn validate_cors_policy(c: &Node, cx: &mut Ctx) {
    for o in c.list("allowOrigins", cx) {
        if !o.is_object(cx) {
            continue;
        }
        match string_match(&o, cx) {
            StringMatch::Exact(s) | StringMatch::Prefix(s) if !s.is_empty() => {}
            StringMatch::Regex(re) if !re.is_empty() => {
                cx.check(
                    &o.at("regex"),
                    rules::validate_regex(re, "corsPolicy.allowOrigins"),
                );
            }
            _ => cx.err(
                &o.path,
                "'' is not a valid match type for CORS allow origins",
            ),
        }
    }
    for (path, m) in c.str_list("allowMethods", cx) {
        cx.check(&path, rules::validate_http_method(m));
    }
    for key in ["allowHeaders", "exposeHeaders"] {
        for (path, h) in c.str_list(key, cx) {
            cx.check(&path, rules::validate_cors_header_name(h));
        }
    }
    if let Some(f) = c.get("maxAge")
        && let Some(s) = f.as_str(cx)
    {
        match rules::parse_duration(s) {
            Ok(d) if d.subsec_nanos() > 0 => cx.err(
                &f.path,
                "max_age duration is accurate only to seconds precision",
            ),
            _ => cx.check(&f.path, rules::validate_duration(s)),
        }
    }
}

fn validate_fault(f: &Node, cx: &mut Ctx) {
    let abort = f.obj("abort", cx);
    let delay = f.obj("delay", cx);
    if abort.is_none() && delay.is_none() {
        cx.err(
            &f.path,
            "HTTP fault injection must have an abort and/or a delay",
        );
    }
    if let Some(a) = abort {
        if let Some(p) = a.obj("percentage", cx)
            && let Some(v) = p.f64("value", cx)
        {
            cx.check(&p.at("value"), rules::validate_percentage(v));
        }
        if let Some(v) = a.i64("percent", cx) {
            cx.check(&a.at("percent"), rules::validate_percent(v));
        }
        if let Some(s) = a.str("grpcStatus", cx) {
            cx.check(&a.at("grpcStatus"), rules::validate_grpc_status(s));
        } else if a.has("http2Error") {
            cx.err(
                &a.at("http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        } else if let Some(s) = a.i64("httpStatus", cx) {
            cx.check(&a.at("httpStatus"), rules::validate_http_status(s));
        } else {
            cx.warn(&a.path, "abort configured, but error type not set");
        }
    }
    if let Some(d) = delay {
        if let Some(p) = d.obj("percentage", cx)
            && let Some(v) = p.f64("value", cx)
        {
            cx.check(&p.at("value"), rules::validate_percentage(v));
        }
        if let Some(v) = d.i64("percent", cx) {
            cx.check(&d.at("percent"), rules::validate_percent(v));
        }
        duration_field(&d, "fixedDelay", cx);
        if d.has("exponentialDelay") {
            duration_field(&d, "exponentialDelay", cx);
            cx.err(
                &d.at("exponentialDelay"),
                "exponentialDelay not supported yet",
            );
        }
    }
}

fn validate_redirect(red: &Node, cx: &mut Ctx) {
    let uri = red.str_or_empty("uri", cx);
    let authority = red.str_or_empty("authority", cx);
    let scheme = red.str_or_empty("scheme", cx);
    let has_port = red.has("port") || red.has("derivePort");
    if uri.is_empty() && authority.is_empty() && scheme.is_empty() && !has_port {
        cx.err(
            &red.path,
            "redirect must specify URI, authority, scheme, or port",
        );
    }
    if let Some(code) = red.i64("redirectCode", cx)
        && code != 0
        && !(300..=399).contains(&code)
    {
        cx.err(
            &red.at("redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if !scheme.is_empty() && scheme != "http" && scheme != "https" {
        cx.err(
            &red.at("scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    if let Some(p) = red.i64("port", cx) {
        cx.check(&red.at("port"), rules::validate_port(p));
    }
    if red.has("port") && red.has("derivePort") {
        cx.err(&red.path, "only one of port or derivePort may be set");
    }
    super::common::enum_field(
        red,
        "derivePort",
        &["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"],
        cx,
    );
}

fn validate_direct_response(d: &Node, cx: &mut Ctx) {
    match d.i64("status", cx) {
        Some(s) => cx.check(&d.at("status"), rules::validate_http_status(s)),
        None => cx.err(&d.at("status"), "HTTP status 0 is not in range 200-599"),
    }
    let Some(body) = d.obj("body", cx) else {
        return;
    };
    let size = match (body.str("string", cx), body.str("bytes", cx)) {
        (Some(s), _) => s.len(),
        // `bytes` is base64 in JSON; the decoded size is three quarters of the text.
        (None, Some(b)) => b.len() / 4 * 3,
        (None, None) => 0,
    };
    if size > MB {
        cx.err(
            &body.path,
            "large direct_responses may impact control plane performance, must be less than 1MB",
        );
    } else if size > 100 * KB {
        cx.warn(
            &body.path,
            "large direct_responses may impact control plane performance",
        );
    }
}

fn validate_retries(r: &Node, cx: &mut Ctx) {
    let attempts = r.i64("attempts", cx).unwrap_or(0);
    if attempts < 0 {
        cx.err(&r.at("attempts"), "attempts cannot be negative");
    }
    let retry_on = r.str_or_empty("retryOn", cx);
    if attempts == 0
        && (r.has("perTryTimeout") || !retry_on.is_empty() || r.has("retryRemoteLocalities"))
    {
        cx.err(
            &r.at("attempts"),
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    duration_field(r, "perTryTimeout", cx);
    duration_field(r, "backoff", cx);
    if !retry_on.is_empty() {
        for e in rules::validate_retry_on(retry_on) {
            cx.err(&r.at("retryOn"), e);
        }
    }
}

fn validate_rewrite(rw: &Node, cx: &mut Ctx) {
    let uri = rw.str_or_empty("uri", cx);
    let regex = rw.obj("uriRegexRewrite", cx);
    let authority = rw.str_or_empty("authority", cx);
    if !uri.is_empty() && regex.is_some() {
        cx.err(
            &rw.path,
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
        return;
    }
    if uri.is_empty() && regex.is_none() && authority.is_empty() {
        cx.err(
            &rw.path,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        );
        return;
    }
    if let Some(re) = regex {
        let m = re.str_or_empty("match", cx);
        let w = re.str_or_empty("rewrite", cx);
        if m.is_empty() || w.is_empty() {
            cx.err(
                &re.path,
                "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        } else if let Err(e) = rules::validate_regex(m, "HTTPRewrite.UriRegexRewrite.Match") {
            cx.err(&re.at("match"), format!("UriRegexRewrite has errors: {e}"));
        }
    }
}

/// The authority may be rewritten in one place only (rewrite.authority or a request header set/add).
fn validate_authority_rewrite(r: &Node, cx: &mut Ctx) {
    let mut quiet = Ctx::default();
    let mut current = r
        .get("rewrite")
        .map(|rw| rw.str_or_empty("authority", &mut quiet).to_string())
        .unwrap_or_default();
    let Some(req) = r.get("headers").and_then(|h| h.get("request")) else {
        return;
    };
    for key in ["set", "add"] {
        for (path, name, value) in req.str_map(key, &mut quiet) {
            if !rules::is_authority_header(name) {
                continue;
            }
            if !current.is_empty() {
                cx.err(
                    &path,
                    format!("authority header cannot be set multiple times: have {current:?}, attempting to set {value:?}"),
                );
                return;
            }
            current = value.to_string();
        }
    }
}

/// `route` entries of HTTP/TCP/TLS routes: destination required and valid, weights non-negative, and not all
/// zero when there are several destinations (weights need not sum to 100).
fn validate_route_destinations(r: &Node, http: bool, cx: &mut Ctx) {
    let routes = r.list("route", cx);
    let mut total: i64 = 0;
    for d in &routes {
        if !d.is_object(cx) {
            continue;
        }
        match d.get("destination") {
            None => cx.err(&d.at("destination"), "destination is required"),
            Some(dest) => validate_destination(&dest, cx),
        }
        if http && let Some(h) = d.obj("headers", cx) {
            validate_header_operations(&h, cx);
        }
        if let Some(w) = d.i64("weight", cx) {
            cx.check(&d.at("weight"), rules::validate_weight(w));
            total = total.saturating_add(w);
        }
    }
    if routes.len() > 1 && total == 0 {
        cx.err(&r.at("route"), "total destination weight = 0");
    }
}

fn validate_tls_route(r: &Node, hosts: &[&str], applies_to_gateway: bool, cx: &mut Ctx) {
    let matches = r.list("match", cx);
    if matches.is_empty() {
        cx.err(
            &r.at("match"),
            "TLS route must have at least one match condition",
        );
    }
    for m in &matches {
        if !m.is_object(cx) {
            continue;
        }
        let snis = m.str_list("sniHosts", cx);
        if snis.is_empty() {
            cx.err(
                &m.at("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (path, sni) in &snis {
            validate_sni_host(path, sni, hosts, applies_to_gateway, cx);
        }
        validate_l4_match(m, cx);
    }
    if r.len("route") == 0 {
        cx.err(&r.at("route"), "TLS route is required");
    }
    validate_route_destinations(r, false, cx);
}

fn validate_sni_host(
    path: &str,
    sni: &str,
    hosts: &[&str],
    applies_to_gateway: bool,
    cx: &mut Ctx,
) {
    let r = if applies_to_gateway {
        validate_gateway_bound_host(true, sni)
    } else {
        rules::validate_wildcard_domain(sni)
    };
    if let Err(e) = r {
        if rules::is_ip_address(sni) {
            cx.warn(
                path,
                format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"),
            );
        } else {
            cx.err(path, e);
        }
        return;
    }
    if !hosts.iter().any(|h| rules::host_subset_of(sni, h)) {
        cx.err(
            path,
            format!(
                "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                hosts.join(", ")
            ),
        );
    }
}

/// Fields common to TLS and TCP matches.
fn validate_l4_match(m: &Node, cx: &mut Ctx) {
    for (path, subnet) in m.str_list("destinationSubnets", cx) {
        cx.check(&path, rules::validate_ip_subnet(subnet));
    }
    if let Some(p) = m.i64("port", cx)
        && p != 0
    {
        cx.check(&m.at("port"), rules::validate_port(p));
    }
    validate_labels(m, "sourceLabels", cx);
    validate_gateway_names(m, "gateways", cx);
}

fn validate_tcp_route(r: &Node, cx: &mut Ctx) {
    for m in r.list("match", cx) {
        if m.is_object(cx) {
            validate_l4_match(&m, cx);
        }
    }
    if r.len("route") == 0 {
        cx.err(&r.at("route"), "TCP route is required");
    }
    validate_route_destinations(r, false, cx);
}

/// Warnings for rules that can never match: anything after a catch-all rule, and matches repeated from an
/// earlier rule (Istio's VirtualServiceUnreachableRule / VirtualServiceIneffectiveMatch).
fn analyze_unreachable(routes: &[Node], http: bool, cx: &mut Ctx) {
    let mut seen: Vec<(Value, usize)> = Vec::new();
    let mut prefix_matches: Vec<PrefixMatch> = Vec::new();
    let mut catch_all: Option<usize> = None;
    let rule_name = |r: &Node, i: usize| match r.v.get("name").and_then(Value::as_str) {
        Some(n) if http && !n.is_empty() => format!("{n:?}"),
        _ => format!("#{i}"),
    };
    for (i, r) in routes.iter().enumerate() {
        let matches: Vec<&Value> =
            r.v.get("match")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
        if catch_all.is_some() {
            cx.warn(
                &r.path,
                format!(
                    "virtualService rule {} not used (only the last rule can have no matches)",
                    rule_name(r, i)
                ),
            );
            continue;
        }
        if matches.is_empty() {
            catch_all = Some(i);
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in matches.iter().enumerate() {
            let mut key = (*m).clone();
            let match_name = key
                .as_object_mut()
                .and_then(|o| o.remove("name"))
                .and_then(|n| n.as_str().map(String::from));
            match seen.iter().find(|(k, _)| *k == key) {
                Some((_, prior)) => {
                    duplicates += 1;
                    let mname = match match_name {
                        Some(n) if http && !n.is_empty() => format!("{n:?}"),
                        _ => format!("#{j}"),
                    };
                    cx.warn(
                        &format!("{}.match[{j}]", r.path),
                        format!(
                            "virtualService rule {} match {mname} is not used (duplicate/overlapping match in rule {})",
                            rule_name(r, i),
                            rule_name(&routes[*prior], *prior)
                        ),
                    );
                }
                None => {
                    seen.push((key, i));
                    if http
                        && let Some(pm) = PrefixMatch::from_match(m, rule_name(r, i), j, &r.path)
                    {
                        prefix_matches.push(pm);
                    }
                }
            }
        }
        if duplicates == matches.len() {
            cx.warn(
                &r.path,
                format!(
                    "virtualService rule {} not used (all matches used by prior rules)",
                    rule_name(r, i)
                ),
            );
        }
    }
    // A later prefix match is shadowed when an earlier one has a shorter prefix and no narrower conditions.
    for (a_index, a) in prefix_matches.iter().enumerate() {
        for b in prefix_matches.iter().skip(a_index + 1) {
            if a.prefix != b.prefix && a.covers(b) {
                cx.warn(
                    &b.path,
                    format!(
                        "virtualService rule {} match {} of prefix {} is not used (duplicate/overlapping match in rule {} of prefix {} on {})",
                        b.rule, b.name, b.prefix, a.name, a.prefix, a.rule
                    ),
                );
            }
        }
    }
}

/// The parts of a URI-prefix HTTP match that decide whether an earlier one shadows it (Istio's
/// `OverlappingMatchValidationForHTTPRoute`). String matches are kept as `exact:` / `prefix:` forms.
struct PrefixMatch {
    rule: String,
    name: String,
    path: String,
    prefix: String,
    port: i64,
    method: String,
    authority: String,
    headers: Vec<(String, String)>,
    query_params: Vec<(String, String)>,
    without_headers: Vec<(String, String)>,
}

impl PrefixMatch {
    fn from_match(m: &Value, rule: String, index: usize, rule_path: &str) -> Option<PrefixMatch> {
        let prefix = m
            .pointer("/uri/prefix")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())?;
        let form = |v: Option<&Value>| {
            let get = |k: &str| {
                v.and_then(|v| v.get(k))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            };
            match (get("exact"), get("prefix")) {
                (Some(e), _) => format!("exact:{e}"),
                (None, Some(p)) => format!("prefix:{p}"),
                _ => String::new(),
            }
        };
        let map = |key: &str| -> Vec<(String, String)> {
            let mut entries: Vec<(String, String)> = m
                .get(key)
                .and_then(Value::as_object)
                .map(|o| o.iter().map(|(k, v)| (k.clone(), form(Some(v)))).collect())
                .unwrap_or_default();
            entries.sort();
            entries
        };
        let method = match form(m.get("method")) {
            // Without a method the match behaves as GET for this comparison, as Istio assumes.
            f if f.is_empty() => "exact:GET".to_string(),
            f => f,
        };
        let name = match m.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => format!("{n:?}"),
            _ => format!("#{index}"),
        };
        Some(PrefixMatch {
            rule,
            name,
            path: format!("{rule_path}.match[{index}]"),
            prefix: prefix.to_string(),
            port: m.get("port").and_then(Value::as_i64).unwrap_or(0),
            method,
            authority: form(m.get("authority")),
            headers: map("headers"),
            query_params: map("queryParams"),
            without_headers: map("withoutHeaders"),
        })
    }

    /// Does `self` (earlier) match everything `later` matches?
    fn covers(&self, later: &PrefixMatch) -> bool {
        let compatible = |a: &str, b: &str| a == b || a.starts_with(b);
        let same_map = |a: &[(String, String)], b: &[(String, String)]| {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.iter().any(|(bk, bv)| bk == k && compatible(v, bv)))
        };
        later.prefix.starts_with(&self.prefix)
            && later.port == self.port
            && compatible(&self.method, &later.method)
            && compatible(&self.authority, &later.authority)
            && same_map(&self.headers, &later.headers)
            && same_map(&self.query_params, &later.query_params)
            && same_map(&self.without_headers, &later.without_headers)
    }
}
