//! Protocol detection on the first bytes of a connection (pure), and an I/O wrapper that replays
//! the sniffed bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (prior knowledge).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Outcome of looking at the first bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// Not enough bytes yet to decide.
    NeedMore,
    Http1,
    Http2,
    Tls(ClientHello),
    /// Anything else: opaque TCP.
    Opaque,
}

/// What routing needs from a TLS ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
];

/// Decide the protocol from a prefix. Returns `NeedMore` while the prefix is still ambiguous.
pub fn detect(buf: &[u8]) -> Detected {
    if buf.is_empty() {
        return Detected::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Detected::Http2
        } else {
            Detected::NeedMore
        };
    }
    if buf[0] == 0x16 {
        return match parse_client_hello(buf) {
            Ok(Some(ch)) => Detected::Tls(ch),
            Ok(None) => Detected::NeedMore,
            Err(NotClientHello) => Detected::Opaque,
        };
    }
    let mut maybe_method = false;
    for m in METHODS {
        let k = buf.len().min(m.len());
        if buf[..k] == m[..k] {
            if k == m.len() {
                return Detected::Http1;
            }
            maybe_method = true;
        }
    }
    if maybe_method {
        Detected::NeedMore
    } else {
        Detected::Opaque
    }
}

/// The bytes are not a well-formed TLS ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotClientHello;

/// Parse a TLS record holding a ClientHello. `Ok(None)`: need more bytes; `Err`: not a ClientHello.
pub fn parse_client_hello(buf: &[u8]) -> Result<Option<ClientHello>, NotClientHello> {
    // Record header: type(1)=22, version(2), length(2).
    if buf.len() < 5 {
        return if buf.first() == Some(&0x16) {
            Ok(None)
        } else {
            Err(NotClientHello)
        };
    }
    if buf[0] != 0x16 || buf[1] != 0x03 {
        return Err(NotClientHello);
    }
    let rec_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + rec_len {
        // ClientHellos larger than one record (rare, post-quantum keys) are read up to the
        // caller's buffer limit; the caller treats a full buffer as opaque TLS without SNI.
        return Ok(None);
    }
    let mut r = Reader(&buf[5..5 + rec_len]);
    if r.u8()? != 1 {
        return Err(NotClientHello); // handshake type must be ClientHello
    }
    let hs_len = r.u24()? as usize;
    let mut r = Reader(r.take(hs_len)?);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    let sid = usize::from(r.u8()?);
    r.take(sid)?;
    let cs = usize::from(r.u16()?);
    r.take(cs)?;
    let comp = usize::from(r.u8()?);
    r.take(comp)?;
    let mut out = ClientHello::default();
    if r.0.is_empty() {
        return Ok(Some(out));
    }
    let ext_len = usize::from(r.u16()?);
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let mut body = Reader(exts.take(len)?);
        match ty {
            0 => {
                // server_name: list of (type, name)
                let list_len = usize::from(body.u16()?);
                let mut list = Reader(body.take(list_len)?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let nlen = usize::from(list.u16()?);
                    let name = list.take(nlen)?;
                    if name_type == 0 && out.sni.is_none() {
                        out.sni = std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                    }
                }
            }
            16 => {
                let list_len = usize::from(body.u16()?);
                let mut list = Reader(body.take(list_len)?);
                while !list.0.is_empty() {
                    let plen = usize::from(list.u8()?);
                    let p = list.take(plen)?;
                    if let Ok(s) = std::str::from_utf8(p) {
                        out.alpn.push(s.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Some(out))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotClientHello> {
        if self.0.len() < n {
            return Err(NotClientHello);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, NotClientHello> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, NotClientHello> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Result<u32, NotClientHello> {
        let b = self.take(3)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

/// An I/O stream that first yields bytes already read from it (the sniffed prefix).
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A minimal TLS 1.2-style ClientHello record with SNI and ALPN, for tests.
    pub fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let mut exts = Vec::new();
        let mut sn = Vec::new();
        sn.push(0u8);
        sn.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        sn.extend_from_slice(sni.as_bytes());
        exts.extend_from_slice(&0u16.to_be_bytes());
        exts.extend_from_slice(&((sn.len() + 2) as u16).to_be_bytes());
        exts.extend_from_slice(&(sn.len() as u16).to_be_bytes());
        exts.extend_from_slice(&sn);
        let mut al = Vec::new();
        for p in alpn {
            al.push(p.len() as u8);
            al.extend_from_slice(p.as_bytes());
        }
        exts.extend_from_slice(&16u16.to_be_bytes());
        exts.extend_from_slice(&((al.len() + 2) as u16).to_be_bytes());
        exts.extend_from_slice(&(al.len() as u16).to_be_bytes());
        exts.extend_from_slice(&al);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&2u16.to_be_bytes());
        body.extend_from_slice(&[0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn detects_http1_methods_and_waits_on_partial() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::Http1);
        assert_eq!(detect(b"OPTIONS * HTTP/1.1"), Detected::Http1);
        assert_eq!(detect(b"PO"), Detected::NeedMore);
        assert_eq!(detect(b"G"), Detected::NeedMore);
        assert_eq!(detect(b""), Detected::NeedMore);
    }

    #[test]
    fn detects_h2_preface_only_when_complete() {
        assert_eq!(detect(H2_PREFACE), Detected::Http2);
        assert_eq!(detect(&H2_PREFACE[..10]), Detected::NeedMore);
        // "P" is ambiguous between PRI, POST, PUT, PATCH
        assert_eq!(detect(b"P"), Detected::NeedMore);
        assert_eq!(detect(b"PUT /x HTTP/1.1"), Detected::Http1);
    }

    #[test]
    fn opaque_for_server_first_or_binary() {
        assert_eq!(detect(b"\x00\x01binary"), Detected::Opaque);
        assert_eq!(detect(b"SSH-2.0-OpenSSH"), Detected::Opaque);
        assert_eq!(detect(b"get / HTTP/1.1"), Detected::Opaque);
    }

    #[test]
    fn parses_sni_and_alpn() {
        let ch = client_hello("Example.COM", &["h2", "http/1.1"]);
        match detect(&ch) {
            Detected::Tls(c) => {
                assert_eq!(c.sni.as_deref(), Some("example.com"));
                assert_eq!(c.alpn, vec!["h2", "http/1.1"]);
            }
            other => panic!("{other:?}"),
        }
        // Truncated record: wait for more.
        assert_eq!(detect(&ch[..20]), Detected::NeedMore);
        assert_eq!(parse_client_hello(&[]), Err(NotClientHello));
    }

    #[test]
    fn malformed_client_hello_is_opaque() {
        let mut ch = client_hello("a.b", &[]);
        ch[5] = 2; // ServerHello, not ClientHello
        assert_eq!(detect(&ch), Detected::Opaque);
        let mut bad = client_hello("a.b", &[]);
        let len = bad.len();
        bad[len - 3] = 0xff; // extension length points past the end
        assert_eq!(detect(&bad), Detected::Opaque);
    }
}
