//! client → outbound proxy → inbound proxy → server, over real loopback sockets: one test per
//! match kind and per action, error responses and flags, metrics after a known request mix.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use halyard_proxy::Proxy;
use r::listener::Direction;

const A: &str = "outbound|80||a.default.svc.cluster.local";
const B: &str = "outbound|80||b.default.svc.cluster.local";

struct Mesh {
    out: Arc<Proxy>,
    inbound: Arc<Proxy>,
    out_addr: SocketAddr,
    client: Client,
}

fn routes() -> Vec<r::Route> {
    let mut icase = exact("/ICase");
    icase.ignore_case = true;
    let m = |f: &dyn Fn(&mut r::RouteMatch)| {
        let mut x = r::RouteMatch::default();
        f(&mut x);
        x
    };
    let mut hdr = route("hdr", vec![uri(prefix("/hdr"))], to(&[(A, 1)]));
    hdr.request_headers = Some(r::HeaderOperations {
        set: [("x-set".to_string(), "1".to_string())]
            .into_iter()
            .collect(),
        add: [("x-add".to_string(), "2".to_string())]
            .into_iter()
            .collect(),
        remove: vec!["x-remove".into()],
    });
    hdr.response_headers = Some(r::HeaderOperations {
        set: [("x-resp".to_string(), "yes".to_string())]
            .into_iter()
            .collect(),
        remove: vec!["x-backend-secret".into()],
        ..Default::default()
    });
    let mut rewrite = to(&[(A, 1)]);
    rewrite.rewrite = Some(r::Rewrite {
        uri_prefix: "/new".into(),
        authority: "rewritten.host".into(),
        ..Default::default()
    });
    let mut regex_rw = to(&[(A, 1)]);
    regex_rw.rewrite = Some(r::Rewrite {
        uri_regex: Some(r::RegexRewrite {
            pattern: "^/rx/([a-z]+)/(.*)$".into(),
            substitution: "/\\2/\\1".into(),
        }),
        ..Default::default()
    });
    let mut cors = to(&[(A, 1)]);
    cors.cors = Some(r::CorsPolicy {
        allow_origins: vec![exact("https://ok.example")],
        allow_methods: vec!["GET".into(), "PUT".into()],
        allow_headers: vec!["x-custom".into()],
        max_age_seconds: 60,
        ..Default::default()
    });
    vec![
        route("exact", vec![uri(exact("/exact"))], to(&[(B, 1)])),
        route("regex", vec![uri(regex("/re/[0-9]+"))], to(&[(B, 1)])),
        route("icase", vec![uri(icase)], to(&[(B, 1)])),
        route(
            "method",
            vec![m(&|x| x.method = Some(exact("DELETE")))],
            to(&[(B, 1)]),
        ),
        route(
            "h-exact",
            vec![m(&|x| {
                x.headers = vec![header("end-user", Some(exact("jason")))]
            })],
            to(&[(B, 1)]),
        ),
        route(
            "h-prefix",
            vec![m(&|x| {
                x.headers = vec![header("x-prefix", Some(prefix("abc")))]
            })],
            to(&[(B, 1)]),
        ),
        route(
            "h-regex",
            vec![m(&|x| {
                x.headers = vec![header("x-re", Some(regex("v[0-9]")))]
            })],
            to(&[(B, 1)]),
        ),
        route(
            "h-present",
            vec![m(&|x| {
                x.headers = vec![header("x-present", Some(present()))]
            })],
            to(&[(B, 1)]),
        ),
        route(
            "query",
            vec![m(&|x| {
                x.query_params = vec![header("debug", Some(exact("1")))]
            })],
            to(&[(B, 1)]),
        ),
        route(
            "authority",
            vec![m(&|x| x.authority = Some(exact("auth.wild.test")))],
            to(&[(B, 1)]),
        ),
        route(
            "scheme",
            vec![m(&|x| {
                x.uri = Some(prefix("/scheme"));
                x.scheme = Some(exact("http"));
            })],
            to(&[(B, 1)]),
        ),
        route(
            "without",
            vec![m(&|x| {
                x.uri = Some(prefix("/without"));
                x.headers = vec![r::KeyValueMatch {
                    name: "x-block".into(),
                    value: None,
                    invert: true,
                }];
            })],
            to(&[(B, 1)]),
        ),
        r::Route {
            name: "redirect".into(),
            matches: vec![uri(prefix("/redirect"))],
            action: Some(r::route::Action::Redirect(r::RedirectAction {
                uri: "/new-place".into(),
                authority: "other.example".into(),
                scheme: "https".into(),
                response_code: 302,
                ..Default::default()
            })),
            ..Default::default()
        },
        r::Route {
            name: "direct".into(),
            matches: vec![uri(exact("/direct"))],
            action: Some(r::route::Action::DirectResponse(r::DirectResponseAction {
                status: 418,
                body: "teapot".into(),
            })),
            ..Default::default()
        },
        route("rewrite", vec![uri(prefix("/old"))], rewrite),
        route("regex-rewrite", vec![uri(prefix("/rx/"))], regex_rw),
        hdr,
        route("cors", vec![uri(prefix("/cors"))], cors),
        route(
            "canary",
            vec![uri(prefix("/canary"))],
            to(&[(A, 90), (B, 10)]),
        ),
        route(
            "blackhole",
            vec![uri(prefix("/blackhole"))],
            to(&[("BlackHoleCluster", 1)]),
        ),
        route(
            "dead",
            vec![uri(prefix("/dead"))],
            to(&[("outbound|80||dead.default.svc.cluster.local", 1)]),
        ),
        route(
            "empty",
            vec![uri(prefix("/empty"))],
            to(&[("outbound|80||empty.default.svc.cluster.local", 1)]),
        ),
        route("default", vec![uri(prefix("/"))], to(&[(A, 1)])),
    ]
}

