//! HTTP/2, HTTP/1.1↔HTTP/2 bridging, gRPC trailers, WebSocket upgrade, opaque TCP with
//! half-close, TLS passthrough by SNI — through real loopback proxies.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use http_body_util::Full;
use r::listener::Direction;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SVC: &str = "outbound|80||svc.default.svc.cluster.local";

fn with_protocol(mut c: r::Cluster, p: r::cluster::UpstreamProtocol) -> r::Cluster {
    c.upstream_protocol = p as i32;
    c
}

/// Outbound proxy → inbound proxy → backend, with the given upstream protocols on each hop.
async fn two_hops(
    out_proto: r::cluster::UpstreamProtocol,
    in_proto: r::cluster::UpstreamProtocol,
) -> SocketAddr {
    let (backend, _) = http_backend("svc").await;
    let in_res = ProxyResources {
        listeners: vec![listener(
            "in",
            Direction::Inbound,
            vec![inline_http_chain("inbound|80||", "inbound|80||")],
        )],
        clusters: vec![with_protocol(
            cluster("inbound|80||", "svc.default.svc.cluster.local"),
            in_proto,
        )],
        endpoints: vec![endpoints("inbound|80||", &[backend])],
        ..Default::default()
    };
    let (_in, in_addrs) = start_proxy(node("svc", "v1"), &in_res);
    let out_res = ProxyResources {
        clusters: vec![with_protocol(
            cluster(SVC, "svc.default.svc.cluster.local"),
            out_proto,
        )],
        endpoints: vec![endpoints(SVC, &[in_addrs["in"]])],
        ..outbound_http(
            "out",
            vec![vhost(
                "svc",
                &["*"],
                vec![route("all", vec![], to(&[(SVC, 1)]))],
            )],
        )
    };
    let (_out, out_addrs) = start_proxy(node("client", "v1"), &out_res);
    // Dropping the handles is fine: accept loops and connections run on as spawned tasks.
    out_addrs["out"]
}

use r::cluster::UpstreamProtocol as UP;

#[tokio::test]
async fn http2_end_to_end_with_downstream_protocol() {
    let out = two_hops(UP::UseDownstream, UP::UseDownstream).await;
    let g = get(&h2_client(), out, "svc", "/h2", &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["version"], "HTTP/2.0");
    let g = get(&h1_client(), out, "svc", "/h1", &[]).await;
    assert_eq!(g.json()["version"], "HTTP/1.1");
}

#[tokio::test]
async fn bridging_http1_client_to_http2_upstream() {
    let out = two_hops(UP::Http2, UP::Http2).await;
    let g = get(&h1_client(), out, "svc", "/bridge", &[]).await;
    assert_eq!(g.status, 200);
    let j = g.json();
    assert_eq!(j["version"], "HTTP/2.0");
    assert_eq!(j["host"], "svc", "authority carried as :authority");
}

#[tokio::test]
async fn bridging_http2_client_to_http1_upstream() {
    let out = two_hops(UP::Http1, UP::Http1).await;
    let req = http::Request::get("http://svc/bridge")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let g = h2_send(out, req).await;
    assert_eq!(g.status, 200);
    let j = g.json();
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["host"], "svc", "authority carried as Host");
}

#[tokio::test]
async fn grpc_trailers_are_kept() {
    let out = two_hops(UP::Http2, UP::Http2).await;
    let req = http::Request::post(format!("http://{out}/pkg.Service/Method"))
        .header("host", "svc")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let g = send(&h2_client(), req).await;
    assert_eq!(g.status, 200);
    let t = g.trailers.clone().expect("trailers reach the client");
    assert_eq!(t["grpc-status"], "0");
    assert_eq!(t["grpc-message"], "ok");
    assert!(
        g.text().ends_with("|10"),
        "request body forwarded: {}",
        g.text()
    );
}

#[tokio::test]
async fn websocket_upgrade_is_tunneled() {
    let out = two_hops(UP::Http1, UP::Http1).await;
    let mut s = TcpStream::connect(out).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the 101");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping-through-two-proxies").await.unwrap();
    let mut echo = vec![0u8; 24];
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping-through-two-proxies");
}

#[tokio::test]
async fn tcp_proxy_copies_both_ways_with_half_close() {
    let backend = tcp_backend("hello:").await;
    let res = ProxyResources {
        listeners: vec![listener(
            "tcp",
            Direction::Outbound,
            vec![tcp_chain("tcp", &[("outbound|9000||db", 1)], &[])],
        )],
        clusters: vec![cluster("outbound|9000||db", "db.default.svc.cluster.local")],
        endpoints: vec![endpoints("outbound|9000||db", &[backend])],
        ..Default::default()
    };
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    let mut s = TcpStream::connect(addrs["tcp"]).await.unwrap();
    s.write_all(b"abc").await.unwrap();
    // Half-close our side: the backend sees EOF, answers "bye" and closes; we still read it all.
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, b"hello:abcbye");
    // Server-first protocol: the greeting arrives although the client never sends.
    let mut s = TcpStream::connect(addrs["tcp"]).await.unwrap();
    let mut g = [0u8; 6];
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut g))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&g, b"hello:");
    drop(s);
    // metrics: two connections opened; the first one closed with 3 bytes received, 12 sent.
    // The proxy counts a close once it has seen both ends go, after our side is done: wait
    // (bounded) for both closes rather than a fixed sleep that a loaded machine can outlast.
    let value = |m: &str, name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let m = loop {
        let m = prometheus(&p);
        if value(&m, "istio_tcp_connections_closed_total{") >= 2
            || std::time::Instant::now() > deadline
        {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let line = |name: &str| value(&m, name);
    assert_eq!(line("istio_tcp_connections_opened_total{"), 2, "{m}");
    assert_eq!(line("istio_tcp_connections_closed_total{"), 2, "{m}");
    assert!(line("istio_tcp_received_bytes_total{") >= 3);
    assert!(line("istio_tcp_sent_bytes_total{") >= 12);
}

#[tokio::test]
async fn tls_passthrough_routes_by_sni() {
    let a = tcp_backend("A:").await;
    let b = tcp_backend("B:").await;
    let res = ProxyResources {
        listeners: vec![listener(
            "tls",
            Direction::Outbound,
            vec![
                tcp_chain("a", &[("outbound|443||a.tls.test", 1)], &["a.tls.test"]),
                tcp_chain("b", &[("outbound|443||b.tls.test", 1)], &["*.b.tls.test"]),
            ],
        )],
        clusters: vec![
            cluster("outbound|443||a.tls.test", "a.tls.test"),
            cluster("outbound|443||b.tls.test", "b.tls.test"),
        ],
        endpoints: vec![
            endpoints("outbound|443||a.tls.test", &[a]),
            endpoints("outbound|443||b.tls.test", &[b]),
        ],
        ..Default::default()
    };
    let (_p, addrs) = start_proxy(node("client", "v1"), &res);
    for (sni, want) in [("a.tls.test", "A:"), ("x.b.tls.test", "B:")] {
        let mut s = TcpStream::connect(addrs["tls"]).await.unwrap();
        let hello = client_hello(sni);
        s.write_all(&hello).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(out.starts_with(want.as_bytes()), "{sni}");
        // the ClientHello reaches the backend unchanged
        assert_eq!(&out[2..2 + hello.len()], &hello[..]);
    }
    // No chain for this name: the connection is closed.
    let mut s = TcpStream::connect(addrs["tls"]).await.unwrap();
    s.write_all(&client_hello("c.other.test")).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap();
    assert!(out.is_empty());
}
