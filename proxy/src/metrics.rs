//! Istio's standard metrics (names and labels as Istio's proxies export them), Prometheus text.
//!
//! Label values are interned once per config version ([`Metrics::intern`]); the hot path builds a
//! small `Copy` key of ids and numbers, finds its series under a read lock and bumps atomics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Envoy's response flags (the subset halyard sets), rendered comma-separated or `-`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(pub u16);

impl ResponseFlags {
    pub const NONE: Self = ResponseFlags(0);
    /// No route configured.
    pub const NR: Self = ResponseFlags(1);
    /// No healthy upstream.
    pub const UH: Self = ResponseFlags(1 << 1);
    /// Upstream connection failure.
    pub const UF: Self = ResponseFlags(1 << 2);
    /// Upstream overflow (circuit breaking).
    pub const UO: Self = ResponseFlags(1 << 3);
    /// Upstream request timeout.
    pub const UT: Self = ResponseFlags(1 << 4);
    /// Upstream retry limit exceeded.
    pub const URX: Self = ResponseFlags(1 << 5);
    /// Downstream connection termination.
    pub const DC: Self = ResponseFlags(1 << 6);
    /// Upstream connection termination.
    pub const UC: Self = ResponseFlags(1 << 7);
    /// Delay injected.
    pub const DI: Self = ResponseFlags(1 << 8);
    /// Fault (abort) injected.
    pub const FI: Self = ResponseFlags(1 << 9);
    /// Upstream reset before response.
    pub const UR: Self = ResponseFlags(1 << 10);
    /// Request refused by policy (RBAC).
    pub const RBAC: Self = ResponseFlags(1 << 11);

