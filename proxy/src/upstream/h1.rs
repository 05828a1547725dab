//! The HTTP/1.1 client of pooled upstream connections. The request's own task writes the request
//! and reads the response head, and the response body streams straight from the socket into the
//! downstream connection: no connection task, request channel or body channel in between (what
//! a general-purpose client such as hyper's needs), which is most of the proxy's per-request work
//! after the kernel's. Upgrades (WebSocket) still go through hyper's client, on connections of
//! their own.
//!
//! Framing follows RFC 9112: responses to HEAD and 1xx/204/304 have no body; otherwise
//! `transfer-encoding: chunked` (trailers kept), `content-length`, or the body runs to the
//! connection's close. Interim 1xx responses are skipped. A connection goes back to the pool only
//! when its response was read to its exact end and neither side asked to close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use super::{ConnInfo, RequestHead, Upstream};
use crate::body::{Body, BodyError};

/// Largest response head (status line and headers) or trailer section accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers accepted (Envoy's default `max_headers_count`).
pub const MAX_HEADERS: usize = 100;
/// Room kept free at the end of the read buffer.
const READ_ROOM: usize = 8 * 1024;
/// Request bodies of known length up to this size go out in the same write as the head.
const COALESCE_BODY: usize = 16 * 1024;

/// Bytes read from a connection and not consumed yet.
#[derive(Debug, Default)]
pub struct ReadBuffer {
    /// `buf[..filled]` is data; the rest is zeroed room to read into (zeroed so that reading
    /// needs no unsafe code; the room is reused across responses, so it is rarely re-zeroed).
    buf: BytesMut,
    filled: usize,
}

impl ReadBuffer {
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The first `n` bytes (at most what is buffered), without a copy.
    pub fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.filled);
        self.filled -= n;
        self.buf.split_to(n).freeze()
    }

    pub fn skip(&mut self, n: usize) {
        drop(self.take(n));
    }

    /// Put bytes taken with [`ReadBuffer::take`] back in front (a parse that turned out not to
    /// be this reader's to finish).
    pub fn unread(&mut self, front: Bytes) {
        let mut buf = BytesMut::with_capacity(front.len() + self.filled + READ_ROOM);
        buf.extend_from_slice(&front);
        buf.extend_from_slice(self.data());
        self.filled = buf.len();
        self.buf = buf;
    }

    /// Append bytes (tests, and callers that already hold data).
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.truncate(self.filled);
        self.buf.extend_from_slice(data);
        self.filled = self.buf.len();
    }

    /// Read once from `io`; `Ok(0)` is end of stream.
    pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.buf.len() - self.filled < READ_ROOM / 2 {
            self.buf.truncate(self.filled);
            self.buf.resize(self.filled + READ_ROOM, 0);
        }
        let mut rb = ReadBuf::new(&mut self.buf[self.filled..]);
        ready!(Pin::new(io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.filled += n;
        Poll::Ready(Ok(n))
    }
}

/// Header fields of a parsed head, as offsets into its bytes: gathered while httparse's borrow
/// of the buffer lasts, on the stack, then turned into a map whose values share the head's
/// bytes once the head is taken off the buffer.
pub(crate) struct Fields {
    len: usize,
    /// (name start, name end, value start, value end)
    at: [(u32, u32, u32, u32); MAX_HEADERS],
}

impl Fields {
    pub(crate) fn new() -> Self {
        Fields {
            len: 0,
            at: [(0, 0, 0, 0); MAX_HEADERS],
        }
    }

    /// Note one field; `base` is the address of the head's first byte.
    pub(crate) fn push(&mut self, base: usize, name: &[u8], value: &[u8]) {
        let off = |s: &[u8]| u32::try_from(s.as_ptr() as usize - base).unwrap_or(u32::MAX);
        let (n, v) = (off(name), off(value));
        if let Some(slot) = self.at.get_mut(self.len) {
            let end = |start: u32, len: usize| {
                start.saturating_add(u32::try_from(len).unwrap_or(u32::MAX))
            };
            *slot = (n, end(n, name.len()), v, end(v, value.len()));
            self.len += 1;
        }
    }

