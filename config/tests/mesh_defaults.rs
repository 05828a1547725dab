//! Mesh-wide inputs of locality load balancing and HTTP/2 upgrade: MeshConfig
//! `localityLbSetting` / `h2UpgradePolicy` as the defaults of clusters whose DestinationRule sets
//! none, and the workload's locality the control plane sends to its proxy (on the inbound
//! listeners). The proxy side is tested in `proxy/tests/resilience_locality.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use halyard_config::mesh::{MeshConfig, MeshInput, MeshModel, OutboundPolicy};
use halyard_config::resources::{
    LocalityLoadBalancing, cluster, load_balancer, locality_load_balancing,
};
use halyard_config::translate::translate;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: grpc, port: 9090}, {name: tcp, port: 9100}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: default}
spec: {template: {metadata: {labels: {app: reviews, version: v1}}, spec: {containers: [{name: app}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: default}
spec: {template: {metadata: {labels: {app: client}}, spec: {containers: [{name: c}]}}}
"#;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

const MESH_DEFAULTS: &str = r#"
accessLogFile: /dev/stdout
defaultConfig: {concurrency: 2}
h2UpgradePolicy: UPGRADE
localityLbSetting:
  enabled: true
  failover: [{from: us-east, to: us-west}]
"#;

fn resources(mesh: &str, extra: &str) -> halyard_config::ProxyResources {
    let mut input: MeshInput = mesh_from_yaml(&format!("{MESH}\n---\n{extra}"));
    input.mesh = MeshConfig::from_yaml("mesh", mesh).unwrap();
    translate(&MeshModel::build(&input), &sidecar(&input, "client")).unwrap()
}

fn mesh_failover() -> LocalityLoadBalancing {
    LocalityLoadBalancing {
        enabled: true,
        failover: vec![locality_load_balancing::Failover {
            from: "us-east".into(),
            to: "us-west".into(),
        }],
        ..Default::default()
    }
}

fn outbound_cluster(
    res: &halyard_config::ProxyResources,
    port: u32,
) -> &halyard_config::resources::Cluster {
    cluster(res, &format!("outbound|{port}||{REVIEWS}"))
}

#[test]
fn mesh_yaml_is_read_with_istio_field_names() {
    let m = MeshConfig::from_yaml(
        "mesh",
        r#"
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
rootNamespace: halyard-system
trustDomain: example.org
connectTimeout: 2.5s
enableAutoMtls: false
h2UpgradePolicy: DO_NOT_UPGRADE
localityLbSetting:
  distribute: [{from: "us-east/*", to: {"us-east/*": 80, "us-west/*": 20}}]
  failoverPriority: [topology.kubernetes.io/region]
"#,
    )
    .unwrap();
    assert_eq!(m.outbound_traffic_policy, OutboundPolicy::RegistryOnly);
    assert_eq!(m.root_namespace, "halyard-system");
    assert_eq!(m.trust_domain, "example.org");
    assert_eq!(m.connect_timeout_ms, 2_500);
    assert!(!m.enable_auto_mtls);
    assert_eq!(
        m.h2_upgrade_policy,
        Some(halyard_crds::networking::H2UpgradePolicy::DoNotUpgrade)
    );
    let l = m.locality_lb_setting.unwrap();
    assert_eq!(l.distribute.len(), 1);
    assert_eq!(l.distribute[0].to.get("us-west/*"), Some(&20));
    assert_eq!(l.failover_priority, vec!["topology.kubernetes.io/region"]);

    // Fields halyard does not use are accepted; absent ones keep the defaults.
    let m = MeshConfig::from_yaml("mesh", MESH_DEFAULTS).unwrap();
    assert_eq!(m.root_namespace, MeshConfig::default().root_namespace);
    assert_eq!(m.connect_timeout_ms, 10_000);
    assert_eq!(
        MeshConfig::from_yaml("mesh", "").unwrap(),
        MeshConfig::default()
    );

    let err = MeshConfig::from_yaml("istio/mesh", "connectTimeout: soon").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("istio/mesh") && msg.contains("connectTimeout"),
        "{msg}"
    );
    let err = MeshConfig::from_yaml("mesh", "h2UpgradePolicy: SOMETIMES").unwrap_err();
    assert!(err.to_string().contains("h2UpgradePolicy"), "{err}");
}

#[test]
fn without_mesh_defaults_clusters_are_unchanged() {
    let res = resources("", "");
    let c = outbound_cluster(&res, 9080);
    assert_eq!(c.load_balancer.as_ref().unwrap().locality, None);
    assert_eq!(c.upstream_protocol, cluster::UpstreamProtocol::Http1 as i32);
}

#[test]
fn mesh_locality_lb_setting_applies_where_the_destination_rule_sets_none() {
    // No DestinationRule at all.
    let res = resources(MESH_DEFAULTS, "");
    let lb = outbound_cluster(&res, 9080).load_balancer.clone().unwrap();
    assert_eq!(lb.locality, Some(mesh_failover()));
    assert_eq!(lb.policy, load_balancer::Policy::LeastRequest as i32);

    // A DestinationRule with a load balancer but no localityLbSetting keeps its policy and gets
    // the mesh's locality setting.
    let res = resources(
        MESH_DEFAULTS,
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"#,
    );
    let lb = outbound_cluster(&res, 9080).load_balancer.clone().unwrap();
    assert_eq!(lb.policy, load_balancer::Policy::RoundRobin as i32);
    assert_eq!(lb.locality, Some(mesh_failover()));
}

#[test]
fn destination_rule_locality_lb_setting_replaces_the_mesh_one() {
    let res = resources(
        MESH_DEFAULTS,
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute: [{from: "us-east/*", to: {"us-east/*": 100}}]
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer:
        localityLbSetting: {enabled: false}
"#,
    );
    // Replaced whole: the mesh's failover is not merged in.
    let l = outbound_cluster(&res, 9080)
        .load_balancer
        .clone()
        .unwrap()
        .locality
        .unwrap();
    assert!(l.enabled);
    assert!(l.failover.is_empty(), "{l:?}");
    assert_eq!(l.distribute.len(), 1);
    assert_eq!(l.distribute[0].from, "us-east/*");
    // `enabled: false` in the rule turns off the mesh's setting for that port.
    let l = outbound_cluster(&res, 9090)
        .load_balancer
        .clone()
        .unwrap()
        .locality
        .unwrap();
    assert!(!l.enabled);
}

#[test]
fn mesh_h2_upgrade_policy_applies_unless_the_destination_rule_decides() {
    let res = resources(MESH_DEFAULTS, "");
    assert_eq!(
        outbound_cluster(&res, 9080).upstream_protocol,
        cluster::UpstreamProtocol::Http2 as i32
    );
    // Only HTTP/1.1 ports are upgraded: TCP stays as it is.
    assert_eq!(
        outbound_cluster(&res, 9100).upstream_protocol,
        cluster::UpstreamProtocol::UseDownstream as i32
    );

    let dr = |policy: &str| {
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {{connectionPool: {{http: {{h2UpgradePolicy: {policy}}}}}}}
"#
        )
    };
    let res = resources(MESH_DEFAULTS, &dr("DO_NOT_UPGRADE"));
    assert_eq!(
        outbound_cluster(&res, 9080).upstream_protocol,
        cluster::UpstreamProtocol::Http1 as i32
    );
    // DEFAULT defers to the mesh.
    let res = resources(MESH_DEFAULTS, &dr("DEFAULT"));
    assert_eq!(
        outbound_cluster(&res, 9080).upstream_protocol,
        cluster::UpstreamProtocol::Http2 as i32
    );
    // The rule upgrades without a mesh default too.
    let res = resources("", &dr("UPGRADE"));
    assert_eq!(
        outbound_cluster(&res, 9080).upstream_protocol,
        cluster::UpstreamProtocol::Http2 as i32
    );
}

/// The locality on the proxy's inbound listeners (the capture listener `0.0.0.0_15006`).
fn pushed_locality(res: &halyard_config::ProxyResources) -> Vec<String> {
    res.listeners
        .iter()
        .filter(|l| l.direction == halyard_config::resources::listener::Direction::Inbound as i32)
        .map(|l| l.locality.clone())
        .collect()
}

#[test]
fn a_pods_topology_labels_reach_its_proxy() {
    let input = mesh_from_yaml(
        r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-0
  namespace: default
  labels:
    app: reviews
    topology.kubernetes.io/region: us-east
    topology.kubernetes.io/zone: us-east-1a
    topology.istio.io/subzone: rack7
spec: {containers: [{name: app}]}
status: {podIP: 10.1.0.1, phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: plain-0, namespace: default, labels: {app: plain}}
spec: {containers: [{name: app}]}
status: {podIP: 10.1.0.2, phase: Running}
"#,
    );
    let model = MeshModel::build(&input);
    let res = translate(&model, &sidecar(&input, "reviews")).unwrap();
    assert_eq!(pushed_locality(&res), vec!["us-east/us-east-1a/rack7"]);
    // The same string the endpoints carry, so the proxy compares like with like.
    let eps = endpoints(&res, &format!("outbound|9080||{REVIEWS}"));
    assert_eq!(eps.endpoints[0].locality, "us-east/us-east-1a/rack7");
    // A pod without locality labels: nothing is pushed.
    let res = translate(&model, &sidecar(&input, "plain")).unwrap();
    assert_eq!(pushed_locality(&res), vec![String::new()]);
}

#[test]
fn the_node_zone_of_an_endpoint_slice_reaches_its_proxy() {
    // Kubernetes copies the node's zone into the EndpointSlice; the pod has no topology labels.
    let input = mesh_from_yaml(
        r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-0, namespace: default, labels: {app: reviews}}
spec: {containers: [{name: app}]}
status: {podIP: 10.1.0.1, phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc
  namespace: default
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: [10.1.0.1]
  zone: eu-central-1b
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-0, namespace: default}
"#,
    );
    let res = translate(&MeshModel::build(&input), &sidecar(&input, "reviews")).unwrap();
    assert_eq!(pushed_locality(&res), vec!["/eu-central-1b/"]);
}

#[test]
fn a_workload_entry_locality_reaches_its_proxy() {
    let input = mesh_from_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.example.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{name: http, number: 9080, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: default}
spec: {address: 10.9.0.5, labels: {app: ratings}, locality: us-west/zone2/sub3}
"#,
    );
    let mut vm = node("vm-1", "default", &[("app", "ratings")]);
    vm.ip_addresses = vec!["10.9.0.5".into()];
    let res = translate(&MeshModel::build(&input), &vm).unwrap();
    assert_eq!(pushed_locality(&res), vec!["us-west/zone2/sub3"]);
}
