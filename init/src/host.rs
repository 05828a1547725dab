//! Facts about the network namespace we run in, for [`Config::from_flags`](crate::Config::from_flags).

use std::net::{IpAddr, Ipv6Addr};

use crate::config::{Flags, HostFacts, parse_resolv_conf};
use crate::error::InitError;

/// Reads what the flags need: resolv.conf (only with DNS capture limited to its resolvers) and
/// whether the namespace has a global IPv6 address.
pub fn gather(flags: &Flags) -> Result<HostFacts, InitError> {
    let dns_servers = if flags.redirect_dns && !flags.capture_all_dns {
        let text =
            std::fs::read_to_string(&flags.resolv_conf).map_err(|source| InitError::ReadFile {
                path: flags.resolv_conf.clone(),
                source,
            })?;
        parse_resolv_conf(&text)
    } else {
        Vec::new()
    };
    Ok(HostFacts {
        dns_servers,
        has_global_ipv6: has_global_ipv6(),
    })
}

/// Whether any interface has an IPv6 address that is neither loopback nor link-local.
fn has_global_ipv6() -> bool {
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter_map(|a| {
                a.address
                    .and_then(|s| s.as_sockaddr_in6().map(|s6| s6.ip()))
            })
            .any(|ip| is_global_v6(&ip)),
        Err(e) => {
            tracing::warn!("cannot list interface addresses ({e}); assuming no IPv6");
            false
        }
    }
}

fn is_global_v6(ip: &Ipv6Addr) -> bool {
    let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
    !ip.is_loopback() && !ip.is_unspecified() && !link_local && !IpAddr::V6(*ip).is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_v6() {
        assert!(is_global_v6(&"2001:db8::1".parse().unwrap()));
        assert!(is_global_v6(&"fd00::1".parse().unwrap()));
        assert!(!is_global_v6(&"fe80::1".parse().unwrap()));
        assert!(!is_global_v6(&"::1".parse().unwrap()));
    }
}
