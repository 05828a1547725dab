//! Rules on message types shared by several kinds: label maps, workload selectors, exportTo, gateway names,
//! destinations, string matches, policy target references, enums.

use super::node::Node;
use super::report::Ctx;
use super::rules;

/// Enum fields: the API server rejects unknown values with this (Kubernetes') wording.
pub(crate) fn enum_field<'a>(
    n: &Node<'a>,
    key: &str,
    allowed: &[&str],
    cx: &mut Ctx,
) -> Option<&'a str> {
    let f = n.get(key)?;
    let v = f.as_str(cx)?;
    if allowed.contains(&v) {
        Some(v)
    } else {
        let list = allowed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        cx.err(
            &f.path,
            format!("Unsupported value: {v:?}: supported values: {list}"),
        );
        None
    }
}

/// A Kubernetes label map (`labels`, `sourceLabels`): every key and value well-formed.
pub(crate) fn validate_labels(n: &Node, key: &str, cx: &mut Ctx) {
    for (path, k, v) in n.str_map(key, cx) {
        cx.check(&path, rules::validate_label_key(k));
        cx.check(&path, rules::validate_label_value(v));
    }
}

/// `selector: {matchLabels: ...}` of security kinds and DestinationRule `workloadSelector`.
pub(crate) fn validate_workload_selector(selector: &Node, cx: &mut Ctx) {
    if !selector.is_object(cx) {
        return;
    }
    let labels = selector.str_map("matchLabels", cx);
    for (path, k, v) in &labels {
        selector_entry(path, k, v, cx);
    }
    if labels.is_empty() {
        cx.warn(&selector.path, "workload selector specified without labels");
    }
}

fn selector_entry(path: &str, k: &str, v: &str, cx: &mut Ctx) {
    if k.is_empty() {
        cx.err(
            path,
            format!(
                "empty key is not supported in selector: {:?}",
                format!("{k}={v}")
            ),
        );
    }
    if k.contains('*') || v.contains('*') {
        cx.err(
            path,
            format!(
                "wildcard is not supported in selector: {:?}",
                format!("{k}={v}")
            ),
        );
    }
}

/// `workloadSelector: {labels: ...}` of Sidecar and ServiceEntry; `what` names the kind in the warning.
pub(crate) fn validate_alpha_workload_selector(spec: &Node, what: &str, cx: &mut Ctx) {
    let Some(sel) = spec.obj("workloadSelector", cx) else {
        return;
    };
    let labels = sel.str_map("labels", cx);
    for (path, k, v) in &labels {
        selector_entry(path, k, v, cx);
    }
    if labels.is_empty() {
        cx.warn(
            &sel.path,
            format!("{what}: workload selector specified without labels, will be applied to all services in namespace"),
        );
    }
}

