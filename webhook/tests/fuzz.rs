//! Fuzz-style test of the AdmissionReview path, bounded so that it runs in every `cargo test`: random JSON and
//! mutations of valid reviews (pods and Istio objects) from a seeded RNG go through `review::respond` for
//! `/inject` and `/validate`. Nothing may panic; every answer is HTTP 200 or 400 with a JSON AdmissionReview;
//! a 200 injection patch must apply to the object it was computed from and give the same pod as
//! `Injector::inject` (kube-inject's path), which checks the admission patch writer against it. (cargo-fuzz
//! needs a nightly toolchain, which this project does not have; `HALYARD_FUZZ_ITERATIONS` runs longer
//! locally.)

#![allow(clippy::unwrap_used)] // tests may unwrap

use base64::Engine;
use halyard_webhook::inject::{AdmissionPatch, PodContext};
use halyard_webhook::review::{self, Verdict};
use halyard_webhook::{Injector, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "request",
    "uid",
    "object",
    "oldObject",
    "operation",
    "namespace",
    "metadata",
    "spec",
    "containers",
    "initContainers",
    "volumes",
    "name",
    "image",
    "annotations",
    "labels",
    "ports",
    "containerPort",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "httpGet",
    "tcpSocket",
    "grpc",
    "port",
    "path",
    "lifecycle",
    "postStart",
    "preStop",
    "restartPolicy",
    "hostNetwork",
    "env",
    "value",
    "ownerReferences",
    "group",
    "version",
    "hosts",
    "http",
    "route",
    "destination",
    "host",
    "weight",
    "sidecar.istio.io/status",
    "sidecar.istio.io/inject",
    "proxy.istio.io/config",
    "sidecar.istio.io/nativeSidecar",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "prometheus.io/port",
    "internal.istio.io/webhook-always-reject",
    "sidecar.istio.io/proxyCPU",
];

fn random_string(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => KEYS[rng.random_range(0..KEYS.len())].to_string(),
        1 => [
            "",
            "true",
            "false",
            "*",
            "15020",
            "Pod",
            "CREATE",
            "istio-proxy",
            "http",
            "Always",
            "NONE",
            "TPROXY",
        ][rng.random_range(0..12)]
        .to_string(),
        2 => "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"]}".to_string(),
        3 => (0..rng.random_range(0..12))
            .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
            .collect(),
        4 => (0..rng.random_range(0..4))
            .map(|_| char::from_u32(rng.random_range(0..0x2FFFF)).unwrap_or('\u{fffd}'))
            .collect(),
        _ => format!("{}", rng.random_range(-2i64..70000)),
    }
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    let pick = if depth == 0 {
        rng.random_range(0..5)
    } else {
        rng.random_range(0..7)
    };
    match pick {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random_range(-100_000i64..100_000)),
        3 => json!(rng.random::<f64>() * 1e6),
        4 => json!(random_string(rng)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.random_range(0..5) {
                m.insert(random_string(rng), random_value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// Replaces, deletes or inserts at a random place in the tree.
fn mutate(rng: &mut StdRng, v: &mut Value, depth: u32) {
    let descend = depth < 8 && rng.random_range(0..3) != 0;
    match v {
        Value::Object(m) if descend && !m.is_empty() => {
            let key = m.keys().nth(rng.random_range(0..m.len())).cloned().unwrap();
            match rng.random_range(0..6) {
                0 => {
                    m.remove(&key);
                }
                1 => {
                    m.insert(random_string(rng), random_value(rng, 2));
                }
                _ => mutate(rng, m.get_mut(&key).unwrap(), depth + 1),
            }
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            match rng.random_range(0..5) {
                0 => {
                    a.remove(i);
                }
                1 => a.push(random_value(rng, 2)),
                _ => mutate(rng, &mut a[i], depth + 1),
            }
        }
        _ => *v = random_value(rng, 3),
    }
}

fn seeds() -> Vec<Value> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"},
            "annotations": {"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true",
                            "traffic.sidecar.istio.io/excludeInboundPorts": "9000"}},
        "spec": {
            "initContainers": [{"name": "setup", "image": "s", "restartPolicy": "Always",
                                "readinessProbe": {"httpGet": {"port": 80}}}],
            "containers": [{"name": "app", "image": "a", "ports": [{"name": "http", "containerPort": 8080}],
                "livenessProbe": {"httpGet": {"port": "http", "path": "/l"}},
                "readinessProbe": {"tcpSocket": {"port": 8080}},
                "lifecycle": {"preStop": {"httpGet": {"port": 91}}}}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }
    });
    let injected = match Injector::builtin()
        .unwrap()
        .inject(&pod, &Default::default())
        .unwrap()
    {
        halyard_webhook::Outcome::Injected(p) => p,
        halyard_webhook::Outcome::Skipped(_) => unreachable!(),
    };
    let review = |kind: Value, object: Value| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "request": {"uid": "u", "kind": kind, "operation": "CREATE", "namespace": "ns", "object": object}})
    };
    let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "vs", "namespace": "ns"},
        "spec": {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}, "weight": 100}]}]}});
    let dr = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "dr", "namespace": "ns"},
        "spec": {"host": "r", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}});
    let ap = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "ap", "namespace": "ns"},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}]}]}});
    let gvk = |g: &str, k: &str| json!({"group": g, "version": "v1", "kind": k});
    vec![
        review(pod_kind.clone(), pod),
        review(pod_kind, injected),
        review(gvk("networking.istio.io", "VirtualService"), vs),
        review(gvk("networking.istio.io", "DestinationRule"), dr),
        review(gvk("security.istio.io", "AuthorizationPolicy"), ap),
    ]
}

