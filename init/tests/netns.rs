//! `halyard-init` in real network namespaces (needs root, `ip` and iptables; never skips when
//! `CI=true`).
//!
//! Each test builds its own "pod" and "peer" namespaces joined by a veth pair, with addresses from
//! the documentation ranges that exist only on that pair:
//!
//! ```text
//!  pod  192.0.2.2/24  2001:db8:1::2/64  ── veth ──  peer 192.0.2.1/24, 198.51.100.1/32
//!       app :9080, :15020                                2001:db8:1::1/64, 2001:db8:2::1/128
//!       proxy :15001 :15006 (UID 1337)                   remote servers :8080, :8081
//! ```
//!
//! The proxy is `halyard-capture-probe proxy`: it answers `proxied port=<listener> orig=<original
//! destination>` and relays the real destination's answer, so a reply shows both whether the
//! connection was captured and what `SO_ORIGINAL_DST` recovered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use halyard_init::state::normalize_save;

const INIT: &str = env!("CARGO_BIN_EXE_halyard-init");
const PROBE: &str = env!("CARGO_BIN_EXE_halyard-capture-probe");

/// Root and the tools are required; outside CI their absence skips the test with a message.
fn can_run() -> bool {
    let missing: Vec<&str> = ["ip", "iptables-restore", "ip6tables-restore"]
        .into_iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    let root = nix::unistd::geteuid().is_root();
    if root && missing.is_empty() {
        return true;
    }
    let why = if root {
        format!("missing tools: {}", missing.join(", "))
    } else {
        "not running as root (network namespaces and iptables need it)".to_string()
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("network-namespace test cannot run in CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn in_ns(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

/// The namespaces and processes of one test; dropping it kills the processes and deletes the
/// namespaces, whether the test passed or not.
struct Lab {
    pod: String,
    peer: String,
    /// Our end of the veth pair, deleted too in case setup stopped before moving it.
    veth: String,
    scratch: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.pod, &self.peer].into_iter().chain(&self.scratch) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        // Normally gone with its namespace; this only matters if setup failed half-way.
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
    }
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let (va, vb) = (format!("hy{id}a"), format!("hy{id}b"));
        let mut lab = Lab {
            pod: format!("hy-pod-{id}"),
            peer: format!("hy-peer-{id}"),
            veth: va.clone(),
            scratch: Vec::new(),
            children: Vec::new(),
        };
        sh(&["ip", "netns", "add", &lab.pod]);
        sh(&["ip", "netns", "add", &lab.peer]);
        sh(&[
            "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
        ]);
        sh(&["ip", "link", "set", &va, "netns", &lab.pod]);
        sh(&["ip", "link", "set", &vb, "netns", &lab.peer]);
        let pod = lab.pod.clone();
        for cmd in [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "link", "set", &va, "up"],
            vec!["ip", "addr", "add", "192.0.2.2/24", "dev", &va],
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:1::2/64",
                "dev",
                &va,
                "nodad",
            ],
            vec!["ip", "route", "add", "default", "via", "192.0.2.1"],
            vec![
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8:1::1",
            ],
        ] {
            in_ns(&pod, &cmd);
        }
        let peer = lab.peer.clone();
        for cmd in [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "link", "set", &vb, "up"],
            vec!["ip", "addr", "add", "192.0.2.1/24", "dev", &vb],
            vec!["ip", "addr", "add", "198.51.100.1/32", "dev", &vb],
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:1::1/64",
                "dev",
                &vb,
                "nodad",
            ],
            vec![
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8:2::1/128",
                "dev",
                &vb,
                "nodad",
            ],
        ] {
            in_ns(&peer, &cmd);
        }
        lab.spawn(
            &peer,
            None,
            &["serve", "--name", "remote", "--port", "8080"],
        );
        lab.spawn(
            &peer,
            None,
            &["serve", "--name", "remote-8081", "--port", "8081"],
        );
        lab.spawn(&pod, None, &["serve", "--name", "app", "--port", "9080"]);
        lab.spawn(
            &pod,
            None,
            &["serve", "--name", "app-15020", "--port", "15020"],
        );
        lab.spawn(
            &pod,
            Some(1337),
            &[
                "proxy",
                "--outbound-port",
                "15001",
                "--inbound-port",
                "15006",
            ],
        );
        lab
    }

    /// Starts the probe in `ns` (as `uid`, with the same GID) and waits until it listens.
    fn spawn(&mut self, ns: &str, uid: Option<u32>, args: &[&str]) {
        let mut child = Command::new(PROBE)
            .args(probe_args(ns, uid))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        // The probe prints `ready` once listening, or exits (closing stdout) on failure.
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        self.children.push(child);
        assert_eq!(line.trim(), "ready", "probe {args:?} in {ns} did not start");
    }

    /// What a client in `ns` running as `uid` receives from `to`.
    fn fetch(&self, ns: &str, uid: Option<u32>, to: &str) -> String {
        let out = Command::new(PROBE)
            .args(probe_args(ns, uid))
            .args(["connect", "--to", to])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "connect to {to} from {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs halyard-init in the pod namespace.
    fn init(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.pod, INIT]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn init_ok(&self, args: &[&str]) -> String {
        let out = self.init(args, &[]);
        assert!(
            out.status.success(),
            "halyard-init {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Loads a `--dry-run` output into a fresh namespace with `backend` and returns its state.
    fn load_dry_run(&mut self, dry_run: &str, backend: &str) -> String {
        let ns = format!("{}-x{}", self.pod, self.scratch.len());
        sh(&["ip", "netns", "add", &ns]);
        self.scratch.push(ns.clone());
        let (v4, v6) = dry_run
            .split_once("# IPv6: ip6tables-restore --noflush\n")
            .unwrap_or((dry_run, ""));
        for (bin, input) in [("iptables", v4), ("ip6tables", v6)] {
            if input.trim().is_empty() {
                continue;
            }
            let mut child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    &format!("{bin}-{backend}-restore"),
                    "--noflush",
                ])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            assert!(
                child.wait().unwrap().success(),
                "loading the dry-run output with {bin}"
            );
        }
        state(&ns)
    }
}

