//! Table tests for Istio's translation rules, one rule per test, on small hand-written meshes.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use halyard_config::ProxyResources;
use halyard_config::discovery::{InterceptionMode, Node, WorkloadPort};
use halyard_config::mesh::{MeshInput, MeshModel, OutboundPolicy};
use halyard_config::resources::{
    Listener, Route, authorization_policy, cluster, filter_chain, filter_chain_match, route,
    string_match, upstream_tls,
};
use halyard_config::translate::{
    Translator, merge, scope_key, translate, translate_local, translate_shared,
};

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: default}
spec: {template: {metadata: {labels: {app: reviews, version: v1}}, spec: {serviceAccountName: reviews, containers: [{name: app}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2, namespace: default}
spec: {template: {metadata: {labels: {app: reviews, version: v2}}, spec: {serviceAccountName: reviews, containers: [{name: app}]}}}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec: {selector: {app: db}, ports: [{name: tcp-db, port: 5432}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: default}
spec: {template: {metadata: {labels: {app: db}}, spec: {containers: [{name: db}]}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec: {selector: {app: web}, ports: [{name: http-web, port: 80, targetPort: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: other}
spec: {template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: default}
spec: {template: {metadata: {labels: {app: client, version: v1}}, spec: {containers: [{name: c}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: other-client, namespace: other}
spec: {template: {metadata: {labels: {app: other-client}}, spec: {containers: [{name: c}]}}}
"#;

fn mesh(extra: &str) -> MeshInput {
    mesh_from_yaml(&format!("{BASE}\n---\n{extra}"))
}

fn run(input: &MeshInput, app: &str) -> ProxyResources {
    translate(&MeshModel::build(input), &sidecar(input, app)).unwrap()
}

fn capture(res: &ProxyResources, port: u32) -> &Listener {
    res.listeners
        .iter()
        .find(|l| l.port == port)
        .unwrap_or_else(|| panic!("no listener on {port}"))
}

fn action(r: &Route) -> &halyard_config::resources::RouteAction {
    match &r.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";

#[test]
fn oldest_virtual_service_wins_a_host_and_the_loser_is_reported() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: newer, namespace: default, creationTimestamp: "2024-05-02T00:00:00Z"}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: older, namespace: default, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}
"#,
    );
    let model = MeshModel::build(&input);
    let w = model.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].object, "VirtualService default/newer");
    assert!(
        w[0].message.contains("VirtualService default/older"),
        "{}",
        w[0]
    );
    let res = translate(&model, &sidecar(&input, "client")).unwrap();
    let vh = vhost(&res, "9080", "reviews");
    assert_eq!(
        weights(&vh.routes[0]),
        [(format!("outbound|9080|v1|{REVIEWS}"), 100)]
    );
    assert!(vh.config.ends_with("/virtual-service/older"));
}

#[test]
fn most_specific_host_wins() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com, web.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wildcard, namespace: default}
spec: {hosts: ["*.example.com"], http: [{timeout: 3s, route: [{destination: {host: web.example.com}}]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: exact, namespace: default}
spec: {hosts: [api.example.com], http: [{timeout: 1s, route: [{destination: {host: api.example.com}}]}]}
"#,
    );
    let res = run(&input, "client");
    let cases = [
        ("api.example.com", 1000, "exact"),
        ("web.example.com", 3000, "wildcard"),
    ];
    for (host, timeout, vs) in cases {
        let vh = vhost(&res, "80", host);
        assert_eq!(action(&vh.routes[0]).timeout_ms, timeout, "{host}");
        assert!(
            vh.config.ends_with(&format!("/virtual-service/{vs}")),
            "{host}"
        );
    }
}

#[test]
fn gateway_binding_and_the_mesh_gateway() {
    let gw_only = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec: {hosts: [reviews], gateways: [my-gw], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}
"#;
    let both = gw_only.replace("[my-gw]", "[my-gw, mesh]");
    // (config, sidecar gets the VS route)
    for (cfg, applies) in [(gw_only.to_string(), false), (both, true)] {
        let res = run(&mesh(&cfg), "client");
        let vh = vhost(&res, "9080", "reviews");
        let got = weights(&vh.routes[0])[0].0.clone();
        let want = if applies {
            format!("outbound|9080|v2|{REVIEWS}")
        } else {
            format!("outbound|9080||{REVIEWS}")
        };
        assert_eq!(got, want, "{cfg}");
    }
}

#[test]
fn export_to_hides_config_and_services_from_other_namespaces() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec: {hosts: [reviews], exportTo: ["."], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: private, namespace: default, annotations: {networking.istio.io/exportTo: "."}}
spec: {selector: {app: private}, ports: [{name: http, port: 9080}]}
"#,
    );
    // (proxy app, sees the VS, sees `private`)
    for (app, sees) in [("client", true), ("other-client", false)] {
        let res = run(&input, app);
        let vh = vhost(&res, "9080", REVIEWS);
        assert_eq!(weights(&vh.routes[0])[0].0.contains("|v2|"), sees, "{app}");
        let private = res
            .clusters
            .iter()
            .any(|c| c.name == "outbound|9080||private.default.svc.cluster.local");
        assert_eq!(private, sees, "{app}");
    }
}

#[test]
fn sidecar_egress_limits_what_a_proxy_sees() {
    let sc = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: NS}
spec: {egress: [{hosts: ["./*"]}]}
"#;
    // (Sidecar namespace, proxy app, sees other/web)
    for (ns, app, sees_web) in [
        ("default", "client", false),
        ("istio-system", "client", false),
        ("other", "client", true),
    ] {
        let res = run(&mesh(&sc.replace("NS", ns)), app);
        let web = res
            .clusters
            .iter()
            .any(|c| c.name == "outbound|80||web.other.svc.cluster.local");
        assert_eq!(web, sees_web, "sidecar in {ns}");
        assert!(
            res.clusters
                .iter()
                .any(|c| c.name == format!("outbound|9080||{REVIEWS}"))
        );
    }
}

#[test]
fn destination_rule_lookup_order() {
    let dr = |name: &str, ns: &str, lb: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{host: reviews.default.svc.cluster.local, trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}}}\n---\n"
        )
    };
    let all = format!(
        "{}{}{}",
        dr("client-ns", "other", "RANDOM"),
        dr("service-ns", "default", "ROUND_ROBIN"),
        dr("root", "istio-system", "PASSTHROUGH")
    );
    let only_root = dr("root", "istio-system", "PASSTHROUGH");
    // (config, proxy app, expected policy)
    let cases = [
        (all.clone(), "other-client", "RANDOM"),
        (all.clone(), "client", "ROUND_ROBIN"),
        (only_root, "client", "PASSTHROUGH"),
    ];
    for (cfg, app, want) in cases {
        let res = run(&mesh(&cfg), app);
        let c = cluster(&res, &format!("outbound|9080||{REVIEWS}"));
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json["loadBalancer"]["policy"], want, "{app}");
    }
}

