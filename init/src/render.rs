//! The pure renderer: [`Config`] → [`RuleSet`] per address family, in istio-iptables' rule order.

use crate::config::{
    Config, DNS_PROXY_PORT, InterceptMode, OUTBOUND_MARK, OwnerGroups, PortSelection,
};
use crate::rules::{Chain, Family, Position, Rule, RuleSet, Table, Target};

/// Source address the proxy binds when it forwards inbound traffic to the app, so that its own
/// connection is not captured again (the passthrough cluster's address in Istio).
pub fn inbound_passthrough_source(family: Family) -> &'static str {
    match family {
        Family::V4 => "127.0.0.6/32",
        Family::V6 => "::6/128",
    }
}

/// Both families' rule sets; the IPv6 one is empty unless IPv6 is enabled.
pub fn render_all(cfg: &Config) -> (RuleSet, RuleSet) {
    let v6 = if cfg.enable_ipv6 {
        render(cfg, Family::V6)
    } else {
        RuleSet::default()
    };
    (render(cfg, Family::V4), v6)
}

/// The rules for one family. The order mirrors istio-iptables so that the output is rule-for-rule
/// the same as Istio's for the same flags.
pub fn render(cfg: &Config, family: Family) -> RuleSet {
    let mut b = Builder {
        family,
        rules: Vec::new(),
    };
    let lo_cidr = match family {
        Family::V4 => cfg.ipv4_loopback_cidr.to_string(),
        Family::V6 => "::1/128".to_string(),
    };
    let tunnel = cfg.inbound_tunnel_port.to_string();
    let tproxy = cfg.mode == InterceptMode::Tproxy;
    let dns = cfg.dns_capture();

    // Excluded interfaces bypass everything, in both directions.
    for nic in &cfg.exclude_interfaces {
        b.nat(Chain::Prerouting, &["-i", nic], Target::Return);
        b.nat(Chain::Output, &["-o", nic], Target::Return);
    }
    if tproxy {
        for nic in &cfg.exclude_interfaces {
            b.mangle(Chain::Prerouting, &["-i", nic], Target::Return);
            b.mangle(Chain::Output, &["-o", nic], Target::Return);
        }
    }
    // Traffic from virtual interfaces is not inbound traffic.
    for nic in &cfg.kube_virt_interfaces {
        b.insert(
            Table::Nat,
            Chain::Prerouting,
            1,
            &["-i", nic],
            Target::Return,
        );
    }
    if cfg.drop_invalid {
        let m = ["-m", "conntrack", "--ctstate", "INVALID"];
        b.mangle(Chain::Prerouting, &m, Target::Jump(Chain::IstioDrop));
        b.mangle(Chain::IstioDrop, &[], Target::Drop);
    }

    // The tunnel port is the proxy's own inbound listener: never capture it.
    b.nat(
        Chain::IstioInbound,
        &["-p", "tcp", "--dport", &tunnel],
        Target::Return,
    );
    b.nat(
        Chain::IstioRedirect,
        &["-p", "tcp"],
        Target::Redirect(cfg.proxy_port),
    );
    b.nat(
        Chain::IstioInRedirect,
        &["-p", "tcp"],
        Target::Redirect(cfg.inbound_capture_port),
    );

    inbound(&mut b, cfg, &lo_cidr);

    b.nat(Chain::Output, &[], Target::Jump(Chain::IstioOutput));
    // Port exclusions come before the loopback rules so that they also hold for the app calling itself.
    for port in &cfg.outbound_ports_exclude {
        let p = port.to_string();
        b.nat(
            Chain::IstioOutput,
            &["-p", "tcp", "--dport", &p],
            Target::Return,
        );
        b.nat(
            Chain::IstioOutput,
            &["-p", "udp", "--dport", &p],
            Target::Return,
        );
    }
    let passthrough = inbound_passthrough_source(family);
    b.nat(
        Chain::IstioOutput,
        &["-o", "lo", "-s", passthrough],
        Target::Return,
    );

    let loopback_included = cfg.includes_loopback();
    let dns_ports = format!("53,{tunnel}");
    for uid in &cfg.proxy_uids {
        // The proxy calling a local non-loopback address (the app via its Service IP, after the
        // outbound proxy resolved it to this pod) goes to the inbound listener. With DNS capture,
        // port 53 is left to the DNS rules.
        let mut m = vec!["-o", "lo", "!", "-d", &lo_cidr, "-p", "tcp"];
        if dns {
            m.extend(["-m", "multiport", "!", "--dports", &dns_ports]);
        } else {
            m.extend(["!", "--dport", &tunnel]);
        }
        m.extend(["-m", "owner", "--uid-owner", uid]);
        b.nat(Chain::IstioOutput, &m, Target::Jump(Chain::IstioInRedirect));
        loopback_return(&mut b, dns, loopback_included, "--uid-owner", uid);
        b.nat(
            Chain::IstioOutput,
            &["-m", "owner", "--uid-owner", uid],
            Target::Return,
        );
    }
    for gid in &cfg.proxy_gids {
        let m = [
            "-o",
            "lo",
            "!",
            "-d",
            &lo_cidr,
            "-p",
            "tcp",
            "!",
            "--dport",
            &tunnel,
            "-m",
            "owner",
            "--gid-owner",
            gid,
        ];
        b.nat(Chain::IstioOutput, &m, Target::Jump(Chain::IstioInRedirect));
        loopback_return(&mut b, dns, loopback_included, "--gid-owner", gid);
        b.nat(
            Chain::IstioOutput,
            &["-m", "owner", "--gid-owner", gid],
            Target::Return,
        );
    }

    match &cfg.owner_groups {
        OwnerGroups::AllExcept(groups) => {
            for g in groups {
                b.nat(
                    Chain::IstioOutput,
                    &["-m", "owner", "--gid-owner", g],
                    Target::Return,
                );
            }
        }
        OwnerGroups::Only(groups) => {
            let m: Vec<&str> = groups
                .iter()
                .flat_map(|g| ["-m", "owner", "!", "--gid-owner", g.as_str()])
                .collect();
            b.nat(Chain::IstioOutput, &m, Target::Return);
        }
    }

    if dns {
        dns_rules(&mut b, cfg);
    }

    // The app talking to itself over loopback, and proxy-aware apps, are never captured.
    b.nat(Chain::IstioOutput, &["-d", &lo_cidr], Target::Return);
    let (include, exclude) = match family {
        Family::V4 => (&cfg.outbound_v4, &cfg.exclude_v4),
        Family::V6 => (&cfg.outbound_v6, &cfg.exclude_v6),
    };
    for cidr in exclude {
        b.nat(
            Chain::IstioOutput,
            &["-d", &cidr.to_string()],
            Target::Return,
        );
    }
    for port in &cfg.outbound_ports_include {
        let p = port.to_string();
        b.nat(
            Chain::IstioOutput,
            &["-p", "tcp", "--dport", &p],
            Target::Jump(Chain::IstioRedirect),
        );
    }
    if include.wildcard {
        b.nat(Chain::IstioOutput, &[], Target::Jump(Chain::IstioRedirect));
        for nic in &cfg.kube_virt_interfaces {
            b.insert(
                Table::Nat,
                Chain::Prerouting,
                1,
                &["-i", nic],
                Target::Jump(Chain::IstioRedirect),
            );
        }
    } else {
        for cidr in &include.cidrs {
            let c = cidr.to_string();
            for nic in &cfg.kube_virt_interfaces {
                let m = ["-i", nic.as_str(), "-d", &c];
                b.insert(
                    Table::Nat,
                    Chain::Prerouting,
                    1,
                    &m,
                    Target::Jump(Chain::IstioRedirect),
                );
            }
            b.nat(
                Chain::IstioOutput,
                &["-d", &c],
                Target::Jump(Chain::IstioRedirect),
            );
        }
    }

    if tproxy {
        tproxy_marks(&mut b, cfg, &lo_cidr);
    }
    RuleSet { rules: b.rules }
}

