//! Shared helpers for the proxy integration tests: config builders, loopback backends, clients.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use halyard_config::ProxyResources;
use halyard_config::resources as r;
use halyard_proxy::{NodeInfo, Proxy, ProxyOptions};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ----- config builders -------------------------------------------------------------------------

pub fn exact(s: &str) -> r::StringMatch {
    r::StringMatch {
        kind: Some(r::string_match::Kind::Exact(s.into())),
        ignore_case: false,
    }
}
pub fn prefix(s: &str) -> r::StringMatch {
    r::StringMatch {
        kind: Some(r::string_match::Kind::Prefix(s.into())),
        ignore_case: false,
    }
}
pub fn regex(s: &str) -> r::StringMatch {
    r::StringMatch {
        kind: Some(r::string_match::Kind::Regex(s.into())),
        ignore_case: false,
    }
}
pub fn present() -> r::StringMatch {
    r::StringMatch {
        kind: Some(r::string_match::Kind::Present(true)),
        ignore_case: false,
    }
}
pub fn header(name: &str, m: Option<r::StringMatch>) -> r::KeyValueMatch {
    r::KeyValueMatch {
        name: name.into(),
        value: m,
        invert: false,
    }
}

pub fn uri(m: r::StringMatch) -> r::RouteMatch {
    r::RouteMatch {
        uri: Some(m),
        ..Default::default()
    }
}

