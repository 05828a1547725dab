//! The whole mesh on this machine, with this test playing the API server and the kubelet: two pods
//! (`sleep` and `httpbin` in `default`) are injected by the real injector, configured with the template
//! and mesh config halyard-operator renders for the default MeshInstall (discovery address: the control
//! plane below), then "run" the way a kubelet would run them, each in a network namespace of its own
//! joined to a "node" namespace by a veth pair:
//!
//! ```text
//!  sleep pod  10.44.1.2 ── veth ── 10.44.1.1  node  10.44.2.1 ── veth ── 10.44.2.2  httpbin pod
//!  istio-init (halyard-init, iptables)         10.44.0.1 (lo): halyard-operator    istio-init
//!  istio-proxy (halyard-proxy, uid 1337)       :15010 discovery, :15014 debug      istio-proxy (uid 1337)
//!  the client (this binary, uid 0)                                                 app :8080 (this binary)
//! ```
//!
//! The injected `istio-init` container's command and args run in the pod's namespace (real iptables),
//! the injected `istio-proxy` container's command, args and env (fieldRefs resolved as the kubelet
//! does, the downward-API labels file written) run as the container's `runAsUser`/`runAsGroup`, and
//! its postStart hook (`holdApplicationUntilProxyStarts` on httpbin) before the app starts. The
//! control plane is `halyard-operator` in local mode, reading the injected pods (with the status a
//! kubelet reports), the Services and the rendered mesh ConfigMap from a directory, as it would read
//! them from the API server.
//!
//! What it proves: both proxies reach SYNCED; the kubelet's probes pass and the pods turning Ready reach
//! the proxies; a plain HTTP call from the client pod to the Service VIP goes through the client's
//! outbound capture (15001) and the server's inbound capture (15006) to the app, which never sees the
//! peer-metadata headers (nor does the client); both proxies count it with Istio's labels (the server
//! learns the client's workload through the metadata exchange), on 15090 and on the port the injected
//! Prometheus annotations name; a server outside the mesh (in the node namespace) is reached through
//! the capture and the passthrough without receiving the peer metadata; a port of the server pod that no
//! Service declares is reached through its inbound passthrough; a re-run of istio-init changes
//! nothing; the rewritten readiness probe reaches the app directly (not through the inbound listener)
//! and answers 200, then 500 once the app is gone; a VirtualService fault is live once the proxies ACK
//! it; `POST /quitquitquit` ends each proxy with exit status 0. About 2 s.
//!
//! Needs root, `ip` and `iptables`; without them it says SKIPPED, except under `CI=true` where it fails.
//! It uses the `halyard-proxy`, `halyard-init` and `halyard-operator` binaries next to the test
//! executable (`cargo test --workspace` builds them), or in `$HALYARD_BIN_DIR`. The test binary also
//! plays the app and the clients inside the namespaces: it re-executes itself with a role as its first
//! argument (so it has its own `main`, `harness = false`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use halyard_crds::install::MeshInstall;
use halyard_operator::discovery::status::{SyncReport, SyncState};
use halyard_operator::install::ca::ServingCert;
use halyard_operator::install::render::{self, RenderInput, RenderSettings};
use halyard_webhook::{InjectionTemplate, Injector, MeshConfig, Outcome, PodContext};
use serde_json::{Value, json};

/// Roles of the re-executed test binary.
const ROLE_EXEC: &str = "__mesh_netns_exec";
const ROLE_APP: &str = "__mesh_netns_app";
const ROLE_HTTP: &str = "__mesh_netns_http";

const NODE_IP: &str = "10.44.0.1";
const SLEEP_IP: &str = "10.44.1.2";
const HTTPBIN_IP: &str = "10.44.2.2";
const HTTPBIN_VIP: &str = "10.96.0.20";
const SLEEP_VIP: &str = "10.96.0.10";
const SERVICE_PORT: u16 = 8000;
const APP_PORT: u16 = 8080;
/// A server in the node namespace, outside the mesh.
const EXTERNAL_PORT: u16 = 9999;
/// A port of the httpbin pod that no Service declares (inbound passthrough).
const UNDECLARED_PORT: u16 = 9090;
const NAMESPACE: &str = "default";
const SLEEP_POD: &str = "sleep-6d8b5c7f9-x2kqp";
const HTTPBIN_POD: &str = "httpbin-7f9c4d6b8-m4vzt";
const NODE_NAME: &str = "netns-node";