/// Inbound capture: per port or all ports, REDIRECT (nat) or TPROXY (mangle).
fn inbound(b: &mut Builder, cfg: &Config, lo_cidr: &str) {
    if cfg.inbound_ports == PortSelection::List(Vec::new()) {
        return;
    }
    let tproxy = cfg.mode == InterceptMode::Tproxy;
    let table = if tproxy {
        // Marked packets are routed to loopback (route table -r) where TPROXY hands them to the proxy.
        b.mangle(Chain::IstioDivert, &[], Target::Mark(cfg.tproxy_mark));
        b.mangle(Chain::IstioDivert, &[], Target::Accept);
        let target = Target::Tproxy {
            mark: cfg.tproxy_mark,
            port: cfg.inbound_capture_port,
        };
        b.mangle(
            Chain::IstioTproxy,
            &["!", "-d", lo_cidr, "-p", "tcp"],
            target,
        );
        Table::Mangle
    } else {
        Table::Nat
    };
    b.add(
        table,
        Chain::Prerouting,
        &["-p", "tcp"],
        Target::Jump(Chain::IstioInbound),
    );
    let established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"];
    match &cfg.inbound_ports {
        PortSelection::All => {
            for port in &cfg.inbound_ports_exclude {
                let p = port.to_string();
                b.add(
                    table,
                    Chain::IstioInbound,
                    &["-p", "tcp", "--dport", &p],
                    Target::Return,
                );
            }
            if tproxy {
                let m: Vec<&str> = ["-p", "tcp"].into_iter().chain(established).collect();
                b.mangle(Chain::IstioInbound, &m, Target::Jump(Chain::IstioDivert));
                b.mangle(
                    Chain::IstioInbound,
                    &["-p", "tcp"],
                    Target::Jump(Chain::IstioTproxy),
                );
            } else {
                b.nat(
                    Chain::IstioInbound,
                    &["-p", "tcp"],
                    Target::Jump(Chain::IstioInRedirect),
                );
            }
        }
        PortSelection::List(ports) => {
            for port in ports {
                let p = port.to_string();
                let m = ["-p", "tcp", "--dport", p.as_str()];
                if tproxy {
                    let est: Vec<&str> = m.into_iter().chain(established).collect();
                    b.mangle(Chain::IstioInbound, &est, Target::Jump(Chain::IstioDivert));
                    b.mangle(Chain::IstioInbound, &m, Target::Jump(Chain::IstioTproxy));
                } else {
                    b.nat(
                        Chain::IstioInbound,
                        &m,
                        Target::Jump(Chain::IstioInRedirect),
                    );
                }
            }
        }
    }
}

