//! DestinationRule `connectionPool`, `loadBalancer.localityLbSetting` and their per-port and
//! per-subset overrides, translated into cluster resources (the proxy side is tested in
//! `proxy/tests/resilience_pool.rs` and `resilience_locality.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use halyard_config::mesh::{MeshInput, MeshModel};
use halyard_config::resources::cluster;
use halyard_config::translate::translate;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}]}
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

fn clusters(dr: &str) -> halyard_config::ProxyResources {
    let input: MeshInput = mesh_from_yaml(&format!("{MESH}\n---\n{dr}"));
    translate(&MeshModel::build(&input), &sidecar(&input, "client")).unwrap()
}

#[test]
fn every_connection_pool_field_reaches_the_cluster() {
    let res = clusters(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 7
        connectTimeout: 250ms
        tcpKeepalive: {probes: 3, time: 7s, interval: 2s}
        maxConnectionDuration: 30s
      http:
        idleTimeout: 300ms
        maxRequestsPerConnection: 3
        http2MaxRequests: 50
        maxConcurrentStreams: 2
        h2UpgradePolicy: UPGRADE
"#,
    );
    let c = cluster(&res, &format!("outbound|9080||{REVIEWS}"));
    assert_eq!(c.connect_timeout_ms, 250);
    let tcp = c.connection_pool.as_ref().unwrap().tcp.as_ref().unwrap();
    assert_eq!(
        (
            tcp.max_connections,
            tcp.connect_timeout_ms,
            tcp.keepalive_probes,
            tcp.keepalive_time_ms,
            tcp.keepalive_interval_ms,
            tcp.max_connection_duration_ms
        ),
        (7, 250, 3, 7_000, 2_000, 30_000)
    );
    let http = c.connection_pool.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!(
        (
            http.idle_timeout_ms,
            http.max_requests_per_connection,
            http.http2_max_requests,
            http.max_concurrent_streams
        ),
        (300, 3, 50, 2)
    );
    // UPGRADE: HTTP/1.1 requests go upstream over HTTP/2.
    assert_eq!(c.upstream_protocol(), cluster::UpstreamProtocol::Http2);
}

#[test]
fn h2_upgrade_policy_default_and_do_not_upgrade_keep_http1() {
    for policy in ["DEFAULT", "DO_NOT_UPGRADE"] {
        let res = clusters(&format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec: {{host: {REVIEWS}, trafficPolicy: {{connectionPool: {{http: {{h2UpgradePolicy: {policy}}}}}}}}}\n"
        ));
        let c = cluster(&res, &format!("outbound|9080||{REVIEWS}"));
        assert_eq!(
            c.upstream_protocol(),
            cluster::UpstreamProtocol::Http1,
            "{policy}"
        );
    }
}

#[test]
fn overrides_port_level_inside_subset_over_subset_over_port_level_over_top_level() {
    // Each level sets connectTimeout (and the subset's port level also idleTimeout); a level
    // that sets connectionPool replaces it whole, as Istio merges traffic policies.
    let res = clusters(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {REVIEWS}
  trafficPolicy:
    connectionPool: {{tcp: {{connectTimeout: 1s}}, http: {{maxRequestsPerConnection: 9}}}}
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover: [{{from: us-west, to: eu-west}}]
    portLevelSettings:
    - port: {{number: 9090}}
      connectionPool: {{tcp: {{connectTimeout: 2s}}}}
  subsets:
  - name: v1
    labels: {{version: v1}}
    trafficPolicy:
      connectionPool: {{tcp: {{connectTimeout: 3s}}}}
      loadBalancer:
        localityLbSetting:
          distribute: [{{from: "us-west/*", to: {{"us-west/*": 80, "us-east/*": 20}}}}]
      portLevelSettings:
      - port: {{number: 9090}}
        connectionPool: {{tcp: {{connectTimeout: 4s}}, http: {{idleTimeout: 5s}}}}
"#
    ));
    let timeout = |port: u32, subset: &str| {
        let c = cluster(&res, &outbound(port, subset, "reviews"));
        let pool = c.connection_pool.as_ref().unwrap();
        (
            c.connect_timeout_ms,
            pool.http.as_ref().map(|h| h.idle_timeout_ms),
            pool.http.as_ref().map(|h| h.max_requests_per_connection),
        )
    };
    assert_eq!(timeout(9080, ""), (1_000, Some(0), Some(9)), "top level");
    assert_eq!(timeout(9090, ""), (2_000, None, None), "port level");
    assert_eq!(timeout(9080, "v1"), (3_000, None, None), "subset");
    assert_eq!(
        timeout(9090, "v1"),
        (4_000, Some(5_000), Some(0)),
        "port level in subset"
    );

    let locality = |port: u32, subset: &str| {
        cluster(&res, &outbound(port, subset, "reviews"))
            .load_balancer
            .as_ref()
            .unwrap()
            .locality
            .clone()
            .unwrap()
    };
    let top = locality(9080, "");
    assert!(top.enabled);
    assert_eq!(top.failover[0].from, "us-west");
    assert_eq!(top.failover[0].to, "eu-west");
    let sub = locality(9080, "v1");
    assert!(
        sub.failover.is_empty(),
        "the subset's loadBalancer replaces the top level's"
    );
    assert_eq!(sub.distribute[0].from, "us-west/*");
    assert_eq!(sub.distribute[0].to["us-west/*"], 80);
    assert_eq!(sub.distribute[0].to["us-east/*"], 20);
}
