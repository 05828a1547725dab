//! Flags (istio-iptables' letters, long names and environment variables) and the validated [`Config`].
//!
//! Parsing is pure: facts about the host (resolvers, IPv6 addresses) come in as [`HostFacts`], gathered
//! by [`crate::host`].

use std::net::IpAddr;

use clap::{Args, ValueEnum};
use ipnet::{IpNet, Ipv4Net};

use crate::error::InitError;

/// Inbound ports that never reach the proxy by default: Prometheus (15090), health (15021) and the
/// merged metrics / probe port (15020). This is the injector's `-d` value.
pub const DEFAULT_INBOUND_PORTS_EXCLUDE: &str = "15090,15021,15020";
/// The port the DNS proxy listens on when DNS capture is on.
pub const DNS_PROXY_PORT: u16 = 15053;
/// Mark set by the proxy on its own connections to the app in TPROXY mode.
pub const OUTBOUND_MARK: u32 = 1338;

// Flag names as printed in errors: the letter and the long name, so users recognise either form.
const F_PROXY_PORT: &str = "-p/--envoy-port";
const F_INBOUND_PORT: &str = "-z/--inbound-capture-port";
const F_TUNNEL_PORT: &str = "-e/--inbound-tunnel-port";
const F_UID: &str = "-u/--proxy-uid";
const F_GID: &str = "-g/--proxy-gid";
const F_INBOUND_PORTS: &str = "-b/--istio-inbound-ports";
const F_INBOUND_EXCLUDE: &str = "-d/--istio-local-exclude-ports";
const F_CIDR_INCLUDE: &str = "-i/--istio-service-cidr";
const F_CIDR_EXCLUDE: &str = "-x/--istio-service-exclude-cidr";
const F_OUT_PORTS: &str = "-q/--istio-outbound-ports";
const F_OUT_EXCLUDE: &str = "-o/--istio-local-outbound-ports-exclude";
const F_VIRT: &str = "-k/--kube-virt-interfaces";
const F_EXCLUDE_IF: &str = "-c/--istio-exclude-interfaces";
const F_MARK: &str = "-t/--istio-inbound-tproxy-mark";
const F_TABLE: &str = "-r/--istio-inbound-tproxy-route-table";
const F_GROUPS: &str = "ISTIO_OUTBOUND_OWNER_GROUPS";
const F_GROUPS_EXCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE";
const F_LOOPBACK: &str = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR";
const F_LOG: &str = "--log_output_level";

/// How inbound connections reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum InterceptMode {
    /// NAT `REDIRECT` (the injector default); the proxy reads the original destination with `SO_ORIGINAL_DST`.
    Redirect,
    /// Mangle-table `TPROXY` with a packet mark and a policy-routing table; the source address is kept.
    Tproxy,
}

/// Whether to install IPv6 (`ip6tables`) rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ipv6Setting {
    /// When the namespace has a global IPv6 address (what istio-iptables does).
    Auto,
    True,
    False,
}

/// Which iptables binary set to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Detect as istio-iptables does: legacy if it already holds rules, else nft, else plain `iptables`.
    Auto,
    Legacy,
    Nft,
}

