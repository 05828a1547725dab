//! DNS clusters (ServiceEntry `resolution: DNS` → `STRICT_DNS`, `DNS_ROUND_ROBIN` → `LOGICAL_DNS`):
//! names are resolved when config is compiled and then re-resolved every refresh interval (Istio's
//! `dnsRefreshRate`, 60 s by default). A changed answer swaps in a snapshot with only those
//! clusters rebuilt — requests in flight keep the snapshot (and pools) they started with. A failed
//! or empty answer keeps the last good addresses and is logged.
//!
//! Resolution goes through [`Resolver`], so tests drive the refresh logic with a fake one.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halyard_config::resources as r;

use crate::proxy::Proxy;
use crate::snapshot::{CompileCtx, Snapshot};

/// Istio's default `dnsRefreshRate`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);
/// One name's resolution is abandoned after this long (or the refresh interval, if shorter).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves a host name; the addresses carry the port to connect to.
pub trait Resolver: Send + Sync + 'static {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>>;
}

/// The system resolver (`getaddrinfo`, `/etc/hosts`, `resolv.conf`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// Last good resolution of each (name, port), shared by every config version.
#[derive(Debug, Default)]
pub struct DnsCache {
    map: Mutex<HashMap<(String, u16), Vec<SocketAddr>>>,
}

impl DnsCache {
    pub fn get(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(host.to_string(), port))
            .cloned()
    }

    /// Remember a resolution (sorted, deduplicated). An empty answer is not remembered: the last
    /// good addresses stay. Returns whether the stored addresses changed.
    pub fn put(&self, host: &str, port: u16, mut addrs: Vec<SocketAddr>) -> bool {
        if addrs.is_empty() {
            return false;
        }
        addrs.sort();
        addrs.dedup();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = (host.to_string(), port);
        if map.get(&key) == Some(&addrs) {
            return false;
        }
        map.insert(key, addrs);
        true
    }
}

/// Is this a cluster whose endpoint names the proxy resolves?
pub fn is_dns(c: &r::Cluster) -> bool {
    use r::cluster::DiscoveryType as D;
    matches!(c.r#type(), D::StrictDns | D::LogicalDns)
}

/// A name (not an IP literal) to resolve.
pub fn is_name(address: &str) -> bool {
    address.trim_matches(['[', ']']).parse::<IpAddr>().is_err()
}

/// The addresses a cluster uses from a resolution: all (`STRICT_DNS`) or the first one
/// (`LOGICAL_DNS`; the list is sorted, so a rotating DNS answer does not move it).
pub fn select(c: &r::Cluster, mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    if c.r#type() == r::cluster::DiscoveryType::LogicalDns {
        addrs.truncate(1);
    }
    addrs
}

/// What one refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Names resolved successfully.
    pub resolved: usize,
    /// Names whose resolution failed or came back empty (their last good addresses stay).
    pub failed: Vec<String>,
    /// Clusters rebuilt with new addresses.
    pub updated: Vec<String>,
}

fn names(snap: &Snapshot) -> BTreeSet<(String, u16)> {
    let by_cluster: HashMap<&str, &r::ClusterEndpoints> = snap
        .resources
        .endpoints
        .iter()
        .map(|e| (e.cluster_name.as_str(), e))
        .collect();
    let mut out = BTreeSet::new();
    for c in snap.resources.clusters.iter().filter(|c| is_dns(c)) {
        for e in by_cluster
            .get(c.name.as_str())
            .map(|ce| ce.endpoints.as_slice())
            .unwrap_or_default()
        {
            if let Ok(port) = u16::try_from(e.port)
                && port > 0
                && is_name(&e.address)
            {
                out.insert((e.address.clone(), port));
            }
        }
    }
    out
}

/// The addresses the cache says a DNS cluster should have, in compile order, sorted.
fn desired(c: &r::Cluster, ce: Option<&r::ClusterEndpoints>, cache: &DnsCache) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for e in ce.map(|ce| ce.endpoints.as_slice()).unwrap_or_default() {
        let Ok(port) = u16::try_from(e.port) else {
            continue;
        };
        if is_name(&e.address) {
            out.extend(select(c, cache.get(&e.address, port).unwrap_or_default()));
        } else if let Ok(ip) = e.address.trim_matches(['[', ']']).parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
        }
    }
    out.sort();
    out
}

