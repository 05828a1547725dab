//! The gRPC service by hand rather than tonic's generated one, for one reason: responses are written as
//! chains of already encoded, shared buffers. Tonic's generated server encodes every response into a
//! per-stream buffer, which copies a scope's whole config once per proxy and keeps the largest response's
//! allocation alive per stream (1,000 streams x the largest response). Requests are small and are decoded
//! by tonic as usual.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use halyard_config::discovery::aggregated_discovery_server::SERVICE_NAME;
use halyard_config::discovery::{DeltaDiscoveryRequest, DiscoveryRequest};
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::Codec;
use tonic::codegen::http;
use tonic::server::NamedService;

use super::connection::Outgoing;
use super::output::RESOURCES_FIELD;
use super::server::{Shared, Wire, open_stream};

const STREAM_PATH: &str = "/halyard.discovery.v1.AggregatedDiscovery/Stream";
const DELTA_PATH: &str = "/halyard.discovery.v1.AggregatedDiscovery/Delta";

/// Largest request accepted (a delta reconnect lists every resource it holds).
const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// Below this many bytes of resources a response is copied into one chunk (fewer, fuller frames); above
/// it the shared buffers are chained as they are.
const COPY_BELOW: usize = 16 * 1024;

/// gRPC length-prefixed message header: compression flag and big-endian length.
const FRAME_HEADER: usize = 5;

/// The discovery service (`halyard.discovery.v1.AggregatedDiscovery`); cheap to clone.
#[derive(Clone)]
pub struct DiscoveryService {
    pub(crate) shared: Arc<Shared>,
}

