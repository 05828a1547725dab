//! Service registries: where the mesh comes from. Each registry publishes immutable [`MeshSnapshot`]s on a
//! watch channel; `None` until its initial sync is complete, and the last snapshot stays when the source
//! becomes unreachable.
//!
//! - [`local`]: a directory of YAML (Istio kinds, plus Kubernetes Services, EndpointSlices, Pods and
//!   Namespaces, and Istio's mesh config as ConfigMap `istio-system/istio`), polled for changes.
//! - [`kube`]: kube-runtime reflectors over the API server (the same kinds, the same mesh ConfigMap, and
//!   Nodes, whose topology labels give a pod its locality when the pod has no `istio-locality` label).
//!
//! Both admit objects through [`admit`], which validates Istio kinds with the same rules as the admission
//! webhook and skips (and reports) invalid ones rather than pushing them.

pub mod kube;
pub mod local;
mod snapshot;

use std::sync::Arc;

use halyard_config::mesh::{DEFAULT_ROOT_NAMESPACE, MeshConfig};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

pub use snapshot::MeshSnapshot;

/// The channel every registry publishes on.
pub type Snapshots = watch::Receiver<Option<Arc<MeshSnapshot>>>;

/// An Istio config object that passed validation, kept as the JSON it came as (what `/debug/configz` shows).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigObject {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub object: Value,
}

/// Everything a registry knows, before translation.
#[derive(Debug, Clone, Default)]
pub struct MeshObjects {
    pub configs: Vec<ConfigObject>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    /// Istio's mesh config: the `mesh` key of ConfigMap `istio` in the root namespace, else the defaults.
    pub mesh: MeshConfig,
}

/// An object the registry skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Where it came from: `file.yaml#2` (document index) or `kubernetes`.
    pub origin: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// Adds one object (or every item of a `List`) to `objects`, or records why it was skipped.
/// `default_namespace` fills in objects without one (kubectl's behaviour for `default`).
pub fn admit(
    value: Value,
    origin: &str,
    default_namespace: &str,
    objects: &mut MeshObjects,
    rejected: &mut Vec<Rejected>,
) {
    let api_version = str_at(&value, &["apiVersion"]).to_string();
    let kind = str_at(&value, &["kind"]).to_string();
    let namespace = match str_at(&value, &["metadata", "namespace"]) {
        "" => default_namespace.to_string(),
        ns => ns.to_string(),
    };
    let name = str_at(&value, &["metadata", "name"]).to_string();
    let reject = |reason: String, rejected: &mut Vec<Rejected>| {
        rejected.push(Rejected {
            origin: origin.to_string(),
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            reason,
        })
    };

    if kind.ends_with("List")
        && let Some(Value::Array(items)) = value.get("items")
    {
        for (i, item) in items.iter().enumerate() {
            admit(
                item.clone(),
                &format!("{origin}/items[{i}]"),
                default_namespace,
                objects,
                rejected,
            );
        }
        return;
    }
    if api_version.is_empty() || kind.is_empty() {
        return reject("missing apiVersion or kind".to_string(), rejected);
    }
    if name.is_empty() {
        return reject("missing metadata.name".to_string(), rejected);
    }

    if halyard_crds::validation::is_istio_api_version(&api_version) {
        let mut value = value;
        set_namespace(&mut value, &namespace);
        let report = halyard_crds::validation::validate_value(&value);
        if !report.is_valid() {
            return reject(report.denial_message().trim_end().to_string(), rejected);
        }
        objects.configs.push(ConfigObject {
            api_version,
            kind,
            namespace,
            name,
            object: value,
        });
        return;
    }

    let mut value = value;
    let parsed = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => typed(value).map(|o| objects.namespaces.push(o)),
        (_, "Namespace") => Err(format!(
            "unsupported apiVersion {api_version} for Namespace"
        )),
        ("v1", "Service") => {
            set_namespace(&mut value, &namespace);
            typed(value).map(|o| objects.services.push(o))
        }
        ("v1", "Pod") => {
            set_namespace(&mut value, &namespace);
            typed(value).map(|o| objects.pods.push(o))
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            set_namespace(&mut value, &namespace);
            typed(value).map(|o| objects.endpoint_slices.push(o))
        }
        // Where Istio keeps its MeshConfig (istiod reads the same ConfigMap).
        ("v1", "ConfigMap") if name == "istio" && namespace == DEFAULT_ROOT_NAMESPACE => {
            let mesh = str_at(&value, &["data", "mesh"]);
            MeshConfig::from_yaml(&format!("{origin} data.mesh"), mesh)
                .map(|m| objects.mesh = m)
                .map_err(|e| format!("mesh config not applied: {e}"))
        }
        _ => Err(format!(
            "unsupported kind {kind} ({api_version}): the registry reads Istio kinds, Services, \
             EndpointSlices, Pods, Namespaces and the ConfigMap \
             {DEFAULT_ROOT_NAMESPACE}/istio (mesh config)"
        )),
    };
    if let Err(reason) = parsed {
        reject(reason, rejected);
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("not a valid object of its kind: {e}"))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut v = value;
    for key in path {
        match v.get(key) {
            Some(next) => v = next,
            None => return "",
        }
    }
    v.as_str().unwrap_or("")
}

