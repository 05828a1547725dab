//! PeerAuthentication, AuthorizationPolicy and RequestAuthentication rules.

use serde_json::Value;

use super::common::{
    duration_field, enum_field, validate_policy_selection, validate_workload_selector,
};
use super::node::Node;
use super::report::Ctx;
use super::rules;

const MTLS_MODES: &[&str] = &["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

pub(crate) fn validate_peer_authentication(spec: &Node, cx: &mut Ctx) {
    let selector = spec.get("selector");
    let empty_selector = selector.as_ref().is_none_or(|s| s.len("matchLabels") == 0);
    if let Some(m) = spec.obj("mtls", cx) {
        enum_field(&m, "mode", MTLS_MODES, cx);
    }
    if let Some(plm) = spec.get("portLevelMtls") {
        let entries = plm.entries(cx);
        if plm.v.is_object() && entries.is_empty() {
            cx.err(
                &plm.path,
                "port level mTLS, if defined, must have at least one element",
            );
        }
        if empty_selector && !entries.is_empty() {
            cx.err(
                &plm.path,
                "mesh/namespace peer authentication cannot have port level mTLS",
            );
        }
        for (port, m) in entries {
            if !port.parse::<i64>().is_ok_and(|p| (1..=65535).contains(&p)) {
                cx.err(&m.path, "port must be in range 1..65535");
            }
            if m.is_object(cx) {
                enum_field(&m, "mode", MTLS_MODES, cx);
            }
        }
    }
    if let Some(sel) = selector {
        validate_workload_selector(&sel, cx);
    }
}

/// Source fields, in Istio's order; all but `requestPrincipals` can be checked on plain TCP.
const SOURCE_FIELDS: &[(&str, &str)] = &[
    ("principals", "Principals"),
    ("requestPrincipals", "RequestPrincipals"),
    ("namespaces", "Namespaces"),
    ("ipBlocks", "IpBlocks"),
    ("remoteIpBlocks", "RemoteIpBlocks"),
    ("notPrincipals", "NotPrincipals"),
    ("notRequestPrincipals", "NotRequestPrincipals"),
    ("notNamespaces", "NotNamespaces"),
    ("notIpBlocks", "NotIpBlocks"),
    ("notRemoteIpBlocks", "NotRemoteIpBlocks"),
];

const OPERATION_FIELDS: &[(&str, &str)] = &[
    ("ports", "Ports"),
    ("methods", "Methods"),
    ("paths", "Paths"),
    ("hosts", "Hosts"),
    ("notPorts", "NotPorts"),
    ("notMethods", "NotMethods"),
    ("notPaths", "NotPaths"),
    ("notHosts", "NotHosts"),
];

pub(crate) fn validate_authorization_policy(spec: &Node, meta: &Value, cx: &mut Ctx) {
    let first_error = cx.error_count();
    validate_policy_selection(spec, cx);
    let action =
        enum_field(spec, "action", &["ALLOW", "DENY", "AUDIT", "CUSTOM"], cx).unwrap_or("ALLOW");
    let rules_list = spec.list("rules", cx);
    let has_rules = spec.list_present("rules");
    let provider = spec.get("provider");

    if action == "CUSTOM" {
        if !has_rules {
            cx.err(
                &spec.at("rules"),
                "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
            );
        } else if provider.as_ref().is_none_or(|p| {
            p.v.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        }) {
            cx.err(
                &spec.at("provider.name"),
                "`provider.name` must not be empty",
            );
        }
        for r in &rules_list {
            validate_custom_rule(r, cx);
        }
    }
    if let Some(p) = &provider
        && action != "CUSTOM"
    {
        cx.err(
            &p.path,
            format!("`provider` must not be with non CUSTOM action, found {action}"),
        );
    }
    if action == "DENY" && rules_list.is_empty() {
        cx.err(
            &spec.at("rules"),
            "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
        );
    }

    for (i, r) in rules_list.iter().enumerate() {
        if !r.is_object(cx) {
            continue;
        }
        validate_rule(r, i, action, cx);
    }

    // go-multierror's Prefix: every AuthorizationPolicy error names the policy.
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    cx.prefix_errors_from(first_error, &format!("invalid policy {name}.{namespace}:"));
}

fn validate_custom_rule(r: &Node, cx: &mut Ctx) {
    let mut quiet = Ctx::default();
    for f in r.list("from", &mut quiet) {
        let Some(src) = f.get("source") else {
            continue;
        };
        for (key, label) in [
            ("namespaces", "From.Namespaces"),
            ("notNamespaces", "From.NotNamespaces"),
            ("principals", "From.Principals"),
            ("notPrincipals", "From.NotPrincipals"),
            ("requestPrincipals", "From.RequestPrincipals"),
            ("notRequestPrincipals", "From.NotRequestPrincipals"),
        ] {
            if src.len(key) != 0 {
                cx.err(
                    &src.at(key),
                    format!("{label} is currently not supported with CUSTOM action"),
                );
            }
        }
    }
    for w in r.list("when", &mut quiet) {
        let key = w.v.get("key").and_then(Value::as_str).unwrap_or("");
        if key == "source.namespace"
            || key == "source.principal"
            || key.starts_with("request.auth.")
        {
            cx.err(
                &w.at("key"),
                format!("{key} is currently not supported with CUSTOM action"),
            );
        }
    }
}

fn validate_rule(r: &Node, i: usize, action: &str, cx: &mut Ctx) {
    if r.list_present("from") && r.len("from") == 0 {
        cx.err(
            &r.at("from"),
            format!("`from` must not be empty, found at rule {i}"),
        );
    }
    let (mut tcp_in_from, mut tcp_in_to, mut from_exists, mut to_exists) =
        (false, false, false, false);
    for f in r.list("from", cx) {
        if !f.is_object(cx) {
            continue;
        }
        let Some(src) = f.obj("source", cx) else {
            cx.err(
                &f.at("source"),
                format!("`from.source` must not be nil, found at rule {i}"),
            );
            continue;
        };
        from_exists = true;
        if SOURCE_FIELDS.iter().all(|(k, _)| src.len(k) == 0) {
            cx.err(
                &src.path,
                format!("`from.source` must not be empty, found at rule {i}"),
            );
        }
        for key in [
            "ipBlocks",
            "notIpBlocks",
            "remoteIpBlocks",
            "notRemoteIpBlocks",
        ] {
            for (path, v) in src.str_list(key, cx) {
                if !v.is_empty() {
                    cx.check(&path, rules::validate_ip_or_cidr(v));
                }
            }
        }
        for (key, label) in SOURCE_FIELDS {
            check_empty_values(&src, key, label, cx);
        }
        if SOURCE_FIELDS
            .iter()
            .any(|(k, _)| *k != "requestPrincipals" && *k != "notRequestPrincipals" && src.has(k))
        {
            tcp_in_from = true;
        }
    }
    if r.list_present("to") && r.len("to") == 0 {
        cx.err(
            &r.at("to"),
            format!("`to` must not be empty, found at rule {i}"),
        );
    }
    for t in r.list("to", cx) {
        if !t.is_object(cx) {
            continue;
        }
        let Some(op) = t.obj("operation", cx) else {
            cx.err(
                &t.at("operation"),
                format!("`to.operation` must not be nil, found at rule {i}"),
            );
            continue;
        };
        to_exists = true;
        if OPERATION_FIELDS.iter().all(|(k, _)| op.len(k) == 0) {
            cx.err(
                &op.path,
                format!("`to.operation` must not be empty, found at rule {i}"),
            );
        }
        for key in ["ports", "notPorts"] {
            for (path, p) in op.str_list(key, cx) {
                if !p.is_empty() {
                    cx.check(&path, rules::validate_port_string(p));
                }
            }
        }
        for (key, label) in OPERATION_FIELDS {
            check_empty_values(&op, key, label, cx);
        }
        for (key, label) in [("paths", "Paths"), ("notPaths", "NotPaths")] {
            for (path, p) in op.str_list(key, cx) {
                if is_unsupported_path_template(p) {
                    cx.err(
                        &path,
                        format!("invalid or unsupported path template, found in {label}"),
                    );
                }
            }
        }
        if op.has("ports") || op.has("notPorts") {
            tcp_in_to = true;
        }
    }
    for w in r.list("when", cx) {
        if !w.is_object(cx) {
            continue;
        }
        let key = w.str_or_empty("key", cx);
        if key.is_empty() {
            cx.err(&w.at("key"), "`key` must not be empty");
            continue;
        }
        let values = w.str_list("values", cx);
        let not_values = w.str_list("notValues", cx);
        if values.is_empty() && not_values.is_empty() {
            cx.err(
                &w.path,
                format!("at least one of `values` or `notValues` must be set for key {key}"),
            );
            continue;
        }
        for (field, list, word) in [
            ("values", &values, "value"),
            ("notValues", &not_values, "notValue"),
        ] {
            if list.is_empty() {
                continue;
            }
            let vals: Vec<&str> = list.iter().map(|(_, v)| *v).collect();
            if let Err(e) = validate_attribute(key, &vals) {
                cx.err(
                    &w.at(field),
                    format!("invalid `{word}` for `key` {key}: {e}"),
                );
            }
        }
    }
    if ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
        && action == "DENY"
    {
        cx.warn(
            &r.path,
            "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port",
        );
    }
}

fn check_empty_values(n: &Node, key: &str, label: &str, cx: &mut Ctx) {
    let mut quiet = Ctx::default();
    if let Some((path, _)) = n
        .str_list(key, &mut quiet)
        .into_iter()
        .find(|(_, v)| v.is_empty())
    {
        cx.err(&path, format!("empty value not allowed, found in {label}"));
    }
}

/// Path templates (`{*}`, `{**}`) are supported, but not named variables, bare `*` segments or `{}`.
fn is_unsupported_path_template(path: &str) -> bool {
    if !(path.contains("{*}") || path.contains("{**}")) {
        return false;
    }
    let b = path.as_bytes();
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    for i in 0..b.len() {
        match b[i] {
            b'{' => {
                // `{name}`, `{}` or `{name=*}` / `{name=**}`
                let mut j = i + 1;
                while j < b.len() && is_word(b[j]) {
                    j += 1;
                }
                if b.get(j) == Some(&b'}') {
                    return true;
                }
                if j > i + 1 && b.get(j) == Some(&b'=') && b.get(j + 1) == Some(&b'*') {
                    let k = if b.get(j + 2) == Some(&b'*') {
                        j + 3
                    } else {
                        j + 2
                    };
                    if b.get(k) == Some(&b'}') && i > 0 && b[i - 1] == b'/' {
                        return true;
                    }
                }
            }
            // `/*` or `/**` outside braces, or `*/`, `**/`
            b'*' => {
                let prev = if i > 0 { b[i - 1] } else { 0 };
                let next = b.get(i + 1).copied().unwrap_or(0);
                if prev == b'/' || next == b'/' {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// `when` condition keys and their values.
fn validate_attribute(key: &str, values: &[&str]) -> Result<(), String> {
    if values.iter().any(|v| v.is_empty()) {
        return Err(format!("empty value not allowed, found in {key}"));
    }
    let map_key = |key: &str| {
        let open = key.find('[');
        match open {
            Some(o) if key.ends_with(']') && o > 0 && o < key.len() - 2 => Ok(()),
            _ => Err(format!("bad key ({key}): should have format a[b]")),
        }
    };
    let ips = |values: &[&str]| {
        let errs: Vec<String> = values
            .iter()
            .filter_map(|v| rules::validate_ip_or_cidr(v).err())
            .collect();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    };
    match key {
        k if k.starts_with("request.headers") => map_key(k),
        "source.ip" | "remote.ip" | "destination.ip" => ips(values),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni"
        | "source.serviceAccount" => Ok(()),
        k if k.starts_with("request.auth.claims") => map_key(k),
        k if k.starts_with("experimental.envoy.filters.") => map_key(k),
        "destination.port" => {
            let errs: Vec<String> = values
                .iter()
                .filter_map(|v| rules::validate_port_string(v).err())
                .collect();
            if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("; "))
            }
        }
        "destination.namespace" => Err(format!(
            "attribute {key} is replaced by the metadata.namespace"
        )),
        k if k.starts_with("destination.labels") => Err(format!(
            "attribute {key} is replaced by the workload selector"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ => Err(format!("unknown attribute: {key}")),
    }
}

pub(crate) fn validate_request_authentication(spec: &Node, cx: &mut Ctx) {
    validate_policy_selection(spec, cx);
    for r in spec.list("jwtRules", cx) {
        if r.is_object(cx) {
            validate_jwt_rule(&r, cx);
        }
    }
}

fn validate_jwt_rule(r: &Node, cx: &mut Ctx) {
    if r.str_or_empty("issuer", cx).is_empty() {
        cx.err(&r.at("issuer"), "issuer must be set");
    }
    for (path, a) in r.str_list("audiences", cx) {
        if a.is_empty() {
            cx.err(&path, "audience must be non-empty string");
        }
    }
    let uri_node = r.get_any(&["jwksUri", "jwks_uri"]);
    if r.has("jwksUri") && r.has("jwks_uri") {
        cx.err(&r.path, "only one of jwksUri or jwks_uri can be set");
    }
    let jwks = r.str_or_empty("jwks", cx);
    if let Some(u) = &uri_node
        && let Some(uri) = u.as_str(cx)
        && !uri.is_empty()
    {
        let scheme = uri.split_once("://").map(|(s, _)| s).unwrap_or("");
        if scheme != "http" && scheme != "https" {
            cx.err(&u.path, format!("URI scheme {scheme:?} is not supported"));
        } else if uri[scheme.len() + 3..]
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("")
            .is_empty()
        {
            cx.err(&u.path, format!("jwksUri {uri:?} has no host"));
        }
        if !jwks.is_empty() {
            cx.err(&r.path, "only one of jwks or jwksUri can be set");
        }
    }
    if !jwks.is_empty() {
        match serde_json::from_str::<Value>(jwks) {
            Err(e) => cx.err(&r.at("jwks"), format!("jwks parse error: {e}")),
            Ok(v) if !(v.get("keys").is_some_and(Value::is_array) || v.get("kty").is_some()) => cx.err(
                &r.at("jwks"),
                "jwks parse error: expected a JSON Web Key Set (an object with a \"keys\" list) or a single key",
            ),
            Ok(_) => {}
        }
    }
    for h in r.list("fromHeaders", cx) {
        if !h.is_object(cx) {
            continue;
        }
        if h.str_or_empty("name", cx).is_empty() {
            cx.err(
                &h.at("name"),
                "location header name must be non-empty string",
            );
        }
    }
    for (path, p) in r.str_list("fromParams", cx) {
        if p.is_empty() {
            cx.err(&path, "location query must be non-empty string");
        }
    }
    for (path, c) in r.str_list("fromCookies", cx) {
        if c.is_empty() {
            cx.err(&path, "cookie name must be non-empty string");
        }
    }
    for o in r.list("outputClaimToHeaders", cx) {
        if !o.is_object(cx) {
            continue;
        }
        let claim = o.str_or_empty("claim", cx);
        let header = o.str_or_empty("header", cx);
        if claim.is_empty() || header.is_empty() {
            cx.err(
                &o.path,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
            continue;
        }
        cx.check(&o.at("header"), rules::validate_header_name(header));
    }
    duration_field(r, "timeout", cx);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn path_templates() {
        assert!(!is_unsupported_path_template("/foo/{*}/bar"));
        assert!(!is_unsupported_path_template("/foo/{**}"));
        assert!(!is_unsupported_path_template("/info*"));
        assert!(is_unsupported_path_template("/{*}/foo/{bar}"));
        assert!(is_unsupported_path_template("/foo/{*}/*"));
        assert!(is_unsupported_path_template("/{*}/**/x"));
        assert!(is_unsupported_path_template("/{*}/{}"));
    }

    #[test]
    fn attributes() {
        assert!(validate_attribute("request.headers[x-foo]", &["a"]).is_ok());
        assert!(
            validate_attribute("request.headers", &["a"])
                .unwrap_err()
                .contains("a[b]")
        );
        assert!(validate_attribute("source.ip", &["10.0.0.0/8"]).is_ok());
        assert!(validate_attribute("source.ip", &["nope"]).is_err());
        assert!(validate_attribute("destination.port", &["80"]).is_ok());
        assert!(validate_attribute("destination.port", &["x"]).is_err());
        assert!(
            validate_attribute("foo.bar", &["x"])
                .unwrap_err()
                .contains("unknown attribute")
        );
        assert!(
            validate_attribute("destination.labels[app]", &["x"])
                .unwrap_err()
                .contains("workload selector")
        );
    }
}
