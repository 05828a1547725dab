//! Istio's pod annotation and label names, and the validation Istio applies to their values before
//! injecting. An invalid value fails the admission with Istio's wording:
//! `invalid value '<v>' for annotation '<name>': <why>`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::Error;
use crate::mesh::ProxyConfig;

pub type Labels = BTreeMap<String, String>;

// Injection control.
pub const INJECT: &str = "sidecar.istio.io/inject";
pub const STATUS: &str = "sidecar.istio.io/status";
pub const REV: &str = "istio.io/rev";
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const REWRITE_PROBERS: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
pub const CAP_NET_BIND_SERVICE: &str = "sidecar.istio.io/capNetBindService";
pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
pub const COMPONENT_LOG_LEVEL: &str = "sidecar.istio.io/componentLogLevel";
pub const AGENT_LOG_LEVEL: &str = "sidecar.istio.io/agentLogLevel";
pub const BOOTSTRAP_OVERRIDE: &str = "sidecar.istio.io/bootstrapOverride";

/// Istio annotations that mean nothing here, with why; the admission answer carries them as warnings.
pub const NOT_APPLICABLE: &[(&str, &str)] = &[
    (
        BOOTSTRAP_OVERRIDE,
        "halyard has no Envoy, so there is no Envoy bootstrap to override",
    ),
    (
        AGENT_LOG_LEVEL,
        "halyard's proxy has no separate agent; sidecar.istio.io/logLevel sets its log level",
    ),
];
pub const MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";

// Extra volumes for the pod and mounts for the proxy: JSON maps keyed by volume name.
pub const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";

// Resources.
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";

// Status port and the proxy's readiness probe.
pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
pub const READINESS_INITIAL_DELAY: &str = "readiness.status.sidecar.istio.io/initialDelaySeconds";
pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
pub const READINESS_FAILURE_THRESHOLD: &str = "readiness.status.sidecar.istio.io/failureThreshold";

// Traffic capture.
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";

// Written by the injector.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
pub const DEFAULT_LOGS_CONTAINER: &str = "kubectl.kubernetes.io/default-logs-container";
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";

// Labels.
pub const LABEL_INJECT: &str = "sidecar.istio.io/inject";
pub const LABEL_NS_INJECTION: &str = "istio-injection";
pub const LABEL_TLS_MODE: &str = "security.istio.io/tlsMode";
pub const LABEL_CANONICAL_NAME: &str = "service.istio.io/canonical-name";
pub const LABEL_CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
pub const LABEL_WORKLOAD_NAME: &str = "service.istio.io/workload-name";

/// The capture modes of the init container; `NONE` means no init container at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
    None,
}

impl InterceptionMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "REDIRECT" => Ok(Self::Redirect),
            "TPROXY" => Ok(Self::Tproxy),
            "NONE" => Ok(Self::None),
            other => Err(format!(
                "interceptionMode invalid: {other:?}, must be one of REDIRECT, TPROXY, NONE"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redirect => "REDIRECT",
            Self::Tproxy => "TPROXY",
            Self::None => "NONE",
        }
    }
}

/// YAML 1.1 booleans, as Istio's injector reads its switches.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" | "1" | "t" => Some(true),
        "n" | "no" | "false" | "off" | "0" | "f" => Some(false),
        _ => None,
    }
}

fn bool_check(v: &str) -> Result<(), String> {
    parse_bool(v)
        .map(|_| ())
        .ok_or_else(|| "not a boolean (true or false)".to_string())
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.trim().parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(format!("port {n} is out of range 1-65535")),
        Err(_) => Err(format!("{:?} is not a port number", p.trim())),
    }
}

fn port_list(v: &str, wildcard: bool) -> Result<(), String> {
    if wildcard && v.trim() == "*" {
        return Ok(());
    }
    v.split(',')
        .filter(|p| !p.trim().is_empty())
        .try_for_each(|p| parse_port(p).map(|_| ()))
}

fn status_port(v: &str) -> Result<(), String> {
    // 0 disables the status server (and with it probe rewriting), as in Istio.
    if v.trim() == "0" {
        return Ok(());
    }
    parse_port(v).map(|_| ())
}