/// Command-line flags. Letters, long names and environment fallbacks follow `istio-iptables`.
#[derive(Debug, Clone, Args)]
pub struct Flags {
    /// Port to which all outbound TCP traffic is redirected.
    #[arg(
        short = 'p',
        long = "envoy-port",
        env = "ENVOY_PORT",
        default_value = "15001"
    )]
    pub proxy_port: String,
    /// Port to which all inbound TCP traffic is redirected.
    #[arg(
        short = 'z',
        long = "inbound-capture-port",
        env = "INBOUND_CAPTURE_PORT",
        default_value = "15006"
    )]
    pub inbound_capture_port: String,
    /// Tunnel (HBONE) port: inbound traffic to it is never captured.
    #[arg(
        short = 'e',
        long = "inbound-tunnel-port",
        env = "INBOUND_TUNNEL_PORT",
        default_value = "15008"
    )]
    pub inbound_tunnel_port: String,
    /// UID(s) of the proxy, whose traffic is never captured (comma separated).
    #[arg(
        short = 'u',
        long = "proxy-uid",
        env = "PROXY_UID",
        default_value = "1337"
    )]
    pub proxy_uid: String,
    /// GID(s) of the proxy (default: the same as -u).
    #[arg(short = 'g', long = "proxy-gid", env = "PROXY_GID")]
    pub proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT or TPROXY.
    #[arg(short = 'm', long = "istio-inbound-interception-mode", env = "INBOUND_INTERCEPTION_MODE",
          default_value = "REDIRECT", value_parser = parse_mode)]
    pub mode: InterceptMode,
    /// Inbound ports to capture ("*" = all, empty = none).
    #[arg(
        short = 'b',
        long = "istio-inbound-ports",
        env = "ISTIO_INBOUND_PORTS",
        default_value = "*",
        allow_hyphen_values = true
    )]
    pub inbound_ports: String,
    /// Inbound ports never captured (applies with -b '*').
    #[arg(short = 'd', long = "istio-local-exclude-ports", env = "ISTIO_LOCAL_EXCLUDE_PORTS",
          default_value = DEFAULT_INBOUND_PORTS_EXCLUDE)]
    pub inbound_ports_exclude: String,
    /// Outbound CIDRs to capture ("*" = all, empty = none).
    #[arg(
        short = 'i',
        long = "istio-service-cidr",
        env = "ISTIO_SERVICE_CIDR",
        default_value = "*"
    )]
    pub outbound_ip_ranges_include: String,
    /// Outbound CIDRs never captured.
    #[arg(
        short = 'x',
        long = "istio-service-exclude-cidr",
        env = "ISTIO_SERVICE_EXCLUDE_CIDR",
        default_value = ""
    )]
    pub outbound_ip_ranges_exclude: String,
    /// Outbound ports always captured, whatever the destination.
    #[arg(
        short = 'q',
        long = "istio-outbound-ports",
        env = "ISTIO_OUTBOUND_PORTS",
        default_value = ""
    )]
    pub outbound_ports_include: String,
    /// Outbound ports never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        env = "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        default_value = ""
    )]
    pub outbound_ports_exclude: String,
    /// Virtual interfaces (e.g. KubeVirt) whose inbound traffic is treated as outbound.
    #[arg(
        short = 'k',
        long = "kube-virt-interfaces",
        env = "KUBE_VIRT_INTERFACES",
        default_value = ""
    )]
    pub kube_virt_interfaces: String,
    /// Interfaces whose traffic is never captured, in either direction.
    #[arg(
        short = 'c',
        long = "istio-exclude-interfaces",
        env = "ISTIO_EXCLUDE_INTERFACES",
        default_value = ""
    )]
    pub exclude_interfaces: String,
    /// Packet mark used in TPROXY mode.
    #[arg(
        short = 't',
        long = "istio-inbound-tproxy-mark",
        env = "INBOUND_TPROXY_MARK",
        default_value = "1337"
    )]
    pub tproxy_mark: String,
    /// Policy-routing table used in TPROXY mode.
    #[arg(
        short = 'r',
        long = "istio-inbound-tproxy-route-table",
        env = "INBOUND_TPROXY_ROUTE_TABLE",
        default_value = "133"
    )]
    pub tproxy_route_table: String,
    /// Send DNS (TCP and UDP port 53) towards the resolvers in resolv.conf to the DNS proxy on 15053.
    #[arg(long = "redirect-dns", env = "ISTIO_META_DNS_CAPTURE")]
    pub redirect_dns: bool,
    /// With --redirect-dns: capture DNS to any server, not only resolv.conf's.
    #[arg(long = "capture-all-dns", env = "CAPTURE_ALL_DNS")]
    pub capture_all_dns: bool,
    /// Drop packets conntrack considers INVALID instead of letting the kernel reset the connection.
    #[arg(long = "drop-invalid", env = "INVALID_DROP")]
    pub drop_invalid: bool,
    /// Install IPv6 rules too: auto (when the namespace has a global IPv6 address), true or false.
    #[arg(long = "ipv6", env = "ENABLE_INBOUND_IPV6", default_value = "auto")]
    pub ipv6: Ipv6Setting,
    /// Groups whose outbound traffic is captured ("*" = all). Environment only in istio-iptables.
    #[arg(
        long = "outbound-owner-groups",
        env = "ISTIO_OUTBOUND_OWNER_GROUPS",
        default_value = "*",
        hide = true
    )]
    pub owner_groups_include: String,
    /// Groups whose outbound traffic is never captured. Environment only in istio-iptables.
    #[arg(
        long = "outbound-owner-groups-exclude",
        env = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
        default_value = "",
        hide = true
    )]
    pub owner_groups_exclude: String,
    /// IPv4 loopback range the app uses to reach itself. Environment only in istio-iptables.
    #[arg(
        long = "outbound-ipv4-loopback-cidr",
        env = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
        default_value = "127.0.0.1/32",
        hide = true
    )]
    pub ipv4_loopback_cidr: String,
    /// Where the DNS resolvers are read from (with --redirect-dns).
    #[arg(long = "resolv-conf", default_value = "/etc/resolv.conf")]
    pub resolv_conf: std::path::PathBuf,
    /// iptables binary set: auto, legacy or nft.
    #[arg(
        long = "iptables-backend",
        env = "HALYARD_IPTABLES_BACKEND",
        default_value = "auto"
    )]
    pub backend: BackendChoice,
    /// Print the iptables-restore input and change nothing.
    #[arg(short = 'n', long = "dry-run", env = "DRY_RUN")]
    pub dry_run: bool,
    /// Remove everything halyard-init (or istio-iptables) installed, then exit.
    #[arg(
        long = "cleanup",
        visible_alias = "cleanup-only",
        conflicts_with = "dry_run"
    )]
    pub cleanup: bool,
    /// Log level in istio's `scope:level` form, accepted for compatibility with the injector's arguments.
    #[arg(
        long = "log_output_level",
        alias = "log-output-level",
        default_value = "default:info"
    )]
    pub log_output_level: String,
}

