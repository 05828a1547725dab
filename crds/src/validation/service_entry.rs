//! ServiceEntry, WorkloadEntry and WorkloadGroup rules.

use serde_json::Value;

use super::common::{
    enum_field, validate_alpha_workload_selector, validate_export_to, validate_labels,
};
use super::node::Node;
use super::report::Ctx;
use super::rules::{self, Protocol};

const RESOLUTIONS: &[&str] = &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"];

/// Label that opts a ServiceEntry out of automatic VIP allocation.
const AUTOALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";

pub(crate) fn validate(spec: &Node, meta: &Value, namespace: &str, cx: &mut Ctx) {
    validate_alpha_workload_selector(spec, "service entry", cx);
    if spec.has("workloadSelector") && spec.has("endpoints") {
        cx.err(
            &spec.path,
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    enum_field(spec, "location", &["MESH_EXTERNAL", "MESH_INTERNAL"], cx);
    let resolution = match spec.get("resolution") {
        None => "NONE",
        Some(_) => enum_field(spec, "resolution", RESOLUTIONS, cx).unwrap_or(""),
    };

    let hosts = spec.str_list("hosts", cx);
    if hosts.is_empty() {
        cx.err(
            &spec.at("hosts"),
            "service entry must have at least one host",
        );
    }
    for (path, h) in &hosts {
        if *h == "*" {
            cx.err(path, format!("invalid host {h}"));
        } else {
            cx.check(path, rules::validate_wildcard_domain(h));
            if let Err(w) = rules::validate_partial_wildcard(h) {
                cx.warn(path, w);
            }
        }
    }

    let addresses = spec.str_list("addresses", cx);
    let mut cidr = false;
    for (path, a) in &addresses {
        cidr |= a.contains('/');
        cx.check(path, rules::validate_ip_subnet(a));
    }
    if cidr && resolution != "NONE" && resolution != "STATIC" {
        cx.err(
            &spec.at("addresses"),
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }

    let auto_allocate = meta
        .get("labels")
        .and_then(|l| l.get(AUTOALLOCATE_LABEL))
        .and_then(Value::as_str)
        != Some("false");
    let ports = spec.list("ports", cx);
    let mut names: Vec<&str> = Vec::new();
    let mut numbers: Vec<i64> = Vec::new();
    let mut protocols: Vec<Option<Protocol>> = Vec::new();
    for p in &ports {
        if !p.is_object(cx) {
            continue;
        }
        let name = p.str_or_empty("name", cx);
        let number = p.i64("number", cx).unwrap_or(0);
        let protocol = p.str_or_empty("protocol", cx);
        if names.contains(&name) {
            cx.err(
                &p.at("name"),
                format!("service entry port name {name:?} already defined"),
            );
        }
        names.push(name);
        if numbers.contains(&number) {
            cx.err(
                &p.at("number"),
                format!("service entry port {number} already defined"),
            );
        }
        numbers.push(number);
        if let Some(t) = p.i64("targetPort", cx)
            && t != 0
        {
            cx.check(&p.at("targetPort"), rules::validate_port(t));
            if resolution == "NONE" {
                cx.warn(
                    &p.at("targetPort"),
                    "targetPort has no effect when resolution mode is NONE",
                );
            }
        }
        if addresses.is_empty() && !auto_allocate && (protocol.is_empty() || protocol == "TCP") {
            cx.warn(
                &p.path,
                "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled",
            );
        }
        cx.check(&p.at("name"), rules::validate_port_name(name));
        cx.check(&p.at("protocol"), rules::validate_protocol(protocol));
        cx.check(&p.at("number"), rules::validate_port(number));
        protocols.push(Protocol::parse(protocol));
    }

    let endpoints = spec.list("endpoints", cx);
    match resolution {
        "NONE" => {
            if !endpoints.is_empty() {
                cx.err(
                    &spec.at("endpoints"),
                    "no endpoints should be provided for resolution type none",
                );
            }
            if spec.has("workloadSelector") {
                cx.warn(
                    &spec.at("workloadSelector"),
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        "STATIC" => {
            for e in &endpoints {
                if e.is_object(cx) {
                    validate_workload_entry(e, Some(&names), false, cx);
                }
            }
        }
        "DNS" | "DNS_ROUND_ROBIN" => {
            if endpoints.is_empty() {
                for (path, h) in &hosts {
                    if rules::validate_fqdn(h).is_err() {
                        cx.err(
                            path,
                            format!("hosts must be FQDN if no endpoints are provided for resolution mode {resolution}"),
                        );
                    }
                }
            }
            if resolution == "DNS_ROUND_ROBIN" && endpoints.len() > 1 {
                cx.err(
                    &spec.at("endpoints"),
                    format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"),
                );
            }
            for e in &endpoints {
                if !e.is_object(cx) {
                    continue;
                }
                let addr = e.str_or_empty("address", cx);
                if !rules::is_ip_address(addr) && rules::validate_fqdn(addr).is_err() {
                    cx.err(
                        &e.at("address"),
                        format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                    );
                }
                validate_labels(e, "labels", cx);
                validate_endpoint_ports(e, Some(&names), cx);
            }
            if spec.has("workloadSelector") {
                cx.warn(
                    &spec.at("workloadSelector"),
                    format!(
                        "workloadSelector should not be set when resolution mode is {resolution}"
                    ),
                );
            }
            if !addresses.is_empty()
                && protocols.iter().any(|p| p.is_some_and(Protocol::is_tcp))
                && hosts.len() > 1
            {
                cx.warn(
                    &spec.at("hosts"),
                    "service entry can not have more than one host specified simultaneously with address and tcp port",
                );
            }
        }
        _ => {}
    }

    // Plain TCP cannot tell hosts apart, so several hosts need HTTP or TLS ports (unless hosts are ignored).
    if resolution != "NONE"
        && hosts.len() > 1
        && protocols
            .iter()
            .any(|p| !p.is_some_and(|p| p.is_http() || p.is_tls()))
    {
        cx.err(
            &spec.at("ports"),
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
    }
    validate_export_to(spec, namespace, true, false, cx);
}

/// Endpoint `ports` map: names are port names (and, inside a ServiceEntry, must name one of its ports).
fn validate_endpoint_ports(e: &Node, service_ports: Option<&[&str]>, cx: &mut Ctx) {
    for (name, port) in e.map("ports", cx) {
        let number = port.as_i64(cx);
        if let Some(sp) = service_ports
            && !sp.contains(&name)
        {
            cx.err(
                &port.path,
                format!(
                    "endpoint port {} is not defined by the service entry",
                    number.unwrap_or(0)
                ),
            );
        }
        cx.check(&port.path, rules::validate_port_name(name));
        if let Some(n) = number {
            cx.check(&port.path, rules::validate_port(n));
        }
    }
}

/// A WorkloadEntry spec or a STATIC ServiceEntry endpoint. Standalone entries may name hosts by FQDN.
pub(crate) fn validate_workload_entry(
    e: &Node,
    service_ports: Option<&[&str]>,
    allow_fqdn: bool,
    cx: &mut Ctx,
) {
    let addr = e.str_or_empty("address", cx);
    if addr.is_empty() {
        let network = e.str_or_empty("network", cx);
        if network.is_empty() {
            cx.err(&e.at("address"), "address is required");
            return;
        }
        cx.warn(
            &e.at("address"),
            format!("address is unset with network {network:?}"),
        );
    }
    let unix = addr.starts_with("unix://");
    if let Some(path) = addr.strip_prefix("unix://") {
        cx.check(&e.at("address"), rules::validate_unix_address(path));
        if e.len("ports") != 0 {
            cx.err(
                &e.at("ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
    } else if !addr.is_empty() && !rules::is_ip_address(addr) {
        if !allow_fqdn {
            cx.err(
                &e.at("address"),
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        } else if rules::validate_fqdn(addr).is_err() {
            cx.err(
                &e.at("address"),
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    validate_endpoint_ports(e, service_ports, cx);
    validate_labels(e, "labels", cx);
    if let Some(w) = e.i64("weight", cx)
        && w < 0
    {
        cx.err(&e.at("weight"), format!("weight {w} < 0"));
    }
    if unix && service_ports.is_some_and(|p| p.len() != 1) {
        cx.err(
            &e.path,
            "exactly 1 service port required for unix endpoints",
        );
    }
}

pub(crate) fn validate_workload_group(spec: &Node, cx: &mut Ctx) {
    match spec.obj("template", cx) {
        None => cx.err(&spec.at("template"), "template is required"),
        Some(t) => {
            // The template's address is filled in per VM, so only its shape is checked here.
            validate_endpoint_ports(&t, None, cx);
            validate_labels(&t, "labels", cx);
        }
    }
    if let Some(m) = spec.obj("metadata", cx) {
        for (path, k, v) in m.str_map("labels", cx) {
            for r in [rules::validate_label_key(k), rules::validate_label_value(v)] {
                if let Err(e) = r {
                    cx.err(&path, format!("invalid labels: {e}"));
                }
            }
        }
    }
    if let Some(p) = spec.obj("probe", cx) {
        validate_probe(&p, cx);
    }
}

fn validate_probe(p: &Node, cx: &mut Ctx) {
    for key in [
        "periodSeconds",
        "initialDelaySeconds",
        "timeoutSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        if p.i64(key, cx).is_some_and(|v| v < 0) {
            cx.err(&p.at(key), format!("{key} must be non-negative"));
        }
    }
    let methods: Vec<&str> = ["httpGet", "tcpSocket", "exec", "grpc"]
        .into_iter()
        .filter(|k| p.has(k))
        .collect();
    if methods.len() > 1 {
        cx.err(
            &p.path,
            format!(
                "only one health check method may be set, found {}",
                methods.join(", ")
            ),
        );
    }
    if let Some(h) = p.obj("httpGet", cx) {
        let port = h.i64("port", cx).unwrap_or(0);
        cx.check(&h.at("port"), rules::validate_port(port));
        let scheme = h.str_or_empty("scheme", cx);
        if !scheme.is_empty() && scheme != "HTTP" && scheme != "HTTPS" {
            cx.err(
                &h.at("scheme"),
                "httpGet.scheme must be one of \"HTTPS\", \"HTTP\"",
            );
        }
        for header in h.list("httpHeaders", cx) {
            if header.is_object(cx) {
                let name = header.str_or_empty("name", cx);
                cx.check(&header.at("name"), rules::validate_header_name(name));
            }
        }
    } else if let Some(t) = p.obj("tcpSocket", cx) {
        let port = t.i64("port", cx).unwrap_or(0);
        cx.check(&t.at("port"), rules::validate_port(port));
    } else if let Some(e) = p.obj("exec", cx) {
        if e.len("command") == 0 {
            cx.err(&e.at("command"), "exec.command is required");
        }
    } else if let Some(g) = p.obj("grpc", cx) {
        let port = g.i64("port", cx).unwrap_or(0);
        cx.check(&g.at("port"), rules::validate_port(port));
    } else {
        cx.err(
            &p.path,
            "unknown health check method: one of httpGet, tcpSocket, exec or grpc is required",
        );
    }
}