fn probe_args(ns: &str, uid: Option<u32>) -> Vec<String> {
    let mut a = vec!["--netns".to_string(), ns.to_string()];
    if let Some(u) = uid {
        a.extend(["--uid".into(), u.to_string(), "--gid".into(), u.to_string()]);
    }
    a
}

/// Both families' iptables state in both backends, counters zeroed, tables without rules or
/// chains of their own dropped (probing a backend leaves empty built-in chains).
fn state(ns: &str) -> String {
    let mut out = String::new();
    for save in [
        "iptables-legacy-save",
        "iptables-nft-save",
        "ip6tables-legacy-save",
        "ip6tables-nft-save",
    ] {
        let text = String::from_utf8(in_ns(ns, &[save]).stdout).unwrap();
        out.push_str(&format!("## {save}\n"));
        for table in normalize_save(&text).split_inclusive("COMMIT\n") {
            let used = table
                .lines()
                .any(|l| l.starts_with("-A ") || (l.starts_with(':') && l.contains(" - [")));
            if used {
                out.push_str(table);
            }
        }
    }
    out
}

/// The backend whose tables hold our chains in `ns`.
fn backend_in_use(ns: &str) -> &'static str {
    let legacy = String::from_utf8(in_ns(ns, &["iptables-legacy-save"]).stdout).unwrap();
    if legacy.contains("ISTIO_") {
        "legacy"
    } else {
        "nft"
    }
}

fn proxied(port: u16, orig: &str, answer: &str) -> String {
    format!("proxied port={port} orig={orig}\n{answer}\n")
}