/// `exportTo`: `.`, `*`, `~` (ServiceEntry only) or namespace names, no duplicates, no mixing `*` or `~`.
pub(crate) fn validate_export_to(
    spec: &Node,
    namespace: &str,
    is_service_entry: bool,
    is_dr_with_selector: bool,
    cx: &mut Ctx,
) {
    let entries = spec.str_list("exportTo", cx);
    if entries.is_empty() {
        return;
    }
    let path = spec.at("exportTo");
    let mut seen: Vec<String> = Vec::new();
    for (p, e) in &entries {
        // `.` means this namespace; compare it with an explicit entry for the same namespace.
        let key = if *e == "." {
            namespace.to_string()
        } else {
            e.to_string()
        };
        if seen.contains(&key) {
            if key != *e {
                cx.err(
                    p,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                cx.err(p, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        let valid =
            *e == "." || *e == "*" || rules::is_dns1123_label(e) || (is_service_entry && *e == "~");
        if valid {
            seen.push(key);
        } else if *e == "~" {
            cx.err(
                p,
                "exportTo ~ (visible to no namespace) is only allowed on ServiceEntry",
            );
        } else {
            cx.err(
                p,
                format!(
                    "only .,*,~ or a valid DNS 1123 label is allowed as exportTo entry, found {e:?}"
                ),
            );
        }
    }
    if is_dr_with_selector && !seen.is_empty() {
        if seen.iter().any(|s| s == namespace) {
            if seen.len() > 1 {
                cx.err(&path, "destination rule with workload selector cannot have multiple entries in exportTo");
            }
        } else {
            cx.err(&path, "destination rule with workload selector cannot have exportTo beyond current namespace");
        }
    }
    if seen.iter().any(|s| s == "*") && entries.len() > 1 {
        cx.err(
            &path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.iter().any(|s| s == "~") && entries.len() > 1 {
        cx.err(
            &path,
            "cannot export service entry to no one (~) and someone",
        );
    }
}

/// VirtualService `gateways` (and per-match `gateways`): `namespace/name`, `mesh`, or the legacy `name.namespace`.
pub(crate) fn validate_gateway_names(n: &Node, key: &str, cx: &mut Ctx) {
    for (path, name) in n.str_list(key, cx) {
        match name.split_once('/') {
            None => {
                if let Some((gw, ns)) = name.split_once('.') {
                    let ns = ns.split('.').next().unwrap_or(ns);
                    cx.warn(
                        &path,
                        format!(
                            "using legacy gatewayName format {name:?}; prefer the <namespace>/<name> format: {:?}",
                            format!("{ns}/{gw}")
                        ),
                    );
                }
                cx.check(&path, rules::validate_fqdn(name));
            }
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    cx.err(&path, "config namespace and gateway name cannot be empty");
                }
                if !rules::is_dns1123_label(ns) {
                    cx.err(&path, format!("invalid value for namespace: {ns:?}"));
                }
                if !rules::is_dns1123_label(gw) {
                    cx.err(&path, format!("invalid value for gateway name: {gw:?}"));
                }
            }
        }
    }
}

/// `{number: N}` port selectors.
pub(crate) fn validate_port_selector(port: &Node, cx: &mut Ctx) {
    if !port.is_object(cx) {
        return;
    }
    let number = port.i64("number", cx).unwrap_or(0);
    cx.check(&port.at("number"), rules::validate_port(number));
}

/// A route/mirror destination: host (no bare `*`), subset name, port.
pub(crate) fn validate_destination(dest: &Node, cx: &mut Ctx) {
    if !dest.is_object(cx) {
        return;
    }
    let host_path = dest.at("host");
    match dest.str("host", cx) {
        Some("*") => cx.err(&host_path, "invalid destination host *"),
        Some(h) => cx.check(&host_path, rules::validate_wildcard_domain(h)),
        None => cx.err(&host_path, "destination host is required"),
    }
    if let Some(subset) = dest.str("subset", cx)
        && !subset.is_empty()
    {
        cx.check(&dest.at("subset"), rules::validate_subset_name(subset));
    }
    if let Some(port) = dest.get("port") {
        validate_port_selector(&port, cx);
    }
}

/// Which form a `StringMatch` takes.
pub(crate) enum StringMatch<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
    Empty,
}

/// Reads a `StringMatch` (`exact` | `prefix` | `regex`, exactly one).
pub(crate) fn string_match<'a>(n: &Node<'a>, cx: &mut Ctx) -> StringMatch<'a> {
    if !n.is_object(cx) {
        return StringMatch::Empty;
    }
    let set: Vec<&str> = ["exact", "prefix", "regex"]
        .into_iter()
        .filter(|k| n.has(k))
        .collect();
    if set.len() > 1 {
        cx.err(
            &n.path,
            format!(
                "only one of exact, prefix or regex may be set, found {}",
                set.join(", ")
            ),
        );
    }
    if let Some(v) = n.str("exact", cx) {
        StringMatch::Exact(v)
    } else if let Some(v) = n.str("prefix", cx) {
        StringMatch::Prefix(v)
    } else if let Some(v) = n.str("regex", cx) {
        StringMatch::Regex(v)
    } else {
        StringMatch::Empty
    }
}

/// StringMatch rules: a regex must compile; an empty prefix or regex is rejected unless `allow_empty_prefix`
/// (URIs may match on an empty prefix).
pub(crate) fn validate_string_match(n: &Node, what: &str, allow_empty_prefix: bool, cx: &mut Ctx) {
    match string_match(n, cx) {
        StringMatch::Prefix("") if !allow_empty_prefix => {
            cx.err(
                &n.at("prefix"),
                format!("{what:?}: prefix string match should not be empty"),
            );
        }
        StringMatch::Regex("") => {
            cx.err(
                &n.at("regex"),
                format!("{what:?}: regex string match should not be empty"),
            );
        }
        StringMatch::Regex(re) => cx.check(&n.at("regex"), rules::validate_regex(re, what)),
        _ => {}
    }
}

/// `targetRef` / `targetRefs` of security kinds: same-namespace Service, ServiceEntry or Gateway.
pub(crate) fn validate_target_ref(r: &Node, cx: &mut Ctx) {
    if !r.is_object(cx) {
        return;
    }
    if r.str("name", cx).unwrap_or("").is_empty() {
        cx.err(&r.at("name"), "targetRef name must be set");
    }
    if !r.str("namespace", cx).unwrap_or("").is_empty() {
        cx.err(
            &r.at("namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let group = r.str("group", cx).unwrap_or("");
    let kind = r.str("kind", cx).unwrap_or("");
    let allowed = matches!(
        (group, kind),
        ("" | "core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway")
    );
    if !allowed {
        cx.err(
            &r.path,
            format!(
                "targetRef must be to one of [core/Service networking.istio.io/ServiceEntry gateway.networking.k8s.io/Gateway] but was {group}/{kind}"
            ),
        );
    }
}

/// Security kinds accept at most one of `selector`, `targetRef`, `targetRefs`; each is then checked.
pub(crate) fn validate_policy_selection(spec: &Node, cx: &mut Ctx) {
    let set = usize::from(spec.has("selector"))
        + usize::from(spec.has("targetRef"))
        + usize::from(spec.len("targetRefs") > 0);
    if set > 1 {
        cx.err(
            &spec.path,
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    if let Some(sel) = spec.get("selector") {
        validate_workload_selector(&sel, cx);
    }
    if let Some(r) = spec.get("targetRef") {
        validate_target_ref(&r, cx);
    }
    for r in spec.list("targetRefs", cx) {
        validate_target_ref(&r, cx);
    }
}

/// Validates a duration-valued string field when present.
pub(crate) fn duration_field(n: &Node, key: &str, cx: &mut Ctx) {
    if let Some(f) = n.get(key)
        && let Some(s) = f.as_str(cx)
    {
        cx.check(&f.path, rules::validate_duration(s));
    }
}

/// A field holding a non-negative integer, reported as Istio words it (`<what> must be non-negative`).
pub(crate) fn non_negative(n: &Node, key: &str, what: &str, cx: &mut Ctx) {
    if let Some(v) = n.i64(key, cx)
        && v < 0
    {
        cx.err(&n.at(key), format!("{what} must be non-negative"));
    }
}