#[test]
fn service_entries_by_resolution_and_location() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static, namespace: default}
spec:
  hosts: [static.internal]
  addresses: [240.0.0.1]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.9.0.1, labels: {security.istio.io/tlsMode: istio}}, {address: 10.9.0.2, ports: {http: 9090}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: default}
spec:
  hosts: [api.external.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: default}
spec:
  hosts: [db.external.com]
  addresses: [192.168.7.0/24]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: default}
spec:
  hosts: [vm.internal]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: default}
spec: {address: 10.20.0.5, labels: {app: vm}, serviceAccount: vm-sa}
"#,
    );
    let res = run(&input, "client");
    // (cluster, type, tls mode)
    let cases = [
        (
            "outbound|8080||static.internal",
            cluster::DiscoveryType::Eds,
            upstream_tls::Mode::AutoIstioMutual,
        ),
        (
            "outbound|443||api.external.com",
            cluster::DiscoveryType::StrictDns,
            upstream_tls::Mode::Disable,
        ),
        (
            "outbound|3306||db.external.com",
            cluster::DiscoveryType::OriginalDst,
            upstream_tls::Mode::Disable,
        ),
        (
            "outbound|80||vm.internal",
            cluster::DiscoveryType::Eds,
            upstream_tls::Mode::AutoIstioMutual,
        ),
    ];
    for (name, ty, tls) in cases {
        let c = cluster(&res, name);
        assert_eq!(c.r#type(), ty, "{name}");
        assert_eq!(c.tls.as_ref().unwrap().mode(), tls, "{name}");
    }
    let eps = endpoints(&res, "outbound|8080||static.internal");
    let got: Vec<(String, u32, bool)> = eps
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.port, e.mesh_tls))
        .collect();
    assert_eq!(
        got,
        [
            ("10.9.0.1".to_string(), 8080, true),
            ("10.9.0.2".to_string(), 9090, false)
        ]
    );
    assert!(
        !res.endpoints
            .iter()
            .any(|e| e.cluster_name == "outbound|3306||db.external.com")
    );
    let vm = endpoints(&res, "outbound|80||vm.internal");
    assert_eq!(vm.endpoints[0].address, "10.20.0.5");
    assert_eq!(
        vm.endpoints[0].identity,
        "spiffe://cluster.local/ns/default/sa/vm-sa"
    );
    // VIPs: HTTP domains, and TCP chains matched on the address block.
    assert!(
        vhost(&res, "8080", "240.0.0.1:8080")
            .name
            .starts_with("static.internal")
    );
    let out = capture(&res, 15001);
    let db = out
        .filter_chains
        .iter()
        .find(|c| c.name == "outbound|3306||db.external.com")
        .unwrap();
    assert_eq!(
        db.r#match.as_ref().unwrap().destination_prefixes,
        ["192.168.7.0/24"]
    );
}

