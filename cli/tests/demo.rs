//! `halyard demo` end to end: the same scenario as the README's first command, through the built binary.
//! Each test uses its own loopback block (`--octet`) so that they can run beside each other and beside a demo.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const EXE: &str = env!("CARGO_BIN_EXE_halyard");

/// The client proxy's admin address for a given octet (the demo's layout): up once the mesh is starting.
fn client_admin(octet: u8) -> SocketAddr {
    SocketAddr::from(([127, octet, 1, 100], 15000))
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Nothing of the demo may outlive it: every process it started is gone once it exits.
fn assert_all_stopped(octet: u8) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let probes = [
        client_admin(octet),
        SocketAddr::from(([127, octet, 0, 1], 9080)),
        SocketAddr::from(([127, octet, 2, 1], 9080)),
        SocketAddr::from(([127, octet, 2, 4], 9080)),
    ];
    while probes.iter().any(|a| listening(*a)) {
        assert!(
            Instant::now() < deadline,
            "demo processes still listening after exit: {probes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `halyard demo --quiet` with `extra` flags on loopback block `octet`; assert success within a minute
/// and that nothing is left running.
fn assert_demo_passes(octet: u8, extra: &[&str]) {
    let started = Instant::now();
    let output = Command::new(EXE)
        .args(["demo", "--quiet", "--octet", &octet.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run halyard demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "halyard demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("steps passed"), "{stdout}");
    assert!(!stdout.contains("[FAIL]"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the demo must finish within a minute, took {:?}",
        started.elapsed()
    );
    assert_all_stopped(octet);
}

#[test]
fn routing_steps_pass_and_clean_up() {
    assert_demo_passes(11, &["--routing-only"]);
}

#[test]
fn full_tour_passes_and_cleans_up() {
    assert_demo_passes(13, &[]);
}

#[test]
fn ctrl_c_stops_every_process() {
    let octet = 12;
    let mut child = Command::new(EXE)
        .args([
            "demo",
            "--quiet",
            "--no-tour",
            "--octet",
            &octet.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start halyard demo");
    // Wait until the proxies are starting, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listening(client_admin(octet)) {
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "demo exited early ({status}):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "the client proxy never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
    kill(pid, Signal::SIGINT).expect("send SIGINT");
    let stopped = Instant::now();
    let output = child.wait_with_output().expect("wait for halyard demo");
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        stopped.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Ctrl-C"), "{stdout}");
    assert_all_stopped(octet);
}
