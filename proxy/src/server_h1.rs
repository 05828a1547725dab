//! The downstream HTTP/1.1 server for the common request: keep-alive HTTP/1.1 without a body.
//! The connection's own task parses the request, runs the request path with its future inline
//! (hyper's server allocates and moves one per request) and writes the response, head and a
//! small body in one write.
//!
//! Anything else — a request with a body, an upgrade, `Expect`, `CONNECT`, HTTP/1.0, a head that
//! does not parse — hands the connection, with every byte read so far, to hyper's server, which
//! serves it from that request on: one well-tested implementation for the rest of HTTP/1.1.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::body::Body;
use crate::http::ConnInfo;
use crate::sniff::Prefixed;
use crate::upstream::h1::{
    ADDED_HEADERS, Fields, MAX_HEAD_BYTES, MAX_HEADERS, ReadBuffer, put_header,
};

/// Response bytes gathered before a write (head plus the first body data).
const COALESCE: usize = 64 * 1024;

/// A request head this server takes.
struct Head {
    request: Request<Body>,
    /// The client asked to close after this response.
    close: bool,
    /// The client accepts trailers on a chunked response (`te: trailers`).
    trailers: bool,
}

// Returned once per request and taken apart at once: boxing the large variant would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Head(Head),
    /// More bytes are needed.
    Partial,
    /// Not for this server: hyper's takes the connection.
    HandOver,
}

/// Serve `io` until the client closes it, the proxy drains, or a request needs hyper's server.
pub async fn serve<S>(info: Arc<ConnInfo>, mut io: S, drain: &mut watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut read = ReadBuffer::default();
    let mut out: Vec<u8> = Vec::with_capacity(2048);
    let mut date = DateCache::default();
    loop {
        let head = loop {
            if !read.is_empty() {
                match parse(&mut read) {
                    Parsed::Head(h) => break h,
                    Parsed::Partial if read.data().len() < MAX_HEAD_BYTES => {}
                    // hyper's server answers what is too large or invalid, as it would have.
                    Parsed::Partial | Parsed::HandOver => {
                        return hand_over(info, read, io, drain).await;
                    }
                }
            }
            let idle = read.is_empty();
            let n = tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| read.poll_fill(&mut io, cx)) => r,
                // Draining closes idle connections; a request being received is still served.
                () = crate::proxy::drained(drain), if idle => return,
            };
            match n {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let method = head.request.method().clone();
        let resp = crate::http::handle(info.clone(), head.request).await;
        let close = head.close || *drain.borrow();
        if write_response(
            &mut io,
            &mut out,
            &mut date,
            resp,
            &method,
            close,
            head.trailers,
        )
        .await
        .is_err()
            || close
        {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// Give the connection to hyper's server, replaying what was read and not consumed.
async fn hand_over<S>(
    info: Arc<ConnInfo>,
    mut read: ReadBuffer,
    io: S,
    drain: &mut watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let n = read.data().len();
    let prefix = read.take(n);
    crate::proxy::serve_hyper(info, Prefixed::new(prefix, io), false, drain).await;
}

/// Parse a request head off the front of `read` if this server takes it; nothing is consumed
/// unless it does.
fn parse(read: &mut ReadBuffer) -> Parsed {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        read.data(),
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::HandOver,
    };
    if req.version != Some(1) {
        return Parsed::HandOver;
    }
    let Some(method) = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Parsed::HandOver;
    };
    if method == Method::CONNECT {
        return Parsed::HandOver;
    }
    let base = read.data().as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let Some(path) = req.path else {
        return Parsed::HandOver;
    };
    let path_range = (offset(path.as_bytes()), path.len());
    let (mut close, mut trailers) = (false, false);
    let mut fields = Fields::new();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"transfer-encoding") || is(b"upgrade") || is(b"expect") {
            return Parsed::HandOver;
        }
        if is(b"content-length") && h.value.trim_ascii() != b"0" {
            return Parsed::HandOver;
        }
        if is(b"connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::HandOver;
                }
            }
        }
        if is(b"te") {
            trailers |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        fields.push(base, name, h.value);
    }
    let head = read.take(len);
    let uri = Uri::from_maybe_shared(head.slice(path_range.0..path_range.0 + path_range.1));
    let headers = fields.to_map(&head, ADDED_HEADERS);
    let (Ok(uri), Ok(headers)) = (uri, headers) else {
        // A target or value hyper's server would refuse: it gets the request back, whole.
        read.unread(head);
        return Parsed::HandOver;
    };
    let mut request = Request::new(Body::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Head(Head {
        request,
        close,
        trailers,
    })
}

