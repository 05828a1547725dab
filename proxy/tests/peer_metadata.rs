//! Istio metadata exchange between two proxies: client → productpage's outbound proxy → reviews'
//! inbound proxy → app, plus a MESH_EXTERNAL destination that must never see the headers.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use halyard_proxy::{NodeInfo, Proxy, ProxyOptions};
use http::StatusCode;

const ID: &str = "x-envoy-peer-metadata-id";
const META: &str = "x-envoy-peer-metadata";

fn workload(app: &str, version: &str, ns: &str, sa: &str) -> NodeInfo {
    NodeInfo {
        id: format!("{app}-{version}-7d9f.{ns}"),
        namespace: ns.into(),
        labels: [
            ("app".to_string(), app.to_string()),
            ("version".to_string(), version.to_string()),
        ]
        .into_iter()
        .collect(),
        workload: format!("{app}-{version}"),
        principal: format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"),
        ..Default::default()
    }
}

fn proxy(node: NodeInfo, res: &ProxyResources) -> (Arc<Proxy>, SocketAddr) {
    let p = Proxy::new(ProxyOptions {
        node,
        cluster_id: "Kubernetes".into(),
        ..Default::default()
    });
    p.apply(res).unwrap();
    let addr = p
        .listener_addrs()
        .into_values()
        .next()
        .expect("one listener");
    (p, addr)
}

/// reviews' sidecar: inbound listener → the app.
fn inbound(app: SocketAddr) -> ProxyResources {
    ProxyResources {
        version: "1".into(),
        listeners: vec![listener(
            "virtualInbound",
            r::listener::Direction::Inbound,
            vec![inline_http_chain("in", "inbound|9080||")],
        )],
        clusters: vec![cluster(
            "inbound|9080||",
            "reviews.default.svc.cluster.local",
        )],
        endpoints: vec![endpoints("inbound|9080||", &[app])],
        ..Default::default()
    }
}

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const EXTERNAL: &str = "outbound|80||api.external.com";

/// productpage's sidecar: `reviews` (in mesh, its endpoint is reviews' sidecar) and
/// `api.external.com` (a MESH_EXTERNAL ServiceEntry: plaintext, no sidecar).
fn outbound(reviews: SocketAddr, external: SocketAddr) -> ProxyResources {
    let mut reviews_eps = endpoints(REVIEWS, &[reviews]);
    reviews_eps.endpoints[0].mesh_tls = true;
    ProxyResources {
        version: "1".into(),
        listeners: vec![listener(
            "out",
            r::listener::Direction::Outbound,
            vec![http_chain("http", "routes")],
        )],
        route_configs: vec![route_config(
            "routes",
            vec![
                vhost(
                    "reviews",
                    &["reviews"],
                    vec![route("r", vec![], to(&[(REVIEWS, 1)]))],
                ),
                vhost(
                    "external",
                    &["api.external.com"],
                    vec![route("e", vec![], to(&[(EXTERNAL, 1)]))],
                ),
            ],
        )],
        clusters: vec![
            cluster(REVIEWS, "reviews.default.svc.cluster.local"),
            cluster(EXTERNAL, "api.external.com"),
        ],
        endpoints: vec![reviews_eps, endpoints(EXTERNAL, &[external])],
        ..Default::default()
    }
}

