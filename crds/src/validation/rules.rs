//! Reusable rules on single values (hosts, labels, ports, durations, regexes, ...), each returning Istio's
//! message on failure. Kind validators combine them and attach field paths.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

/// Outcome of one rule: `Err` carries the message users see.
pub type RuleResult = Result<(), String>;

pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;

/// RFC 1123 label: alphanumerics and `-`, starting and ending with an alphanumeric, at most 63 characters.
pub fn is_dns1123_label(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX_LENGTH
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// A DNS label that may carry a wildcard prefix: `*`, `*foo`, `*-foo` or a plain label.
pub fn is_wildcard_dns1123_label(value: &str) -> bool {
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        return false;
    }
    if value == "*" {
        return true;
    }
    let rest = value
        .strip_prefix("*-")
        .or_else(|| value.strip_prefix('*'))
        .unwrap_or(value);
    is_dns1123_label(rest)
}

/// RFC 1123 subdomain (Kubernetes object names): dot-separated labels, at most 253 characters, lower case.
pub fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253
        && !value.is_empty()
        && value
            .split('.')
            .all(|l| is_dns1123_label(l) && !l.bytes().any(|c| c.is_ascii_uppercase()))
}

fn check_dns1123_preconditions(name: &str) -> RuleResult {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn validate_dns1123_labels(domain: &str) -> RuleResult {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts.last().copied().unwrap_or("");
    if !tld.is_empty() && tld.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is an unambiguous absolute name.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully-qualified domain name (no wildcard).
pub fn validate_fqdn(fqdn: &str) -> RuleResult {
    check_dns1123_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

/// A domain that may have a wildcard in its first label (`*.example.com`, `*`).
pub fn validate_wildcard_domain(domain: &str) -> RuleResult {
    check_dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => validate_dns1123_labels(rest),
        None => Ok(()),
    }
}

/// A wildcard is allowed only as the whole first label (`*` or `*.foo`), never `*foo.com`.
pub fn validate_partial_wildcard(host: &str) -> RuleResult {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!("partial wildcard {host:?} not allowed"));
    }
    Ok(())
}

pub fn is_ip_address(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

pub fn validate_ip_address(addr: &str) -> RuleResult {
    if is_ip_address(addr) {
        Ok(())
    } else {
        Err(format!("{addr} is not a valid IP"))
    }
}

/// `a.b.c.d`, `a.b.c.d/nn` or the IPv6 forms.
pub fn validate_ip_subnet(subnet: &str) -> RuleResult {
    if subnet.matches('/').count() == 1 {
        return match subnet.parse::<IpNet>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{subnet} is not a valid CIDR block")),
        };
    }
    validate_ip_address(subnet)
}

/// AuthorizationPolicy ipBlocks and IP conditions: addresses or CIDR ranges.
pub fn validate_ip_or_cidr(v: &str) -> RuleResult {
    if v.contains('/') {
        v.parse::<IpNet>()
            .map(|_| ())
            .map_err(|e| format!("bad CIDR range ({v}): {e}"))
    } else if is_ip_address(v) {
        Ok(())
    } else {
        Err(format!("bad IP address ({v})"))
    }
}

pub fn validate_port(port: i64) -> RuleResult {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// Ports written as strings (AuthorizationPolicy `ports`, `destination.port` conditions).
pub fn validate_port_string(port: &str) -> RuleResult {
    match port.parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(()),
        Ok(p) => Err(format!("bad port ({port}): {p} is out of range 0..65535")),
        Err(e) => Err(format!("bad port ({port}): {e}")),
    }
}

pub fn validate_port_name(name: &str) -> RuleResult {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

/// Istio's protocol names, matched case-insensitively as Istio does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    Mysql,
    Hbone,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            "hbone" => Protocol::Hbone,
            _ => return None,
        })
    }

    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::Mysql
        )
    }
}

