//! Original destination of a connection redirected by iptables (`SO_ORIGINAL_DST`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

/// The address the client meant to reach before the REDIRECT rule sent it to us, or `None` when
/// the connection was not redirected (explicit listener, no netfilter, or lookup refused).
pub fn original_dst<F: AsFd>(sock: &F, local: SocketAddr) -> Option<SocketAddr> {
    let found = if local.is_ipv4() || is_v4_mapped(&local) {
        getsockopt(sock, sockopt::OriginalDst).ok().map(|sa| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            ))
        })
    } else {
        getsockopt(sock, sockopt::Ip6tOriginalDst).ok().map(|sa| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sa.sin6_addr.s6_addr),
                u16::from_be(sa.sin6_port),
                sa.sin6_flowinfo,
                sa.sin6_scope_id,
            ))
        })
    };
    // Without a redirect the kernel reports the local address itself: treat as "no original dst".
    found.filter(|dst| *dst != local)
}

fn is_v4_mapped(addr: &SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_redirect_means_none() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(original_dst(&s, s.local_addr().unwrap()), None);
        drop(c);
    }
}