/// How long any one condition may take before the test fails saying what did not happen.
const WAIT: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(ROLE_EXEC) => role_exec(&args[2..]),
        Some(ROLE_APP) => role_app(&args[2..]),
        Some(ROLE_HTTP) => role_http(&args[2..]),
        // Test runners that enumerate tests first (`--list`) get the one test this binary holds.
        _ if args.iter().any(|a| a == "--list") => println!("mesh_netns: test"),
        _ => {
            let started = Instant::now();
            if let Some(env) = environment() {
                mesh_in_network_namespaces(&env);
                println!(
                    "mesh_netns: PASSED in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Roles of the re-executed binary
// ---------------------------------------------------------------------------------------------------

/// `ROLE_EXEC uid gid program args...`: becomes `program` as uid/gid (what `runAsUser`/`runAsGroup` ask),
/// keeping the network namespace `ip netns exec` put us in and the environment we were given.
fn role_exec(args: &[String]) -> ! {
    let [uid, gid, program, rest @ ..] = args else {
        eprintln!("{ROLE_EXEC}: expected uid gid program [args...]");
        std::process::exit(2);
    };
    let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
        eprintln!("{ROLE_EXEC}: uid {uid:?} / gid {gid:?} are not numbers");
        std::process::exit(2);
    };
    let err = Command::new(program).args(rest).uid(uid).gid(gid).exec();
    eprintln!("{ROLE_EXEC}: cannot run {program} as {uid}:{gid}: {err}");
    std::process::exit(127);
}

/// `ROLE_APP pod-name port`: the application. Answers every request with a JSON document naming the
/// pod and echoing the request's method, path and headers, and prints the same document as one line on
/// stdout (the test's record of what the app saw). Keep-alive, like any HTTP/1.1 server.
fn role_app(args: &[String]) -> ! {
    let [pod, port] = args else {
        eprintln!("{ROLE_APP}: expected pod-name port");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{ROLE_APP}: cannot listen on 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    for conn in listener.incoming().flatten() {
        let pod = pod.clone();
        std::thread::spawn(move || app_connection(conn, &pod));
    }
    std::process::exit(1);
}

fn app_connection(conn: TcpStream, pod: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let Some((method, path, headers)) = read_head(&mut reader) else {
            return;
        };
        let length = header(&headers, "content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink()).is_err() {
            return;
        }
        let seen = json!({"pod": pod, "method": method, "path": path, "headers": headers});
        let line = seen.to_string();
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        let body = format!("{line}\n");
        let close = header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Header names (lower-cased) and values, in order.
type Headers = Vec<(String, String)>;

/// The first two words of the request or status line and the headers, or `None` at end of stream.
fn read_head(reader: &mut impl BufRead) -> Option<(String, String, Headers)> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut parts = first.split_whitespace();
    let a = parts.next()?.to_string();
    let b = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Some((a, b, headers))
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `ROLE_HTTP METHOD URL [name:value...]`: one HTTP/1.1 request (`connection: close`, 5 s timeouts);
/// prints the answer as one JSON document (status, headers, body). Exit 1 when there is no answer.
fn role_http(args: &[String]) -> ! {
    let [method, url, extra @ ..] = args else {
        eprintln!("{ROLE_HTTP}: expected METHOD URL [name:value...]");
        std::process::exit(2);
    };
    match http_request(method, url, extra) {
        Ok((status, headers, body)) => {
            println!(
                "{}",
                json!({"status": status, "headers": headers, "body": body})
            );
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{method} {url}: {e}");
            std::process::exit(1);
        }
    }
}

fn http_request(method: &str, url: &str, extra: &[String]) -> Result<Reply, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("address {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {authority}: nothing to connect to"))?;
    let timeout = Duration::from_secs(5);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: mesh-netns-test\r\n\
         connection: close\r\ncontent-length: 0\r\n"
    );
    for h in extra {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut reader = BufReader::new(stream);
    let (_, code, headers) = read_head(&mut reader).ok_or("no response head")?;
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status code {code:?}"))?;
    let mut body = Vec::new();
    match header(&headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        Some(n) => reader.take(n).read_to_end(&mut body),
        None => reader.read_to_end(&mut body),
    }
    .map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// Status, response headers and body.
type Reply = (u16, Headers, String);

// ---------------------------------------------------------------------------------------------------
// Environment: root, tools, binaries
// ---------------------------------------------------------------------------------------------------

/// Start the test application (this binary as `ROLE_APP`) inside a network namespace.
fn spawn_app(lab: &mut Lab, env: &Env, ns: &str, pod: &str, port: u16, what: &str) -> usize {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(&env.me)
        .args([ROLE_APP, pod, &port.to_string()]);
    lab.spawn(what, cmd)
}

struct Env {
    proxy: PathBuf,
    init: PathBuf,
    operator: PathBuf,
    me: PathBuf,
}

fn skip_or_fail(why: &str) -> Option<Env> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("mesh_netns cannot run under CI=true: {why}");
    }
    eprintln!("mesh_netns: SKIPPED: {why}");
    None
}

fn environment() -> Option<Env> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return skip_or_fail(
            "not running as root (network namespaces, iptables and running the proxy as uid 1337 need it)",
        );
    }
    for (tool, args) in [
        ("ip", &["-V"][..]),
        ("iptables", &["--version"][..]),
        ("iptables-restore", &["--version"][..]),
    ] {
        let ok = Command::new(tool)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return skip_or_fail(&format!(
                "`{tool}` is missing (install iproute2 and iptables)"
            ));
        }
    }
    let me = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/mesh_netns-<hash> → target/<profile>/
    let dir = me
        .parent()
        .map(|d| {
            if d.ends_with("deps") {
                d.parent().unwrap_or(d)
            } else {
                d
            }
        })
        .expect("the test executable's directory")
        .to_path_buf();
    // HALYARD_BIN_DIR: binaries built elsewhere (another profile, a copy that other builds cannot replace).
    let dir = std::env::var_os("HALYARD_BIN_DIR").map_or(dir, PathBuf::from);
    let bins: Vec<PathBuf> = ["halyard-proxy", "halyard-init", "halyard-operator"]
        .iter()
        .map(|b| dir.join(b))
        .collect();
    let missing: Vec<String> = bins
        .iter()
        .filter(|b| !b.is_file())
        .map(|b| b.display().to_string())
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "missing {} (`cargo test --workspace` builds them; or run \
             `cargo build -p halyard-proxy -p halyard-init -p halyard-operator --bins`)",
            missing.join(", ")
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("mesh_netns: {why}");
        }
        eprintln!("mesh_netns: SKIPPED: {why}");
        return None;
    }
    let [proxy, init, operator] = <[PathBuf; 3]>::try_from(bins).expect("three binaries");
    Some(Env {
        proxy,
        init,
        operator,
        me,
    })
}

// ---------------------------------------------------------------------------------------------------
// The lab: namespaces and processes, cleaned up on drop
// ---------------------------------------------------------------------------------------------------

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Everything the test created. Dropping it kills the processes first (a namespace with processes in
/// it outlives `ip netns del`), then deletes the namespaces (which deletes the veth pairs in them).
/// When the test is failing it first prints the tail of every process's log.
struct Lab {
    procs: Vec<Proc>,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.procs {
                let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!(
                    "---- {} (last {} lines of {}) ----\n{}",
                    p.name,
                    tail.len(),
                    p.log.display(),
                    tail.join("\n")
                );
            }
        }
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Lab {
    fn add_namespace(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        in_ns(name, &["ip", "link", "set", "lo", "up"]);
    }

    /// Starts `cmd` (already holding its args and env), with stdout and stderr in `<name>.log`.
    fn spawn(&mut self, name: &str, mut cmd: Command) -> usize {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut file = File::create(&log).expect("a log file");
        // The command line and environment first, for whoever reads the log of a failure.
        writeln!(file, "$ {cmd:?}").expect("writing a log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file handle"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        self.procs.len() - 1
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.procs[i].log).unwrap_or_default()
    }

    /// The process's exit status if it has exited, without waiting.
    fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        self.procs[i].child.try_wait().ok().flatten()
    }
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn in_ns(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// Runs `cmd` to completion, killing it after `limit`. Its output is read while it runs (a page of
/// metrics does not fit in a pipe).
fn output_within(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Pods: the specs, injection, what the kubelet resolves
// ---------------------------------------------------------------------------------------------------

/// A Deployment's pod: `sleep` (no ports) or `httpbin` (port `http`, a readiness probe on it, and
/// holdApplicationUntilProxyStarts so that the kubelet runs the proxy's postStart hook before the app).
fn pod_spec(name: &str, app: &str, with_port: bool) -> Value {
    let hash = name
        .strip_prefix(&format!("{app}-"))
        .and_then(|r| r.split('-').next())
        .expect("pod names are <deployment>-<hash>-<suffix>");
    let mut container = json!({
        "name": app,
        "image": format!("docker.io/kennethreitz/{app}"),
    });
    if with_port {
        container["ports"] =
            json!([{"name": "http", "containerPort": APP_PORT, "protocol": "TCP"}]);
        container["readinessProbe"] = json!({
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 2,
        });
    } else {
        container["command"] = json!(["/bin/sleep", "infinity"]);
    }
    let annotations = if with_port {
        json!({"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"})
    } else {
        json!({})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": annotations,
            "labels": {"app": app, "version": "v1", "pod-template-hash": hash},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{hash}"),
                "uid": "00000000-0000-0000-0000-000000000000", "controller": true,
            }],
        },
        "spec": {
            "serviceAccountName": app,
            "nodeName": NODE_NAME,
            "containers": [container],
        },
    })
}

