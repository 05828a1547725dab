//! Locality-aware load balancing through a real proxy: the nearest locality is preferred while
//! it is healthy (Istio's default, on clusters with outlier detection), failover to the next
//! level when its endpoints are ejected, `distribute` weights, `failover` and
//! `failoverPriority` rules, `retryRemoteLocalities` deciding where retries land, and the
//! proxy's locality as the control plane pushes it (inbound listeners) against `--locality`
//! and the proxy's labels.

#![allow(clippy::unwrap_used)]

mod common;
mod resilience;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use resilience::*;

const HERE: &str = "us-west/zone1/sub1";

fn node_at(locality: &str, labels: &[(&str, &str)]) -> halyard_proxy::NodeInfo {
    let mut n = node("client", "v1");
    n.locality = locality.into();
    for (k, v) in labels {
        n.labels.insert(k.to_string(), v.to_string());
    }
    n
}

/// Resources for `svc` over backends placed in localities, with `tweak` on the cluster.
fn placed(
    eps: &[(SocketAddr, &str)],
    routes: Vec<r::Route>,
    tweak: impl FnOnce(&mut r::Cluster),
) -> ProxyResources {
    let addrs: Vec<SocketAddr> = eps.iter().map(|(a, _)| *a).collect();
    let mut res = resources(routes, &addrs, tweak);
    for (e, (_, loc)) in res.endpoints[0].endpoints.iter_mut().zip(eps) {
        e.locality = loc.to_string();
    }
    res
}

fn outlier(consecutive: u32) -> r::OutlierDetection {
    r::OutlierDetection {
        consecutive_5xx_errors: Some(consecutive),
        interval_ms: 10_000,
        base_ejection_time_ms: 30_000,
        max_ejection_percent: Some(100),
        ..Default::default()
    }
}

fn locality(f: impl FnOnce(&mut r::LocalityLoadBalancing)) -> r::LoadBalancer {
    let mut l = r::LocalityLoadBalancing {
        enabled: true,
        ..Default::default()
    };
    f(&mut l);
    r::LoadBalancer {
        policy: r::load_balancer::Policy::RoundRobin as i32,
        locality: Some(l),
        ..Default::default()
    }
}

/// Send `n` requests; the number of 200s.
async fn run(px: SocketAddr, n: usize) -> usize {
    let c = h1_client();
    let mut ok = 0;
    for _ in 0..n {
        if get(&c, px, "svc", "/", &[]).await.status == 200 {
            ok += 1;
        }
    }
    ok
}

