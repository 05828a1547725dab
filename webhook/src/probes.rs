//! Probe rewriting. With mTLS on, the kubelet cannot reach the app's probe ports through the sidecar, so HTTP,
//! TCP and gRPC probes (and HTTP/TCP lifecycle hooks) are pointed at the proxy's status port
//! (`/app-health/<container>/{livez,readyz,startupz}`, `/app-lifecycle/<container>/{poststartz,prestopz}`)
//! and the originals go to the proxy in env `ISTIO_KUBE_APP_PROBERS` (a JSON object keyed by those paths)
//! so that it can run them against the app. On re-injection, probes already pointing at the status port keep
//! the originals recorded by the previous injection: they are merged, never lost.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
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
    let changed: Vec<(&'static str, Value)> =
        rewritten_fields(container, status_port, previous, out)
            .into_iter()
            .filter_map(|(field, new)| Some((field, serde_json::to_value(new).ok()?)))
            .collect();
    if let Some(obj) = container.as_object_mut() {
        for (field, value) in changed {
            obj.insert(field.to_string(), value);
        }
    }
}

/// What [`rewrite_container`] changes, without changing the container: the new values of the probe fields
/// (`livenessProbe`, `readinessProbe`, `startupProbe`) and of `lifecycle` that are rewritten, borrowing the
/// container's other members (serialise them, or `serde_json::to_value` them). Originals are added to `out` as
/// by `rewrite_container` (any map or list of pairs; a later pair replaces an earlier one of the same path).
pub fn rewritten_fields<'p>(
    container: &'p Value,
    status_port: u16,
    previous: &Probers,
    out: &mut impl Extend<(String, Value)>,
) -> Vec<(&'static str, Rewritten<'p>)> {
    let mut changed = Vec::new();
    let Some(name) = container.get("name").and_then(Value::as_str) else {
        return changed;
    };
    let no_ports = Value::Null;
    let ports = container.get("ports").unwrap_or(&no_ports);
    for (field, suffix) in PROBES {
        if let Some(probe) = container.get(field) {
            let path = health_path(name, suffix);
            if let Some(new) = redirect(probe, path, status_port, ports, true, previous, out) {
                changed.push((field, Rewritten::Probe(new)));
            }
        }
    }
    if let Some(lifecycle) = container.get("lifecycle").and_then(Value::as_object) {
        let mut any = false;
        let mut members = Vec::with_capacity(lifecycle.len());
        for (key, value) in lifecycle {
            let hook = HOOKS
                .iter()
                .find(|(field, _)| field == key)
                .and_then(|(_, suffix)| {
                    let path = lifecycle_path(name, suffix);
                    redirect(value, path, status_port, ports, false, previous, out)
                });
            any |= hook.is_some();
            members.push((
                key.as_str(),
                hook.map_or(Hook::Same(value), Hook::Redirected),
            ));
        }
        if any {
            changed.push(("lifecycle", Rewritten::Lifecycle(members)));
        }
    }
    changed
}

/// A rewritten probe field or `lifecycle`, borrowing what it keeps of the original.
#[derive(Debug, Clone)]
pub enum Rewritten<'p> {
    Probe(Redirected<'p>),
    /// The lifecycle's members in their order, hooks pointed at the status port where they were rewritten.
    Lifecycle(Vec<(&'p str, Hook<'p>)>),
}

#[derive(Debug, Clone)]
pub enum Hook<'p> {
    Same(&'p Value),
    Redirected(Redirected<'p>),
}

/// A probe or hook pointed at the status port: the original's members other than its handler, in the order an
/// in-place edit of a `serde_json::Map` leaves them (a removed member's slot takes the last one), then `httpGet`.
#[derive(Debug, Clone)]
pub struct Redirected<'p> {
    members: Vec<(&'p str, &'p Value)>,
    path: String,
    port: u16,
}

impl Serialize for Redirected<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct HttpGet<'x> {
            path: &'x str,
            port: u16,
        }
        let mut map = s.serialize_map(Some(self.members.len() + 1))?;
        for (k, v) in &self.members {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry(
            "httpGet",
            &HttpGet {
                path: &self.path,
                port: self.port,
            },
        )?;
        map.end()
    }
}

impl Serialize for Hook<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Hook::Same(v) => v.serialize(s),
            Hook::Redirected(r) => r.serialize(s),
        }
    }
}

impl Serialize for Rewritten<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Rewritten::Probe(r) => r.serialize(s),
            Rewritten::Lifecycle(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Points one probe or hook at the status port (`None`: left as it is), recording its original handler.
fn redirect<'p>(
    probe: &'p Value,
    path: String,
    status_port: u16,
    ports: &Value,
    grpc_allowed: bool,
    previous: &Probers,
    out: &mut impl Extend<(String, Value)>,
) -> Option<Redirected<'p>> {
    let obj = probe.as_object()?;
    if points_at(obj, &path, status_port) {
        // Rewritten by an earlier injection: carry its original forward.
        if let Some(orig) = previous.get(&path) {
            out.extend([(path, orig.clone())]);
        }
        return None;
    }
    let kinds: &[&str] = if grpc_allowed {
        &["httpGet", "tcpSocket", "grpc"]
    } else {
        &["httpGet", "tcpSocket"]
    };
    // exec probes run inside the container and need nothing.
    let kind = kinds.iter().find(|k| obj.contains_key(**k))?;
    let mut handler = obj.get(*kind).cloned().unwrap_or(Value::Null);
    // A named port is resolved now: the proxy does not know the container's port names. An unresolvable
    // one leaves the probe alone rather than break it.
    if let Some(port) = handler.get_mut("port") {
        *port = json!(resolve_port(port, ports)?);
    }
    let mut original = Map::new();
    original.insert((*kind).to_string(), handler);
    if let Some(t) = obj.get("timeoutSeconds") {
        original.insert("timeoutSeconds".to_string(), t.clone());
    }
    let mut members: Vec<(&str, &Value)> = obj.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for k in kinds {
        if let Some(i) = members.iter().position(|(m, _)| m == k) {
            members.swap_remove(i);
        }
    }
    out.extend([(path.clone(), Value::Object(original))]);
    Some(Redirected {
        members,
        path,
        port: status_port,
    })
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