fn set_namespace(value: &mut Value, namespace: &str) {
    if let Some(Value::Object(meta)) = value.get_mut("metadata") {
        meta.entry("namespace")
            .or_insert_with(|| Value::String(namespace.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(value: Value) -> (MeshObjects, Vec<Rejected>) {
        let mut objects = MeshObjects::default();
        let mut rejected = Vec::new();
        admit(value, "test.yaml#0", "default", &mut objects, &mut rejected);
        (objects, rejected)
    }

    #[test]
    fn admits_a_valid_virtual_service_with_default_namespace() {
        let (objects, rejected) = run(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
        }));
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(objects.configs.len(), 1);
        assert_eq!(objects.configs[0].namespace, "default");
        assert_eq!(
            objects.configs[0].object["metadata"]["namespace"],
            "default"
        );
    }

    #[test]
    fn rejects_an_invalid_virtual_service_with_the_validator_message() {
        let (objects, rejected) = run(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "bad", "namespace": "shop"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]}
        }));
        assert!(objects.configs.is_empty());
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].name, "bad");
        assert_eq!(rejected[0].namespace, "shop");
        assert!(
            rejected[0].reason.starts_with("configuration is invalid"),
            "{:?}",
            rejected[0]
        );
    }

    #[test]
    fn reads_services_and_lists_and_reports_unknown_kinds() {
        let (objects, rejected) = run(json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"},
                 "spec": {"ports": [{"name": "http", "port": 9080}], "selector": {"app": "reviews"}}},
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v1"}}
            ]
        }));
        assert_eq!(objects.services.len(), 1);
        assert_eq!(
            objects.services[0].metadata.namespace.as_deref(),
            Some("default")
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].kind, "Deployment");
        assert_eq!(rejected[0].origin, "test.yaml#0/items[1]");
    }

    #[test]
    fn reads_the_mesh_config_from_the_istio_config_map() {
        let (objects, rejected) = run(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": "h2UpgradePolicy: UPGRADE\nlocalityLbSetting: {enabled: false}\n"}
        }));
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(
            objects.mesh.h2_upgrade_policy,
            Some(halyard_crds::networking::H2UpgradePolicy::Upgrade)
        );
        assert_eq!(
            objects.mesh.locality_lb_setting.and_then(|l| l.enabled),
            Some(false)
        );

        // A bad mesh config is reported and the defaults stay; other ConfigMaps are not read.
        let (objects, rejected) = run(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": "connectTimeout: later"}
        }));
        assert_eq!(objects.mesh, MeshConfig::default());
        assert!(
            rejected[0].reason.contains("connectTimeout"),
            "{:?}",
            rejected[0]
        );
        let (_, rejected) = run(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "default"},
            "data": {"mesh": "h2UpgradePolicy: UPGRADE"}
        }));
        assert!(rejected[0].reason.starts_with("unsupported kind ConfigMap"));
    }

    #[test]
    fn reports_objects_without_kind_or_name() {
        let (_, rejected) = run(json!({"metadata": {"name": "x"}}));
        assert_eq!(rejected[0].reason, "missing apiVersion or kind");
        let (_, rejected) = run(json!({"apiVersion": "v1", "kind": "Service", "metadata": {}}));
        assert_eq!(rejected[0].reason, "missing metadata.name");
    }
}