fn parse_mode(s: &str) -> Result<InterceptMode, String> {
    match s.to_ascii_uppercase().as_str() {
        "REDIRECT" | "" => Ok(InterceptMode::Redirect),
        "TPROXY" => Ok(InterceptMode::Tproxy),
        _ => Err("expected REDIRECT or TPROXY".to_string()),
    }
}

/// Ports to capture inbound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelection {
    All,
    /// An empty list captures nothing.
    List(Vec<u16>),
}

/// Outbound destinations to capture, for one address family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkRange {
    pub wildcard: bool,
    pub cidrs: Vec<IpNet>,
}

impl NetworkRange {
    fn has_loopback(&self) -> bool {
        self.cidrs.iter().any(|c| c.addr().is_loopback())
    }
}

/// Outbound capture by the connecting process's group (`ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Capture every group except these (none by default).
    AllExcept(Vec<String>),
    /// Capture only these groups.
    Only(Vec<String>),
}

/// Facts about the namespace the rules are for, gathered by I/O outside this module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Resolvers from resolv.conf, spelled as written there (only read when DNS capture needs them).
    pub dns_servers: Vec<String>,
    /// Whether the namespace has a global (non-loopback, non-link-local) IPv6 address.
    pub has_global_ipv6: bool,
}

/// Validated configuration: everything the renderer needs, nothing it must re-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy_port: u16,
    pub inbound_capture_port: u16,
    pub inbound_tunnel_port: u16,
    pub proxy_uids: Vec<String>,
    pub proxy_gids: Vec<String>,
    pub mode: InterceptMode,
    pub inbound_ports: PortSelection,
    pub inbound_ports_exclude: Vec<u16>,
    pub outbound_v4: NetworkRange,
    pub outbound_v6: NetworkRange,
    pub exclude_v4: Vec<IpNet>,
    pub exclude_v6: Vec<IpNet>,
    pub outbound_ports_include: Vec<u16>,
    pub outbound_ports_exclude: Vec<u16>,
    pub kube_virt_interfaces: Vec<String>,
    pub exclude_interfaces: Vec<String>,
    pub tproxy_mark: u32,
    pub tproxy_route_table: u32,
    pub redirect_dns: bool,
    pub capture_all_dns: bool,
    pub drop_invalid: bool,
    /// Resolvers, spelled as in resolv.conf (istio-iptables copies them into the rules verbatim).
    pub dns_servers_v4: Vec<String>,
    pub dns_servers_v6: Vec<String>,
    pub owner_groups: OwnerGroups,
    pub ipv4_loopback_cidr: Ipv4Net,
    pub enable_ipv6: bool,
}