impl NamedService for DiscoveryService {
    const NAME: &'static str = SERVICE_NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<B> tonic::codegen::Service<http::Request<B>> for DiscoveryService
where
    B: Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        match req.uri().path() {
            STREAM_PATH => Box::pin(async move {
                Ok(respond(
                    open_stream(shared, decode::<DiscoveryRequest, B>(req), Wire::sotw()).await,
                ))
            }),
            DELTA_PATH => Box::pin(async move {
                Ok(respond(
                    open_stream(
                        shared,
                        decode::<DeltaDiscoveryRequest, B>(req),
                        Wire::delta(),
                    )
                    .await,
                ))
            }),
            path => {
                let status = Status::unimplemented(format!("no method {path} in {SERVICE_NAME}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

fn decode<Req, B>(req: http::Request<B>) -> tonic::Streaming<Req>
where
    Req: prost::Message + Default + Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    let mut codec = tonic_prost::ProstCodec::<Req, Req>::default();
    tonic::Streaming::new_request(codec.decoder(), req.into_body(), None, Some(MAX_REQUEST))
}

fn respond(
    opened: Result<mpsc::Receiver<Vec<Bytes>>, Status>,
) -> http::Response<tonic::body::Body> {
    match opened {
        Ok(rx) => {
            let mut response = http::Response::new(tonic::body::Body::new(ResponseBody {
                rx,
                pending: VecDeque::new(),
                done: false,
            }));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                tonic::metadata::GRPC_CONTENT_TYPE,
            );
            response
        }
        Err(status) => status.into_http(),
    }
}

/// The response body of one stream: each message is a list of chunks (header, then shared buffers); the
/// stream ends with `grpc-status: 0` when the stream task drops its sender.
struct ResponseBody {
    rx: mpsc::Receiver<Vec<Bytes>>,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(message)) => self.pending.extend(message),
                Poll::Ready(None) => {
                    self.done = true;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

/// One length-prefixed gRPC message: the scalar fields encoded by `fields`, then the resources' entries.
/// `None` when the message would exceed gRPC's 4 GiB frame limit.
fn message(fields: impl FnOnce(&mut BytesMut), resources: Vec<Bytes>) -> Option<Vec<Bytes>> {
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(&[0; FRAME_HEADER]);
    fields(&mut head);
    let resource_bytes: usize = resources.iter().map(Bytes::len).sum();
    let len = u32::try_from(head.len() - FRAME_HEADER + resource_bytes).ok()?;
    head[1..FRAME_HEADER].copy_from_slice(&len.to_be_bytes());
    if resource_bytes < COPY_BELOW {
        for r in &resources {
            head.put_slice(r);
        }
        return Some(vec![head.freeze()]);
    }
    let mut chunks = Vec::with_capacity(resources.len() + 1);
    chunks.push(head.freeze());
    chunks.extend(resources.into_iter().filter(|r| !r.is_empty()));
    Some(chunks)
}

fn string(tag: u32, value: &str, buf: &mut BytesMut) {
    // proto3: empty strings are not written
    if !value.is_empty() {
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

/// A `DiscoveryResponse` (fields: version_info 1, resources 2, type_url 3, nonce 4, control_plane 5).
pub(crate) fn sotw_message(o: &Outgoing, control_plane: &str) -> Option<Vec<Bytes>> {
    debug_assert_eq!(RESOURCES_FIELD, 2);
    message(
        |buf| {
            string(1, &o.version, buf);
            string(3, o.type_url, buf);
            string(4, &o.nonce, buf);
            string(5, control_plane, buf);
        },
        o.resources.chunks(),
    )
}

/// A `DeltaDiscoveryResponse` (fields: system_version_info 1, resources 2, type_url 3,
/// removed_resources 4, nonce 5, control_plane 6).
pub(crate) fn delta_message(o: &Outgoing, control_plane: &str) -> Option<Vec<Bytes>> {
    message(
        |buf| {
            string(1, &o.version, buf);
            string(3, o.type_url, buf);
            for name in &o.removed {
                // repeated strings are written even when empty: an empty name is still an element
                prost::encoding::encode_key(4, prost::encoding::WireType::LengthDelimited, buf);
                prost::encoding::encode_varint(name.len() as u64, buf);
                buf.put_slice(name.as_bytes());
            }
            string(5, &o.nonce, buf);
            string(6, control_plane, buf);
        },
        o.resources.chunks(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use halyard_config::ProxyResources;
    use halyard_config::discovery::{DeltaDiscoveryResponse, DiscoveryResponse};
    use halyard_config::resources::Cluster;
    use halyard_config::type_urls::CLUSTER;
    use prost::Message;

    use super::*;
    use crate::discovery::connection::Payload;
    use crate::discovery::output::{ProxyOutput, SharedTypes};

    fn output(count: usize) -> Arc<ProxyOutput> {
        let cluster = |i: usize| Cluster {
            name: format!("outbound|9080||svc-{i}.default.svc.cluster.local"),
            connect_timeout_ms: 10_000,
            ..Cluster::default()
        };
        let shared = ProxyResources {
            clusters: (0..count).map(cluster).collect(),
            ..ProxyResources::default()
        };
        let local = ProxyResources {
            clusters: vec![Cluster {
                name: "inbound|9080||".into(),
                ..Cluster::default()
            }],
            ..ProxyResources::default()
        };
        Arc::new(ProxyOutput::from_parts(&SharedTypes::new(&shared), &local))
    }

    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
        assert_eq!(all[0], 0, "not compressed");
        assert_eq!(
            len,
            all.len() - FRAME_HEADER,
            "length prefix covers the message"
        );
        all[FRAME_HEADER..].to_vec()
    }

    #[test]
    fn sotw_messages_decode_as_discovery_responses() {
        for count in [2, 400] {
            let set = output(count).of_type(CLUSTER);
            let o = Outgoing {
                type_url: CLUSTER,
                version: set.version(),
                nonce: "n-1".into(),
                resources: Payload::All(set.clone()),
                removed: Vec::new(),
            };
            let chunks = sotw_message(&o, "cp-a").unwrap();
            let decoded = DiscoveryResponse::decode(joined(&chunks).as_slice()).unwrap();
            assert_eq!(decoded.version_info, set.version());
            assert_eq!(decoded.type_url, CLUSTER);
            assert_eq!(decoded.nonce, "n-1");
            assert_eq!(decoded.control_plane, "cp-a");
            assert_eq!(decoded.resources.len(), count + 1);
            for r in set.iter() {
                let sent = decoded
                    .resources
                    .iter()
                    .find(|d| d.name == *r.name)
                    .unwrap();
                assert_eq!(*sent, r.decode().unwrap());
            }
            if count > 100 {
                // large responses reference the shared buffer instead of copying it
                assert!(chunks.len() >= 2);
                assert_eq!(chunks[1].as_ptr(), set.chunks()[0].as_ptr());
            } else {
                assert_eq!(chunks.len(), 1);
            }
        }
    }

    #[test]
    fn delta_messages_carry_upserts_and_removals() {
        let set = output(3).of_type(CLUSTER);
        let upserted: Vec<_> = set.iter().take(2).cloned().collect();
        let o = Outgoing {
            type_url: CLUSTER,
            version: set.version(),
            nonce: "n-2".into(),
            resources: Payload::Only(upserted.clone()),
            removed: vec!["gone-1".into(), "gone-2".into()],
        };
        let decoded =
            DeltaDiscoveryResponse::decode(joined(&delta_message(&o, "cp-b").unwrap()).as_slice())
                .unwrap();
        assert_eq!(decoded.system_version_info, set.version());
        assert_eq!(decoded.nonce, "n-2");
        assert_eq!(decoded.control_plane, "cp-b");
        assert_eq!(decoded.removed_resources, vec!["gone-1", "gone-2"]);
        let names: Vec<_> = decoded.resources.iter().map(|r| r.name.as_str()).collect();
        let want: Vec<_> = upserted.iter().map(|r| &*r.name).collect();
        assert_eq!(names, want);
    }
}
