//! Fault test under load: three endpoints, one killed mid-run, retries and outlier detection on.
//! Over 10,000 requests the client must see at most 0.1% failures, and the dead endpoint must be
//! ejected within one outlier-detection interval.

#![allow(clippy::unwrap_used)]

mod common;
mod resilience;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use halyard_config::resources as r;
use resilience::*;

const TOTAL: u64 = 10_000;
const WORKERS: u64 = 8;
const INTERVAL_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_killed_under_load() {
    let (a, _pa) = backend("a").await;
    let (b, pb) = backend("b").await;
    let (c, _pc) = backend("c").await;
    let routes = vec![svc_route("r", vec![], |x| {
        x.retry = Some(retry(2, "connect-failure,refused-stream,reset,5xx", 0));
    })];
    let res = resources(routes, &[a, b, c], |cl| {
        cl.outlier_detection = Some(r::OutlierDetection {
            consecutive_5xx_errors: Some(5),
            interval_ms: INTERVAL_MS,
            base_ejection_time_ms: 30_000,
            max_ejection_percent: Some(100),
            ..Default::default()
        });
    });
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    let px = addrs["outbound"];

    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let run = async {
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (done, failed) = (done.clone(), failed.clone());
            workers.push(tokio::spawn(async move {
                let client = h1_client();
                for _ in 0..TOTAL / WORKERS {
                    let req = http::Request::get(format!("http://{px}/"))
                        .header("host", "svc")
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap();
                    let ok =
                        match tokio::time::timeout(Duration::from_secs(10), client.request(req))
                            .await
                        {
                            Ok(Ok(resp)) => {
                                let status = resp.status();
                                let body = http_body_util::BodyExt::collect(resp.into_body()).await;
                                status == 200 && body.is_ok()
                            }
                            _ => false,
                        };
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Kill `b` a third of the way in, then watch for its ejection.
        while done.load(Ordering::Relaxed) < TOTAL / 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        pb.kill();
        let killed = Instant::now();
        let snap = p.shared().state.load_full();
        let cl = snap.cluster(SVC).unwrap().clone();
        let b_index = cl
            .endpoints
            .iter()
            .position(|e| e.upstream.addr == b)
            .unwrap();
        let mut ejected_after = None;
        while killed.elapsed() < Duration::from_secs(5) {
            if cl.resilience.ejected_now(b_index) {
                ejected_after = Some(killed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for w in workers {
            w.await.unwrap();
        }
        ejected_after
    };
    let started = Instant::now();
    let ejected_after = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("load run bounded");
    let took = started.elapsed();
    let failed = failed.load(Ordering::Relaxed);
    let ejected_after = ejected_after.expect("dead endpoint ejected");
    println!(
        "resilience load: {TOTAL} requests, {WORKERS} concurrent, {failed} failed ({:.3}%), \
         dead endpoint ejected {:?} after the kill (interval {INTERVAL_MS} ms), run {took:?}",
        failed as f64 * 100.0 / TOTAL as f64,
        ejected_after
    );
    assert!(failed * 1000 <= TOTAL, "{failed} failures over {TOTAL}");
    assert!(
        ejected_after < Duration::from_millis(INTERVAL_MS),
        "ejected after {ejected_after:?}"
    );
    let clusters = admin_text(&p, "/clusters").await;
    assert!(
        clusters.contains(&format!("{SVC}::{b}::health_flags::/failed_outlier_check")),
        "{clusters}"
    );
}
