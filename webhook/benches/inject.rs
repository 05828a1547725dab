//! `cargo bench -p halyard-webhook --bench inject`
//!
//! 1. Injection patch computation per pod: from the pod as the admission server has it (the parsed
//!    AdmissionReview's `request.object`, a `serde_json::Value`) to the JSON text of the RFC 6902 patch
//!    (before base64): decision, annotation validation, settings and the patch
//!    ([`Injector::admission_patch`]). Beside it, in interleaved rounds of the same run: a serde_json parse +
//!    serialize of the pod and of the injected pod (baselines), the whole injected pod (`inject`, the
//!    kube-inject path), and the whole-pod diff (`inject` + `object_patch` + serialize, how the patch was
//!    computed before). Also the whole review as the server handles it without TLS and HTTP: AdmissionReview
//!    bytes in, answer bytes out (parse, patch, base64, render).
//! 2. HTTPS review latency p50/p99 with 200 concurrent connections on loopback, against `/healthz` over the
//!    same connections as the baseline (TLS + HTTP cost without review work).
//!
//! Numbers are printed with their ratio to the baseline; nothing here asserts on time.

#![allow(clippy::unwrap_used)] // a benchmark may unwrap

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use halyard_webhook::inject::{AdmissionPatch, PodContext};
use halyard_webhook::review;
use halyard_webhook::server::{self, AppState, ServerOptions};
use halyard_webhook::tls::ReloadingCertResolver;
use halyard_webhook::{Injector, Outcome};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "reviews-v1-7d8f9-abcde", "namespace": "bookinfo",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "7d8f9"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-7d8f9", "controller": true}]},
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [
                {"name": "reviews", "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
                 "ports": [{"name": "http", "containerPort": 9080}],
                 "env": [{"name": "LOG_DIR", "value": "/tmp/logs"}],
                 "livenessProbe": {"httpGet": {"port": "http", "path": "/health"}, "periodSeconds": 5},
                 "readinessProbe": {"tcpSocket": {"port": 9080}},
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]},
                {"name": "logger", "image": "busybox", "command": ["sh", "-c", "tail -f /tmp/logs/*"]}
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}]
        }
    })
}

/// Average time per call of `f` over a ~`budget` window.
fn per_call(budget: Duration, f: &mut dyn FnMut()) -> Duration {
    let mut n = 0u32;
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..50 {
            f();
        }
        n += 50;
    }
    start.elapsed() / n
}

/// Median per-call times of several functions measured in interleaved rounds, so that load from other
/// processes on the machine affects the baseline and the measured code alike.
fn interleaved(rounds: usize, fns: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    for f in fns.iter_mut() {
        for _ in 0..200 {
            f();
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); fns.len()];
    for _ in 0..rounds {
        for (i, f) in fns.iter_mut().enumerate() {
            samples[i].push(per_call(Duration::from_millis(150), *f));
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort();
            s[s.len() / 2]
        })
        .collect()
}

