//! Rule rendering against Istio's own `istio-iptables` goldens (read from `../shared/istio/iptables`)
//! and against our goldens for the injector defaults (`testdata/`, regenerated with
//! `HALYARD_UPDATE_GOLDEN=1`).

use std::path::{Path, PathBuf};

use clap::Parser;
use halyard_init::apply::dry_run_text;
use halyard_init::render::render_all;
use halyard_init::{Config, Flags, HostFacts};

#[derive(Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

/// The flags every Istio golden starts from (its test fixture, not the injector default).
const BASE: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-e",
    "15008",
    "-u",
    "1337",
    "-g",
    "1337",
    "-t",
    "1337",
    "-r",
    "133",
    "-b",
    "",
    "-i",
    "",
    "-d",
    "",
    "--outbound-owner-groups",
    "*",
    "--outbound-ipv4-loopback-cidr",
    "127.0.0.1/32",
];

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    ipv6: bool,
    dns_servers: &'static [&'static str],
}

const fn case(name: &'static str, args: &'static [&'static str]) -> Case {
    Case {
        name,
        args,
        ipv6: false,
        dns_servers: &[],
    }
}

const fn v6(name: &'static str, args: &'static [&'static str]) -> Case {
    Case {
        name,
        args,
        ipv6: true,
        dns_servers: &[],
    }
}

const V4_DNS: &[&str] = &["127.0.0.53"];
const IPNETS6: &[&str] = &[
    "-b",
    "4000,5000",
    "-d",
    "6000,7000,",
    "-k",
    "eth0,eth1",
    "-x",
    "2001:db8::/32",
    "-i",
    "2001:db8::/32",
];

fn cases() -> Vec<Case> {
    vec![
        case("empty", &[]),
        case("inbound-ports-include", &["-b", "32000,31000"]),
        case("inbound-ports-wildcard", &["-b", "*"]),
        case(
            "inbound-ports-tproxy",
            &["-m", "TPROXY", "-b", "32000,31000"],
        ),
        case(
            "inbound-ports-wildcard-tproxy",
            &["-m", "TPROXY", "-b", "*"],
        ),
        v6("ipv6-empty-inbound-ports", &["-b", ""]),
        v6("ipv6-inbound-ports", &["-b", "4000,5000"]),
        v6(
            "ipv6-virt-interfaces",
            &["-b", "4000,5000", "-k", "eth0,eth1"],
        ),
        v6("ipv6-ipnets", IPNETS6),
        v6(
            "ipv6-uid-gid",
            &[
                "-b",
                "4000,5000",
                "-d",
                "6000,7000,",
                "-k",
                "eth0,eth1",
                "-x",
                "2001:db8::/32",
                "-i",
                "2001:db8::/32",
                "-u",
                "3,4",
                "-g",
                "1,2",
            ],
        ),
        v6("ipv6-outbound-ports", &["-b", "", "-q", "32000,31000"]),
        v6(
            "ipv6-dns-uid-gid",
            &["--redirect-dns", "-u", "3,4", "-g", "1,2"],
        ),
        Case {
            dns_servers: &["127.0.0.53", "::127.0.0.53"],
            ..v6("dns-uid-gid", &["--redirect-dns", "-u", "3,4", "-g", "1,2"])
        },
        Case {
            dns_servers: V4_DNS,
            ..case(
                "ip-range",
                &[
                    "-x",
                    "1.1.0.0/16",
                    "-i",
                    "9.9.0.0/16",
                    "--redirect-dns",
                    "-u",
                    "3,4",
                    "-g",
                    "1,2",
                ],
            )
        },
        Case {
            dns_servers: V4_DNS,
            ..v6(
                "tproxy",
                &[
                    "-m",
                    "TPROXY",
                    "-b",
                    "*",
                    "-x",
                    "1.1.0.0/16",
                    "-i",
                    "9.9.0.0/16",
                    "--redirect-dns",
                    "-c",
                    "not-istio-nic",
                ],
            )
        },
        case("ipnets", &["-i", "10.0.0.0/8"]),
        case("kube-virt-interfaces", &["-k", "eth1,eth2", "-i", "*"]),
        case(
            "ipnets-with-kube-virt-interfaces",
            &["-k", "eth1,eth2", "-i", "10.0.0.0/8"],
        ),
        case("outbound-ports-include", &["-q", "32000,31000"]),
        case(
            "outbound-owner-groups",
            &["--outbound-owner-groups", "java,202"],
        ),
        case(
            "outbound-owner-groups-exclude",
            &["--outbound-owner-groups-exclude", "888,ftp"],
        ),
        v6(
            "ipv6-dns-outbound-owner-groups",
            &["--redirect-dns", "--outbound-owner-groups", "java,202"],
        ),
        v6(
            "ipv6-dns-outbound-owner-groups-exclude",
            &[
                "--redirect-dns",
                "--outbound-owner-groups-exclude",
                "888,ftp",
            ],
        ),
        Case {
            dns_servers: V4_DNS,
            ..case(
                "loopback-outbound-iprange",
                &[
                    "-i",
                    "127.1.2.3/32",
                    "--redirect-dns",
                    "-u",
                    "3,4",
                    "-g",
                    "1,2",
                ],
            )
        },
        case("basic-exclude-nic", &["-c", "not-istio-nic"]),
        case("drop-invalid", &["--drop-invalid"]),
        case(
            "host-ipv4-loopback-cidr",
            &["--outbound-ipv4-loopback-cidr", "127.0.0.1/8"],
        ),
    ]
}

fn config(case: &Case) -> Config {
    let mut argv = vec!["halyard-init"];
    argv.extend_from_slice(BASE);
    argv.extend_from_slice(case.args);
    argv.extend_from_slice(&["--ipv6", if case.ipv6 { "true" } else { "false" }]);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let facts = HostFacts {
        dns_servers: case.dns_servers.iter().map(|s| s.to_string()).collect(),
        has_global_ipv6: false,
    };
    Config::from_flags(&cli.flags, &facts).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// What istio-iptables' test records for a run: the saves before applying, the restore input of
/// each family, and the saves it logs afterwards (IPv6 only when enabled).
fn transcript(cfg: &Config) -> String {
    let (v4, v6) = render_all(cfg);
    let mut out = String::from("iptables-save\nip6tables-save\n");
    out.push_str(&v4.to_restore().text());
    if cfg.enable_ipv6 {
        out.push_str(&v6.to_restore().text());
    }
    out.push_str("iptables-save\n");
    if cfg.enable_ipv6 {
        out.push_str("ip6tables-save\n");
    }
    out
}

/// Whitespace collapsed, blank lines dropped, `[packets:bytes]` counters zeroed.
fn normalize(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
            match (l.rfind('['), l.ends_with(']')) {
                (Some(i), true) => format!("{}[0:0]", &l[..i]),
                _ => l,
            }
        })
        .filter(|l| !l.is_empty())
        .collect()
}

fn istio_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/istio/iptables"
    ));
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: CI must have ../shared beside the repository",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not found; Istio's iptables goldens cannot be compared",
        dir.display()
    );
    None
}

