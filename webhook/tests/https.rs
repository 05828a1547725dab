//! The admission server over real TLS on loopback, with a rustls client: valid reviews, malformed bodies,
//! wrong content types, oversized bodies, slow clients, and certificate rotation while a client stays
//! connected. Certificates are generated per test with rcgen.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use halyard_webhook::Injector;
use halyard_webhook::server::{self, AppState, ServerOptions};
use halyard_webhook::tls::ReloadingCertResolver;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn pair() -> Pair {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

struct TestServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(p: &Pair, options: ServerOptions) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), &p.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &p.key_pem).unwrap();
        let resolver = Arc::new(
            ReloadingCertResolver::new(dir.path().join("tls.crt"), dir.path().join("tls.key"))
                .unwrap(),
        );
        let tls = resolver.server_config().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = AppState::new(Injector::builtin().unwrap(), options);
        let task = tokio::spawn(async move {
            server::serve(listener, tls, state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            dir,
            stop: Some(stop),
            task,
        }
    }

    fn paths(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("tls.crt"),
            self.dir.path().join("tls.key"),
        )
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn tls_connect(addr: SocketAddr, roots: &[&CertificateDer<'static>]) -> TlsStream<TcpStream> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn client(stream: TlsStream<TcpStream>) -> SendRequest<Full<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

fn pod_review(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                       "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
        }
    }))
    .unwrap()
}

fn vs_review(uid: &str, hosts: Value, annotations: Value, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "operation": operation,
            "namespace": "default",
            "object": {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": "reviews", "namespace": "default", "annotations": annotations},
                       "spec": {"hosts": hosts, "http": [{"route": [{"destination": {"host": "reviews"}}]}]}},
        }
    }))
    .unwrap()
}

fn response(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body).unwrap()["response"].clone()
}

