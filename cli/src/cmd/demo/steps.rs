//! The tour's steps (pure): the routing documents each step applies, the traffic it sends, and the checks
//! specific to a step (the generic ones are in `observe`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use http::HeaderValue;
use serde_json::{Value, json};

use super::app::Role;
use super::load::Batch;
use super::mesh::{self, Topology};
use super::observe::{self, Check, Observation};

/// The user whose requests the header-based steps single out, as in Bookinfo.
pub const USER: &str = "jason";
/// Delay injected for the user, and the caller's timeout that cuts it short.
pub const INJECTED_DELAY: Duration = Duration::from_secs(2);
pub const CALLER_TIMEOUT: Duration = Duration::from_millis(500);
/// Requests per canary measurement (the 1,000).
pub const CANARY_REQUESTS: usize = 1000;

/// The routing documents (DestinationRules and VirtualServices) in force, keyed by kind and name.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    docs: BTreeMap<(String, String), Value>,
}

impl Routing {
    /// Bookinfo's DestinationRules, no VirtualService: every version receives traffic.
    pub fn initial() -> Routing {
        let mut r = Routing::default();
        r.set(
            mesh::SERVICES
                .iter()
                .map(|s| mesh::destination_rule(*s, None))
                .collect(),
        );
        r
    }

    fn key(doc: &Value) -> (String, String) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (kind, name)
    }

    /// Replace (or add) each document by kind and name.
    pub fn set(&mut self, docs: Vec<Value>) {
        for d in docs {
            self.docs.insert(Self::key(&d), d);
        }
    }

    /// Every document: DestinationRules first, so that subsets exist before routes name them.
    pub fn documents(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .docs
            .iter()
            .filter(|((k, _), _)| k == "DestinationRule")
            .map(|(_, v)| v.clone())
            .collect();
        out.extend(
            self.docs
                .iter()
                .filter(|((k, _), _)| k != "DestinationRule")
                .map(|(_, v)| v.clone()),
        );
        out
    }
}

/// `route: [reviews vX]` for everyone.
fn route_all(service: Role, version: &str) -> Value {
    json!({"route": [mesh::destination(service, version, None)]})
}

/// Bookinfo's `virtual-service-all-v1.yaml`.
pub fn all_v1() -> Vec<Value> {
    mesh::SERVICES
        .iter()
        .map(|s| mesh::virtual_service(*s, vec![route_all(*s, "v1")]))
        .collect()
}

/// reviews split between versions by weight (`virtual-service-reviews-90-10.yaml`, `-50-v3.yaml`).
pub fn reviews_weighted(weights: &[(&str, u32)]) -> Vec<Value> {
    let route: Vec<Value> = weights
        .iter()
        .map(|(v, w)| mesh::destination(Role::Reviews, v, Some(*w)))
        .collect();
    vec![mesh::virtual_service(
        Role::Reviews,
        vec![json!({"route": route})],
    )]
}

/// `virtual-service-reviews-test-v2.yaml`: the user to v2, everyone else to v1; with an optional timeout on
/// the user's route.
pub fn reviews_user_to_v2(timeout: Option<Duration>) -> Vec<Value> {
    let mut user = json!({"match": mesh::match_user(USER), "route": [mesh::destination(Role::Reviews, "v2", None)]});
    if let (Some(t), Some(obj)) = (timeout, user.as_object_mut()) {
        obj.insert("timeout".into(), json!(format!("{}ms", t.as_millis())));
    }
    vec![mesh::virtual_service(
        Role::Reviews,
        vec![user, route_all(Role::Reviews, "v1")],
    )]
}

/// `virtual-service-ratings-test-delay.yaml` with a 2 s delay.
pub fn ratings_delay_for_user() -> Vec<Value> {
    let delayed = json!({
        "match": mesh::match_user(USER),
        "fault": {"delay": {"percentage": {"value": 100.0}, "fixedDelay": format!("{}s", INJECTED_DELAY.as_secs())}},
        "route": [mesh::destination(Role::Ratings, "v1", None)],
    });
    vec![mesh::virtual_service(
        Role::Ratings,
        vec![delayed, route_all(Role::Ratings, "v1")],
    )]
}

