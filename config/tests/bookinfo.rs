//! Every Bookinfo networking sample applied on top of Bookinfo's services, translated for the
//! proxies that use it.

mod common;

use common::*;
use halyard_config::mesh::MeshModel;
use halyard_config::resources::{
    cluster, fault_injection, filter_chain, listener, load_balancer, route, string_match,
    upstream_tls,
};
use halyard_config::translate::translate;
use halyard_config::{ClusterName, ProxyResources};

/// Bookinfo + the given networking files, translated for the `app` sidecar.
fn sidecar_config(files: &[&str], app: &str) -> Option<ProxyResources> {
    let mut input = bookinfo()?;
    for f in files {
        apply(&mut input, f);
    }
    let model = MeshModel::build(&input);
    Some(translate(&model, &sidecar(&input, app)).expect("translate"))
}

#[test]
fn base_services_get_default_routes_clusters_and_endpoints() {
    let Some(res) = sidecar_config(&[], "productpage") else {
        return;
    };
    for svc in ["details", "ratings", "reviews", "productpage"] {
        let vh = vhost(&res, "9080", &fqdn(svc));
        assert_eq!(vh.name, format!("{}:9080", fqdn(svc)));
        // Same namespace: the short name and name:port are served too.
        assert!(vh.domains.contains(&svc.to_string()), "{:?}", vh.domains);
        assert!(vh.domains.contains(&format!("{svc}:9080")));
        assert!(vh.domains.contains(&format!("{svc}.default")));
        assert_eq!(vh.routes.len(), 1);
        assert_eq!(weights(&vh.routes[0]), [(outbound(9080, "", svc), 100)]);
        let Some(route::Action::Route(a)) = &vh.routes[0].action else {
            panic!()
        };
        let retry = a.retry.as_ref().expect("default retry policy");
        assert_eq!(retry.num_retries, 2);
        assert_eq!(
            retry.retry_on,
            [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes"
            ]
        );
        assert_eq!(retry.retriable_status_codes, [503]);
        assert_eq!(a.timeout_ms, 0);
        let c = cluster(&res, &outbound(9080, "", svc));
        assert_eq!(c.r#type(), cluster::DiscoveryType::Eds);
        assert_eq!(c.connect_timeout_ms, 10_000);
        assert_eq!(c.upstream_protocol(), cluster::UpstreamProtocol::Http1);
        assert_eq!(
            c.tls.as_ref().unwrap().mode(),
            upstream_tls::Mode::AutoIstioMutual
        );
        assert!(
            c.config.ends_with(&format!("/service/{svc}")),
            "{}",
            c.config
        );
    }
    let eps = endpoints(&res, &outbound(9080, "", "reviews"));
    assert_eq!(eps.endpoints.len(), 3);
    assert!(eps.endpoints.iter().all(|e| e.port == 9080 && e.mesh_tls));
    assert_eq!(
        eps.endpoints[0].identity,
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    // ALLOW_ANY: catch-all to the passthrough cluster, in routes and on the capture listener.
    let any = vhost(&res, "9080", "*");
    assert_eq!(any.name, "allow_any");
    assert_eq!(
        weights(&any.routes[0]),
        [("PassthroughCluster".to_string(), 100)]
    );
    let out = res
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_15001")
        .unwrap();
    assert!(out.use_original_dst);
    assert_eq!(out.direction(), listener::Direction::Outbound);
    let Some(filter_chain::Handler::Tcp(t)) = &out.default_chain.as_ref().unwrap().handler else {
        panic!()
    };
    assert_eq!(t.clusters[0].name, "PassthroughCluster");
    // Inbound: the productpage's own port, mTLS and plaintext (PERMISSIVE by default).
    let inb = res
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_15006")
        .unwrap();
    let chains: Vec<&str> = inb.filter_chains.iter().map(|c| c.name.as_str()).collect();
    assert!(chains.contains(&"inbound|9080||#mtls"), "{chains:?}");
    assert!(chains.contains(&"inbound|9080||#plaintext"), "{chains:?}");
    // With capture, as Istio since 1.10: the pod's own IP (the proxy connects from 127.0.0.6).
    let ib = endpoints(&res, "inbound|9080||");
    let pod_ip = ib.endpoints[0].address.clone();
    assert!(
        pod_ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_loopback()),
        "{pod_ip}"
    );
    assert_eq!(ib.endpoints[0].port, 9080);
}

#[test]
fn inbound_delivers_to_the_pod_ip_unless_an_app_address_is_configured() {
    let Some(input) = bookinfo() else {
        return;
    };
    let model = MeshModel::build(&input);
    let inbound_target = |node: &halyard_config::discovery::Node| {
        let res = translate(&model, node).expect("translate");
        let ib = endpoints(&res, "inbound|9080||");
        (ib.endpoints[0].address.clone(), ib.endpoints[0].port)
    };
    let mut pod = sidecar(&input, "productpage");
    pod.ip_addresses = vec!["10.1.0.7".into()];
    assert_eq!(inbound_target(&pod), ("10.1.0.7".to_string(), 9080));
    // A configured app address wins (Istio's pre-1.10 loopback delivery, for example).
    pod.app_address = "127.0.0.1".into();
    assert_eq!(inbound_target(&pod), ("127.0.0.1".to_string(), 9080));
    // No IP reported: loopback.
    pod.app_address.clear();
    pod.ip_addresses.clear();
    assert_eq!(inbound_target(&pod), ("127.0.0.1".to_string(), 9080));
    // Local mode: the node's IPs are the proxy's own inbound addresses, never the app's.
    pod.ip_addresses = vec!["127.10.1.1".into()];
    pod.interception_mode = halyard_config::discovery::InterceptionMode::None as i32;
    assert_eq!(inbound_target(&pod), ("127.0.0.1".to_string(), 9080));
}

#[test]
fn destination_rule_all_makes_subset_clusters() {
    let Some(res) = sidecar_config(&["destination-rule-all.yaml"], "productpage") else {
        return;
    };
    for (svc, subsets) in [
        ("productpage", &["v1"][..]),
        ("reviews", &["v1", "v2", "v3"][..]),
        ("ratings", &["v1", "v2", "v2-mysql", "v2-mysql-vm"][..]),
        ("details", &["v1", "v2"][..]),
    ] {
        for s in subsets {
            let c = cluster(&res, &outbound(9080, s, svc));
            assert!(
                c.config.ends_with(&format!("/destination-rule/{svc}")),
                "{}",
                c.config
            );
        }
    }
    let v2 = endpoints(&res, &outbound(9080, "v2", "reviews"));
    assert_eq!(v2.endpoints.len(), 1);
    assert_eq!(v2.endpoints[0].labels["version"], "v2");
    assert!(
        endpoints(&res, &outbound(9080, "v2-mysql", "ratings"))
            .endpoints
            .is_empty()
    );
}

#[test]
fn destination_rule_all_mtls_sets_istio_mutual() {
    let Some(res) = sidecar_config(&["destination-rule-all-mtls.yaml"], "productpage") else {
        return;
    };
    let c = cluster(&res, &outbound(9080, "v1", "reviews"));
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.mode(), upstream_tls::Mode::IstioMutual);
    assert_eq!(tls.sni, format!("outbound_.9080_.v1_.{}", fqdn("reviews")));
    assert_eq!(tls.certificate_secret, "default");
    assert_eq!(tls.validation_secret, "ROOTCA");
    assert_eq!(
        tls.subject_alt_names,
        ["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]
    );
}

#[test]
fn destination_rule_reviews_sets_random_lb() {
    let Some(res) = sidecar_config(&["destination-rule-reviews.yaml"], "productpage") else {
        return;
    };
    for s in ["", "v1", "v2", "v3"] {
        let c = cluster(&res, &outbound(9080, s, "reviews"));
        assert_eq!(
            c.load_balancer.as_ref().unwrap().policy(),
            load_balancer::Policy::Random
        );
    }
    let other = cluster(&res, &outbound(9080, "", "ratings"));
    assert_eq!(
        other.load_balancer.as_ref().unwrap().policy(),
        load_balancer::Policy::LeastRequest
    );
}

/// Networking files, the service they route, and the (subset, weight) pairs of its one route.
type WeightedCase = (
    &'static [&'static str],
    &'static str,
    &'static [(&'static str, u32)],
);