#[tokio::test]
async fn inbound_metrics_know_the_caller_and_headers_stay_inside_the_mesh() {
    let (app, _) = http_backend("reviews-app").await;
    let (external, external_hits) = http_backend("external").await;
    let (reviews_proxy, reviews_in) = proxy(
        workload("reviews", "v2", "default", "bookinfo-reviews"),
        &inbound(app),
    );
    let (pp_proxy, pp_out) = proxy(
        workload("productpage", "v1", "shop", "bookinfo-productpage"),
        &outbound(reviews_in, external),
    );
    let client = h1_client();

    // A known mix: 3 OK and 2 errors from reviews, 2 to the external service.
    for status in ["200", "200", "200", "503", "503"] {
        let got = get(
            &client,
            pp_out,
            "reviews",
            "/reviews/1",
            &[("x-status", status)],
        )
        .await;
        assert_eq!(got.status.as_str(), status);
        assert_eq!(got.backend(), "reviews-app");
        // The app never sees the exchange headers, nor does the client.
        let seen = &got.json()["headers"];
        assert!(seen.get(ID).is_none() && seen.get(META).is_none(), "{seen}");
        assert!(!got.headers.contains_key(ID) && !got.headers.contains_key(META));
    }
    for _ in 0..2 {
        // Even metadata the app itself tried to send is not forwarded out of the mesh.
        let got = get(
            &client,
            pp_out,
            "api.external.com",
            "/v1",
            &[(META, "c3Bvb2Y="), (ID, "spoof")],
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
        let seen = &got.json()["headers"];
        assert!(seen.get(ID).is_none() && seen.get(META).is_none(), "{seen}");
    }
    assert_eq!(
        external_hits.0.load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    let caller = [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"shop\"",
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/bookinfo-productpage\"",
        "source_app=\"productpage\"",
        "source_version=\"v1\"",
        "destination_workload=\"reviews-v2\"",
        "destination_service=\"reviews.default.svc.cluster.local\"",
    ];
    let inbound_metrics = prometheus(&reviews_proxy);
    let ok: Vec<&str> = caller
        .iter()
        .copied()
        .chain(["response_code=\"200\""])
        .collect();
    let err: Vec<&str> = caller
        .iter()
        .copied()
        .chain(["response_code=\"503\""])
        .collect();
    assert_eq!(
        requests_total(&inbound_metrics, &ok),
        3,
        "{inbound_metrics}"
    );
    assert_eq!(requests_total(&inbound_metrics, &err), 2);
    assert_eq!(
        requests_total(&inbound_metrics, &["source_workload=\"unknown\""]),
        0
    );

    // The outbound side learned the callee from the response.
    let callee = [
        "reporter=\"source\"",
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"reviews-v2\"",
        "destination_workload_namespace=\"default\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v2\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\"",
    ];
    let outbound_metrics = prometheus(&pp_proxy);
    assert_eq!(
        requests_total(&outbound_metrics, &callee),
        5,
        "{outbound_metrics}"
    );
    assert_eq!(
        requests_total(
            &outbound_metrics,
            &[
                "destination_service=\"api.external.com\"",
                "destination_workload=\"unknown\""
            ]
        ),
        2
    );
}

#[tokio::test]
async fn callers_outside_the_mesh_get_no_metadata_and_stay_unknown() {
    let (app, _) = http_backend("reviews-app").await;
    let (reviews_proxy, reviews_in) = proxy(
        workload("reviews", "v2", "default", "bookinfo-reviews"),
        &inbound(app),
    );
    let client = h1_client();
    let got = get(&client, reviews_in, "reviews", "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(!got.headers.contains_key(META), "{:?}", got.headers);
    // Undecodable metadata is dropped (never passed to the app) and not trusted.
    let got = get(
        &client,
        reviews_in,
        "reviews",
        "/",
        &[(META, "%%%not-base64")],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.json()["headers"].get(META).is_none());
    let m = prometheus(&reviews_proxy);
    assert_eq!(
        requests_total(
            &m,
            &["reporter=\"destination\"", "source_workload=\"unknown\""]
        ),
        2,
        "{m}"
    );
}

#[tokio::test]
async fn auto_mtls_clusters_receive_our_metadata_on_the_wire() {
    // An in-mesh service by its auto-mTLS setting (no endpoint marked): the bytes the upstream
    // receives carry our identity in Istio's format.
    let (ratings, _) = http_backend("ratings").await;
    const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";
    let mut c = cluster(RATINGS, "ratings.default.svc.cluster.local");
    c.tls = Some(r::UpstreamTls {
        mode: r::upstream_tls::Mode::AutoIstioMutual as i32,
        ..Default::default()
    });
    let res = ProxyResources {
        version: "1".into(),
        listeners: vec![listener(
            "out",
            r::listener::Direction::Outbound,
            vec![inline_http_chain("http", RATINGS)],
        )],
        clusters: vec![c],
        endpoints: vec![endpoints(RATINGS, &[ratings])],
        ..Default::default()
    };
    let (_p, out) = proxy(
        workload("reviews", "v3", "default", "bookinfo-reviews"),
        &res,
    );
    let got = get(&h1_client(), out, "ratings", "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    let seen = &got.json()["headers"];
    assert_eq!(seen[ID], "sidecar~~reviews-v3-7d9f.default~default.svc");
    let meta = seen[META].as_str().expect("metadata sent");
    let (w, cluster_id) = halyard_proxy::peer::decode(meta.as_bytes(), "").unwrap();
    assert_eq!(
        (
            w.workload.as_str(),
            w.app.as_str(),
            w.version.as_str(),
            cluster_id.as_str()
        ),
        ("reviews-v3", "reviews", "v3", "Kubernetes")
    );
    assert_eq!(
        w.principal,
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
}