fn bench_patch() {
    let injector = Injector::builtin().unwrap();
    let pod = pod();
    let bytes = serde_json::to_vec(&pod).unwrap();
    let ctx = PodContext::default();
    let AdmissionPatch::Patch { json, operations } = injector.admission_patch(&pod, &ctx).unwrap()
    else {
        panic!("benchmark pod was not injected")
    };
    let Outcome::Injected(injected) = injector.inject(&pod, &ctx).unwrap() else {
        panic!("benchmark pod was not injected")
    };
    let injected_bytes = serde_json::to_vec(&injected).unwrap();
    let mut baseline = || {
        let v: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
        black_box(serde_json::to_vec(&v).unwrap());
    };
    let mut baseline_out = || {
        let v: Value = serde_json::from_slice(black_box(&injected_bytes)).unwrap();
        black_box(serde_json::to_vec(&v).unwrap());
    };
    let mut inject_only = || {
        black_box(injector.inject(black_box(&pod), &ctx).unwrap());
    };
    let mut whole_pod_diff = || {
        let Outcome::Injected(injected) = injector.inject(black_box(&pod), &ctx).unwrap() else {
            unreachable!()
        };
        let patch = halyard_webhook::inject::object_patch(&pod, &injected);
        black_box(serde_json::to_vec(&patch).unwrap());
    };
    let mut patch = || {
        black_box(injector.admission_patch(black_box(&pod), &ctx).unwrap());
    };
    let review = review_body(0);
    let mut respond = || {
        let (code, body, _) =
            review::respond(black_box(&review), |r| review::handle_inject(r, &injector));
        assert_eq!(code, 200);
        black_box(body);
    };
    let t = interleaved(
        9,
        &mut [
            &mut baseline,
            &mut baseline_out,
            &mut inject_only,
            &mut whole_pod_diff,
            &mut patch,
            &mut respond,
        ],
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "injection patch computation per pod ({} B pod -> {} B injected; patch: {} B, {} operations), medians of 9 interleaved rounds:",
        bytes.len(),
        injected_bytes.len(),
        json.len(),
        operations
    );
    println!(
        "  baseline  serde_json parse+serialize of the pod:          {:>8.2} µs",
        us(t[0])
    );
    println!(
        "  baseline  serde_json parse+serialize of the injected pod: {:>8.2} µs",
        us(t[1])
    );
    println!(
        "  halyard   injected pod (kube-inject path):                {:>8.2} µs",
        us(t[2])
    );
    println!(
        "  halyard   injected pod + whole-pod diff + serialize:      {:>8.2} µs  (the previous method)",
        us(t[3])
    );
    println!(
        "  halyard   admission patch, pod -> patch JSON:             {:>8.2} µs",
        us(t[4])
    );
    println!(
        "  halyard   whole review, AdmissionReview bytes -> answer:  {:>8.2} µs  (the server's work without TLS/HTTP)",
        us(t[5])
    );
    println!(
        "  ratio     patch = {:.2}x parse+serialize of the pod, {:.2}x of the injected pod, {:.2}x the previous method (target: under 50 µs)",
        t[4].as_secs_f64() / t[0].as_secs_f64(),
        t[4].as_secs_f64() / t[1].as_secs_f64(),
        t[4].as_secs_f64() / t[3].as_secs_f64()
    );
}

fn review_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("bench-{i}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE", "namespace": "bookinfo", "object": pod()}
    }))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// 200 connections, each sending `per_conn` requests back to back; returns sorted latencies.
async fn load(
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    path: &'static str,
    concurrency: usize,
    per_conn: usize,
) -> Vec<Duration> {
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        senders.push(sender);
    }
    let body = Bytes::from(review_body(0));
    let start = Arc::new(tokio::sync::Barrier::new(concurrency));
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let body = body.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let mut lat = Vec::with_capacity(per_conn);
                for _ in 0..per_conn {
                    let req = if path == "/inject" {
                        Request::post(path)
                            .header("content-type", "application/json")
                            .body(Full::new(body.clone()))
                    } else {
                        Request::get(path).body(Full::new(Bytes::new()))
                    }
                    .unwrap();
                    let t = Instant::now();
                    let resp = sender.send_request(req).await.unwrap();
                    assert!(resp.status().is_success());
                    resp.into_body().collect().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn bench_https() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.key"), ck.signing_key.serialize_pem()).unwrap();
        let resolver = Arc::new(
            ReloadingCertResolver::new(dir.path().join("tls.crt"), dir.path().join("tls.key"))
                .unwrap(),
        );
        let tls = resolver.server_config().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(Injector::builtin().unwrap(), ServerOptions::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, tls, state, async {
            let _ = stopped.await;
        }));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

        let (concurrency, per_conn) = (200, 25);
        let base = load(addr, connector.clone(), "/healthz", concurrency, per_conn).await;
        let inject = load(addr, connector, "/inject", concurrency, per_conn).await;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "HTTPS latency, {concurrency} concurrent connections x {per_conn} requests on loopback:"
        );
        for (name, l) in [("baseline /healthz", &base), ("/inject review  ", &inject)] {
            println!(
                "  {name}  p50 {:>7.3} ms  p99 {:>7.3} ms",
                ms(percentile(l, 0.50)),
                ms(percentile(l, 0.99))
            );
        }
        println!(
            "  ratio /inject vs /healthz: p50 {:.2}x  p99 {:.2}x",
            ms(percentile(&inject, 0.50)) / ms(percentile(&base, 0.50)),
            ms(percentile(&inject, 0.99)) / ms(percentile(&base, 0.99))
        );
        let _ = stop.send(());
        let _ = server.await;
    });
}

fn main() {
    bench_patch();
    if std::env::var("HALYARD_BENCH_SKIP_HTTPS").is_err() {
        bench_https();
    }
}