    /// The header map, with room for `extra` more fields (what the proxy adds) so that adding
    /// them does not grow it; `Err` names the first invalid field.
    pub(crate) fn to_map(&self, head: &Bytes, extra: usize) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::with_capacity(self.len + extra);
        for &(ns, ne, vs, ve) in &self.at[..self.len] {
            let range = |s: u32, e: u32| s as usize..e as usize;
            let raw_name = head.get(range(ns, ne)).unwrap_or_default();
            let name = HeaderName::from_bytes(raw_name).map_err(|_| {
                format!(
                    "invalid header name {:?}",
                    String::from_utf8_lossy(raw_name)
                )
            })?;
            let value = HeaderValue::from_maybe_shared(head.slice(range(vs, ve)))
                .map_err(|_| format!("invalid value of header {name}"))?;
            map.append(name, value);
        }
        Ok(map)
    }
}

/// Room left in a parsed request or response map for the headers the proxy adds (request id,
/// forwarded proto, peer metadata, upstream service time).
pub(crate) const ADDED_HEADERS: usize = 4;

/// One HTTP/1.1 connection to an endpoint, idle in the pool or carrying one exchange.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    read: ReadBuffer,
    /// Where requests are encoded, reused from one request to the next.
    write: Vec<u8>,
    pub(super) info: Arc<ConnInfo>,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, info: Arc<ConnInfo>) -> Self {
        Conn {
            stream,
            read: ReadBuffer::default(),
            write: Vec::new(),
            info,
        }
    }

    /// Whether an idle connection can carry a request: anything readable on it (the peer's
    /// close or reset, or bytes nobody asked for) retires it. Costs no system call unless the
    /// socket reported readiness since its last read.
    pub(super) fn is_reusable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let Conn { stream, read, .. } = self;
        std::future::poll_fn(|cx| read.poll_fill(stream, cx)).await
    }
}

/// Why an exchange failed before a response head was complete.
#[derive(Debug)]
pub struct Failure {
    pub error: FailureKind,
    /// The request never produced a response on a reused connection and can be sent again
    /// as it was (its body is empty or held whole): the pooled connection had been closed by
    /// the peer. Only then does the caller retry it on another connection, without counting
    /// an attempt; a written non-idempotent request is never sent twice.
    pub resend: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FailureKind {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> FailureKind {
    FailureKind::Protocol(msg.into())
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    None,
    Length,
    Chunked,
}

/// Write `parts` and `body` on `conn` and read the response head. The response body streams
/// from the connection, which returns to `pool` when the body is read to its end.
pub async fn exchange(
    pool: &Arc<Upstream>,
    mut conn: Conn,
    parts: &RequestHead,
    body: &mut Body,
) -> Result<Response<Body>, Failure> {
    let idempotent = is_idempotent(&parts.method);
    let close_requested = connection_has(&parts.headers, "close");
    let mut out = std::mem::take(&mut conn.write);
    let framing = encode_head(&mut out, parts, body);
    let coalesce = matches!(body, Body::Full(Some(b)) if b.len() <= COALESCE_BODY);
    // The body is still whole after sending: it can go again on another connection.
    let replayable = framing == RequestFraming::None || coalesce;

    // Write the request. A write failure on a stale pooled connection means nothing was read by
    // the peer, so the request may go again.
    let mut early_response = false;
    if let (true, Body::Full(Some(b))) = (coalesce, &*body) {
        out.extend_from_slice(b);
    }
    write_all(&conn.stream, &out)
        .await
        .map_err(|e| fail(e.into(), replayable))?;
    // Kept for the next request unless a large body grew it.
    if out.capacity() <= 4096 {
        out.clear();
        conn.write = out;
    }
    if !coalesce && framing != RequestFraming::None {
        // An upstream may answer before it has read the whole body (a 413, a redirect): stop
        // sending then, and close the connection after the response. Boxed: uploads are the
        // rare case, and this keeps every exchange's future small.
        early_response = Box::pin(send_body_unless_answered(&conn.stream, body, framing))
            .await
            .map_err(|e| fail(e, false))?;
    }

    // Read the response head, skipping interim 1xx responses.
    let mut got_bytes = false;
    let Head {
        status,
        version,
        headers,
        framing_headers,
        connection_header,
    } = loop {
        if !conn.read.is_empty() {
            got_bytes = true;
            match parse_head(&mut conn.read).map_err(|e| fail(e, false))? {
                Some(head) if head.status.is_informational() => {
                    let status = head.status;
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(fail(
                            protocol("101 Switching Protocols to a request without Upgrade"),
                            false,
                        ));
                    }
                    continue;
                }
                Some(head) => break head,
                None => {}
            }
        }
        match conn.fill().await {
            Ok(0) => {
                let detail = if got_bytes {
                    "connection closed in the middle of the response headers"
                } else {
                    "connection closed before response headers"
                };
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, detail);
                return Err(fail(e.into(), replayable && idempotent && !got_bytes));
            }
            Ok(_) => {}
            Err(e) => {
                let resend = replayable && idempotent && !got_bytes;
                return Err(fail(e.into(), resend));
            }
        }
    };