#[test]
fn capture_with_injector_defaults() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("d");
    let (pod, peer) = (lab.pod.clone(), lab.peer.clone());
    assert_eq!(
        lab.fetch(&pod, None, "192.0.2.1:8080"),
        "remote\n",
        "before capture: direct"
    );

    // The injector's default arguments; IPv6 comes from the namespace's global IPv6 address.
    let defaults = [
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
        "--log_output_level=default:info",
    ];
    let log = lab.init_ok(&defaults);
    assert!(
        log.contains("IPv6") && log.contains("rules installed"),
        "{log}"
    );

    // Outbound: captured on 15001, original destination recovered, then forwarded.
    assert_eq!(
        lab.fetch(&pod, None, "192.0.2.1:8080"),
        proxied(15001, "192.0.2.1:8080", "remote")
    );
    assert_eq!(
        lab.fetch(&pod, None, "[2001:db8:1::1]:8080"),
        proxied(15001, "[2001:db8:1::1]:8080", "remote")
    );
    // The proxy's own traffic (UID 1337) is not captured.
    assert_eq!(lab.fetch(&pod, Some(1337), "192.0.2.1:8080"), "remote\n");
    assert_eq!(
        lab.fetch(&pod, Some(1337), "[2001:db8:1::1]:8080"),
        "remote\n"
    );
    // Inbound from another namespace: captured on 15006, forwarded to the app from 127.0.0.6 / ::6.
    assert_eq!(
        lab.fetch(&peer, None, "192.0.2.2:9080"),
        proxied(15006, "192.0.2.2:9080", "app")
    );
    assert_eq!(
        lab.fetch(&peer, None, "[2001:db8:1::2]:9080"),
        proxied(15006, "[2001:db8:1::2]:9080", "app")
    );
    // Excluded inbound port (-d): reaches the app directly.
    assert_eq!(lab.fetch(&peer, None, "192.0.2.2:15020"), "app-15020\n");
    assert_eq!(
        lab.fetch(&peer, None, "[2001:db8:1::2]:15020"),
        "app-15020\n"
    );
    // The app calling itself on loopback is not captured.
    assert_eq!(lab.fetch(&pod, None, "127.0.0.1:9080"), "app\n");

    // A re-run with the same flags changes nothing.
    let installed = state(&pod);
    let log = lab.init_ok(&defaults);
    assert!(log.contains("already in place"), "{log}");
    assert_eq!(state(&pod), installed);

    // --dry-run prints exactly what was installed: loaded into an empty namespace it gives the same state.
    let mut dry = defaults.to_vec();
    dry.push("--dry-run");
    let dry_out = String::from_utf8(lab.init(&dry, &[]).stdout).unwrap();
    assert!(
        dry_out.contains("# IPv6: ip6tables-restore --noflush"),
        "{dry_out}"
    );
    let backend = backend_in_use(&pod);
    assert_eq!(lab.load_dry_run(&dry_out, backend), installed);
    // And it is our injector-default golden.
    let golden = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/injector-defaults.golden"
    ))
    .unwrap();
    assert_eq!(dry_out, golden);

    // After --cleanup traffic flows directly again and no chain of ours is left.
    let log = lab.init_ok(&["--cleanup"]);
    assert!(log.contains("rules removed"), "{log}");
    assert!(!state(&pod).contains("ISTIO_"), "{}", state(&pod));
    assert_eq!(lab.fetch(&pod, None, "192.0.2.1:8080"), "remote\n");
    assert_eq!(lab.fetch(&pod, None, "[2001:db8:1::1]:8080"), "remote\n");
    assert_eq!(lab.fetch(&peer, None, "192.0.2.2:9080"), "app\n");
    assert_eq!(lab.fetch(&peer, None, "[2001:db8:1::2]:9080"), "app\n");
    let log = lab.init_ok(&["--cleanup"]);
    assert!(log.contains("no rules to remove"), "{log}");
}

#[test]
fn exclusions_bypass_and_new_flags_replace_old_rules() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("x");
    let (pod, peer) = (lab.pod.clone(), lab.peer.clone());
    lab.init_ok(&[]);
    assert_eq!(
        lab.fetch(&pod, None, "198.51.100.1:8080"),
        proxied(15001, "198.51.100.1:8080", "remote")
    );

    // Different flags: excluded CIDRs (both families), an excluded outbound port and inbound port.
    let flags = [
        "-x",
        "198.51.100.0/24,2001:db8:2::/48",
        "-o",
        "8081",
        "-d",
        "9080",
        "-c",
        "nosuch0",
    ];
    let log = lab.init_ok(&flags);
    assert!(log.contains("replaced"), "{log}");
    assert_eq!(lab.fetch(&pod, None, "198.51.100.1:8080"), "remote\n");
    assert_eq!(lab.fetch(&pod, None, "[2001:db8:2::1]:8080"), "remote\n");
    assert_eq!(lab.fetch(&pod, None, "192.0.2.1:8081"), "remote-8081\n");
    assert_eq!(
        lab.fetch(&pod, None, "[2001:db8:1::1]:8081"),
        "remote-8081\n"
    );
    assert_eq!(lab.fetch(&peer, None, "192.0.2.2:9080"), "app\n");
    // Everything else is still captured.
    assert_eq!(
        lab.fetch(&pod, None, "192.0.2.1:8080"),
        proxied(15001, "192.0.2.1:8080", "remote")
    );
    assert_eq!(
        lab.fetch(&peer, None, "[2001:db8:1::2]:15020"),
        proxied(15006, "[2001:db8:1::2]:15020", "app-15020")
    );

    // Nothing of the first run is left: the state is what the new flags alone install.
    let mut dry = flags.to_vec();
    dry.push("--dry-run");
    let dry_out = String::from_utf8(lab.init(&dry, &[]).stdout).unwrap();
    let backend = backend_in_use(&pod);
    assert_eq!(state(&pod), lab.load_dry_run(&dry_out, backend));

    // Back to the defaults, with the old interface bypass gone as well.
    lab.init_ok(&[]);
    assert!(!state(&pod).contains("nosuch0"), "{}", state(&pod));
    assert_eq!(
        lab.fetch(&pod, None, "198.51.100.1:8080"),
        proxied(15001, "198.51.100.1:8080", "remote")
    );
}