/// Empty means "sniff the protocol" and is valid.
pub fn validate_protocol(protocol: &str) -> RuleResult {
    if protocol.is_empty() || Protocol::parse(protocol).is_some() {
        Ok(())
    } else {
        Err(format!("unsupported protocol: {protocol}"))
    }
}

/// Parses a Go / protobuf-JSON duration: `500ms`, `1.5s`, `1h30m`, `0s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    if body.is_empty() {
        return Err(bad());
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("invalid duration {s:?}: missing unit"))?;
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut value = int.checked_mul(unit_nanos).ok_or_else(bad)?;
        // Fractions are exact to the nanosecond, as Go's parser is.
        let mut scale = unit_nanos;
        for d in frac_part.bytes() {
            scale /= 10;
            value += u128::from(d - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(value).ok_or_else(bad)?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| bad())?;
    // The remainder is below 1e9 and so always fits.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Istio's duration rule: at least 1ms and a whole number of milliseconds.
pub fn validate_duration(s: &str) -> RuleResult {
    let d =
        parse_duration(s).map_err(|e| format!("{e}: must be a valid duration greater than 1ms"))?;
    if d < Duration::from_millis(1) {
        return Err("duration must be greater than 1ms".into());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

/// Integer percentages (outlier detection `maxEjectionPercent`, `minHealthPercent`).
pub fn validate_percent(val: i64) -> RuleResult {
    if (0..=100).contains(&val) {
        Ok(())
    } else {
        Err(format!("percentage {val} is not in range 0..100"))
    }
}

/// Fractional percentages (`fault.*.percentage.value`).
pub fn validate_percentage(value: f64) -> RuleResult {
    if !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
        Err(format!(
            "percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"
        ))
    } else {
        Ok(())
    }
}

pub fn validate_weight(weight: i64) -> RuleResult {
    if weight < 0 {
        Err(format!("weight {weight} < 0"))
    } else {
        Ok(())
    }
}

/// Compiles an RE2-style regex (the `regex` crate implements the same syntax without backtracking).
pub fn validate_regex(re: &str, what: &str) -> RuleResult {
    if re.len() > 1024 {
        return Err(format!(
            "{what:?}: regex is too large, max length allowed is 1024"
        ));
    }
    match regex::Regex::new(re) {
        Ok(_) => Ok(()),
        Err(e) => {
            let detail = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            Err(format!(
                "{what:?}: error parsing regexp {re:?}: {detail}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
            ))
        }
    }
}

fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

pub fn validate_header_name(name: &str) -> RuleResult {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if !is_header_token(name) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

/// CORS allow/expose headers also accept `*`.
pub fn validate_cors_header_name(name: &str) -> RuleResult {
    if name == "*" {
        return Ok(());
    }
    validate_header_name(name)
}

/// `@request.auth.claims.a.b` or `@request.auth.claims[a][b]` (JWT claim routing on gateways).
pub fn is_jwt_claim_route(name: &str) -> bool {
    match name.strip_prefix("@request.auth.claims") {
        Some(rest) if rest.len() > 1 && rest.starts_with('.') => {
            rest[1..].split('.').all(|p| !p.is_empty())
        }
        Some(rest) if rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2 => rest
            [1..rest.len() - 1]
            .split("][")
            .all(|p| !p.is_empty() && !p.contains('[') && !p.contains(']')),
        _ => false,
    }
}

pub fn validate_header_name_or_jwt_claim(name: &str) -> RuleResult {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name) {
        return Ok(());
    }
    validate_header_name(name)
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

pub fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Request `set`/`add`: the authority may be rewritten here, other pseudo-headers may not.
pub fn validate_header_operation_name_with_authority(name: &str) -> RuleResult {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Request `remove` and all response operations.
pub fn validate_header_operation_name(name: &str) -> RuleResult {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if is_internal_header(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Header values: no control characters, and every `%` is either `%%` or opens a `%VARIABLE%`.
pub fn validate_header_value(value: &str) -> RuleResult {
    if value
        .chars()
        .any(|c| (c.is_control() && c != '\t') || c == '\u{7f}')
    {
        return Err(format!("header value configuration {value} is invalid"));
    }
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if b.get(i + 1) == Some(&b'%') {
                i += 2;
                continue;
            }
            match b[i + 1..].iter().position(|c| *c == b'%') {
                Some(0) | None => {
                    return Err(format!(
                        "header value configuration: invalid header configuration. Un-terminated variable expression '{}'",
                        &value[i..]
                    ));
                }
                Some(len) => i += len + 2,
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

pub const SUPPORTED_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

pub fn validate_http_method(method: &str) -> RuleResult {
    if SUPPORTED_METHODS.contains(&method) {
        Ok(())
    } else {
        Err(format!("{method:?} is not a supported HTTP method"))
    }
}

/// HTTP status codes that have a standard reason phrase (what Go's `http.StatusText` knows).
pub fn is_known_http_status(code: i64) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
        | 500..=508 | 510 | 511)
}

pub const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Every comma-separated `retryOn` entry must be a known policy or an HTTP status code; all bad ones are reported.
pub fn validate_retry_on(retry_on: &str) -> Vec<String> {
    retry_on
        .split(',')
        .filter(|p| {
            let is_status = p.parse::<i64>().map(is_known_http_status).unwrap_or(false);
            !is_status && !RETRY_ON_POLICIES.contains(p)
        })
        .map(|p| format!("{p:?} is not a valid retryOn policy"))
        .collect()
}

pub const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub fn validate_grpc_status(status: &str) -> RuleResult {
    if GRPC_STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "gRPC status {status:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"
        ))
    }
}

/// Istio checks `status < 200 || status > 600` although its message says 200-599; 600 is accepted.
pub fn validate_http_status(status: i64) -> RuleResult {
    if !(200..=600).contains(&status) {
        Err(format!("HTTP status {status} is not in range 200-599"))
    } else {
        Ok(())
    }
}

pub fn validate_subset_name(name: &str) -> RuleResult {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A Kubernetes label key: optional DNS-name prefix and `/`, then a qualified name of at most 63 characters.
pub fn validate_label_key(k: &str) -> RuleResult {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| !p.is_empty() && p.split('.').all(is_dns1123_label));
    if !prefix_ok || !is_qualified_name(name) {
        return Err(format!("invalid tag key: {k:?}"));
    }
    if prefix.is_some_and(|p| p.len() > 253) {
        return Err(format!("invalid tag key: {k:?} (DNS prefix is too long)"));
    }
    if name.len() > DNS1123_LABEL_MAX_LENGTH {
        return Err(format!("invalid tag key: {k:?} (name is too long)"));
    }
    Ok(())
}

/// A Kubernetes label value: empty, or a qualified name.
pub fn validate_label_value(v: &str) -> RuleResult {
    if v.is_empty() || (is_qualified_name(v) && v.len() <= DNS1123_LABEL_MAX_LENGTH) {
        Ok(())
    } else {
        Err(format!("invalid tag value: {v:?}"))
    }
}

/// Path of a Unix domain socket (after `unix://`): absolute file path or abstract socket (`@name`).
pub fn validate_unix_address(addr: &str) -> RuleResult {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Maglev table sizes must be prime (Envoy's own check).
pub fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut f = 3u64;
    while f.saturating_mul(f) <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

/// Hostname part of `namespace/host` in Sidecar egress and Gateway servers.
fn validate_sidecar_or_gateway_hostname_part(hostname: &str, is_gateway: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if hostname != "*" && !hostname.contains('.') {
        errs.push("short names (non FQDN) are not allowed".to_string());
    }
    if let Err(e) = validate_wildcard_domain(hostname) {
        // Gateways also accept an IP address as host.
        if !is_gateway || !is_ip_address(hostname) {
            errs.push(e);
        }
    }
    if let Err(e) = validate_partial_wildcard(hostname) {
        errs.push(e);
    }
    errs
}

/// Sidecar egress hosts and Gateway server hosts: `namespace/dnsName` (gateways also accept a bare dnsName).
pub fn validate_namespace_slash_wildcard_hostname(hostname: &str, is_gateway: bool) -> Vec<String> {
    let Some((ns, host)) = hostname.split_once('/') else {
        if is_gateway {
            return validate_sidecar_or_gateway_hostname_part(hostname, true);
        }
        return vec!["host must be of form namespace/dnsName".to_string()];
    };
    let mut errs = Vec::new();
    if ns.is_empty() || host.is_empty() {
        errs.push("config namespace and dnsName in host entry cannot be empty".to_string());
    }
    let special = ns == "*" || ns == "." || (!is_gateway && ns == "~");
    if !special && !is_dns1123_label(ns) {
        let kind = if is_gateway { "gateway" } else { "sidecar" };
        errs.push(format!("invalid namespace value {ns:?} in {kind}"));
    }
    errs.extend(validate_sidecar_or_gateway_hostname_part(host, is_gateway));
    errs
}

/// Does wildcard host `a` match host `b` (either direction of wildcard), as Istio's `host.Name.Matches`?
pub fn hosts_match(a: &str, b: &str) -> bool {
    let aw = a.starts_with('*');
    let bw = b.starts_with('*');
    match (aw, bw) {
        (false, false) => a == b,
        (true, false) => b.ends_with(&a[1..]),
        (false, true) => a.ends_with(&b[1..]),
        (true, true) => {
            if a.len() > b.len() {
                a.ends_with(&b[1..])
            } else {
                b.ends_with(&a[1..])
            }
        }
    }
}

/// Is every host matched by `a` also matched by `b` (`host.Name.SubsetOf`)?
pub fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a_suffix), Some(b_suffix)) => a.len() >= b.len() && a_suffix.ends_with(b_suffix),
        (None, Some(b_suffix)) => a.ends_with(b_suffix),
        (Some(_), None) => false,
        (None, None) => a == b,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("reviews-v1"));
        assert!(is_dns1123_label("A1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a-"));
        assert!(!is_dns1123_label("a_b"));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_wildcard_dns1123_label("*"));
        assert!(is_wildcard_dns1123_label("*-foo"));
        assert!(is_wildcard_dns1123_label("*foo"));
        assert!(!is_wildcard_dns1123_label("**"));
        assert!(!is_wildcard_dns1123_label("foo*"));
        assert!(is_dns1123_subdomain("my-name.v1"));
        assert!(!is_dns1123_subdomain("My-Name"));
    }

    #[test]
    fn domains() {
        assert!(validate_fqdn("reviews.default.svc.cluster.local").is_ok());
        assert!(validate_fqdn("istio.io.").is_ok());
        assert!(validate_fqdn("").unwrap_err().contains("empty domain name"));
        assert!(validate_fqdn("a.123").unwrap_err().contains("all-numeric"));
        assert!(
            validate_fqdn("*.a.com")
                .unwrap_err()
                .contains("label \"*\" invalid")
        );
        assert!(
            validate_fqdn(&"a.".repeat(130))
                .unwrap_err()
                .contains("too long")
        );
        assert!(validate_wildcard_domain("*.a.com").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("a.*.com").is_err());
        assert!(validate_wildcard_domain("foo_bar.com").is_err());
        assert!(validate_partial_wildcard("*foo.com").is_err());
        assert!(validate_partial_wildcard("*.foo.com").is_ok());
    }

    #[test]
    fn ips_and_cidrs() {
        assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
        assert!(validate_ip_subnet("2001:db8::/32").is_ok());
        assert!(validate_ip_subnet("1.2.3.4").is_ok());
        assert_eq!(
            validate_ip_subnet("10.0.0.0/33").unwrap_err(),
            "10.0.0.0/33 is not a valid CIDR block"
        );
        assert_eq!(
            validate_ip_subnet("1.2.3").unwrap_err(),
            "1.2.3 is not a valid IP"
        );
        assert!(
            validate_ip_or_cidr("1.2.3.4/40")
                .unwrap_err()
                .starts_with("bad CIDR range (1.2.3.4/40)")
        );
        assert_eq!(validate_ip_or_cidr("x").unwrap_err(), "bad IP address (x)");
    }

    #[test]
    fn ports() {
        assert!(validate_port(1).is_ok());
        assert!(validate_port(65535).is_ok());
        assert_eq!(
            validate_port(0).unwrap_err(),
            "port number 0 must be in the range 1..65535"
        );
        assert!(validate_port(65536).is_err());
        assert!(validate_port_string("8080").is_ok());
        assert!(validate_port_string("70000").is_err());
        assert!(validate_port_string("http").is_err());
        assert!(validate_port_name("http-web").is_ok());
        assert_eq!(
            validate_port_name("Http_x").unwrap_err(),
            "invalid port name: Http_x"
        );
    }

    #[test]
    fn protocols() {
        assert!(validate_protocol("").is_ok());
        assert!(validate_protocol("http").is_ok());
        assert!(validate_protocol("GRPC-Web").is_ok());
        assert_eq!(
            validate_protocol("FTP").unwrap_err(),
            "unsupported protocol: FTP"
        );
        assert!(Protocol::parse("HTTPS").is_some_and(|p| p.is_tls() && p.is_tcp() && !p.is_http()));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(validate_duration("1ms").is_ok());
        assert_eq!(
            validate_duration("0s").unwrap_err(),
            "duration must be greater than 1ms"
        );
        assert_eq!(
            validate_duration("1.0005s").unwrap_err(),
            "only durations to ms precision are supported"
        );
        assert!(
            validate_duration("abc")
                .unwrap_err()
                .contains("must be a valid duration greater than 1ms")
        );
        assert!(validate_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn percents_and_weights() {
        assert!(validate_percent(100).is_ok());
        assert_eq!(
            validate_percent(101).unwrap_err(),
            "percentage 101 is not in range 0..100"
        );
        assert!(validate_percentage(0.0).is_ok());
        assert!(validate_percentage(0.0001).is_ok());
        assert!(validate_percentage(0.00001).is_err());
        assert!(validate_percentage(100.5).is_err());
        assert!(validate_percentage(-1.0).is_err());
        assert!(validate_weight(0).is_ok());
        assert_eq!(validate_weight(-1).unwrap_err(), "weight -1 < 0");
    }

    #[test]
    fn regexes() {
        assert!(validate_regex("^/api/v[0-9]+/.*$", "uri").is_ok());
        let e = validate_regex("(unclosed", "uri").unwrap_err();
        assert!(e.starts_with("\"uri\": error parsing regexp"));
        assert!(e.contains("RE2"));
        assert!(!e.contains('\n'));
        // Backreferences and lookaround are not RE2.
        assert!(validate_regex("(a)\\1", "uri").is_err());
        assert!(validate_regex("a(?=b)", "uri").is_err());
        assert!(
            validate_regex(&"a".repeat(1025), "uri")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn headers() {
        assert!(validate_header_name("x-user_id").is_ok());
        assert_eq!(
            validate_header_name("").unwrap_err(),
            "header name cannot be empty"
        );
        assert!(validate_header_name("x user").is_err());
        assert!(validate_cors_header_name("*").is_ok());
        assert!(validate_header_name_or_jwt_claim("@request.auth.claims.groups").is_ok());
        assert!(validate_header_name_or_jwt_claim("@request.auth.claims[a][b]").is_ok());
        assert!(validate_header_name_or_jwt_claim("@request.auth.claims").is_err());
        assert!(validate_header_operation_name_with_authority(":authority").is_ok());
        assert!(validate_header_operation_name_with_authority("Host").is_ok());
        assert!(validate_header_operation_name_with_authority(":path").is_err());
        assert!(
            validate_header_operation_name("host")
                .unwrap_err()
                .contains("cannot set Host header")
        );
        assert!(validate_header_operation_name(":status").is_err());
        assert!(validate_header_value("100%%").is_ok());
        assert!(validate_header_value("%HOSTNAME%").is_ok());
        assert!(validate_header_value("prefix %HOSTNAME% suffix").is_ok());
        assert!(validate_header_value("abc%123").is_err());
        assert!(validate_header_value("%START_TIME%%").is_err());
        assert!(validate_header_value("a\u{1}b").is_err());
    }

    #[test]
    fn methods_statuses_retry() {
        assert!(validate_http_method("GET").is_ok());
        assert_eq!(
            validate_http_method("get").unwrap_err(),
            "\"get\" is not a supported HTTP method"
        );
        assert!(validate_http_status(600).is_ok());
        assert!(validate_http_status(199).is_err());
        assert!(validate_grpc_status("NOT_FOUND").is_ok());
        assert!(validate_grpc_status("NOPE").is_err());
        assert!(validate_retry_on("5xx,gateway-error,503").is_empty());
        assert_eq!(
            validate_retry_on("5xx,bogus,999"),
            vec![
                "\"bogus\" is not a valid retryOn policy",
                "\"999\" is not a valid retryOn policy"
            ]
        );
    }

    #[test]
    fn labels() {
        assert!(validate_label_key("app.kubernetes.io/name").is_ok());
        assert!(validate_label_key("version").is_ok());
        assert!(validate_label_key("-bad").is_err());
        assert!(validate_label_key("a/b/c").is_err());
        assert!(
            validate_label_key(&"a".repeat(64))
                .unwrap_err()
                .contains("name is too long")
        );
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("1.3.4").is_ok());
        assert_eq!(
            validate_label_value("a b").unwrap_err(),
            "invalid tag value: \"a b\""
        );
        assert!(validate_subset_name("v1").is_ok());
        assert!(validate_subset_name("").is_err());
        assert!(validate_subset_name("v1.0").is_err());
    }

    #[test]
    fn unix_and_primes() {
        assert!(validate_unix_address("/var/run/x.sock").is_ok());
        assert!(validate_unix_address("@abstract").is_ok());
        assert!(validate_unix_address("rel/path").is_err());
        assert!(validate_unix_address("/dir/").is_err());
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(!is_prime(9));
    }

    #[test]
    fn namespace_slash_hosts() {
        assert!(validate_namespace_slash_wildcard_hostname("abc/*", false).is_empty());
        assert!(validate_namespace_slash_wildcard_hostname("./foo.com", false).is_empty());
        assert!(validate_namespace_slash_wildcard_hostname("~/*", false).is_empty());
        assert_eq!(
            validate_namespace_slash_wildcard_hostname("foo.com", false),
            vec!["host must be of form namespace/dnsName"]
        );
        assert!(validate_namespace_slash_wildcard_hostname("foo.com", true).is_empty());
        assert!(validate_namespace_slash_wildcard_hostname("1.2.3.4", true).is_empty());
        assert!(
            validate_namespace_slash_wildcard_hostname("ns/reviews", false)
                .contains(&"short names (non FQDN) are not allowed".to_string())
        );
        assert!(
            validate_namespace_slash_wildcard_hostname("Bad_NS/a.com", true)
                .contains(&"invalid namespace value \"Bad_NS\" in gateway".to_string())
        );
        assert!(!validate_namespace_slash_wildcard_hostname("*/*foo.com", true).is_empty());
    }

    #[test]
    fn host_matching() {
        assert!(hosts_match("*.foo.com", "a.foo.com"));
        assert!(hosts_match("*.com", "*.foo.com"));
        assert!(!hosts_match("a.com", "b.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(host_subset_of("*.a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.com", "*.foo.com"));
        assert!(host_subset_of("foo.com", "foo.com"));
    }
}
