//! The gRPC side: one task per stream that feeds requests and pushes through its [`Connection`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use halyard_config::discovery::{DeltaDiscoveryRequest, DiscoveryRequest, Node};
use halyard_config::wire::short_name;
use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::{Status, Streaming};

use super::connection::{Connection, Incoming, Mode, Outgoing, RequestKind};
use super::grpc;
use super::output::ProxyOutput;
use super::push::PushContext;
use super::status::ProxyStatus;
use crate::metrics::Metrics;

/// Responses queued per stream before the stream task waits for gRPC to take them; small, so that a slow
/// proxy holds little memory (the rest waits as shared, unencoded config).
const RESPONSE_QUEUE: usize = 2;

/// Settings of the discovery service that are not about addresses.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Name of this control-plane instance, reported to proxies and in proxy-status (ISTIOD column).
    pub control_plane_id: String,
    /// Streams are closed after this long (plus jitter) so that proxies spread over new replicas.
    pub max_connection_age: Option<Duration>,
    /// Fraction of `max_connection_age` added or removed at random per stream.
    pub max_connection_age_jitter: f64,
    /// Streams building and handing over responses at the same time (Istio's PILOT_PUSH_THROTTLE): bounds
    /// the memory a push to many proxies needs at once.
    pub push_concurrency: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            control_plane_id: "halyard-operator".to_string(),
            max_connection_age: Some(Duration::from_secs(30 * 60)),
            max_connection_age_jitter: 0.1,
            push_concurrency: 100,
        }
    }
}

/// One open stream as the debug endpoints see it.
#[derive(Debug, Clone)]
pub struct ConnectionEntry {
    pub status: ProxyStatus,
    pub output: Option<Arc<ProxyOutput>>,
}

/// State shared by every stream of one control plane.
pub(crate) struct Shared {
    pub settings: StreamSettings,
    pub metrics: Arc<Metrics>,
    pub push: watch::Receiver<Option<Arc<PushContext>>>,
    stop: watch::Receiver<bool>,
    pub connections: Mutex<BTreeMap<String, ConnectionEntry>>,
    next_connection: AtomicU64,
    push_permits: Semaphore,
}

impl Shared {
    pub fn new(
        settings: StreamSettings,
        metrics: Arc<Metrics>,
        push: watch::Receiver<Option<Arc<PushContext>>>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let settings_permits = settings.push_concurrency.max(1);
        Shared {
            settings,
            metrics,
            push,
            stop,
            connections: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(1),
            push_permits: Semaphore::new(settings_permits),
        }
    }

    pub fn connections(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ConnectionEntry>> {
        // a panic while holding the lock cannot leave the map half-updated (single insert/remove)
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, conn: &Connection) {
        let status = conn.status();
        let entry = ConnectionEntry {
            status,
            output: conn.output().cloned(),
        };
        self.connections()
            .insert(entry.status.connection_id.clone(), entry);
    }

    fn deadline(&self, now: Instant) -> Option<Instant> {
        let age = self.settings.max_connection_age?;
        let jitter = self.settings.max_connection_age_jitter.clamp(0.0, 1.0);
        let factor = 1.0 + rand::rng().random_range(-jitter..=jitter);
        Some(now + age.mul_f64(factor.max(0.0)))
    }
}

/// How one protocol form maps onto the normalised requests and responses.
pub(crate) struct Wire<Req> {
    mode: Mode,
    incoming: fn(Req) -> Incoming,
    node: fn(&Req) -> Option<Node>,
    /// The response as gRPC message chunks; `None` when it cannot be framed.
    outgoing: fn(&Outgoing, &str) -> Option<Vec<Bytes>>,
}

impl Wire<DiscoveryRequest> {
    pub(crate) fn sotw() -> Self {
        Wire {
            mode: Mode::StateOfTheWorld,
            incoming: sotw_incoming,
            node: |r| r.node.clone(),
            outgoing: grpc::sotw_message,
        }
    }
}

impl Wire<DeltaDiscoveryRequest> {
    pub(crate) fn delta() -> Self {
        Wire {
            mode: Mode::Delta,
            incoming: delta_incoming,
            node: |r| r.node.clone(),
            outgoing: grpc::delta_message,
        }
    }
}

/// Waits for the stream's first request (it names the proxy), then runs the stream in its own task and
/// returns the receiving end of its responses.
pub(crate) async fn open_stream<Req>(
    shared: Arc<Shared>,
    mut inbound: Streaming<Req>,
    wire: Wire<Req>,
) -> Result<mpsc::Receiver<Vec<Bytes>>, Status>
where
    Req: prost::Message + Default + Send + 'static,
{
    let first = first_request(&mut inbound).await?;
    let node = node_of((wire.node)(&first))?;
    let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
    tokio::spawn(run_stream(shared, wire, node, first, inbound, tx));
    Ok(rx)
}

async fn first_request<Req>(inbound: &mut Streaming<Req>) -> Result<Req, Status>
where
    Req: prost::Message + Default + 'static,
{
    match inbound.message().await? {
        Some(first) => Ok(first),
        None => Err(Status::invalid_argument(
            "discovery stream closed before its first request",
        )),
    }
}

fn node_of(node: Option<Node>) -> Result<Node, Status> {
    match node {
        Some(node) if !node.id.is_empty() => Ok(node),
        Some(_) => Err(Status::invalid_argument(
            "first discovery request: node.id is empty (expected `<pod>.<namespace>`)",
        )),
        None => Err(Status::invalid_argument(
            "first discovery request carries no node",
        )),
    }
}

/// Drives one stream until the proxy hangs up, the stream reaches its maximum age, or the server stops.
async fn run_stream<Req>(
    shared: Arc<Shared>,
    wire: Wire<Req>,
    node: Node,
    first: Req,
    mut inbound: Streaming<Req>,
    tx: mpsc::Sender<Vec<Bytes>>,
) where
    Req: prost::Message + Default + Send + 'static,
{
    let seq = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let connection_id = format!("{}-{seq}", node.id);
    let connected_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let control_plane = shared.settings.control_plane_id.clone();
    let mut conn = Connection::new(
        wire.mode,
        node,
        connection_id.clone(),
        control_plane.clone(),
        connected_at,
    );
    let mut push = shared.push.clone();
    let mut stop = shared.stop.clone();
    let current = push.borrow_and_update().clone();
    // the stream starts from the current config; nothing is owed yet, so nothing is sent
    if let Some(ctx) = current
        && let Some(output) = compute(&shared, &ctx, conn.node())
    {
        let _ = conn.on_push(output, ctx.config_version, ctx.first_change);
    }
    shared.metrics.proxy_connected();
    tracing::debug!(proxy = %conn.node().id, %connection_id, mode = wire.mode.name(), "proxy connected");

    let deadline = shared.deadline(Instant::now());
    let sleep = async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);