/// ratings aborts half of all requests with 503.
pub fn ratings_abort_half() -> Vec<Value> {
    let aborted = json!({
        "fault": {"abort": {"percentage": {"value": 50.0}, "httpStatus": 503}},
        "route": [mesh::destination(Role::Ratings, "v1", None)],
    });
    vec![mesh::virtual_service(Role::Ratings, vec![aborted])]
}

/// Everyone to reviews v2 (which calls ratings), with `attempts` retries on 5xx; `attempts: 0` says
/// explicitly that the route does not retry, so the raw fault shows.
pub fn reviews_v2_with_retries(attempts: u32) -> Vec<Value> {
    let mut route = route_all(Role::Reviews, "v2");
    if let Some(obj) = route.as_object_mut() {
        let retries = if attempts == 0 {
            json!({"attempts": 0})
        } else {
            json!({"attempts": attempts, "retryOn": "5xx", "perTryTimeout": "2s"})
        };
        obj.insert("retries".into(), retries);
    }
    vec![mesh::virtual_service(Role::Reviews, vec![route])]
}

/// Istio's circuit-breaking task: one connection, one pending request, one request per connection.
pub fn details_circuit_breaker() -> Vec<Value> {
    vec![mesh::destination_rule(
        Role::Details,
        Some(json!({
            "connectionPool": {
                "tcp": {"maxConnections": 1},
                "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1},
            },
        })),
    )]
}

/// The outcome of one step.
pub struct StepResult {
    pub title: String,
    pub checks: Vec<Check>,
}

impl StepResult {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
}

fn user_header() -> Vec<(String, HeaderValue)> {
    vec![("end-user".to_string(), HeaderValue::from_static(USER))]
}

/// A batch of productpage requests through the client's proxy (the service VIP).
pub fn productpage(t: &Topology, count: usize, concurrency: usize, user: bool) -> Batch {
    Batch {
        target: t.service_addr(Role::Productpage),
        host: mesh::service_host(Role::Productpage),
        path: "/productpage".to_string(),
        headers: if user { user_header() } else { Vec::new() },
        count,
        concurrency,
    }
}

/// Every request failed (502 from productpage) because its call to reviews got `status`.
pub fn reviews_failed_with(obs: &[Observation], status: u16, who: &str) -> Check {
    let matching = obs
        .iter()
        .filter(|o| {
            o.status == Some(502) && o.reviews_call().and_then(|c| c.status) == Some(status)
        })
        .count();
    Check::new(
        format!(
            "all {} requests{who} fail: productpage's call to reviews gets {status}",
            obs.len()
        ),
        observe::format_tally(&observe::tally(obs)),
        !obs.is_empty() && matching == obs.len(),
    )
}

/// Every failed request failed because ratings answered reviews with `status`.
pub fn failures_come_from_ratings(obs: &[Observation], status: u16) -> Check {
    let failed: Vec<&Observation> = obs.iter().filter(|o| !o.ok()).collect();
    let from_ratings = failed
        .iter()
        .filter(|o| o.ratings_call().and_then(|c| c.status) == Some(status))
        .count();
    Check::new(
        format!("every failure is ratings' {status} as seen by reviews v2"),
        format!("{from_ratings} of {} failures", failed.len()),
        from_ratings == failed.len(),
    )
}