#[test]
fn outbound_traffic_policy() {
    // (mesh policy, Sidecar override, expected fallback cluster, catch-all vhost)
    let cases = [
        (
            OutboundPolicy::AllowAny,
            None,
            "PassthroughCluster",
            "allow_any",
        ),
        (
            OutboundPolicy::RegistryOnly,
            None,
            "BlackHoleCluster",
            "block_all",
        ),
        (
            OutboundPolicy::AllowAny,
            Some("REGISTRY_ONLY"),
            "BlackHoleCluster",
            "block_all",
        ),
        (
            OutboundPolicy::RegistryOnly,
            Some("ALLOW_ANY"),
            "PassthroughCluster",
            "allow_any",
        ),
    ];
    for (policy, sidecar_mode, want_cluster, want_vhost) in cases {
        let extra = sidecar_mode.map_or(String::new(), |m| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: default}}\nspec: {{outboundTrafficPolicy: {{mode: {m}}}}}\n"
            )
        });
        let mut input = mesh(&extra);
        input.mesh.outbound_traffic_policy = policy;
        let res = run(&input, "client");
        let dc = capture(&res, 15001).default_chain.as_ref().unwrap();
        let Some(filter_chain::Handler::Tcp(t)) = &dc.handler else {
            panic!()
        };
        assert_eq!(
            t.clusters[0].name, want_cluster,
            "{policy:?} {sidecar_mode:?}"
        );
        let vh = vhost(&res, "9080", "*");
        assert_eq!(vh.name, want_vhost);
        if want_vhost == "block_all" {
            assert!(matches!(
                &vh.routes[0].action,
                Some(route::Action::DirectResponse(d)) if d.status == 502
            ));
        }
        cluster(&res, "PassthroughCluster");
        cluster(&res, "BlackHoleCluster");
    }
}