    const NAMES: [(Self, &'static str); 12] = [
        (Self::NR, "NR"),
        (Self::UH, "UH"),
        (Self::UF, "UF"),
        (Self::UO, "UO"),
        (Self::UT, "UT"),
        (Self::URX, "URX"),
        (Self::DC, "DC"),
        (Self::UC, "UC"),
        (Self::DI, "DI"),
        (Self::FI, "FI"),
        (Self::UR, "UR"),
        (Self::RBAC, "RBAC"),
    ];

    pub fn union(self, other: Self) -> Self {
        ResponseFlags(self.0 | other.0)
    }
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.0 & flag.0 != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Who reports: the client-side proxy (`source`) or the server-side one (`destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
}

impl Reporter {
    fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The protocol label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    Http,
    Grpc,
    Tcp,
}

impl RequestProtocol {
    fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
            RequestProtocol::Tcp => "tcp",
        }
    }
}

/// Labels describing one workload (either side of a request). Missing values render as `unknown`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Workload {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub principal: String,
}

/// Labels describing the destination service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Service {
    /// FQDN, e.g. `reviews.default.svc.cluster.local`.
    pub host: String,
    pub name: String,
    pub namespace: String,
}

/// One interned (source workload, destination workload, destination service) triple.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Peers {
    pub source: Workload,
    pub destination: Workload,
    pub service: Service,
}

/// An interned [`Peers`]: its id goes into series keys.
#[derive(Debug)]
pub struct PeersId {
    id: u32,
    pub peers: Peers,
}

impl PeersId {
    pub fn id(&self) -> u32 {
        self.id
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ReqKey {
    reporter: Reporter,
    peers: u32,
    code: u16,
    grpc: i16,
    flags: ResponseFlags,
    proto: RequestProtocol,
    mtls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TcpKey {
    reporter: Reporter,
    peers: u32,
    flags: ResponseFlags,
    mtls: bool,
}

/// Istio's duration buckets (milliseconds).
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's size buckets (bytes): powers of ten up to 10^9.
const SIZE_BUCKETS: [f64; 10] = [
    1.0,
    10.0,
    100.0,
    1000.0,
    10000.0,
    100000.0,
    1000000.0,
    10000000.0,
    100000000.0,
    1000000000.0,
];

#[derive(Debug)]
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    /// Sum in thousandths of the unit, so sub-millisecond durations add up.
    sum_milli: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_milli: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
    fn observe(&self, bounds: &[f64; N], v: f64) {
        if let Some(i) = bounds.iter().position(|b| v <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_milli
            .fetch_add((v * 1000.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct ReqSeries {
    total: AtomicU64,
    duration: Histogram<19>,
    req_bytes: Histogram<10>,
    resp_bytes: Histogram<10>,
}

#[derive(Debug, Default)]
struct TcpSeries {
    opened: AtomicU64,
    closed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// A completed request, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    pub reporter: Reporter,
    pub peers: &'a PeersId,
    pub code: u16,
    pub grpc_status: Option<u16>,
    pub flags: ResponseFlags,
    pub protocol: RequestProtocol,
    pub mtls: bool,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Hashes the small `Copy` series keys (a few integers) on the request path: the Fx multiply-
/// rotate mix instead of SipHash. Keys come from interned ids and enums, not raw request input.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

type KeyMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Most series kept; further label combinations are folded into the `unknown` peers series.
pub const MAX_SERIES: usize = 10_000;

/// The metric registry of one proxy (shared by all config versions).
#[derive(Debug)]
pub struct Metrics {
    interned: Mutex<HashMap<Peers, Arc<PeersId>>>,
    by_id: RwLock<Vec<Arc<PeersId>>>,
    requests: RwLock<KeyMap<ReqKey, Arc<ReqSeries>>>,
    tcp: RwLock<KeyMap<TcpKey, Arc<TcpSeries>>>,
    unknown: Arc<PeersId>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let unknown = Arc::new(PeersId {
            id: 0,
            peers: Peers::default(),
        });
        let mut interned = HashMap::new();
        interned.insert(Peers::default(), unknown.clone());
        Metrics {
            interned: Mutex::new(interned),
            by_id: RwLock::new(vec![unknown.clone()]),
            requests: RwLock::new(KeyMap::default()),
            tcp: RwLock::new(KeyMap::default()),
            unknown,
        }
    }

    /// Intern a label triple (at config compile time, not per request).
    pub fn intern(&self, peers: Peers) -> Arc<PeersId> {
        let mut map = self.interned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(&peers) {
            return p.clone();
        }
        let mut by_id = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        let p = Arc::new(PeersId {
            id: by_id.len() as u32,
            peers: peers.clone(),
        });
        by_id.push(p.clone());
        map.insert(peers, p.clone());
        p
    }

    pub fn unknown_peers(&self) -> &Arc<PeersId> {
        &self.unknown
    }

    fn series<K: Hash + Eq + Copy, S>(
        map: &RwLock<KeyMap<K, Arc<S>>>,
        key: K,
        overflow: impl FnOnce(K) -> K,
        make: impl FnOnce() -> S,
    ) -> Arc<S> {
        if let Some(s) = map.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return s.clone();
        }
        let mut w = map.write().unwrap_or_else(|e| e.into_inner());
        let key = if w.len() >= MAX_SERIES && !w.contains_key(&key) {
            overflow(key)
        } else {
            key
        };
        w.entry(key).or_insert_with(|| Arc::new(make())).clone()
    }

    pub fn record_request(&self, r: &RequestRecord<'_>) {
        let key = ReqKey {
            reporter: r.reporter,
            peers: r.peers.id,
            code: r.code,
            grpc: r.grpc_status.map(|g| g as i16).unwrap_or(-1),
            flags: r.flags,
            proto: r.protocol,
            mtls: r.mtls,
        };
        let s = Self::series(
            &self.requests,
            key,
            // Overflow: one catch-all series per reporter/protocol/mTLS.
            |k| ReqKey {
                peers: 0,
                code: 0,
                grpc: -1,
                flags: ResponseFlags::NONE,
                ..k
            },
            || ReqSeries {
                total: AtomicU64::new(0),
                duration: Histogram::new(),
                req_bytes: Histogram::new(),
                resp_bytes: Histogram::new(),
            },
        );
        s.total.fetch_add(1, Ordering::Relaxed);
        s.duration.observe(&DURATION_BUCKETS, r.duration_ms);
        s.req_bytes.observe(&SIZE_BUCKETS, r.request_bytes as f64);
        s.resp_bytes.observe(&SIZE_BUCKETS, r.response_bytes as f64);
    }

    /// A handle for one TCP connection's counters.
    pub fn tcp(
        &self,
        reporter: Reporter,
        peers: &PeersId,
        flags: ResponseFlags,
        mtls: bool,
    ) -> TcpHandle {
        let key = TcpKey {
            reporter,
            peers: peers.id,
            flags,
            mtls,
        };
        TcpHandle(Self::series(
            &self.tcp,
            key,
            |k| TcpKey {
                peers: 0,
                flags: ResponseFlags::NONE,
                ..k
            },
            TcpSeries::default,
        ))
    }

    /// Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let by_id = self.by_id.read().unwrap_or_else(|e| e.into_inner()).clone();
        let peers = |id: u32| by_id.get(id as usize).unwrap_or(&self.unknown).clone();
        let mut reqs: Vec<(ReqKey, Arc<ReqSeries>)> = self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        reqs.sort_by_key(|(k, _)| (k.peers, k.code, k.flags.0, k.reporter as u8));
        let mut labels: Vec<String> = Vec::with_capacity(reqs.len());
        for (k, _) in &reqs {
            let p = peers(k.peers);
            let mut l = String::new();
            common_labels(&mut l, k.reporter, &p.peers, k.mtls);
            let _ = write!(
                l,
                ",request_protocol=\"{}\",response_code=\"{}\",grpc_response_status=\"{}\",response_flags=\"{}\"",
                k.proto.as_str(),
                k.code,
                if k.grpc >= 0 {
                    k.grpc.to_string()
                } else {
                    String::new()
                },
                k.flags
            );
            labels.push(l);
        }
        out.push_str("# TYPE istio_requests_total counter\n");
        for ((_, s), l) in reqs.iter().zip(&labels) {
            let _ = writeln!(
                out,
                "istio_requests_total{{{l}}} {}",
                s.total.load(Ordering::Relaxed)
            );
        }
        render_hist(
            out,
            "istio_request_duration_milliseconds",
            &DURATION_BUCKETS,
            reqs.iter().zip(&labels).map(|((_, s), l)| (l, &s.duration)),
        );
        render_hist(
            out,
            "istio_request_bytes",
            &SIZE_BUCKETS,
            reqs.iter()
                .zip(&labels)
                .map(|((_, s), l)| (l, &s.req_bytes)),
        );
        render_hist(
            out,
            "istio_response_bytes",
            &SIZE_BUCKETS,
            reqs.iter()
                .zip(&labels)
                .map(|((_, s), l)| (l, &s.resp_bytes)),
        );

        let mut tcp: Vec<(TcpKey, Arc<TcpSeries>)> = self
            .tcp
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        tcp.sort_by_key(|(k, _)| (k.peers, k.flags.0, k.reporter as u8));
        let tcp_labels: Vec<String> = tcp
            .iter()
            .map(|(k, _)| {
                let mut l = String::new();
                common_labels(&mut l, k.reporter, &peers(k.peers).peers, k.mtls);
                let _ = write!(
                    l,
                    ",request_protocol=\"tcp\",response_flags=\"{}\"",
                    k.flags
                );
                l
            })
            .collect();
        let counters: [(&str, TcpField); 4] = [
            ("istio_tcp_connections_opened_total", |s| &s.opened),
            ("istio_tcp_connections_closed_total", |s| &s.closed),
            ("istio_tcp_sent_bytes_total", |s| &s.sent),
            ("istio_tcp_received_bytes_total", |s| &s.received),
        ];
        for (name, get) in counters {
            let _ = writeln!(out, "# TYPE {name} counter");
            for ((_, s), l) in tcp.iter().zip(&tcp_labels) {
                let _ = writeln!(out, "{name}{{{l}}} {}", get(s).load(Ordering::Relaxed));
            }
        }
    }
}

/// Accessor of one TCP counter, for rendering.
type TcpField = fn(&TcpSeries) -> &AtomicU64;

fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if v.is_empty() {
        return "unknown".into();
    }
    if v.contains(['"', '\\', '\n']) {
        return v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into();
    }
    v.into()
}

fn common_labels(l: &mut String, reporter: Reporter, p: &Peers, mtls: bool) {
    let policy = match (reporter, mtls) {
        (Reporter::Source, _) => "unknown",
        (Reporter::Destination, true) => "mutual_tls",
        (Reporter::Destination, false) => "none",
    };
    let _ = write!(
        l,
        "reporter=\"{}\",source_workload=\"{}\",source_workload_namespace=\"{}\",source_principal=\"{}\",source_app=\"{}\",source_version=\"{}\",\
destination_workload=\"{}\",destination_workload_namespace=\"{}\",destination_principal=\"{}\",destination_app=\"{}\",destination_version=\"{}\",\
destination_service=\"{}\",destination_service_name=\"{}\",destination_service_namespace=\"{}\",connection_security_policy=\"{}\"",
        reporter.as_str(),
        esc(&p.source.workload),
        esc(&p.source.namespace),
        esc(&p.source.principal),
        esc(&p.source.app),
        esc(&p.source.version),
        esc(&p.destination.workload),
        esc(&p.destination.namespace),
        esc(&p.destination.principal),
        esc(&p.destination.app),
        esc(&p.destination.version),
        esc(&p.service.host),
        esc(&p.service.name),
        esc(&p.service.namespace),
        policy
    );
}

fn render_hist<'a, const N: usize>(
    out: &mut String,
    name: &str,
    bounds: &[f64; N],
    series: impl Iterator<Item = (&'a String, &'a Histogram<N>)>,
) {
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (l, h) in series {
        let mut cum = 0;
        for (i, b) in bounds.iter().enumerate() {
            cum += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {cum}");
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {count}");
        let sum = h.sum_milli.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(out, "{name}_sum{{{l}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{l}}} {count}");
    }
}

/// Counters of one TCP connection's series.
#[derive(Debug, Clone)]
pub struct TcpHandle(Arc<TcpSeries>);

impl TcpHandle {
    pub fn opened(&self) {
        self.0.opened.fetch_add(1, Ordering::Relaxed);
    }
    pub fn closed(&self) {
        self.0.closed.fetch_add(1, Ordering::Relaxed);
    }
    /// Bytes sent to the downstream peer / received from it, as Istio counts them.
    pub fn bytes(&self, sent: u64, received: u64) {
        self.0.sent.fetch_add(sent, Ordering::Relaxed);
        self.0.received.fetch_add(received, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_like_envoy() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(
            ResponseFlags::UF.union(ResponseFlags::URX).to_string(),
            "UF,URX"
        );
        assert!(
            ResponseFlags::UF
                .union(ResponseFlags::NR)
                .contains(ResponseFlags::NR)
        );
    }

    #[test]
    fn interning_dedups_and_records_render() {
        let m = Metrics::new();
        let peers = Peers {
            source: Workload {
                workload: "productpage-v1".into(),
                namespace: "default".into(),
                ..Default::default()
            },
            destination: Workload::default(),
            service: Service {
                host: "reviews.default.svc.cluster.local".into(),
                name: "reviews".into(),
                namespace: "default".into(),
            },
        };
        let a = m.intern(peers.clone());
        let b = m.intern(peers);
        assert_eq!(a.id(), b.id());
        for code in [200, 200, 503] {
            m.record_request(&RequestRecord {
                reporter: Reporter::Source,
                peers: &a,
                code,
                grpc_status: None,
                flags: if code == 503 {
                    ResponseFlags::UF
                } else {
                    ResponseFlags::NONE
                },
                protocol: RequestProtocol::Http,
                mtls: false,
                duration_ms: 3.0,
                request_bytes: 0,
                response_bytes: 1024,
            });
        }
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("reporter=\"source\",source_workload=\"productpage-v1\""));
        let ok = out
            .lines()
            .find(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("response_code=\"200\"")
                    && l.contains("response_flags=\"-\"")
            })
            .unwrap();
        assert!(ok.ends_with(" 2"), "{ok}");
        assert!(
            out.contains(
                "response_code=\"503\",grpc_response_status=\"\",response_flags=\"UF\"} 1"
            )
        );
        assert!(out.contains("destination_workload=\"unknown\""));
        assert!(out.contains("istio_request_duration_milliseconds_bucket{"));
        assert!(out.contains("le=\"5\"} 2"));
    }

    #[test]
    fn series_are_bounded() {
        let m = Metrics::new();
        let p = m.unknown_peers().clone();
        for code in 0..(MAX_SERIES as u16 + 50) {
            m.record_request(&RequestRecord {
                reporter: Reporter::Destination,
                peers: &p,
                code,
                grpc_status: None,
                flags: ResponseFlags::NONE,
                protocol: RequestProtocol::Http,
                mtls: false,
                duration_ms: 1.0,
                request_bytes: 0,
                response_bytes: 0,
            });
        }
        let len = m.requests.read().unwrap().len();
        assert!(len <= MAX_SERIES + 1, "{len}");
    }
}