/// The `date` header value, formatted once per second.
#[derive(Default)]
struct DateCache {
    second: u64,
    value: Option<HeaderValue>,
}

impl DateCache {
    fn now(&mut self) -> &HeaderValue {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.second != second || self.value.is_none() {
            self.second = second;
            self.value = HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok();
        }
        static EPOCH: HeaderValue = HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT");
        self.value.as_ref().unwrap_or(&EPOCH)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length,
    Chunked,
}

/// Write the response; the body streams, flushed whenever the next frame is not ready at once.
/// The body (and with it the request's metrics) is dropped before this returns.
async fn write_response<S, B>(
    io: &mut S,
    out: &mut Vec<u8>,
    date: &mut DateCache,
    resp: http::Response<B>,
    method: &Method,
    close: bool,
    trailers_ok: bool,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<crate::body::BodyError>,
{
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let no_body = method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut has_length, mut has_date) = (false, false);
    for (name, value) in &parts.headers {
        // Framing is this hop's: never pass a transfer-encoding or connection header through.
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        has_length |= name == header::CONTENT_LENGTH;
        has_date |= name == header::DATE;
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if no_body {
        Framing::None
    } else if has_length {
        Framing::Length
    } else if let Some(n) = body.size_hint().exact() {
        put_header(out, b"content-length", n.to_string().as_bytes());
        Framing::Length
    } else {
        put_header(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if !has_date {
        put_header(out, b"date", date.now().as_bytes());
    }
    if close {
        put_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");

    if framing != Framing::None {
        while !body.is_end_stream() {
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame.map_err(|e| std::io::Error::other(e.into()))?;
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    if framing == Framing::Chunked {
                        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    }
                    if out.len() + data.len() <= COALESCE {
                        out.extend_from_slice(&data);
                    } else {
                        io.write_all(out).await?;
                        out.clear();
                        io.write_all(&data).await?;
                    }
                    if framing == Framing::Chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Err(frame) => {
                    if let (Ok(t), Framing::Chunked, true) =
                        (frame.into_trailers(), framing, trailers_ok)
                    {
                        out.extend_from_slice(b"0\r\n");
                        for (name, value) in &t {
                            put_header(out, name.as_str().as_bytes(), value.as_bytes());
                        }
                        out.extend_from_slice(b"\r\n");
                        io.write_all(out).await?;
                        out.clear();
                        drop(body);
                        return io.flush().await;
                    }
                }
            }
            // Do not hold bytes back while waiting for more of the body.
            if !body.is_end_stream() && !out.is_empty() {
                io.write_all(out).await?;
                out.clear();
            }
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    // The exchange is over: its metrics and upstream connection are settled before the write,
    // so a client that has read the response finds them recorded.
    drop(body);
    io.write_all(out).await?;
    out.clear();
    io.flush().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::ResponseBody;
    use bytes::Bytes;
    use http::HeaderMap;

    fn parse_bytes(data: &[u8]) -> (Parsed, ReadBuffer) {
        let mut read = ReadBuffer::default();
        read.extend(data);
        let p = parse(&mut read);
        (p, read)
    }

    #[test]
    fn simple_requests_are_taken_and_the_rest_handed_over_untouched() {
        let (p, read) =
            parse_bytes(b"GET /a?b=1 HTTP/1.1\r\nhost: x\r\nte: trailers\r\n\r\nGET /next");
        let Parsed::Head(h) = p else { panic!("taken") };
        assert_eq!(h.request.uri(), "/a?b=1");
        assert_eq!(h.request.headers()["host"], "x");
        assert!(h.trailers && !h.close);
        assert_eq!(read.data(), b"GET /next");

        let (p, _) = parse_bytes(
            b"GET / HTTP/1.1\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n",
        );
        assert!(matches!(p, Parsed::Head(ref h) if h.close));

        for other in [
            &b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            b"PUT / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            // Parses as HTTP, not as a URI: handed over after being looked at whole.
            b"GET http://[::1/ HTTP/1.1\r\nhost: x\r\n\r\n",
        ] {
            let (p, read) = parse_bytes(other);
            assert!(
                matches!(p, Parsed::HandOver),
                "{:?}",
                String::from_utf8_lossy(other)
            );
            assert_eq!(read.data(), other, "nothing consumed");
        }
        let (p, _) = parse_bytes(b"GET / HTTP/1.1\r\nhost: x\r\n");
        assert!(matches!(p, Parsed::Partial));
        // The unparsable target above is valid HTTP: it went through `unread`.
        let mut slots = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut slots);
        assert!(
            req.parse(b"GET http://[::1/ HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap()
                .is_complete()
        );
    }

    async fn written(resp: http::Response<Body>, method: Method, close: bool, te: bool) -> String {
        written_body(resp.map(ResponseBody::plain), method, close, te).await
    }

    /// What `write_response` puts on the wire for `resp`.
    async fn written_body<B>(
        resp: http::Response<B>,
        method: Method,
        close: bool,
        te: bool,
    ) -> String
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Into<crate::body::BodyError>,
    {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let mut out = Vec::new();
        let mut date = DateCache::default();
        write_response(&mut server, &mut out, &mut date, resp, &method, close, te)
            .await
            .unwrap();
        drop(server);
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut client, &mut s)
            .await
            .unwrap();
        s
    }

    #[tokio::test]
    async fn responses_are_framed_for_this_hop() {
        let mut r = http::Response::new(Body::full("hello"));
        r.headers_mut()
            .insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let s = written(r, Method::GET, false, false).await;
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(
            s.contains("content-length: 5\r\n") && s.contains("date: "),
            "{s}"
        );
        assert!(!s.contains("transfer-encoding"), "{s}");
        assert!(s.ends_with("\r\n\r\nhello"), "{s}");

        let mut r = http::Response::new(Body::full("hello"));
        r.headers_mut()
            .insert("content-length", HeaderValue::from_static("5"));
        let s = written(r, Method::HEAD, true, false).await;
        assert!(
            s.contains("content-length: 5\r\n") && s.contains("connection: close\r\n"),
            "{s}"
        );
        assert!(s.ends_with("\r\n\r\n"), "HEAD has no body: {s}");

        let r = http::Response::builder()
            .status(204)
            .body(Body::Empty)
            .unwrap();
        let s = written(r, Method::GET, false, false).await;
        assert!(
            s.starts_with("HTTP/1.1 204 No Content\r\n") && !s.contains("content-length"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn unsized_bodies_are_chunked_with_trailers_when_accepted() {
        let stream = |with_trailers: bool| {
            let mut frames = vec![
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from("ab"))),
                Ok(hyper::body::Frame::data(Bytes::from("cde"))),
            ];
            if with_trailers {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", HeaderValue::from_static("0"));
                frames.push(Ok(hyper::body::Frame::trailers(t)));
            }
            http_body_util::StreamBody::new(futures::stream::iter(frames))
        };
        for (te, expect_trailer) in [(true, true), (false, false)] {
            let s = written_body(http::Response::new(stream(true)), Method::GET, false, te).await;
            assert!(s.contains("transfer-encoding: chunked\r\n"), "{s}");
            assert!(s.contains("2\r\nab\r\n3\r\ncde\r\n0\r\n"), "{s}");
            assert_eq!(s.contains("grpc-status: 0"), expect_trailer, "{s}");
            assert!(s.ends_with("\r\n\r\n"), "{s}");
        }
    }
}
