//! Istio's HTTP metadata exchange, so both sides of a request know who the other is for telemetry.
//!
//! The outbound sidecar adds `x-envoy-peer-metadata-id` and `x-envoy-peer-metadata` (base64 of a
//! `google.protobuf.Struct` with Istio's keys: `NAME`, `NAMESPACE`, `WORKLOAD_NAME`, `LABELS`,
//! `CLUSTER_ID`, `SERVICE_ACCOUNT`, `MESH_ID`) to requests for in-mesh clusters only. The inbound
//! sidecar takes them off the request (the app never sees them), uses them for the `source_*`
//! labels of its `reporter="destination"` metrics, and answers with its own metadata, which the
//! outbound side takes off the response for the `destination_*` labels.
//!
//! Both headers are computed once per proxy. Decoded peers are cached by header value and the
//! label sets they produce are interned once, both bounded ([`MAX_PEERS`], [`MAX_LABEL_SETS`]):
//! past the bounds a peer is reported with the labels the config alone gives.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use prost::Message as _;
use prost_types::value::Kind;
use prost_types::{Struct, Value};

use crate::metrics::{Metrics, PeersId, Reporter, Workload};
use crate::snapshot::NodeInfo;

pub static ID_HEADER: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");
pub static METADATA_HEADER: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");

/// Distinct peers (metadata header values) remembered.
pub const MAX_PEERS: usize = 1024;
/// Label sets created from peer metadata (each becomes interned metric labels).
pub const MAX_LABEL_SETS: usize = 4096;
/// Longer metadata headers are ignored (Istio's are a few hundred bytes).
const MAX_HEADER_LEN: usize = 8 * 1024;

/// Why a metadata header was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("x-envoy-peer-metadata: {0}")]
    Invalid(String),
}

/// A peer workload learned from its metadata.
#[derive(Debug)]
pub struct Peer {
    pub workload: Workload,
    pub cluster_id: String,
    /// Label sets already derived from this peer: (base labels id, reporter) → merged labels.
    merged: RwLock<Vec<(MergeKey, Arc<PeersId>)>>,
}

/// The config-derived labels id and the reporting side a merged label set was made for.
type MergeKey = (u32, Reporter);

/// This proxy's side of the exchange.
#[derive(Debug)]
pub struct PeerExchange {
    id: HeaderValue,
    metadata: HeaderValue,
    trust_domain: String,
    peers: RwLock<HashMap<Box<[u8]>, Arc<Peer>>>,
    label_sets: AtomicUsize,
    warned: AtomicBool,
}

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_string())),
    }
}

/// `spiffe://<trust domain>/ns/<ns>/sa/<sa>` → (trust domain, service account).
fn split_principal(p: &str) -> Option<(&str, &str)> {
    let rest = p.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/')?;
    let sa = path.rsplit_once("/sa/")?.1;
    Some((td, sa))
}

/// The metadata this node sends, as Istio's `x-envoy-peer-metadata` (base64 of a Struct).
pub fn encode(node: &NodeInfo, cluster_id: &str) -> String {
    let (trust_domain, sa) = split_principal(&node.principal).unwrap_or(("", ""));
    let pod = node
        .id
        .strip_suffix(&format!(".{}", node.namespace))
        .unwrap_or(&node.id);
    let mut labels = BTreeMap::new();
    for (k, v) in &node.labels {
        if matches!(
            k.as_str(),
            "app"
                | "version"
                | "service.istio.io/canonical-name"
                | "service.istio.io/canonical-revision"
        ) {
            labels.insert(k.clone(), s(v));
        }
    }
    let mut fields = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            fields.insert(k.to_string(), s(v));
        }
    };
    put("NAME", pod);
    put("NAMESPACE", &node.namespace);
    put("WORKLOAD_NAME", &node.workload);
    put("CLUSTER_ID", cluster_id);
    put("SERVICE_ACCOUNT", sa);
    put("MESH_ID", trust_domain);
    fields.insert(
        "LABELS".to_string(),
        Value {
            kind: Some(Kind::StructValue(Struct { fields: labels })),
        },
    );
    base64::engine::general_purpose::STANDARD.encode(Struct { fields }.encode_to_vec())
}

fn string_field<'a>(st: &'a Struct, key: &str) -> &'a str {
    match st.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s,
        _ => "",
    }
}