/// The change of the productpage proxy's `istio_requests_total` (reporter=source, reviews) by version over a
/// batch equals the batch's own tally.
pub fn metrics_agree(
    obs: &[Observation],
    before: anyhow::Result<BTreeMap<String, f64>>,
    after: anyhow::Result<BTreeMap<String, f64>>,
) -> Check {
    let expected: BTreeMap<String, f64> = observe::tally(obs)
        .into_iter()
        .map(|(k, v)| (k, v as f64))
        .collect();
    let expected_text = format!(
        "productpage's proxy counted the same (istio_requests_total by destination_version): {}",
        fmt_counts(&expected)
    );
    match (before, after) {
        (Ok(b), Ok(a)) => {
            let d = observe::delta(&b, &a);
            let ok = d == expected;
            Check::new(expected_text, fmt_counts(&d), ok)
        }
        (Err(e), _) | (_, Err(e)) => {
            Check::new(expected_text, format!("metrics unavailable: {e:#}"), false)
        }
    }
}

/// The retries were real: productpage's proxy retried reviews (its clusters' `upstream_rq_retry`). An
/// attempt fails with p = 0.5, so 200 requests need about 200 retries; fewer than 50 has probability below 1e-9.
pub fn retries_happened(
    requests: usize,
    before: anyhow::Result<BTreeMap<String, f64>>,
    after: anyhow::Result<BTreeMap<String, f64>>,
) -> Check {
    let expected = "productpage's proxy retried reviews at least 50 times";
    match (before, after) {
        (Ok(b), Ok(a)) => {
            let d = observe::delta(&b, &a);
            let retries: f64 = d.values().sum();
            Check::new(
                expected,
                format!(
                    "{retries} retries for {requests} requests; by cluster: {}",
                    fmt_counts(&d)
                ),
                retries >= 50.0,
            )
        }
        (Err(e), _) | (_, Err(e)) => {
            Check::new(expected, format!("metrics unavailable: {e:#}"), false)
        }
    }
}

