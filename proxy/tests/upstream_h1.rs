//! The proxy's own HTTP/1.1 upstream client against a scripted backend that writes raw bytes:
//! response framing (chunked with trailers, until close, HEAD, interim 1xx), connection reuse,
//! pooled connections the backend closed, early responses to uploads, invalid responses.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use halyard_config::ProxyResources;
use halyard_proxy::upstream::h1::{ChunkState, Decoded, ReadBuffer, decode_chunked};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use halyard_config::resources as r;

const SVC: &str = "outbound|80||raw.default.svc.cluster.local";

/// What the scripted backend saw.
#[derive(Debug, Default)]
struct Seen {
    connections: AtomicU64,
    requests: AtomicU64,
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Read one request (head, then a content-length or chunked body). `None` at end of stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>, read_body: bool) -> Option<Request> {
    let (method, path, head_len, length, chunked) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).to_string())
            };
            let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
            let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
            break (
                req.method.unwrap().to_string(),
                req.path.unwrap().to_string(),
                n,
                length,
                chunked,
            );
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    buf.drain(..head_len);
    let mut body = Vec::new();
    if read_body && chunked {
        let mut state = ChunkState::Size;
        let mut rb = ReadBuffer::default();
        rb.extend(buf);
        buf.clear();
        loop {
            match decode_chunked(&mut state, &mut rb).unwrap() {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(_) | Decoded::End => break,
                Decoded::More => {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    rb.extend(&chunk[..n]);
                }
            }
        }
    } else if read_body {
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        body = buf.drain(..length).collect();
    }
    Some(Request { method, path, body })
}

/// Write `parts` one by one with a pause between them, so the proxy sees split reads.
async fn write_in_pieces(s: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    for p in parts {
        s.write_all(p).await?;
        s.flush().await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Serve one connection: what to answer is chosen by the request path. Returns when the
/// connection should close.
async fn serve(mut s: TcpStream, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    let mut served_on_this_connection = 0;
    loop {
        // `/early` answers before reading the upload, so only the head is read for it.
        let peek_early = {
            let mut probe = [0u8; 64];
            let n = s.peek(&mut probe).await.unwrap_or(0);
            probe[..n].windows(6).any(|w| w == b"/early")
        };
        let Some(req) = read_request(&mut s, &mut buf, !peek_early).await else {
            return;
        };
        seen.requests.fetch_add(1, Ordering::Relaxed);
        served_on_this_connection += 1;
        let r = match req.path.as_str() {
            "/keep" => {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nkeep")
                    .await
            }
            "/head" => {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nx-head: yes\r\n\r\n")
                    .await
            }
            "/chunked" => {
                write_in_pieces(
                    &mut s,
                    &[
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
                        b"\r\n5\r\nhel",
                        b"lo\r\n6;ext=1\r\n world\r",
                        b"\n0\r\nx-checksum: 42\r\n",
                        b"\r\n",
                    ],
                )
                .await
            }
            "/until-close" => {
                let _ = write_in_pieces(
                    &mut s,
                    &[b"HTTP/1.1 200 OK\r\n\r\nbody ", b"until ", b"close"],
                )
                .await;
                return;
            }
            "/interim" => {
                s.write_all(
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                      HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
                )
                .await
            }
            "/closes-quietly" => {
                // Answers with keep-alive framing, then closes: the pooled connection is stale.
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                return;
            }
            "/drops-next" => {
                // Answers, then takes the next request on this connection and closes without a
                // response, as a server whose keep-alive timer fired just then.
                if served_on_this_connection == 1 {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                } else {
                    return;
                }
            }
            "/upload" => {
                let body = format!("{}", req.body.len());
                s.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-method: {}\r\n\r\n{body}",
                        body.len(),
                        req.method
                    )
                    .as_bytes(),
                )
                .await
            }
            "/early" => {
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig")
                    .await;
                // Keep the connection open (unread upload) for a while, then close.
                tokio::time::sleep(Duration::from_secs(2)).await;
                return;
            }
            "/bad" => {
                let _ = s.write_all(b"HTTP/1.1 2x0 NOPE\r\n\r\n").await;
                return;
            }
            "/short" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
                    .await;
                return;
            }
            _ => {
                s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await
            }
        };
        if r.is_err() {
            return;
        }
    }
}

async fn raw_backend() -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            s2.connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(s, s2.clone()));
        }
    });
    (addr, seen)
}

