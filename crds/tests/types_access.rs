//! The typed API reads Istio's samples into the fields consumers expect (round trips prove nothing is
//! lost; these prove values land in the right Rust fields), and MeshInstall parses through the same door.

#![allow(clippy::unwrap_used)] // test helpers: a failure to read the fixtures is a test failure

use halyard_crds::install::Profile;
use halyard_crds::networking::{ServerTlsMode, SimpleLb};
use halyard_crds::object::{IstioObject, parse_object};
use halyard_crds::security::{AuthorizationPolicyAction, MutualTlsMode};
use halyard_crds::yaml::split_documents;
use serde_json::json;

mod common;
use common::istio_dir;

fn objects(text: &str) -> Vec<IstioObject> {
    split_documents(text)
        .unwrap()
        .into_iter()
        .map(|d| parse_object(&d.value).unwrap().object)
        .collect()
}

#[test]
fn bookinfo_weights_matches_and_gateway() {
    let Some(dir) = istio_dir() else { return };
    let net = dir.join("samples/bookinfo/networking");
    let text = std::fs::read_to_string(net.join("virtual-service-reviews-80-20.yaml")).unwrap();
    let objs = objects(&text);
    let [IstioObject::VirtualService(vs)] = objs.as_slice() else {
        panic!("one VirtualService")
    };
    assert_eq!(vs.spec.hosts, ["reviews"]);
    let weights: Vec<_> = vs.spec.http[0]
        .route
        .iter()
        .map(|r| (r.destination.subset.clone(), r.weight))
        .collect();
    assert_eq!(
        weights,
        [(Some("v1".into()), Some(80)), (Some("v2".into()), Some(20))]
    );

    let text = std::fs::read_to_string(net.join("bookinfo-gateway.yaml")).unwrap();
    let objs = objects(&text);
    let IstioObject::Gateway(gw) = &objs[0] else {
        panic!("Gateway first")
    };
    assert_eq!(
        gw.spec.selector.get("istio").map(String::as_str),
        Some("ingressgateway")
    );
    assert_eq!(gw.spec.servers[0].port.number, 8080);
    assert_eq!(gw.spec.servers[0].port.protocol, "HTTP");
    let IstioObject::VirtualService(vs) = &objs[1] else {
        panic!("VirtualService second")
    };
    let m = &vs.spec.http[0].r#match;
    assert_eq!(
        m[0].uri.as_ref().and_then(|u| u.exact.as_deref()),
        Some("/productpage")
    );
    assert_eq!(
        m[1].uri.as_ref().and_then(|u| u.prefix.as_deref()),
        Some("/static")
    );
    let port = vs.spec.http[0].route[0]
        .destination
        .port
        .as_ref()
        .and_then(|p| p.number);
    assert_eq!(port, Some(9080));

    let text =
        std::fs::read_to_string(net.join("virtual-service-ratings-test-delay.yaml")).unwrap();
    let objs = objects(&text);
    let [IstioObject::VirtualService(vs)] = objs.as_slice() else {
        panic!("one VirtualService")
    };
    let delay = vs.spec.http[0]
        .fault
        .as_ref()
        .and_then(|f| f.delay.as_ref())
        .unwrap();
    assert_eq!(delay.fixed_delay.as_deref(), Some("7s"));
    assert_eq!(delay.percentage.as_ref().and_then(|p| p.value), Some(100.0));
    let header = &vs.spec.http[0].r#match[0].headers["end-user"];
    assert_eq!(header.exact.as_deref(), Some("jason"));
}

#[test]
fn destination_rules_and_security_kinds() {
    let text = r#"
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    tls: {mode: ISTIO_MUTUAL}
    connectionPool: {http: {http1MaxPendingRequests: 10}, tcp: {connectTimeout: 1s}}
  subsets:
  - name: v1
    labels: {version: v1}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post, namespace: foo}
spec:
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]
    to: [{operation: {methods: [POST], paths: ["/admin/*"]}}]
    when: [{key: "request.headers[version]", values: [v1]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls, namespace: default}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, credentialName: example-cert}
"#;
    let objs = objects(text);
    let IstioObject::DestinationRule(dr) = &objs[0] else {
        panic!()
    };
    let tp = dr.spec.traffic_policy.as_ref().unwrap();
    assert_eq!(
        tp.load_balancer.as_ref().and_then(|l| l.simple),
        Some(SimpleLb::LeastRequest)
    );
    let pool = tp.connection_pool.as_ref().unwrap();
    assert_eq!(
        pool.http
            .as_ref()
            .and_then(|h| h.http1_max_pending_requests),
        Some(10)
    );
    assert_eq!(
        pool.tcp.as_ref().and_then(|t| t.connect_timeout.as_deref()),
        Some("1s")
    );
    assert_eq!(dr.spec.subsets[0].name, "v1");
    assert_eq!(dr.spec.subsets[0].labels["version"], "v1");

    let IstioObject::PeerAuthentication(pa) = &objs[1] else {
        panic!()
    };
    assert_eq!(
        pa.spec.mtls.as_ref().and_then(|m| m.mode),
        Some(MutualTlsMode::Strict)
    );
    assert_eq!(
        pa.spec.port_level_mtls["8080"].mode,
        Some(MutualTlsMode::Disable)
    );
    assert_eq!(
        pa.spec.selector.as_ref().unwrap().match_labels["app"],
        "httpbin"
    );

    let IstioObject::AuthorizationPolicy(ap) = &objs[2] else {
        panic!()
    };
    assert_eq!(ap.spec.action, Some(AuthorizationPolicyAction::Deny));
    let rule = &ap.spec.rules[0];
    assert_eq!(
        rule.from[0].source.as_ref().unwrap().principals,
        ["cluster.local/ns/default/sa/sleep"]
    );
    assert_eq!(rule.to[0].operation.as_ref().unwrap().methods, ["POST"]);
    assert_eq!(rule.when[0].key, "request.headers[version]");

    let IstioObject::Gateway(gw) = &objs[3] else {
        panic!()
    };
    let tls = gw.spec.servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.mode, Some(ServerTlsMode::Simple));
    assert_eq!(tls.credential_name.as_deref(), Some("example-cert"));
}

#[test]
fn mesh_install_parses_with_defaults() {
    let v = json!({"apiVersion": "install.halyard.dev/v1alpha1", "kind": "MeshInstall",
                   "metadata": {"name": "mesh"}, "spec": {"profile": "demo"}});
    let parsed = parse_object(&v).unwrap();
    let IstioObject::MeshInstall(mi) = &parsed.object else {
        panic!()
    };
    assert_eq!(mi.spec.profile, Profile::Demo);
    assert_eq!(mi.spec.namespace, "istio-system");
    assert_eq!(parsed.object.resource_name(), "mesh");
    assert_eq!(
        parsed.object.to_value().unwrap()["apiVersion"],
        "install.halyard.dev/v1alpha1"
    );
}