pub fn fmt_counts(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Some requests pass, the others are refused at once with 503 and flag `UO`, counted as such by the proxy.
pub fn circuit_breaker_checks(
    obs: &[Observation],
    before: anyhow::Result<BTreeMap<String, f64>>,
    after: anyhow::Result<BTreeMap<String, f64>>,
) -> Vec<Check> {
    let ok = obs.iter().filter(|o| o.ok()).count();
    let overflow: Vec<&Observation> = obs.iter().filter(|o| o.status == Some(503)).collect();
    let other = obs.len() - ok - overflow.len();
    let max_reject_ms = overflow
        .iter()
        .map(|o| o.elapsed.as_millis())
        .max()
        .unwrap_or(0);
    let flagged = overflow
        .iter()
        .filter(|o| o.flags.as_deref() == Some("UO"))
        .count();
    let mut checks = vec![Check::new(
        format!(
            "of {} requests (20 at a time) some pass and the rest get 503, nothing else",
            obs.len()
        ),
        format!(
            "{ok} passed, {} got 503 ({flagged} marked overloaded by the proxy), {other} other",
            overflow.len()
        ),
        ok > 0 && !overflow.is_empty() && other == 0,
    )];
    checks.push(Check::new(
        "the 503s come at once (under the backend's 200 ms)",
        format!("slowest 503 after {max_reject_ms} ms"),
        !overflow.is_empty() && max_reject_ms < 200,
    ));
    let expected = format!(
        "the client's proxy counted {} responses with response_flags=\"UO\"",
        overflow.len()
    );
    match (before, after) {
        (Ok(b), Ok(a)) => {
            let d = observe::delta(&b, &a);
            let uo = d.get("UO").copied().unwrap_or(0.0);
            checks.push(Check::new(
                expected,
                format!("UO: {uo} (all flags: {})", fmt_counts(&d)),
                uo == overflow.len() as f64 && uo > 0.0,
            ));
        }
        (Err(e), _) | (_, Err(e)) => checks.push(Check::new(
            expected,
            format!("metrics unavailable: {e:#}"),
            false,
        )),
    }
    checks
}

/// Write `text` to `path` atomically (a file the operator polls must never be seen half-written).
pub fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn routing_replaces_documents_by_kind_and_name_and_orders_rules_first() {
        let mut r = Routing::initial();
        assert_eq!(r.documents().len(), 4);
        r.set(all_v1());
        r.set(reviews_weighted(&[("v1", 90), ("v3", 10)]));
        let docs = r.documents();
        assert_eq!(docs.len(), 8);
        assert!(docs[..4].iter().all(|d| d["kind"] == "DestinationRule"));
        let reviews = docs
            .iter()
            .find(|d| d["kind"] == "VirtualService" && d["metadata"]["name"] == "reviews")
            .unwrap();
        assert_eq!(reviews["spec"]["http"][0]["route"][1]["weight"], 10);
        r.set(details_circuit_breaker());
        let details = r
            .documents()
            .into_iter()
            .find(|d| d["kind"] == "DestinationRule" && d["metadata"]["name"] == "details")
            .unwrap();
        assert_eq!(
            details["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"],
            1
        );
    }

    #[test]
    fn step_documents_follow_bookinfo() {
        let vs = &reviews_user_to_v2(Some(CALLER_TIMEOUT))[0];
        assert_eq!(
            vs["spec"]["http"][0]["match"][0]["headers"]["end-user"]["exact"],
            "jason"
        );
        assert_eq!(vs["spec"]["http"][0]["timeout"], "500ms");
        assert_eq!(
            vs["spec"]["http"][1]["route"][0]["destination"]["subset"],
            "v1"
        );
        let delay = &ratings_delay_for_user()[0];
        assert_eq!(
            delay["spec"]["http"][0]["fault"]["delay"]["fixedDelay"],
            "2s"
        );
        let abort = &ratings_abort_half()[0];
        assert_eq!(
            abort["spec"]["http"][0]["fault"]["abort"]["httpStatus"],
            503
        );
        assert_eq!(
            reviews_v2_with_retries(0)[0]["spec"]["http"][0]["retries"]["attempts"],
            0
        );
        assert_eq!(
            reviews_v2_with_retries(10)[0]["spec"]["http"][0]["retries"]["retryOn"],
            "5xx"
        );
    }

    #[test]
    fn every_step_document_is_valid_istio_config() {
        let mut docs = Routing::initial().documents();
        docs.extend(all_v1());
        docs.extend(reviews_weighted(&[("v1", 50), ("v3", 50)]));
        docs.extend(reviews_user_to_v2(Some(CALLER_TIMEOUT)));
        docs.extend(ratings_delay_for_user());
        docs.extend(ratings_abort_half());
        docs.extend(reviews_v2_with_retries(10));
        docs.extend(details_circuit_breaker());
        docs.extend(mesh::registry(&Topology { octet: 10 }));
        let yaml = mesh::to_yaml(&docs).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&yaml) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            let kind = value["kind"].as_str().unwrap().to_string();
            let spec = value["spec"].clone();
            let parsed = match kind.as_str() {
                "VirtualService" => {
                    serde_yaml::from_value::<halyard_crds::networking::VirtualServiceSpec>(spec)
                        .map(|_| ())
                }
                "DestinationRule" => {
                    serde_yaml::from_value::<halyard_crds::networking::DestinationRuleSpec>(spec)
                        .map(|_| ())
                }
                "ServiceEntry" => {
                    serde_yaml::from_value::<halyard_crds::networking::ServiceEntrySpec>(spec)
                        .map(|_| ())
                }
                "WorkloadEntry" => {
                    serde_yaml::from_value::<halyard_crds::networking::WorkloadEntrySpec>(spec)
                        .map(|_| ())
                }
                other => panic!("unexpected kind {other}"),
            };
            parsed.unwrap_or_else(|e| panic!("{kind} does not parse: {e}"));
        }
    }

    fn ok(version: &str) -> Observation {
        Observation {
            status: Some(200),
            elapsed: Duration::from_millis(200),
            reply: Some(crate::cmd::demo::app::Reply {
                service: "productpage".into(),
                version: "v1".into(),
                calls: vec![crate::cmd::demo::app::Call {
                    service: "reviews".into(),
                    status: Some(200),
                    elapsed_ms: 1,
                    reply: Some(Box::new(crate::cmd::demo::app::Reply {
                        service: "reviews".into(),
                        version: version.into(),
                        calls: vec![],
                        error: None,
                        data: Value::Null,
                    })),
                    error: None,
                }],
                error: None,
                data: Value::Null,
            }),
            flags: None,
            error: None,
        }
    }

    fn overflow(ms: u64) -> Observation {
        Observation {
            status: Some(503),
            elapsed: Duration::from_millis(ms),
            reply: None,
            flags: Some("UO".into()),
            error: None,
        }
    }

    #[test]
    fn metrics_must_match_the_tally_exactly() {
        let obs = vec![ok("v1"), ok("v1"), ok("v3")];
        let before = BTreeMap::from([("v1".to_string(), 10.0)]);
        let after = BTreeMap::from([("v1".to_string(), 12.0), ("v3".to_string(), 1.0)]);
        assert!(metrics_agree(&obs, Ok(before.clone()), Ok(after)).ok);
        let after = BTreeMap::from([("v1".to_string(), 13.0), ("v3".to_string(), 1.0)]);
        assert!(!metrics_agree(&obs, Ok(before.clone()), Ok(after)).ok);
        assert!(!metrics_agree(&obs, Ok(before), Err(anyhow::anyhow!("down"))).ok);
    }

    #[test]
    fn circuit_breaking_needs_fast_503s_counted_as_uo() {
        let obs = vec![ok("v1"), overflow(3), overflow(5)];
        let before = BTreeMap::new();
        let after = BTreeMap::from([("UO".to_string(), 2.0), ("-".to_string(), 1.0)]);
        assert!(
            circuit_breaker_checks(&obs, Ok(before.clone()), Ok(after.clone()))
                .iter()
                .all(|c| c.ok)
        );
        // Slow 503s are not overflow.
        let slow = vec![ok("v1"), overflow(250)];
        assert!(!circuit_breaker_checks(&slow, Ok(before.clone()), Ok(after.clone()))[1].ok);
        // No overflow at all fails.
        assert!(
            !circuit_breaker_checks(&[ok("v1")], Ok(before.clone()), Ok(BTreeMap::new()))[0].ok
        );
        // The proxy must have counted them.
        assert!(!circuit_breaker_checks(&obs, Ok(before), Ok(BTreeMap::new()))[2].ok);
    }

    #[test]
    fn retries_must_have_been_exercised() {
        let cluster = "outbound|9080|v2|reviews.default.svc.cluster.local".to_string();
        let before = BTreeMap::from([(cluster.clone(), 10.0)]);
        let after = BTreeMap::from([(cluster.clone(), 210.0)]);
        assert!(retries_happened(200, Ok(before.clone()), Ok(after)).ok);
        // A handful of retries is not retries hiding a 50% fault.
        let after = BTreeMap::from([(cluster, 20.0)]);
        assert!(!retries_happened(200, Ok(before), Ok(after)).ok);
    }

    #[test]
    fn user_failures_must_come_from_reviews() {
        let mut timed_out = ok("v2");
        timed_out.status = Some(502);
        if let Some(r) = timed_out.reply.as_mut() {
            r.calls[0].status = Some(504);
            r.calls[0].reply = None;
        }
        assert!(reviews_failed_with(&[timed_out.clone()], 504, "").ok);
        assert!(!reviews_failed_with(&[timed_out, ok("v2")], 504, "").ok);
        assert!(!reviews_failed_with(&[], 504, "").ok);
    }
}