/// Decode a peer's `x-envoy-peer-metadata`. `trust_domain` completes its principal when it
/// names no mesh of its own.
pub fn decode(value: &[u8], trust_domain: &str) -> Result<(Workload, String), PeerError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(PeerError::Invalid(format!(
            "{} bytes, more than {MAX_HEADER_LEN}",
            value.len()
        )));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| PeerError::Invalid(format!("not base64: {e}")))?;
    let st = Struct::decode(raw.as_slice())
        .map_err(|e| PeerError::Invalid(format!("not a protobuf Struct: {e}")))?;
    let labels = match st.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(l)) => Some(l),
        _ => None,
    };
    let label = |keys: &[&str]| -> String {
        labels
            .and_then(|l| {
                keys.iter()
                    .map(|k| string_field(l, k))
                    .find(|v| !v.is_empty())
            })
            .unwrap_or("")
            .to_string()
    };
    let namespace = string_field(&st, "NAMESPACE").to_string();
    let sa = string_field(&st, "SERVICE_ACCOUNT");
    let mesh = match string_field(&st, "MESH_ID") {
        "" => trust_domain,
        m => m,
    };
    let principal = if sa.is_empty() || namespace.is_empty() || mesh.is_empty() {
        String::new()
    } else {
        format!("spiffe://{mesh}/ns/{namespace}/sa/{sa}")
    };
    let workload = Workload {
        workload: string_field(&st, "WORKLOAD_NAME").to_string(),
        app: label(&["service.istio.io/canonical-name", "app"]),
        version: label(&["service.istio.io/canonical-revision", "version"]),
        namespace,
        principal,
    };
    if workload == Workload::default() {
        return Err(PeerError::Invalid("no workload fields".into()));
    }
    Ok((workload, string_field(&st, "CLUSTER_ID").to_string()))
}

impl PeerExchange {
    pub fn new(node: &NodeInfo, cluster_id: &str) -> Self {
        let metadata = HeaderValue::from_str(&encode(node, cluster_id))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        let id = HeaderValue::from_str(&format!("sidecar~~{}~{}.svc", node.id, node.namespace))
            .unwrap_or_else(|_| HeaderValue::from_static("sidecar~~~"));
        PeerExchange {
            id,
            metadata,
            trust_domain: split_principal(&node.principal)
                .map(|(td, _)| td.to_string())
                .unwrap_or_default(),
            peers: RwLock::new(HashMap::new()),
            label_sets: AtomicUsize::new(0),
            warned: AtomicBool::new(false),
        }
    }

    /// Our own `x-envoy-peer-metadata` value.
    pub fn metadata(&self) -> &HeaderValue {
        &self.metadata
    }

    /// Take the exchange headers off `headers`; the peer they describe, if understood (cached).
    /// The bool says whether the peer took part in the exchange at all.
    pub fn take(&self, headers: &mut HeaderMap) -> (Option<Arc<Peer>>, bool) {
        if !Self::present(headers) {
            return (None, false);
        }
        let had_id = headers.remove(&ID_HEADER).is_some();
        let Some(v) = headers.remove(&METADATA_HEADER) else {
            return (None, had_id);
        };
        (self.peer(v.as_bytes()), true)
    }

    /// Strip the exchange headers without reading them.
    pub fn strip(headers: &mut HeaderMap) {
        if !Self::present(headers) {
            return;
        }
        headers.remove(&ID_HEADER);
        headers.remove(&METADATA_HEADER);
    }

    /// Whether either exchange header is there (one pass over the names).
    fn present(headers: &HeaderMap) -> bool {
        crate::http::any_header(headers, |n| n == ID_HEADER || n == METADATA_HEADER)
    }

    /// Put ours on a request to an in-mesh upstream, or make sure none leave for anything else.
    pub fn to_upstream(&self, headers: &mut HeaderMap, in_mesh: bool) {
        if in_mesh {
            self.add(headers);
        } else {
            Self::strip(headers);
        }
    }

    /// Add ours (replacing any).
    pub fn add(&self, headers: &mut HeaderMap) {
        headers.insert(ID_HEADER.clone(), self.id.clone());
        headers.insert(METADATA_HEADER.clone(), self.metadata.clone());
    }

