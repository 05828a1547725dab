//! Capture listener with original destination (SO_ORIGINAL_DST, IPv4 and IPv6), as the init
//! container's iptables REDIRECT rules deliver traffic. Runs in a network namespace of its own.
//!
//! Needs root, `ip` and `iptables`/`ip6tables` with the nat table. Without them it says why and
//! skips — except under `CI=true`, where this machine kind has them, so it fails instead.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use r::listener::Direction;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn direct_chain(name: &str, port: u16, prefix: &str, cluster: &str) -> r::FilterChain {
    let mut c = inline_http_chain(name, cluster);
    c.r#match = Some(r::FilterChainMatch {
        destination_ports: vec![u32::from(port)],
        destination_prefixes: vec![prefix.into()],
        ..Default::default()
    });
    c
}

/// An explicit listener answering every request with `body` (the "application").
fn app_listener(name: &str, port: u32, body: &str) -> r::Listener {
    let mut l = listener(name, Direction::Inbound, vec![]);
    l.port = port;
    l.filter_chains = vec![r::FilterChain {
        name: name.into(),
        handler: Some(r::filter_chain::Handler::Http(r::HttpConnectionManager {
            route_specifier: Some(r::http_connection_manager::RouteSpecifier::RouteConfig(
                route_config(
                    name,
                    vec![vhost(
                        name,
                        &["*"],
                        vec![r::Route {
                            name: "app".into(),
                            action: Some(r::route::Action::DirectResponse(
                                r::DirectResponseAction {
                                    status: 200,
                                    body: body.into(),
                                },
                            )),
                            ..Default::default()
                        }],
                    )],
                ),
            )),
            ..Default::default()
        })),
        ..Default::default()
    }];
    l
}

fn http_get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn capture_listener_routes_by_original_destination_v4_and_v6() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let have = nix::unistd::geteuid().is_root()
        && sh(&["ip", "-V"])
        && sh(&["iptables", "-t", "nat", "-L", "-n"])
        && sh(&["ip6tables", "-t", "nat", "-L", "-n"]);
    if !have {
        assert!(
            !ci,
            "CI=true but root, ip or iptables/ip6tables nat is missing"
        );
        eprintln!("skipping: needs root, ip and iptables/ip6tables with the nat table");
        return;
    }
    let ns = Netns(format!("halyard-proxy-cap-{}", std::process::id()));
    assert!(sh(&["ip", "netns", "add", &ns.0]));
    let exec = |args: &[&str]| {
        let mut v = vec!["ip", "netns", "exec", ns.0.as_str()];
        v.extend_from_slice(args);
        assert!(sh(&v), "{args:?}");
    };
    exec(&["ip", "link", "set", "lo", "up"]);
    // Like the init container's OUTPUT rules, limited to the addresses the test calls.
    exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "127.0.0.2",
        "--dport",
        "9080",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "127.0.0.3",
        "--dport",
        "9080",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    exec(&[
        "ip6tables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "::1",
        "--dport",
        "9080",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);

    let res = ProxyResources {
        version: "capture".into(),
        listeners: vec![
            r::Listener {
                name: "virtualOutbound".into(),
                address: "::".into(),
                port: 15001,
                use_original_dst: true,
                filter_chains: vec![
                    direct_chain("to-a", 9080, "127.0.0.2/32", "a"),
                    direct_chain("to-b", 9080, "127.0.0.3/32", "b"),
                    direct_chain("to-v6", 9080, "::1/128", "v6"),
                ],
                ..Default::default()
            },
            app_listener("app-a", 18081, "app-a"),
            app_listener("app-b", 18082, "app-b"),
            app_listener("app-v6", 18083, "app-v6"),
        ],
        clusters: vec![cluster("a", "a"), cluster("b", "b"), cluster("v6", "v6")],
        endpoints: vec![
            endpoints("a", &["127.0.0.1:18081".parse().unwrap()]),
            endpoints("b", &["127.0.0.1:18082".parse().unwrap()]),
            endpoints("v6", &["127.0.0.1:18083".parse().unwrap()]),
        ],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.json");
    std::fs::write(&path, serde_json::to_vec(&res).unwrap()).unwrap();
    let bin = env!("CARGO_BIN_EXE_halyard-proxy");
    let _proxy = Kill(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                bin,
                "--concurrency",
                "1",
                "--config",
            ])
            .arg(&path)
            .args([
                "--admin-address",
                "127.0.0.1:15000",
                "--status-address",
                "127.0.0.1:15021",
                "--prometheus-address",
                "127.0.0.1:15090",
            ])
            .spawn()
            .unwrap(),
    );

    // The client runs on a thread that joined the namespace.
    let ns_path = format!("/var/run/netns/{}", ns.0);
    let result = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect("127.0.0.1:15021").is_err() {
            assert!(
                Instant::now() < deadline,
                "proxy did not start in the namespace"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            http_get("127.0.0.2:9080".parse().unwrap()),
            http_get("127.0.0.3:9080".parse().unwrap()),
            http_get("[::1]:9080".parse().unwrap()),
        )
    })
    .join()
    .unwrap();
    assert!(
        result.0.starts_with("HTTP/1.1 200") && result.0.ends_with("app-a"),
        "{}",
        result.0
    );
    assert!(result.1.ends_with("app-b"), "{}", result.1);
    assert!(result.2.ends_with("app-v6"), "{}", result.2);
}
