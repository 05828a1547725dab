//! gRPC retry conditions (`unavailable`, `cancelled`, ...) are decided on the response headers,
//! as Envoy does: a trailers-only response (`grpc-status` in the headers, the usual way servers
//! fail a call before sending messages) is retried; a status that arrives in real trailers after
//! response messages is passed through, because the response is already streaming to the client.

#![allow(clippy::unwrap_used)]

mod common;
mod resilience;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use resilience::*;
use tokio::net::TcpListener;

type B = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A gRPC-style HTTP/2 server: the first `fail` calls end with `grpc-status: code`, trailers-only
/// (`in_trailers` false) or after one message in real trailers; later calls succeed.
async fn grpc_backend(fail: u64, code: u32, in_trailers: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let _ = req.into_body().collect().await;
                        let builder =
                            Response::builder().header("content-type", "application/grpc");
                        let status = if n < fail { code } else { 0 };
                        let resp: Response<B> = if n < fail && !in_trailers {
                            builder
                                .header("grpc-status", status.to_string())
                                .header("grpc-message", "try again")
                                .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                                .unwrap()
                        } else {
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", status.into());
                            let frames = futures::stream::iter(vec![
                                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(
                                    b"\0\0\0\0\x02hi",
                                ))),
                                Ok(Frame::trailers(trailers)),
                            ]);
                            builder.body(StreamBody::new(frames).boxed()).unwrap()
                        };
                        Ok::<_, std::io::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, calls)
}

async fn call(px: SocketAddr) -> Got {
    let req = Request::post("http://svc/pkg.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02yo")))
        .unwrap();
    h2_send(px, req).await
}

fn grpc_status(g: &Got) -> Option<String> {
    g.headers
        .get("grpc-status")
        .or_else(|| g.trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .map(|v| v.to_str().unwrap().to_string())
}

fn proxy_for(addr: SocketAddr, on: &str) -> (Arc<halyard_proxy::Proxy>, SocketAddr) {
    let on = on.to_string();
    let routes = vec![svc_route("r", vec![], move |x| {
        x.retry = Some(retry(3, &on, 0))
    })];
    let res = resources(routes, &[addr], |c| {
        c.upstream_protocol = halyard_config::resources::cluster::UpstreamProtocol::Http2 as i32;
    });
    let (p, addrs) = start_proxy(node("client", "v1"), &res);
    (p, addrs["outbound"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_only_grpc_status_is_retried() {
    // UNAVAILABLE (14) twice, trailers-only: retried on `unavailable`, the third call succeeds.
    let (b, calls) = grpc_backend(2, 14, false).await;
    let (_p, px) = proxy_for(b, "unavailable");
    let got = call(px).await;
    assert_eq!(got.status, 200);
    assert_eq!(grpc_status(&got).as_deref(), Some("0"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // CANCELLED (1) and DEADLINE_EXCEEDED (4) likewise with their conditions.
    for (code, on) in [
        (1, "cancelled"),
        (4, "deadline-exceeded"),
        (8, "resource-exhausted"),
    ] {
        let (b, calls) = grpc_backend(1, code, false).await;
        let (_p, px) = proxy_for(b, on);
        let got = call(px).await;
        assert_eq!(grpc_status(&got).as_deref(), Some("0"), "{on}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{on}");
    }

    // A condition for another code does not retry: the client sees the status.
    let (b, calls) = grpc_backend(1, 14, false).await;
    let (_p, px) = proxy_for(b, "cancelled");
    let got = call(px).await;
    assert_eq!(grpc_status(&got).as_deref(), Some("14"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_in_real_trailers_is_not_retried() {
    // Headers and a message went out before the status: like Envoy, no retry; the trailers
    // reach the client unchanged.
    let (b, calls) = grpc_backend(1, 14, true).await;
    let (_p, px) = proxy_for(b, "unavailable");
    let got = call(px).await;
    assert_eq!(got.status, 200);
    assert!(got.headers.get("grpc-status").is_none());
    assert_eq!(
        got.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .unwrap(),
        "14"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