/// The injector as a cluster runs it: the injection template and mesh config that halyard-operator
/// renders for `operator/deploy/meshinstall-default.yaml` (the ConfigMaps the webhook mounts as
/// `--injection-template` and `--mesh-config`), told that discovery is at `discovery`; and that mesh
/// ConfigMap, which the control plane reads too.
fn rendered_injector(discovery: &str) -> (Injector, Value) {
    let install: MeshInstall = serde_yaml::from_str(include_str!(
        "../../operator/deploy/meshinstall-default.yaml"
    ))
    .expect("operator/deploy/meshinstall-default.yaml is a MeshInstall");
    let settings = RenderSettings {
        hub: "registry.example/halyard".into(),
        operator_version: env!("CARGO_PKG_VERSION").into(),
        discovery_address: discovery.to_string(),
        webhook_url: None,
    };
    // Rendering copies the certificate text without parsing it.
    let serving = ServingCert {
        cert_chain_pem: "-----BEGIN CERTIFICATE-----\nU0VSVklORw==\n-----END CERTIFICATE-----\n"
            .into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n".into(),
        ca_bundle_pem: "-----BEGIN CERTIFICATE-----\nUk9PVA==\n-----END CERTIFICATE-----\n".into(),
    };
    let objects = render::render(&RenderInput {
        install: &install,
        settings: &settings,
        serving: &serving,
        validation_fail_closed: true,
        // This kubelet runs the proxy as a regular container.
        native_sidecars_supported: false,
    })
    .unwrap_or_else(|e| panic!("rendering the default MeshInstall: {e}"));
    let data = |key: &str| {
        objects
            .iter()
            .filter(|o| o["kind"] == "ConfigMap")
            .find_map(|o| o["data"][key].as_str())
            .unwrap_or_else(|| panic!("the rendered install has no ConfigMap with data.{key}"))
    };
    let template = InjectionTemplate::from_yaml(data("config"), "the rendered injector ConfigMap")
        .unwrap_or_else(|e| panic!("{e}"));
    let mesh = MeshConfig::from_yaml(data("mesh"), "the rendered mesh ConfigMap")
        .unwrap_or_else(|e| panic!("{e}"));
    let mesh_config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["data"]["mesh"].is_string())
        .cloned()
        .expect("the rendered mesh ConfigMap");
    (Injector::new(template, mesh), mesh_config_map)
}

fn inject(injector: &Injector, pod: &Value) -> Value {
    match injector.inject(pod, &PodContext::default()) {
        Ok(Outcome::Injected(p)) => p,
        Ok(Outcome::Skipped(why)) => panic!(
            "the injector skipped pod {}: {why:?}",
            pod["metadata"]["name"]
        ),
        Err(e) => panic!("injecting pod {}: {e}", pod["metadata"]["name"]),
    }
}

/// The named container from `containers` or `initContainers`.
fn container<'p>(pod: &'p Value, list: &str, name: &str) -> &'p Value {
    pod["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| {
            panic!(
                "the injected pod {} has no {list} entry {name:?}",
                pod["metadata"]["name"]
            )
        })
}

/// What the kubelet knows about a running pod that the spec does not say.
struct PodRuntime<'a> {
    ip: &'a str,
    host_ip: &'a str,
}

/// A Kubernetes quantity divided by `divisor`, rounded up, as the downward API's resourceFieldRef gives it.
fn quantity(text: &str, divisor: &str) -> u64 {
    fn parse(q: &str) -> f64 {
        let units = [
            ("Ki", 1024f64),
            ("Mi", 1024f64.powi(2)),
            ("Gi", 1024f64.powi(3)),
            ("Ti", 1024f64.powi(4)),
            ("m", 1e-3),
            ("k", 1e3),
            ("M", 1e6),
            ("G", 1e9),
            ("T", 1e12),
        ];
        for (suffix, factor) in units {
            if let Some(n) = q.strip_suffix(suffix) {
                return n
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("quantity {q:?}"))
                    * factor;
            }
        }
        q.parse::<f64>()
            .unwrap_or_else(|_| panic!("quantity {q:?}"))
    }
    (parse(text) / parse(divisor)).ceil() as u64
}

/// `$(NAME)` references to earlier variables, as the kubelet expands them in env values and args.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) if env.contains_key(&after[..end]) => {
                out.push_str(&env[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment as the kubelet computes it (fieldRef and resourceFieldRef resolved).
fn container_env(pod: &Value, c: &Value, rt: &PodRuntime<'_>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in c["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = var.get("value") {
            expand(v.as_str().unwrap_or(""), &env)
        } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            let meta = &pod["metadata"];
            match path {
                "metadata.name" => meta["name"].as_str().unwrap_or("").to_string(),
                "metadata.namespace" => meta["namespace"].as_str().unwrap_or("").to_string(),
                "metadata.uid" => meta["uid"].as_str().unwrap_or("").to_string(),
                "status.podIP" => rt.ip.to_string(),
                "status.podIPs" => rt.ip.to_string(),
                "status.hostIP" => rt.host_ip.to_string(),
                "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string(),
                "spec.nodeName" => NODE_NAME.to_string(),
                other => {
                    let (map, key) = other
                        .strip_suffix("']")
                        .and_then(|o| o.split_once("['"))
                        .unwrap_or_else(|| {
                            panic!("env {name}: fieldRef {other:?} is not one a kubelet resolves")
                        });
                    let map = map.strip_prefix("metadata.").unwrap_or(map);
                    meta[map][key].as_str().unwrap_or("").to_string()
                }
            }
        } else if let Some(r) = var["valueFrom"].get("resourceFieldRef") {
            let resource = r["resource"].as_str().expect("resourceFieldRef.resource");
            let (kind, what) = resource
                .split_once('.')
                .unwrap_or_else(|| panic!("env {name}: resource {resource:?}"));
            let q = c["resources"][kind][what]
                .as_str()
                .unwrap_or_else(|| panic!("env {name}: the container has no resources.{resource}"));
            let divisor = r["divisor"].as_str().unwrap_or("1");
            quantity(q, divisor).to_string()
        } else {
            panic!("env {name}: neither value nor a valueFrom a kubelet resolves here: {var}");
        };
        env.insert(name, value);
    }
    env
}