const WEIGHTED: &[WeightedCase] = &[
    (
        &["virtual-service-reviews-90-10.yaml"],
        "reviews",
        &[("v1", 90), ("v2", 10)],
    ),
    (
        &["virtual-service-reviews-80-20.yaml"],
        "reviews",
        &[("v1", 80), ("v2", 20)],
    ),
    (
        &["virtual-service-reviews-50-v3.yaml"],
        "reviews",
        &[("v1", 50), ("v3", 50)],
    ),
    (
        &["virtual-service-reviews-v2-v3.yaml"],
        "reviews",
        &[("v2", 50), ("v3", 50)],
    ),
    (
        &["virtual-service-reviews-v3.yaml"],
        "reviews",
        &[("v3", 100)],
    ),
    (
        &["virtual-service-details-v2.yaml"],
        "details",
        &[("v2", 100)],
    ),
    (
        &["virtual-service-ratings-db.yaml"],
        "ratings",
        &[("v2", 100)],
    ),
    (
        &["virtual-service-ratings-db.yaml"],
        "reviews",
        &[("v3", 100)],
    ),
    (
        &["virtual-service-ratings-mysql.yaml"],
        "ratings",
        &[("v2-mysql", 100)],
    ),
    (
        &["virtual-service-ratings-mysql-vm.yaml"],
        "ratings",
        &[("v2-mysql-vm", 100)],
    ),
    (
        &["virtual-service-ratings-mysql-vm.yaml"],
        "reviews",
        &[("v3", 100)],
    ),
    (
        &["virtual-service-all-v1.yaml"],
        "productpage",
        &[("v1", 100)],
    ),
    (&["virtual-service-all-v1.yaml"], "reviews", &[("v1", 100)]),
    (&["virtual-service-all-v1.yaml"], "ratings", &[("v1", 100)]),
    (&["virtual-service-all-v1.yaml"], "details", &[("v1", 100)]),
];