/// Short timeouts (the tests wait 5 s for them to fire), yet long enough that a well-behaved
/// client on a loaded machine is not cut off mid-handshake or mid-request.
fn small_limits() -> ServerOptions {
    ServerOptions {
        body_limit: 64 * 1024,
        handshake_timeout: Duration::from_millis(1_500),
        header_timeout: Duration::from_millis(1_500),
        body_timeout: Duration::from_millis(1_500),
        drain_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn valid_reviews_and_probes() {
    let p = pair();
    let server = TestServer::start(&p, ServerOptions::default()).await;
    let mut c = client(tls_connect(server.addr, &[&p.der]).await).await;

    let (status, body) = send(
        &mut c,
        "POST",
        "/inject",
        Some("application/json"),
        pod_review("u-1"),
    )
    .await;
    assert_eq!(status, 200);
    let r = response(&body);
    assert_eq!(r["uid"], "u-1");
    assert_eq!(r["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                         "spec": {"containers": [{"name": "web", "image": "web:1"}]}});
    json_patch::patch(&mut pod, &patch).unwrap();
    assert_eq!(pod["spec"]["containers"][1]["name"], "istio-proxy");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "istio-init");

    // Validation: valid, invalid (Istio's text), always-reject, DELETE.
    let ok = vs_review("v-1", json!(["reviews"]), json!({}), "CREATE");
    let (status, body) = send(&mut c, "POST", "/validate", Some("application/json"), ok).await;
    assert_eq!(
        (status, response(&body)["allowed"].clone()),
        (200, json!(true))
    );
    let bad = vs_review("v-2", json!(["*"]), json!({}), "CREATE");
    let (_, body) = send(&mut c, "POST", "/validate", Some("application/json"), bad).await;
    let r = response(&body);
    assert_eq!(
        (r["uid"].clone(), r["allowed"].clone()),
        (json!("v-2"), json!(false))
    );
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("configuration is invalid: "),
        "{r}"
    );
    let reject = vs_review(
        "v-3",
        json!(["reviews"]),
        json!({"internal.istio.io/webhook-always-reject": "true"}),
        "CREATE",
    );
    let (_, body) = send(
        &mut c,
        "POST",
        "/validate",
        Some("application/json"),
        reject.clone(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], false);
    let delete = vs_review(
        "v-4",
        json!(["reviews"]),
        json!({"internal.istio.io/webhook-always-reject": "true"}),
        "DELETE",
    );
    let (_, body) = send(
        &mut c,
        "POST",
        "/validate",
        Some("application/json"),
        delete,
    )
    .await;
    assert_eq!(response(&body)["allowed"], true);

    let (status, _) = send(&mut c, "GET", "/healthz", None, vec![]).await;
    assert_eq!(status, 200);
    let (status, _) = send(&mut c, "GET", "/readyz", None, vec![]).await;
    assert_eq!(status, 200);
    let (status, body) = send(&mut c, "GET", "/metrics", None, vec![]).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("sidecar_injection_success_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("galley_validation_failed{reason=\"always_reject\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("galley_validation_failed{reason=\"invalid_config\"} 1\n"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_refused_with_reasons() {
    let p = pair();
    let server = TestServer::start(&p, small_limits()).await;
    let mut c = client(tls_connect(server.addr, &[&p.der]).await).await;

    let (status, body) = send(
        &mut c,
        "POST",
        "/inject",
        Some("text/plain"),
        pod_review("a"),
    )
    .await;
    assert_eq!(status, 415);
    assert!(String::from_utf8_lossy(&body).contains("expected application/json"));
    let (status, _) = send(&mut c, "POST", "/validate", None, pod_review("a")).await;
    assert_eq!(status, 415);

    let (status, body) = send(
        &mut c,
        "POST",
        "/inject",
        Some("application/json"),
        b"{\"request\":".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        response(&body)["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON")
    );

    let (status, body) = send(
        &mut c,
        "POST",
        "/inject",
        Some("application/json"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        response(&body)["status"]["message"],
        "AdmissionReview has no request"
    );

    // The uid is echoed even when the rest of the request is unusable.
    let partly = br#"{"request":{"uid":"keep-me","operation":42}}"#.to_vec();
    let (status, body) = send(
        &mut c,
        "POST",
        "/inject",
        Some("application/json; charset=utf-8"),
        partly,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(response(&body)["uid"], "keep-me");

    // Still serving on the same connection after all of that.
    let (status, _) = send(
        &mut c,
        "POST",
        "/inject",
        Some("application/json"),
        pod_review("b"),
    )
    .await;
    assert_eq!(status, 200);

    // Oversized (declared by Content-Length): 413 without reading it; the server then closes this
    // connection since the unread body cannot be skipped, and new connections are served.
    let huge = vec![b' '; 200 * 1024];
    let (status, _) = send(&mut c, "POST", "/inject", Some("application/json"), huge).await;
    assert_eq!(status, 413);
    let mut c = client(tls_connect(server.addr, &[&p.der]).await).await;
    let (status, _) = send(
        &mut c,
        "POST",
        "/inject",
        Some("application/json"),
        pod_review("c"),
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Writes raw HTTP/1.1 over TLS, for what a well-behaved client cannot do.
async fn raw(
    addr: SocketAddr,
    der: &CertificateDer<'static>,
    request: &[u8],
) -> TlsStream<TcpStream> {
    let mut s = tls_connect(addr, &[der]).await;
    s.write_all(request).await.unwrap();
    s.flush().await.unwrap();
    s
}

async fn read_all(s: &mut TlsStream<TcpStream>, within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection");
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn chunked_oversized_and_slow_clients() {
    let p = pair();
    let server = TestServer::start(&p, small_limits()).await;

    // Chunked body without Content-Length, larger than the limit: 413 while reading.
    let mut req = b"POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        req.extend(std::iter::repeat_n(b' ', 8192));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let mut s = raw(server.addr, &p.der, &req).await;
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // Body promised but never sent: 408 after the body timeout.
    let mut s = raw(
        server.addr,
        &p.der,
        b"POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"re",
    )
    .await;
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // Headers never finished: the connection is closed after the header timeout.
    let mut s = raw(server.addr, &p.der, b"POST /inject HTTP/1.1\r\nhost: loc").await;
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(!text.contains("200 OK"), "{text}");

    // TCP connected but no TLS handshake: closed after the handshake timeout.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("server kept a silent connection open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    server.stop().await;
}

#[tokio::test]
async fn certificate_rotation_keeps_connected_clients() {
    let (a, b) = (pair(), pair());
    let server = TestServer::start(&a, ServerOptions::default()).await;

    let first = tls_connect(server.addr, &[&a.der, &b.der]).await;
    assert_eq!(first.get_ref().1.peer_certificates().unwrap()[0], a.der);
    let mut c1 = client(first).await;
    let (status, _) = send(
        &mut c1,
        "POST",
        "/inject",
        Some("application/json"),
        pod_review("r-1"),
    )
    .await;
    assert_eq!(status, 200);

    // Rotate the files under the running server (later mtime: file times can be coarse).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (cert, key) = server.paths();
    std::fs::write(&key, &b.key_pem).unwrap();
    std::fs::write(&cert, &b.cert_pem).unwrap();

    let second = tls_connect(server.addr, &[&a.der, &b.der]).await;
    assert_eq!(
        second.get_ref().1.peer_certificates().unwrap()[0],
        b.der,
        "new handshakes get the new cert"
    );
    let mut c2 = client(second).await;
    let (status, _) = send(
        &mut c2,
        "POST",
        "/inject",
        Some("application/json"),
        pod_review("r-2"),
    )
    .await;
    assert_eq!(status, 200);

    // The client connected before the rotation is still served on its connection.
    let (status, body) = send(
        &mut c1,
        "POST",
        "/inject",
        Some("application/json"),
        pod_review("r-3"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(response(&body)["uid"], "r-3");

    // A broken pair (cert without its key) is not picked up; the current one keeps serving.
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&cert, &a.cert_pem).unwrap();
    let third = tls_connect(server.addr, &[&a.der, &b.der]).await;
    assert_eq!(third.get_ref().1.peer_certificates().unwrap()[0], b.der);
    server.stop().await;
}
