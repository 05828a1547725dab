//! Load balancing through a live proxy (round robin weights, consistent hashing and remapping,
//! cookies), config swaps under load with zero failures, the admin endpoints and the static-mode
//! binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use halyard_config::ProxyResources;
use halyard_config::resources as r;

const C: &str = "outbound|80||pool.default.svc.cluster.local";

fn lb(policy: r::load_balancer::Policy, key: Option<r::consistent_hash::Key>) -> r::Cluster {
    let mut c = cluster(C, "pool.default.svc.cluster.local");
    c.load_balancer = Some(r::LoadBalancer {
        policy: policy as i32,
        consistent_hash: key.map(|k| r::ConsistentHash {
            key: Some(k),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

fn pool_config(version: &str, c: r::Cluster, eps: r::ClusterEndpoints) -> ProxyResources {
    ProxyResources {
        version: version.into(),
        clusters: vec![c],
        endpoints: vec![eps],
        ..outbound_http(
            "out",
            vec![vhost(
                "pool",
                &["*"],
                vec![route("all", vec![], to(&[(C, 1)]))],
            )],
        )
    }
}

async fn backends(n: usize) -> Vec<SocketAddr> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(http_backend(&format!("e{i}")).await.0);
    }
    v
}

#[tokio::test]
async fn round_robin_honours_endpoint_weights() {
    let addrs = backends(3).await;
    let mut eps = endpoints(C, &addrs);
    eps.endpoints[2].weight = 2;
    let (_p, l) = start_proxy(
        node("c", "v1"),
        &pool_config("1", lb(r::load_balancer::Policy::RoundRobin, None), eps),
    );
    let client = h1_client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        *counts
            .entry(get(&client, l["out"], "pool", "/", &[]).await.backend())
            .or_default() += 1;
    }
    assert_eq!(counts["e0"], 100);
    assert_eq!(counts["e1"], 100);
    assert_eq!(counts["e2"], 200);
}

#[tokio::test]
async fn random_and_least_request_reach_every_endpoint() {
    for policy in [
        r::load_balancer::Policy::Random,
        r::load_balancer::Policy::LeastRequest,
    ] {
        let addrs = backends(3).await;
        let (_p, l) = start_proxy(
            node("c", "v1"),
            &pool_config("1", lb(policy, None), endpoints(C, &addrs)),
        );
        let client = h1_client();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..300 {
            *counts
                .entry(get(&client, l["out"], "pool", "/", &[]).await.backend())
                .or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{policy:?}: {counts:?}");
        assert!(counts.values().all(|c| *c > 40), "{policy:?}: {counts:?}");
    }
}

#[tokio::test]
async fn consistent_hash_same_key_same_endpoint_and_removal_remaps_about_one_nth() {
    let addrs = backends(10).await;
    let key = Some(r::consistent_hash::Key::HttpHeaderName("x-user".into()));
    let c = lb(r::load_balancer::Policy::Maglev, key);
    let (p, l) = start_proxy(
        node("c", "v1"),
        &pool_config("1", c.clone(), endpoints(C, &addrs)),
    );
    let client = h1_client();
    let keys = 400;
    let mut before = Vec::new();
    for k in 0..keys {
        let user = format!("user-{k}");
        let first = get(&client, l["out"], "pool", "/", &[("x-user", &user)])
            .await
            .backend();
        let again = get(&client, l["out"], "pool", "/", &[("x-user", &user)])
            .await
            .backend();
        assert_eq!(first, again, "same key, same endpoint");
        before.push(first);
    }
    // Remove e3 and swap the config in.
    let mut fewer = addrs.clone();
    fewer.remove(3);
    p.apply(&pool_config("2", c, endpoints(C, &fewer))).unwrap();
    let mut moved = 0;
    for (k, old) in before.iter().enumerate() {
        let now = get(
            &client,
            l["out"],
            "pool",
            "/",
            &[("x-user", &format!("user-{k}"))],
        )
        .await
        .backend();
        assert_ne!(now, "e3");
        if &now != old {
            moved += 1;
        } else {
            assert_ne!(old, "e3");
        }
    }
    let frac = moved as f64 / keys as f64;
    assert!(
        frac > 0.04 && frac < 0.2,
        "moved {frac} of keys (ideal 0.1)"
    );
}

#[tokio::test]
async fn cookie_hash_issues_cookie_and_sticks() {
    let addrs = backends(5).await;
    let key = Some(r::consistent_hash::Key::HttpCookie(
        r::consistent_hash::Cookie {
            name: "session".into(),
            path: "/".into(),
            ttl_ms: 60_000,
        },
    ));
    let (_p, l) = start_proxy(
        node("c", "v1"),
        &pool_config(
            "1",
            lb(r::load_balancer::Policy::RingHash, key),
            endpoints(C, &addrs),
        ),
    );
    let client = h1_client();
    let g = get(&client, l["out"], "pool", "/", &[]).await;
    let cookie = g.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("Max-Age=60"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let first = get(&client, l["out"], "pool", "/", &[("cookie", &pair)]).await;
    assert!(!first.headers.contains_key("set-cookie"));
    for _ in 0..10 {
        assert_eq!(
            get(&client, l["out"], "pool", "/", &[("cookie", &pair)])
                .await
                .backend(),
            first.backend()
        );
    }
    // source IP hashing: every request from 127.0.0.1 lands on one endpoint
    let (_p2, l2) = start_proxy(
        node("c", "v1"),
        &pool_config(
            "1",
            lb(
                r::load_balancer::Policy::Maglev,
                Some(r::consistent_hash::Key::UseSourceIp(true)),
            ),
            endpoints(C, &addrs),
        ),
    );
    let one = get(&client, l2["out"], "pool", "/", &[]).await.backend();
    for _ in 0..10 {
        assert_eq!(
            get(&client, l2["out"], "pool", "/", &[]).await.backend(),
            one
        );
    }
}

#[tokio::test]
async fn config_swap_under_load_drops_nothing() {
    let addrs = backends(4).await;
    let policy = || lb(r::load_balancer::Policy::RoundRobin, None);
    let (p, l) = start_proxy(
        node("c", "v1"),
        &pool_config("0", policy(), endpoints(C, &addrs[..2])),
    );
    let out = l["out"];
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let client = h1_client();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let g = get(&client, out, "pool", "/", &[]).await;
                if g.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // A slow request in flight across a swap that removes its endpoints.
    let slow = tokio::spawn(async move {
        get(&h1_client(), out, "pool", "/slow", &[("x-delay-ms", "300")]).await
    });
    for v in 1..=30 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        // alternate between two disjoint endpoint sets
        let set = if v % 2 == 0 { &addrs[..2] } else { &addrs[2..] };
        p.apply(&pool_config(&v.to_string(), policy(), endpoints(C, set)))
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "load actually ran: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(p.shared().state.load().version, "30");
}

#[tokio::test]
async fn bad_config_is_rejected_and_previous_kept() {
    let addrs = backends(1).await;
    let (p, l) = start_proxy(
        node("c", "v1"),
        &pool_config(
            "good",
            lb(r::load_balancer::Policy::RoundRobin, None),
            endpoints(C, &addrs),
        ),
    );
    let mut bad = pool_config(
        "bad",
        lb(r::load_balancer::Policy::RoundRobin, None),
        endpoints(C, &addrs),
    );
    bad.route_configs[0].virtual_hosts[0].routes[0].matches = vec![uri(regex("(unclosed"))];
    let err = p.apply(&bad).unwrap_err().to_string();
    assert!(
        err.contains("routeConfigs[0](80).virtualHosts[0](pool).routes[0].matches[0].uri"),
        "{err}"
    );
    assert!(err.contains("(unclosed"), "{err}");
    assert_eq!(p.shared().state.load().version, "good");
    assert_eq!(
        get(&h1_client(), l["out"], "pool", "/", &[]).await.status,
        200
    );
    // via the discovery client's trait, the reason is the NACK text
    let sink: &dyn halyard_proxy::xds::ConfigSink = &*p;
    assert!(sink.apply(&bad).unwrap_err().contains("invalid regex"));
}

async fn admin_get(addr: SocketAddr, path: &str) -> Got {
    get(&h1_client(), addr, "localhost", path, &[]).await
}

#[tokio::test]
async fn admin_endpoints() {
    let addrs = backends(2).await;
    let (p, l) = start_proxy(
        node("c", "v1"),
        &pool_config(
            "v7",
            lb(r::load_balancer::Policy::RoundRobin, None),
            endpoints(C, &addrs),
        ),
    );
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = admin.local_addr().unwrap();
    tokio::spawn(halyard_proxy::admin::serve_listener(
        p.clone(),
        admin,
        halyard_proxy::admin::Role::Admin,
    ));
    assert_eq!(
        get(&h1_client(), l["out"], "pool", "/", &[]).await.status,
        200
    );

    let dump = admin_get(a, "/config_dump").await.json();
    assert_eq!(dump["version"], "v7");
    assert_eq!(dump["clusters"][0]["name"], C);
    let clusters = admin_get(a, "/clusters?format=json").await.json();
    let hosts = &clusters["cluster_statuses"][0]["host_statuses"];
    assert_eq!(hosts.as_array().unwrap().len(), 2);
    let total: u64 = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["stats"]["rq_total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1);
    assert!(
        admin_get(a, "/clusters")
            .await
            .text()
            .contains(&format!("{C}::{}::health_flags::healthy", addrs[0]))
    );
    assert!(
        admin_get(a, "/listeners")
            .await
            .text()
            .starts_with("out::127.0.0.1:")
    );
    assert_eq!(admin_get(a, "/ready").await.status, 200);
    assert_eq!(admin_get(a, "/healthz/ready").await.status, 200);
    assert!(
        admin_get(a, "/stats/prometheus")
            .await
            .text()
            .contains("istio_requests_total{")
    );
    assert!(
        admin_get(a, "/stats")
            .await
            .text()
            .contains(&format!("cluster.{C}.upstream_rq_total: 1"))
    );
    let info = admin_get(a, "/server_info").await.json();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["config_version"], "v7");
    assert_eq!(
        admin_get(a, "/quitquitquit").await.status,
        405,
        "GET is refused"
    );
    assert_eq!(admin_get(a, "/nope").await.status, 404);
    // drain: listeners stop accepting, readiness turns off
    let req = http::Request::post(format!("http://{a}/drain_listeners"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send(&h1_client(), req).await.status, 200);
    assert_eq!(admin_get(a, "/healthz/ready").await.status, 503);
    assert!(tokio::net::TcpStream::connect(l["out"]).await.is_err());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn static_mode_binary_serves_config_file() {
    let addrs = backends(1).await;
    let mut res = pool_config(
        "file-1",
        lb(r::load_balancer::Policy::RoundRobin, None),
        endpoints(C, &addrs),
    );
    let port = free_port();
    res.listeners[0].port = u32::from(port);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, serde_yaml::to_string(&res).unwrap()).unwrap();
    // the file format round-trips
    assert_eq!(halyard_proxy::cli::load_config(&path).unwrap(), res);
    let (admin, status, prom) = (free_port(), free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_halyard-proxy"))
        .arg("--config")
        .arg(&path)
        .arg("--concurrency")
        .arg("1")
        .arg("--admin-address")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--status-address")
        .arg(format!("127.0.0.1:{status}"))
        .arg("--prometheus-address")
        .arg(format!("127.0.0.1:{prom}"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status_addr: SocketAddr = format!("127.0.0.1:{status}").parse().unwrap();
    let client = h1_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = http::Request::get(format!("http://{status_addr}/healthz/ready"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), client.request(req)).await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "proxy not ready within 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(&client, out, "pool", "/", &[]).await.backend(), "e0");
    let prom_text = get(
        &client,
        format!("127.0.0.1:{prom}").parse().unwrap(),
        "x",
        "/stats/prometheus",
        &[],
    )
    .await
    .text();
    assert!(prom_text.contains("istio_requests_total{"));
    let req = http::Request::post(format!("http://127.0.0.1:{admin}/quitquitquit"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send(&client, req).await.status, 200);
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits after quitquitquit")
        .unwrap();
    assert!(exit.success());
}