impl Config {
    /// Validates `flags`; every error names the flag (or environment variable) at fault.
    pub fn from_flags(flags: &Flags, facts: &HostFacts) -> Result<Config, InitError> {
        let proxy_uids = parse_owners(F_UID, &flags.proxy_uid)?;
        if proxy_uids.is_empty() {
            return Err(invalid(
                F_UID,
                &flags.proxy_uid,
                "at least one UID is required",
            ));
        }
        // istio-iptables: the GID defaults to the UID (the proxy runs as 1337:1337).
        let proxy_gids = match &flags.proxy_gid {
            Some(g) if !g.trim().is_empty() => parse_owners(F_GID, g)?,
            _ => proxy_uids.clone(),
        };

        let inbound_ports = if flags.inbound_ports.trim() == "*" {
            PortSelection::All
        } else {
            PortSelection::List(parse_ports(F_INBOUND_PORTS, &flags.inbound_ports)?)
        };

        if flags.outbound_ip_ranges_exclude.trim() == "*" {
            return Err(invalid(
                F_CIDR_EXCLUDE,
                "*",
                "a wildcard cannot be excluded; use -i \"\" to capture no outbound traffic",
            ));
        }
        let (outbound_v4, outbound_v6) =
            parse_ranges(F_CIDR_INCLUDE, &flags.outbound_ip_ranges_include)?;
        let (ex4, ex6) = parse_ranges(F_CIDR_EXCLUDE, &flags.outbound_ip_ranges_exclude)?;

        let ipv4_loopback_cidr = parse_loopback_cidr(&flags.ipv4_loopback_cidr)?;
        let owner_groups =
            parse_owner_groups(&flags.owner_groups_include, &flags.owner_groups_exclude)?;

        let enable_ipv6 = match flags.ipv6 {
            Ipv6Setting::Auto => facts.has_global_ipv6,
            Ipv6Setting::True => true,
            Ipv6Setting::False => false,
        };

        let (dns_servers_v4, dns_servers_v6) = if flags.redirect_dns && !flags.capture_all_dns {
            split_servers(&facts.dns_servers)
        } else {
            (Vec::new(), Vec::new())
        };
        if flags.capture_all_dns && !flags.redirect_dns {
            tracing::warn!("--capture-all-dns has no effect without --redirect-dns");
        }
        log_level(&flags.log_output_level)?;

        Ok(Config {
            proxy_port: parse_port(F_PROXY_PORT, &flags.proxy_port)?,
            inbound_capture_port: parse_port(F_INBOUND_PORT, &flags.inbound_capture_port)?,
            inbound_tunnel_port: parse_port(F_TUNNEL_PORT, &flags.inbound_tunnel_port)?,
            proxy_uids,
            proxy_gids,
            mode: flags.mode,
            inbound_ports,
            inbound_ports_exclude: parse_ports(F_INBOUND_EXCLUDE, &flags.inbound_ports_exclude)?,
            outbound_v4,
            outbound_v6,
            exclude_v4: ex4.cidrs,
            exclude_v6: ex6.cidrs,
            outbound_ports_include: parse_ports(F_OUT_PORTS, &flags.outbound_ports_include)?,
            outbound_ports_exclude: parse_ports(F_OUT_EXCLUDE, &flags.outbound_ports_exclude)?,
            kube_virt_interfaces: parse_interfaces(F_VIRT, &flags.kube_virt_interfaces)?,
            exclude_interfaces: parse_interfaces(F_EXCLUDE_IF, &flags.exclude_interfaces)?,
            tproxy_mark: parse_u32(F_MARK, &flags.tproxy_mark)?,
            tproxy_route_table: parse_u32(F_TABLE, &flags.tproxy_route_table)?,
            redirect_dns: flags.redirect_dns,
            capture_all_dns: flags.capture_all_dns,
            drop_invalid: flags.drop_invalid,
            dns_servers_v4,
            dns_servers_v6,
            owner_groups,
            ipv4_loopback_cidr,
            enable_ipv6,
        })
    }

