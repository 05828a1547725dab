//! Test helper for the network-namespace tests of `halyard-init` (not shipped in images).
//!
//! Each subcommand first enters a named network namespace (`--netns`, as created by `ip netns add`)
//! and optionally drops to a UID/GID (`--uid`, `--gid`), so that one binary can play every part:
//!
//! * `serve --name N --port P`: answers every connection with `N\n` (an app or a remote server).
//! * `connect --to ADDR`: connects, prints what the server sent, exits (the client).
//! * `proxy --outbound-port 15001 --inbound-port 15006`: a minimal capture listener. For every
//!   connection it recovers the original destination with `SO_ORIGINAL_DST`, sends
//!   `proxied port=<listener> orig=<destination>\n`, then connects to the original destination and
//!   relays its answer. Inbound connections are forwarded from 127.0.0.6 / ::6 so the rules let them
//!   through, as Istio's inbound passthrough does.
//!
//! Servers print `ready` on stdout once listening.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use nix::sys::socket::{getsockopt, sockopt};
use socket2::{Domain, Socket, Type};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser)]
struct Cli {
    /// Network namespace to enter (a name under /var/run/netns).
    #[arg(long)]
    netns: Option<String>,
    /// Group to switch to after entering the namespace.
    #[arg(long)]
    gid: Option<u32>,
    /// User to switch to after entering the namespace.
    #[arg(long)]
    uid: Option<u32>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        port: u16,
    },
    Connect {
        #[arg(long)]
        to: SocketAddr,
    },
    Proxy {
        #[arg(long, default_value_t = 15001)]
        outbound_port: u16,
        #[arg(long, default_value_t = 15006)]
        inbound_port: u16,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halyard-capture-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(ns) = &cli.netns {
        let path = format!("/var/run/netns/{ns}");
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {ns}"))?;
    }
    // Group before user: once the UID is dropped we may no longer change groups.
    if let Some(gid) = cli.gid {
        let gid = nix::unistd::Gid::from_raw(gid);
        nix::unistd::setgroups(&[gid]).context("setgroups")?;
        nix::unistd::setgid(gid).context("setgid")?;
    }
    if let Some(uid) = cli.uid {
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).context("setuid")?;
    }
    match cli.cmd {
        Cmd::Serve { name, port } => serve(&name, port),
        Cmd::Connect { to } => {
            let answer = fetch(to, None)?;
            print!("{answer}");
            Ok(())
        }
        Cmd::Proxy {
            outbound_port,
            inbound_port,
        } => proxy(outbound_port, inbound_port),
    }
}

/// Separate IPv4 and IPv6 listeners (IPv6-only), so every accepted connection has a plain family.
fn listeners(port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    ] {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.bind(&addr.into())
            .with_context(|| format!("binding {addr}"))?;
        s.listen(64)?;
        out.push(s.into());
    }
    Ok(out)
}

type Handler = Arc<dyn Fn(TcpStream, u16) + Send + Sync>;

/// Runs `handle` for every connection on every listener until the process is killed.
fn accept_all(listeners: Vec<TcpListener>, handle: Handler) -> anyhow::Result<()> {
    println!("ready");
    std::io::stdout().flush()?;
    let mut threads = Vec::new();
    for l in listeners {
        let port = l.local_addr()?.port();
        let handle = Arc::clone(&handle);
        threads.push(thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let handle = Arc::clone(&handle);
                thread::spawn(move || handle(conn, port));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn serve(name: &str, port: u16) -> anyhow::Result<()> {
    let reply = format!("{name}\n");
    accept_all(
        listeners(port)?,
        Arc::new(move |mut conn, _| {
            let _ = conn.write_all(reply.as_bytes());
            let _ = conn.shutdown(Shutdown::Write);
        }),
    )
}

fn proxy(outbound_port: u16, inbound_port: u16) -> anyhow::Result<()> {
    let mut all = listeners(outbound_port)?;
    all.extend(listeners(inbound_port)?);
    accept_all(
        all,
        Arc::new(move |conn, port| {
            if let Err(e) = relay(conn, port, port == inbound_port) {
                eprintln!("proxy: {e:#}");
            }
        }),
    )
}

/// The destination the client asked for before iptables redirected it here.
fn original_destination(conn: &TcpStream) -> anyhow::Result<SocketAddr> {
    Ok(match conn.local_addr()? {
        SocketAddr::V4(_) => {
            let a = getsockopt(conn, sockopt::OriginalDst).context("SO_ORIGINAL_DST")?;
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                u16::from_be(a.sin_port),
            )
        }
        SocketAddr::V6(_) => {
            let a = getsockopt(conn, sockopt::Ip6tOriginalDst).context("IP6T_SO_ORIGINAL_DST")?;
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            )
        }
    })
}

fn relay(mut conn: TcpStream, port: u16, inbound: bool) -> anyhow::Result<()> {
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let orig = original_destination(&conn)?;
    conn.write_all(format!("proxied port={port} orig={orig}\n").as_bytes())?;
    let source = inbound.then(|| match orig {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)),
    });
    let answer = fetch(orig, source)?;
    conn.write_all(answer.as_bytes())?;
    conn.shutdown(Shutdown::Write)?;
    Ok(())
}

/// Connects to `to` (from `source` if given) and reads everything the server sends.
fn fetch(to: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<String> {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    if let Some(src) = source {
        s.bind(&SocketAddr::new(src, 0).into())
            .with_context(|| format!("binding {src}"))?;
    }
    s.connect_timeout(&to.into(), IO_TIMEOUT)
        .with_context(|| format!("connecting to {to}"))?;
    let mut stream: TcpStream = s.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("reading from {to}"))?;
    if answer.is_empty() {
        bail!("{to} closed without answering");
    }
    Ok(answer)
}