/// The injected container's command + args, `$(VAR)` expanded, with the halyard binary's real path.
fn command_line(
    c: &Value,
    env: &BTreeMap<String, String>,
    binaries: &[(&str, &Path)],
) -> Vec<String> {
    let words: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .map(|w| expand(w.as_str().expect("command words are strings"), env))
        .collect();
    let first = words
        .first()
        .unwrap_or_else(|| panic!("container {} has no command", c["name"]));
    let (_, path) = binaries
        .iter()
        .find(|(name, _)| first == name || first.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| {
            panic!(
                "container {}: command {first:?} is none of the halyard binaries",
                c["name"]
            )
        });
    let mut out = vec![path.display().to_string()];
    out.extend(words[1..].iter().cloned());
    out
}

/// The downward API's `metadata.labels` file: `key="value"` lines, sorted by key.
fn downward_labels(pod: &Value) -> String {
    let labels: BTreeMap<String, String> =
        serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap_or_default();
    labels
        .iter()
        .map(|(k, v)| format!("{k}={}\n", serde_json::to_string(v).expect("a label value")))
        .collect()
}

/// The pod as the API server would hold it once the kubelet reported it running.
fn with_status(pod: &Value, ip: &str, ready: bool) -> Value {
    let mut pod = pod.clone();
    pod["status"] = json!({
        "phase": "Running",
        "hostIP": NODE_IP,
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    });
    pod
}

fn services() -> String {
    let svc = |name: &str, vip: &str, port: u16| {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
            "spec": {
                "clusterIP": vip,
                "selector": {"app": name},
                "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
            },
        })
    };
    [
        svc("httpbin", HTTPBIN_VIP, SERVICE_PORT),
        svc("sleep", SLEEP_VIP, 80),
    ]
    .iter()
    .map(|d| serde_yaml::to_string(d).expect("yaml"))
    .collect::<Vec<_>>()
    .join("---\n")
}

/// Replaces a file of the config directory atomically (write + rename).
fn write_config(dir: &Path, file: &str, docs: &[Value]) {
    let text = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("yaml"))
        .collect::<Vec<_>>()
        .join("---\n");
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("writing the config directory");
    std::fs::rename(&tmp, dir.join(file)).expect("renaming into the config directory");
}

// ---------------------------------------------------------------------------------------------------
// Observing: HTTP from inside a namespace, syncz, Prometheus text
// ---------------------------------------------------------------------------------------------------

/// One HTTP request made from inside `ns` by the re-executed test binary (uid 0, so never captured as
/// the proxy's own traffic): `Ok((status, body))`, or `Err` with why there was no answer.
fn http_in(
    env: &Env,
    ns: &str,
    method: &str,
    url: &str,
    headers: &[&str],
) -> Result<(u16, String), String> {
    http_in_full(env, ns, method, url, headers).map(|(status, _, body)| (status, body))
}

/// [`http_in`] with the response headers.
fn http_in_full(
    env: &Env,
    ns: &str,
    method: &str,
    url: &str,
    headers: &[&str],
) -> Result<Reply, String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(&env.me)
        .args([ROLE_HTTP, method, url])
        .args(headers);
    let out = output_within(
        cmd,
        Duration::from_secs(10),
        &format!("{method} {url} in {ns}"),
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let reply: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "unparsable helper output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let status = reply["status"].as_u64().and_then(|s| u16::try_from(s).ok());
    let headers: Option<Headers> = serde_json::from_value(reply["headers"].clone()).ok();
    match (status, headers, reply["body"].as_str()) {
        (Some(status), Some(headers), Some(body)) => Ok((status, headers, body.to_string())),
        _ => Err(format!("unexpected helper output: {reply}")),
    }
}

/// Polls `check` every 150 ms until it gives `Some`, failing after [`WAIT`] with `what` and the last
/// observation.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("within {WAIT:?}: {what} did not happen; last observation: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(150)),
        }
    }
}

fn syncz(env: &Env, node_ns: &str) -> Result<SyncReport, String> {
    let (status, body) = http_in(
        env,
        node_ns,
        "GET",
        &format!("http://{NODE_IP}:15014/debug/syncz"),
        &[],
    )?;
    if status != 200 {
        return Err(format!("/debug/syncz answered {status}: {body}"));
    }
    serde_json::from_str(&body)
        .map_err(|e| format!("/debug/syncz is not a SyncReport: {e}: {body}"))
}

/// `Ok(version)` when every one of `proxies` is connected, every type it subscribed to is SYNCED and its
/// config was computed from the control plane's newest snapshot, which is newer than `after`.
fn all_synced(report: &SyncReport, proxies: &[String], after: u64) -> Result<u64, String> {
    if report.config_version <= after {
        return Err(format!(
            "control plane at config version {} (waiting for a version after {after})",
            report.config_version
        ));
    }
    for id in proxies {
        let p = report
            .proxies
            .iter()
            .find(|p| &p.proxy_id == id)
            .ok_or_else(|| {
                format!(
                    "proxy {id} is not connected (connected: {:?})",
                    report
                        .proxies
                        .iter()
                        .map(|p| &p.proxy_id)
                        .collect::<Vec<_>>()
                )
            })?;
        let states: Vec<(String, SyncState)> = p
            .types
            .keys()
            .map(|t| (t.clone(), p.state(t)))
            .filter(|(_, s)| *s != SyncState::Ignored)
            .collect();
        if states.is_empty() || states.iter().any(|(_, s)| *s != SyncState::Synced) {
            return Err(format!("proxy {id}: {states:?}"));
        }
        if p.config_version != report.config_version {
            return Err(format!(
                "proxy {id} runs config version {} of {}",
                p.config_version, report.config_version
            ));
        }
    }
    Ok(report.config_version)
}

/// Every object of the config directory was taken: `/debug/configz` lists none as rejected.
fn assert_nothing_rejected(env: &Env, node_ns: &str) {
    let url = format!("http://{NODE_IP}:15014/debug/configz");
    let (status, body) =
        http_in(env, node_ns, "GET", &url, &[]).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(status, 200, "GET {url}: {body}");
    let configz: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"));
    assert_eq!(
        configz["rejected"],
        json!([]),
        "the control plane skipped objects of the config directory"
    );
}