#[test]
fn every_http_match_kind_and_action() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: regex-any-case
    match: [{uri: {regex: "/api/v[0-9]+"}, ignoreUriCase: true, scheme: {exact: http}, method: {exact: GET}, authority: {prefix: reviews}}]
    route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 5, perTryTimeout: 2s, retryOn: "gateway-error,503", backoff: 50ms}
    timeout: 10s
  - match: [{headers: {x-a: {prefix: p}, x-b: {regex: "b+"}, x-c: {}}, withoutHeaders: {x-d: {exact: no}}, queryParams: {q: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v2}, headers: {request: {set: {x-sub: v2}}}}]
    headers: {request: {add: {x-added: "1"}, remove: [x-gone]}, response: {set: {x-resp: r}}}
    retries: {attempts: 0}
  - match: [{port: 9999}]
    route: [{destination: {host: reviews}}]
  - match: [{sourceLabels: {app: nobody}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: new.example.com, redirectCode: 308}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /v1}}]
    rewrite: {uri: /v2, authority: reviews-internal}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {exact: /exact}}]
    rewrite: {uri: /replaced}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews, subset: v1}, weight: 75}, {destination: {host: reviews, subset: v2}, weight: 25}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 12.5}
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], allowMethods: [GET], maxAge: 24h, allowCredentials: true}
"#,
    );
    let res = run(&input, "client");
    let routes = &vhost(&res, "9080", "reviews").routes;
    // The port-9999 and sourceLabels rules do not apply to this proxy on 9080.
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 7, "{names:?}");

    let m = &routes[0].matches[0];
    let uri = m.uri.as_ref().unwrap();
    assert_eq!(
        uri.kind,
        Some(string_match::Kind::Regex("/api/v[0-9]+".into()))
    );
    assert!(uri.ignore_case);
    assert_eq!(
        m.scheme.as_ref().unwrap().kind,
        Some(string_match::Kind::Exact("http".into()))
    );
    assert_eq!(
        m.method.as_ref().unwrap().kind,
        Some(string_match::Kind::Exact("GET".into()))
    );
    assert_eq!(
        m.authority.as_ref().unwrap().kind,
        Some(string_match::Kind::Prefix("reviews".into()))
    );
    let a = action(&routes[0]);
    let retry = a.retry.as_ref().unwrap();
    assert_eq!(retry.num_retries, 5);
    assert_eq!(retry.per_try_timeout_ms, 2000);
    assert_eq!(retry.retry_on, ["gateway-error", "retriable-status-codes"]);
    assert_eq!(retry.retriable_status_codes, [503]);
    assert_eq!(retry.base_interval_ms, 50);
    assert_eq!(a.timeout_ms, 10_000);

    let m = &routes[1].matches[0];
    let h: Vec<(String, Option<string_match::Kind>, bool)> = m
        .headers
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                h.value.as_ref().unwrap().kind.clone(),
                h.invert,
            )
        })
        .collect();
    assert_eq!(
        h,
        [
            (
                "x-a".into(),
                Some(string_match::Kind::Prefix("p".into())),
                false
            ),
            (
                "x-b".into(),
                Some(string_match::Kind::Regex("b+".into())),
                false
            ),
            ("x-c".into(), Some(string_match::Kind::Present(true)), false),
            (
                "x-d".into(),
                Some(string_match::Kind::Exact("no".into())),
                true
            ),
        ]
    );
    assert_eq!(m.query_params[0].name, "q");
    let a = action(&routes[1]);
    assert!(a.retry.is_none(), "attempts: 0 disables retries");
    assert_eq!(
        a.clusters[0].request_headers.as_ref().unwrap().set["x-sub"],
        "v2"
    );
    assert_eq!(
        routes[1].request_headers.as_ref().unwrap().add["x-added"],
        "1"
    );
    assert_eq!(
        routes[1].request_headers.as_ref().unwrap().remove,
        ["x-gone"]
    );
    assert_eq!(
        routes[1].response_headers.as_ref().unwrap().set["x-resp"],
        "r"
    );

    let Some(route::Action::Redirect(r)) = &routes[2].action else {
        panic!("redirect")
    };
    assert_eq!(
        (r.uri.as_str(), r.authority.as_str(), r.response_code),
        ("/new", "new.example.com", 308)
    );
    let Some(route::Action::DirectResponse(d)) = &routes[3].action else {
        panic!("direct")
    };
    assert_eq!((d.status, d.body.as_str()), (418, "short and stout"));
    let rw = action(&routes[4]).rewrite.as_ref().unwrap();
    assert_eq!(
        (
            rw.uri_prefix.as_str(),
            rw.uri.as_str(),
            rw.authority.as_str()
        ),
        ("/v2", "", "reviews-internal")
    );
    let rw = action(&routes[5]).rewrite.as_ref().unwrap();
    assert_eq!((rw.uri_prefix.as_str(), rw.uri.as_str()), ("", "/replaced"));

    let a = action(&routes[6]);
    assert_eq!(
        weights(&routes[6]),
        [
            (format!("outbound|9080|v1|{REVIEWS}"), 75),
            (format!("outbound|9080|v2|{REVIEWS}"), 25)
        ]
    );
    assert_eq!(a.mirrors[0].cluster, format!("outbound|9080|v2|{REVIEWS}"));
    assert_eq!(a.mirrors[0].percentage, 12.5);
    let cors = a.cors.as_ref().unwrap();
    assert_eq!(cors.max_age_seconds, 86_400);
    assert_eq!(cors.allow_credentials, Some(true));
    assert_eq!(cors.allow_methods, ["GET"]);
}

#[test]
fn source_labels_select_routes_and_split_the_scope() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {version: v1}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    let model = MeshModel::build(&input);
    let v1 = node("a", "default", &[("app", "client"), ("version", "v1")]);
    let v2 = node("b", "default", &[("app", "client"), ("version", "v2")]);
    let v1_again = node("c", "default", &[("app", "other"), ("version", "v1")]);
    assert_ne!(scope_key(&model, &v1), scope_key(&model, &v2));
    assert_eq!(scope_key(&model, &v1), scope_key(&model, &v1_again));
    // (node, first route's subset)
    for (n, subset) in [(&v1, "v2"), (&v2, "v1")] {
        let res = translate(&model, n).unwrap();
        let vh = vhost(&res, "9080", "reviews");
        assert_eq!(
            weights(&vh.routes[0])[0].0,
            format!("outbound|9080|{subset}|{REVIEWS}"),
            "{}",
            n.id
        );
        assert!(
            vh.routes[0]
                .matches
                .iter()
                .all(|m| m.source_labels.is_empty())
        );
    }
}

