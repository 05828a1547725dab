//! The resources read from and write to JSON/YAML in the documented shape: camelCase fields, enum
//! values by name, oneofs under their oneof name, missing fields defaulted.

use halyard_config::ProxyResources;
use halyard_config::resources::{
    Cluster, Listener, cluster, filter_chain, listener, load_balancer, route, string_match,
};

const STATIC_CONFIG: &str = r#"
version: "7"
listeners:
  - name: 0.0.0.0_15001
    address: 0.0.0.0
    port: 15001
    direction: OUTBOUND
    useOriginalDst: true
    filterChains:
      - name: http-9080
        match: { destinationPorts: [9080] }
        handler:
          http: { routeSpecifier: { routeConfigName: "9080" } }
routeConfigs:
  - name: "9080"
    virtualHosts:
      - name: reviews.default.svc.cluster.local:9080
        domains: [reviews, "reviews:9080"]
        routes:
          - matches:
              - uri: { kind: { prefix: /api }, ignoreCase: true }
            action:
              route:
                clusters:
                  - { name: "outbound|9080|v1|reviews.default.svc.cluster.local", weight: 90 }
                  - { name: "outbound|9080|v3|reviews.default.svc.cluster.local", weight: 10 }
clusters:
  - name: outbound|9080|v1|reviews.default.svc.cluster.local
    type: EDS
    protocol: HTTP
    loadBalancer: { policy: ROUND_ROBIN }
"#;

#[test]
fn static_yaml_reads_names_and_oneofs() {
    let res: ProxyResources =
        halyard_config::static_config::parse_proxy_resources("test.yaml", STATIC_CONFIG).unwrap();
    assert_eq!(res.version, "7");
    let l = &res.listeners[0];
    assert_eq!(l.direction(), listener::Direction::Outbound);
    assert!(l.use_original_dst);
    match &l.filter_chains[0].handler {
        Some(filter_chain::Handler::Http(h)) => assert_eq!(
            h.route_specifier,
            Some(
                halyard_config::resources::http_connection_manager::RouteSpecifier::RouteConfigName(
                    "9080".into()
                )
            )
        ),
        other => panic!("unexpected handler {other:?}"),
    }
    let route = &res.route_configs[0].virtual_hosts[0].routes[0];
    let uri = route.matches[0].uri.as_ref().unwrap();
    assert_eq!(uri.kind, Some(string_match::Kind::Prefix("/api".into())));
    assert!(uri.ignore_case);
    let Some(route::Action::Route(action)) = &route.action else {
        panic!("expected a route action");
    };
    let weights: Vec<u32> = action.clusters.iter().map(|c| c.weight).collect();
    assert_eq!(weights, [90, 10]);
    let c: &Cluster = &res.clusters[0];
    assert_eq!(c.protocol(), halyard_config::resources::Protocol::Http);
    assert_eq!(c.r#type(), cluster::DiscoveryType::Eds);
    assert_eq!(
        c.load_balancer.as_ref().unwrap().policy(),
        load_balancer::Policy::RoundRobin
    );
}

#[test]
fn json_round_trip_writes_enum_names() {
    let res: ProxyResources =
        halyard_config::static_config::parse_proxy_resources("test.yaml", STATIC_CONFIG).unwrap();
    let json = serde_json::to_value(&res).unwrap();
    assert_eq!(json["listeners"][0]["direction"], "OUTBOUND");
    assert_eq!(json["clusters"][0]["loadBalancer"]["policy"], "ROUND_ROBIN");
    assert_eq!(json["listeners"][0]["useOriginalDst"], true);
    let back: ProxyResources = serde_json::from_value(json).unwrap();
    assert_eq!(back, res);
}

#[test]
fn enum_numbers_are_accepted_and_unknown_names_rejected() {
    let l: Listener = serde_json::from_str(r#"{"name":"x","direction":1}"#).unwrap();
    assert_eq!(l.direction(), listener::Direction::Inbound);
    let err = serde_json::from_str::<Listener>(r#"{"direction":"SIDEWAYS"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("SIDEWAYS"), "{err}");
    assert!(err.contains("Direction"), "{err}");
}

#[test]
fn discovery_node_is_serde_too() {
    let node: halyard_config::discovery::Node = serde_json::from_str(
        r#"{"id":"productpage-v1-abc.default","namespace":"default","proxyType":"ROUTER","labels":{"app":"productpage"}}"#,
    )
    .unwrap();
    assert_eq!(
        node.proxy_type(),
        halyard_config::discovery::ProxyType::Router
    );
    assert_eq!(node.labels["app"], "productpage");
}

#[test]
fn errors_name_the_field_path() {
    let err = halyard_config::static_config::parse_proxy_resources(
        "proxy.yaml",
        "clusters:\n  - name: c\n    type: NOPE\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("proxy.yaml"), "{err}");
    assert!(err.contains("clusters[0].type"), "{err}");
    assert!(err.contains("NOPE"), "{err}");
}

#[test]
fn yaml_output_has_the_json_shape() {
    let res = halyard_config::static_config::parse_proxy_resources("t", STATIC_CONFIG).unwrap();
    let yaml = halyard_config::static_config::to_yaml(&res);
    assert!(yaml.contains("routeConfigName"), "{yaml}");
    assert!(!yaml.contains('!'), "no YAML tags expected: {yaml}");
    let back = halyard_config::static_config::parse_proxy_resources("t", &yaml).unwrap();
    assert_eq!(back, res);
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let err = halyard_config::static_config::parse_proxy_resources(
        "p.yaml",
        "listeners:\n  - name: l\n    prot: 80\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("listeners[0]"), "{err}");
    assert!(err.contains("prot"), "{err}");
}