fn uint32(v: &str) -> Result<(), String> {
    v.trim()
        .parse::<u32>()
        .map(|_| ())
        .map_err(|_| "not an unsigned 32-bit integer".to_string())
}

/// One CIDR, `a.b.c.d/n` or `x::/n`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let s = s.trim();
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (missing /prefix)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR (bad address)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("{s:?} is not a CIDR (prefix length must be 0-{max})"))?;
    Ok((addr, len))
}

fn cidr_list(v: &str, wildcard: bool) -> Result<(), String> {
    if wildcard && v.trim() == "*" {
        return Ok(());
    }
    v.split(',')
        .filter(|c| !c.trim().is_empty())
        .try_for_each(|c| parse_cidr(c).map(|_| ()))
}

fn interfaces(v: &str) -> Result<(), String> {
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        // IFNAMSIZ is 16 including the terminating NUL.
        if name.len() > 15 || name.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("{name:?} is not a valid interface name"));
        }
    }
    Ok(())
}

/// A Kubernetes resource quantity: a decimal number with an optional SI, binary or exponent suffix.
pub fn quantity(v: &str) -> Result<(), String> {
    let bad = || format!("{v:?} is not a valid resource quantity");
    let s = v.trim();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let ok_suffix = matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    if ok_suffix { Ok(()) } else { Err(bad()) }
}

/// `userVolume` / `userVolumeMount`: `{"<name>": {<fields>}, ...}` in JSON. Returns the entries in name order
/// (Istio's template ranges over the map, which is sorted), each an object with `name` first.
pub fn named_objects(v: &str) -> Result<Vec<serde_json::Value>, String> {
    use serde_json::{Map, Value};
    let parsed: Map<String, Value> = serde_json::from_str(v)
        .map_err(|e| format!("not a JSON object of name to settings: {e}"))?;
    let mut entries = Vec::with_capacity(parsed.len());
    for (name, fields) in parsed {
        let Value::Object(fields) = fields else {
            return Err(format!("{name:?} is not a JSON object"));
        };
        if name.is_empty() {
            return Err("an entry has an empty name".to_string());
        }
        entries.push((name, fields));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries
        .into_iter()
        .map(|(name, fields)| {
            let mut m = Map::with_capacity(fields.len() + 1);
            m.insert("name".to_string(), Value::String(name));
            m.extend(fields.into_iter().filter(|(k, _)| k != "name"));
            Value::Object(m)
        })
        .collect())
}

fn proxy_config(v: &str) -> Result<(), String> {
    ProxyConfig::from_yaml(v).map(|_| ())
}

type Check = fn(&str) -> Result<(), String>;

/// Istio's validation table: annotations not listed here are accepted as they are.
const CHECKS: &[(&str, Check)] = &[
    (INTERCEPTION_MODE, |v| {
        InterceptionMode::parse(v).map(|_| ())
    }),
    (STATUS_PORT, status_port),
    (READINESS_INITIAL_DELAY, uint32),
    (READINESS_PERIOD, uint32),
    (READINESS_FAILURE_THRESHOLD, uint32),
    (INCLUDE_OUTBOUND_IP_RANGES, |v| cidr_list(v, true)),
    (EXCLUDE_OUTBOUND_IP_RANGES, |v| cidr_list(v, false)),
    (INCLUDE_INBOUND_PORTS, |v| port_list(v, true)),
    (EXCLUDE_INBOUND_PORTS, |v| port_list(v, false)),
    (INCLUDE_OUTBOUND_PORTS, |v| port_list(v, false)),
    (EXCLUDE_OUTBOUND_PORTS, |v| port_list(v, false)),
    (EXCLUDE_INTERFACES, interfaces),
    (KUBEVIRT_INTERFACES, interfaces),
    (REROUTE_VIRTUAL_INTERFACES, interfaces),
    (PROXY_CPU, quantity),
    (PROXY_MEMORY, quantity),
    (PROXY_CPU_LIMIT, quantity),
    (PROXY_MEMORY_LIMIT, quantity),
    (NATIVE_SIDECAR, bool_check),
    (REWRITE_PROBERS, bool_check),
    (CAP_NET_BIND_SERVICE, bool_check),
    (MERGE_METRICS, bool_check),
    (PROXY_CONFIG, proxy_config),
    (USER_VOLUME, |v| named_objects(v).map(|_| ())),
    (USER_VOLUME_MOUNT, |v| named_objects(v).map(|_| ())),
];

