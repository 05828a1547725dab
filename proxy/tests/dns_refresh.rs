//! DNS clusters re-resolved: a fake resolver drives the refresh logic (answer changes, failures,
//! empty answers, requests in flight across a swap, the periodic task), and one test resolves
//! `localhost` for real.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use halyard_proxy::dns::{self, Resolver, SystemResolver};
use http::StatusCode;

/// Answers from a table the test changes; counts lookups.
#[derive(Default)]
struct Fake {
    answers: Mutex<HashMap<String, Result<Vec<SocketAddr>, String>>>,
    lookups: AtomicUsize,
}

impl Fake {
    fn set(&self, host: &str, answer: Result<Vec<SocketAddr>, &str>) {
        self.answers
            .lock()
            .unwrap()
            .insert(host.to_string(), answer.map_err(str::to_string));
    }
}

impl Resolver for Fake {
    fn resolve(
        &self,
        host: &str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .answers
            .lock()
            .unwrap()
            .get(host)
            .cloned()
            .unwrap_or_else(|| Err("NXDOMAIN".into()));
        // The fake's addresses carry their own ports, so backends can share 127.0.0.1.
        Box::pin(async move { answer.map_err(io::Error::other) })
    }
}

const HOST: &str = "api.halyard-dns-test.invalid";
const CLUSTER: &str = "outbound|80||api.halyard-dns-test.invalid";