#[test]
fn rejected_rule_is_named_and_previous_rules_stay() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("f");
    let pod = lab.pod.clone();
    lab.init_ok(&[]);
    // Someone else's rule in a built-in chain must survive everything below.
    let iptables = format!("iptables-{}", backend_in_use(&pod));
    in_ns(
        &pod,
        &[
            &iptables,
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "203.0.113.9/32",
            "-j",
            "RETURN",
        ],
    );
    let before = state(&pod);

    // iptables resolves group names itself: an unknown group fails inside iptables-restore.
    let out = lab.init(
        &["-x", "198.51.100.0/24"],
        &[("ISTIO_OUTBOUND_OWNER_GROUPS", "nosuchgroup-hy")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`-A ISTIO_OUTPUT -m owner ! --gid-owner nosuchgroup-hy -j RETURN`"),
        "{err}"
    );
    assert!(err.contains("nat table"), "{err}");
    assert!(err.contains("previous rules were left in place"), "{err}");
    assert_eq!(state(&pod), before, "a failed run must not change anything");
    assert_eq!(
        lab.fetch(&pod, None, "192.0.2.1:8080"),
        proxied(15001, "192.0.2.1:8080", "remote")
    );

    // Cleanup takes out only our rules.
    lab.init_ok(&["--cleanup"]);
    let after = state(&pod);
    assert!(
        after.contains("-A OUTPUT -d 203.0.113.9/32 -j RETURN"),
        "{after}"
    );
    assert!(!after.contains("ISTIO_"), "{after}");
}

#[test]
fn legacy_backend_is_detected_from_existing_rules() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("l");
    let pod = lab.pod.clone();
    let log = lab.init_ok(&["--iptables-backend", "legacy"]);
    assert!(log.contains("iptables-legacy"), "{log}");
    assert_eq!(backend_in_use(&pod), "legacy");
    assert_eq!(
        lab.fetch(&pod, None, "192.0.2.1:8080"),
        proxied(15001, "192.0.2.1:8080", "remote")
    );
    // Auto-detection sees the legacy rules and keeps using legacy, as istio-iptables does.
    let log = lab.init_ok(&[]);
    assert!(
        log.contains("(iptables-legacy): rules already in place"),
        "{log}"
    );
    let nft = String::from_utf8(in_ns(&pod, &["iptables-nft-save"]).stdout).unwrap();
    assert!(!nft.contains("ISTIO_"), "nothing went to nft: {nft}");
    let log = lab.init_ok(&["--cleanup"]);
    assert!(log.contains("(iptables-legacy): rules removed"), "{log}");
    assert!(!state(&pod).contains("ISTIO_"));
    assert_eq!(lab.fetch(&pod, None, "192.0.2.1:8080"), "remote\n");
}