pub fn to(clusters: &[(&str, u32)]) -> r::RouteAction {
    r::RouteAction {
        clusters: clusters
            .iter()
            .map(|(n, w)| r::WeightedCluster {
                name: n.to_string(),
                weight: *w,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn route(name: &str, matches: Vec<r::RouteMatch>, action: r::RouteAction) -> r::Route {
    r::Route {
        name: name.into(),
        matches,
        action: Some(r::route::Action::Route(action)),
        ..Default::default()
    }
}

pub fn vhost(name: &str, domains: &[&str], routes: Vec<r::Route>) -> r::VirtualHost {
    r::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

pub fn route_config(name: &str, vhosts: Vec<r::VirtualHost>) -> r::RouteConfiguration {
    r::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

pub fn http_chain(name: &str, route_name: &str) -> r::FilterChain {
    r::FilterChain {
        name: name.into(),
        handler: Some(r::filter_chain::Handler::Http(r::HttpConnectionManager {
            route_specifier: Some(r::http_connection_manager::RouteSpecifier::RouteConfigName(
                route_name.into(),
            )),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An inbound-style chain with inline routes sending everything to `cluster`.
pub fn inline_http_chain(name: &str, cluster: &str) -> r::FilterChain {
    r::FilterChain {
        name: name.into(),
        handler: Some(r::filter_chain::Handler::Http(r::HttpConnectionManager {
            route_specifier: Some(r::http_connection_manager::RouteSpecifier::RouteConfig(
                route_config(
                    name,
                    vec![vhost(
                        "inbound|http",
                        &["*"],
                        vec![route("default", vec![], to(&[(cluster, 1)]))],
                    )],
                ),
            )),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn tcp_chain(name: &str, clusters: &[(&str, u32)], sni: &[&str]) -> r::FilterChain {
    r::FilterChain {
        name: name.into(),
        r#match: Some(r::FilterChainMatch {
            server_names: sni.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        handler: Some(r::filter_chain::Handler::Tcp(r::TcpProxy {
            clusters: to(clusters).clusters,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn listener(
    name: &str,
    direction: r::listener::Direction,
    chains: Vec<r::FilterChain>,
) -> r::Listener {
    r::Listener {
        name: name.into(),
        address: "127.0.0.1".into(),
        port: 0,
        direction: direction as i32,
        filter_chains: chains,
        ..Default::default()
    }
}

/// An outbound HTTP listener named `listener_name` routed by route configuration "80", which holds
/// `vhosts`: the resources every outbound routing test starts from (clusters and endpoints are
/// the caller's).
pub fn outbound_http(listener_name: &str, vhosts: Vec<r::VirtualHost>) -> ProxyResources {
    ProxyResources {
        listeners: vec![listener(
            listener_name,
            r::listener::Direction::Outbound,
            vec![http_chain("http", "80")],
        )],
        route_configs: vec![route_config("80", vhosts)],
        ..Default::default()
    }
}

pub fn cluster(name: &str, host: &str) -> r::Cluster {
    r::Cluster {
        name: name.into(),
        service_host: host.into(),
        load_balancer: Some(r::LoadBalancer {
            policy: r::load_balancer::Policy::RoundRobin as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn special_cluster(name: &str, t: r::cluster::DiscoveryType) -> r::Cluster {
    r::Cluster {
        name: name.into(),
        r#type: t as i32,
        ..Default::default()
    }
}

pub fn endpoints(cluster: &str, addrs: &[SocketAddr]) -> r::ClusterEndpoints {
    r::ClusterEndpoints {
        cluster_name: cluster.into(),
        endpoints: addrs
            .iter()
            .map(|a| r::Endpoint {
                address: a.ip().to_string(),
                port: u32::from(a.port()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn node(app: &str, version: &str) -> NodeInfo {
    NodeInfo {
        id: format!("{app}-{version}.default"),
        namespace: "default".into(),
        labels: [
            ("app".to_string(), app.to_string()),
            ("version".to_string(), version.to_string()),
        ]
        .into_iter()
        .collect(),
        workload: format!("{app}-{version}"),
        principal: String::new(),
        ..Default::default()
    }
}

/// Start a proxy with `res` applied; returns it and its listener addresses by name.
pub fn start_proxy(
    node: NodeInfo,
    res: &ProxyResources,
) -> (Arc<Proxy>, HashMap<String, SocketAddr>) {
    let p = Proxy::new(ProxyOptions {
        node,
        ..Default::default()
    });
    p.apply(res).expect("config applies");
    let addrs = p.listener_addrs();
    (p, addrs)
}

// ----- backends --------------------------------------------------------------------------------

/// Requests each backend served.
#[derive(Debug, Default)]
pub struct Hits(pub AtomicU64);

fn echo_json(name: &str, req: &Request<Incoming>) -> String {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::from(v.to_str().unwrap_or("")),
            )
        })
        .collect();
    serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        "host": req.headers().get("host").and_then(|h| h.to_str().ok()).map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string())),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    })
    .to_string()
}

type BackendBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn backend_handle(
    name: Arc<str>,
    hits: Arc<Hits>,
    mut req: Request<Incoming>,
) -> Result<Response<BackendBody>, Infallible> {
    hits.0.fetch_add(1, Ordering::Relaxed);
    // WebSocket-style upgrade: answer 101 and echo bytes on the upgraded connection.
    if req.headers().contains_key("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        return Ok(resp);
    }
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
    let status = req
        .headers()
        .get("x-status")
        .and_then(|s| s.to_str().ok()?.parse::<u16>().ok())
        .unwrap_or(200);
    if let Some(ms) = req
        .headers()
        .get("x-delay-ms")
        .and_then(|s| s.to_str().ok()?.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let json = echo_json(&name, &req);
    // Read the request body fully (size reported back).
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if grpc {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("ok"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{}|{}", json, body.len())))),
            Ok(Frame::trailers(trailers)),
        ];
        let resp = Response::builder()
            .header("content-type", "application/grpc")
            .body(BodyExt::boxed(StreamBody::new(futures::stream::iter(
                frames,
            ))))
            .unwrap();
        return Ok(resp);
    }
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-backend", &*name)
        .header("x-backend-secret", "hidden")
        .header("x-request-bytes", body.len().to_string())
        .body(Full::new(Bytes::from(json)).boxed())
        .unwrap();
    Ok(resp)
}

/// An HTTP/1.1 + HTTP/2 (prior knowledge) echo backend on loopback.
pub async fn http_backend(name: &str) -> (SocketAddr, Arc<Hits>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name: Arc<str> = name.into();
    let hits = Arc::new(Hits::default());
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let name = name.clone();
            let hits = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    backend_handle(name.clone(), hits.clone(), req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// A TCP backend: writes `greeting`, then echoes until the client half-closes, then writes
/// "bye" and closes.
pub async fn tcp_backend(greeting: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if s.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.write_all(b"bye").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A loopback address nobody listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

// ----- clients ---------------------------------------------------------------------------------

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn h1_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response read fully.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn backend(&self) -> String {
        self.json()["backend"].as_str().unwrap_or("").to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(client: &Client, req: Request<Full<Bytes>>) -> Got {
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("request within 10s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// GET `http://{proxy}{path}` with `Host: host` and extra headers.
pub async fn get(
    client: &Client,
    proxy: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let mut b = Request::get(format!("http://{proxy}{path}")).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(client, b.body(Full::new(Bytes::new())).unwrap()).await
}

/// A TLS ClientHello record carrying `sni` (enough for the proxy's SNI routing).
pub fn client_hello(sni: &str) -> Vec<u8> {
    let mut sn = vec![0u8];
    sn.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sn.extend_from_slice(sni.as_bytes());
    let mut exts = Vec::new();
    exts.extend_from_slice(&0u16.to_be_bytes());
    exts.extend_from_slice(&((sn.len() + 2) as u16).to_be_bytes());
    exts.extend_from_slice(&(sn.len() as u16).to_be_bytes());
    exts.extend_from_slice(&sn);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9; 32]);
    body.push(0);
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

/// Scrape a proxy's metrics text.
pub fn prometheus(p: &Proxy) -> String {
    let mut s = String::new();
    p.shared().metrics.render(&mut s);
    s
}

/// Sum of `istio_requests_total` series whose labels contain every `needle`.
pub fn requests_total(text: &str, needles: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{") && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Send one request over a fresh HTTP/2 prior-knowledge connection to `addr`, keeping the
/// request's own `:authority` (the pooled client would use the connect address).
pub async fn h2_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Got {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("response within 10s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}