    let no_body = parts.method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let decoding = if no_body {
        Decoding::Done
    } else if !framing_headers {
        Decoding::UntilClose
    } else {
        response_decoding(&headers).map_err(|e| fail(e, false))?
    };
    let keep_alive = match version {
        Version::HTTP_11 => !(connection_header && connection_has(&headers, "close")),
        _ => connection_header && connection_has(&headers, "keep-alive"),
    };
    let reuse = keep_alive
        && !close_requested
        && !early_response
        && !matches!(decoding, Decoding::UntilClose);
    let mut stream = ResponseStream {
        conn: Some(conn),
        decoding,
        reuse,
        pool: pool.clone(),
    };
    if matches!(stream.decoding, Decoding::Done | Decoding::Length(0)) {
        stream.finish();
    }
    let mut resp = Response::new(Body::Upstream(stream));
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(resp)
}

fn fail(error: FailureKind, resend: bool) -> Failure {
    Failure { error, resend }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether a `connection` header lists `token`.
fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The request line and headers, and how the body is framed (adding `content-length` or
/// `transfer-encoding: chunked` when the request has neither).
fn encode_head(out: &mut Vec<u8>, parts: &RequestHead, body: &Body) -> RequestFraming {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if pq.is_empty() { b"/" } else { pq.as_bytes() });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let has_length = parts.headers.contains_key(header::CONTENT_LENGTH);
    let framing = if body.is_end_stream() {
        if !has_length && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        RequestFraming::None
    } else if has_length {
        RequestFraming::Length
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        RequestFraming::Length
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        RequestFraming::Chunked
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// One `name: value` line of an HTTP/1.1 head or trailer section (both codecs write them).
pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Write all of `data`, trying the socket first and waiting only when it is full.
async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Send the body while watching for a response: `true` when one started before the body was
/// all sent (the rest is not sent).
async fn send_body_unless_answered(
    stream: &TcpStream,
    body: &mut Body,
    framing: RequestFraming,
) -> Result<bool, FailureKind> {
    let mut probe = [0u8; 1];
    tokio::select! {
        biased;
        r = write_body(stream, body, framing) => r.map(|()| false),
        r = stream.peek(&mut probe) => r.map(|_| true).map_err(FailureKind::from),
    }
}

/// Stream the request body; chunked framing carries trailers.
async fn write_body(
    stream: &TcpStream,
    body: &mut Body,
    framing: RequestFraming,
) -> Result<(), FailureKind> {
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| io::Error::other(format!("reading the request body: {e}")))?;
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                if framing == RequestFraming::Chunked {
                    write_all(stream, format!("{:x}\r\n", data.len()).as_bytes()).await?;
                    write_all(stream, &data).await?;
                    write_all(stream, b"\r\n").await?;
                } else {
                    write_all(stream, &data).await?;
                }
            }
            Err(frame) => {
                if let (Ok(trailers), RequestFraming::Chunked) = (frame.into_trailers(), framing) {
                    let mut end = b"0\r\n".to_vec();
                    for (name, value) in &trailers {
                        put_header(&mut end, name.as_str().as_bytes(), value.as_bytes());
                    }
                    end.extend_from_slice(b"\r\n");
                    write_all(stream, &end).await?;
                    return Ok(());
                }
            }
        }
    }
    if framing == RequestFraming::Chunked {
        write_all(stream, b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    /// `content-length` or `transfer-encoding` is there (noted while parsing, so that the
    /// common response needs no lookups to find its framing).
    framing_headers: bool,
    connection_header: bool,
}

/// Parse a complete response head off the front of `read`; `None` until one is buffered.
fn parse_head(read: &mut ReadBuffer) -> Result<Option<Head>, FailureKind> {
    // Uninitialised slots: initialising 100 of them costs more than parsing a small head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        read.data(),
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if read.data().len() >= MAX_HEAD_BYTES => {
            return Err(protocol(format!(
                "response headers larger than {MAX_HEAD_BYTES} bytes"
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(protocol(format!(
                "more than {MAX_HEADERS} response headers"
            )));
        }
        Err(e) => return Err(protocol(format!("invalid response head: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| protocol(format!("invalid status code {code}")))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Header values are slices of the head's bytes (no copy).
    let base = read.data().as_ptr() as usize;
    let mut fields = Fields::new();
    let (mut framing_headers, mut connection_header) = (false, false);
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        framing_headers |= name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding");
        connection_header |= name.eq_ignore_ascii_case(b"connection");
        fields.push(base, name, h.value);
    }
    let head = read.take(len);
    let headers = fields.to_map(&head, ADDED_HEADERS).map_err(protocol)?;
    Ok(Some(Head {
        status,
        version,
        headers,
        framing_headers,
        connection_header,
    }))
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
    Done,
}

fn response_decoding(h: &HeaderMap) -> Result<Decoding, FailureKind> {
    if let Some(te) = h.get_all(header::TRANSFER_ENCODING).iter().next_back() {
        // Chunked must be the last coding; any other final coding runs to the close.
        let last = te.as_bytes().rsplit(|b| *b == b',').next().unwrap_or(b"");
        return Ok(if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Decoding::Chunked(ChunkState::Size)
        } else {
            Decoding::UntilClose
        });
    }
    let mut length: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| protocol("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(protocol("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Decoding::UntilClose, Decoding::Length))
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// What the chunked decoder produced.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// More input is needed.
    More,
}

/// Longest chunk-size line accepted (size, extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Decode the next item of a chunked body from `read` (pure: no I/O).
pub fn decode_chunked(state: &mut ChunkState, read: &mut ReadBuffer) -> Result<Decoded, String> {
    loop {
        match *state {
            ChunkState::Size => {
                let data = read.data();
                let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
                    if data.len() > MAX_CHUNK_LINE {
                        return Err("chunk size line too long".into());
                    }
                    return Ok(Decoded::More);
                };
                let line = &data[..eol];
                let digits_end = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                if digits_end == 0 || digits_end > 16 {
                    return Err("invalid chunk size".into());
                }
                let rest = &line[digits_end..];
                if !rest.is_empty() && !matches!(rest.first(), Some(b';' | b' ' | b'\t')) {
                    return Err("invalid chunk size".into());
                }
                let size = std::str::from_utf8(&line[..digits_end])
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or("invalid chunk size")?;
                read.skip(eol + 2);
                *state = if size == 0 {
                    ChunkState::Trailers
                } else {
                    ChunkState::Data(size)
                };
            }
            ChunkState::Data(left) => {
                if read.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX);
                let data = read.take(n);
                let left = left - data.len() as u64;
                *state = if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left)
                };
                return Ok(Decoded::Data(data));
            }
            ChunkState::DataEnd => {
                let data = read.data();
                if data.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &data[..2] != b"\r\n" {
                    return Err("missing CRLF after chunk data".into());
                }
                read.skip(2);
                *state = ChunkState::Size;
            }
            ChunkState::Trailers => {
                let data = read.data();
                if data.starts_with(b"\r\n") {
                    read.skip(2);
                    return Ok(Decoded::End);
                }
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(data, &mut slots) {
                    Ok(httparse::Status::Complete((n, fields))) => {
                        let mut map = HeaderMap::with_capacity(fields.len());
                        for f in fields {
                            let (Ok(name), Ok(value)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) else {
                                return Err(format!("invalid trailer {:?}", f.name));
                            };
                            map.append(name, value);
                        }
                        read.skip(n);
                        return Ok(Decoded::Trailers(map));
                    }
                    Ok(httparse::Status::Partial) if data.len() >= MAX_HEAD_BYTES => {
                        return Err("trailers too large".into());
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                    Err(e) => return Err(format!("invalid trailers: {e}")),
                }
            }
        }
    }
}

/// A response body read from its upstream connection as the downstream takes it.
#[derive(Debug)]
pub struct ResponseStream {
    conn: Option<Conn>,
    decoding: Decoding,
    /// The connection may carry another request once this body has ended.
    reuse: bool,
    pool: Arc<Upstream>,
}

impl ResponseStream {
    /// The body has ended: the connection goes back to the pool, or closes.
    fn finish(&mut self) {
        self.decoding = Decoding::Done;
        if let Some(conn) = self.conn.take()
            && self.reuse
            && conn.read.is_empty()
        {
            self.pool.pool_idle(conn);
        }
    }

    /// End the body with an error naming the upstream; the connection is closed.
    fn error(&mut self, what: &str) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.decoding = Decoding::Done;
        self.conn = None;
        let msg = format!("response body from upstream {}: {what}", self.pool.addr);
        Poll::Ready(Some(Err(msg.into())))
    }
}

