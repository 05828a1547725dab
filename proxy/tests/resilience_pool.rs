//! Per-cluster connection settings (DestinationRule `connectionPool`) through a real proxy and
//! loopback backends that log their connections: connect timeout, TCP keepalive, idle timeout,
//! maximum connection duration, requests per connection and HTTP/2 streams per connection.

#![allow(clippy::unwrap_used)]

mod common;
mod resilience;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use halyard_config::resources as r;
use resilience::*;

fn pool(tcp: r::connection_pool::Tcp, http: r::connection_pool::Http) -> r::ConnectionPool {
    r::ConnectionPool {
        tcp: Some(tcp),
        http: Some(http),
    }
}

fn h2(c: &mut r::Cluster) {
    c.upstream_protocol = r::cluster::UpstreamProtocol::Http2 as i32;
}

/// Sequential GETs through the proxy; every one must succeed.
async fn gets(px: SocketAddr, n: usize, gap: Duration) {
    let c = h1_client();
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let got = get(&c, px, "svc", "/", &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_per_cluster() {
    let (dead, _fillers, _listener) = blackhole();
    let timed = |ms: u64| {
        resources(vec![svc_route("r", vec![], |_| {})], &[dead], move |c| {
            c.connection_pool = Some(pool(
                r::connection_pool::Tcp {
                    connect_timeout_ms: ms,
                    ..Default::default()
                },
                Default::default(),
            ));
        })
    };
    let c = h1_client();
    for (ms, upper) in [(250u64, 1_100u64), (1_500, 3_000)] {
        let (p, addrs) = start_proxy(node("client", "v1"), &timed(ms));
        let t = Instant::now();
        let got = get(&c, addrs["outbound"], "svc", "/", &[]).await;
        let took = t.elapsed();
        println!("connectTimeout {ms} ms: 503 after {took:?}");
        assert_eq!(got.status, 503, "{}", got.text());
        assert!(got.text().contains("connection failure"), "{}", got.text());
        assert!(
            took >= Duration::from_millis(ms) && took < Duration::from_millis(upper),
            "connectTimeout {ms} ms answered after {took:?}"
        );
        assert_eq!(flagged(&p, 503, "UF"), 1);
        let dump: serde_json::Value =
            serde_json::from_str(&admin_text(&p, "/clusters?format=json").await).unwrap();
        let pool = &dump["cluster_statuses"][0]["resilience"]["connection_pool"];
        assert_eq!(pool["connect_timeout_ms"], ms, "{dump}");
    }
}

/// The `tr` (timer kind) and `tm->when` (clock ticks) fields of the loopback socket from `local`
/// to `remote` in /proc/net/tcp: kind 2 is the keepalive timer.
fn proc_timer(local: SocketAddr, remote: SocketAddr) -> Option<(u32, u64)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (l, r) = (hex(local), hex(remote));
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&l.as_str()) || f.get(2) != Some(&r.as_str()) {
            return None;
        }
        let (tr, when) = f.get(5)?.split_once(':')?;
        Some((
            u32::from_str_radix(tr, 16).ok()?,
            u64::from_str_radix(when, 16).ok()?,
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_keepalive_arms_the_kernel_keepalive_timer() {
    let (with_ka, log_ka) = conn_backend().await;
    let (without, log_plain) = conn_backend().await;
    let res_ka = resources(vec![svc_route("r", vec![], |_| {})], &[with_ka], |c| {
        c.connection_pool = Some(pool(
            r::connection_pool::Tcp {
                keepalive_time_ms: 7_000,
                keepalive_interval_ms: 2_000,
                keepalive_probes: 3,
                ..Default::default()
            },
            Default::default(),
        ));
    });
    let res_plain = resources(vec![svc_route("r", vec![], |_| {})], &[without], |_| {});
    let (_p1, a1) = start_proxy(node("client", "v1"), &res_ka);
    let (_p2, a2) = start_proxy(node("client", "v1"), &res_plain);
    gets(a1["outbound"], 1, Duration::ZERO).await;
    gets(a2["outbound"], 1, Duration::ZERO).await;

    // The proxy's end of each upstream connection, as the kernel sees it.
    let peer_ka = log_ka.peers()[0];
    let (tr, when) = proc_timer(peer_ka, with_ka).expect("proxy socket in /proc/net/tcp");
    println!("keepalive socket: timer {tr}, fires in {when} ticks");
    assert_eq!(
        tr, 2,
        "keepalive timer armed on the proxy's upstream socket"
    );
    // 7 s idle time, in clock ticks (100 per second), minus the time since the request (Linux's
    // default is 7200 s; a loaded machine may take a while to get here).
    assert!(
        (200..=700).contains(&when),
        "keepalive fires in {when} ticks"
    );
    let peer_plain = log_plain.peers()[0];
    let (tr, _) = proc_timer(peer_plain, without).expect("proxy socket in /proc/net/tcp");
    assert_eq!(tr, 0, "no keepalive timer without tcpKeepalive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_idle_upstream_connections() {
    for protocol in ["HTTP/1.1", "HTTP/2"] {
        let (short, log_short) = conn_backend().await;
        let (long, log_long) = conn_backend().await;
        let proto = |c: &mut r::Cluster| {
            if protocol == "HTTP/2" {
                h2(c)
            }
        };
        let res_short = resources(vec![svc_route("r", vec![], |_| {})], &[short], |c| {
            proto(c);
            c.connection_pool = Some(pool(
                Default::default(),
                r::connection_pool::Http {
                    idle_timeout_ms: 300,
                    ..Default::default()
                },
            ));
        });
        let res_long = resources(vec![svc_route("r", vec![], |_| {})], &[long], proto);
        let (_p1, a1) = start_proxy(node("client", "v1"), &res_short);
        let (_p2, a2) = start_proxy(node("client", "v1"), &res_long);

        gets(a1["outbound"], 3, Duration::from_millis(50)).await;
        let done = Instant::now();
        gets(a2["outbound"], 3, Duration::from_millis(50)).await;
        assert_eq!(log_short.accepted(), 1, "{protocol}: reused while busy");
        assert!(
            log_short.wait_closed(1, Duration::from_secs(3)).await,
            "{protocol}: idle connection closed"
        );
        let closed_after = log_short.conns.lock().unwrap()[0].closed.unwrap() - done;
        println!(
            "{protocol}: idleTimeout 300 ms closed the connection {closed_after:?} after the last response"
        );
        assert!(
            closed_after >= Duration::from_millis(200)
                && closed_after < Duration::from_millis(1_500),
            "{protocol}: closed after {closed_after:?}"
        );
        // Istio's default (1 h) keeps the other one open and reused.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(log_long.closed(), 0, "{protocol}: default idle timeout");
        gets(a1["outbound"], 1, Duration::ZERO).await;
        gets(a2["outbound"], 1, Duration::ZERO).await;
        assert_eq!(
            log_short.accepted(),
            2,
            "{protocol}: a new connection after the idle close"
        );
        assert_eq!(log_long.accepted(), 1, "{protocol}: reused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_duration_retires_connections_without_failing_requests() {
    for protocol in ["HTTP/1.1", "HTTP/2"] {
        let (aged, log_aged) = conn_backend().await;
        let (plain, log_plain) = conn_backend().await;
        let proto = |c: &mut r::Cluster| {
            if protocol == "HTTP/2" {
                h2(c)
            }
        };
        let res_aged = resources(vec![svc_route("r", vec![], |_| {})], &[aged], |c| {
            proto(c);
            c.connection_pool = Some(pool(
                r::connection_pool::Tcp {
                    max_connection_duration_ms: 400,
                    ..Default::default()
                },
                Default::default(),
            ));
        });
        let res_plain = resources(vec![svc_route("r", vec![], |_| {})], &[plain], proto);
        let (_p1, a1) = start_proxy(node("client", "v1"), &res_aged);
        let (_p2, a2) = start_proxy(node("client", "v1"), &res_plain);

        // A request that outlives its connection's maximum age completes.
        let c = h1_client();
        let got = get(&c, a1["outbound"], "svc", "/", &[("x-delay-ms", "700")]).await;
        assert_eq!(got.status, 200, "{protocol}: in-flight request kept");
        // ... and the aged connection closes once that request is done.
        assert!(
            log_aged.wait_closed(1, Duration::from_secs(2)).await,
            "{protocol}: aged connection closed"
        );

        // 14 requests over ~1.4 s: a new connection about every 400 ms.
        let t = Instant::now();
        gets(a1["outbound"], 14, Duration::from_millis(100)).await;
        let spent = t.elapsed();
        gets(a2["outbound"], 14, Duration::from_millis(100)).await;
        let n = log_aged.accepted() - 1;
        println!(
            "{protocol}: maxConnectionDuration 400 ms: {n} connections for 14 requests over {spent:?}"
        );
        // One connection per started 400 ms (more when the machine is slow).
        let most = (spent.as_millis() / 400) as usize + 2;
        assert!(
            (3..=most).contains(&n),
            "{protocol}: {n} connections in {spent:?}"
        );
        assert_eq!(log_plain.accepted(), 1, "{protocol}: no maximum age");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_above_one() {
    for protocol in ["HTTP/1.1", "HTTP/2"] {
        let (b, log) = conn_backend().await;
        let (plain, log_plain) = conn_backend().await;
        let proto = |c: &mut r::Cluster| {
            if protocol == "HTTP/2" {
                h2(c)
            }
        };
        let res = resources(vec![svc_route("r", vec![], |_| {})], &[b], |c| {
            proto(c);
            c.connection_pool = Some(pool(
                Default::default(),
                r::connection_pool::Http {
                    max_requests_per_connection: 3,
                    ..Default::default()
                },
            ));
        });
        let res_plain = resources(vec![svc_route("r", vec![], |_| {})], &[plain], proto);
        let (_p1, a1) = start_proxy(node("client", "v1"), &res);
        let (_p2, a2) = start_proxy(node("client", "v1"), &res_plain);
        gets(a1["outbound"], 9, Duration::from_millis(5)).await;
        gets(a2["outbound"], 9, Duration::from_millis(5)).await;
        assert_eq!(
            log.accepted(),
            3,
            "{protocol}: 9 requests, 3 per connection"
        );
        assert!(
            log.wait_closed(3, Duration::from_secs(2)).await,
            "{protocol}: every connection closed after its third request"
        );
        assert_eq!(log_plain.accepted(), 1, "{protocol}: unlimited by default");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_opens_more_http2_connections() {
    let (b, log) = conn_backend().await;
    let (plain, log_plain) = conn_backend().await;
    let res = resources(vec![svc_route("r", vec![], |_| {})], &[b], |c| {
        h2(c);
        c.connection_pool = Some(pool(
            Default::default(),
            r::connection_pool::Http {
                max_concurrent_streams: 2,
                ..Default::default()
            },
        ));
    });
    let res_plain = resources(vec![svc_route("r", vec![], |_| {})], &[plain], h2);
    let (_p1, a1) = start_proxy(node("client", "v1"), &res);
    let (_p2, a2) = start_proxy(node("client", "v1"), &res_plain);
    for px in [a1["outbound"], a2["outbound"]] {
        let c = h1_client();
        let reqs = (0..6).map(|_| {
            let c = c.clone();
            // Long enough that all six are in flight together even on a loaded machine.
            async move { get(&c, px, "svc", "/", &[("x-delay-ms", "1500")]).await }
        });
        for got in futures::future::join_all(reqs).await {
            assert_eq!(got.status, 200);
        }
    }
    assert_eq!(
        log.max_concurrent.load(std::sync::atomic::Ordering::SeqCst),
        6
    );
    assert_eq!(log.accepted(), 3, "6 concurrent streams, 2 per connection");
    assert_eq!(
        log_plain.accepted(),
        1,
        "one multiplexed connection by default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_for_http1_clients() {
    // What the translator writes for `h2UpgradePolicy: UPGRADE` on an HTTP port (the
    // translation is tested in halyard-config); DEFAULT / DO_NOT_UPGRADE stay HTTP/1.1.
    let (b, log) = conn_backend().await;
    let (plain, log_plain) = conn_backend().await;
    let res = resources(vec![svc_route("r", vec![], |_| {})], &[b], |c| {
        c.protocol = r::Protocol::Http as i32;
        h2(c);
    });
    let res_plain = resources(vec![svc_route("r", vec![], |_| {})], &[plain], |c| {
        c.protocol = r::Protocol::Http as i32;
        c.upstream_protocol = r::cluster::UpstreamProtocol::Http1 as i32;
    });
    let (_p1, a1) = start_proxy(node("client", "v1"), &res);
    let (_p2, a2) = start_proxy(node("client", "v1"), &res_plain);
    gets(a1["outbound"], 2, Duration::ZERO).await;
    gets(a2["outbound"], 2, Duration::ZERO).await;
    assert_eq!(
        *log.versions.lock().unwrap(),
        vec![http::Version::HTTP_2; 2]
    );
    assert_eq!(
        *log_plain.versions.lock().unwrap(),
        vec![http::Version::HTTP_11; 2]
    );
}

/// A TCP proxy over `backend` with `tcp` settings; a connection through it that has read the
/// greeting.
async fn tcp_through(
    backend: SocketAddr,
    tcp: r::connection_pool::Tcp,
) -> (std::sync::Arc<halyard_proxy::Proxy>, tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut c = cluster(SVC, "svc.default.svc.cluster.local");
    c.connection_pool = Some(pool(tcp, Default::default()));
    let res = halyard_config::ProxyResources {
        version: "1".into(),
        listeners: vec![listener(
            "tcp",
            r::listener::Direction::Outbound,
            vec![tcp_chain("tcp", &[(SVC, 1)], &[])],
        )],
        clusters: vec![c],
        endpoints: vec![endpoints(SVC, &[backend])],
        ..Default::default()
    };
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    let mut s = tokio::net::TcpStream::connect(addrs["tcp"]).await.unwrap();
    let mut hi = [0u8; 2];
    s.read_exact(&mut hi).await.unwrap();
    assert_eq!(&hi, b"hi");
    (p, s)
}

/// How long until the proxy closes `s` (EOF or error), at most `limit`, writing a byte every
/// `every` when given.
async fn closed_within(
    s: &mut tokio::net::TcpStream,
    every: Option<Duration>,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = Instant::now();
    let mut buf = [0u8; 64];
    while t.elapsed() < limit {
        let wait = every
            .unwrap_or(limit)
            .min(limit.saturating_sub(t.elapsed()));
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => {
                if every.is_some() && s.write_all(b"x").await.is_err() {
                    return Some(t.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_idle_timeout_and_max_connection_duration() {
    let b = tcp_backend("hi").await;
    let idle = r::connection_pool::Tcp {
        idle_timeout_ms: 300,
        ..Default::default()
    };
    let (_p1, mut s) = tcp_through(b, idle).await;
    let took = closed_within(&mut s, None, Duration::from_secs(3)).await;
    println!("tcp.idleTimeout 300 ms: closed after {took:?}");
    let took = took.expect("idle connection closed");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1_500),
        "{took:?}"
    );

    // Traffic every 100 ms keeps it open until the maximum duration.
    let aged = r::connection_pool::Tcp {
        max_connection_duration_ms: 600,
        ..Default::default()
    };
    let (_p2, mut s) = tcp_through(b, aged).await;
    let took = closed_within(
        &mut s,
        Some(Duration::from_millis(100)),
        Duration::from_secs(3),
    )
    .await;
    println!("tcp.maxConnectionDuration 600 ms: closed after {took:?}");
    let took = took.expect("aged connection closed");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1_500),
        "{took:?}"
    );

    // Defaults (1 h idle, no maximum): still open after a second, busy or not.
    let (_p3, mut s) = tcp_through(b, Default::default()).await;
    assert_eq!(
        closed_within(&mut s, None, Duration::from_millis(700)).await,
        None
    );
    assert_eq!(
        closed_within(
            &mut s,
            Some(Duration::from_millis(100)),
            Duration::from_millis(700)
        )
        .await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_requests_bounds_requests_in_flight() {
    let (b, log) = conn_backend().await;
    let res = resources(vec![svc_route("r", vec![], |_| {})], &[b], |c| {
        h2(c);
        c.connection_pool = Some(pool(
            Default::default(),
            r::connection_pool::Http {
                http2_max_requests: 2,
                ..Default::default()
            },
        ));
    });
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    let px = addrs["outbound"];
    let c = h1_client();
    let reqs = (0..5).map(|_| {
        let c = c.clone();
        // Long enough that all five arrive while the first two are still in flight, even on a
        // loaded machine (a slot freed early would admit a late one).
        async move { get(&c, px, "svc", "/", &[("x-delay-ms", "2000")]).await }
    });
    let t = Instant::now();
    let got = futures::future::join_all(reqs).await;
    let ok = got.iter().filter(|g| g.status == 200).count();
    let overflow = got.iter().filter(|g| g.status == 503).count();
    println!(
        "http2MaxRequests 2: {ok} served, {overflow} refused of 5 concurrent in {:?}",
        t.elapsed()
    );
    assert_eq!((ok, overflow), (2, 3));
    assert_eq!(flagged(&p, 503, "UO"), 3);
    assert_eq!(
        log.max_concurrent.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    // Once they are done the limit admits new requests.
    gets(px, 3, Duration::ZERO).await;
}
