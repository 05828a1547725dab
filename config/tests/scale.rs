//! The shared/per-proxy split at the scale the control plane must handle: 500 services in 10
//! namespaces, 1,000 sidecars. Checks that the shared part is computed once per scope and that
//! the cached result equals a fresh translation; prints timings as ratios to one full translation.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use halyard_config::discovery::Node;
use halyard_config::mesh::{MeshInput, MeshModel};
use halyard_config::translate::{Translator, scope_key, translate};
use halyard_crds::IstioObject;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::json;

const NAMESPACES: usize = 10;
const SERVICES: usize = 500;
const PROXIES: usize = 1000;

fn input() -> MeshInput {
    let mut input = MeshInput::default();
    for i in 0..SERVICES {
        let ns = format!("ns{}", i % NAMESPACES);
        let name = format!("svc{i}");
        input.services.push(
            serde_json::from_value::<Service>(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "clusterIP": format!("10.0.{}.{}", i / 250, i % 250 + 1),
                    "selector": {"app": name},
                    "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]
                }
            }))
            .unwrap(),
        );
        for v in ["v1", "v2"] {
            input.pods.push(
                serde_json::from_value::<Pod>(json!({
                    "metadata": {"name": format!("{name}-{v}"), "namespace": ns,
                                 "labels": {"app": name, "version": v}},
                    "spec": {"containers": [{"name": "app"}]},
                    "status": {"podIP": format!("10.{}.{}.{}", 1 + i / 250, i % 250, if v == "v1" { 1 } else { 2 }),
                               "conditions": [{"type": "Ready", "status": "True"}]}
                }))
                .unwrap(),
            );
        }
        if i % 5 == 0 {
            let vs = json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"hosts": [name], "http": [{"route": [
                    {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                    {"destination": {"host": name, "subset": "v2"}, "weight": 10}]}]}
            });
            let dr = json!({
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"host": name, "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}}]}
            });
            for v in [vs, dr] {
                let o: IstioObject = halyard_crds::parse_object(&v).unwrap().object;
                input.istio.push(o);
            }
        }
    }
    input
}

fn node(i: usize) -> Node {
    let svc = i % SERVICES;
    let ns = format!("ns{}", svc % NAMESPACES);
    Node {
        id: format!("svc{svc}-v1.{ns}"),
        namespace: ns,
        labels: [
            ("app".to_string(), format!("svc{svc}")),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

#[test]
fn one_shared_translation_per_scope_for_a_thousand_proxies() {
    let input = input();
    let t0 = Instant::now();
    let model = MeshModel::build(&input);
    let build = t0.elapsed();

    // Baseline: one full translation without the cache.
    let t1 = Instant::now();
    let fresh = translate(&model, &node(7)).unwrap();
    let one = t1.elapsed();
    assert_eq!(
        fresh
            .clusters
            .iter()
            .filter(|c| c.name.starts_with("outbound|"))
            .count(),
        SERVICES + 2 * SERVICES / 5
    );

    let translator = Translator::new(model);
    let t2 = Instant::now();
    // Full snapshots copy the shared part; 100 proxies cover every scope.
    let mut total_listeners = 0;
    for i in 0..PROXIES / 10 {
        let res = translator.translate(&node(i)).unwrap();
        total_listeners += res.listeners.len();
    }
    let all = t2.elapsed();
    assert_eq!(
        total_listeners,
        2 * PROXIES / 10,
        "outbound + inbound capture listener each"
    );
    assert_eq!(translator.cached_scopes(), NAMESPACES);
    // The cache gives exactly what a fresh translation gives.
    assert_eq!(translator.translate(&node(7)).unwrap(), fresh);
    assert_eq!(
        scope_key(translator.model(), &node(7)),
        scope_key(translator.model(), &node(17))
    );

    // What the discovery server does: shared part by reference, local part per proxy.
    let t3 = Instant::now();
    let mut local_clusters = 0;
    for i in 0..PROXIES {
        let (shared, local) = translator.parts(&node(i)).unwrap();
        assert!(!shared.clusters.is_empty());
        local_clusters += local.clusters.len();
    }
    let parts = t3.elapsed();
    assert_eq!(
        local_clusters,
        2 * PROXIES,
        "inbound|8080|| and InboundPassthroughCluster"
    );

    let ratio = all.as_secs_f64() * 10.0 / one.as_secs_f64().max(1e-9);
    let parts_ratio = parts.as_secs_f64() / one.as_secs_f64().max(1e-9);
    eprintln!(
        "scale: model build {build:?}; one full translation {one:?}; {PROXIES} proxies: merged snapshots (extrapolated from 100: {all:?}) = {ratio:.1}x one translation, shared+local parts {parts:?} = {parts_ratio:.2}x (without the cache: {PROXIES}x)"
    );
    // Shared parts are computed 10 times, not 1,000: serving every proxy costs a few full
    // translations, not a thousand (generous bound against timing noise).
    assert!(
        parts_ratio < PROXIES as f64 / 10.0,
        "parts ratio {parts_ratio}"
    );
}
