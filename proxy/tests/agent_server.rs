//! The agent port (15020) over real loopback sockets: app probes (HTTP, HTTPS, TCP, gRPC, timeouts),
//! readiness, merged metrics, and `/quitquitquit` stopping the real binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use halyard_config::ProxyResources;
use halyard_proxy::agent::{self, Agent};
use halyard_proxy::{Proxy, ProxyOptions};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The app: `/healthy` 200, `/unhealthy` 503, `/headers` 200 only with the probe's custom header
/// and host, `/metrics` its own Prometheus text.
async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let h = req.headers();
                        let (status, body) = match req.uri().path() {
                            "/healthy" => (StatusCode::OK, "fine".to_string()),
                            "/unhealthy" => (StatusCode::SERVICE_UNAVAILABLE, "sick".to_string()),
                            "/headers" => {
                                let ok = h.get("x-probe").is_some_and(|v| v == "yes")
                                    && h.get("host").is_some_and(|v| v == "probe.example")
                                    && h.get("user-agent")
                                        .is_some_and(|v| v.as_bytes().starts_with(b"kube-probe"));
                                if ok {
                                    (StatusCode::OK, "headers ok".into())
                                } else {
                                    (StatusCode::BAD_REQUEST, format!("{h:?}"))
                                }
                            }
                            "/metrics" => (
                                StatusCode::OK,
                                "# TYPE app_orders_total counter\napp_orders_total{shop=\"a\"} 7"
                                    .into(),
                            ),
                            _ => (StatusCode::NOT_FOUND, String::new()),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// Accepts connections and never answers.
async fn hanging_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
            if held.len() > 64 {
                held.remove(0);
            }
        }
    });
    addr
}

/// A TLS app with a self-signed certificate: `/healthy` 200.
async fn https_app() -> SocketAddr {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let status = if req.uri().path() == "/healthy" {
                            StatusCode::OK
                        } else {
                            StatusCode::NOT_FOUND
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"tls")))
                                .unwrap(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A tonic gRPC health server: `ok.svc` SERVING, `bad.svc` NOT_SERVING.
async fn grpc_health() -> SocketAddr {
    use tonic_health::ServingStatus;
    let (reporter, svc) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("ok.svc", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("bad.svc", ServingStatus::NotServing)
        .await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await
            .unwrap();
    });
    addr
}

async fn agent_port(proxy: Arc<Proxy>, agent: Agent) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(agent::serve_listener(proxy, l, Arc::new(agent)));
    addr
}

async fn call(addr: SocketAddr, method: Method, path: &str) -> Got {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("user-agent", "kube-probe/1.33")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&h1_client(), req).await
}

