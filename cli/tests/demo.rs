//! `halyard demo` end to end: the same scenario as the README's first command, through the built binary, with
//! the real control plane (`halyard-operator` in local mode) pushing config to the proxies.
//! Each test uses its own loopback block (`--octet`) so that they can run beside each other and beside a demo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const EXE: &str = env!("CARGO_BIN_EXE_halyard");

/// Every proxy the demo starts, by proxy id.
const PROXY_IDS: [&str; 7] = [
    "demo-client.default",
    "details-v1.default",
    "productpage-v1.default",
    "ratings-v1.default",
    "reviews-v1.default",
    "reviews-v2.default",
    "reviews-v3.default",
];

/// The client proxy's admin address for a given octet (the demo's layout): up once the mesh is starting.
fn client_admin(octet: u8) -> SocketAddr {
    SocketAddr::from(([127, octet, 1, 100], 15000))
}

/// The control plane's monitoring address (`/debug/syncz`).
fn monitoring(octet: u8) -> SocketAddr {
    SocketAddr::from(([127, octet, 4, 1], 15014))
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Processes still running one of the demo's hidden subcommands on loopback block `octet`.
fn leftover_processes(octet: u8) -> Vec<String> {
    let block = format!("127.{octet}.");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let demo_child = args
            .iter()
            .any(|a| matches!(a.as_str(), "demo-app" | "demo-proxy" | "demo-operator"));
        if demo_child && args.iter().any(|a| a.contains(&block)) {
            found.push(format!("pid {pid}: {}", args.join(" ")));
        }
    }
    found
}

/// Nothing of the demo may outlive it: every process it started is gone once it exits, and nothing listens on
/// its addresses any more.
fn assert_all_stopped(octet: u8) {
    // (a process the demo killed may take a moment to be gone on a loaded machine)
    let deadline = Instant::now() + Duration::from_secs(10);
    let probes = [
        client_admin(octet),
        monitoring(octet),
        SocketAddr::from(([127, octet, 4, 1], 15010)),
        SocketAddr::from(([127, octet, 0, 1], 9080)),
        SocketAddr::from(([127, octet, 2, 1], 9080)),
        SocketAddr::from(([127, octet, 2, 4], 9080)),
    ];
    loop {
        let open: Vec<SocketAddr> = probes.iter().copied().filter(|a| listening(*a)).collect();
        let left = leftover_processes(octet);
        if open.is_empty() && left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "demo processes still running after exit: listening {open:?}; processes {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A demo that did not pass, or was left running, keeps its directory for the user and names its logs
/// (`logs of every process: <root>/logs (config: ...)`, `logs: <root>/logs`); the tests remove it.
fn remove_kept_demo_dir(stdout: &str) {
    if let Some(logs) = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("logs of every process: ")
                .or_else(|| l.strip_prefix("logs: "))
        })
        .and_then(|rest| rest.split(" (config").next())
        && let Some(root) = std::path::Path::new(logs).parent()
        && root.starts_with(std::env::temp_dir())
    {
        let _ = std::fs::remove_dir_all(root);
    }
}