/// `name{labels} value` lines of a Prometheus text page.
fn samples(text: &str, metric: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let mut labels = BTreeMap::new();
        let mut chars = rest.char_indices().peekable();
        let mut end = None;
        while let Some(&(start, c)) = chars.peek() {
            if c == '}' {
                end = Some(start + 1);
                break;
            }
            if c == ',' || c == ' ' {
                chars.next();
                continue;
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            chars.next(); // opening quote
            let mut value = String::new();
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                match (escaped, c) {
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (true, c) => {
                        value.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, c) => value.push(c),
                }
            }
            labels.insert(key, value);
        }
        let Some(end) = end else { continue };
        if let Ok(v) = rest[end..].split_whitespace().next().unwrap_or("").parse() {
            out.push((labels, v));
        }
    }
    out
}

/// The sum of `istio_requests_total` over the series whose labels include all of `want`.
fn requests_total(text: &str, want: &[(&str, &str)]) -> f64 {
    samples(text, "istio_requests_total")
        .iter()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Packets that went through the nat chain `chain`'s REDIRECT rules in `ns`.
fn redirected_packets(ns: &str, chain: &str) -> u64 {
    let out = in_ns(
        ns,
        &["iptables", "-t", "nat", "-L", chain, "-n", "-v", "-x"],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("REDIRECT"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The requests the app printed, one JSON document per line.
fn app_requests(lab: &Lab, app: usize) -> Vec<Value> {
    lab.log(app)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------------

/// The injected `istio-init` container, as its securityContext says (uid 0 with NET_ADMIN), in the
/// pod's namespace, to completion.
fn run_init(pod: &Value, net: &PodNet, binaries: &[(&str, &Path)]) {
    let pod_name = pod["metadata"]["name"].as_str().expect("pod name");
    let rt = PodRuntime {
        ip: net.ip,
        host_ip: NODE_IP,
    };
    let init = container(pod, "initContainers", "istio-init");
    assert_eq!(
        init["securityContext"]["runAsUser"], 0,
        "istio-init is expected to run as root (NET_ADMIN): {init}"
    );
    let init_env = container_env(pod, init, &rt);
    let argv = command_line(init, &init_env, binaries);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.ns])
        .args(&argv)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&init_env);
    let out = output_within(
        cmd,
        Duration::from_secs(30),
        &format!("istio-init of {pod_name}"),
    );
    assert!(
        out.status.success(),
        "istio-init of {pod_name} ({argv:?}) failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace's nat table without counters and comments.
fn nat_rules(ns: &str) -> String {
    let out = in_ns(ns, &["iptables-save", "-t", "nat"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.rfind(" [") {
            Some(i) if l.starts_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct PodNet {
    ns: String,
    ip: &'static str,
    gateway: &'static str,
    node_side: &'static str,
}

/// Namespaces an earlier run of this test left behind when it was killed before its cleanup ran
/// (`hmn-<role>-<pid>` whose pid is gone): their processes are stopped and the namespaces deleted.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = ["hmn-node-", "hmn-sleep-", "hmn-httpbin-"]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("mesh_netns: removing {name}, left behind by an earlier run (pid {pid} is gone)");
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", p]).output();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
}

fn mesh_in_network_namespaces(env: &Env) {
    remove_stale_namespaces();
    let id = std::process::id();
    let dir = tempfile::Builder::new()
        .prefix("halyard-mesh-netns-")
        .tempdir()
        .expect("a temporary directory");
    // The proxy runs as uid 1337 and reads the labels file under here.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the temporary directory");
    let mut lab = Lab {
        procs: Vec::new(),
        namespaces: Vec::new(),
        dir,
    };
    let root = lab.dir.path().to_path_buf();
    let config_dir = root.join("config");
    std::fs::create_dir(&config_dir).expect("the config directory");
    // The proxy runs as uid 1337, which may not be able to reach the build directory (a checkout under
    // /root): it runs from a world-readable copy, which also cannot change under the test.
    let proxy_bin = root.join("halyard-proxy");
    std::fs::copy(&env.proxy, &proxy_bin).unwrap_or_else(|e| {
        panic!(
            "copying {} to {}: {e}",
            env.proxy.display(),
            proxy_bin.display()
        )
    });
    std::fs::set_permissions(
        &proxy_bin,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the proxy's copy");

    // --- the API server's part: inject the pods -------------------------------------------------
    let discovery = format!("{NODE_IP}:15010");
    let (injector, mesh_config_map) = rendered_injector(&discovery);
    let sleep = inject(&injector, &pod_spec(SLEEP_POD, "sleep", false));
    let httpbin = inject(&injector, &pod_spec(HTTPBIN_POD, "httpbin", true));

    // --- the node: namespaces, veth pairs, addresses, routes ---------------------------------------
    let node_ns = format!("hmn-node-{id}");
    lab.add_namespace(&node_ns);
    in_ns(
        &node_ns,
        &["ip", "addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"],
    );
    in_ns(
        &node_ns,
        &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
    );
    let nets = [
        PodNet {
            ns: format!("hmn-sleep-{id}"),
            ip: SLEEP_IP,
            gateway: "10.44.1.1",
            node_side: "to-sleep",
        },
        PodNet {
            ns: format!("hmn-httpbin-{id}"),
            ip: HTTPBIN_IP,
            gateway: "10.44.2.1",
            node_side: "to-httpbin",
        },
    ];
    for net in &nets {
        lab.add_namespace(&net.ns);
        // Both ends are created inside our namespaces: nothing appears in the host's namespace.
        run(&[
            "ip",
            "-n",
            &node_ns,
            "link",
            "add",
            net.node_side,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.ns,
        ]);
        in_ns(
            &node_ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.gateway),
                "dev",
                net.node_side,
            ],
        );
        in_ns(&node_ns, &["ip", "link", "set", net.node_side, "up"]);
        in_ns(
            &net.ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.ip),
                "dev",
                "eth0",
            ],
        );
        in_ns(&net.ns, &["ip", "link", "set", "eth0", "up"]);
        in_ns(
            &net.ns,
            &["ip", "route", "add", "default", "via", net.gateway],
        );
    }
    let (sleep_ns, httpbin_ns) = (nets[0].ns.clone(), nets[1].ns.clone());

    // --- the control plane --------------------------------------------------------------------------
    std::fs::write(config_dir.join("services.yaml"), services()).expect("services.yaml");
    write_config(&config_dir, "mesh.yaml", &[mesh_config_map]);
    write_config(
        &config_dir,
        "pods.yaml",
        &[
            with_status(&sleep, SLEEP_IP, false),
            with_status(&httpbin, HTTPBIN_IP, false),
        ],
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node_ns])
        .arg(&env.operator)
        .arg("--config-dir")
        .arg(&config_dir)
        .args([
            "--grpc-addr",
            &discovery,
            "--monitoring-addr",
            &format!("{NODE_IP}:15014"),
            "--control-plane-id",
            "halyard-operator-netns",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    let operator = lab.spawn("halyard-operator", cmd);
    let first = wait_for(
        "the control plane answers /debug/syncz in the node namespace",
        || {
            if let Some(status) = lab.exited(operator) {
                panic!("halyard-operator exited ({status}) before serving /debug/syncz");
            }
            syncz(env, &node_ns)
        },
    );

    // --- the kubelet's part: init container, proxy, app -------------------------------------------
    let binaries = [
        ("halyard-proxy", proxy_bin.as_path()),
        ("halyard-init", env.init.as_path()),
    ];
    let mut proxies = Vec::new();
    let mut held = false;
    for (pod, net) in [(&sleep, &nets[0]), (&httpbin, &nets[1])] {
        let pod_name = pod["metadata"]["name"].as_str().expect("pod name");
        let rt = PodRuntime {
            ip: net.ip,
            host_ip: NODE_IP,
        };
        run_init(pod, net, &binaries);

        // istio-proxy: command, args and env from the injected spec, as runAsUser/runAsGroup.
        let proxy = container(pod, "containers", "istio-proxy");
        let sc = &proxy["securityContext"];
        let (uid, gid) = (
            sc["runAsUser"].as_u64().expect("istio-proxy runAsUser"),
            sc["runAsGroup"].as_u64().expect("istio-proxy runAsGroup"),
        );
        assert_ne!(
            uid, 0,
            "istio-proxy must not run as root: the capture rules exclude its uid"
        );
        let mut proxy_env = container_env(pod, proxy, &rt);
        // The downward-API volume, at its mount path under this pod's directory.
        let podinfo = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| {
                v["downwardAPI"]["items"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| i["fieldRef"]["fieldPath"] == "metadata.labels")
                })
            });
        if let Some(volume) = podinfo {
            let mount = proxy["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["name"] == volume["name"])
                .and_then(|m| m["mountPath"].as_str())
                .unwrap_or_else(|| {
                    panic!("istio-proxy does not mount the volume {}", volume["name"])
                });
            let item = volume["downwardAPI"]["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["fieldRef"]["fieldPath"] == "metadata.labels")
                .and_then(|i| i["path"].as_str())
                .expect("the labels item's path");
            let host_dir = root.join(pod_name).join(mount.trim_start_matches('/'));
            std::fs::create_dir_all(&host_dir).expect("the pod's volume directory");
            for d in host_dir.ancestors().take_while(|d| d.starts_with(&root)) {
                std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .expect("chmod a volume directory");
            }
            std::fs::write(host_dir.join(item), downward_labels(pod)).expect("the labels file");
            // halyard-proxy's flag for "where the downward-API labels are" (default: the mount path).
            proxy_env.insert(
                "HALYARD_POD_LABELS_FILE".into(),
                host_dir.join(item).display().to_string(),
            );
        }
        proxy_env.insert("HOSTNAME".into(), pod_name.to_string());
        let argv = command_line(proxy, &proxy_env, &binaries);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.ns])
            .arg(&env.me)
            .args([ROLE_EXEC, &uid.to_string(), &gid.to_string()])
            .args(&argv)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&proxy_env);
        proxies.push(lab.spawn(&format!("istio-proxy of {pod_name}"), cmd));

        // A postStart exec hook (holdApplicationUntilProxyStarts) runs in the container, as its user,
        // with its env; the kubelet starts the next container only once it has succeeded.
        if let Some(hook) = proxy["lifecycle"]["postStart"]["exec"].as_object() {
            let hook_container =
                json!({"name": "istio-proxy postStart", "command": hook["command"]});
            let argv = command_line(&hook_container, &proxy_env, &binaries);
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &net.ns])
                .arg(&env.me)
                .args([ROLE_EXEC, &uid.to_string(), &gid.to_string()])
                .args(&argv)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(&proxy_env);
            let started = Instant::now();
            let out = output_within(cmd, WAIT, &format!("the postStart hook of {pod_name}"));
            assert!(
                out.status.success(),
                "the istio-proxy postStart hook {argv:?} of {pod_name} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // What the hook promises the app containers started after it: the proxy is ready now.
            let ready_url = format!("http://{}:15021/healthz/ready", net.ip);
            let ready = http_in(env, &node_ns, "GET", &ready_url, &[]);
            assert!(
                matches!(ready, Ok((200, _))),
                "the postStart hook of {pod_name} returned but {ready_url} says {ready:?}"
            );
            println!(
                "mesh_netns: the postStart hook {:?} of {pod_name} returned after {} ms with the proxy ready",
                &argv[1..],
                started.elapsed().as_millis()
            );
            held = true;
        }
    }
    assert!(
        held,
        "the httpbin pod asks for holdApplicationUntilProxyStarts but its istio-proxy has no postStart exec hook"
    );
    let (sleep_proxy, httpbin_proxy) = (proxies[0], proxies[1]);

    let app = spawn_app(
        &mut lab,
        env,
        &httpbin_ns,
        HTTPBIN_POD,
        APP_PORT,
        "httpbin app",
    );

    // --- 1. both proxies SYNCED --------------------------------------------------------------------
    let ids = [
        format!("{SLEEP_POD}.{NAMESPACE}"),
        format!("{HTTPBIN_POD}.{NAMESPACE}"),
    ];
    let mut version = wait_for("both proxies SYNCED in /debug/syncz", || {
        for (i, p) in proxies.iter().enumerate() {
            if let Some(status) = lab.exited(*p) {
                panic!("{} exited ({status}) before it synced", ids[i]);
            }
        }
        all_synced(
            &syncz(env, &node_ns)?,
            &ids,
            first.config_version.saturating_sub(1),
        )
    });
    assert_nothing_rejected(env, &node_ns);
    println!("mesh_netns: both proxies SYNCED at config version {version}");

    // --- 2. the kubelet's probes: the proxy's readiness and the rewritten app probe ------------------
    let app_container = container(&httpbin, "containers", "httpbin");
    let probe = &app_container["readinessProbe"]["httpGet"];
    let probe_path = probe["path"]
        .as_str()
        .expect("the rewritten readiness probe's path");
    assert_eq!(
        (probe_path, probe["port"].as_u64()),
        ("/app-health/httpbin/readyz", Some(15020)),
        "the injector should have moved the app's readiness probe to the agent port: {probe}"
    );
    let probe_url = format!("http://{HTTPBIN_IP}:15020{probe_path}");
    let proxy_ready =
        container(&httpbin, "containers", "istio-proxy")["readinessProbe"]["httpGet"].clone();
    let proxy_ready_url = format!(
        "http://{HTTPBIN_IP}:{}{}",
        proxy_ready["port"],
        proxy_ready["path"]
            .as_str()
            .expect("the proxy's readiness path")
    );
    wait_for(
        &format!("the istio-proxy readiness probe {proxy_ready_url} answers 200"),
        || match http_in(env, &node_ns, "GET", &proxy_ready_url, &[])? {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    wait_for(
        &format!("the rewritten app readiness probe {probe_url} answers 200"),
        || match http_in(env, &node_ns, "GET", &probe_url, &[])? {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // The kubelet reports the pods Ready; the control plane turns them into healthy endpoints.
    write_config(
        &config_dir,
        "pods.yaml",
        &[
            with_status(&sleep, SLEEP_IP, true),
            with_status(&httpbin, HTTPBIN_IP, true),
        ],
    );
    version = wait_for("both proxies ACK the pods turning Ready", || {
        all_synced(&syncz(env, &node_ns)?, &ids, version)
    });
    println!("mesh_netns: pods Ready; both proxies SYNCED at config version {version}");

    // --- 3. traffic: client pod → VIP → 15001 → network → 15006 → app ---------------------------------
    let out_before = redirected_packets(&sleep_ns, "ISTIO_REDIRECT");
    let in_before = redirected_packets(&httpbin_ns, "ISTIO_IN_REDIRECT");
    let url = format!("http://{HTTPBIN_VIP}:{SERVICE_PORT}/headers");
    const CALLS: usize = 5;
    for i in 0..CALLS {
        let marker = format!("x-mesh-test: call-{i}");
        let (status, headers, body) =
            wait_for(&format!("call {i} from the sleep pod to {url}"), || {
                http_in_full(env, &sleep_ns, "GET", &url, &[&marker])
            });
        assert_eq!(status, 200, "call {i} to {url}: {body}");
        // The server's proxy puts its metadata on the response; the client's proxy takes it off.
        let leaked: Vec<&(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-envoy-peer-metadata"))
            .collect();
        assert!(
            leaked.is_empty(),
            "call {i}: the client saw the peer-metadata headers {leaked:?}"
        );
        let seen: Value = serde_json::from_str(body.trim())
            .unwrap_or_else(|e| panic!("call {i}: the app's answer is not its JSON ({e}): {body}"));
        assert_eq!(
            seen["pod"], HTTPBIN_POD,
            "call {i} answered by the wrong pod: {body}"
        );
    }
    let requests: Vec<Value> = app_requests(&lab, app)
        .into_iter()
        .filter(|r| r["path"] == "/headers")
        .collect();
    assert_eq!(
        requests.len(),
        CALLS,
        "the app should have seen exactly the {CALLS} calls: {requests:?}"
    );
    for (i, r) in requests.iter().enumerate() {
        let headers: Vec<(String, String)> =
            serde_json::from_value(r["headers"].clone()).expect("the app's header list");
        assert_eq!(
            header(&headers, "x-mesh-test"),
            Some(format!("call-{i}").as_str()),
            "the app saw call {i} without its header: {r}"
        );
        let leaked: Vec<&String> = headers
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("x-envoy-peer-metadata"))
            .collect();
        assert!(
            leaked.is_empty(),
            "the app saw the peer-metadata headers {leaked:?}: {r}"
        );
    }
    let out_after = redirected_packets(&sleep_ns, "ISTIO_REDIRECT");
    let in_after = redirected_packets(&httpbin_ns, "ISTIO_IN_REDIRECT");
    assert!(
        out_after >= out_before + CALLS as u64,
        "the sleep pod's outbound capture (ISTIO_REDIRECT → 15001) redirected {} connections for {CALLS} calls",
        out_after - out_before
    );
    // The client proxy keeps its upstream connection alive, so the calls may share one connection, and
    // the nat table sees only a connection's first packet.
    assert!(
        in_after > in_before,
        "the httpbin pod's inbound capture (ISTIO_IN_REDIRECT → 15006) redirected no connection for {CALLS} calls"
    );

    // --- 4. both proxies counted them, with Istio's labels -----------------------------------------------
    let source_labels = [
        ("reporter", "source"),
        ("source_workload", "sleep"),
        ("source_app", "sleep"),
        ("destination_app", "httpbin"),
        ("destination_version", "v1"),
        ("destination_workload", "httpbin"),
        ("destination_service", "httpbin.default.svc.cluster.local"),
        ("response_code", "200"),
    ];
    let destination_labels = [
        ("reporter", "destination"),
        ("source_workload", "sleep"),
        ("source_app", "sleep"),
        ("source_version", "v1"),
        ("source_workload_namespace", "default"),
        ("destination_app", "httpbin"),
        ("destination_workload", "httpbin"),
        ("response_code", "200"),
    ];
    for (what, pod, pod_ip, want) in [
        (
            "the sleep proxy (reporter=source)",
            &sleep,
            SLEEP_IP,
            &source_labels,
        ),
        (
            "the httpbin proxy (reporter=destination)",
            &httpbin,
            HTTPBIN_IP,
            &destination_labels,
        ),
    ] {
        // The proxy's own port, and where the injected annotations tell Prometheus to scrape the pod
        // (the agent's merged page).
        let annotations = &pod["metadata"]["annotations"];
        let scrape = format!(
            "http://{pod_ip}:{}{}",
            annotations["prometheus.io/port"]
                .as_str()
                .unwrap_or("<no prometheus.io/port>"),
            annotations["prometheus.io/path"]
                .as_str()
                .unwrap_or("<no prometheus.io/path>"),
        );
        for metrics_url in [format!("http://{pod_ip}:15090/stats/prometheus"), scrape] {
            wait_for(
                &format!(
                    "{what} counts the {CALLS} calls in istio_requests_total{want:?} on {metrics_url}"
                ),
                || {
                    let (status, text) = http_in(env, &node_ns, "GET", &metrics_url, &[])?;
                    let n = requests_total(&text, want);
                    if status == 200 && n == CALLS as f64 {
                        return Ok(());
                    }
                    let lines: Vec<&str> = text
                        .lines()
                        .filter(|l| l.starts_with("istio_requests_total"))
                        .collect();
                    Err(format!(
                        "{status}: matching sum {n}; istio_requests_total lines: {lines:#?}"
                    ))
                },
            );
        }
    }
    println!(
        "mesh_netns: {CALLS} calls captured both ways, seen by the app and counted by both proxies"
    );

    // --- 4a. outside the mesh: a server in the node namespace, reached through the client's capture and
    // its proxy's passthrough (ALLOW_ANY), never receives the peer metadata ----------------------------------
    let external = spawn_app(
        &mut lab,
        env,
        &node_ns,
        "outside-the-mesh",
        EXTERNAL_PORT,
        "server outside the mesh",
    );
    let external_url = format!("http://{NODE_IP}:{EXTERNAL_PORT}/outside");
    let out_before = redirected_packets(&sleep_ns, "ISTIO_REDIRECT");
    let (status, body) = wait_for(
        &format!("a call from the sleep pod to {external_url}"),
        || {
            http_in(
                env,
                &sleep_ns,
                "GET",
                &external_url,
                &["x-mesh-test: outside"],
            )
        },
    );
    assert_eq!(status, 200, "the call to {external_url}: {body}");
    assert!(
        redirected_packets(&sleep_ns, "ISTIO_REDIRECT") > out_before,
        "the call to {external_url} left the sleep pod without going through its outbound capture"
    );
    let seen = app_requests(&lab, external);
    let [r] = seen.as_slice() else {
        panic!("the server outside the mesh should have seen exactly the one call: {seen:?}");
    };
    let headers: Headers =
        serde_json::from_value(r["headers"].clone()).expect("the server's header list");
    let leaked: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-envoy-peer-metadata"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the sleep proxy sent its peer metadata outside the mesh: {leaked:?}"
    );

    // --- 4c. a port no Service declares: the server's inbound passthrough to the original destination ----
    let undeclared = spawn_app(
        &mut lab,
        env,
        &httpbin_ns,
        "undeclared-port",
        UNDECLARED_PORT,
        "app on a port no Service declares",
    );
    let undeclared_url = format!("http://{HTTPBIN_IP}:{UNDECLARED_PORT}/undeclared");
    let (status, body) = wait_for(
        &format!(
            "a call from the sleep pod to {undeclared_url} (a port no Service declares) answered"
        ),
        || {
            http_in(
                env,
                &sleep_ns,
                "GET",
                &undeclared_url,
                &["x-mesh-test: undeclared"],
            )
        },
    );
    assert_eq!(status, 200, "the call to {undeclared_url}: {body}");
    let seen = app_requests(&lab, undeclared);
    assert_eq!(
        seen.len(),
        1,
        "the app on the undeclared port should have seen exactly the one call: {seen:?}"
    );

    // --- 4b. the kubelet re-runs the init container (a new sandbox): same rules, traffic still flows ----
    let rules = nat_rules(&httpbin_ns);
    assert!(
        rules.contains("-j ISTIO_IN_REDIRECT") && rules.contains("--uid-owner 1337"),
        "the httpbin pod's nat table lacks the capture rules: {rules}"
    );
    run_init(&httpbin, &nets[1], &binaries);
    assert_eq!(
        nat_rules(&httpbin_ns),
        rules,
        "re-running istio-init with the same args changed the httpbin pod's nat table"
    );
    let (status, body) = http_in(
        env,
        &sleep_ns,
        "GET",
        &url,
        &["x-mesh-test: after-init-rerun"],
    )
    .unwrap_or_else(|e| panic!("the call after istio-init re-ran got no answer: {e}"));
    assert_eq!(status, 200, "the call after istio-init re-ran: {body}");
    let served = CALLS + 1;

    // --- 5. a VirtualService fault, live once both proxies ACK it ------------------------------------
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "httpbin", "namespace": NAMESPACE},
        "spec": {
            "hosts": ["httpbin"],
            "http": [{
                "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100.0}}},
                "route": [{"destination": {"host": "httpbin"}}],
            }],
        },
    });
    write_config(&config_dir, "routing.yaml", &[vs]);
    version = wait_for("both proxies ACK the VirtualService with the fault", || {
        all_synced(&syncz(env, &node_ns)?, &ids, version)
    });
    let (status, body) = http_in(env, &sleep_ns, "GET", &url, &["x-mesh-test: fault"])
        .unwrap_or_else(|e| panic!("the call after the fault was ACKed got no answer: {e}"));
    assert_eq!(
        status, 418,
        "config version {version} (fault abort 418) is ACKed but the client got {status}: {body}"
    );
    assert_eq!(
        app_requests(&lab, app)
            .iter()
            .filter(|r| r["path"] == "/headers")
            .count(),
        served,
        "the aborted call reached the app"
    );
    assert_nothing_rejected(env, &node_ns);
    println!("mesh_netns: fault abort 418 live at config version {version}");

    // --- 6. the app stops: the rewritten probe fails with the agent's 500 ----------------------------------
    // The probes reached the app directly (from 127.0.0.6, which the capture rules let through), not
    // through the pod's inbound listener, which would have added its request id and forwarded-proto.
    let probes: Vec<Value> = app_requests(&lab, app)
        .into_iter()
        .filter(|r| r["path"] == "/ready")
        .collect();
    assert!(
        !probes.is_empty(),
        "the app never saw the readiness probe's GET /ready"
    );
    for r in &probes {
        let headers: Headers =
            serde_json::from_value(r["headers"].clone()).expect("the app's header list");
        let proxied: Vec<&(String, String)> = headers
            .iter()
            .filter(|(k, _)| k == "x-request-id" || k == "x-forwarded-proto")
            .collect();
        assert!(
            proxied.is_empty(),
            "the agent's probe went through the pod's inbound listener (headers {proxied:?}): {r}"
        );
    }
    let _ = lab.procs[app].child.kill();
    let _ = lab.procs[app].child.wait();
    wait_for(
        &format!("the rewritten readiness probe {probe_url} answers 500 once the app is gone"),
        || match http_in(env, &node_ns, "GET", &probe_url, &[])? {
            (500, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    println!("mesh_netns: app stopped; {probe_path} answers 500");

    // --- 7. POST /quitquitquit from inside each pod: the proxy exits 0 --------------------------------------
    for (ns, proxy, name) in [
        (&httpbin_ns, httpbin_proxy, HTTPBIN_POD),
        (&sleep_ns, sleep_proxy, SLEEP_POD),
    ] {
        let (status, body) = http_in(env, ns, "POST", "http://127.0.0.1:15020/quitquitquit", &[])
            .unwrap_or_else(|e| panic!("POST /quitquitquit in {name}: {e}"));
        assert_eq!(status, 200, "POST /quitquitquit in {name}: {body}");
        let status = wait_for(
            &format!("the istio-proxy of {name} exits after /quitquitquit"),
            || lab.exited(proxy).ok_or_else(|| "still running".to_string()),
        );
        assert!(
            status.success(),
            "the istio-proxy of {name} exited with {status} after /quitquitquit"
        );
    }
    println!("mesh_netns: both proxies exited 0 after POST /quitquitquit");
}