/// Loopback traffic not owned by the proxy is the app talking to itself: leave it alone, unless the
/// user asked to capture a loopback range. With DNS capture, TCP 53 on loopback still goes on to the
/// DNS rules (a resolver on localhost).
fn loopback_return(
    b: &mut Builder,
    dns: bool,
    loopback_included: bool,
    owner_flag: &str,
    id: &str,
) {
    if loopback_included {
        return;
    }
    if dns {
        let m = [
            "-o", "lo", "-p", "tcp", "!", "--dport", "53", "-m", "owner", "!", owner_flag, id,
        ];
        b.nat(Chain::IstioOutput, &m, Target::Return);
    } else {
        b.nat(
            Chain::IstioOutput,
            &["-o", "lo", "-m", "owner", "!", owner_flag, id],
            Target::Return,
        );
    }
}

/// DNS to the resolvers (or any server with --capture-all-dns) goes to the DNS proxy; conntrack zones
/// keep the app↔proxy and proxy↔resolver UDP flows apart.
fn dns_rules(b: &mut Builder, cfg: &Config) {
    let servers: Vec<String> = match b.family {
        Family::V4 => cfg
            .dns_servers_v4
            .iter()
            .map(|s| format!("{s}/32"))
            .collect(),
        Family::V6 => cfg
            .dns_servers_v6
            .iter()
            .map(|s| format!("{s}/128"))
            .collect(),
    };
    let all = cfg.capture_all_dns;
    b.raw(Chain::Output, &[], Target::Jump(Chain::IstioOutputDns));
    if all || !servers.is_empty() {
        b.nat(Chain::IstioOutput, &[], Target::Jump(Chain::IstioOutputDns));
    }
    let proxy = DNS_PROXY_PORT;
    if all {
        b.nat(
            Chain::IstioOutputDns,
            &["-p", "tcp", "--dport", "53"],
            Target::Redirect(proxy),
        );
        b.nat(
            Chain::IstioOutputDns,
            &["-p", "udp", "--dport", "53"],
            Target::RedirectPort(proxy),
        );
    } else {
        for s in &servers {
            let m = ["-p", "tcp", "--dport", "53", "-d", s.as_str()];
            b.nat(Chain::IstioOutputDns, &m, Target::Redirect(proxy));
        }
        for s in &servers {
            let m = ["-p", "udp", "--dport", "53", "-d", s.as_str()];
            b.nat(Chain::IstioOutputDns, &m, Target::RedirectPort(proxy));
        }
    }
    let proxy_s = proxy.to_string();
    let owners = cfg
        .proxy_uids
        .iter()
        .map(|u| ("--uid-owner", u))
        .chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g)));
    for (flag, id) in owners {
        let upstream = [
            "-p",
            "udp",
            "--dport",
            "53",
            "-m",
            "owner",
            flag,
            id.as_str(),
        ];
        b.raw(Chain::IstioOutputDns, &upstream, Target::CtZone(1));
        let answers = [
            "-p",
            "udp",
            "--sport",
            proxy_s.as_str(),
            "-m",
            "owner",
            flag,
            id.as_str(),
        ];
        b.raw(Chain::IstioOutputDns, &answers, Target::CtZone(2));
    }
    if all {
        b.raw(Chain::Prerouting, &[], Target::Jump(Chain::IstioInbound));
        b.raw(
            Chain::IstioOutputDns,
            &["-p", "udp", "--dport", "53"],
            Target::CtZone(2),
        );
        b.raw(
            Chain::IstioInbound,
            &["-p", "udp", "--sport", "53"],
            Target::CtZone(1),
        );
    } else {
        if !servers.is_empty() {
            b.raw(Chain::Prerouting, &[], Target::Jump(Chain::IstioInbound));
        }
        for s in &servers {
            let m = ["-p", "udp", "--dport", "53", "-d", s.as_str()];
            b.raw(Chain::IstioOutputDns, &m, Target::CtZone(2));
            let m = ["-p", "udp", "--sport", "53", "-s", s.as_str()];
            b.raw(Chain::IstioInbound, &m, Target::CtZone(1));
        }
    }
}

