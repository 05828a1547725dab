//! `halyard proxy-config (listeners|routes|clusters|endpoints) <proxy> [-o json]`: what a proxy
//! runs on, read from its admin endpoint (`/config_dump`, `/clusters?format=json`).
//!
//! `<proxy>` is an admin address (`127.0.0.1:15000`, `http://127.10.1.4:15000`) or, in a cluster,
//! `<pod>[.<namespace>]`, reached through `kubectl port-forward` to the pod's port 15000.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use halyard_config::ProxyResources;
use halyard_config::resources as r;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(alias = "listener")]
    Listeners,
    #[value(alias = "route")]
    Routes,
    #[value(alias = "cluster")]
    Clusters,
    #[value(alias = "endpoint")]
    Endpoints,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Short,
    Json,
}

#[derive(Debug, Args)]
pub struct ProxyConfigArgs {
    /// What to show.
    pub kind: Kind,
    /// Admin address (`host:port`, `http://host:port`) or `<pod>[.<namespace>]`.
    pub proxy: String,
    /// Output format.
    #[arg(short, long, default_value = "short")]
    pub output: Output,
    /// Namespace of the pod (when `<proxy>` is a pod name without `.namespace`).
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

pub fn run(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let (addr, _forward) = resolve(&args.proxy, &args.namespace)?;
    let out = match args.kind {
        Kind::Endpoints => {
            let v: serde_json::Value =
                serde_json::from_str(&http_get(&addr, "/clusters?format=json")?)
                    .with_context(|| format!("{addr}/clusters: not JSON"))?;
            match args.output {
                Output::Json => serde_json::to_string_pretty(&v)?,
                Output::Short => endpoints_table(&v),
            }
        }
        kind => {
            let dump = http_get(&addr, "/config_dump")?;
            let res: ProxyResources = serde_json::from_str(&dump)
                .with_context(|| format!("{addr}/config_dump: not a ProxyResources document"))?;
            match (kind, args.output) {
                (Kind::Listeners, Output::Json) => serde_json::to_string_pretty(&res.listeners)?,
                (Kind::Routes, Output::Json) => serde_json::to_string_pretty(&res.route_configs)?,
                (Kind::Clusters, Output::Json) => serde_json::to_string_pretty(&res.clusters)?,
                (Kind::Listeners, Output::Short) => listeners_table(&res),
                (Kind::Routes, Output::Short) => routes_table(&res),
                (_, _) => clusters_table(&res),
            }
        }
    };
    println!("{}", out.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// A `kubectl port-forward` child, stopped when dropped.
struct Forward(Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn resolve(proxy: &str, namespace: &str) -> anyhow::Result<(String, Option<Forward>)> {
    let bare = proxy
        .strip_prefix("http://")
        .unwrap_or(proxy)
        .trim_end_matches('/');
    if bare.contains(':') {
        return Ok((bare.to_string(), None));
    }
    // A pod: forward a local port to its admin port.
    let (pod, ns) = bare.split_once('.').unwrap_or((bare, namespace));
    let mut child = Command::new("kubectl")
        .args(["port-forward", "-n", ns, &format!("pod/{pod}"), ":15000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!("{proxy:?} is not host:port, and kubectl port-forward could not start")
        })?;
    let stdout = child
        .stdout
        .take()
        .context("kubectl port-forward: no output")?;
    let fwd = Forward(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("kubectl port-forward: no output")?;
    // "Forwarding from 127.0.0.1:43127 -> 15000"
    let local = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .with_context(|| {
            format!("kubectl port-forward to pod {pod} in {ns}: unexpected output {line:?}")
        })?;
    Ok((local.to_string(), Some(fwd)))
}

/// GET over a plain HTTP/1.1 connection (admin endpoints are local, small and plaintext).
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("admin address {addr:?}"))?
        .next()
        .with_context(|| format!("admin address {addr:?} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .with_context(|| format!("connect to proxy admin {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("read {addr}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr}{path}: malformed HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{addr}{path}: HTTP {status}: {}", body.trim());
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn chain_match(m: Option<&r::FilterChainMatch>) -> String {
    let Some(m) = m else {
        return "ALL".into();
    };
    let mut parts = Vec::new();
    if !m.destination_ports.is_empty() {
        parts.push(format!(
            "port {}",
            m.destination_ports
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if !m.destination_prefixes.is_empty() {
        parts.push(format!("dst {}", m.destination_prefixes.join(",")));
    }
    if !m.server_names.is_empty() {
        parts.push(format!("SNI: {}", m.server_names.join(",")));
    }
    if m.transport() != r::filter_chain_match::Transport::Any {
        parts.push(m.transport().as_str_name().to_ascii_lowercase());
    }
    if !m.application_protocols.is_empty() {
        parts.push(format!("ALPN: {}", m.application_protocols.join(",")));
    }
    if parts.is_empty() {
        "ALL".into()
    } else {
        parts.join("; ")
    }
}

fn chain_destination(c: &r::FilterChain) -> String {
    match &c.handler {
        Some(r::filter_chain::Handler::Http(h)) => match &h.route_specifier {
            Some(r::http_connection_manager::RouteSpecifier::RouteConfigName(n)) => {
                format!("Route: {n}")
            }
            Some(r::http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
                format!("Inline Route: {}", rc.name)
            }
            None => "Route: -".into(),
        },
        Some(r::filter_chain::Handler::Tcp(t)) => format!(
            "Cluster: {}",
            t.clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => "-".into(),
    }
}

pub fn listeners_table(res: &ProxyResources) -> String {
    let mut rows = Vec::new();
    for l in &res.listeners {
        let chains = l.filter_chains.iter().chain(l.default_chain.iter());
        for c in chains {
            rows.push(vec![
                l.address.clone(),
                l.port.to_string(),
                chain_match(c.r#match.as_ref()),
                chain_destination(c),
            ]);
        }
    }
    table(&["ADDRESSES", "PORT", "MATCH", "DESTINATION"], rows)
}

fn string_match(m: &r::StringMatch) -> String {
    let s = match &m.kind {
        Some(r::string_match::Kind::Exact(e)) => e.clone(),
        Some(r::string_match::Kind::Prefix(p)) => format!("{p}*"),
        Some(r::string_match::Kind::Regex(x)) => format!("~{x}"),
        Some(r::string_match::Kind::Present(_)) => "*".into(),
        None => "-".into(),
    };
    if m.ignore_case {
        format!("{s} (any case)")
    } else {
        s
    }
}

fn route_match(m: &r::RouteMatch) -> String {
    let mut parts = Vec::new();
    if let Some(u) = &m.uri {
        parts.push(string_match(u));
    }
    if let Some(x) = &m.method {
        parts.push(format!("method {}", string_match(x)));
    }
    for h in &m.headers {
        let v = h.value.as_ref().map_or("*".into(), string_match);
        parts.push(format!("{}{}={v}", if h.invert { "!" } else { "" }, h.name));
    }
    for q in &m.query_params {
        parts.push(format!(
            "?{}={}",
            q.name,
            q.value.as_ref().map_or("*".into(), string_match)
        ));
    }
    if parts.is_empty() {
        "/*".into()
    } else {
        parts.join(" && ")
    }
}

pub fn routes_table(res: &ProxyResources) -> String {
    let mut rows = Vec::new();
    let inline = res
        .listeners
        .iter()
        .flat_map(|l| l.filter_chains.iter())
        .filter_map(|c| match &c.handler {
            Some(r::filter_chain::Handler::Http(h)) => match &h.route_specifier {
                Some(r::http_connection_manager::RouteSpecifier::RouteConfig(rc)) => Some(rc),
                _ => None,
            },
            _ => None,
        });
    for rc in res.route_configs.iter().chain(inline) {
        for vh in &rc.virtual_hosts {
            for rt in &vh.routes {
                let m = if rt.matches.is_empty() {
                    "/*".to_string()
                } else {
                    rt.matches
                        .iter()
                        .map(route_match)
                        .collect::<Vec<_>>()
                        .join(" || ")
                };
                let domains = if vh.domains.len() > 3 {
                    format!(
                        "{} +{} more",
                        vh.domains[..2].join(","),
                        vh.domains.len() - 2
                    )
                } else {
                    vh.domains.join(",")
                };
                let vs = rt.config.rsplit('/').next().unwrap_or("").to_string();
                rows.push(vec![
                    rc.name.clone(),
                    vh.name.clone(),
                    domains,
                    m,
                    if vs.is_empty() { "-".into() } else { vs },
                ]);
            }
        }
    }
    table(
        &["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"],
        rows,
    )
}

pub fn clusters_table(res: &ProxyResources) -> String {
    let rows = res
        .clusters
        .iter()
        .map(|c| {
            let direction = if c.name.starts_with("inbound|") {
                "inbound"
            } else if c.name.starts_with("outbound|") {
                "outbound"
            } else {
                "-"
            };
            let dr = if c.config.contains("destination-rule") {
                c.config.rsplit('/').next().unwrap_or("-").to_string()
            } else {
                "-".into()
            };
            vec![
                if c.service_host.is_empty() {
                    c.name.clone()
                } else {
                    c.service_host.clone()
                },
                if c.port == 0 {
                    "-".into()
                } else {
                    c.port.to_string()
                },
                if c.subset.is_empty() {
                    "-".into()
                } else {
                    c.subset.clone()
                },
                direction.into(),
                c.r#type().as_str_name().to_string(),
                dr,
            ]
        })
        .collect();
    table(
        &[
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION RULE",
        ],
        rows,
    )
}

pub fn endpoints_table(v: &serde_json::Value) -> String {
    let mut rows = Vec::new();
    for c in v["cluster_statuses"].as_array().into_iter().flatten() {
        for h in c["host_statuses"].as_array().into_iter().flatten() {
            let health = h["health_status"].as_str().unwrap_or("UNKNOWN");
            rows.push(vec![
                h["address"].as_str().unwrap_or("-").to_string(),
                if health == "EJECTED" {
                    "HEALTHY".into()
                } else {
                    health.to_string()
                },
                if health == "EJECTED" {
                    "FAILED".into()
                } else {
                    "OK".into()
                },
                c["name"].as_str().unwrap_or("-").to_string(),
            ]);
        }
    }
    table(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> ProxyResources {
        serde_json::from_value(serde_json::json!({
            "version": "1",
            "listeners": [{"name": "0.0.0.0_15001", "address": "0.0.0.0", "port": 15001, "useOriginalDst": true,
                "filterChains": [{"name": "http", "match": {"destinationPorts": [9080]},
                    "handler": {"http": {"routeSpecifier": {"routeConfigName": "9080"}}}}]}],
            "routeConfigs": [{"name": "9080", "virtualHosts": [{"name": "reviews:9080", "domains": ["reviews", "reviews:9080"],
                "routes": [{"name": "jason", "matches": [{"headers": [{"name": "end-user", "value": {"kind": {"exact": "jason"}}}]}],
                    "action": {"route": {"clusters": [{"name": "outbound|9080|v2|reviews.default.svc.cluster.local", "weight": 100}]}},
                    "config": "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews"}]}]}],
            "clusters": [{"name": "outbound|9080|v2|reviews.default.svc.cluster.local", "serviceHost": "reviews.default.svc.cluster.local",
                "port": 9080, "subset": "v2", "config": "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"}]
        }))
        .unwrap()
    }

    #[test]
    fn tables_show_istioctl_columns() {
        let res = sample();
        let l = listeners_table(&res);
        assert!(l.starts_with("ADDRESSES"), "{l}");
        assert!(
            l.contains("0.0.0.0")
                && l.contains("15001")
                && l.contains("port 9080")
                && l.contains("Route: 9080"),
            "{l}"
        );
        let r = routes_table(&res);
        assert!(
            r.contains("end-user=jason") && r.contains("reviews:9080") && r.contains("reviews"),
            "{r}"
        );
        let c = clusters_table(&res);
        assert!(
            c.contains("reviews.default.svc.cluster.local  9080  v2")
                && c.contains("outbound")
                && c.contains("EDS"),
            "{c}"
        );
        let e = endpoints_table(
            &serde_json::json!({"cluster_statuses": [{"name": "outbound|9080||r", "host_statuses": [
            {"address": "10.0.0.1:9080", "health_status": "HEALTHY"}, {"address": "10.0.0.2:9080", "health_status": "EJECTED"}]}]}),
        );
        assert!(
            e.contains("10.0.0.1:9080  HEALTHY  OK") && e.contains("FAILED"),
            "{e}"
        );
    }

    #[test]
    fn dechunks_bodies() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