fn hits(plans: &[&Arc<Plan>]) -> Vec<u64> {
    plans.iter().map(|p| p.hits()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_locality_preferred_then_failover_when_ejected() {
    let (a, pa) = backend("same-subzone").await;
    let (b, pb) = backend("same-region").await;
    let (c, pc) = backend("other-region").await;
    let eps = [(a, HERE), (b, "us-west/zone2/x"), (c, "us-east/zone1/y")];
    let route = || vec![svc_route("r", vec![], |_| {})];
    let res = placed(&eps, route(), |c| c.outlier_detection = Some(outlier(1)));
    let (p, addrs) = start_proxy(node_at(HERE, &[]), &res);
    let px = addrs["outbound"];
    let clusters = admin_text(&p, "/clusters").await;
    for (addr, level) in [(a, 0), (b, 1), (c, 2)] {
        let line = format!("{SVC}::{addr}::priority::{level}");
        assert!(clusters.contains(&line), "{line} in {clusters}");
    }

    assert_eq!(run(px, 60).await, 60);
    assert_eq!(hits(&[&pa, &pb, &pc]), vec![60, 0, 0], "same subzone only");

    // The local endpoint fails once and is ejected: traffic moves to the same region.
    pa.fail(u64::MAX, Fail::Status(503));
    assert_eq!(run(px, 61).await, 60, "one 503 before the ejection");
    assert_eq!(hits(&[&pa, &pb, &pc]), vec![61, 60, 0], "failover to zone2");

    // Then the region's endpoint is killed (connection refused, a local-origin failure that
    // counts as a 5xx): the other region takes it.
    pb.kill();
    assert_eq!(run(px, 31).await, 30, "one 503 UF before the ejection");
    assert_eq!(
        hits(&[&pa, &pb, &pc]),
        vec![61, 60, 30],
        "failover to us-east"
    );

    // Without outlier detection Istio applies no locality failover: plain round robin.
    let (a2, pa2) = backend("a").await;
    let (b2, pb2) = backend("b").await;
    let (c2, pc2) = backend("c").await;
    let eps = [(a2, HERE), (b2, "us-west/zone2/x"), (c2, "us-east/zone1/y")];
    let (_p2, addrs2) = start_proxy(node_at(HERE, &[]), &placed(&eps, route(), |_| {}));
    assert_eq!(run(addrs2["outbound"], 60).await, 60);
    assert_eq!(hits(&[&pa2, &pb2, &pc2]), vec![20, 20, 20]);
}

/// The control plane sends the workload's locality on the proxy's inbound listeners.
fn with_pushed_locality(mut res: ProxyResources, locality: &str) -> ProxyResources {
    let mut inbound = listener(
        "inbound",
        r::listener::Direction::Inbound,
        vec![http_chain("http", "80")],
    );
    inbound.locality = locality.into();
    res.listeners.push(inbound);
    res
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_pushed_by_the_control_plane_drives_locality_lb() {
    let (a, pa) = backend("same-subzone").await;
    let (b, pb) = backend("same-region").await;
    let (c, pc) = backend("other-region").await;
    let eps = [(a, HERE), (b, "us-west/zone2/x"), (c, "us-east/zone1/y")];
    let res = with_pushed_locality(
        placed(&eps, vec![svc_route("r", vec![], |_| {})], |c| {
            c.outlier_detection = Some(outlier(1))
        }),
        HERE,
    );
    let levels = |text: &str| -> Vec<u32> {
        [a, b, c]
            .iter()
            .map(|addr| {
                (0..3)
                    .find(|l| text.contains(&format!("{SVC}::{addr}::priority::{l}")))
                    .unwrap_or_else(|| panic!("{addr} has no priority in {text}"))
            })
            .collect()
    };

    // No `--locality`, no locality labels: the pushed one places the proxy in us-west/zone1/sub1.
    let (p, addrs) = start_proxy(node_at("", &[]), &res);
    assert_eq!(levels(&admin_text(&p, "/clusters").await), vec![0, 1, 2]);
    assert_eq!(run(addrs["outbound"], 40).await, 40);
    assert_eq!(hits(&[&pa, &pb, &pc]), vec![40, 0, 0], "same subzone only");

    // The pushed locality wins over the proxy's own labels (the control plane read them too,
    // plus what it knows of the node)...
    let (p2, _) = start_proxy(node_at("", &[("istio-locality", "us-east.zone1.y")]), &res);
    assert_eq!(levels(&admin_text(&p2, "/clusters").await), vec![0, 1, 2]);
    // ...and `--locality` wins over the pushed one.
    let (p3, _) = start_proxy(node_at("us-east/zone1/y", &[]), &res);
    assert_eq!(levels(&admin_text(&p3, "/clusters").await), vec![1, 1, 0]);

    // A push without a locality leaves the proxy's labels in charge again.
    let mut unpushed = res.clone();
    unpushed.version = "2".into();
    for l in &mut unpushed.listeners {
        l.locality.clear();
    }
    p2.apply(&unpushed).unwrap();
    assert_eq!(levels(&admin_text(&p2, "/clusters").await), vec![1, 1, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_failover_priority_rules() {
    // No endpoint in the proxy's region: `failover: us-west -> eu-west` puts eu-west first.
    let (e, pe) = backend("us-east").await;
    let (f, pf) = backend("eu-west").await;
    let eps = [(e, "us-east/z/a"), (f, "eu-west/z/a")];
    let route = || vec![svc_route("r", vec![], |_| {})];
    let res = placed(&eps, route(), |c| {
        c.outlier_detection = Some(outlier(5));
        c.load_balancer = Some(locality(|l| {
            l.failover = vec![r::locality_load_balancing::Failover {
                from: "us-west".into(),
                to: "eu-west".into(),
            }];
        }));
    });
    let (_p, addrs) = start_proxy(node_at(HERE, &[]), &res);
    assert_eq!(run(addrs["outbound"], 40).await, 40);
    assert_eq!(hits(&[&pe, &pf]), vec![0, 40]);

    // `failoverPriority: [rack]`: the endpoint on the proxy's rack wins over the one in its
    // own subzone.
    let (x, px_plan) = backend("same-subzone-other-rack").await;
    let (y, py_plan) = backend("same-rack-other-region").await;
    let mut res = placed(&[(x, HERE), (y, "eu-west/z/a")], route(), |c| {
        c.outlier_detection = Some(outlier(5));
        c.load_balancer = Some(locality(|l| l.failover_priority = vec!["rack".into()]));
    });
    res.endpoints[0].endpoints[0]
        .labels
        .insert("rack".into(), "r2".into());
    res.endpoints[0].endpoints[1]
        .labels
        .insert("rack".into(), "r1".into());
    let (_p2, addrs2) = start_proxy(node_at(HERE, &[("rack", "r1")]), &res);
    assert_eq!(run(addrs2["outbound"], 40).await, 40);
    assert_eq!(hits(&[&px_plan, &py_plan]), vec![0, 40]);

    // Both: within the proxy's rack, the `failover` region (eu-west) comes before us-east.
    let (p, pp) = backend("rack1-us-east").await;
    let (q, pq) = backend("rack1-eu-west").await;
    let (l, pl) = backend("rack2-local").await;
    let eps = [(p, "us-east/z/a"), (q, "eu-west/z/a"), (l, HERE)];
    let mut res = placed(&eps, route(), |c| {
        c.outlier_detection = Some(outlier(5));
        c.load_balancer = Some(locality(|l| {
            l.failover_priority = vec!["rack".into()];
            l.failover = vec![r::locality_load_balancing::Failover {
                from: "us-west".into(),
                to: "eu-west".into(),
            }];
        }));
    });
    for (e, rack) in res.endpoints[0]
        .endpoints
        .iter_mut()
        .zip(["r1", "r1", "r2"])
    {
        e.labels.insert("rack".into(), rack.into());
    }
    let (_p3, addrs3) = start_proxy(node_at(HERE, &[("rack", "r1")]), &res);
    assert_eq!(run(addrs3["outbound"], 40).await, 40);
    assert_eq!(hits(&[&pp, &pq, &pl]), vec![0, 40, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribute_weights_traffic_across_localities() {
    let (a, pa) = backend("zone1").await;
    let (b, pb) = backend("zone2-a").await;
    let (b2, pb2) = backend("zone2-b").await;
    let (c, pc) = backend("east").await;
    let eps = [
        (a, "us-west/zone1/sub9"),
        (b, "us-west/zone2/a"),
        (b2, "us-west/zone2/b"),
        (c, "us-east/zone1/a"),
    ];
    let res = placed(&eps, vec![svc_route("r", vec![], |_| {})], |c| {
        c.load_balancer = Some(locality(|l| {
            l.distribute = vec![r::locality_load_balancing::Distribute {
                from: "us-west/zone1/*".into(),
                to: [
                    ("us-west/zone1/*".to_string(), 80),
                    ("us-west/zone2/*".to_string(), 20),
                ]
                .into_iter()
                .collect(),
            }];
        }));
    });
    let (_p, addrs) = start_proxy(node_at(HERE, &[]), &res);
    let n = 1000;
    assert_eq!(run(addrs["outbound"], n).await, n);
    let h = hits(&[&pa, &pb, &pb2, &pc]);
    println!("distribute 80/20 over 1000 requests: {h:?}");
    assert_eq!(pc.hits(), 0, "us-east is not in the distribution");
    assert!((740..=860).contains(&h[0]), "zone1 share {h:?}");
    assert!((140..=260).contains(&(h[1] + h[2])), "zone2 share {h:?}");
    assert!(
        h[1] > 40 && h[2] > 40,
        "zone2 weight shared by its localities {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_remote_localities_decides_where_retries_land() {
    for remote in [false, true] {
        let (a1, pa1) = backend("local-1").await;
        let (a2, pa2) = backend("local-2").await;
        let (b, pb) = backend("remote").await;
        pa1.fail(u64::MAX, Fail::Status(503));
        pa2.fail(u64::MAX, Fail::Status(503));
        let eps = [(a1, HERE), (a2, HERE), (b, "us-east/z/a")];
        let routes = vec![svc_route("r", vec![], |x| {
            let mut p = retry(2, "5xx", 0);
            p.retry_remote_localities = remote;
            x.retry = Some(p);
        })];
        // Outlier detection on (locality applies) but never ejecting within the test.
        let res = placed(&eps, routes, |c| {
            c.outlier_detection = Some(outlier(10_000))
        });
        let (_p, addrs) = start_proxy(node_at(HERE, &[]), &res);
        let ok = run(addrs["outbound"], 20).await;
        let h = hits(&[&pa1, &pa2, &pb]);
        println!("retryRemoteLocalities={remote}: {ok}/20 succeeded, hits {h:?}");
        if remote {
            assert_eq!(ok, 20, "the retry leaves the failing locality");
            assert_eq!(pb.hits(), 20);
            assert_eq!(h[0] + h[1], 20, "first attempts stay local");
        } else {
            assert_eq!(ok, 0, "retries stay in the local locality");
            assert_eq!(pb.hits(), 0);
            assert_eq!(h[0] + h[1], 60, "three attempts per request, all local");
        }
    }
}