#[tokio::test]
async fn app_probes_run_against_the_app() {
    let web = app().await;
    let grpc = grpc_health().await;
    let tls = https_app().await;
    let hang = hanging_app().await;
    let closed = dead_addr().await;
    let probers = serde_json::json!({
        "/app-health/web/livez": {"httpGet": {"path": "/healthy", "port": web.port()}},
        "/app-health/web/readyz": {"httpGet": {"path": "/unhealthy", "port": web.port(), "scheme": "HTTP"}},
        "/app-health/web/startupz": {"httpGet": {"path": "/headers", "port": web.port(),
            "httpHeaders": [{"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "probe.example"}]}},
        "/app-health/tls/livez": {"httpGet": {"path": "/healthy", "port": tls.port(), "scheme": "HTTPS"}},
        "/app-health/tcp/livez": {"tcpSocket": {"port": web.port()}},
        "/app-health/tcp/readyz": {"tcpSocket": {"port": closed.port()}},
        "/app-health/grpc/livez": {"grpc": {"port": grpc.port(), "service": "ok.svc"}},
        "/app-health/grpc/readyz": {"grpc": {"port": grpc.port(), "service": "bad.svc"}},
        "/app-health/grpc/startupz": {"grpc": {"port": grpc.port(), "service": "unknown.svc"}},
        "/app-health/hang/livez": {"httpGet": {"path": "/", "port": hang.port()}, "timeoutSeconds": 1},
        "/app-health/hang/readyz": {"grpc": {"port": hang.port()}, "timeoutSeconds": 1},
        "/app-lifecycle/web/prestopz": {"httpGet": {"path": "/healthy", "port": web.port()}},
    })
    .to_string();
    let agent = Agent::from_env_values(&probers, "", "127.0.0.1").unwrap();
    let proxy = Proxy::new(ProxyOptions::default());
    let port = agent_port(proxy, agent).await;

    let expect = [
        ("/app-health/web/livez", StatusCode::OK),
        ("/app-health/web/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("/app-health/web/startupz", StatusCode::OK),
        ("/app-health/tls/livez", StatusCode::OK),
        ("/app-health/tcp/livez", StatusCode::OK),
        ("/app-health/tcp/readyz", StatusCode::INTERNAL_SERVER_ERROR),
        ("/app-health/grpc/livez", StatusCode::OK),
        ("/app-health/grpc/readyz", StatusCode::INTERNAL_SERVER_ERROR),
        (
            "/app-health/grpc/startupz",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        ("/app-lifecycle/web/prestopz", StatusCode::OK),
        ("/app-health/nosuch/livez", StatusCode::NOT_FOUND),
        ("/not-a-probe", StatusCode::NOT_FOUND),
    ];
    for (path, want) in expect {
        let got = call(port, Method::GET, path).await;
        assert_eq!(got.status, want, "{path}: {}", got.text());
    }
    // The app's body comes back with its status, as Istio's agent returns it.
    assert_eq!(
        call(port, Method::GET, "/app-health/web/readyz")
            .await
            .text(),
        "sick"
    );
    assert!(
        call(port, Method::GET, "/app-health/grpc/readyz")
            .await
            .text()
            .contains("NOT_SERVING")
    );

    // A hanging app fails at the probe's timeoutSeconds, not later.
    for path in ["/app-health/hang/livez", "/app-health/hang/readyz"] {
        let t = Instant::now();
        let got = call(port, Method::GET, path).await;
        let took = t.elapsed();
        assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(got.text().contains("timed out"), "{path}: {}", got.text());
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_millis(3000),
            "{path} took {took:?}"
        );
    }
}

#[tokio::test]
async fn readiness_follows_the_proxy() {
    let proxy = Proxy::new(ProxyOptions::default());
    let port = agent_port(proxy.clone(), Agent::default()).await;
    assert_eq!(
        call(port, Method::GET, "/healthz/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    proxy
        .apply(&ProxyResources {
            version: "v1".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        call(port, Method::GET, "/healthz/ready").await.status,
        StatusCode::OK
    );
    proxy.drain();
    assert_eq!(
        call(port, Method::GET, "/healthz/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// One request through an outbound listener so the proxy has an istio_requests_total series.
fn one_hop(backend: SocketAddr) -> ProxyResources {
    ProxyResources {
        version: "v1".into(),
        listeners: vec![listener(
            "out",
            r::listener::Direction::Outbound,
            vec![inline_http_chain("http", "backend")],
        )],
        clusters: vec![cluster("backend", "backend.default.svc.cluster.local")],
        endpoints: vec![endpoints("backend", &[backend])],
        ..Default::default()
    }
}

use halyard_config::resources as r;

#[tokio::test]
async fn merged_metrics_carry_proxy_and_app_series() {
    let web = app().await;
    let (backend, _) = http_backend("backend").await;
    let ann = format!(
        r#"{{"prometheus.io/scrape":"true","prometheus.io/port":"{}","prometheus.io/path":"/metrics"}}"#,
        web.port()
    );
    let (proxy, addrs) = start_proxy(node("client", "v1"), &one_hop(backend));
    let got = get(&h1_client(), addrs["out"], "backend", "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    let port = agent_port(
        proxy.clone(),
        Agent::from_env_values("", &ann, "127.0.0.1").unwrap(),
    )
    .await;
    let m = call(port, Method::GET, "/stats/prometheus").await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.text();
    assert!(
        requests_total(
            &text,
            &["reporter=\"source\"", "source_workload=\"client-v1\""]
        ) == 1,
        "{text}"
    );
    assert!(text.contains("app_orders_total{shop=\"a\"} 7\n"), "{text}");
    assert!(text.contains("istio_agent_scrape_failures_total{type=\"application\"} 0"));

    // The app's exporter is gone: the proxy's metrics are still served, the failure counted.
    let gone = dead_addr().await;
    let ann = format!(r#"{{"prometheus.io/port":"{}"}}"#, gone.port());
    let port = agent_port(
        proxy.clone(),
        Agent::from_env_values("", &ann, "127.0.0.1").unwrap(),
    )
    .await;
    let m = call(port, Method::GET, "/stats/prometheus").await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.text();
    assert_eq!(
        requests_total(&text, &["source_workload=\"client-v1\""]),
        1,
        "{text}"
    );
    assert!(!text.contains("app_orders_total"));
    assert!(
        text.contains("istio_agent_scrape_failures_total{type=\"application\"} 1"),
        "{text}"
    );
}

#[test]
fn bad_probe_env_is_refused_with_the_field() {
    let e = Agent::from_env_values(
        r#"{"/app-health/a/livez":{"tcpSocket":{"port":70000}}}"#,
        "",
        "127.0.0.1",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/app-health/a/livez") && e.contains("tcpSocket.port"),
        "{e}"
    );
    let e = Agent::from_env_values("", r#"{"prometheus.io/port":"x"}"#, "h")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ISTIO_PROMETHEUS_ANNOTATIONS"), "{e}");
}

// ----- the real binary ---------------------------------------------------------------------------

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `halyard-proxy sidecar` in static mode with every port on a free loopback port; returns
/// once its agent port answers. A port taken between probing and binding makes the child exit:
/// then it is tried again on other ports.
async fn spawn_proxy(
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> (Child, SocketAddr, SocketAddr, SocketAddr) {
    let cfg = dir.join("proxy.json");
    std::fs::write(
        &cfg,
        serde_json::to_string(&ProxyResources {
            version: "v1".into(),
            ..Default::default()
        })
        .unwrap(),
    )
    .unwrap();
    for _attempt in 0..3 {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let status: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let agent: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let prom = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_halyard-proxy"))
            .arg("sidecar")
            .arg("--config")
            .arg(&cfg)
            .args(["--admin-address", &admin.to_string()])
            .args(["--status-address", &status.to_string()])
            .args(["--prometheus-address", &prom])
            .args(["--agent-address", &agent.to_string()])
            .args(["--interception", "none", "--concurrency", "1"])
            .args(["--drain-duration", "2s"])
            .env_remove("ISTIO_KUBE_APP_PROBERS")
            .env_remove("ISTIO_PROMETHEUS_ANNOTATIONS")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Child(child);
        // The agent port is bound last: once it answers and the child lives, all are ours.
        // (Bounded by time, not tries: a cold start on a loaded machine can take seconds.)
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.0.try_wait().unwrap().is_some() {
                break;
            }
            if tokio::net::TcpStream::connect(agent).await.is_ok()
                && child.0.try_wait().unwrap().is_none()
            {
                return (child, admin, status, agent);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    panic!("halyard-proxy did not come up in three attempts");
}

fn exited_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.0.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test]
async fn quitquitquit_on_the_agent_port_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _admin, status, agent) = spawn_proxy(dir.path(), &[]).await;

    // `halyard-proxy wait` (the hold-application postStart hook) succeeds against it.
    let waited = tokio::process::Command::new(env!("CARGO_BIN_EXE_halyard-proxy"))
        .args([
            "wait",
            "--status-address",
            &status.to_string(),
            "--wait-timeout",
            "10s",
        ])
        .status()
        .await
        .unwrap();
    assert!(waited.success());

    assert_eq!(
        call(agent, Method::GET, "/quitquitquit").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "GET must not stop it"
    );
    let got = call(agent, Method::POST, "/quitquitquit").await;
    assert_eq!(got.status, StatusCode::OK);
    let st = exited_within(&mut child, Duration::from_secs(10)).expect("exits after quitquitquit");
    assert_eq!(st.code(), Some(0));
}

#[tokio::test]
async fn quitquitquit_on_the_admin_port_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, admin, _status, _agent) = spawn_proxy(dir.path(), &[]).await;
    let got = call(admin, Method::POST, "/quitquitquit").await;
    assert_eq!(got.status, StatusCode::OK);
    let st = exited_within(&mut child, Duration::from_secs(10)).expect("exits after quitquitquit");
    assert_eq!(st.code(), Some(0));
}

#[tokio::test]
async fn wait_fails_when_nothing_becomes_ready() {
    let nobody = dead_addr().await;
    let t = Instant::now();
    let st = tokio::process::Command::new(env!("CARGO_BIN_EXE_halyard-proxy"))
        .args([
            "wait",
            "--status-address",
            &nobody.to_string(),
            "--wait-timeout",
            "1s",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(!st.success());
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_injected_env_configures_the_sidecar() {
    // What the injector gives an `istio-proxy` container, under Istio's names.
    let web = app().await;
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "app=\"reviews\"\nversion=\"v2\"\n").unwrap();
    let probers = serde_json::json!({
        "/app-health/web/livez": {"httpGet": {"path": "/healthy", "port": web.port()}},
        "/app-health/web/readyz": {"httpGet": {"path": "/unhealthy", "port": web.port()}},
    })
    .to_string();
    let env = [
        ("POD_NAME", "reviews-v2-7d9f-x1".to_string()),
        ("POD_NAMESPACE", "shop".to_string()),
        ("INSTANCE_IP", "127.0.0.1".to_string()),
        ("ISTIO_META_WORKLOAD_NAME", "reviews-v2".to_string()),
        ("PROXY_LOG_LEVEL", "warning".to_string()),
        ("HALYARD_POD_LABELS_FILE", labels.display().to_string()),
        ("ISTIO_KUBE_APP_PROBERS", probers),
    ];
    let (_child, admin, _status, agent) = spawn_proxy(dir.path(), &env).await;
    let info = call(admin, Method::GET, "/server_info").await.json();
    assert_eq!(info["node"]["id"], "reviews-v2-7d9f-x1.shop", "{info}");
    assert_eq!(info["node"]["namespace"], "shop");
    assert_eq!(info["node"]["workload"], "reviews-v2");
    assert_eq!(info["node"]["labels"]["app"], "reviews");
    assert_eq!(info["node"]["labels"]["version"], "v2");
    // The probes from the env run against the app at INSTANCE_IP.
    assert_eq!(
        call(agent, Method::GET, "/app-health/web/livez")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(agent, Method::GET, "/app-health/web/readyz")
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
