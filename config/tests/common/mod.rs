//! Test inputs: Istio's Bookinfo sample (read from `../shared/istio`, never copied) turned into a
//! `MeshInput`, proxy nodes, and lookups into `ProxyResources`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use halyard_config::ProxyResources;
use halyard_config::discovery::{Node, ProxyType};
use halyard_config::mesh::MeshInput;
use halyard_config::resources::{Cluster, ClusterEndpoints, Route, VirtualHost, route};
use halyard_crds::IstioObject;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};

/// `../shared/istio`, or `None` (with a visible skip message) when absent; with `CI=true` a
/// missing folder fails the test.
pub fn istio_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/istio"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing and CI=true: the Bookinfo tests need it",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not found; Bookinfo tests did not run",
        dir.display()
    );
    None
}

pub fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file as JSON values.
pub fn documents(text: &str) -> Vec<Value> {
    halyard_crds::yaml::split_documents(text)
        .expect("valid YAML")
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// Istio objects of a YAML text, namespace `default` unless set.
pub fn istio_objects(text: &str) -> Vec<IstioObject> {
    documents(text)
        .into_iter()
        .map(|mut v| {
            if v.pointer("/metadata/namespace").is_none() {
                v["metadata"]["namespace"] = json!("default");
            }
            halyard_crds::parse_object(&v)
                .unwrap_or_else(|e| panic!("{e}"))
                .object
        })
        .collect()
}

/// Services get ClusterIPs `10.0.0.<n>`; each Deployment becomes one ready pod `<name>-0` with
/// IP `10.1.0.<n>` and Istio's injected `security.istio.io/tlsMode: istio` label.
pub fn kube_objects(text: &str, input: &mut MeshInput) {
    for mut v in documents(text) {
        let ns = v
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        v["metadata"]["namespace"] = json!(ns);
        match v["kind"].as_str() {
            Some("Service") => {
                let n = input.services.len() + 1;
                if v.pointer("/spec/clusterIP").is_none() {
                    v["spec"]["clusterIP"] = json!(format!("10.0.0.{n}"));
                }
                input
                    .services
                    .push(serde_json::from_value::<Service>(v).expect("Service"));
            }
            Some("Deployment") => {
                let n = input.pods.len() + 1;
                let name = v["metadata"]["name"].as_str().expect("name").to_string();
                let mut labels = v["spec"]["template"]["metadata"]["labels"].clone();
                labels["security.istio.io/tlsMode"] = json!("istio");
                let pod = json!({
                    "metadata": {"name": format!("{name}-0"), "namespace": ns, "labels": labels},
                    "spec": v["spec"]["template"]["spec"].clone(),
                    "status": {
                        "podIP": format!("10.1.0.{n}"),
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}]
                    }
                });
                input
                    .pods
                    .push(serde_json::from_value::<Pod>(pod).expect("Pod"));
            }
            Some("EndpointSlice") => input.endpoint_slices.push(
                serde_json::from_value::<k8s_openapi::api::discovery::v1::EndpointSlice>(v)
                    .expect("EndpointSlice"),
            ),
            Some("Pod") => input
                .pods
                .push(serde_json::from_value::<Pod>(v).expect("Pod")),
            _ => {}
        }
    }
}

/// Bookinfo's services and pods (`platform/kube/bookinfo.yaml`), no Istio config.
pub fn bookinfo() -> Option<MeshInput> {
    let dir = istio_dir()?;
    let mut input = MeshInput::default();
    kube_objects(
        &read(&dir.join("samples/bookinfo/platform/kube/bookinfo.yaml")),
        &mut input,
    );
    Some(input)
}

/// Adds one of `samples/bookinfo/networking/<file>`.
pub fn apply(input: &mut MeshInput, file: &str) {
    let dir = istio_dir().expect("checked by bookinfo()");
    let text = read(&dir.join("samples/bookinfo/networking").join(file));
    input.istio.extend(istio_objects(&text));
}

/// The sidecar of the first pod whose `app` label is `app`.
pub fn sidecar(input: &MeshInput, app: &str) -> Node {
    let pod = input
        .pods
        .iter()
        .find(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .is_some_and(|a| a == app)
        })
        .unwrap_or_else(|| panic!("no pod for app {app}"));
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    Node {
        id: format!("{}.{ns}", pod.metadata.name.clone().unwrap_or_default()),
        namespace: ns,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip_addresses: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

pub fn ingress_gateway() -> Node {
    Node {
        id: "istio-ingressgateway-0.istio-system".into(),
        namespace: "istio-system".into(),
        labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        proxy_type: ProxyType::Router as i32,
        ..Default::default()
    }
}

pub fn cluster<'a>(res: &'a ProxyResources, name: &str) -> &'a Cluster {
    res.clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no cluster {name}; have {:?}",
                names(&res.clusters, |c| &c.name)
            )
        })
}

pub fn endpoints<'a>(res: &'a ProxyResources, name: &str) -> &'a ClusterEndpoints {
    res.endpoints
        .iter()
        .find(|c| c.cluster_name == name)
        .unwrap_or_else(|| panic!("no endpoints for {name}"))
}

pub fn names<T>(v: &[T], f: impl Fn(&T) -> &String) -> Vec<String> {
    v.iter().map(|x| f(x).clone()).collect()
}

/// The virtual host serving `domain` in route table `route_name`.
pub fn vhost<'a>(res: &'a ProxyResources, route_name: &str, domain: &str) -> &'a VirtualHost {
    let rc = res
        .route_configs
        .iter()
        .find(|r| r.name == route_name)
        .unwrap_or_else(|| panic!("no route table {route_name}"));
    rc.virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == domain))
        .unwrap_or_else(|| panic!("no virtual host for {domain} in {route_name}"))
}

/// `(cluster, weight)` of a route's action.
pub fn weights(r: &Route) -> Vec<(String, u32)> {
    match &r.action {
        Some(route::Action::Route(a)) => a
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight))
            .collect(),
        other => panic!("route {:?} has no route action: {other:?}", r.name),
    }
}

pub fn fqdn(name: &str) -> String {
    format!("{name}.default.svc.cluster.local")
}

pub fn outbound(port: u32, subset: &str, name: &str) -> String {
    format!("outbound|{port}|{subset}|{}", fqdn(name))
}

/// A mesh from one multi-document YAML: Istio kinds parsed as config, Services and Deployments
/// as in [`kube_objects`].
pub fn mesh_from_yaml(text: &str) -> MeshInput {
    let mut input = MeshInput::default();
    let mut kube = String::new();
    let mut istio = String::new();
    for doc in documents(text) {
        let is_istio = doc["apiVersion"]
            .as_str()
            .is_some_and(|v| v.contains("istio.io"));
        let target = if is_istio { &mut istio } else { &mut kube };
        target.push_str("---\n");
        target.push_str(&serde_json::to_string(&doc).unwrap());
        target.push('\n');
    }
    kube_objects(&kube, &mut input);
    input.istio = istio_objects(&istio);
    input
}

pub fn node(id: &str, ns: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: format!("{id}.{ns}"),
        namespace: ns.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}