#[test]
fn all_istio_goldens_match() {
    let Some(dir) = istio_dir() else { return };
    let cases = cases();
    let mut goldens: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".golden")
                .map(str::to_string)
        })
        .collect();
    goldens.sort();
    let mut covered: Vec<String> = cases.iter().map(|c| c.name.to_string()).collect();
    covered.sort();
    assert_eq!(
        goldens,
        covered,
        "every golden in {} has a case here",
        dir.display()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let golden = std::fs::read_to_string(dir.join(format!("{}.golden", case.name))).unwrap();
        let want = normalize(&golden);
        let got = normalize(&transcript(&config(case)));
        if want != got {
            let first = want
                .iter()
                .zip(&got)
                .position(|(a, b)| a != b)
                .unwrap_or(want.len().min(got.len()));
            failures.push(format!(
                "{}: first difference at line {}:\n  istio: {:?}\n  ours:  {:?}\n--- ours in full ---\n{}",
                case.name,
                first + 1,
                want.get(first),
                got.get(first),
                got.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} goldens differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!("{} of {} Istio goldens match", cases.len(), cases.len());
}

/// Our own goldens: what a pod gets from the injector's default arguments.
#[test]
fn injector_default_goldens() {
    let defaults: &[&str] = &[
        "halyard-init",
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
    for (file, ipv6) in [
        ("injector-defaults.golden", "true"),
        ("injector-defaults-ipv4-only.golden", "false"),
    ] {
        let mut argv = defaults.to_vec();
        argv.extend_from_slice(&["--ipv6", ipv6]);
        let cli = Cli::try_parse_from(&argv).unwrap();
        let cfg = Config::from_flags(&cli.flags, &HostFacts::default()).unwrap();
        let (v4, v6) = render_all(&cfg);
        let got = dry_run_text(&v4, cfg.enable_ipv6.then_some(&v6));
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(file);
        if std::env::var("HALYARD_UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::write(&path, &got).unwrap();
            eprintln!("updated {}", path.display());
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with HALYARD_UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        assert_eq!(
            normalize(&want),
            normalize(&got),
            "{file} differs (HALYARD_UPDATE_GOLDEN=1 regenerates it)"
        );
    }
}