async fn mesh() -> Mesh {
    let (a_addr, _) = http_backend("a").await;
    let (b_addr, _) = http_backend("b").await;
    let dead = dead_addr().await;

    // Inbound proxy in front of backend a (sidecar of workload a-v1).
    let in_res = ProxyResources {
        version: "in-1".into(),
        listeners: vec![listener(
            "inbound",
            Direction::Inbound,
            vec![inline_http_chain("inbound|80||", "inbound|80||")],
        )],
        clusters: vec![cluster("inbound|80||", "a.default.svc.cluster.local")],
        endpoints: vec![endpoints("inbound|80||", &[a_addr])],
        ..Default::default()
    };
    let (inbound, in_addrs) = start_proxy(node("a", "v1"), &in_res);
    let in_addr = in_addrs["inbound"];

    let mut unhealthy = endpoints("outbound|80||empty.default.svc.cluster.local", &[b_addr]);
    unhealthy.endpoints[0].health = r::endpoint::Health::Unhealthy as i32;
    let out_res = ProxyResources {
        version: "out-1".into(),
        clusters: vec![
            cluster(A, "a.default.svc.cluster.local"),
            cluster(B, "b.default.svc.cluster.local"),
            cluster(
                "outbound|80||dead.default.svc.cluster.local",
                "dead.default.svc.cluster.local",
            ),
            cluster(
                "outbound|80||empty.default.svc.cluster.local",
                "empty.default.svc.cluster.local",
            ),
            special_cluster("BlackHoleCluster", r::cluster::DiscoveryType::Blackhole),
        ],
        endpoints: vec![
            endpoints(A, &[in_addr]),
            endpoints(B, &[b_addr]),
            endpoints("outbound|80||dead.default.svc.cluster.local", &[dead]),
            unhealthy,
        ],
        ..outbound_http(
            "outbound",
            vec![vhost("svc:80", &["svc", "svc:80", "*.wild.test"], routes())],
        )
    };
    let (out, out_addrs) = start_proxy(node("client", "v1"), &out_res);
    Mesh {
        out,
        inbound,
        out_addr: out_addrs["outbound"],
        client: h1_client(),
    }
}