    fn peer(&self, value: &[u8]) -> Option<Arc<Peer>> {
        if let Some(p) = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(value)
        {
            return Some(p.clone());
        }
        let (workload, cluster_id) = match decode(value, &self.trust_domain) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring peer metadata");
                return None;
            }
        };
        let mut map = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(value) {
            return Some(p.clone());
        }
        if map.len() >= MAX_PEERS {
            self.warn_once("peer metadata cache full");
            return None;
        }
        let p = Arc::new(Peer {
            workload,
            cluster_id,
            merged: RwLock::new(Vec::new()),
        });
        map.insert(value.into(), p.clone());
        Some(p)
    }

    fn warn_once(&self, what: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_peers = MAX_PEERS,
                max_label_sets = MAX_LABEL_SETS,
                "{what}: further peers are reported with config-derived labels only"
            );
        }
    }

    /// The metric labels of a request whose config-derived labels are `base` and whose peer is
    /// `peer`: the caller for `reporter="destination"`, the callee for `reporter="source"`.
    pub fn labels(
        &self,
        metrics: &Metrics,
        peer: &Peer,
        base: Arc<PeersId>,
        reporter: Reporter,
    ) -> Arc<PeersId> {
        let key = (base.id(), reporter);
        if let Some((_, p)) = peer
            .merged
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(k, _)| *k == key)
        {
            return p.clone();
        }
        let mut merged = peer.merged.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = merged.iter().find(|(k, _)| *k == key) {
            return p.clone();
        }
        if self.label_sets.fetch_add(1, Ordering::Relaxed) >= MAX_LABEL_SETS {
            self.label_sets.fetch_sub(1, Ordering::Relaxed);
            self.warn_once("peer label sets at their bound");
            return base;
        }
        let mut p = base.peers.clone();
        let w = &peer.workload;
        let side = match reporter {
            Reporter::Destination => &mut p.source,
            Reporter::Source => &mut p.destination,
        };
        // The peer's own word wins; what it leaves out keeps the config's value.
        for (dst, src) in [
            (&mut side.workload, &w.workload),
            (&mut side.namespace, &w.namespace),
            (&mut side.app, &w.app),
            (&mut side.version, &w.version),
            (&mut side.principal, &w.principal),
        ] {
            if !src.is_empty() {
                dst.clone_from(src);
            }
        }
        let id = metrics.intern(p);
        merged.push((key, id.clone()));
        id
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node() -> NodeInfo {
        NodeInfo {
            id: "productpage-v1-abc.shop".into(),
            namespace: "shop".into(),
            labels: [
                ("app".to_string(), "productpage".to_string()),
                ("version".to_string(), "v1".to_string()),
                ("pod-template-hash".to_string(), "abc".to_string()),
            ]
            .into_iter()
            .collect(),
            workload: "productpage-v1".into(),
            principal: "spiffe://cluster.local/ns/shop/sa/bookinfo-productpage".into(),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_with_istio_keys() {
        let enc = encode(&node(), "Kubernetes");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&enc)
            .unwrap();
        let st = Struct::decode(raw.as_slice()).unwrap();
        assert_eq!(string_field(&st, "NAME"), "productpage-v1-abc");
        assert_eq!(string_field(&st, "WORKLOAD_NAME"), "productpage-v1");
        assert_eq!(string_field(&st, "SERVICE_ACCOUNT"), "bookinfo-productpage");
        assert_eq!(string_field(&st, "CLUSTER_ID"), "Kubernetes");
        let (w, cluster) = decode(enc.as_bytes(), "other.domain").unwrap();
        assert_eq!(cluster, "Kubernetes");
        assert_eq!(
            w,
            Workload {
                workload: "productpage-v1".into(),
                namespace: "shop".into(),
                app: "productpage".into(),
                version: "v1".into(),
                principal: "spiffe://cluster.local/ns/shop/sa/bookinfo-productpage".into(),
            }
        );
    }

    #[test]
    fn garbage_is_ignored_not_trusted() {
        assert!(decode(b"!!!", "td").is_err());
        let not_struct = base64::engine::general_purpose::STANDARD.encode([0xff, 0xff, 0xff]);
        assert!(decode(not_struct.as_bytes(), "td").is_err());
        let empty =
            base64::engine::general_purpose::STANDARD.encode(Struct::default().encode_to_vec());
        assert!(decode(empty.as_bytes(), "td").is_err());
        assert!(decode(&vec![b'A'; MAX_HEADER_LEN + 4], "td").is_err());
        let x = PeerExchange::new(&node(), "c");
        let mut h = HeaderMap::new();
        h.insert(METADATA_HEADER.clone(), HeaderValue::from_static("%%%"));
        h.insert(ID_HEADER.clone(), HeaderValue::from_static("x"));
        let (peer, took_part) = x.take(&mut h);
        assert!(peer.is_none() && took_part && h.is_empty());
    }

    #[test]
    fn labels_merge_and_are_bounded() {
        let me = PeerExchange::new(&node(), "c");
        let metrics = Metrics::new();
        let base = metrics.intern(crate::metrics::Peers {
            destination: Workload {
                workload: "reviews-v2".into(),
                ..Default::default()
            },
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        me.add(&mut h);
        let other = PeerExchange::new(&NodeInfo::default(), "");
        let (peer, _) = other.take(&mut h);
        let peer = peer.unwrap();
        let a = other.labels(&metrics, &peer, base.clone(), Reporter::Destination);
        let b = other.labels(&metrics, &peer, base.clone(), Reporter::Destination);
        assert_eq!(a.id(), b.id());
        assert_eq!(a.peers.source.app, "productpage");
        assert_eq!(a.peers.destination.workload, "reviews-v2");
        let c = other.labels(&metrics, &peer, base.clone(), Reporter::Source);
        assert_eq!(c.peers.destination.workload, "productpage-v1");
        assert_eq!(c.peers.destination.version, "v1");

        // Many distinct peers: the cache stops growing at its bound.
        for i in 0..(MAX_PEERS + 10) {
            let mut n = node();
            n.workload = format!("w{i}");
            let v = HeaderValue::from_str(&encode(&n, "c")).unwrap();
            let mut h = HeaderMap::new();
            h.insert(METADATA_HEADER.clone(), v);
            let _ = other.take(&mut h);
        }
        assert!(other.peers.read().unwrap().len() <= MAX_PEERS);
    }
}