#[test]
fn weighted_virtual_services() {
    for (files, svc, want) in WEIGHTED {
        let mut all = vec!["destination-rule-all.yaml"];
        all.extend_from_slice(files);
        let Some(res) = sidecar_config(&all, "productpage") else {
            return;
        };
        let vh = vhost(&res, "9080", &fqdn(svc));
        assert_eq!(vh.routes.len(), 1, "{files:?} {svc}");
        let want: Vec<(String, u32)> = want
            .iter()
            .map(|(s, w)| (outbound(9080, s, svc), *w))
            .collect();
        assert_eq!(weights(&vh.routes[0]), want, "{files:?} {svc}");
        assert!(vh.config.contains("/virtual-service/"), "{}", vh.config);
        // Every referenced cluster exists.
        for (c, _) in &want {
            cluster(&res, c);
        }
    }
}

#[test]
fn header_match_routes_jason_first() {
    for (file, jason, others) in [
        ("virtual-service-reviews-jason-v2-v3.yaml", "v2", "v3"),
        ("virtual-service-reviews-test-v2.yaml", "v2", "v1"),
    ] {
        let Some(res) = sidecar_config(&["destination-rule-all.yaml", file], "productpage") else {
            return;
        };
        let vh = vhost(&res, "9080", "reviews");
        assert_eq!(vh.routes.len(), 2, "{file}");
        let m = &vh.routes[0].matches[0];
        assert_eq!(m.headers[0].name, "end-user");
        assert_eq!(
            m.headers[0].value.as_ref().unwrap().kind,
            Some(string_match::Kind::Exact("jason".into()))
        );
        assert!(!m.headers[0].invert);
        assert_eq!(
            weights(&vh.routes[0]),
            [(outbound(9080, jason, "reviews"), 100)]
        );
        assert!(vh.routes[1].matches.is_empty());
        assert_eq!(
            weights(&vh.routes[1]),
            [(outbound(9080, others, "reviews"), 100)]
        );
    }
}