/// A proxy whose every route goes to the scripted backend over HTTP/1.1 (also for HTTP/2
/// clients).
async fn proxy_to_raw() -> (SocketAddr, Arc<Seen>, Arc<halyard_proxy::Proxy>) {
    let (backend, seen) = raw_backend().await;
    // No retry policy: each request is one upstream exchange.
    let action = to(&[(SVC, 1)]);
    let res = ProxyResources {
        clusters: vec![r::Cluster {
            upstream_protocol: r::cluster::UpstreamProtocol::Http1 as i32,
            ..cluster(SVC, "raw.default.svc.cluster.local")
        }],
        endpoints: vec![endpoints(SVC, &[backend])],
        ..outbound_http(
            "out",
            vec![vhost("raw", &["*"], vec![route("all", vec![], action)])],
        )
    };
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    (addrs["out"], seen, p)
}

type Chunks = StreamBody<
    futures::stream::Iter<
        std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>,
    >,
>;

/// A streamed body of `count` chunks of `size` bytes, with no length announced.
fn chunks(count: usize, size: usize, byte: u8) -> Chunks {
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..count)
        .map(|_| Ok(hyper::body::Frame::data(Bytes::from(vec![byte; size]))))
        .collect();
    StreamBody::new(futures::stream::iter(frames))
}