#[test]
fn tcp_and_tls_routes() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec: {host: db, subsets: [{name: primary, labels: {app: db}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432, destinationSubnets: [10.99.0.0/16]}]
    route: [{destination: {host: db, subset: primary}}]
  - route: [{destination: {host: db}, weight: 60}, {destination: {host: db, subset: primary}, weight: 40}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls, namespace: default}
spec:
  hosts: [secure.example.com]
  addresses: [240.1.1.1]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls, namespace: default}
spec:
  hosts: [secure.example.com]
  tls:
  - match: [{port: 443, sniHosts: [secure.example.com]}]
    route: [{destination: {host: secure.example.com}}]
"#,
    );
    let res = run(&input, "client");
    let out = capture(&res, 15001);
    let db = "outbound|5432||db.default.svc.cluster.local";
    let chain = |n: &str| {
        out.filter_chains
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("no chain {n}: {:?}", names(&out.filter_chains, |c| &c.name)))
    };
    let sub = chain(&format!("{db}#tcp0.0"));
    assert_eq!(
        sub.r#match.as_ref().unwrap().destination_prefixes,
        ["10.99.0.0/16"]
    );
    assert_eq!(sub.r#match.as_ref().unwrap().destination_ports, [5432]);
    let rest = chain(&format!("{db}#tcp1"));
    let Some(filter_chain::Handler::Tcp(t)) = &rest.handler else {
        panic!()
    };
    let w: Vec<(String, u32)> = t
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight))
        .collect();
    assert_eq!(
        w,
        [
            (db.to_string(), 60),
            (
                "outbound|5432|primary|db.default.svc.cluster.local".to_string(),
                40
            )
        ]
    );
    assert!(
        !out.filter_chains.iter().any(|c| c.name == db),
        "covered by the catch-all tcp route"
    );
    let tls = chain("outbound|443||secure.example.com#tls0.0");
    let m = tls.r#match.as_ref().unwrap();
    assert_eq!(m.server_names, ["secure.example.com"]);
    assert_eq!(m.transport(), filter_chain_match::Transport::Tls);
    assert_eq!(m.destination_prefixes, ["240.1.1.1/32"]);
}

#[test]
fn peer_authentication_shapes_inbound_chains() {
    let pa = |ns: &str, body: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa-{ns}, namespace: {ns}}}\nspec: {body}\n---\n"
        )
    };
    // (config, chains on port 9080, passthrough has a plaintext fallback)
    let cases = [
        (String::new(), vec!["#mtls", "#plaintext"], true),
        (
            pa("istio-system", "{mtls: {mode: STRICT}}"),
            vec!["#mtls"],
            false,
        ),
        (
            pa("istio-system", "{mtls: {mode: STRICT}}")
                + &pa("default", "{mtls: {mode: PERMISSIVE}}"),
            vec!["#mtls", "#plaintext"],
            true,
        ),
        (
            pa(
                "default",
                "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}, portLevelMtls: {\"9080\": {mode: DISABLE}}}",
            ),
            vec!["#plaintext"],
            false,
        ),
    ];
    for (cfg, want, fallback) in cases {
        let res = run(&mesh(&cfg), "reviews");
        let inb = capture(&res, 15006);
        let chains: Vec<String> = inb
            .filter_chains
            .iter()
            .filter_map(|c| c.name.strip_prefix("inbound|9080||").map(str::to_string))
            .collect();
        assert_eq!(chains, want, "{cfg}");
        assert_eq!(inb.default_chain.is_some(), fallback, "{cfg}");
        assert!(inb.filter_chains.iter().all(|c| c.enforce_authorization));
    }
}