/// The demo's mesh through the real translator: the listeners and routes each proxy will be given are the
/// ones the demo's addresses and the steps' expectations assume.
#[cfg(test)]
mod translation_tests {
    use halyard_config::ProxyResources;
    use halyard_config::discovery::{InterceptionMode, Node};
    use halyard_config::mesh::{MeshInput, MeshModel};
    use halyard_config::resources::route;

    use super::*;
    use crate::cmd::demo::mesh::{Topology, WORKLOADS};

    fn input(routing: &Routing) -> MeshInput {
        let t = Topology { octet: 10 };
        let mut docs = mesh::registry(&t);
        docs.extend(routing.documents());
        let istio = docs
            .iter()
            .map(|d| match halyard_crds::parse_object(d) {
                Ok(p) => p.object,
                Err(e) => panic!("{e}: {d}"),
            })
            .collect();
        MeshInput {
            istio,
            ..MeshInput::default()
        }
    }

    /// The node a proxy of the demo sends the control plane: built by the proxy from the command line the
    /// demo starts it with.
    fn node(w: Option<&mesh::Workload>) -> Node {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Hidden,
        }
        #[derive(clap::Subcommand)]
        enum Hidden {
            #[command(name = "demo-proxy")]
            Proxy(Box<crate::cmd::demo::ProxyArgs>),
        }
        let args = crate::cmd::demo::proxy_args(&Topology { octet: 10 }, w);
        let argv = std::iter::once("halyard".to_string()).chain(args);
        let Hidden::Proxy(p) = <Cli as clap::Parser>::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .command;
        let node = p
            .proxy
            .discovery_node()
            .expect("the demo's flags make a node");
        assert_eq!(node.interception_mode, InterceptionMode::None as i32);
        node
    }

    fn translate(routing: &Routing, w: Option<&mesh::Workload>) -> ProxyResources {
        let model = MeshModel::build(&input(routing));
        halyard_config::translate::translate(&model, &node(w)).expect("translate")
    }

    fn bound(res: &ProxyResources) -> Vec<String> {
        let mut v: Vec<String> = res
            .listeners
            .iter()
            .map(|l| format!("{}:{}", l.address, l.port))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn client_binds_the_vips_and_sidecars_bind_their_own_addresses() {
        let r = Routing::initial();
        assert_eq!(
            bound(&translate(&r, None)),
            [
                "127.10.0.1:9080",
                "127.10.0.2:9080",
                "127.10.0.3:9080",
                "127.10.0.4:9080"
            ]
        );
        let reviews_v2 = WORKLOADS[3];
        let res = translate(&r, Some(&reviews_v2));
        let b = bound(&res);
        assert!(b.contains(&"127.10.3.4:9080".to_string()), "{b:?}");
        assert!(b.contains(&"127.10.1.4:9080".to_string()), "{b:?}");
        assert!(!b.iter().any(|a| a.starts_with("127.10.0.")), "{b:?}");
        let inbound = res
            .endpoints
            .iter()
            .find(|e| e.cluster_name.starts_with("inbound|9080|"))
            .expect("inbound endpoints");
        assert_eq!(inbound.endpoints[0].address, "127.10.2.4");
    }

    #[test]
    fn the_host_the_apps_send_is_routed_with_the_steps_weights() {
        let mut r = Routing::initial();
        r.set(reviews_weighted(&[("v1", 90), ("v3", 10)]));
        let res = translate(&r, Some(&WORKLOADS[0]));
        let vh = res
            .route_configs
            .iter()
            .flat_map(|rc| rc.virtual_hosts.iter())
            .find(|vh| {
                vh.domains
                    .iter()
                    .any(|d| *d == mesh::service_host(Role::Reviews))
            })
            .expect("a virtual host for the host the apps send");
        let Some(route::Action::Route(a)) = &vh.routes[0].action else {
            panic!("not a route action: {:?}", vh.routes[0])
        };
        let weights: Vec<(String, u32)> = a
            .clusters
            .iter()
            .map(|w| (w.name.clone(), w.weight))
            .collect();
        assert_eq!(
            weights,
            [
                (
                    "outbound|9080|v1|reviews.default.svc.cluster.local".to_string(),
                    90
                ),
                (
                    "outbound|9080|v3|reviews.default.svc.cluster.local".to_string(),
                    10
                )
            ]
        );
    }
}