impl HttpBody for ResponseStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let me = self.get_mut();
        loop {
            let Some(conn) = me.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut me.decoding {
                Decoding::Done => return Poll::Ready(None),
                Decoding::Length(left) => {
                    if !conn.read.is_empty() {
                        let data = conn.read.take(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= data.len() as u64;
                        if *left == 0 {
                            me.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Decoding::UntilClose => {
                    if !conn.read.is_empty() {
                        let n = conn.read.data().len();
                        return Poll::Ready(Some(Ok(Frame::data(conn.read.take(n)))));
                    }
                }
                Decoding::Chunked(state) => match decode_chunked(state, &mut conn.read) {
                    Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Ok(Decoded::Trailers(t)) => {
                        me.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::End) => {
                        me.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => return me.error(&format!("invalid chunked encoding: {e}")),
                },
            }
            let Conn { stream, read, .. } = conn;
            match ready!(read.poll_fill(stream, cx)) {
                Ok(0) if me.decoding == Decoding::UntilClose => {
                    me.decoding = Decoding::Done;
                    me.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return me.error("the connection closed before the body ended");
                }
                Ok(_) => {}
                Err(e) => return me.error(&format!("read failed: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoding, Decoding::Done | Decoding::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoding {
            Decoding::Length(n) => SizeHint::with_exact(n),
            Decoding::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn buffer(data: &[u8]) -> ReadBuffer {
        let mut b = ReadBuffer::default();
        b.extend(data);
        b
    }

    /// Decode `input` fed in pieces of `step` bytes; returns the data, trailers and whether the
    /// end was seen.
    fn decode_in_steps(input: &[u8], step: usize) -> (Vec<u8>, Option<HeaderMap>, bool) {
        let mut state = ChunkState::Size;
        let mut read = ReadBuffer::default();
        let (mut data, mut trailers, mut end) = (Vec::new(), None, false);
        let mut fed = 0;
        loop {
            match decode_chunked(&mut state, &mut read).unwrap() {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => {
                    trailers = Some(t);
                    end = true;
                    break;
                }
                Decoded::End => {
                    end = true;
                    break;
                }
                Decoded::More => {
                    if fed >= input.len() {
                        break;
                    }
                    let next = (fed + step).min(input.len());
                    read.extend(&input[fed..next]);
                    fed = next;
                }
            }
        }
        (data, trailers, end)
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let input = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for step in 1..=input.len() {
            let (data, trailers, end) = decode_in_steps(input, step);
            assert_eq!(data, b"hello world", "step {step}");
            assert!(trailers.is_none() && end, "step {step}");
        }
    }

    #[test]
    fn chunked_trailers_are_kept() {
        let input = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n";
        for step in [1, 2, 7, input.len()] {
            let (data, trailers, end) = decode_in_steps(input, step);
            assert_eq!(data, b"abc");
            let t = trailers.unwrap();
            assert_eq!(t["grpc-status"], "0");
            assert_eq!(t["grpc-message"], "ok");
            assert!(end);
        }
    }

    #[test]
    fn bad_chunked_input_is_an_error() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"11111111111111111\r\n",
            b"5x\r\nhello\r\n",
        ] {
            let mut state = ChunkState::Size;
            let mut read = buffer(bad);
            let mut result = Ok(Decoded::More);
            for _ in 0..4 {
                result = decode_chunked(&mut state, &mut read);
                if !matches!(result, Ok(Decoded::Data(_))) {
                    break;
                }
            }
            assert!(
                result.is_err(),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn heads_parse_with_values_shared_and_limits_enforced() {
        let mut read = buffer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: b\r\n\r\nabc");
        let head = parse_head(&mut read).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["x-a"], "b");
        assert!(head.framing_headers && !head.connection_header);
        assert_eq!(read.data(), b"abc");
        assert_eq!(
            response_decoding(&head.headers).unwrap(),
            Decoding::Length(3)
        );

        let mut partial = buffer(b"HTTP/1.1 200 OK\r\ncontent-le");
        assert!(parse_head(&mut partial).unwrap().is_none());

        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("x-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let err = parse_head(&mut buffer(many.as_bytes())).unwrap_err();
        assert!(err.to_string().contains("more than 100"), "{err}");

        let err = parse_head(&mut buffer(b"HTTP/1.1 2x0 OK\r\n\r\n")).unwrap_err();
        assert!(err.to_string().contains("invalid response head"), "{err}");
    }

    #[test]
    fn framing_of_responses() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        assert_eq!(
            response_decoding(&h(&[("transfer-encoding", "gzip, chunked")])).unwrap(),
            Decoding::Chunked(ChunkState::Size)
        );
        assert_eq!(
            response_decoding(&h(&[("transfer-encoding", "gzip")])).unwrap(),
            Decoding::UntilClose
        );
        assert_eq!(
            response_decoding(&h(&[("content-length", "7, 7")])).unwrap(),
            Decoding::Length(7)
        );
        assert!(
            response_decoding(&h(&[("content-length", "7"), ("content-length", "8")])).is_err()
        );
        assert!(response_decoding(&h(&[("content-length", "-1")])).is_err());
        assert_eq!(response_decoding(&h(&[])).unwrap(), Decoding::UntilClose);
    }

    #[test]
    fn request_heads_frame_the_body() {
        let req = |method: Method, headers: &[(&str, &str)]| {
            let mut b = http::Request::builder().method(method).uri("/a?b=1");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let parts = b.body(()).unwrap().into_parts().0;
            RequestHead {
                method: parts.method,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
            }
        };
        let mut head = Vec::new();
        let framing = encode_head(&mut head, &req(Method::GET, &[("host", "x")]), &Body::Empty);
        assert_eq!(head, b"GET /a?b=1 HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(framing, RequestFraming::None);

        let framing = encode_head(&mut head, &req(Method::POST, &[]), &Body::Empty);
        assert!(head.ends_with(b"content-length: 0\r\n\r\n"));
        assert_eq!(framing, RequestFraming::None);

        let framing = encode_head(&mut head, &req(Method::POST, &[]), &Body::full("abc"));
        assert!(head.ends_with(b"content-length: 3\r\n\r\n"));
        assert_eq!(framing, RequestFraming::Length);

        encode_head(
            &mut head,
            &req(Method::PUT, &[("content-length", "3")]),
            &Body::full("abc"),
        );
        assert_eq!(
            head.windows(15).filter(|w| w == b"content-length:").count(),
            1
        );
    }

    #[test]
    fn connection_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, Close"),
        );
        assert!(connection_has(&h, "close"));
        assert!(connection_has(&h, "keep-alive"));
        assert!(!connection_has(&h, "upgrade"));
    }
}