#[test]
fn inbound_uses_service_target_ports() {
    let res = run(&mesh(""), "web");
    let inb = capture(&res, 15006);
    assert!(
        inb.filter_chains
            .iter()
            .any(|c| c.name == "inbound|8080||#mtls")
    );
    let c = cluster(&res, "inbound|8080||");
    assert_eq!(c.r#type(), cluster::DiscoveryType::Static);
    assert_eq!(endpoints(&res, "inbound|8080||").endpoints[0].port, 8080);
}

#[test]
fn local_mode_uses_explicit_listeners() {
    let input = mesh("");
    let model = MeshModel::build(&input);
    let mut n = node("client-0", "default", &[("app", "client")]);
    n.interception_mode = InterceptionMode::None as i32;
    n.ip_addresses = vec!["127.10.1.4".into()];
    n.app_address = "127.10.3.4".into();
    n.workload_ports = vec![WorkloadPort {
        port: 7000,
        protocol: "HTTP".into(),
        name: "http".into(),
    }];
    // (local_bind_address, expected outbound listener names)
    let cases = [
        (
            "127.10.2.4",
            vec!["127.10.2.4_5432", "127.10.2.4_80", "127.10.2.4_9080"],
        ),
        ("", vec!["10.0.0.1_9080", "10.0.0.2_5432", "10.0.0.3_80"]),
    ];
    for (bind, want) in cases {
        n.local_bind_address = bind.into();
        let res = translate(&model, &n).unwrap();
        let mut outbound: Vec<&str> = res
            .listeners
            .iter()
            .filter(|l| l.direction() == halyard_config::resources::listener::Direction::Outbound)
            .map(|l| l.name.as_str())
            .collect();
        outbound.sort();
        assert_eq!(outbound, want, "bind {bind:?}");
        assert!(res.listeners.iter().all(|l| !l.use_original_dst));
        let inbound = res
            .listeners
            .iter()
            .find(|l| l.name == "127.10.1.4_7000")
            .unwrap();
        assert_eq!(inbound.port, 7000);
        let ep = &endpoints(&res, "inbound|7000||").endpoints[0];
        assert_eq!((ep.address.as_str(), ep.port), ("127.10.3.4", 7000));
    }
}

#[test]
fn authorization_policies_for_the_workload() {
    let input = mesh(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [default]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-allow, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"], serviceAccounts: [other/sa1]}}]
    to: [{operation: {methods: [GET], paths: ["/reviews/*"], ports: ["9080"]}}]
    when: [{key: "request.headers[x-token]", values: [abc]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-only, namespace: default}
spec: {selector: {matchLabels: {app: db}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: other}
spec: {}
"#,
    );
    let res = run(&input, "reviews");
    let names: Vec<&str> = res.authorization.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["default/reviews-allow", "istio-system/mesh-deny"]);
    let deny = &res.authorization[1];
    assert_eq!(deny.action(), authorization_policy::Action::Deny);
    assert_eq!(deny.rules[0].from[0].not_namespaces, ["default"]);
    let allow = &res.authorization[0];
    assert_eq!(allow.action(), authorization_policy::Action::Allow);
    assert_eq!(
        allow.rules[0].from[0].principals,
        [
            "cluster.local/ns/default/sa/productpage",
            "cluster.local/ns/other/sa/sa1"
        ]
    );
    assert_eq!(allow.rules[0].to[0].paths, ["/reviews/*"]);
    assert_eq!(allow.rules[0].when[0].values, ["abc"]);
    assert!(
        allow
            .config
            .ends_with("/authorization-policy/reviews-allow")
    );
}

#[test]
fn gateway_tls_servers_and_passthrough() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [reviews.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [reviews.example.com]
    tls: {mode: SIMPLE, credentialName: reviews-cert}
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [reviews.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: reviews, port: {number: 9080}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-edge, namespace: default}
spec:
  hosts: [db.example.com]
  gateways: [gw]
  tls: [{match: [{sniHosts: [db.example.com]}], route: [{destination: {host: db}}]}]
"#,
    );
    let model = MeshModel::build(&input);
    let res = translate(&model, &ingress_gateway()).unwrap();
    let vh = vhost(&res, "http.80", "reviews.example.com");
    assert!(vh.require_tls);
    let https = vhost(
        &res,
        "https.443.https.gw.default",
        "reviews.example.com:443",
    );
    assert_eq!(
        weights(&https.routes[0]),
        [(format!("outbound|9080||{REVIEWS}"), 100)]
    );
    let l443 = capture(&res, 443);
    let tls = l443.filter_chains[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificate_secret, "kubernetes://reviews-cert");
    assert_eq!(
        l443.filter_chains[0].r#match.as_ref().unwrap().server_names,
        ["reviews.example.com"]
    );
    let l8443 = capture(&res, 8443);
    let pass = &l8443.filter_chains[0];
    assert!(pass.tls.is_none());
    assert_eq!(
        pass.r#match.as_ref().unwrap().server_names,
        ["db.example.com"]
    );
    let Some(filter_chain::Handler::Tcp(t)) = &pass.handler else {
        panic!()
    };
    assert_eq!(
        t.clusters[0].name,
        "outbound|5432||db.default.svc.cluster.local"
    );
}

#[test]
fn shared_and_local_parts_compose_the_whole() {
    let input = mesh("");
    let model = MeshModel::build(&input);
    let n = sidecar(&input, "reviews");
    let shared = translate_shared(&model, &n);
    let local = translate_local(&model, &n);
    assert!(shared.listeners.iter().all(|l| l.port != 15006));
    assert!(local.listeners.iter().all(|l| l.port == 15006));
    let whole = translate(&model, &n).unwrap();
    assert_eq!(merge(&shared, &local), whole);
    let t = Translator::new(model);
    assert_eq!(t.translate(&n).unwrap(), whole);
    let (s, l) = t.parts(&n).unwrap();
    assert_eq!((s.as_ref(), &l), (&shared, &local));
    // Another pod in the same namespace shares the part.
    let other = sidecar(&input, "client");
    assert_eq!(scope_key(t.model(), &n), scope_key(t.model(), &other));
    assert!(std::sync::Arc::ptr_eq(&t.shared(&n), &t.shared(&other)));
    assert_eq!(t.cached_scopes(), 1);
    // A node without namespace is refused with a reason.
    let err = translate(
        t.model(),
        &Node {
            id: "x".into(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");
}

#[test]
fn cluster_domain_hosts_get_short_names_whatever_their_source() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: local-svc, namespace: default}
spec:
  hosts: [local-svc]
  addresses: [127.10.0.9]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.10.1.9}]
"#,
    );
    // (proxy app, domain, served)
    let cases = [
        ("client", "local-svc:9080", true),
        ("client", "local-svc.default:9080", true),
        ("client", "127.10.0.9:9080", true),
        ("other-client", "local-svc.default.svc:9080", true),
        ("other-client", "local-svc:9080", false),
    ];
    for (app, domain, served) in cases {
        let res = run(&input, app);
        let rc = res.route_configs.iter().find(|r| r.name == "9080").unwrap();
        let found = rc.virtual_hosts.iter().any(|v| {
            v.name == "local-svc.default.svc.cluster.local:9080"
                && v.domains.iter().any(|d| d == domain)
        });
        assert_eq!(found, served, "{app} {domain}");
    }
}