/// Whether a value holds a non-integer number. serde_json's parser (without `float_roundtrip`) may read such a
/// number back one unit in the last place off, so a pod compared after its patch went through JSON text is
/// only compared when it has none (pods have no such numbers; the fuzzer makes them).
fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

/// Checks one body on both paths; true when it produced an injection patch (checked against `inject`).
fn check(body: &[u8], injector: &Injector) -> bool {
    let mut patched = false;
    for inject in [true, false] {
        let (code, out, verdict) = if inject {
            review::respond(body, |r| review::handle_inject(r, injector))
        } else {
            review::respond(body, review::handle_validate)
        };
        assert!(code == 200 || code == 400, "status {code}");
        assert_eq!(code == 400, verdict == Verdict::BadRequest);
        let out: Value = serde_json::from_slice(&out).expect("answer is JSON");
        assert!(out["response"]["uid"].is_string());
        assert!(out["response"]["allowed"].is_boolean());
        // A patch must apply to the object it was computed from.
        if let Some(patch) = out["response"]["patch"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(patch)
                .unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            let request: Value = serde_json::from_slice(body).unwrap();
            let mut object = request["request"]["object"].clone();
            json_patch::patch(&mut object, &patch).expect("patch applies");
            // And gives the pod the injector builds (kube-inject's path) from the same object.
            let namespace = request["request"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty());
            let ctx = PodContext {
                namespace,
                ..Default::default()
            };
            match injector.inject(&request["request"]["object"], &ctx) {
                Ok(Outcome::Injected(expected)) => {
                    if !has_float(&expected) {
                        assert_eq!(object, expected);
                    }
                }
                other => panic!("a patch was sent, but injection gives {other:?}"),
            }
            patched = true;
        }
    }
    patched
}

