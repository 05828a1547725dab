//! The `halyard-init` binary's command line: bad input exits non-zero naming the flag, and
//! `--dry-run` with the injector's arguments prints our golden. Needs no privileges.

use std::process::{Command, Output};

const INIT: &str = env!("CARGO_BIN_EXE_halyard-init");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(INIT);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("halyard-init runs")
}

/// Arguments, environment, and the flag the error must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_input_exits_non_zero_naming_the_flag() {
    let cases: &[Case] = &[
        (&["-p", "abc", "--dry-run"], &[], "-p/--envoy-port"),
        (
            &["-m", "BPF", "--dry-run"],
            &[],
            "--istio-inbound-interception-mode",
        ),
        (
            &["-x", "10.0.0.0/40", "--dry-run"],
            &[],
            "-x/--istio-service-exclude-cidr",
        ),
        (
            &["-i", "nonsense", "--dry-run"],
            &[],
            "-i/--istio-service-cidr",
        ),
        (
            &["-b", "80,eighty", "--dry-run"],
            &[],
            "-b/--istio-inbound-ports",
        ),
        (
            &["--dry-run"],
            &[("ENVOY_PORT", "99999")],
            "-p/--envoy-port",
        ),
        (
            &["--dry-run"],
            &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "10.0.0.1/32")],
            "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
        ),
    ];
    for (args, env, flag) in cases {
        let out = run(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} should fail");
        assert!(
            stderr.contains(flag),
            "{args:?} {env:?}: {stderr:?} does not name {flag}"
        );
        assert!(out.stdout.is_empty(), "nothing is printed on error");
    }
}

#[test]
fn dry_run_with_injector_arguments_prints_the_golden() {
    let args = [
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
        "--dry-run",
    ];
    for (ipv6, golden) in [
        ("true", "injector-defaults.golden"),
        ("false", "injector-defaults-ipv4-only.golden"),
    ] {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--ipv6", ipv6]);
        let out = run(&a, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = format!("{}/testdata/{golden}", env!("CARGO_MANIFEST_DIR"));
        let want = std::fs::read_to_string(&path).expect("golden exists");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{path}");
    }
}

#[test]
fn environment_fallbacks_are_read() {
    let out = run(
        &["--dry-run", "--ipv6", "false"],
        &[
            ("ENVOY_PORT", "16001"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888"),
            ("ISTIO_INBOUND_PORTS", ""),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001"),
        "{text}"
    );
    assert!(
        text.contains("-A ISTIO_OUTPUT -m owner --gid-owner 888 -j RETURN"),
        "{text}"
    );
    assert!(
        !text.contains("-A PREROUTING"),
        "no inbound capture with an empty port list: {text}"
    );
}
