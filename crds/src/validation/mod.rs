//! Istio config validation (Galley's rules) as pure functions.
//!
//! [`validate_value`] takes a whole object (`apiVersion`, `kind`, `metadata`, `spec`) as the admission webhook
//! or `halyard validate` sees it and returns every error with its field path, plus warnings. The rules follow
//! Istio's webhook (`pkg/config/validation`) and the CEL rules of Istio's CRDs, with Istio's wording.

mod common;
mod destination_rule;
mod gateway;
mod node;
mod report;
pub mod rules;
mod security;
mod service_entry;
mod sidecar;
mod virtual_service;

use serde_json::Value;

use node::Node;
use report::Ctx;
pub use report::{FieldError, Report};

/// API groups whose objects Istio's (and halyard's) validating webhook receives.
pub const ISTIO_GROUPS: &[&str] = &[
    crate::networking::GROUP,
    crate::security::GROUP,
    "telemetry.istio.io",
    "extensions.istio.io",
];

/// Annotation that makes the webhook deny an object unconditionally; istiod (and halyard's operator) use it to
/// check that the webhook is serving before switching its failure policy to `Fail`.
pub const ALWAYS_REJECT_ANNOTATION: &str = "internal.istio.io/webhook-always-reject";

/// Annotation that puts an AuthorizationPolicy in dry-run mode (only valid there).
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Is this `apiVersion` in one of Istio's API groups?
pub fn is_istio_api_version(api_version: &str) -> bool {
    ISTIO_GROUPS.contains(&group_of(api_version))
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

/// What halyard does with a kind of Istio's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handling {
    /// Validated with Istio's rules and acted on.
    Validate,
    /// Envoy-specific extension: rejected, halyard's proxy is not Envoy.
    NoEnvoy,
    /// Accepted (after Istio's own checks) with a warning that halyard ignores it.
    Ignored,
}

/// Istio kinds the typed API (`crate::object::Kind`) does not cover: what halyard does with them.
const OTHER_KINDS: &[(&str, &str, &[&str], Handling)] = &[
    (
        crate::networking::GROUP,
        "EnvoyFilter",
        &["v1alpha3"],
        Handling::NoEnvoy,
    ),
    (
        crate::networking::GROUP,
        "ProxyConfig",
        &["v1beta1"],
        Handling::Ignored,
    ),
    (
        "telemetry.istio.io",
        "Telemetry",
        &["v1", "v1alpha1"],
        Handling::Ignored,
    ),
    (
        "extensions.istio.io",
        "WasmPlugin",
        &["v1alpha1"],
        Handling::NoEnvoy,
    ),
    (
        "extensions.istio.io",
        "TrafficExtension",
        &["v1alpha1"],
        Handling::NoEnvoy,
    ),
];

/// Served versions and handling of an Istio kind, looked up by group and kind as Istio's webhook does.
fn lookup_kind(group: &str, kind: &str) -> Option<(&'static [&'static str], Handling)> {
    if let Some(k) = crate::object::Kind::istio().find(|k| k.as_str() == kind && k.group() == group)
    {
        return Some((k.versions(), Handling::Validate));
    }
    OTHER_KINDS
        .iter()
        .find(|(g, k, _, _)| *g == group && *k == kind)
        .map(|(_, _, versions, handling)| (*versions, *handling))
}

/// Validate a whole object (apiVersion, kind, metadata, spec) as the webhook receives it: unknown kinds,
/// unknown top-level fields, Envoy-only kinds (EnvoyFilter, WasmPlugin, TrafficExtension: halyard has no
/// Envoy) and every semantic rule. Never panics.
pub fn validate_value(obj: &Value) -> Report {
    let mut cx = Ctx::default();
    validate_into(obj, &mut cx);
    cx.into_report()
}

