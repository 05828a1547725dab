//! Istio's mesh config (ConfigMap `istio-system/istio`, key `mesh`) admitted by a registry reaches
//! the translation: mesh-wide `localityLbSetting` / `h2UpgradePolicy` on the clusters, and the
//! workload's locality on its proxy's inbound listener.

#![allow(clippy::unwrap_used)]

use halyard_config::discovery::Node;
use halyard_config::resources::{cluster, listener};
use halyard_operator::registry::{MeshObjects, MeshSnapshot, admit};

const OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    h2UpgradePolicy: UPGRADE
    localityLbSetting:
      failover: [{from: us-east, to: us-west}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {clusterIP: 10.0.0.9, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-0
  namespace: default
  labels: {app: reviews, topology.kubernetes.io/region: us-east, topology.kubernetes.io/zone: us-east-1a}
spec: {containers: [{name: app}]}
status: {podIP: 10.1.0.1, phase: Running, conditions: [{type: Ready, status: "True"}]}
"#;

fn snapshot(text: &str) -> MeshSnapshot {
    let mut objects = MeshObjects::default();
    let mut rejected = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        admit(
            value,
            &format!("test.yaml#{i}"),
            "default",
            &mut objects,
            &mut rejected,
        );
    }
    assert!(rejected.is_empty(), "{rejected:?}");
    MeshSnapshot::build(1, "test".into(), objects, Vec::new())
}

fn reviews_proxy() -> Node {
    Node {
        id: "reviews-0.default".into(),
        namespace: "default".into(),
        labels: [("app".to_string(), "reviews".to_string())].into(),
        ip_addresses: vec!["10.1.0.1".into()],
        ..Default::default()
    }
}

#[test]
fn mesh_config_map_and_workload_locality_reach_the_proxy() {
    let res = snapshot(OBJECTS).generate(&reviews_proxy()).unwrap();
    let c = res
        .clusters
        .iter()
        .find(|c| c.name == "outbound|9080||reviews.default.svc.cluster.local")
        .unwrap();
    assert_eq!(c.upstream_protocol, cluster::UpstreamProtocol::Http2 as i32);
    let l = c.load_balancer.as_ref().unwrap().locality.as_ref().unwrap();
    assert_eq!(
        (l.failover[0].from.as_str(), l.failover[0].to.as_str()),
        ("us-east", "us-west")
    );
    let inbound: Vec<&str> = res
        .listeners
        .iter()
        .filter(|l| l.direction == listener::Direction::Inbound as i32)
        .map(|l| l.locality.as_str())
        .collect();
    assert_eq!(inbound, vec!["us-east/us-east-1a/"]);

    // Without the ConfigMap: Istio's defaults.
    let without = OBJECTS.split_once("---").unwrap().1;
    let res = snapshot(without).generate(&reviews_proxy()).unwrap();
    let c = res
        .clusters
        .iter()
        .find(|c| c.name == "outbound|9080||reviews.default.svc.cluster.local")
        .unwrap();
    assert_eq!(c.upstream_protocol, cluster::UpstreamProtocol::Http1 as i32);
    assert_eq!(c.load_balancer.as_ref().unwrap().locality, None);
}