#[test]
fn fault_injection_samples() {
    // Ratings is called by reviews.
    let Some(res) = sidecar_config(
        &[
            "destination-rule-all.yaml",
            "virtual-service-ratings-test-abort.yaml",
        ],
        "reviews",
    ) else {
        return;
    };
    let vh = vhost(&res, "9080", "ratings");
    let Some(route::Action::Route(a)) = &vh.routes[0].action else {
        panic!()
    };
    let abort = a.fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!(
        abort.error,
        Some(fault_injection::abort::Error::HttpStatus(500))
    );
    assert_eq!(abort.percentage, 100.0);
    let Some(route::Action::Route(rest)) = &vh.routes[1].action else {
        panic!()
    };
    assert!(rest.fault.is_none());

    let Some(res) = sidecar_config(
        &[
            "destination-rule-all.yaml",
            "virtual-service-ratings-test-delay.yaml",
        ],
        "reviews",
    ) else {
        return;
    };
    let vh = vhost(&res, "9080", "ratings");
    let Some(route::Action::Route(a)) = &vh.routes[0].action else {
        panic!()
    };
    let delay = a.fault.as_ref().unwrap().delay.as_ref().unwrap();
    assert_eq!((delay.fixed_delay_ms, delay.percentage), (7_000, 100.0));

    // No match, abort 555 on every request to details v1.
    let Some(res) = sidecar_config(&["fault-injection-details-v1.yaml"], "productpage") else {
        return;
    };
    let vh = vhost(&res, "9080", "details");
    assert_eq!(vh.routes.len(), 2);
    let Some(route::Action::Route(a)) = &vh.routes[0].action else {
        panic!()
    };
    let abort = a.fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!(
        abort.error,
        Some(fault_injection::abort::Error::HttpStatus(555))
    );
    assert_eq!(
        weights(&vh.routes[0]),
        [(outbound(9080, "v1", "details"), 100)]
    );
}

#[test]
fn egress_rule_google_apis() {
    let Some(res) = sidecar_config(&["egress-rule-google-apis.yaml"], "productpage") else {
        return;
    };
    let c80 = cluster(&res, "outbound|80||www.googleapis.com");
    let c443 = cluster(&res, "outbound|443||www.googleapis.com");
    assert_eq!(c80.r#type(), cluster::DiscoveryType::StrictDns);
    assert_eq!(
        c80.load_balancer.as_ref().unwrap().policy(),
        load_balancer::Policy::RoundRobin
    );
    // MESH_EXTERNAL: plaintext unless the DestinationRule says otherwise; port 443 originates TLS.
    assert_eq!(
        c80.tls.as_ref().unwrap().mode(),
        upstream_tls::Mode::Disable
    );
    assert_eq!(
        c443.tls.as_ref().unwrap().mode(),
        upstream_tls::Mode::Simple
    );
    let eps = endpoints(&res, "outbound|443||www.googleapis.com");
    assert_eq!(eps.endpoints[0].address, "www.googleapis.com");
    // Port 80 requests are routed to the 443 cluster.
    let vh = vhost(&res, "80", "www.googleapis.com");
    assert_eq!(vh.routes[0].matches[0].port, 80);
    assert_eq!(
        weights(&vh.routes[0]),
        [("outbound|443||www.googleapis.com".to_string(), 100)]
    );
    // HTTPS on 443 is not HTTP: a TCP chain on the capture listener, no route table.
    assert!(!res.route_configs.iter().any(|r| r.name == "443"));
}

#[test]
fn bookinfo_gateway_binds_the_virtual_service() {
    let Some(mut input) = bookinfo() else { return };
    apply(&mut input, "bookinfo-gateway.yaml");
    let model = MeshModel::build(&input);
    let res = translate(&model, &ingress_gateway()).unwrap();
    let l = res
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_8080")
        .expect("gateway listener");
    assert_eq!(l.direction(), listener::Direction::Gateway);
    assert!(
        !res.listeners
            .iter()
            .any(|l| l.port == 15001 || l.port == 15006)
    );
    let vh = vhost(&res, "http.8080", "*");
    assert_eq!(vh.routes.len(), 5);
    let uris: Vec<_> = vh
        .routes
        .iter()
        .map(|r| r.matches[0].uri.as_ref().unwrap().kind.clone().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            string_match::Kind::Exact("/productpage".into()),
            string_match::Kind::Prefix("/static".into()),
            string_match::Kind::Exact("/login".into()),
            string_match::Kind::Exact("/logout".into()),
            string_match::Kind::Prefix("/api/v1/products".into()),
        ]
    );
    for r in &vh.routes {
        assert_eq!(weights(r), [(outbound(9080, "", "productpage"), 100)]);
    }
    cluster(&res, &outbound(9080, "", "productpage"));
    // The gateway-bound VirtualService does not reach sidecars (no `mesh` gateway).
    let side = translate(&model, &sidecar(&input, "reviews")).unwrap();
    let vh = vhost(&side, "9080", "productpage");
    assert!(vh.config.ends_with("/service/productpage"), "{}", vh.config);
}

