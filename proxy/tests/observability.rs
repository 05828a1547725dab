//! Access log lines, runtime log levels through the admin port, and SIGTERM draining.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use halyard_proxy::access_log::{AccessLog, Encoding};
use halyard_proxy::admin::{Role, serve_listener};
use halyard_proxy::{Proxy, ProxyOptions};
use r::listener::Direction;

const C: &str = "outbound|80||web.default.svc.cluster.local";

fn config(backend: SocketAddr, port: u32) -> ProxyResources {
    let mut l = listener("out", Direction::Outbound, vec![http_chain("http", "80")]);
    l.port = port;
    ProxyResources {
        version: "obs".into(),
        listeners: vec![l],
        route_configs: vec![route_config(
            "80",
            vec![vhost(
                "web",
                &["web"],
                vec![route("web-route", vec![], to(&[(C, 1)]))],
            )],
        )],
        clusters: vec![cluster(C, "web.default.svc.cluster.local")],
        endpoints: vec![endpoints(C, &[backend])],
        ..Default::default()
    }
}

#[tokio::test]
async fn access_log_json_lines_carry_request_fields() {
    let (backend, _) = http_backend("web").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let p = Proxy::new(ProxyOptions {
        node: node("client", "v1"),
        access_log: Some(AccessLog::open(path.to_str().unwrap(), Encoding::Json).unwrap()),
        ..Default::default()
    });
    p.apply(&config(backend, 0)).unwrap();
    let out = p.listener_addrs()["out"];
    let client = h1_client();
    assert_eq!(
        get(
            &client,
            out,
            "web",
            "/a?x=1",
            &[("x-request-id", "rid-1"), ("user-agent", "test-agent")]
        )
        .await
        .status,
        200
    );
    assert_eq!(get(&client, out, "nowhere", "/b", &[]).await.status, 404);
    // The writer thread flushes asynchronously: wait (bounded) for both lines.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = lines.iter().find(|l| l["request_id"] == "rid-1").unwrap();
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/a?x=1");
    assert_eq!(ok["response_code"], 200);
    assert_eq!(ok["response_flags"], "-");
    assert_eq!(ok["authority"], "web");
    assert_eq!(ok["user_agent"], "test-agent");
    assert_eq!(ok["upstream_cluster"], C);
    assert_eq!(ok["upstream_host"], backend.to_string());
    assert_eq!(ok["route_name"], "web-route");
    assert!(ok["bytes_sent"].as_u64().unwrap() > 0);
    let nr = lines.iter().find(|l| l["response_code"] == 404).unwrap();
    assert_eq!(nr["response_flags"], "NR");
}

#[tokio::test]
async fn admin_logging_changes_level_through_the_reloader() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let p = Proxy::new(ProxyOptions {
        log_reloader: Some(Box::new(move |lvl: &str| {
            if lvl == "bogus[" {
                return Err("invalid filter".into());
            }
            s.lock().unwrap().push(lvl.to_string());
            Ok(())
        })),
        ..Default::default()
    });
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = admin.local_addr().unwrap();
    tokio::spawn(serve_listener(p.clone(), admin, Role::Admin));
    let client = h1_client();
    assert_eq!(
        get(&client, a, "localhost", "/logging?level=debug", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&client, a, "localhost", "/logging?level=bogus[", &[])
            .await
            .status,
        400
    );
    assert_eq!(*seen.lock().unwrap(), vec!["debug".to_string()]);
    // not ready before any config
    assert_eq!(
        get(&client, a, "localhost", "/ready", &[]).await.status,
        503
    );
    assert_eq!(
        get(&client, a, "localhost", "/healthz/ready", &[])
            .await
            .status,
        503
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn sigterm_drains_then_exits() {
    let (backend, _) = http_backend("web").await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&config(backend, u32::from(port))).unwrap(),
    )
    .unwrap();
    let status = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_halyard-proxy"))
        .arg("--config")
        .arg(&path)
        .args(["--concurrency", "1", "--drain-duration", "2s"])
        .arg("--admin-address")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--status-address")
        .arg(format!("127.0.0.1:{status}"))
        .arg("--prometheus-address")
        .arg(format!("127.0.0.1:{}", free_port()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status_addr: SocketAddr = format!("127.0.0.1:{status}").parse().unwrap();
    let client = h1_client();
    let ready = |c: Client| async move {
        let req = http::Request::get(format!("http://{status_addr}/healthz/ready"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(1), c.request(req)).await {
            Ok(Ok(r)) => r.status().as_u16(),
            _ => 0,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(client.clone()).await != 200 {
        assert!(Instant::now() < deadline, "not ready within 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(&client, out, "web", "/", &[]).await.status, 200);
    let pid = child.id().unwrap().to_string();
    // Timed from before the signal, so the drain cannot have started before `t`.
    let t = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Draining: readiness fails while the process waits out the drain duration (2 s, so that a
    // loaded machine still gets to look within it).
    let mut saw_unready = false;
    while t.elapsed() < Duration::from_millis(1_500) {
        if ready(client.clone()).await == 503 {
            saw_unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_unready, "readiness should fail while draining");
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert!(exit.success());
    assert!(
        t.elapsed() >= Duration::from_millis(1_900),
        "waited for the drain duration"
    );
}