/// Run `halyard demo` on loopback block `octet`; assert success within a minute and that nothing is left
/// running; its output.
fn assert_demo_passes(octet: u8) -> String {
    let started = Instant::now();
    let output = Command::new(EXE)
        .args(["demo", "--octet", &octet.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run halyard demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "halyard demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("all 10 steps passed"), "{stdout}");
    assert!(!stdout.contains("[FAIL]"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the demo must finish within a minute, took {:?}",
        started.elapsed()
    );
    assert_all_stopped(octet);
    stdout
}

#[test]
fn full_tour_passes_and_cleans_up() {
    let stdout = assert_demo_passes(13);
    // Every step after the first changes the config through the control plane and waits for every ACK.
    let synced: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("halyard-operator read the change after"))
        .collect();
    assert_eq!(synced.len(), 9, "{stdout}");
    assert!(
        synced.iter().all(|l| l.contains("all 7 proxies ACKed")),
        "{stdout}"
    );
    for line in synced {
        eprintln!("{line}");
    }
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
    // Wait until the proxies are starting (the control plane and the apps are up by then), then interrupt.
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
    assert!(
        listening(monitoring(octet)),
        "the control plane is not up while the proxies start"
    );
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
    // Interrupted while starting ("interrupted by Ctrl-C") or, on a slow machine, once up ("Ctrl-C: stopping").
    assert!(stdout.contains("Ctrl-C"), "{stdout}");
    assert_all_stopped(octet);
    remove_kept_demo_dir(&stdout);
}

/// A demo left running; killed (and with it, through `--exit-with-parent`, everything it started) if the test
/// fails before it stops it.
struct RunningDemo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl RunningDemo {
    fn start(args: &[&str]) -> RunningDemo {
        let mut child = Command::new(EXE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start halyard demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        RunningDemo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Read the demo's output until a line satisfies `want`, at most `timeout`; that line.
    fn wait_line(&mut self, what: &str, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line {what} within {timeout:?}; the demo printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The command the demo printed that starts with `halyard <prefix>`, as arguments of `halyard`.
    fn printed_command(&self, prefix: &str) -> Vec<String> {
        let wanted = format!("halyard {prefix}");
        let line = self
            .seen
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with(&wanted))
            .unwrap_or_else(|| {
                panic!(
                    "the demo printed no `{wanted}` command:\n{}",
                    self.seen.join("\n")
                )
            });
        line.split_whitespace().skip(1).map(String::from).collect()
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `halyard <args>`; its standard output, asserting success.
fn halyard(args: &[String]) -> String {
    let out = Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run halyard");
    assert!(
        out.status.success(),
        "halyard {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every proxy is listed by `proxy-status`, SYNCED in each type column.
fn assert_all_synced(table: &str) {
    let mut rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    rows.sort();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(names, PROXY_IDS, "{table}");
    for row in &rows {
        // NAME CLUSTERS LISTENERS ENDPOINTS ROUTES ISTIOD VERSION
        assert_eq!(row[1..5], ["SYNCED"; 4], "{table}");
        assert_eq!(row[5], "halyard-operator-demo", "{table}");
    }
}

/// The body of a chunked HTTP/1.1 message.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without CRLF")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Which version of reviews answered one `/productpage` request sent through the client's proxy.
fn reviews_version(octet: u8) -> Result<String, String> {
    let addr = SocketAddr::from(([127, octet, 0, 1], 9080));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /productpage HTTP/1.1\r\nHost: productpage.default.svc.cluster.local:9080\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!(
            "status: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&raw[split + 4..])?
    } else {
        raw[split + 4..].to_vec()
    };
    let reply: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("reply is not JSON: {e}"))?;
    reply["calls"]
        .as_array()
        .and_then(|calls| calls.iter().find(|c| c["service"] == "reviews"))
        .and_then(|c| c["reply"]["version"].as_str())
        .map(String::from)
        .ok_or_else(|| format!("no reviews reply in {reply}"))
}

/// The versions of reviews answering `n` requests.
fn reviews_versions(octet: u8, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| reviews_version(octet).unwrap_or_else(|e| format!("error: {e}")))
        .collect()
}

/// `routing.yaml` with reviews' VirtualService sending everything to `subset`.
fn route_reviews_to(routing_yaml: &str, subset: &str) -> String {
    use serde::Deserialize;
    let mut out = String::new();
    let mut edited = false;
    for doc in serde_yaml::Deserializer::from_str(routing_yaml) {
        let mut value = serde_yaml::Value::deserialize(doc).expect("routing.yaml parses");
        if value["kind"] == "VirtualService" && value["metadata"]["name"] == "reviews" {
            let http = serde_yaml::from_str(&format!(
                "- route:\n  - destination:\n      host: reviews\n      subset: {subset}\n"
            ))
            .expect("the route parses");
            value["spec"]["http"] = http;
            edited = true;
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value).expect("YAML renders"));
    }
    assert!(
        edited,
        "routing.yaml has no reviews VirtualService:\n{routing_yaml}"
    );
    out
}

#[test]
fn keep_running_serves_proxy_status_and_follows_config_edits() {
    let octet = 14;
    let started = Instant::now();
    let mut demo = RunningDemo::start(&[
        "demo",
        "--quiet",
        "--routing-only",
        "--keep-running",
        "--octet",
        &octet.to_string(),
    ]);
    demo.wait_line(
        "with the routing steps' verdict",
        Duration::from_secs(60),
        |l| l.contains("steps passed") || l.contains("steps failed") || l.contains("demo failed"),
    );
    assert!(
        demo.seen.iter().any(|l| l == "all 5 steps passed"),
        "{}",
        demo.seen.join("\n")
    );
    // The access block ends with the log directory.
    demo.wait_line("ending the access block", Duration::from_secs(30), |l| {
        l.starts_with("logs: ")
    });
    eprintln!("mesh up and routing tour done in {:?}", started.elapsed());

    // The printed proxy-status command works and shows every proxy in sync.
    let status_cmd = demo.printed_command("proxy-status");
    assert_eq!(
        status_cmd,
        [
            "proxy-status",
            "--control-plane",
            &format!("http://127.{octet}.4.1:15014")
        ]
    );
    assert_all_synced(&halyard(&status_cmd));
    let routes_cmd = demo.printed_command("proxy-config routes");
    let routes = halyard(&routes_cmd);
    assert!(
        routes.contains("reviews.default.svc.cluster.local"),
        "{routes}"
    );

    // --keep-running leaves all traffic on reviews v1.
    let before = reviews_versions(octet, 20);
    assert!(
        before.iter().all(|v| v == "v1"),
        "before the edit: {before:?}"
    );

    // Edit the config directory as a user would (in place, not atomically): reviews to v3.
    let routing_path = demo
        .seen
        .iter()
        .map(|l| l.trim())
        .find(|l| l.ends_with("routing.yaml"))
        .map(PathBuf::from)
        .expect("the demo printed its routing.yaml");
    let routing = std::fs::read_to_string(&routing_path).expect("read routing.yaml");
    let edited_at = Instant::now();
    std::fs::write(&routing_path, route_reviews_to(&routing, "v3")).expect("write routing.yaml");

    // The demo reports each new version once every proxy has ACKed it; traffic then follows it. An in-place
    // write can be read half-done (an intermediate version), so the edit shows in the last version announced.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let announced = demo.wait_line("announcing the new config", left, |l| {
            l.contains("proxies ACKed config version")
        });
        eprintln!(
            "{announced} ({} ms after the edit)",
            edited_at.elapsed().as_millis()
        );
        let after = reviews_versions(octet, 20);
        if after.iter().all(|v| v == "v3") || Instant::now() >= deadline {
            break after;
        }
    };
    assert!(after.iter().all(|v| v == "v3"), "after the edit: {after:?}");
    assert_all_synced(&halyard(&status_cmd));
    let mut routes_json = routes_cmd.clone();
    routes_json.extend(["-o".to_string(), "json".to_string()]);
    let routes = halyard(&routes_json);
    assert!(
        routes.contains("outbound|9080|v3|reviews.default.svc.cluster.local"),
        "{routes}"
    );

    // Ctrl-C stops everything.
    let pid = Pid::from_raw(i32::try_from(demo.child.id()).expect("pid fits in i32"));
    kill(pid, Signal::SIGINT).expect("send SIGINT");
    demo.wait_line("acknowledging Ctrl-C", Duration::from_secs(10), |l| {
        l.contains("Ctrl-C: stopping the mesh")
    });
    let stopping = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = demo.child.try_wait() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(10),
            "the demo did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after Ctrl-C: {status}");
    assert_all_stopped(octet);
    // --keep-running keeps its directory for the user; the test cleans it up.
    if let Some(root) = routing_path.parent().and_then(|config| config.parent()) {
        let _ = std::fs::remove_dir_all(root);
    }
}

#[test]
fn a_control_plane_that_cannot_start_fails_the_demo_with_the_reason() {
    let octet = 15;
    // Something else holds the control plane's monitoring address.
    let squatter =
        std::net::TcpListener::bind(monitoring(octet)).expect("bind the monitoring address");
    let started = Instant::now();
    let output = Command::new(EXE)
        .args([
            "demo",
            "--quiet",
            "--no-tour",
            "--octet",
            &octet.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run halyard demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?} to give up",
        started.elapsed()
    );
    assert!(stdout.contains("operator exited"), "{stdout}");
    assert!(stdout.contains(&monitoring(octet).to_string()), "{stdout}");
    drop(squatter);
    assert_all_stopped(octet);
    remove_kept_demo_dir(&stdout);
}

#[test]
fn a_killed_demo_takes_its_processes_with_it() {
    let octet = 16;
    let mut demo = RunningDemo::start(&[
        "demo",
        "--quiet",
        "--no-tour",
        "--octet",
        &octet.to_string(),
    ]);
    let logs = demo.wait_line("ending the access block", Duration::from_secs(60), |l| {
        l.starts_with("logs: ")
    });
    assert!(
        !leftover_processes(octet).is_empty(),
        "the mesh is not running"
    );
    // SIGKILL: the demo cannot clean up; its children see their standard input close and exit.
    demo.child.kill().expect("kill the demo");
    demo.child.wait().expect("reap the demo");
    assert_all_stopped(octet);
    remove_kept_demo_dir(&logs);
}
