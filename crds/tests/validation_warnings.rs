//! Findings Istio reports as warnings (kubectl prints `Warning: ...`) are warnings here too: the object stays
//! valid and the warning carries the field path.

#![allow(clippy::unwrap_used)] // tests may unwrap

use halyard_crds::validation::validate_value;
use halyard_crds::yaml::split_documents;

/// Validates one YAML object and returns its warnings, asserting it is valid.
fn warnings_of(yaml: &str) -> Vec<String> {
    let docs = split_documents(yaml).unwrap();
    let report = validate_value(&docs[0].value);
    assert!(report.is_valid(), "unexpected errors: {:?}", report.errors);
    report.warnings
}

fn assert_warns(yaml: &str, expected: &str) {
    let w = warnings_of(yaml);
    assert!(
        w.iter().any(|x| x.contains(expected)),
        "expected a warning containing {expected:?}, got {w:?}"
    );
}

#[test]
fn service_entry_partial_wildcard_host() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec:\n  hosts: [\"*foo.example.com\"]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: NONE\n",
        "spec.hosts[0]: partial wildcard \"*foo.example.com\" not allowed",
    );
}

#[test]
fn outlier_detection_consecutive_errors_is_deprecated() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\nspec:\n  host: reviews\n  trafficPolicy:\n    outlierDetection: {consecutiveErrors: 5}\n",
        "spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive errors is deprecated",
    );
}

#[test]
fn https_redirect_on_tcp_server() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [\"*\"]\n    tls: {mode: PASSTHROUGH, httpsRedirect: true}\n",
        "tls.httpsRedirect should only be used with http servers",
    );
}

#[test]
fn invalid_and_duplicate_cipher_suites_are_ignored_with_warnings() {
    let w = warnings_of(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls:\n      mode: SIMPLE\n      credentialName: cert\n      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, NOT-A-CIPHER]\n",
    );
    assert!(
        w.iter()
            .any(|x| x.contains("ignoring invalid cipher suites: [NOT-A-CIPHER]")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|x| x.contains("ignoring duplicate cipher suites: [ECDHE-RSA-AES128-GCM-SHA256]")),
        "{w:?}"
    );
}

#[test]
fn sni_host_given_as_ip() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [\"*\"]\n  gateways: [default/gw]\n  tls:\n  - match:\n    - sniHosts: [10.0.0.1]\n    route:\n    - destination: {host: backend}\n",
        "using an IP address (\"10.0.0.1\") goes against SNI spec",
    );
}

#[test]
fn selector_without_labels() {
    assert_warns(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: pa}\nspec:\n  selector: {}\n  mtls: {mode: STRICT}\n",
        "spec.selector: workload selector specified without labels",
    );
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: sc}\nspec:\n  workloadSelector: {}\n  egress:\n  - hosts: [\"./*\"]\n",
        "sidecar: workload selector specified without labels, will be applied to all services in namespace",
    );
}

#[test]
fn duplicated_sidecar_egress_hosts() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: sc, namespace: prod}\nspec:\n  egress:\n  - hosts: [\"prod/*\", \"./reviews.prod.svc.cluster.local\"]\n",
        "duplicated egress host: ./reviews.prod.svc.cluster.local",
    );
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: sc}\nspec:\n  egress:\n  - hosts: [\"*/*\", \"istio-system/*\"]\n",
        "`*/*` host select all resources, no other hosts can be added",
    );
}

#[test]
fn deprecated_mirror_percent() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    mirror: {host: shadow}\n    mirrorPercent: 50\n",
        "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
    );
}

#[test]
fn large_direct_response_body() {
    let body = "x".repeat(150 * 1024);
    assert_warns(
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [reviews]\n  http:\n  - directResponse:\n      status: 200\n      body: {{string: {body}}}\n"
        ),
        "spec.http[0].directResponse.body: large direct_responses may impact control plane performance",
    );
}

#[test]
fn duplicate_http_match_is_ineffective() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n  - name: again\n    match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n",
        "virtualService rule \"again\" match #0 is not used (duplicate/overlapping match in rule #0)",
    );
}

#[test]
fn failover_without_outlier_detection() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        failover: [{from: us-east, to: us-west}]\n",
        "outlier detection policy must be provided for failover",
    );
}

#[test]
fn workload_entry_with_network_but_no_address() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: we}\nspec:\n  network: vm-network\n",
        "address is unset with network \"vm-network\"",
    );
}

#[test]
fn shorter_prefix_shadows_later_longer_prefix() {
    assert_warns(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /debug}}]\n    route: [{destination: {host: reviews}}]\n  - name: later\n    match: [{uri: {prefix: /debugs}}]\n    route: [{destination: {host: reviews}}]\n",
        "spec.http[1].match[0]: virtualService rule \"later\" match #0 of prefix /debugs is not used (duplicate/overlapping match in rule #0 of prefix /debug on #0)",
    );
    // A narrower earlier match (a header condition) does not shadow the later one.
    let w = warnings_of(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /debug}, headers: {x-user: {exact: a}}}]\n    route: [{destination: {host: reviews}}]\n  - match: [{uri: {prefix: /debugs}}]\n    route: [{destination: {host: reviews}}]\n",
    );
    assert!(w.is_empty(), "{w:?}");
}