    let mut request = Some(first);
    let reason = loop {
        if let Some(req) = request.take() {
            let incoming = (wire.incoming)(req);
            let type_url = incoming.type_url.clone();
            // only subscribes produce (large) responses; ACKs must not queue behind pushes
            let _permit = if incoming.nonce.is_empty() {
                shared.push_permits.acquire().await.ok()
            } else {
                None
            };
            let (responses, kind, converged) = conn.on_request(incoming, Instant::now());
            record_request(&shared, &conn, &type_url, &kind, converged);
            if !send(&shared, &tx, &wire, &control_plane, responses).await {
                break "proxy stopped reading";
            }
            shared.publish(&conn);
            continue;
        }
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(req)) => request = Some(req),
                Ok(None) => break "proxy closed the stream",
                Err(_) => break "stream error",
            },
            changed = push.changed() => {
                if changed.is_err() {
                    break "control plane stopping";
                }
                let ctx = push.borrow_and_update().clone();
                let Some(ctx) = ctx else { continue };
                let _permit = shared.push_permits.acquire().await.ok();
                let Some(output) = compute(&shared, &ctx, conn.node()) else { continue };
                let responses = conn.on_push(output, ctx.config_version, ctx.first_change);
                if !send(&shared, &tx, &wire, &control_plane, responses).await {
                    break "proxy stopped reading";
                }
                shared.publish(&conn);
            }
            _ = &mut sleep => break "maximum connection age reached",
            _ = stopping(&mut stop) => break "control plane stopping",
        }
    };
    tracing::debug!(proxy = %conn.node().id, %connection_id, reason, "proxy disconnected");
    shared.connections().remove(&connection_id);
    shared.metrics.proxy_disconnected();
}

/// Completes when the control plane stops (or its handle is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

fn compute(shared: &Shared, ctx: &PushContext, node: &Node) -> Option<Arc<ProxyOutput>> {
    match ctx.output_for(node) {
        Ok(output) => Some(output),
        Err(err) => {
            shared.metrics.internal_error();
            tracing::warn!(proxy = %node.id, error = %err, "cannot compute proxy config; keeping the last one sent");
            None
        }
    }
}

fn record_request(
    shared: &Shared,
    conn: &Connection,
    type_url: &str,
    kind: &RequestKind,
    converged: Option<Duration>,
) {
    if let Some(elapsed) = converged {
        shared.metrics.observe_convergence(elapsed);
    }
    match kind {
        RequestKind::Nack(reason) => {
            shared.metrics.push_rejected(short_name(type_url));
            tracing::warn!(proxy = %conn.node().id, type_url, %reason, "proxy rejected config (NACK)");
        }
        RequestKind::Expired => shared.metrics.expired_nonce(short_name(type_url)),
        RequestKind::UnknownType => {
            tracing::debug!(proxy = %conn.node().id, type_url, "request for an unknown type ignored");
        }
        RequestKind::Subscribe | RequestKind::Ack => {}
    }
}

/// Sends responses in order; false when the proxy is gone.
async fn send<Req>(
    shared: &Shared,
    tx: &mpsc::Sender<Vec<Bytes>>,
    wire: &Wire<Req>,
    control_plane: &str,
    responses: Vec<Outgoing>,
) -> bool {
    for out in responses {
        let short = short_name(out.type_url);
        let Some(message) = (wire.outgoing)(&out, control_plane) else {
            tracing::warn!(
                type_url = out.type_url,
                resources = out.resources.len(),
                "response too large for one gRPC message"
            );
            shared.metrics.push_send_error(short);
            return false;
        };
        // the response now lives only as chunks that reference the shared encoded config
        drop(out);
        if tx.send(message).await.is_err() {
            shared.metrics.push_send_error(short);
            return false;
        }
        shared.metrics.push_sent(short);
    }
    true
}

fn sotw_incoming(r: DiscoveryRequest) -> Incoming {
    Incoming {
        type_url: r.type_url,
        version: r.version_info,
        nonce: r.response_nonce,
        names: r.resource_names,
        error: r.error_detail.map(|e| e.message),
        initial_versions: BTreeMap::new(),
        subscribe: Vec::new(),
        unsubscribe: Vec::new(),
    }
}

fn delta_incoming(r: DeltaDiscoveryRequest) -> Incoming {
    Incoming {
        type_url: r.type_url,
        version: String::new(),
        nonce: r.response_nonce,
        names: Vec::new(),
        error: r.error_detail.map(|e| e.message),
        initial_versions: r.initial_resource_versions,
        subscribe: r.resource_names_subscribe,
        unsubscribe: r.resource_names_unsubscribe,
    }
}