impl Mesh {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        get(&self.client, self.out_addr, "svc", path, headers).await
    }
}

#[tokio::test]
async fn default_route_goes_through_both_proxies() {
    let m = mesh().await;
    let g = m.get("/hello", &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.backend(), "a");
    let j = g.json();
    assert_eq!(j["path"], "/hello");
    assert_eq!(j["host"], "svc");
    // request id generated once, at the first proxy, and passed on
    let rid = j["headers"]["x-request-id"].as_str().unwrap().to_string();
    assert_eq!(rid.len(), 36);
    // trace headers pass through untouched
    let g = m
        .get(
            "/t",
            &[
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("x-b3-traceid", "abc"),
                ("x-request-id", "given"),
            ],
        )
        .await;
    let j = g.json();
    assert_eq!(
        j["headers"]["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(j["headers"]["x-b3-traceid"], "abc");
    assert_eq!(j["headers"]["x-request-id"], "given");
    assert!(g.headers.contains_key("x-envoy-upstream-service-time"));
}

#[tokio::test]
async fn match_uri_exact() {
    let m = mesh().await;
    assert_eq!(m.get("/exact", &[]).await.backend(), "b");
    assert_eq!(m.get("/exact/more", &[]).await.backend(), "a");
}

#[tokio::test]
async fn match_uri_prefix_and_regex() {
    let m = mesh().await;
    assert_eq!(m.get("/re/123", &[]).await.backend(), "b");
    assert_eq!(
        m.get("/re/12x", &[]).await.backend(),
        "a",
        "regex is a full match"
    );
}

#[tokio::test]
async fn match_ignore_uri_case() {
    let m = mesh().await;
    assert_eq!(m.get("/icase", &[]).await.backend(), "b");
    assert_eq!(m.get("/ICASE", &[]).await.backend(), "b");
}

#[tokio::test]
async fn match_method() {
    let m = mesh().await;
    let req = http::Request::delete(format!("http://{}/x", m.out_addr))
        .header("host", "svc")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send(&m.client, req).await.backend(), "b");
    assert_eq!(m.get("/x", &[]).await.backend(), "a");
}

#[tokio::test]
async fn match_headers_exact_prefix_regex_present() {
    let m = mesh().await;
    assert_eq!(m.get("/p", &[("end-user", "jason")]).await.backend(), "b");
    assert_eq!(m.get("/p", &[("end-user", "bob")]).await.backend(), "a");
    assert_eq!(m.get("/p", &[("x-prefix", "abcdef")]).await.backend(), "b");
    assert_eq!(m.get("/p", &[("x-prefix", "zabc")]).await.backend(), "a");
    assert_eq!(m.get("/p", &[("x-re", "v7")]).await.backend(), "b");
    assert_eq!(m.get("/p", &[("x-re", "v77")]).await.backend(), "a");
    assert_eq!(m.get("/p", &[("x-present", "")]).await.backend(), "b");
}

#[tokio::test]
async fn match_without_headers() {
    let m = mesh().await;
    assert_eq!(m.get("/without", &[]).await.backend(), "b");
    assert_eq!(m.get("/without", &[("x-block", "1")]).await.backend(), "a");
}

#[tokio::test]
async fn match_query_params() {
    let m = mesh().await;
    assert_eq!(m.get("/q?debug=1", &[]).await.backend(), "b");
    assert_eq!(m.get("/q?debug=2", &[]).await.backend(), "a");
}

#[tokio::test]
async fn match_authority_and_wildcard_domain() {
    let m = mesh().await;
    let g = get(&m.client, m.out_addr, "auth.wild.test", "/", &[]).await;
    assert_eq!(g.backend(), "b");
    let g = get(&m.client, m.out_addr, "other.wild.test:80", "/", &[]).await;
    assert_eq!(g.backend(), "a");
}

#[tokio::test]
async fn match_scheme() {
    let m = mesh().await;
    assert_eq!(m.get("/scheme", &[]).await.backend(), "b");
}

#[tokio::test]
async fn no_route_is_404_nr() {
    let m = mesh().await;
    let g = get(&m.client, m.out_addr, "unknown.host", "/", &[]).await;
    assert_eq!(g.status, 404);
    let metrics = prometheus(&m.out);
    assert_eq!(
        requests_total(
            &metrics,
            &["response_code=\"404\"", "response_flags=\"NR\""]
        ),
        1
    );
}

#[tokio::test]
async fn redirect_action() {
    let m = mesh().await;
    let g = m.get("/redirect/x", &[]).await;
    assert_eq!(g.status, 302);
    assert_eq!(g.headers["location"], "https://other.example/new-place");
}

#[tokio::test]
async fn direct_response_action() {
    let m = mesh().await;
    let g = m.get("/direct", &[]).await;
    assert_eq!(g.status, 418);
    assert_eq!(g.text(), "teapot");
}

#[tokio::test]
async fn rewrite_prefix_and_authority() {
    let m = mesh().await;
    let j = m.get("/old/path?k=v", &[]).await.json();
    assert_eq!(j["path"], "/new/path?k=v");
    assert_eq!(j["host"], "rewritten.host");
    assert_eq!(j["headers"]["x-envoy-original-path"], "/old/path");
}

#[tokio::test]
async fn rewrite_uri_regex() {
    let m = mesh().await;
    let j = m.get("/rx/abc/rest", &[]).await.json();
    assert_eq!(j["path"], "/rest/abc");
}

#[tokio::test]
async fn request_and_response_header_operations() {
    let m = mesh().await;
    let g = m.get("/hdr", &[("x-remove", "1"), ("x-set", "old")]).await;
    let j = g.json();
    assert_eq!(j["headers"]["x-set"], "1");
    assert_eq!(j["headers"]["x-add"], "2");
    assert!(j["headers"].get("x-remove").is_none());
    assert_eq!(g.headers["x-resp"], "yes");
    assert!(!g.headers.contains_key("x-backend-secret"));
    // other routes keep the header
    assert!(
        m.get("/plain", &[])
            .await
            .headers
            .contains_key("x-backend-secret")
    );
}

#[tokio::test]
async fn cors_preflight_answered_and_origin_echoed() {
    let m = mesh().await;
    let req = http::Request::options(format!("http://{}/cors", m.out_addr))
        .header("host", "svc")
        .header("origin", "https://ok.example")
        .header("access-control-request-method", "PUT")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let g = send(&m.client, req).await;
    assert_eq!(g.status, 200);
    assert_eq!(
        g.headers["access-control-allow-origin"],
        "https://ok.example"
    );
    assert_eq!(g.headers["access-control-allow-methods"], "GET,PUT");
    assert_eq!(g.headers["access-control-max-age"], "60");
    assert!(g.body.is_empty(), "answered by the proxy, not the backend");
    let g = m.get("/cors", &[("origin", "https://ok.example")]).await;
    assert_eq!(g.backend(), "a");
    assert_eq!(
        g.headers["access-control-allow-origin"],
        "https://ok.example"
    );
    let g = m.get("/cors", &[("origin", "https://evil.example")]).await;
    assert!(!g.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn blackhole_is_502() {
    let m = mesh().await;
    assert_eq!(m.get("/blackhole", &[]).await.status, 502);
}

#[tokio::test]
async fn connect_failure_is_503_uf_with_envoy_body() {
    let m = mesh().await;
    let g = m.get("/dead", &[]).await;
    assert_eq!(g.status, 503);
    assert!(
        g.text()
            .starts_with("upstream connect error or disconnect/reset before headers"),
        "{}",
        g.text()
    );
    let metrics = prometheus(&m.out);
    assert_eq!(
        requests_total(
            &metrics,
            &["response_code=\"503\"", "response_flags=\"UF\""]
        ),
        1
    );
}

#[tokio::test]
async fn no_healthy_upstream_is_503_uh() {
    let m = mesh().await;
    let g = m.get("/empty", &[]).await;
    assert_eq!(g.status, 503);
    assert_eq!(g.text(), "no healthy upstream");
    let metrics = prometheus(&m.out);
    assert_eq!(
        requests_total(
            &metrics,
            &["response_code=\"503\"", "response_flags=\"UH\""]
        ),
        1
    );
}

#[tokio::test]
async fn request_body_streams_and_is_counted() {
    let m = mesh().await;
    let body = vec![b'x'; 100_000];
    let req = http::Request::post(format!("http://{}/upload", m.out_addr))
        .header("host", "svc")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let g = send(&m.client, req).await;
    assert_eq!(g.headers["x-request-bytes"], "100000");
    let metrics = prometheus(&m.out);
    // 100 kB body lands in the le=1000000 bucket, not le=100000's lower neighbour
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_request_bytes_bucket") && l.contains("le=\"100000\""))
        .unwrap();
    assert!(line.ends_with(" 0"), "{line}");
}

#[tokio::test]
async fn metrics_after_known_request_mix() {
    let m = mesh().await;
    for _ in 0..3 {
        assert_eq!(m.get("/ok", &[]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(m.get("/direct", &[]).await.status, 418);
    }
    assert_eq!(m.get("/ok", &[("x-status", "500")]).await.status, 500);
    assert_eq!(
        get(&m.client, m.out_addr, "nowhere", "/", &[]).await.status,
        404
    );
    assert_eq!(m.get("/dead", &[]).await.status, 503);
    // kubelet probes are not counted
    assert_eq!(
        m.get("/ok", &[("user-agent", "kube-probe/1.30")])
            .await
            .status,
        200
    );

    let out = prometheus(&m.out);
    let src = "reporter=\"source\"";
    assert_eq!(requests_total(&out, &[src]), 8, "{out}");
    assert_eq!(
        requests_total(
            &out,
            &[
                src,
                "response_code=\"200\"",
                "destination_service=\"a.default.svc.cluster.local\"",
                "destination_service_name=\"a\"",
                "destination_service_namespace=\"default\"",
                "source_workload=\"client-v1\"",
                "source_app=\"client\"",
                "request_protocol=\"http\""
            ]
        ),
        3
    );
    assert_eq!(requests_total(&out, &[src, "response_code=\"418\""]), 2);
    assert_eq!(
        requests_total(
            &out,
            &[src, "response_code=\"500\"", "response_flags=\"-\""]
        ),
        1
    );
    assert_eq!(
        requests_total(
            &out,
            &[src, "response_code=\"404\"", "response_flags=\"NR\""]
        ),
        1
    );
    assert_eq!(
        requests_total(
            &out,
            &[src, "response_code=\"503\"", "response_flags=\"UF\""]
        ),
        1
    );
    assert!(out.contains("# TYPE istio_request_duration_milliseconds histogram"));
    assert!(out.contains("istio_response_bytes_count{"));

    let inb = prometheus(&m.inbound);
    let dst = "reporter=\"destination\"";
    assert_eq!(requests_total(&inb, &[dst]), 4, "{inb}");
    assert_eq!(
        requests_total(
            &inb,
            &[
                dst,
                "destination_workload=\"a-v1\"",
                "destination_app=\"a\"",
                "destination_version=\"v1\"",
                "connection_security_policy=\"none\"",
                "response_code=\"200\""
            ]
        ),
        3
    );
}

#[tokio::test]
async fn canary_weights_within_two_percent_over_10000_requests() {
    let m = Arc::new(mesh().await);
    let n = 10_000usize;
    let workers = 8;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = 0usize;
            for _ in 0..n / workers {
                let g = m.get("/canary", &[]).await;
                assert_eq!(g.status, 200);
                if g.backend() == "b" {
                    b += 1;
                }
            }
            b
        }));
    }
    let mut b = 0;
    for t in tasks {
        b += t.await.unwrap();
    }
    let share = b as f64 / n as f64;
    assert!((share - 0.10).abs() <= 0.02, "b share {share}");
}
