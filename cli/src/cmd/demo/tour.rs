//! The scripted tour: each step rewrites the mesh's routing YAML, waits until every proxy runs it, sends
//! traffic, and checks what came back.

use std::time::Duration;

use super::app::Role;
use super::load::Batch;
use super::mesh;
use super::observe;
use super::steps::*;
use super::{Mesh, Printer};

/// Run the whole tour; one result per step.
/// Run the tour; with `routing_only`, only the routing steps (1-5), which need no resilience feature of the
/// proxy.
pub async fn run(
    mesh: &mut Mesh,
    out: &Printer,
    routing_only: bool,
) -> anyhow::Result<Vec<StepResult>> {
    let t = mesh.topology;
    let mut results = Vec::new();
    let total = if routing_only { 5 } else { 10 };
    let mut n = 0;
    let mut step = |title: &str| {
        n += 1;
        out.heading(&format!("Step {n}/{total}: {title}"));
        title.to_string()
    };

    // 1. No VirtualService: the default route spreads reviews over every version.
    let title = step("no routing rules: reviews answers from v1, v2 and v3");
    out.say("Only DestinationRules (subsets v1/v2/v3) are applied; the implicit default route balances over all endpoints.");
    // One request at a time: the default balancer is Istio's LEAST_REQUEST, which rightly sends more
    // to the fastest version (v1 calls no ratings) when requests overlap; sequential picks are
    // uniform, so an even split is what to check.
    let obs = mesh.driver.run(&productpage(&t, 300, 1, false)).await;
    results.push(StepResult {
        title,
        checks: vec![observe::split(&obs, &[("v1", 1), ("v2", 1), ("v3", 1)])],
    });
    out.checks(&results);

    // 2. virtual-service-all-v1.
    let title = step("all traffic to reviews v1");
    mesh.apply(all_v1(), out).await?;
    let obs = mesh.driver.run(&productpage(&t, 100, 10, false)).await;
    results.push(StepResult {
        title,
        checks: vec![observe::all_to(&obs, "v1", "")],
    });
    out.checks(&results);

    // 3 and 4. Canary.
    for (title, weights) in [
        ("canary: 90% v1, 10% v3", [("v1", 90), ("v3", 10)]),
        ("canary: 50% v1, 50% v3", [("v1", 50), ("v3", 50)]),
    ] {
        let title = step(title);
        mesh.apply(reviews_weighted(&weights), out).await?;
        let before = mesh.reviews_source_counts().await;
        let obs = mesh
            .driver
            .run(&productpage(&t, CANARY_REQUESTS, 16, false))
            .await;
        let after = mesh.reviews_source_counts().await;
        let mut checks = vec![observe::split(&obs, &weights)];
        // The proxies' own count of what they sent to each version must agree with what the tour received.
        checks.push(metrics_agree(&obs, before, after));
        results.push(StepResult { title, checks });
        out.checks(&results);
    }

    // 5. Header-based routing.
    let title = step("header routing: end-user jason to v2, everyone else to v1");
    mesh.apply(reviews_user_to_v2(None), out).await?;
    let jason = mesh.driver.run(&productpage(&t, 50, 10, true)).await;
    let others = mesh.driver.run(&productpage(&t, 50, 10, false)).await;
    results.push(StepResult {
        title,
        checks: vec![
            observe::all_to(&jason, "v2", " from jason"),
            observe::all_to(&others, "v1", " from others"),
        ],
    });
    out.checks(&results);

    if routing_only {
        return Ok(results);
    }

    // 6. Delay injection.
    let title = step("fault injection: a 2 s delay on ratings for jason");
    mesh.apply(ratings_delay_for_user(), out).await?;
    let jason = mesh.driver.run(&productpage(&t, 3, 3, true)).await;
    let others = mesh.driver.run(&productpage(&t, 20, 10, false)).await;
    results.push(StepResult {
        title,
        checks: vec![
            observe::all_to(&jason, "v2", " from jason"),
            observe::latency_within(
                &jason,
                INJECTED_DELAY,
                INJECTED_DELAY + Duration::from_secs(1),
                "jason's",
            ),
            observe::latency_within(&others, Duration::ZERO, Duration::from_secs(1), "others'"),
        ],
    });
    out.checks(&results);

    // 7. The caller's timeout.
    let title = step("timeout: productpage's call to reviews gives up after 0.5 s");
    mesh.apply(reviews_user_to_v2(Some(CALLER_TIMEOUT)), out)
        .await?;
    let jason = mesh.driver.run(&productpage(&t, 3, 3, true)).await;
    results.push(StepResult {
        title,
        checks: vec![
            reviews_failed_with(&jason, 504, " from jason"),
            observe::latency_within(
                &jason,
                CALLER_TIMEOUT - Duration::from_millis(50),
                CALLER_TIMEOUT + Duration::from_millis(700),
                "jason's",
            ),
        ],
    });
    out.checks(&results);

    // 8. Abort injection, retries off.
    let title = step("fault injection: ratings aborts 50% of requests with 503");
    let mut docs = ratings_abort_half();
    docs.extend(reviews_v2_with_retries(0));
    mesh.apply(docs, out).await?;
    let obs = mesh.driver.run(&productpage(&t, 200, 10, false)).await;
    results.push(StepResult {
        title,
        checks: vec![
            observe::failure_share(&obs, 502, 0.5),
            failures_come_from_ratings(&obs, 503),
        ],
    });
    out.checks(&results);

    // 9. Retries hide the aborts. Each attempt fails independently with p = 0.5, so with 10 retries a
    // request fails with p = 0.5^11 (about 1 in 2,000); more than 2 failures in 200 has probability ~1e-6.
    let title = step("retries: 10 attempts on 5xx hide ratings' aborts");
    mesh.apply(reviews_v2_with_retries(10), out).await?;
    let before = mesh.reviews_retries_at_productpage().await;
    let obs = mesh.driver.run(&productpage(&t, 200, 10, false)).await;
    let after = mesh.reviews_retries_at_productpage().await;
    results.push(StepResult {
        title,
        checks: vec![
            observe::mostly_ok(&obs, 2),
            retries_happened(obs.len(), before, after),
        ],
    });
    out.checks(&results);

    // 10. Circuit breaking.
    let title = step("circuit breaking: details allows 1 connection and 1 pending request");
    mesh.apply(details_circuit_breaker(), out).await?;
    let before = mesh.client_flag_counts().await;
    let obs = mesh
        .driver
        .run(&Batch {
            target: t.service_addr(Role::Details),
            host: mesh::service_host(Role::Details),
            // The slow backend of Istio's task: each request holds the connection for 200 ms.
            path: "/details/0?delay_ms=200".to_string(),
            headers: Vec::new(),
            count: 40,
            concurrency: 20,
        })
        .await;
    let after = mesh.client_flag_counts().await;
    results.push(StepResult {
        title,
        checks: circuit_breaker_checks(&obs, before, after),
    });
    out.checks(&results);

    // Totals.
    out.heading(
        "Metrics: istio_requests_total for reviews, by destination version (reporter=destination)",
    );
    match mesh.reviews_destination_totals().await {
        Ok(table) => out.say(&table),
        Err(e) => out.say(&format!("could not collect: {e}")),
    }
    Ok(results)
}