/// Checks every annotation Istio validates; all failures are reported, in annotation-name order.
pub fn validate(annotations: &Labels) -> Result<(), Error> {
    let mut errors: Vec<Error> = CHECKS
        .iter()
        .filter_map(|(name, check)| {
            let value = annotations.get(*name)?;
            check(value).err().map(|why| Error::InvalidAnnotation {
                name: (*name).to_string(),
                value: value.clone(),
                why,
            })
        })
        .collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            errors.sort_by_key(|e| e.to_string());
            Err(Error::InvalidAnnotations(
                errors.iter().map(ToString::to_string).collect(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> Result<(), Error> {
        validate(&Labels::from([(name.to_string(), value.to_string())]))
    }

    #[test]
    fn invalid_values_use_istio_wording() {
        let err = one(INCLUDE_INBOUND_PORTS, "80,abc")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid value '80,abc' for annotation 'traffic.sidecar.istio.io/includeInboundPorts': \"abc\" is not a port number"
        );
        let err = one(INTERCEPTION_MODE, "MAGIC").unwrap_err().to_string();
        assert!(err.starts_with(
            "invalid value 'MAGIC' for annotation 'sidecar.istio.io/interceptionMode': "
        ));
    }

    #[test]
    fn accepts_istio_forms() {
        assert!(one(INCLUDE_OUTBOUND_IP_RANGES, "*").is_ok());
        assert!(one(INCLUDE_OUTBOUND_IP_RANGES, "127.0.0.1/24,10.96.0.1/24").is_ok());
        assert!(one(EXCLUDE_OUTBOUND_IP_RANGES, "*").is_err());
        assert!(one(EXCLUDE_OUTBOUND_IP_RANGES, "2001:db8::/32").is_ok());
        assert!(one(EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33").is_err());
        assert!(one(INCLUDE_INBOUND_PORTS, "*").is_ok());
        assert!(one(EXCLUDE_INBOUND_PORTS, "").is_ok());
        assert!(one(EXCLUDE_INBOUND_PORTS, "0").is_err());
        assert!(one(STATUS_PORT, "0").is_ok());
        assert!(one(STATUS_PORT, "70000").is_err());
    }

    #[test]
    fn user_volumes_are_named_objects_in_name_order() {
        let v = named_objects(
            r#"{"b": {"secret": {"secretName": "s"}}, "a": {"name": "x", "emptyDir": {}}}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            [
                serde_json::json!({"name": "a", "emptyDir": {}}),
                serde_json::json!({"name": "b", "secret": {"secretName": "s"}}),
            ]
        );
        assert!(one(USER_VOLUME, r#"{"a": "secret"}"#).is_err());
        assert!(one(USER_VOLUME_MOUNT, "[1]").is_err());
        assert!(one(USER_VOLUME_MOUNT, r#"{"": {}}"#).is_err());
        assert!(one(USER_VOLUME_MOUNT, r#"{"a": {"mountPath": "/a"}}"#).is_ok());
    }

    #[test]
    fn quantities() {
        for ok in ["4000m", "4", "0.5", "128Mi", "1Gi", "1e3", "1.5G"] {
            assert!(quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "abc", "1.2.3", "-1", "10Mb", "1e", "m"] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn several_errors_are_all_reported() {
        let anns = Labels::from([
            (PROXY_CPU.to_string(), "lots".to_string()),
            (STATUS_PORT.to_string(), "x".to_string()),
        ]);
        let err = validate(&anns).unwrap_err().to_string();
        assert!(
            err.contains(PROXY_CPU) && err.contains(STATUS_PORT),
            "{err}"
        );
    }
}
