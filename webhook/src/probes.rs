//! Probe rewriting. With mTLS on, the kubelet cannot reach the app's probe ports through the sidecar, so HTTP,
//! TCP and gRPC probes (and HTTP/TCP lifecycle hooks) are pointed at the proxy's status port
//! (`/app-health/<container>/{livez,readyz,startupz}`, `/app-lifecycle/<container>/{poststartz,prestopz}`)
//! and the originals go to the proxy in env `ISTIO_KUBE_APP_PROBERS` (a JSON object keyed by those paths)
//! so that it can run them against the app. On re-injection, probes already pointing at the status port keep
//! the originals recorded by the previous injection: they are merged, never lost.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Name of the proxy env var that carries the original probes.
pub const APP_PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

/// Original probe handlers keyed by their status-port path.
pub type Probers = BTreeMap<String, Value>;

const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];
const HOOKS: [(&str, &str); 2] = [("postStart", "poststartz"), ("preStop", "prestopz")];

pub fn health_path(container: &str, suffix: &str) -> String {
    format!("/app-health/{container}/{suffix}")
}

pub fn lifecycle_path(container: &str, suffix: &str) -> String {
    format!("/app-lifecycle/{container}/{suffix}")
}

/// Rewrites one container's probes and HTTP/TCP lifecycle hooks in place, recording originals in `out`.
pub fn rewrite_container(
    container: &mut Value,
    status_port: u16,
    previous: &Probers,
    out: &mut Probers,
) {
    let changed = rewritten_fields(container, status_port, previous, out);
    if let Some(obj) = container.as_object_mut() {
        for (field, value) in changed {
            obj.insert(field.to_string(), value);
        }
    }
}

/// What [`rewrite_container`] changes, without changing the container: the new values of the probe fields
/// (`livenessProbe`, `readinessProbe`, `startupProbe`) and of `lifecycle` that are rewritten. Originals are
/// are added to `out` as by `rewrite_container` (any map or list of pairs; a later pair replaces an earlier one
/// of the same path).
pub fn rewritten_fields(
    container: &Value,
    status_port: u16,
    previous: &Probers,
    out: &mut impl Extend<(String, Value)>,
) -> Vec<(&'static str, Value)> {
    let mut changed = Vec::new();
    let Some(name) = container.get("name").and_then(Value::as_str) else {
        return changed;
    };
    let no_ports = Value::Null;
    let ports = container.get("ports").unwrap_or(&no_ports);
    for (field, suffix) in PROBES {
        if let Some(probe) = container.get(field) {
            let mut probe = probe.clone();
            let path = health_path(name, suffix);
            if rewrite_handler(&mut probe, &path, status_port, ports, true, previous, out) {
                changed.push((field, probe));
            }
        }
    }
    if let Some(lifecycle) = container
        .get("lifecycle")
        .filter(|l| HOOKS.iter().any(|(field, _)| l.get(field).is_some()))
    {
        let mut lifecycle = lifecycle.clone();
        let mut any = false;
        for (field, suffix) in HOOKS {
            if let Some(hook) = lifecycle.get_mut(field) {
                let path = lifecycle_path(name, suffix);
                any |= rewrite_handler(hook, &path, status_port, ports, false, previous, out);
            }
        }
        if any {
            changed.push(("lifecycle", lifecycle));
        }
    }
    changed
}

/// Points one probe or hook at the status port; true when it was changed.
fn rewrite_handler(
    probe: &mut Value,
    path: &str,
    status_port: u16,
    ports: &Value,
    grpc_allowed: bool,
    previous: &Probers,
    out: &mut impl Extend<(String, Value)>,
) -> bool {
    let Some(obj) = probe.as_object_mut() else {
        return false;
    };
    if points_at(obj, path, status_port) {
        // Rewritten by an earlier injection: carry its original forward.
        if let Some(orig) = previous.get(path) {
            out.extend([(path.to_string(), orig.clone())]);
        }
        return false;
    }
    let kinds: &[&str] = if grpc_allowed {
        &["httpGet", "tcpSocket", "grpc"]
    } else {
        &["httpGet", "tcpSocket"]
    };
    let Some(kind) = kinds.iter().find(|k| obj.contains_key(**k)) else {
        return false; // exec probes run inside the container and need nothing.
    };
    let mut handler = obj.get(*kind).cloned().unwrap_or(Value::Null);
    // A named port is resolved now: the proxy does not know the container's port names.
    if let Some(port) = handler.get_mut("port") {
        match resolve_port(port, ports) {
            Some(n) => *port = json!(n),
            None => return false, // unresolvable: leave the probe alone rather than break it.
        }
    }
    let mut original = Map::new();
    original.insert((*kind).to_string(), handler);
    if let Some(t) = obj.get("timeoutSeconds") {
        original.insert("timeoutSeconds".to_string(), t.clone());
    }
    out.extend([(path.to_string(), Value::Object(original))]);
    for k in kinds {
        obj.remove(*k);
    }
    obj.insert(
        "httpGet".to_string(),
        json!({ "path": path, "port": status_port }),
    );
    true
}