#[test]
fn gateway_listens_on_its_service_target_port() {
    let input = mesh(
        r#"
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec: {selector: {istio: ingressgateway}, ports: [{name: http2, port: 80, targetPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}, {port: {number: 81, name: http-81, protocol: HTTP}, hosts: ["*"]}]
"#,
    );
    let res = translate(&MeshModel::build(&input), &ingress_gateway()).unwrap();
    let ports: Vec<u32> = res.listeners.iter().map(|l| l.port).collect();
    // (server port -> listener port): mapped by the Service, else the server port itself.
    assert_eq!(ports, [8080, 81]);
}

#[test]
fn unknown_destinations_are_reported() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: typo, namespace: default}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reveiws}}]}]}
"#,
    );
    let model = MeshModel::build(&input);
    let w: Vec<String> = model.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(
            "VirtualService default/typo: destination host \"reveiws.default.svc.cluster.local\""
        ),
        "{}",
        w[0]
    );
}

#[test]
fn endpoint_slices_give_ports_health_and_identity() {
    let input = mesh(
        r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec: {selector: {app: api}, ports: [{name: http, port: 80, targetPort: web}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-a, namespace: default, labels: {app: api, security.istio.io/tlsMode: istio, topology.kubernetes.io/region: eu}}
spec: {serviceAccountName: api-sa, containers: [{name: c, ports: [{name: web, containerPort: 8081}]}]}
status: {podIP: 10.5.0.1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-x1, namespace: default, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8081}]
endpoints:
- {addresses: [10.5.0.1], conditions: {ready: true}, zone: eu-1a, targetRef: {kind: Pod, name: api-a, namespace: default}}
- {addresses: [10.5.0.2], conditions: {ready: false, terminating: true}}
- {addresses: [10.5.0.3], conditions: {ready: false}}
"#,
    );
    let res = run(&input, "client");
    let eps = &endpoints(&res, "outbound|80||api.default.svc.cluster.local").endpoints;
    // (address, port, health, identity, mesh_tls, locality)
    let got: Vec<(&str, u32, &str, &str, bool, &str)> = eps
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.port,
                e.health().as_str_name(),
                e.identity.as_str(),
                e.mesh_tls,
                e.locality.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "10.5.0.1",
                8081,
                "HEALTHY",
                "spiffe://cluster.local/ns/default/sa/api-sa",
                true,
                "eu/eu-1a/"
            ),
            ("10.5.0.2", 8081, "DRAINING", "", false, ""),
            ("10.5.0.3", 8081, "UNHEALTHY", "", false, ""),
        ]
    );
}

