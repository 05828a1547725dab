//! A scripted, in-memory Kubernetes API server behind kube's mocked transport (`tower_test::mock::pair`).
//!
//! Every request is checked (server-side applies must use the `halyard-operator` field manager with
//! `force=true`, bodies must name the object of the URL) and answered from a store of objects, so reconcile
//! tests can assert both the order of calls and the resulting cluster state. Failures can be scripted.
//! Watches (`?watch=true`) are served as open streams of events for every change made through the API or
//! through [`State::insert`] / [`State::remove`], so that kube-runtime Controllers can run against it.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

/// Body of the mock's responses: whole, or a stream of watch events.
pub type MockBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;

fn full(bytes: Vec<u8>) -> MockBody {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

/// An open watch: which objects it wants, and where their events go.
pub struct Watch {
    prefix: String,
    namespace: Option<String>,
    plural: String,
    labels: String,
    fields: String,
    tx: UnboundedSender<Bytes>,
}

/// Where an object lives: (group/version prefix, namespace, plural, name).
pub type Key = (String, Option<String>, String, String);

#[derive(Debug, Clone)]
pub struct Parsed {
    pub prefix: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub query: BTreeMap<String, String>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

pub fn parse(uri: &http::Uri) -> Parsed {
    let path = uri.path();
    let query = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix, rest) = if segs[0] == "api" {
        (format!("/api/{}", segs[1]), &segs[2..])
    } else {
        (format!("/apis/{}/{}", segs[1], segs[2]), &segs[3..])
    };
    let s = |i: usize| rest.get(i).map(|x| x.to_string());
    if rest[0] == "namespaces" && rest.len() >= 3 {
        Parsed {
            prefix,
            namespace: s(1),
            plural: rest[2].to_string(),
            name: s(3),
            subresource: s(4),
            query,
        }
    } else {
        Parsed {
            prefix,
            namespace: None,
            plural: rest[0].to_string(),
            name: s(1),
            subresource: s(2),
            query,
        }
    }
}

/// A request as logged: `VERB plural ns/name` with VERB one of GET, LIST, APPLY, MERGE, JSONPATCH, CREATE,
/// DRYRUN, REPLACE, DELETE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub verb: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.plural)?;
        if let Some(ns) = &self.namespace {
            write!(f, " {ns}/")?;
        } else {
            write!(f, " ")?;
        }
        write!(f, "{}", self.name.as_deref().unwrap_or("*"))?;
        if let Some(s) = &self.subresource {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

/// A scripted failure: the first `times` requests matching verb and plural get `code`.
#[derive(Debug, Clone)]
pub struct Failure {
    pub verb: &'static str,
    pub plural: &'static str,
    pub code: u16,
    pub times: u32,
}

#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<Key, Value>,
    pub calls: Vec<Call>,
    pub events: Vec<Value>,
    pub failures: Vec<Failure>,
    /// Whether applied CRDs become Established at once.
    pub establish_crds: bool,
    /// Whether a dry-run object annotated `internal.istio.io/webhook-always-reject` is denied.
    pub validation_denies: bool,
    /// `gitVersion` served at `/version`; `None` serves [`DEFAULT_KUBERNETES_VERSION`].
    pub kubernetes_version: Option<String>,
    pub next_rv: u64,
    /// Open watches.
    pub watches: Vec<Watch>,
    /// Field managers besides `halyard-operator` allowed to server-side apply (e.g. `halyard-cli`).
    pub other_field_managers: Vec<&'static str>,
    /// Whether a DELETE of an object with finalizers only marks it (`deletionTimestamp`) and it goes when
    /// its last finalizer is removed, as the API server does. Off: DELETE removes at once.
    pub honor_finalizers: bool,
}

/// What `/version` says unless a test sets [`State::kubernetes_version`].
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.33.0";

fn status(code: u16, reason: &str, message: &str) -> Response<MockBody> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(v: &Value) -> Response<MockBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

/// Deep merge as server-side apply does for our purposes: maps merge, everything else is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// `metadata.name=x,metadata.namespace=y` (the field selectors the operator uses).
fn fields_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap();
        let path = format!("/{}", k.replace('.', "/"));
        obj.pointer(&path).and_then(Value::as_str) == Some(v)
    })
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap();
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v)
    })
}