fn points_at(obj: &Map<String, Value>, path: &str, status_port: u16) -> bool {
    let Some(get) = obj.get("httpGet") else {
        return false;
    };
    let port_ok = match get.get("port") {
        Some(Value::Number(n)) => n.as_u64() == Some(u64::from(status_port)),
        Some(Value::String(s)) => s.parse::<u16>().ok() == Some(status_port),
        _ => false,
    };
    port_ok && get.get("path").and_then(Value::as_str) == Some(path)
}

fn resolve_port(port: &Value, ports: &Value) -> Option<u64> {
    match port {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse::<u64>().ok().or_else(|| {
            ports.as_array()?.iter().find_map(|p| {
                (p.get("name").and_then(Value::as_str) == Some(s.as_str()))
                    .then(|| p.get("containerPort").and_then(Value::as_u64))
                    .flatten()
            })
        }),
        _ => None,
    }
}

/// Reads the originals recorded in a (previously injected) proxy container's env.
pub fn probers_from_container(container: &Value) -> Probers {
    container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(APP_PROBERS_ENV))
        .and_then(|e| e.get("value").and_then(Value::as_str))
        .and_then(|s| serde_json::from_str::<Probers>(s).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_port_resolved_and_probe_pointed_at_status_port() {
        let mut c = json!({
            "name": "hello",
            "ports": [{"name": "http", "containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": "http"}, "timeoutSeconds": 2, "periodSeconds": 5},
            "readinessProbe": {"tcpSocket": {"port": 3333}},
            "startupProbe": {"exec": {"command": ["true"]}},
        });
        let mut out = Probers::new();
        rewrite_container(&mut c, 15020, &Probers::new(), &mut out);
        assert_eq!(
            c["livenessProbe"],
            json!({"timeoutSeconds": 2, "periodSeconds": 5, "httpGet": {"path": "/app-health/hello/livez", "port": 15020}})
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"],
            "/app-health/hello/readyz"
        );
        assert_eq!(c["startupProbe"], json!({"exec": {"command": ["true"]}}));
        assert_eq!(
            out["/app-health/hello/livez"],
            json!({"httpGet": {"port": 80}, "timeoutSeconds": 2})
        );
        assert_eq!(
            out["/app-health/hello/readyz"],
            json!({"tcpSocket": {"port": 3333}})
        );
    }

    #[test]
    fn rewritten_probe_keeps_previous_original() {
        let mut c = json!({
            "name": "w",
            "livenessProbe": {"httpGet": {"path": "/app-health/w/livez", "port": 15020}},
        });
        let previous = Probers::from([(
            "/app-health/w/livez".to_string(),
            json!({"httpGet": {"port": 90}}),
        )]);
        let mut out = Probers::new();
        rewrite_container(&mut c, 15020, &previous, &mut out);
        assert_eq!(out, previous);
    }

    #[test]
    fn grpc_probe_and_lifecycle_hooks() {
        let mut c = json!({
            "name": "g",
            "livenessProbe": {"grpc": {"port": 9000}},
            "lifecycle": {"preStop": {"httpGet": {"port": 91}}, "postStart": {"exec": {"command": ["x"]}}},
        });
        let mut out = Probers::new();
        rewrite_container(&mut c, 15020, &Probers::new(), &mut out);
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"path": "/app-health/g/livez", "port": 15020}})
        );
        assert_eq!(
            c["lifecycle"]["preStop"]["httpGet"]["path"],
            "/app-lifecycle/g/prestopz"
        );
        assert_eq!(
            c["lifecycle"]["postStart"],
            json!({"exec": {"command": ["x"]}})
        );
        assert_eq!(out.len(), 2);
    }
}