/// TPROXY bookkeeping: keep the mark on the connection, and tell the proxy's own loopback traffic
/// (mark 1338) from the app's.
fn tproxy_marks(b: &mut Builder, cfg: &Config, lo_cidr: &str) {
    let mark = cfg.tproxy_mark.to_string();
    let m = ["-p", "tcp", "-m", "mark", "--mark", mark.as_str()];
    b.mangle(Chain::Prerouting, &m, Target::ConnmarkSave);
    let m = [
        "-p",
        "tcp",
        "-o",
        "lo",
        "-m",
        "mark",
        "--mark",
        mark.as_str(),
    ];
    b.mangle(Chain::Output, &m, Target::Return);
    let owners = cfg
        .proxy_uids
        .iter()
        .map(|u| ("--uid-owner", u))
        .chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g)));
    for (flag, id) in owners {
        let m = [
            "!",
            "-d",
            lo_cidr,
            "-p",
            "tcp",
            "-o",
            "lo",
            "-m",
            "owner",
            flag,
            id.as_str(),
        ];
        b.mangle(Chain::Output, &m, Target::Mark(OUTBOUND_MARK));
    }
    let m = ["-p", "tcp", "-m", "connmark", "--mark", mark.as_str()];
    b.mangle(Chain::Output, &m, Target::ConnmarkRestore);
    let m = ["-p", "tcp", "-m", "mark", "--mark", mark.as_str()];
    b.insert(Table::Mangle, Chain::IstioInbound, 1, &m, Target::Return);
    let src = inbound_passthrough_source(b.family);
    b.insert(
        Table::Mangle,
        Chain::IstioInbound,
        2,
        &["-p", "tcp", "-s", src, "-i", "lo"],
        Target::Return,
    );
    let outbound = OUTBOUND_MARK.to_string();
    let m = [
        "-p",
        "tcp",
        "-i",
        "lo",
        "-m",
        "mark",
        "!",
        "--mark",
        outbound.as_str(),
    ];
    b.insert(Table::Mangle, Chain::IstioInbound, 3, &m, Target::Return);
}

struct Builder {
    family: Family,
    rules: Vec<Rule>,
}

impl Builder {
    fn push(
        &mut self,
        table: Table,
        chain: Chain,
        position: Position,
        matches: &[&str],
        target: Target,
    ) {
        self.rules.push(Rule {
            table,
            chain,
            position,
            matches: matches.iter().map(|s| s.to_string()).collect(),
            target,
        });
    }

    fn add(&mut self, table: Table, chain: Chain, matches: &[&str], target: Target) {
        self.push(table, chain, Position::Append, matches, target);
    }

    fn nat(&mut self, chain: Chain, matches: &[&str], target: Target) {
        self.add(Table::Nat, chain, matches, target);
    }

    fn mangle(&mut self, chain: Chain, matches: &[&str], target: Target) {
        self.add(Table::Mangle, chain, matches, target);
    }

    fn raw(&mut self, chain: Chain, matches: &[&str], target: Target) {
        self.add(Table::Raw, chain, matches, target);
    }

    fn insert(&mut self, table: Table, chain: Chain, at: u32, matches: &[&str], target: Target) {
        self.push(table, chain, Position::Insert(at), matches, target);
    }
}
