//! Sidecar rules: ingress and egress listeners, egress hosts, outbound traffic policy.

use std::collections::BTreeMap;

use super::common::{enum_field, validate_alpha_workload_selector, validate_destination};
use super::destination_rule::validate_connection_pool;
use super::gateway::validate_server_tls;
use super::node::Node;
use super::report::Ctx;
use super::rules::{self, Protocol};

const CAPTURE_MODES: &[&str] = &["DEFAULT", "IPTABLES", "NONE"];

pub(crate) fn validate(spec: &Node, namespace: &str, cx: &mut Ctx) {
    validate_alpha_workload_selector(spec, "sidecar", cx);
    if spec.len("egress") == 0
        && spec.len("ingress") == 0
        && !spec.has("outboundTrafficPolicy")
        && !spec.has("inboundConnectionPool")
    {
        cx.err(&spec.path, "sidecar: empty configuration provided");
        return;
    }

    let mut ports: Vec<i64> = Vec::new();
    for i in spec.list("ingress", cx) {
        if !i.is_object(cx) {
            continue;
        }
        let Some(port) = i.obj("port", cx) else {
            cx.err(
                &i.at("port"),
                "sidecar: port is required for ingress listeners",
            );
            continue;
        };
        if port.i64("targetPort", cx).is_some_and(|t| t > 0) {
            cx.err(
                &port.at("targetPort"),
                "targetPort has no impact on Sidecars",
            );
        }
        validate_listener_port(&port, cx);
        let number = port.i64("number", cx).unwrap_or(0);
        cx.check(&port.at("number"), rules::validate_port(number));
        let bind = i.str_or_empty("bind", cx);
        if !bind.is_empty() {
            cx.check(&i.at("bind"), rules::validate_ip_address(bind));
        }
        if ports.contains(&number) {
            cx.err(
                &port.at("number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        ports.push(number);
        let endpoint = i.str_or_empty("defaultEndpoint", cx);
        if !endpoint.is_empty() {
            validate_default_endpoint(&i.at("defaultEndpoint"), endpoint, cx);
        }
        if let Some(tls) = i.obj("tls", cx) {
            validate_ingress_tls(&tls, cx);
        }
        if let Some(cp) = i.get("connectionPool") {
            validate_connection_pool(&cp, cx);
            let protocol = port.str_or_empty("protocol", cx);
            if cp.has("http") && !Protocol::parse(protocol).is_some_and(Protocol::is_http) {
                let name = port.str_or_empty("name", cx);
                cx.warn(
                    &cp.at("http"),
                    format!(
                        "sidecar: HTTP connection pool settings are configured for port {number} ({name:?}) but its protocol is not HTTP ({protocol}); only TCP settings will apply"
                    ),
                );
            }
        }
        enum_field(&i, "captureMode", CAPTURE_MODES, cx);
    }
    if let Some(cp) = spec.get("inboundConnectionPool") {
        validate_connection_pool(&cp, cx);
    }

    let egress = spec.list("egress", cx);
    let mut ports: Vec<i64> = Vec::new();
    let mut uds: Vec<String> = Vec::new();
    let mut catch_all = false;
    for (index, e) in egress.iter().enumerate() {
        if !e.is_object(cx) {
            continue;
        }
        match e.obj("port", cx) {
            None => {
                // Only one listener may omit the port, and it must come last.
                if catch_all {
                    cx.err(
                        &e.path,
                        "sidecar: egress can have only one listener with empty port",
                    );
                    continue;
                }
                if index == egress.len() - 1 {
                    catch_all = true;
                } else {
                    cx.err(&e.path, "sidecar: the egress listener with empty port should be the last listener in the list");
                }
            }
            Some(port) => {
                if port.i64("targetPort", cx).is_some_and(|t| t > 0) {
                    cx.err(
                        &port.at("targetPort"),
                        "targetPort has no impact on Sidecars",
                    );
                }
                let bind = e.str_or_empty("bind", cx);
                let capture = enum_field(e, "captureMode", CAPTURE_MODES, cx).unwrap_or("DEFAULT");
                validate_listener_port(&port, cx);
                let number = port.i64("number", cx).unwrap_or(0);
                if number == 0 {
                    match bind.strip_prefix("unix://") {
                        None => cx.err(
                            &e.at("bind"),
                            "sidecar: ports with 0 value must have a unix domain socket bind address",
                        ),
                        Some(path) => cx.check(&e.at("bind"), rules::validate_unix_address(path)),
                    }
                    if capture != "DEFAULT" && capture != "NONE" {
                        cx.err(&e.at("captureMode"), "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners");
                    }
                    if uds.iter().any(|u| u == bind) {
                        cx.err(
                            &e.at("bind"),
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                    uds.push(bind.to_string());
                } else {
                    cx.check(&port.at("number"), rules::validate_port(number));
                    if !bind.is_empty() {
                        cx.check(&e.at("bind"), rules::validate_ip_address(bind));
                    }
                    if ports.contains(&number) {
                        cx.err(
                            &port.at("number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                    ports.push(number);
                }
            }
        }
        validate_egress_hosts(e, namespace, cx);
    }

    if let Some(otp) = spec.obj("outboundTrafficPolicy", cx) {
        let mode = enum_field(&otp, "mode", &["REGISTRY_ONLY", "ALLOW_ANY"], cx)
            .unwrap_or("REGISTRY_ONLY");
        if let Some(proxy) = otp.get("egressProxy") {
            if mode != "ALLOW_ANY" {
                cx.err(&proxy.path, "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode");
                return;
            }
            if !proxy.is_object(cx) {
                return;
            }
            let host = proxy.str_or_empty("host", cx);
            cx.check(&proxy.at("host"), rules::validate_fqdn(host));
            if proxy.get("port").is_none() {
                cx.err(
                    &proxy.at("port"),
                    "sidecar: egress_proxy port must be non-nil",
                );
                return;
            }
            validate_destination(&proxy, cx);
        }
    }
}

/// Name (optional, DNS label) and protocol of a listener port.
fn validate_listener_port(port: &Node, cx: &mut Ctx) {
    let name = port.str_or_empty("name", cx);
    if !name.is_empty() {
        cx.check(&port.at("name"), rules::validate_port_name(name));
    }
    let protocol = port.str_or_empty("protocol", cx);
    cx.check(&port.at("protocol"), rules::validate_protocol(protocol));
}

fn validate_default_endpoint(path: &str, endpoint: &str, cx: &mut Ctx) {
    if let Some(unix) = endpoint.strip_prefix("unix://") {
        cx.check(path, rules::validate_unix_address(unix));
        return;
    }
    // 127.0.0.1:port, 0.0.0.0:port, [::1]:port, [::]:port or :port
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        cx.err(path, format!("address {endpoint}: missing port in address"));
        return;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        cx.err(
            path,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        );
    }
    match port.parse::<i64>() {
        Ok(p) => cx.check(path, rules::validate_port(p)),
        Err(e) => cx.err(
            path,
            format!("sidecar: defaultEndpoint port ({port}) is not a number: {e}"),
        ),
    }
}

fn validate_ingress_tls(tls: &Node, cx: &mut Ctx) {
    if tls.len("subjectAltNames") > 0 {
        cx.err(
            &tls.at("subjectAltNames"),
            "sidecar: subjectAltNames is not supported in ingress tls",
        );
    }
    if tls.bool("httpsRedirect", cx) == Some(true) {
        cx.err(
            &tls.at("httpsRedirect"),
            "sidecar: httpsRedirect is not supported",
        );
    }
    if !tls.str_or_empty("credentialName", cx).is_empty() {
        cx.err(
            &tls.at("credentialName"),
            "sidecar: credentialName is not currently supported",
        );
    }
    let mode = tls.v.get("mode").and_then(|v| v.as_str()).unwrap_or("");
    if mode == "ISTIO_MUTUAL" || mode == "AUTO_PASSTHROUGH" {
        cx.err(
            &tls.at("mode"),
            format!("configuration is invalid: cannot set mode to {mode} in sidecar ingress tls"),
        );
    }
    validate_server_tls(tls, cx);
}

/// Egress hosts are `namespace/dnsName`; duplicates and `*/*` mixed with others only warn.
fn validate_egress_hosts(e: &Node, namespace: &str, cx: &mut Ctx) {
    let hosts = e.str_list("hosts", cx);
    if hosts.is_empty() {
        cx.err(
            &e.at("hosts"),
            "sidecar: egress listener must contain at least one host",
        );
        return;
    }
    let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, h) in &hosts {
        if let Some((ns, svc)) = h.split_once('/') {
            let ns = if ns == "." { namespace } else { ns };
            let svcs = by_ns.entry(ns.to_string()).or_default();
            let dup = if svc == "*" {
                !svcs.is_empty()
            } else {
                svcs.iter().any(|s| s == svc || s == "*")
            };
            if dup {
                cx.warn(path, format!("duplicated egress host: {h}"));
            }
            svcs.push(svc.to_string());
        }
        for err in rules::validate_namespace_slash_wildcard_hostname(h, false) {
            cx.err(path, err);
        }
    }
    if by_ns.get("*").is_some_and(|s| s.iter().any(|x| x == "*")) && by_ns.len() != 1 {
        cx.warn(
            &e.at("hosts"),
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}