#[test]
fn certmanager_gateway_routes_acme_challenges() {
    let Some(mut input) = bookinfo() else { return };
    apply(&mut input, "certmanager-gateway.yaml");
    let model = MeshModel::build(&input);
    let res = translate(&model, &ingress_gateway()).unwrap();
    assert!(res.listeners.iter().any(|l| l.name == "0.0.0.0_80"));
    let vh = vhost(&res, "http.80", "*");
    assert_eq!(
        vh.routes[0].matches[0].uri.as_ref().unwrap().kind,
        Some(string_match::Kind::Prefix(
            "/.well-known/acme-challenge/".into()
        ))
    );
    assert_eq!(
        weights(&vh.routes[0]),
        [(
            ClusterName::outbound(
                8089,
                "",
                "cert-manager-resolver.istio-system.svc.cluster.local"
            )
            .to_string(),
            100
        )]
    );
}

/// Every file in the networking folder is covered by a test above.
#[test]
fn every_networking_sample_is_covered() {
    let Some(dir) = istio_dir() else { return };
    let covered = [
        "bookinfo-gateway.yaml",
        "certmanager-gateway.yaml",
        "destination-rule-all-mtls.yaml",
        "destination-rule-all.yaml",
        "destination-rule-reviews.yaml",
        "egress-rule-google-apis.yaml",
        "fault-injection-details-v1.yaml",
        "virtual-service-ratings-test-abort.yaml",
        "virtual-service-ratings-test-delay.yaml",
        "virtual-service-reviews-jason-v2-v3.yaml",
        "virtual-service-reviews-test-v2.yaml",
    ];
    let mut files: Vec<String> = std::fs::read_dir(dir.join("samples/bookinfo/networking"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    for f in files {
        let in_table = WEIGHTED.iter().any(|(fs, _, _)| fs.contains(&f.as_str()));
        assert!(
            in_table || covered.contains(&f.as_str()),
            "{f} is not tested"
        );
    }
}

/// The cache contract: nodes with equal scope keys get identical shared parts (checked for every
/// Bookinfo pod and the gateway, with every sample applied at once where they do not conflict).
#[test]
fn equal_scope_keys_mean_equal_shared_parts() {
    use halyard_config::translate::{scope_key, translate_shared};
    let Some(mut input) = bookinfo() else { return };
    for f in [
        "bookinfo-gateway.yaml",
        "destination-rule-all.yaml",
        "virtual-service-reviews-jason-v2-v3.yaml",
        "virtual-service-ratings-test-delay.yaml",
    ] {
        apply(&mut input, f);
    }
    let model = MeshModel::build(&input);
    let mut nodes: Vec<_> = ["productpage", "reviews", "ratings", "details"]
        .iter()
        .map(|app| sidecar(&input, app))
        .collect();
    nodes.push(ingress_gateway());
    let mut by_key = std::collections::BTreeMap::new();
    for n in &nodes {
        let shared = translate_shared(&model, n);
        match by_key.entry(scope_key(&model, n)) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(shared);
            }
            std::collections::btree_map::Entry::Occupied(e) => {
                assert_eq!(e.get(), &shared, "{}", n.id)
            }
        }
    }
    // All sidecars share one scope (same namespace, no Sidecar); the gateway has its own.
    assert_eq!(by_key.len(), 2);
}