fn validate_into(obj: &Value, cx: &mut Ctx) {
    let Some(map) = obj.as_object() else {
        cx.err(
            "",
            "cannot decode configuration: the object must be a mapping",
        );
        return;
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() {
        cx.err(
            "apiVersion",
            "cannot decode configuration: apiVersion is required",
        );
    }
    if kind.is_empty() {
        cx.err("kind", "cannot decode configuration: kind is required");
    }
    if cx.has_errors() {
        return;
    }
    let group = group_of(api_version);
    let version = api_version
        .split_once('/')
        .map(|(_, v)| v)
        .unwrap_or(api_version);
    // Types are looked up by group and kind, as Istio's webhook does.
    let Some((versions, handling)) = lookup_kind(group, kind) else {
        cx.err(
            "kind",
            format!("unrecognized type {kind} (apiVersion {api_version})"),
        );
        return;
    };
    if !versions.contains(&version) {
        cx.err(
            "apiVersion",
            format!(
                "{api_version} is not a served version of {kind} (served: {})",
                versions
                    .iter()
                    .map(|v| format!("{group}/{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }

    let empty = Value::Object(serde_json::Map::new());
    let meta = map.get("metadata").unwrap_or(&empty);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            cx.err(
                key,
                format!("unknown field {key:?} on {kind} resource {namespace}/{name}"),
            );
        }
    }
    validate_metadata(meta, kind, cx);
    if kind == "AuthorizationPolicy" {
        check_dry_run_action(obj, cx);
    }

    let spec_value = map.get("spec").filter(|v| !v.is_null()).unwrap_or(&empty);
    let spec = Node::root(spec_value, "spec");
    if !spec.is_object(cx) {
        return;
    }
    match handling {
        Handling::NoEnvoy => {
            cx.err(
                "kind",
                format!(
                    "{kind} is not supported: halyard has no Envoy; its proxy cannot load Envoy filters or extensions"
                ),
            );
            return;
        }
        Handling::Ignored => {
            cx.warn(
                "",
                format!("halyard does not act on {kind}; the object is accepted but has no effect"),
            );
        }
        Handling::Validate => {}
    }
    match kind {
        "VirtualService" => virtual_service::validate(&spec, namespace, cx),
        "DestinationRule" => destination_rule::validate(&spec, namespace, cx),
        "Gateway" => gateway::validate(&spec, name, cx),
        "ServiceEntry" => service_entry::validate(&spec, meta, namespace, cx),
        "Sidecar" => sidecar::validate(&spec, namespace, cx),
        "WorkloadEntry" => service_entry::validate_workload_entry(&spec, None, true, cx),
        "WorkloadGroup" => service_entry::validate_workload_group(&spec, cx),
        "PeerAuthentication" => security::validate_peer_authentication(&spec, cx),
        "AuthorizationPolicy" => security::validate_authorization_policy(&spec, meta, cx),
        "RequestAuthentication" => security::validate_request_authentication(&spec, cx),
        "ProxyConfig" => validate_proxy_config(&spec, cx),
        "Telemetry" => validate_telemetry(&spec, cx),
        _ => {}
    }
    // After the semantic rules, so a field they already reported is not reported twice.
    if handling == Handling::Validate {
        check_structure(obj, cx);
    }
}

/// Upper bound on re-parses while collecting structural errors (each finds one).
const MAX_STRUCTURAL_ERRORS: usize = 32;

/// Decodes the object into its typed form to find unknown fields and values of the wrong type anywhere. Serde
/// stops at the first problem, so the offending field is removed and decoding retried, to report them all.
fn check_structure(obj: &Value, cx: &mut Ctx) {
    let mut work = obj.clone();
    let mut last_path: Option<String> = None;
    for _ in 0..MAX_STRUCTURAL_ERRORS {
        let (path, message) = match crate::object::parse_object(&work) {
            Ok(_) => return,
            Err(crate::Error::UnknownField {
                kind,
                resource,
                field,
                path,
            }) => (
                path,
                format!("unknown field {field:?} on {kind} resource {resource}"),
            ),
            Err(crate::Error::Decode { path, message, .. }) => {
                (path, format!("error decoding configuration: {message}"))
            }
            // Kind, version and top-level problems are reported by the caller in Istio's words.
            Err(_) => return,
        };
        if last_path.as_deref() == Some(path.as_str()) {
            return;
        }
        if !is_top_level(&path) && !cx.has_error_at_or_below(&path) {
            cx.err(&path, message);
        }
        if path.is_empty() || !remove_path(&mut work, &path) {
            return;
        }
        last_path = Some(path);
    }
}

fn is_top_level(path: &str) -> bool {
    !path.contains('.') && !path.contains('[')
}

/// Removes the value at a serde-path-to-error style path (`spec.http[0].foo`); false when it cannot be found.
fn remove_path(v: &mut Value, path: &str) -> bool {
    let mut segments: Vec<Segment> = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_string()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some((idx, after)) = stripped.split_once(']') else {
                return false;
            };
            match idx.parse::<usize>() {
                Ok(i) => segments.push(Segment::Index(i)),
                Err(_) => return false,
            }
            rest = after;
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parents {
        let next = match seg {
            Segment::Key(k) => cur.get_mut(k.as_str()),
            Segment::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur) {
        (Segment::Key(k), Value::Object(m)) => m.remove(k.as_str()).is_some(),
        (Segment::Index(i), Value::Array(a)) if *i < a.len() => {
            // Keep later indexes stable so their paths still match what the user wrote.
            a[*i] = Value::Null;
            true
        }
        _ => false,
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

/// Validate a typed object (as read by [`crate::parse_object`]) with the same rules as [`validate_value`].
pub fn validate_object(obj: &crate::object::IstioObject) -> Report {
    match obj.to_value() {
        Ok(v) => validate_value(&v),
        Err(e) => Report {
            errors: vec![FieldError {
                path: String::new(),
                message: e.to_string(),
            }],
            warnings: Vec::new(),
        },
    }
}

fn validate_metadata(meta: &Value, kind: &str, cx: &mut Ctx) {
    let m = Node::root(meta, "metadata");
    if !m.is_object(cx) {
        return;
    }
    match m.str("name", cx) {
        None | Some("") if m.str("generateName", cx).is_some_and(|g| !g.is_empty()) => {}
        None | Some("") => cx.err("metadata.name", "name or generateName is required"),
        Some(name) if !rules::is_dns1123_subdomain(name) => cx.err(
            "metadata.name",
            format!(
                "invalid name {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ),
        Some(_) => {}
    }
    if let Some(ns) = m.str("namespace", cx)
        && !rules::is_dns1123_label(ns)
    {
        cx.err(
            "metadata.namespace",
            format!("invalid namespace {ns:?}: must be a DNS-1123 label"),
        );
    }
    let annotations = m.str_map("annotations", cx);
    for (path, key, value) in &annotations {
        if *key == ALWAYS_REJECT_ANNOTATION {
            cx.err(
                path,
                format!("{ALWAYS_REJECT_ANNOTATION:?} annotation found, rejecting"),
            );
        }
        if *key == DRY_RUN_ANNOTATION {
            let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
            let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
            if kind != "AuthorizationPolicy" {
                cx.err(
                    path,
                    format!("{ns}/{name} has unsupported annotation {DRY_RUN_ANNOTATION}, please remove the annotation"),
                );
            } else if !matches!(
                *value,
                "true"
                    | "false"
                    | "1"
                    | "0"
                    | "t"
                    | "f"
                    | "TRUE"
                    | "FALSE"
                    | "True"
                    | "False"
                    | "T"
                    | "F"
            ) {
                cx.err(
                    path,
                    format!("{ns}/{name} has annotation {DRY_RUN_ANNOTATION} with invalid value ({value}): invalid syntax"),
                );
            }
        }
    }
    common::validate_labels(&m, "labels", cx);
}

/// The dry-run annotation is allowed only with ALLOW and DENY policies.
fn check_dry_run_action(obj: &Value, cx: &mut Ctx) {
    let has_dry_run = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
        .is_some();
    if !has_dry_run {
        return;
    }
    let action = obj
        .pointer("/spec/action")
        .and_then(Value::as_str)
        .unwrap_or("ALLOW");
    if action != "ALLOW" && action != "DENY" {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        cx.err(
            &format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
            format!(
                "the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, found action {action} in {ns}/{name}"
            ),
        );
    }
}

fn validate_proxy_config(spec: &Node, cx: &mut Ctx) {
    if let Some(sel) = spec.get("selector") {
        common::validate_workload_selector(&sel, cx);
    }
    if spec.i64("concurrency", cx).is_some_and(|c| c < 0) {
        cx.err(
            &spec.at("concurrency"),
            "concurrency must be greater than or equal to 0",
        );
    }
}

fn validate_telemetry(spec: &Node, cx: &mut Ctx) {
    common::validate_policy_selection(spec, cx);
    let providers = |n: &Node, cx: &mut Ctx| {
        for p in n.list("providers", cx) {
            if p.v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                cx.err(&p.at("name"), "providers.name may not be empty");
            }
        }
    };
    let tracing = spec.list("tracing", cx);
    if tracing.len() > 1 {
        cx.warn(
            &spec.at("tracing"),
            "multiple tracing is not currently supported",
        );
    }
    for t in &tracing {
        providers(t, cx);
        if let Some(p) = t.f64("randomSamplingPercentage", cx)
            && !(0.0..=100.0).contains(&p)
        {
            cx.err(
                &t.at("randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            );
        }
    }
    for m in spec.list("metrics", cx) {
        providers(&m, cx);
    }
    for a in spec.list("accessLogging", cx) {
        providers(&a, cx);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn non_object_and_missing_kind_are_errors() {
        assert!(!validate_value(&json!([1, 2])).is_valid());
        let r = validate_value(&json!({"apiVersion": "networking.istio.io/v1"}));
        assert_eq!(r.errors[0].path, "kind");
    }

    #[test]
    fn unknown_kind_and_version() {
        let r = validate_value(
            &json!({"apiVersion": "networking.istio.io/v1", "kind": "Nope", "metadata": {"name": "a"}}),
        );
        assert!(r.errors[0].message.contains("unrecognized type Nope"));
        let r = validate_value(
            &json!({"apiVersion": "networking.istio.io/v9", "kind": "Gateway", "metadata": {"name": "a"},
            "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}),
        );
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].message.contains("not a served version"));
    }

    #[test]
    fn unknown_top_level_field_is_named() {
        let r = validate_value(
            &json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "a", "namespace": "ns"}, "spec": {}, "extra": 1}),
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].path, "extra");
        assert_eq!(
            r.errors[0].message,
            "unknown field \"extra\" on AuthorizationPolicy resource ns/a"
        );
    }

    #[test]
    fn envoy_kinds_are_rejected() {
        let r = validate_value(
            &json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": "a"}, "spec": {}}),
        );
        assert!(r.errors[0].message.contains("halyard has no Envoy"));
    }

    #[test]
    fn always_reject_annotation() {
        let r = validate_value(
            &json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "a", "annotations": {ALWAYS_REJECT_ANNOTATION: "true"}}, "spec": {}}),
        );
        assert!(!r.is_valid());
        assert!(r.denial_message().contains("annotation found, rejecting"));
    }

    #[test]
    fn every_unknown_field_is_reported() {
        let r = validate_value(
            &json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"host": "reviews", "foo": 1, "trafficPolicy": {"tls": {"mode": "SIMPLE", "bar": 2}}}}),
        );
        let paths: Vec<&str> = r.errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"spec.foo"), "{paths:?}");
        assert!(paths.contains(&"spec.trafficPolicy.tls.bar"), "{paths:?}");
        assert!(
            r.errors
                .iter()
                .all(|e| e.message.starts_with("unknown field")),
            "{:?}",
            r.errors
        );
    }

    #[test]
    fn remove_path_handles_keys_and_indexes() {
        let mut v = json!({"spec": {"http": [{"a": 1, "foo": 2}, {"b": 3}]}});
        assert!(remove_path(&mut v, "spec.http[0].foo"));
        assert_eq!(v, json!({"spec": {"http": [{"a": 1}, {"b": 3}]}}));
        assert!(remove_path(&mut v, "spec.http[1]"));
        assert_eq!(v["spec"]["http"][1], Value::Null);
        assert!(!remove_path(&mut v, "spec.nope.x"));
        assert!(!remove_path(&mut v, "spec.http[x]"));
    }

    #[test]
    fn typed_objects_use_the_same_rules() {
        let good = crate::parse_object(&json!({"apiVersion": "networking.istio.io/v1alpha3",
            "kind": "DestinationRule", "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}))
        .unwrap();
        assert!(validate_object(&good.object).is_valid());
        let bad = crate::parse_object(&json!({"apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule", "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"host": "reviews", "subsets": [{"name": "v1"}, {"name": "v1"}]}}))
        .unwrap();
        let r = validate_object(&bad.object);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert_eq!(r.errors[0].path, "spec.subsets[1].name");
        assert_eq!(r.errors[0].message, "duplicate subset names: v1");
    }

    #[test]
    fn istio_groups() {
        assert!(is_istio_api_version("networking.istio.io/v1"));
        assert!(!is_istio_api_version("apps/v1"));
        assert!(!is_istio_api_version("v1"));
    }
}