#[test]
fn failure_after_commit_is_rolled_back_in_both_families() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("r");
    let pod = lab.pod.clone();
    lab.init_ok(&["--iptables-backend", "nft"]);
    let before = state(&pod);

    // An ip6tables-nft-restore that applies its input and then reports a failure, once: the IPv4
    // rules are already replaced by then, so both families must be put back.
    let real =
        String::from_utf8(sh(&["sh", "-c", "command -v ip6tables-nft-restore"]).stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("failed-once");
    let wrapper = dir.path().join("ip6tables-nft-restore");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" --test \"*) exec {real} \"$@\";; esac\n\
             if [ -e {m} ]; then exec {real} \"$@\"; fi\ntouch {m}\n{real} \"$@\" || exit $?\n\
             echo 'ip6tables-nft-restore: line 2 failed: simulated failure after commit' >&2\nexit 1\n",
            real = real.trim(),
            m = marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = lab.init(
        &[
            "--iptables-backend",
            "nft",
            "-x",
            "198.51.100.0/24,2001:db8:2::/48",
        ],
        &[("PATH", path.as_str())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(marker.exists(), "the wrapper ran");
    assert!(err.contains("rejected line 2"), "{err}");
    assert_eq!(state(&pod), before, "both families were put back");
    assert_eq!(
        lab.fetch(&pod, None, "198.51.100.1:8080"),
        proxied(15001, "198.51.100.1:8080", "remote")
    );
    assert_eq!(
        lab.fetch(&pod, None, "[2001:db8:2::1]:8080"),
        proxied(15001, "[2001:db8:2::1]:8080", "remote")
    );
}

#[test]
fn tproxy_mode_installs_marks_and_policy_routing() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("t");
    let pod = lab.pod.clone();
    let rules =
        |v: &str| String::from_utf8(in_ns(&pod, &["ip", v, "rule", "show"]).stdout).unwrap();
    let routes = |v: &str| {
        String::from_utf8(in_ns(&pod, &["ip", v, "route", "show", "table", "133"]).stdout).unwrap()
    };

    lab.init_ok(&["-m", "TPROXY"]);
    let st = state(&pod);
    for chain in ["ISTIO_DIVERT", "ISTIO_TPROXY", "TPROXY --on-port 15006"] {
        assert!(st.contains(chain), "{chain} missing:\n{st}");
    }
    for v in ["-4", "-6"] {
        assert_eq!(
            rules(v).matches("fwmark 0x539 lookup 133").count(),
            1,
            "{}",
            rules(v)
        );
        assert!(routes(v).contains("local default dev lo"), "{}", routes(v));
    }
    // Idempotent, policy routing included.
    let log = lab.init_ok(&["-m", "TPROXY"]);
    assert!(log.contains("already in place"), "{log}");
    assert_eq!(rules("-4").matches("fwmark 0x539 lookup 133").count(), 1);

    // Back to REDIRECT: the mangle chains and the routing go.
    lab.init_ok(&["-m", "REDIRECT"]);
    assert!(!state(&pod).contains("ISTIO_TPROXY"));
    assert!(!rules("-4").contains("lookup 133"), "{}", rules("-4"));
    assert_eq!(
        lab.fetch(&pod, None, "192.0.2.1:8080"),
        proxied(15001, "192.0.2.1:8080", "remote")
    );

    lab.init_ok(&["-m", "TPROXY"]);
    lab.init_ok(&["--cleanup"]);
    assert!(!state(&pod).contains("ISTIO_"));
    assert!(!rules("-4").contains("lookup 133") && !rules("-6").contains("lookup 133"));
}

#[test]
fn dns_to_the_resolvers_goes_to_the_dns_proxy() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("n");
    let (pod, peer) = (lab.pod.clone(), lab.peer.clone());
    lab.spawn(
        &pod,
        Some(1337),
        &["serve", "--name", "dns-proxy", "--port", "15053"],
    );
    lab.spawn(
        &peer,
        None,
        &["serve", "--name", "resolver", "--port", "53"],
    );
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "search cluster.local\nnameserver 192.0.2.1\nnameserver 2001:db8:1::1\n",
    )
    .unwrap();

    lab.init_ok(&["--redirect-dns", "--resolv-conf", resolv.to_str().unwrap()]);
    assert_eq!(lab.fetch(&pod, None, "192.0.2.1:53"), "dns-proxy\n");
    assert_eq!(lab.fetch(&pod, None, "[2001:db8:1::1]:53"), "dns-proxy\n");
    // The DNS proxy itself (UID 1337) reaches the real resolver.
    assert_eq!(lab.fetch(&pod, Some(1337), "192.0.2.1:53"), "resolver\n");
    assert_eq!(
        lab.fetch(&pod, Some(1337), "[2001:db8:1::1]:53"),
        "resolver\n"
    );
    // Other traffic is captured as before.
    assert_eq!(
        lab.fetch(&pod, None, "192.0.2.1:8080"),
        proxied(15001, "192.0.2.1:8080", "remote")
    );
    let st = state(&pod);
    assert!(
        st.contains("-j CT --zone 1") && st.contains("-j CT --zone 2"),
        "{st}"
    );

    lab.init_ok(&["--cleanup"]);
    assert_eq!(lab.fetch(&pod, None, "192.0.2.1:53"), "resolver\n");
}