#[test]
fn mounted_certificate_files_become_secrets() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key, caCertificates: /etc/certs/ca.crt}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-mtls, namespace: default}
spec:
  host: db
  trafficPolicy:
    tls: {mode: MUTUAL, clientCertificate: /c/cert.pem, privateKey: /c/key.pem, caCertificates: /c/ca.pem, sni: db.internal, subjectAltNames: [db.internal]}
"#,
    );
    let model = MeshModel::build(&input);
    let gw = translate(&model, &ingress_gateway()).unwrap();
    let chain = &capture(&gw, 443).filter_chains[0];
    let tls = chain.tls.as_ref().unwrap();
    assert_eq!(
        tls.certificate_secret,
        "file-cert:/etc/certs/tls.crt~/etc/certs/tls.key"
    );
    assert_eq!(tls.validation_secret, "file-root:/etc/certs/ca.crt");
    let names: Vec<&str> = gw.secrets.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"file-cert:/etc/certs/tls.crt~/etc/certs/tls.key"),
        "{names:?}"
    );
    assert!(
        gw.secrets.iter().all(|s| s.config.ends_with("/gateway/gw")
            || s.config.ends_with("/destination-rule/db-mtls"))
    );

    let side = run(&input, "client");
    let c = cluster(&side, "outbound|5432||db.default.svc.cluster.local");
    let t = c.tls.as_ref().unwrap();
    assert_eq!(t.mode(), upstream_tls::Mode::Mutual);
    assert_eq!(
        (t.sni.as_str(), t.subject_alt_names.as_slice()),
        ("db.internal", &["db.internal".to_string()][..])
    );
    assert_eq!(t.certificate_secret, "file-cert:/c/cert.pem~/c/key.pem");
    let s = side
        .secrets
        .iter()
        .find(|s| s.name == t.validation_secret)
        .unwrap();
    assert!(s.config.ends_with("/destination-rule/db-mtls"));
}

#[test]
fn local_mode_gateway_binds_the_node_address() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"#,
    );
    let model = MeshModel::build(&input);
    let mut n = ingress_gateway();
    // (local_bind_address, listener name)
    for (bind, want) in [("", "0.0.0.0_8080"), ("127.10.0.250", "127.10.0.250_8080")] {
        n.local_bind_address = bind.into();
        let res = translate(&model, &n).unwrap();
        assert_eq!(names(&res.listeners, |l| &l.name), [want]);
    }
    let a = ingress_gateway();
    assert_ne!(scope_key(&model, &a), scope_key(&model, &n));
}

#[test]
fn destination_rules_for_unknown_hosts_are_reported() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ghost, namespace: default}
spec: {host: ghost, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all-local, namespace: default}
spec: {host: "*.default.svc.cluster.local", trafficPolicy: {loadBalancer: {simple: RANDOM}}}
"#,
    );
    let model = MeshModel::build(&input);
    let w: Vec<String> = model.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("DestinationRule default/ghost: host \"ghost\""),
        "{}",
        w[0]
    );
}

#[test]
fn sidecar_egress_ports_scope_hosts_per_port() {
    let input = mesh(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - port: {number: 5432, protocol: TCP, name: tcp}
    hosts: ["./db.default.svc.cluster.local"]
  - hosts: ["other/*"]
"#,
    );
    let res = run(&input, "client");
    // (cluster, present)
    let cases = [
        ("outbound|5432||db.default.svc.cluster.local", true),
        ("outbound|80||web.other.svc.cluster.local", true),
        ("outbound|9080||reviews.default.svc.cluster.local", false),
    ];
    for (name, present) in cases {
        assert_eq!(
            res.clusters.iter().any(|c| c.name == name),
            present,
            "{name}"
        );
    }
    assert!(!res.route_configs.iter().any(|r| r.name == "9080"));
}