    /// DNS capture is on only when it has something to capture (istio-iptables disables it, with a
    /// warning, when no resolver is known and --capture-all-dns is off).
    pub fn dns_capture(&self) -> bool {
        self.redirect_dns
            && (self.capture_all_dns
                || !self.dns_servers_v4.is_empty()
                || !self.dns_servers_v6.is_empty())
    }

    /// Whether an include list names a loopback range: then loopback traffic is not returned early.
    pub fn includes_loopback(&self) -> bool {
        self.outbound_v4.has_loopback() || self.outbound_v6.has_loopback()
    }
}

/// The tracing level for istio's `--log_output_level` (`default:info`, `all:debug,...`).
pub fn log_level(spec: &str) -> Result<tracing::Level, InitError> {
    let level = spec
        .split(',')
        .filter_map(|part| {
            let (scope, level) = part.split_once(':').unwrap_or(("default", part));
            matches!(scope.trim(), "default" | "all").then(|| level.trim().to_ascii_lowercase())
        })
        .next_back()
        .unwrap_or_else(|| "info".to_string());
    match level.as_str() {
        "debug" => Ok(tracing::Level::DEBUG),
        "info" => Ok(tracing::Level::INFO),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "error" | "fatal" | "none" => Ok(tracing::Level::ERROR),
        _ => Err(invalid(
            F_LOG,
            spec,
            "levels are debug, info, warn, error, fatal, none",
        )),
    }
}

fn invalid(flag: &'static str, value: &str, reason: &str) -> InitError {
    InitError::InvalidFlag {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// istio-iptables' list syntax: comma separated, blanks and empty items ignored.
fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

fn parse_port(flag: &'static str, s: &str) -> Result<u16, InitError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(invalid(
            flag,
            s,
            "expected a port number between 1 and 65535",
        )),
    }
}

fn parse_ports(flag: &'static str, s: &str) -> Result<Vec<u16>, InitError> {
    items(s).map(|i| parse_port(flag, i)).collect()
}

fn parse_u32(flag: &'static str, s: &str) -> Result<u32, InitError> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| invalid(flag, s, "expected a non-negative integer"))
}

/// A user or group as iptables' owner match takes it: a numeric id or a name.
fn parse_owners(flag: &'static str, s: &str) -> Result<Vec<String>, InitError> {
    items(s)
        .map(|i| {
            let numeric = i.parse::<u32>().is_ok();
            let name = i.len() <= 32
                && i.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && i.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if numeric || name {
                Ok(i.to_string())
            } else {
                Err(invalid(
                    flag,
                    i,
                    "expected a numeric id or a user/group name",
                ))
            }
        })
        .collect()
}

fn parse_interfaces(flag: &'static str, s: &str) -> Result<Vec<String>, InitError> {
    items(s)
        .map(|i| {
            // The kernel's IFNAMSIZ is 16 including the terminating NUL.
            if i.len() > 15 || i.contains(['/', ' ', '!']) {
                Err(invalid(
                    flag,
                    i,
                    "not a valid interface name (at most 15 characters, no '/' or blanks)",
                ))
            } else {
                Ok(i.to_string())
            }
        })
        .collect()
}