impl State {
    pub fn key(prefix: &str, ns: Option<&str>, plural: &str, name: &str) -> Key {
        (
            prefix.to_string(),
            ns.map(str::to_string),
            plural.to_string(),
            name.to_string(),
        )
    }

    fn bump(&mut self, obj: &mut Value) {
        self.next_rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.next_rv.to_string());
    }

    /// Stores an object as the API server would after a create (or a replace, when it exists), and tells
    /// the watches.
    pub fn insert(&mut self, key: Key, mut obj: Value) {
        self.bump(&mut obj);
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{}", self.next_rv));
        }
        if obj["metadata"]["generation"].is_null() {
            obj["metadata"]["generation"] = json!(1);
        }
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.notify(&key, kind, &obj);
        self.objects.insert(key, obj);
    }

    /// Deletes an object as the API server would, and tells the watches.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let obj = self.objects.remove(key)?;
        self.notify(key, "DELETED", &obj);
        Some(obj)
    }

    /// Stores a changed object (bumping its resourceVersion) and tells the watches.
    fn modified(&mut self, key: Key, mut obj: Value) {
        self.bump(&mut obj);
        self.notify(&key, "MODIFIED", &obj);
        self.objects.insert(key, obj);
    }

    fn notify(&mut self, key: &Key, kind: &str, obj: &Value) {
        self.watches.retain(|w| !w.tx.is_closed());
        for w in &self.watches {
            let wanted = w.prefix == key.0
                && w.plural == key.2
                && (w.namespace.is_none() || w.namespace == key.1)
                && labels_match(obj, &w.labels)
                && fields_match(obj, &w.fields);
            if wanted {
                let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap();
                line.push(b'\n');
                let _ = w.tx.send(Bytes::from(line));
            }
        }
    }

    /// Number of open watches on `plural` (tests wait for controllers to be watching).
    pub fn watching(&self, plural: &str) -> usize {
        self.watches
            .iter()
            .filter(|w| w.plural == plural && !w.tx.is_closed())
            .count()
    }

    pub fn get(&self, prefix: &str, ns: Option<&str>, plural: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Self::key(prefix, ns, plural, name))
    }

    pub fn get_mut(
        &mut self,
        prefix: &str,
        ns: Option<&str>,
        plural: &str,
        name: &str,
    ) -> Option<&mut Value> {
        self.objects.get_mut(&Self::key(prefix, ns, plural, name))
    }

    pub fn names(&self, plural: &str) -> Vec<String> {
        self.objects
            .keys()
            .filter(|k| k.2 == plural)
            .map(|k| k.3.clone())
            .collect()
    }

    pub fn handle(
        &mut self,
        method: &Method,
        uri: &http::Uri,
        content_type: &str,
        body: &[u8],
    ) -> Response<MockBody> {
        if uri.path() == "/version" {
            return self.version(method);
        }
        let p = parse(uri);
        let dry_run = p.query.contains_key("dryRun");
        let watch = p.query.get("watch").map(String::as_str) == Some("true");
        let verb = match (method.as_str(), p.name.is_some()) {
            ("GET", false) if watch => "WATCH",
            ("GET", true) => "GET",
            ("GET", false) => "LIST",
            ("PATCH", _) if content_type.starts_with("application/apply-patch") => "APPLY",
            ("PATCH", _) if content_type.starts_with("application/merge-patch") => "MERGE",
            ("PATCH", _) if content_type.starts_with("application/json-patch") => "JSONPATCH",
            ("POST", _) if dry_run => "DRYRUN",
            ("POST", _) => "CREATE",
            ("PUT", _) => "REPLACE",
            ("DELETE", _) => "DELETE",
            (m, _) => panic!("unexpected request {m} {uri}"),
        };
        let mut name = p.name.clone();
        let body_json: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).unwrap()
        };
        if verb == "CREATE" || verb == "DRYRUN" {
            name = body_json
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        self.calls.push(Call {
            verb: verb.to_string(),
            plural: p.plural.clone(),
            namespace: p.namespace.clone(),
            name: name.clone(),
            subresource: p.subresource.clone(),
        });
        if let Some(f) = self
            .failures
            .iter_mut()
            .find(|f| f.verb == verb && f.plural == p.plural && f.times > 0)
        {
            f.times -= 1;
            return status(
                f.code,
                "InternalError",
                &format!("scripted failure of {verb} {}", p.plural),
            );
        }
        if p.plural == "events" {
            self.events.push(body_json.clone());
            return ok(&body_json);
        }
        let key = |n: &str| Self::key(&p.prefix, p.namespace.as_deref(), &p.plural, n);
        match verb {
            "WATCH" => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
                self.watches.push(Watch {
                    prefix: p.prefix.clone(),
                    namespace: p.namespace.clone(),
                    plural: p.plural.clone(),
                    labels: p.query.get("labelSelector").cloned().unwrap_or_default(),
                    fields: p.query.get("fieldSelector").cloned().unwrap_or_default(),
                    tx,
                });
                let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
                    .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(StreamBody::new(events).boxed_unsync())
                    .unwrap()
            }
            "GET" => match self.objects.get(&key(name.as_deref().unwrap())) {
                Some(o) => ok(o),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} \"{}\" not found", p.plural, name.unwrap()),
                ),
            },
            "LIST" => {
                let selector = p.query.get("labelSelector").cloned().unwrap_or_default();
                let fields = p.query.get("fieldSelector").cloned().unwrap_or_default();
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(k, _)| {
                        k.0 == p.prefix
                            && k.2 == p.plural
                            && (p.namespace.is_none() || k.1 == p.namespace)
                    })
                    .filter(|(_, o)| labels_match(o, &selector) && fields_match(o, &fields))
                    .map(|(_, o)| o.clone())
                    .collect();
                ok(
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            "APPLY" => {
                let n = name.unwrap();
                let manager = p.query.get("fieldManager").map(String::as_str);
                assert!(
                    manager == Some("halyard-operator")
                        || manager.is_some_and(|m| self.other_field_managers.contains(&m)),
                    "field manager of {uri}"
                );
                assert_eq!(
                    p.query.get("force").map(String::as_str),
                    Some("true"),
                    "{uri}"
                );
                assert_eq!(
                    body_json.pointer("/metadata/name").and_then(Value::as_str),
                    Some(n.as_str()),
                    "body names the object of {uri}"
                );
                let k = key(&n);
                let existing = self.objects.get(&k).cloned();
                let mut merged = existing.clone().unwrap_or_else(|| json!({}));
                merge(&mut merged, &body_json);
                if p.plural == "customresourcedefinitions" && self.establish_crds {
                    merged["status"] =
                        json!({"conditions": [{"type": "Established", "status": "True"}]});
                }
                match existing {
                    Some(e) if e == merged => {}
                    Some(_) => {
                        if merged["spec"] != self.objects[&k]["spec"] {
                            let g = merged["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                            merged["metadata"]["generation"] = json!(g);
                        }
                        self.modified(k.clone(), merged);
                    }
                    None => self.insert(k.clone(), merged),
                }
                ok(&self.objects[&k])
            }
            "MERGE" | "JSONPATCH" => {
                let k = key(name.as_deref().unwrap());
                let Some(mut obj) = self.objects.get(&k).cloned() else {
                    return status(404, "NotFound", "not found");
                };
                if verb == "MERGE" {
                    merge(&mut obj, &body_json);
                } else {
                    let patch: json_patch::Patch = serde_json::from_value(body_json).unwrap();
                    // As the API server's JSON patch does, a missing field tests equal to null.
                    if obj["metadata"].get("finalizers").is_none() {
                        obj["metadata"]["finalizers"] = Value::Null;
                    }
                    if let Err(e) = json_patch::patch(&mut obj, &patch) {
                        return status(422, "Invalid", &format!("json patch: {e}"));
                    }
                    if obj["metadata"]["finalizers"].is_null() {
                        obj["metadata"]
                            .as_object_mut()
                            .unwrap()
                            .remove("finalizers");
                    }
                }
                if obj != self.objects[&k] {
                    let finalized = self.honor_finalizers
                        && !obj["metadata"]["deletionTimestamp"].is_null()
                        && obj["metadata"]["finalizers"]
                            .as_array()
                            .is_none_or(|f| f.is_empty());
                    if finalized {
                        self.remove(&k);
                        return ok(&obj);
                    }
                    self.modified(k.clone(), obj);
                }
                ok(&self.objects[&k])
            }
            "DRYRUN" => {
                let reject = body_json
                    .pointer("/metadata/annotations/internal.istio.io~1webhook-always-reject")
                    .is_some();
                if reject && self.validation_denies {
                    return status(
                        400,
                        "BadRequest",
                        "admission webhook \"validation.istio.io\" denied the request: configuration is invalid: webhook always reject",
                    );
                }
                ok(&body_json)
            }
            "CREATE" => {
                let k = key(name.as_deref().unwrap());
                if self.objects.contains_key(&k) {
                    return status(409, "AlreadyExists", "already exists");
                }
                self.insert(k.clone(), body_json);
                ok(&self.objects[&k])
            }
            "REPLACE" => {
                let k = key(name.as_deref().unwrap());
                let Some(cur) = self.objects.get(&k) else {
                    return status(404, "NotFound", "not found");
                };
                if body_json.pointer("/metadata/resourceVersion")
                    != cur.pointer("/metadata/resourceVersion")
                {
                    return status(409, "Conflict", "the object has been modified");
                }
                self.modified(k.clone(), body_json);
                ok(&self.objects[&k])
            }
            "DELETE" => {
                let k = key(name.as_deref().unwrap());
                let pending = self.honor_finalizers
                    && self.objects.get(&k).is_some_and(|o| {
                        o["metadata"]["finalizers"]
                            .as_array()
                            .is_some_and(|f| !f.is_empty())
                    });
                if pending {
                    let mut obj = self.objects[&k].clone();
                    if obj["metadata"]["deletionTimestamp"].is_null() {
                        obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                        self.modified(k.clone(), obj);
                    }
                    return ok(&self.objects[&k]);
                }
                match self.remove(&k) {
                    Some(o) => ok(&o),
                    None => status(404, "NotFound", "not found"),
                }
            }
            _ => unreachable!(),
        }
    }

    fn version(&mut self, method: &Method) -> Response<MockBody> {
        assert_eq!(method, Method::GET, "/version");
        self.calls.push(Call {
            verb: "GET".to_string(),
            plural: "version".to_string(),
            namespace: None,
            name: Some("version".to_string()),
            subresource: None,
        });
        if let Some(f) = self
            .failures
            .iter_mut()
            .find(|f| f.verb == "GET" && f.plural == "version" && f.times > 0)
        {
            f.times -= 1;
            return status(f.code, "InternalError", "scripted failure of GET /version");
        }
        let git = self
            .kubernetes_version
            .clone()
            .unwrap_or_else(|| DEFAULT_KUBERNETES_VERSION.to_string());
        let minor = git.split('.').nth(1).unwrap_or("0").to_string();
        ok(&json!({
            "major": "1", "minor": minor, "gitVersion": git, "gitCommit": "", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
        }))
    }

    /// Calls of one verb, as `plural ns/name` strings.
    pub fn calls_of(&self, verb: &str) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| c.verb == verb)
            .map(|c| {
                c.to_string()
                    .split_once(' ')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap()
            })
            .collect()
    }
}

/// A kube Client whose requests are served by `state`.
pub fn client(state: Arc<Mutex<State>>) -> kube::Client {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<MockBody>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let ct = parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let resp = state
                .lock()
                .unwrap()
                .handle(&parts.method, &parts.uri, &ct, &bytes);
            send.send_response(resp);
        }
    });
    kube::Client::new(svc, "default")
}