/// One HTTP/1.1 client connection to `proxy` (requests on it share the connection).
async fn connection<B>(proxy: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let (proxy, seen, _p) = proxy_to_raw().await;
    let client = h1_client();
    for _ in 0..5 {
        let g = get(&client, proxy, "raw", "/keep", &[]).await;
        assert_eq!((g.status.as_u16(), g.text().as_str()), (200, "keep"));
    }
    assert_eq!(seen.requests.load(Ordering::Relaxed), 5);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let (proxy, seen, _p) = proxy_to_raw().await;
    let client = h1_client();
    for _ in 0..2 {
        let req = http::Request::head(format!("http://{proxy}/head"))
            .header("host", "raw")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let g = send(&client, req).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.headers["x-head"], "yes");
        assert_eq!(g.headers["content-length"], "10");
        assert!(g.body.is_empty());
    }
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn chunked_responses_stream_with_their_trailers() {
    let (proxy, seen, _p) = proxy_to_raw().await;
    // HTTP/2 downstream: trailers are always delivered there.
    let g = get(&h2_client(), proxy, "raw", "/chunked", &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.text(), "hello world");
    assert_eq!(g.trailers.unwrap()["x-checksum"], "42");
    // HTTP/1.1 downstream; the connection was read to its end, so it is reused.
    let g = get(&h1_client(), proxy, "raw", "/chunked", &[]).await;
    assert_eq!(g.text(), "hello world");
    let g = get(&h1_client(), proxy, "raw", "/keep", &[]).await;
    assert_eq!(g.text(), "keep");
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn bodies_delimited_by_close_are_delivered_whole() {
    let (proxy, seen, _p) = proxy_to_raw().await;
    let client = h1_client();
    let g = get(&client, proxy, "raw", "/until-close", &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.text(), "body until close");
    let g = get(&client, proxy, "raw", "/keep", &[]).await;
    assert_eq!(g.text(), "keep");
    assert_eq!(seen.connections.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let (proxy, _seen, _p) = proxy_to_raw().await;
    let g = get(&h1_client(), proxy, "raw", "/interim", &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.text(), "final");
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_used() {
    let (proxy, seen, _p) = proxy_to_raw().await;
    let client = h1_client();
    for _ in 0..3 {
        let g = get(&client, proxy, "raw", "/closes-quietly", &[]).await;
        assert_eq!((g.status.as_u16(), g.text().as_str()), (200, "ok"));
        // Let the close reach the proxy's idle connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.connections.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_request_lost_to_a_closing_pooled_connection_is_resent_only_if_idempotent() {
    let (proxy, seen, _p) = proxy_to_raw().await;
    let client = h1_client();
    let g = get(&client, proxy, "raw", "/drops-next", &[]).await;
    assert_eq!(g.status, 200);
    // The pooled connection takes this GET and closes: it goes again on a new connection.
    let g = get(&client, proxy, "raw", "/drops-next", &[]).await;
    assert_eq!((g.status.as_u16(), g.text().as_str()), (200, "ok"));
    assert_eq!(seen.connections.load(Ordering::Relaxed), 2);

    // A POST is never sent twice: the loss is the caller's to see.
    let post = |body: &'static str| {
        http::Request::post(format!("http://{proxy}/drops-next"))
            .header("host", "raw")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let g = send(&client, post("x")).await;
    assert_eq!(g.status, 503);
    assert!(
        g.text()
            .starts_with("upstream connect error or disconnect/reset before headers"),
        "{}",
        g.text()
    );
    assert_eq!(seen.connections.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn request_bodies_are_framed_by_length_or_chunks() {
    let (proxy, _seen, _p) = proxy_to_raw().await;
    let client = h1_client();
    let req = http::Request::post(format!("http://{proxy}/upload"))
        .header("host", "raw")
        .body(Full::new(Bytes::from(vec![b'a'; 100_000])))
        .unwrap();
    let g = send(&client, req).await;
    assert_eq!((g.status.as_u16(), g.text().as_str()), (200, "100000"));

    // No length known: the downstream streams, the proxy sends chunks.
    let mut tx = connection(proxy).await;
    let req = http::Request::put("/upload")
        .header("host", "raw")
        .body(chunks(50, 1000, b'b'))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["x-method"], "PUT");
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "50000");
}

#[tokio::test]
async fn an_early_response_to_an_upload_is_delivered() {
    let (proxy, _seen, _p) = proxy_to_raw().await;
    // 16 MiB, more than the socket buffers hold while the backend reads nothing.
    let mut tx = connection(proxy).await;
    let req = http::Request::post("/early")
        .header("host", "raw")
        .body(chunks(256, 65536, b'c'))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .expect("the early response arrives while the upload is blocked")
        .unwrap();
    assert_eq!(resp.status(), 413);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "big");
}

#[tokio::test]
async fn invalid_and_truncated_responses_are_errors() {
    let (proxy, _seen, p) = proxy_to_raw().await;
    let g = get(&h1_client(), proxy, "raw", "/bad", &[]).await;
    assert_eq!(g.status, 503);
    assert!(
        g.text().ends_with("reset reason: protocol error"),
        "{}",
        g.text()
    );

    // The head was fine, the body stops short: the downstream sees the response fail (hyper
    // drops the connection before or after the head, depending on what it had flushed).
    let mut tx = connection::<Full<Bytes>>(proxy).await;
    let req = http::Request::get("/short")
        .header("host", "raw")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let failed = match tx.send_request(req).await {
        Err(_) => true,
        Ok(resp) => resp.into_body().collect().await.is_err(),
    };
    assert!(
        failed,
        "a truncated upstream body must not look complete downstream"
    );
    drop(p);
}

#[tokio::test]
async fn raw_client_sees_http11_framing_from_the_proxy() {
    // A plain socket client: the proxy's response to it is well-formed HTTP/1.1.
    let (proxy, _seen, _p) = proxy_to_raw().await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET /chunked HTTP/1.1\r\nhost: raw\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
}

// ----- the downstream side: the proxy's own HTTP/1.1 server and its hand-over to hyper's -------

#[tokio::test]
async fn one_connection_moves_from_the_fast_server_to_hyper_and_keeps_working() {
    let (proxy, seen, _p) = proxy_to_raw().await;
    let mut tx = connection::<Full<Bytes>>(proxy).await;
    let req = |method: http::Method, path: &str, body: &'static str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "raw")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    // Served by the proxy's server, then a request with a body hands the connection to hyper's,
    // which serves the rest.
    for (method, path, body, want) in [
        (http::Method::GET, "/keep", "", "keep"),
        (http::Method::POST, "/upload", "12345", "5"),
        (http::Method::GET, "/keep", "", "keep"),
    ] {
        tx.ready().await.unwrap();
        let resp = tx.send_request(req(method, path, body)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, want);
    }
    assert_eq!(seen.requests.load(Ordering::Relaxed), 3);
}

async fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let mut chunk = [0u8; 4096];
    while !done(got) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (proxy, _seen, _p) = proxy_to_raw().await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        b"GET /keep HTTP/1.1\r\nhost: raw\r\n\r\nGET /interim HTTP/1.1\r\nhost: raw\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |g| g.ends_with(b"final")).await;
    let text = String::from_utf8_lossy(&got);
    let first = text.find("keep").unwrap();
    let second = text.find("final").unwrap();
    assert!(first < second, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let (proxy, _seen, _p) = proxy_to_raw().await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET /keep HTTP/1.1\r\nhost: raw\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    // Read to the end: the proxy closes after the response.
    read_until(&mut s, &mut got, |_| false).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("keep"), "{text}");
}

#[tokio::test]
async fn malformed_requests_get_hypers_400() {
    let (proxy, seen, _p) = proxy_to_raw().await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET /keep HTTP/1.1\r\nhost raw\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, |_| false).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert_eq!(seen.requests.load(Ordering::Relaxed), 0);
}