fn config(kind: r::cluster::DiscoveryType, host: &str, port: u16) -> ProxyResources {
    let mut c = cluster(CLUSTER, host);
    c.set_type(kind);
    ProxyResources {
        version: "1".into(),
        listeners: vec![listener(
            "out",
            r::listener::Direction::Outbound,
            vec![inline_http_chain("http", CLUSTER)],
        )],
        clusters: vec![c],
        endpoints: vec![r::ClusterEndpoints {
            cluster_name: CLUSTER.into(),
            endpoints: vec![r::Endpoint {
                address: host.into(),
                port: u32::from(port),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn backend_of(out: SocketAddr) -> (StatusCode, String) {
    let got = get(&h1_client(), out, HOST, "/", &[]).await;
    (got.status, got.backend())
}

#[tokio::test]
async fn refresh_swaps_endpoints_and_keeps_last_good() {
    let (a, a_hits) = http_backend("a").await;
    let (b, _) = http_backend("b").await;
    let fake = Fake::default();
    // The name does not resolve at compile time: the config is still accepted (no endpoints).
    let (proxy, addrs) = start_proxy(
        node("client", "v1"),
        &config(r::cluster::DiscoveryType::StrictDns, HOST, 80),
    );
    let out = addrs["out"];
    assert_eq!(backend_of(out).await.0, StatusCode::SERVICE_UNAVAILABLE);

    fake.set(HOST, Ok(vec![a]));
    let rep = dns::refresh(&proxy, &fake, Duration::from_secs(1)).await;
    assert_eq!(
        (rep.resolved, rep.updated.as_slice()),
        (1, [CLUSTER.to_string()].as_slice())
    );
    assert_eq!(backend_of(out).await, (StatusCode::OK, "a".into()));

    // Unchanged answer: nothing rebuilt.
    let rep = dns::refresh(&proxy, &fake, Duration::from_secs(1)).await;
    assert!(rep.updated.is_empty());

    // A slow request to `a` is in flight while the answer moves to `b`: it still completes.
    let slow =
        tokio::spawn(
            async move { get(&h1_client(), out, HOST, "/", &[("x-delay-ms", "400")]).await },
        );
    // Wait until `a` has the slow request (a fixed sleep could end before it was routed).
    let served = a_hits.0.load(Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a_hits.0.load(Ordering::Relaxed) == served {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never reached a"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fake.set(HOST, Ok(vec![b]));
    let rep = dns::refresh(&proxy, &fake, Duration::from_secs(1)).await;
    assert_eq!(rep.updated, vec![CLUSTER.to_string()]);
    for _ in 0..5 {
        assert_eq!(backend_of(out).await, (StatusCode::OK, "b".into()));
    }
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.backend()), (StatusCode::OK, "a".into()));

    // Failure and empty answers keep the last good addresses.
    fake.set(HOST, Err("SERVFAIL"));
    let rep = dns::refresh(&proxy, &fake, Duration::from_secs(1)).await;
    assert_eq!(rep.failed, vec![HOST.to_string()]);
    assert!(rep.updated.is_empty());
    assert_eq!(backend_of(out).await, (StatusCode::OK, "b".into()));
    fake.set(HOST, Ok(vec![]));
    let rep = dns::refresh(&proxy, &fake, Duration::from_secs(1)).await;
    assert_eq!(rep.failed, vec![HOST.to_string()]);
    assert_eq!(backend_of(out).await, (StatusCode::OK, "b".into()));

    // Both addresses: STRICT_DNS balances over all of them.
    fake.set(HOST, Ok(vec![a, b]));
    dns::refresh(&proxy, &fake, Duration::from_secs(1)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        seen.insert(backend_of(out).await.1);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);

    // A config push after that compiles from the last good answer, without resolving.
    proxy
        .apply(&config(r::cluster::DiscoveryType::StrictDns, HOST, 80))
        .unwrap();
    let snap = proxy.shared().state.load();
    let c = snap.cluster(CLUSTER).unwrap();
    assert_eq!(c.endpoint_addrs().count(), 2);
}

#[tokio::test]
async fn the_periodic_refresher_follows_the_interval() {
    let (a, _) = http_backend("a").await;
    let (b, _) = http_backend("b").await;
    let fake = Arc::new(Fake::default());
    fake.set(HOST, Ok(vec![a]));
    let (proxy, addrs) = start_proxy(
        node("client", "v1"),
        &config(r::cluster::DiscoveryType::LogicalDns, HOST, 80),
    );
    let out = addrs["out"];
    let task = dns::spawn_refresher(proxy.clone(), fake.clone(), Duration::from_millis(50));
    let mut waited = 0;
    while backend_of(out).await.1 != "a" {
        waited += 1;
        assert!(waited < 500, "refresher never applied the first answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = fake.lookups.load(Ordering::Relaxed);
    fake.set(HOST, Ok(vec![b, a]));
    // LOGICAL_DNS uses one address, the lowest, whatever order the answer comes in.
    let lowest = if a < b { "a" } else { "b" };
    // Wait for a lookup that began after the new answer to be applied: the refresher resolves,
    // applies, then sleeps, so a second lookup after `set` means the first one's answer is live.
    // (A fixed sleep could end before the refresher ran on a loaded machine.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.lookups.load(Ordering::Relaxed) < seen + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "refresher never looked the new answer up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        assert_eq!(backend_of(out).await.1, lowest);
    }
    fake.set(HOST, Ok(vec![b]));
    let mut waited = 0;
    while backend_of(out).await.1 != "b" {
        waited += 1;
        assert!(waited < 500, "refresher never moved to b");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fake.lookups.load(Ordering::Relaxed) >= 3);
    // It stops with the proxy.
    proxy.shared().quit.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("refresher ends on quit")
        .unwrap();
}

#[tokio::test]
async fn localhost_resolves_for_real() {
    let (backend, _) = http_backend("local").await;
    let got = SystemResolver
        .resolve("localhost", backend.port())
        .await
        .unwrap();
    assert!(got.contains(&backend), "{got:?}");

    // End to end: a LOGICAL_DNS cluster naming `localhost` (compile-time resolution), refreshed
    // with the system resolver.
    let res = config(
        r::cluster::DiscoveryType::LogicalDns,
        "localhost",
        backend.port(),
    );
    let (proxy, addrs) = start_proxy(node("client", "v1"), &res);
    let rep = dns::refresh(&proxy, &SystemResolver, Duration::from_secs(5)).await;
    assert_eq!(rep.resolved, 1, "{rep:?}");
    assert!(rep.failed.is_empty());
    let got = get(&h1_client(), addrs["out"], "localhost", "/", &[]).await;
    assert_eq!(
        (got.status, got.backend()),
        (StatusCode::OK, "local".into())
    );
}