/// Splits a CIDR list into IPv4 and IPv6 ranges; `*` captures everything in both families.
fn parse_ranges(flag: &'static str, s: &str) -> Result<(NetworkRange, NetworkRange), InitError> {
    if s.trim() == "*" {
        let all = NetworkRange {
            wildcard: true,
            cidrs: Vec::new(),
        };
        return Ok((all.clone(), all));
    }
    let mut v4 = NetworkRange::default();
    let mut v6 = NetworkRange::default();
    for item in items(s) {
        // A bare address means that one host.
        let net = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                invalid(
                    flag,
                    item,
                    "expected an IP range in CIDR form, e.g. 10.0.0.0/8",
                )
            })?;
        match net {
            IpNet::V4(_) => v4.cidrs.push(net),
            IpNet::V6(_) => v6.cidrs.push(net),
        }
    }
    Ok((v4, v6))
}

fn parse_loopback_cidr(s: &str) -> Result<Ipv4Net, InitError> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| invalid(F_LOOPBACK, s, "expected an IPv4 CIDR, e.g. 127.0.0.1/32"))?;
    if net.prefix_len() < 8 || !net.addr().is_loopback() {
        return Err(invalid(
            F_LOOPBACK,
            s,
            "must lie within 127.0.0.0/8 with a prefix length of at least 8",
        ));
    }
    Ok(net)
}

fn parse_owner_groups(include: &str, exclude: &str) -> Result<OwnerGroups, InitError> {
    let include_all = include.trim() == "*";
    let excluded = parse_owners(F_GROUPS_EXCLUDE, exclude)?;
    if include_all {
        return Ok(OwnerGroups::AllExcept(excluded));
    }
    let included = parse_owners(F_GROUPS, include)?;
    if !excluded.is_empty() {
        return Err(InitError::ConflictingFlags {
            first: F_GROUPS,
            second: F_GROUPS_EXCLUDE,
            reason: "exclusions only apply when all groups (\"*\") are captured".to_string(),
        });
    }
    if included.is_empty() {
        return Err(invalid(
            F_GROUPS,
            include,
            "list at least one group, or \"*\" for all",
        ));
    }
    // One rule carries one owner match per group; the kernel's rule size bounds how many fit.
    if included.len() > 64 {
        return Err(invalid(
            F_GROUPS,
            include,
            "at most 64 groups can be listed",
        ));
    }
    Ok(OwnerGroups::Only(included))
}

fn split_servers(servers: &[String]) -> (Vec<String>, Vec<String>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for s in servers {
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => v4.push(s.clone()),
            Ok(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(m) => v4.push(m.to_string()),
                None => v6.push(s.clone()),
            },
            Err(_) => tracing::warn!("ignoring resolver {s:?}: not an IP address"),
        }
    }
    (v4, v6)
}