/// Resolve every name of the current config's DNS clusters, then rebuild the clusters whose
/// addresses differ from what the cache now says.
pub async fn refresh(proxy: &Proxy, resolver: &dyn Resolver, timeout: Duration) -> RefreshReport {
    let shared = proxy.shared();
    let mut report = RefreshReport::default();
    let wanted = names(&shared.state.load());
    let lookups = wanted.iter().map(|(host, port)| {
        let fut = resolver.resolve(host, *port);
        async move { (host, *port, tokio::time::timeout(timeout, fut).await) }
    });
    for (host, port, res) in futures::future::join_all(lookups).await {
        match res {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                report.resolved += 1;
                if shared.dns.put(host, port, addrs) {
                    tracing::info!(host, port, addrs = ?shared.dns.get(host, port), "DNS answer changed");
                }
            }
            Ok(Ok(_)) => {
                tracing::warn!(
                    host,
                    port,
                    "DNS resolution returned no address; keeping the last good addresses"
                );
                report.failed.push(host.clone());
            }
            Ok(Err(e)) => {
                tracing::warn!(host, port, error = %e, "DNS resolution failed; keeping the last good addresses");
                report.failed.push(host.clone());
            }
            Err(_) => {
                tracing::warn!(
                    host,
                    port,
                    ?timeout,
                    "DNS resolution timed out; keeping the last good addresses"
                );
                report.failed.push(host.clone());
            }
        }
    }
    report.updated = rebuild(proxy);
    report
}

/// Swap in a snapshot whose stale DNS clusters are rebuilt from the cache. A config applied
/// concurrently wins (it compiled with the same cache); the next refresh compares again.
fn rebuild(proxy: &Proxy) -> Vec<String> {
    let shared = proxy.shared();
    let snap = shared.state.load_full();
    let by_cluster: HashMap<&str, &r::ClusterEndpoints> = snap
        .resources
        .endpoints
        .iter()
        .map(|e| (e.cluster_name.as_str(), e))
        .collect();
    // The same node locality the snapshot was compiled with (`snapshot::compile`).
    let pushed = crate::snapshot::with_pushed_locality(&shared.node, &snap.resources);
    let ctx = CompileCtx {
        metrics: &shared.metrics,
        registry: &shared.registry,
        node: pushed.as_ref().unwrap_or(&shared.node),
        dns: &shared.dns,
    };
    let mut next: Option<Snapshot> = None;
    let mut updated = Vec::new();
    for (i, c) in snap.resources.clusters.iter().enumerate() {
        if !is_dns(c) {
            continue;
        }
        let Some(&idx) = snap.cluster_index.get(&c.name) else {
            continue;
        };
        let Some(current) = snap.clusters.get(idx) else {
            continue;
        };
        let ce = by_cluster.get(c.name.as_str()).copied();
        let want = desired(c, ce, &shared.dns);
        let mut have: Vec<SocketAddr> = current.endpoint_addrs().collect();
        have.sort();
        if want == have {
            continue;
        }
        let at = format!("clusters[{i}]({})", c.name);
        match crate::snapshot::cluster(c, &at, &ctx, ce) {
            Ok(fresh) => {
                let n = next.get_or_insert_with(|| (*snap).clone());
                if let Some(slot) = n.clusters.get_mut(idx) {
                    *slot = Arc::new(fresh);
                    updated.push(c.name.clone());
                }
            }
            // Compiled before with the same inputs, so this is unexpected: keep the old cluster.
            Err(e) => {
                tracing::error!(cluster = %c.name, error = %e, "rebuilding a DNS cluster failed")
            }
        }
    }
    let Some(next) = next else {
        return Vec::new();
    };
    let prev = shared.state.compare_and_swap(&snap, Arc::new(next));
    if !Arc::ptr_eq(&prev, &snap) {
        tracing::debug!("config changed during the DNS refresh; comparing again next time");
        return Vec::new();
    }
    shared.registry.prune();
    tracing::info!(clusters = ?updated, "DNS clusters updated");
    updated
}

/// Re-resolve every `every` until the proxy quits.
pub fn spawn_refresher(
    proxy: Arc<Proxy>,
    resolver: Arc<dyn Resolver>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_millis(10));
    let timeout = RESOLVE_TIMEOUT.min(every);
    tokio::spawn(async move {
        let mut quit = proxy.shared().quit.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = quit.wait_for(|q| *q) => return,
            }
            let report = refresh(&proxy, resolver.as_ref(), timeout).await;
            tracing::debug!(?report, "DNS refresh");
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_last_good_and_reports_changes() {
        let c = DnsCache::default();
        let a: SocketAddr = "127.0.0.2:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(c.put("x", 80, vec![a, b, a]));
        assert_eq!(c.get("x", 80).unwrap(), vec![b, a]);
        assert!(!c.put("x", 80, vec![a, b]), "same set, other order");
        assert!(!c.put("x", 80, vec![]), "empty keeps the last good");
        assert_eq!(c.get("x", 80).unwrap(), vec![b, a]);
        assert!(c.get("x", 81).is_none());
    }

    #[test]
    fn logical_dns_uses_one_address() {
        let a: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.2:1".parse().unwrap(),
        ];
        let mut c = r::Cluster::default();
        c.set_type(r::cluster::DiscoveryType::StrictDns);
        assert_eq!(select(&c, a.clone()).len(), 2);
        c.set_type(r::cluster::DiscoveryType::LogicalDns);
        assert_eq!(select(&c, a.clone()), vec![a[0]]);
        assert!(is_name("api.example.com") && !is_name("10.0.0.1") && !is_name("[::1]"));
    }
}
