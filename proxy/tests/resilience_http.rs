//! Resilience through a real proxy and loopback backends that misbehave on demand: fault
//! injection, timeouts, retries, circuit breaking, outlier detection and mirroring.

#![allow(clippy::unwrap_used)]

mod common;
mod resilience;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use halyard_config::resources as r;
use http::Request;
use http_body_util::Full;
use resilience::*;

fn fault(delay_ms: u64, delay_pct: f64, abort: Option<(u32, f64)>) -> r::FaultInjection {
    r::FaultInjection {
        delay: (delay_ms > 0).then_some(r::fault_injection::Delay {
            fixed_delay_ms: delay_ms,
            percentage: delay_pct,
        }),
        abort: abort.map(|(s, p)| r::fault_injection::Abort {
            error: Some(r::fault_injection::abort::Error::HttpStatus(s)),
            percentage: p,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_and_delay_apply_only_to_the_matching_route() {
    let (a, plan) = backend("a").await;
    // Bookinfo's ratings-test-abort / -delay: only `end-user: jason` is hit.
    let routes = vec![
        svc_route(
            "abort-jason",
            vec![header_match("end-user", "jason")],
            |x| {
                x.fault = Some(fault(0, 0.0, Some((500, 100.0))));
            },
        ),
        svc_route("delay-bob", vec![header_match("end-user", "bob")], |x| {
            x.fault = Some(fault(300, 100.0, None));
        }),
        svc_route("half", vec![header_match("end-user", "half")], |x| {
            x.fault = Some(fault(0, 0.0, Some((503, 50.0))));
        }),
        svc_route("default", vec![], |_| {}),
    ];
    let (p, addrs) = start_proxy(node("client", "v1"), &resources(routes, &[a], |_| {}));
    let c = h1_client();
    let px = addrs["outbound"];

    let got = get(&c, px, "svc", "/", &[("end-user", "jason")]).await;
    assert_eq!(got.status, 500);
    assert_eq!(got.text(), "fault filter abort");
    assert_eq!(plan.hits(), 0, "aborted requests never reach the backend");
    assert_eq!(get(&c, px, "svc", "/", &[]).await.status, 200);
    assert_eq!(
        get(&c, px, "svc", "/", &[("end-user", "other")])
            .await
            .status,
        200
    );

    let t = Instant::now();
    let got = get(&c, px, "svc", "/", &[("end-user", "bob")]).await;
    assert_eq!(got.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    let mut aborted = 0;
    for _ in 0..200 {
        if get(&c, px, "svc", "/", &[("end-user", "half")])
            .await
            .status
            == 503
        {
            aborted += 1;
        }
    }
    assert!(
        (50..=150).contains(&aborted),
        "50% abort gave {aborted}/200"
    );

    assert_eq!(flagged(&p, 500, "FI"), 1);
    assert_eq!(flagged(&p, 200, "DI"), 1);
    assert_eq!(flagged(&p, 503, "FI"), aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_gives_504_ut_and_headers_override_it() {
    let (a, plan) = backend("a").await;
    plan.delay_ms
        .store(3_000, std::sync::atomic::Ordering::SeqCst);
    let routes = vec![svc_route("slow", vec![], |x| x.timeout_ms = 300)];
    let (p, addrs) = start_proxy(node("client", "v1"), &resources(routes, &[a], |_| {}));
    let c = h1_client();
    let px = addrs["outbound"];

    let t = Instant::now();
    let got = get(&c, px, "svc", "/", &[]).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.text(), "upstream request timeout");
    assert!(
        t.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let got = get(
        &c,
        px,
        "svc",
        "/",
        &[("x-envoy-upstream-rq-timeout-ms", "50")],
    )
    .await;
    assert_eq!(got.status, 504);
    assert!(
        t.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t.elapsed()
    );

    // A longer override lets the slow backend answer.
    plan.delay_ms
        .store(500, std::sync::atomic::Ordering::SeqCst);
    let got = get(
        &c,
        px,
        "svc",
        "/",
        &[("x-envoy-upstream-rq-timeout-ms", "5000")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(flagged(&p, 504, "UT"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_timeout_bounds_retries_with_per_try_timeouts() {
    let (a, plan) = backend("a").await;
    plan.fail(u64::MAX, Fail::Hang);
    // timeout 2 s, 3 retries of 500 ms each: never more than about 2 s in total.
    let routes = vec![svc_route("r", vec![], |x| {
        x.timeout_ms = 2_000;
        x.retry = Some(retry(3, "5xx", 500));
    })];
    let (p, addrs) = start_proxy(node("client", "v1"), &resources(routes, &[a], |_| {}));
    let t = Instant::now();
    let got = get(&h1_client(), addrs["outbound"], "svc", "/", &[]).await;
    let took = t.elapsed();
    assert_eq!(got.status, 504);
    assert!(took < Duration::from_millis(2_500), "took {took:?}");
    assert!(took >= Duration::from_millis(1_500), "took {took:?}");
    assert_eq!(plan.hits(), 4, "first attempt + 3 retries of 500 ms");
    assert!(flagged(&p, 504, "UT") == 1);

    // The per-try timeout alone, without retry conditions that cover it: one attempt, 504.
    let routes = vec![svc_route("r", vec![], |x| {
        x.retry = Some(retry(3, "connect-failure", 200));
    })];
    let (_p2, addrs) = start_proxy(node("client", "v1"), &resources(routes, &[a], |_| {}));
    let before = plan.hits();
    let t = Instant::now();
    let got = get(&h1_client(), addrs["outbound"], "svc", "/", &[]).await;
    assert_eq!(got.status, 504);
    assert!(t.elapsed() < Duration::from_millis(1_500));
    assert_eq!(plan.hits() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_another_endpoint() {
    let (bad, bad_plan) = backend("bad").await;
    let (good, good_plan) = backend("good").await;
    bad_plan.fail(u64::MAX, Fail::Status(503));
    let routes = vec![svc_route("r", vec![], |x| {
        x.retry = Some(retry(1, "5xx", 0))
    })];
    let (p, addrs) = start_proxy(
        node("client", "v1"),
        &resources(routes, &[bad, good], |_| {}),
    );
    let c = h1_client();
    for _ in 0..40 {
        let got = get(&c, addrs["outbound"], "svc", "/", &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.headers["x-backend"], "good");
    }
    // Round robin sends half the first attempts to the bad endpoint; each retry went elsewhere.
    assert!(bad_plan.hits() >= 10, "{}", bad_plan.hits());
    assert_eq!(good_plan.hits(), 40);
    let clusters = admin_text(&p, "/clusters").await;
    let retries: u64 = clusters
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{SVC}::upstream_rq_retry::")))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retries, bad_plan.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_default_policy_and_max_retries_header() {
    let (a, plan) = backend("a").await;
    let routes = vec![svc_route("r", vec![], |x| {
        x.retry = Some(istio_default_retry())
    })];
    let (p, addrs) = start_proxy(node("client", "v1"), &resources(routes, &[a], |_| {}));
    let c = h1_client();
    let px = addrs["outbound"];

    // Two 503s are retried away.
    plan.fail(2, Fail::Status(503));
    assert_eq!(get(&c, px, "svc", "/", &[]).await.status, 200);
    assert_eq!(plan.hits(), 3);
    // 500 is not retried by default.
    plan.fail(1, Fail::Status(500));
    assert_eq!(get(&c, px, "svc", "/", &[]).await.status, 500);
    assert_eq!(plan.hits(), 4);
    // Three 503s exhaust two retries: the last 503 comes back, flagged URX.
    plan.fail(3, Fail::Status(503));
    assert_eq!(get(&c, px, "svc", "/", &[]).await.status, 503);
    assert_eq!(plan.hits(), 7);
    assert_eq!(flagged(&p, 503, "URX"), 1);
    // ... unless the request asks for more.
    plan.fail(3, Fail::Status(503));
    let got = get(&c, px, "svc", "/", &[("x-envoy-max-retries", "3")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(plan.hits(), 11);
    // ... or for none.
    plan.fail(1, Fail::Status(503));
    let got = get(&c, px, "svc", "/", &[("x-envoy-max-retries", "0")]).await;
    assert_eq!(got.status, 503);
    plan.fail(0, Fail::Status(503));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_resets_and_mid_body_closes() {
    let dead = dead_addr().await;
    let (a, plan) = backend("a").await;
    let routes = vec![
        svc_route("reset", vec![header_match("x-on", "reset")], |x| {
            x.retry = Some(retry(2, "reset", 0))
        }),
        svc_route("default", vec![], |x| x.retry = Some(istio_default_retry())),
    ];
    let (p, addrs) = start_proxy(node("client", "v1"), &resources(routes, &[dead, a], |_| {}));
    let c = h1_client();
    let px = addrs["outbound"];
    // The dead endpoint refuses connections: retried (default policy) on the live one.
    for _ in 0..10 {
        assert_eq!(get(&c, px, "svc", "/", &[]).await.status, 200);
    }
    // A reset before headers is not retried by Istio's default policy ...
    plan.fail(u64::MAX, Fail::Reset);
    let got = get(&c, px, "svc", "/", &[]).await;
    assert_eq!(got.status, 503);
    assert!(got.text().contains("reset reason"), "{}", got.text());
    // ... but is with retryOn `reset`, until the backend recovers.
    plan.fail(1, Fail::Reset);
    let mut ok = 0;
    for _ in 0..4 {
        plan.fail(1, Fail::Reset);
        if get(&c, px, "svc", "/", &[("x-on", "reset")]).await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 4);
    assert!(flagged(&p, 503, "UC") >= 1);
    // Closing mid-body after the headers: the client sees the error, nothing is retried.
    plan.fail(1, Fail::CloseMidBody);
    let before = plan.hits();
    let mut b = Request::get(format!("http://{px}/")).header("host", "svc");
    b = b.header("x-on", "reset");
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        c.request(b.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .unwrap();
    if let Ok(resp) = res {
        let headers = resp.headers().clone();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
        assert!(
            body.is_err(),
            "a truncated body must not look complete: {headers:?} {:?}",
            body.map(|b| b.to_bytes())
        );
    }
    // The dead endpoint may have been picked first (connect failure), then the live one.
    assert_eq!(plan.hits() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_replayed_only_within_the_bound() {
    let (a, plan) = backend("a").await;
    let routes = vec![svc_route("r", vec![], |x| {
        x.retry = Some(retry(2, "5xx", 0))
    })];
    let (_p, addrs) = start_proxy(node("client", "v1"), &resources(routes, &[a], |_| {}));
    let c = h1_client();
    let post = |n: usize| {
        Request::post(format!("http://{}/", addrs["outbound"]))
            .header("host", "svc")
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .unwrap()
    };
    plan.fail(1, Fail::Status(503));
    let got = send(&c, post(10_000)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["x-request-bytes"], "10000");
    assert_eq!(*plan.body_lens.lock().unwrap(), vec![10_000, 10_000]);
    // Over the replay bound (64 KiB): streamed once, not retried.
    plan.fail(1, Fail::Status(503));
    let got = send(&c, post(100_000)).await;
    assert_eq!(got.status, 503);
    assert_eq!(plan.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaking_task_gives_immediate_503_uo() {
    // Istio's circuit-breaking task: maxConnections 1, http1MaxPendingRequests 1,
    // maxRequestsPerConnection 1, in front of a slow backend, 20 concurrent clients.
    let (a, plan) = backend("slow").await;
    plan.delay_ms
        .store(100, std::sync::atomic::Ordering::SeqCst);
    let routes = vec![svc_route("r", vec![], |x| {
        x.retry = Some(istio_default_retry())
    })];
    let res = resources(routes, &[a], |c| {
        c.connection_pool = Some(r::ConnectionPool {
            tcp: Some(r::connection_pool::Tcp {
                max_connections: 1,
                ..Default::default()
            }),
            http: Some(r::connection_pool::Http {
                http1_max_pending_requests: 1,
                max_requests_per_connection: 1,
                ..Default::default()
            }),
        });
    });
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    let px = addrs["outbound"];
    let mut tasks = Vec::new();
    for _ in 0..20 {
        tasks.push(tokio::spawn(async move {
            let c = h1_client();
            let mut out = Vec::new();
            for _ in 0..3 {
                let t = Instant::now();
                let got = get(&c, px, "svc", "/", &[]).await;
                let marked = got
                    .headers
                    .get("x-envoy-overloaded")
                    .is_some_and(|v| v == "true");
                out.push((got.status.as_u16(), t.elapsed(), marked));
            }
            out
        }));
    }
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        for (status, took, marked) in t.await.unwrap() {
            match status {
                200 => {
                    ok += 1;
                    assert!(!marked, "a served request is not marked overloaded");
                }
                503 => {
                    overflow += 1;
                    assert!(marked, "an overflow 503 carries x-envoy-overloaded: true");
                    assert!(
                        took < Duration::from_millis(1_000),
                        "overflow answered at once: {took:?}"
                    );
                }
                s => panic!("unexpected status {s}"),
            }
        }
    }
    println!("circuit breaking: {ok} passed, {overflow} immediate 503 UO of 60");
    assert!(ok >= 2, "some requests pass: {ok}");
    assert!(
        overflow >= 20,
        "a measurable share overflows: {overflow}/60"
    );
    assert_eq!(flagged(&p, 503, "UO"), overflow);
    let clusters = admin_text(&p, "/clusters").await;
    assert!(
        clusters.contains(&format!("{SVC}::default_priority::max_connections::1")),
        "{clusters}"
    );
    let pending: u64 = clusters
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{SVC}::upstream_rq_pending_overflow::")))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pending, overflow);
    let prom = admin_text(&p, "/stats/prometheus").await;
    assert!(
        prom.contains(&format!(
            "envoy_cluster_upstream_rq_pending_overflow{{cluster_name=\"{SVC}\"}} {overflow}"
        )),
        "{prom}"
    );
    // maxRequestsPerConnection 1: every request had a connection of its own.
    let cx: u64 = clusters
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{SVC}::{a}::cx_total::")))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cx, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_and_returns_endpoints() {
    let (bad, bad_plan) = backend("bad").await;
    let (good, _good_plan) = backend("good").await;
    bad_plan.fail(u64::MAX, Fail::Status(500));
    let routes = vec![svc_route("r", vec![], |_| {})];
    let res = resources(routes, &[bad, good], |c| {
        c.outlier_detection = Some(r::OutlierDetection {
            consecutive_5xx_errors: Some(3),
            interval_ms: 100,
            base_ejection_time_ms: 600,
            max_ejection_percent: Some(100),
            ..Default::default()
        });
    });
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    let c = h1_client();
    let px = addrs["outbound"];
    let mut errors = 0;
    for _ in 0..20 {
        if get(&c, px, "svc", "/", &[]).await.status == 500 {
            errors += 1;
        }
    }
    assert_eq!(errors, 3, "ejected after 3 consecutive 5xx");
    assert_eq!(bad_plan.hits(), 3);
    let clusters = admin_text(&p, "/clusters").await;
    assert!(
        clusters.contains(&format!(
            "{SVC}::{bad}::health_flags::/failed_outlier_check"
        )),
        "{clusters}"
    );
    assert!(clusters.contains(&format!("{SVC}::outlier_detection.ejections_active::1")));
    let prom = admin_text(&p, "/stats/prometheus").await;
    assert!(prom.contains(&format!(
        "envoy_cluster_outlier_detection_ejections_total{{cluster_name=\"{SVC}\"}} 1"
    )));
    // Back after the ejection time (600 ms, checked every 100 ms interval).
    bad_plan.fail(0, Fail::Status(500));
    let t = Instant::now();
    while bad_plan.hits() == 3 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "endpoint never returned"
        );
        get(&c, px, "svc", "/", &[]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_fire_and_forget_with_shadow_authority() {
    let (a, _plan) = backend("a").await;
    let (m, mplan) = backend("mirror").await;
    let routes = vec![
        svc_route("hang", vec![header_match("x-m", "hang")], |x| {
            x.mirrors = vec![r::Mirror {
                cluster: MIRROR.into(),
                percentage: 100.0,
            }];
        }),
        svc_route("half", vec![header_match("x-m", "half")], |x| {
            x.mirrors = vec![r::Mirror {
                cluster: MIRROR.into(),
                percentage: 50.0,
            }];
        }),
        svc_route("plain", vec![], |x| {
            x.mirrors = vec![r::Mirror {
                cluster: MIRROR.into(),
                percentage: 100.0,
            }];
        }),
    ];
    let mut res = resources(routes, &[a], |_| {});
    res.clusters
        .push(cluster(MIRROR, "mirror.default.svc.cluster.local"));
    res.endpoints.push(endpoints(MIRROR, &[m]));
    let (_p, addrs) = start_proxy(node("client", "v1"), &res);
    let c = h1_client();
    let px = addrs["outbound"];
    let post = Request::post(format!("http://{px}/p"))
        .header("host", "svc:80")
        .body(Full::new(Bytes::from("payload")))
        .unwrap();
    let got = send(&c, post).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["x-backend"], "a");
    let t = Instant::now();
    while mplan.hits() == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "mirror never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mplan.hosts.lock().unwrap()[0], "svc-shadow:80");
    assert_eq!(mplan.body_lens.lock().unwrap()[0], 7);

    // A hanging or failing mirror never affects the response.
    mplan.fail(u64::MAX, Fail::Hang);
    let t = Instant::now();
    assert_eq!(
        get(&c, px, "svc", "/", &[("x-m", "hang")]).await.status,
        200
    );
    // (the mirror hangs for 60 s; 5 s leaves a loaded machine room and still tells them apart)
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    mplan.fail(u64::MAX, Fail::Status(500));
    assert_eq!(get(&c, px, "svc", "/", &[]).await.status, 200);
    mplan.kill();
    assert_eq!(get(&c, px, "svc", "/", &[]).await.status, 200);

    // mirrorPercentage 50: about half are copied.
    let (m2, m2plan) = backend("mirror2").await;
    let mut res2 = res.clone();
    res2.endpoints[1] = endpoints(MIRROR, &[m2]);
    res2.version = "2".into();
    _p.apply(&res2).unwrap();
    for _ in 0..200 {
        assert_eq!(
            get(&c, px, "svc", "/", &[("x-m", "half")]).await.status,
            200
        );
    }
    // Mirrors are sent from tasks of their own: wait (bounded) until the copies stop arriving
    // instead of a fixed sleep that a loaded machine can outlast.
    let t = Instant::now();
    let mut n = m2plan.hits();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = m2plan.hits();
        if (now == n && now >= 50) || t.elapsed() > Duration::from_secs(10) {
            n = now;
            break;
        }
        n = now;
    }
    assert!((50..=150).contains(&n), "50% mirrored gave {n}/200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_retries_limits_concurrent_retries() {
    let (a, plan) = backend("a").await;
    plan.fail(u64::MAX, Fail::Status(503));
    plan.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let routes = vec![svc_route("r", vec![], |x| {
        let mut p = retry(5, "5xx", 0);
        p.base_interval_ms = 200;
        p.max_interval_ms = 200;
        x.retry = Some(p);
    })];
    let res = resources(routes, &[a], |c| {
        c.connection_pool = Some(r::ConnectionPool {
            http: Some(r::connection_pool::Http {
                max_retries: 1,
                ..Default::default()
            }),
            ..Default::default()
        });
    });
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    let px = addrs["outbound"];
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            get(&h1_client(), px, "svc", "/", &[]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    let clusters = admin_text(&p, "/clusters").await;
    let overflow: u64 = clusters
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{SVC}::upstream_rq_retry_overflow::")))
        .unwrap()
        .parse()
        .unwrap();
    assert!(overflow >= 1, "{clusters}");
    // Without the limit 8 requests would have made 48 attempts.
    assert!(plan.hits() < 48, "{}", plan.hits());
    let _ = Arc::clone(&p);
}