#[test]
fn admission_review_path_survives_random_and_mutated_input() {
    let iterations: usize = std::env::var("HALYARD_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let injector = Injector::builtin().unwrap();
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(0x8a1e_5eed);
    let mut patches = 0;
    for i in 0..iterations {
        let body = match i % 4 {
            // Wholly random JSON.
            0 => serde_json::to_vec(&random_value(&mut rng, 4)).unwrap(),
            // Structured mutations of valid reviews.
            1 | 2 => {
                let mut v = seeds[rng.random_range(0..seeds.len())].clone();
                for _ in 0..rng.random_range(1..4) {
                    mutate(&mut rng, &mut v, 0);
                }
                serde_json::to_vec(&v).unwrap()
            }
            // Byte-level damage: flips, truncation, splices.
            _ => {
                let mut b = serde_json::to_vec(&seeds[rng.random_range(0..seeds.len())]).unwrap();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..b.len());
                    match rng.random_range(0..3) {
                        0 => b[at] = rng.random(),
                        1 => b.truncate(at.max(1)),
                        _ => b.insert(at, {
                            const JUNK: &[u8] = b"{}[]\",:\\0e-";
                            JUNK[rng.random_range(0..JUNK.len())]
                        }),
                    }
                }
                b
            }
        };
        if check(&body, &injector) {
            patches += 1;
        }
    }
    // Most mutations break the review itself; some pods must still reach the patch writer.
    eprintln!("{patches} of {iterations} reviews were patched and compared with inject()");
    assert!(
        patches * 100 >= iterations,
        "only {patches} of {iterations} reviews were patched"
    );
}

/// Pods only, mutated where injection looks: the admission patch (applied) and `inject` must agree on
/// everything: the same error, the same skip, or the same injected pod.
#[test]
fn admission_patch_agrees_with_inject_on_mutated_pods() {
    let iterations: usize = std::env::var("HALYARD_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let injector = Injector::builtin().unwrap();
    let pods: Vec<Value> = seeds()
        .into_iter()
        .take(2)
        .map(|review| review["request"]["object"].clone())
        .chain([
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"metadata": {"annotations": null, "labels": {"app": "x"}},
                   "spec": {"containers": [{"name": "a", "startupProbe": {"grpc": {"port": 1}}}],
                            "initContainers": null, "volumes": [{"name": "istio-envoy"}, {"name": "v"}]}}),
            json!({"metadata": {"name": "n", "annotations": {"sidecar.istio.io/nativeSidecar": "true",
                       "sidecar.istio.io/userVolume": "{\"u\": {\"emptyDir\": {}}}",
                       "sidecar.istio.io/userVolumeMount": "{\"u\": {\"mountPath\": \"/u\"}}"}},
                   "spec": {"initContainers": [{"name": "i", "restartPolicy": "Always",
                                                "livenessProbe": {"tcpSocket": {"port": 5}}}],
                            "containers": [{"name": "a", "lifecycle": {"postStart": {"httpGet": {"port": 8}}}}]}}),
        ])
        .collect();
    let mut rng = StdRng::seed_from_u64(0x0dd_5eed);
    let mut patched = 0;
    for _ in 0..iterations {
        let mut pod = pods[rng.random_range(0..pods.len())].clone();
        for _ in 0..rng.random_range(0..3) {
            // Below the root, so that most pods stay pods.
            for key in ["metadata", "spec"] {
                if rng.random_range(0..2) == 0
                    && let Some(part) = pod.get_mut(key)
                {
                    mutate(&mut rng, part, 1);
                }
            }
        }
        let ns = ["ns", "kube-system", ""][rng.random_range(0..3)];
        let ctx = PodContext {
            namespace: Some(ns).filter(|n| !n.is_empty()),
            ..Default::default()
        };
        match (
            injector.admission_patch(&pod, &ctx),
            injector.inject(&pod, &ctx),
        ) {
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{pod}"),
            (Ok(AdmissionPatch::Skipped(a)), Ok(Outcome::Skipped(b))) => assert_eq!(a, b),
            (Ok(AdmissionPatch::Patch { json, operations }), Ok(Outcome::Injected(expected))) => {
                let patch: json_patch::Patch = serde_json::from_slice(&json).unwrap();
                assert_eq!(patch.0.len(), operations);
                let mut applied = pod.clone();
                json_patch::patch(&mut applied, &patch).expect("patch applies");
                if !has_float(&pod) {
                    assert_eq!(applied, expected, "{pod}");
                    patched += 1;
                }
            }
            (a, b) => panic!("admission_patch gave {a:?}, inject gave {b:?} for {pod}"),
        }
    }
    eprintln!("{patched} of {iterations} pods patched and compared");
    assert!(
        patched * 3 >= iterations,
        "only {patched} of {iterations} pods were patched"
    );
}