/// The `nameserver` addresses of a resolv.conf text, as written (comments and other options ignored).
pub fn parse_resolv_conf(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                // A link-local server may carry a zone (`fe80::1%eth0`); iptables cannot match it.
                .and_then(|a| a.split('%').next())
                .filter(|a| a.parse::<IpAddr>().is_ok())
                .map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["halyard-init"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_flags(&cli.flags, &HostFacts::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_injector_defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.proxy_port, 15001);
        assert_eq!(c.inbound_capture_port, 15006);
        assert_eq!(c.inbound_tunnel_port, 15008);
        assert_eq!(c.proxy_uids, vec!["1337"]);
        assert_eq!(c.proxy_gids, vec!["1337"]);
        assert_eq!(c.mode, InterceptMode::Redirect);
        assert_eq!(c.inbound_ports, PortSelection::All);
        assert_eq!(c.inbound_ports_exclude, vec![15090, 15021, 15020]);
        assert!(c.outbound_v4.wildcard && c.outbound_v6.wildcard);
        assert!(c.exclude_v4.is_empty() && c.exclude_v6.is_empty());
        assert_eq!(c.owner_groups, OwnerGroups::AllExcept(vec![]));
        assert_eq!(c.ipv4_loopback_cidr.to_string(), "127.0.0.1/32");
        assert!(!c.dns_capture());
    }

    #[test]
    fn injector_arguments_parse_to_the_defaults() {
        let explicit = parse(&[
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
        ])
        .unwrap();
        assert_eq!(explicit, parse(&[]).unwrap());
    }

    #[test]
    fn long_names_work() {
        let c = parse(&[
            "--envoy-port=16001",
            "--inbound-capture-port=16006",
            "--proxy-uid=3,4",
            "--proxy-gid=1,2",
            "--istio-inbound-interception-mode=TPROXY",
            "--istio-inbound-ports=80,443",
            "--istio-service-cidr=10.0.0.0/8,2001:db8::/32",
            "--istio-service-exclude-cidr=10.1.0.0/16",
            "--istio-outbound-ports=3306",
            "--istio-local-outbound-ports-exclude=25",
            "--kube-virt-interfaces=eth1",
            "--istio-exclude-interfaces=eth2",
            "--istio-inbound-tproxy-mark=7",
            "--istio-inbound-tproxy-route-table=8",
        ])
        .unwrap();
        assert_eq!((c.proxy_port, c.inbound_capture_port), (16001, 16006));
        assert_eq!(c.proxy_uids, vec!["3", "4"]);
        assert_eq!(c.proxy_gids, vec!["1", "2"]);
        assert_eq!(c.mode, InterceptMode::Tproxy);
        assert_eq!(c.inbound_ports, PortSelection::List(vec![80, 443]));
        assert_eq!(c.outbound_v4.cidrs.len(), 1);
        assert_eq!(c.outbound_v6.cidrs.len(), 1);
        assert_eq!(c.exclude_v4[0].to_string(), "10.1.0.0/16");
        assert_eq!(c.outbound_ports_include, vec![3306]);
        assert_eq!(c.outbound_ports_exclude, vec![25]);
        assert_eq!(c.kube_virt_interfaces, vec!["eth1"]);
        assert_eq!(c.exclude_interfaces, vec!["eth2"]);
        assert_eq!((c.tproxy_mark, c.tproxy_route_table), (7, 8));
    }

    #[test]
    fn lists_tolerate_trailing_commas_and_empty_means_none() {
        let c = parse(&["-b", "", "-d", "6000,7000,", "-i", ""]).unwrap();
        assert_eq!(c.inbound_ports, PortSelection::List(vec![]));
        assert_eq!(c.inbound_ports_exclude, vec![6000, 7000]);
        assert!(!c.outbound_v4.wildcard && c.outbound_v4.cidrs.is_empty());
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["-p", "abc"], "-p/--envoy-port"),
            (&["-z", "70000"], "-z/--inbound-capture-port"),
            (&["-p", "0"], "-p/--envoy-port"),
            (&["-b", "80,http"], "-b/--istio-inbound-ports"),
            (&["-d", "x1"], "-d/--istio-local-exclude-ports"),
            (&["-i", "10.0.0.0/33"], "-i/--istio-service-cidr"),
            (&["-x", "not-a-cidr"], "-x/--istio-service-exclude-cidr"),
            (&["-x", "*"], "-x/--istio-service-exclude-cidr"),
            (&["-q", "99999"], "-q/--istio-outbound-ports"),
            (&["-o", "x"], "-o/--istio-local-outbound-ports-exclude"),
            (
                &["-k", "a-very-long-interface-name"],
                "-k/--kube-virt-interfaces",
            ),
            (&["-c", "eth 0"], "-c/--istio-exclude-interfaces"),
            (&["-t", "mark"], "-t/--istio-inbound-tproxy-mark"),
            (&["-r", "five"], "-r/--istio-inbound-tproxy-route-table"),
            (&["-u", "13 37"], "-u/--proxy-uid"),
            (&["-u", ""], "-u/--proxy-uid"),
            (&["-g", "$$"], "-g/--proxy-gid"),
            (
                &["--outbound-ipv4-loopback-cidr", "10.0.0.0/8"],
                "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
            ),
            (
                &["--outbound-ipv4-loopback-cidr", "127.0.0.0/7"],
                "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
            ),
            (
                &["--log_output_level", "default:loud"],
                "--log_output_level",
            ),
        ];
        for (args, flag) in cases {
            let err = parse(args).expect_err(&format!("{args:?} should be refused"));
            assert!(
                err.contains(flag),
                "{args:?}: error {err:?} does not name {flag}"
            );
        }
    }

    #[test]
    fn cleanup_and_dry_run_exclude_each_other() {
        let err = parse(&["--cleanup", "--dry-run"]).unwrap_err();
        assert!(
            err.contains("--cleanup") && err.contains("--dry-run"),
            "{err}"
        );
    }

    #[test]
    fn bad_mode_is_refused_by_the_parser_naming_the_flag() {
        let err = parse(&["-m", "BPF"]).unwrap_err();
        assert!(err.contains("--istio-inbound-interception-mode"), "{err}");
        assert_eq!(
            parse(&["-m", "tproxy"]).unwrap().mode,
            InterceptMode::Tproxy
        );
    }

    #[test]
    fn owner_groups() {
        let only = parse(&["--outbound-owner-groups", "java,202"]).unwrap();
        assert_eq!(
            only.owner_groups,
            OwnerGroups::Only(vec!["java".into(), "202".into()])
        );
        let except = parse(&["--outbound-owner-groups-exclude", "888,ftp"]).unwrap();
        assert_eq!(
            except.owner_groups,
            OwnerGroups::AllExcept(vec!["888".into(), "ftp".into()])
        );
        let err = parse(&[
            "--outbound-owner-groups",
            "java",
            "--outbound-owner-groups-exclude",
            "ftp",
        ])
        .unwrap_err();
        assert!(err.contains("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"), "{err}");
    }

    #[test]
    fn dns_needs_servers_unless_capturing_all() {
        let mut cli = Cli::try_parse_from(["x", "--redirect-dns"]).unwrap();
        let none = Config::from_flags(&cli.flags, &HostFacts::default()).unwrap();
        assert!(
            !none.dns_capture(),
            "no resolver known: DNS capture is disabled as istio-iptables does"
        );
        let facts = HostFacts {
            dns_servers: parse_resolv_conf(
                "# c\nnameserver 127.0.0.53\nnameserver ::127.0.0.53\nsearch x\n",
            ),
            has_global_ipv6: false,
        };
        let some = Config::from_flags(&cli.flags, &facts).unwrap();
        assert!(some.dns_capture());
        assert_eq!(some.dns_servers_v4, vec!["127.0.0.53"]);
        assert_eq!(some.dns_servers_v6, vec!["::127.0.0.53"]);
        cli.flags.capture_all_dns = true;
        let all = Config::from_flags(&cli.flags, &HostFacts::default()).unwrap();
        assert!(all.dns_capture() && all.dns_servers_v4.is_empty());
    }

    #[test]
    fn ipv6_auto_follows_the_namespace() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let facts = HostFacts {
            dns_servers: vec![],
            has_global_ipv6: true,
        };
        assert!(Config::from_flags(&cli.flags, &facts).unwrap().enable_ipv6);
        assert!(
            !Config::from_flags(&cli.flags, &HostFacts::default())
                .unwrap()
                .enable_ipv6
        );
        let off = Cli::try_parse_from(["x", "--ipv6", "false"]).unwrap();
        assert!(!Config::from_flags(&off.flags, &facts).unwrap().enable_ipv6);
    }

    #[test]
    fn loopback_in_include_list_is_detected() {
        assert!(parse(&["-i", "127.1.2.3/32"]).unwrap().includes_loopback());
        assert!(!parse(&["-i", "10.0.0.0/8"]).unwrap().includes_loopback());
        assert!(!parse(&[]).unwrap().includes_loopback());
    }
}
