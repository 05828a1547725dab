//! One proxy's computed config, per resource type, in the form it goes on the wire: every resource is
//! encoded once (as a `resources` entry of a response) and the bytes are shared by every proxy and every
//! response that carries it. A scope's shared resources are one contiguous buffer, so a state-of-the-world
//! response to 1,000 proxies of the same scope references one copy instead of making 1,000.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use halyard_config::discovery::Resource;
use halyard_config::type_urls::PUSH_ORDER;
use halyard_config::{ProxyResources, WireError};
use prost::Message;

/// Field number of `resources` in both `DiscoveryResponse` and `DeltaDiscoveryResponse`.
pub(crate) const RESOURCES_FIELD: u32 = 2;

/// One named, versioned resource, already encoded as a `resources` entry (field 2, length-delimited
/// `Resource`) that can be copied into any response as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireResource {
    pub name: Arc<str>,
    /// Content hash of the encoded payload (`wire::content_version`).
    pub version: Arc<str>,
    entry: Bytes,
}

impl WireResource {
    /// Encodes `resource` on its own (per-proxy resources and tests).
    pub fn encode(resource: &Resource) -> Self {
        let mut buf = BytesMut::new();
        prost::encoding::message::encode(RESOURCES_FIELD, resource, &mut buf);
        WireResource {
            name: resource.name.as_str().into(),
            version: resource.version.as_str().into(),
            entry: buf.freeze(),
        }
    }

    /// A name and version without a payload: what a delta client says it holds.
    pub fn known(name: &str, version: &str) -> Self {
        WireResource {
            name: name.into(),
            version: version.into(),
            entry: Bytes::new(),
        }
    }

    /// The encoded `resources` entry (empty for [`WireResource::known`]).
    pub fn entry(&self) -> &Bytes {
        &self.entry
    }

    /// The resource back from its entry (for `/debug/config_dump`).
    pub fn decode(&self) -> Result<Resource, prost::DecodeError> {
        let mut buf = &self.entry[..];
        prost::encoding::decode_key(&mut buf)?;
        Resource::decode_length_delimited(buf)
    }
}

/// Resources of one type sorted by name, with distinct names. When built by [`ResourceSet::encode`] their
/// entries are consecutive slices of one buffer, which a response can send as a single chunk.
#[derive(Debug, Default, PartialEq)]
pub struct ResourceSet {
    items: Vec<WireResource>,
    /// All entries back to back, in name order; `None` when the items come from different buffers.
    blob: Option<Bytes>,
    /// Hash of the names and versions, computed once (a scope's set is shared by every proxy of a push).
    digest: u64,
}

impl ResourceSet {
    /// Encodes `resources` into one buffer (the first of equal names is kept).
    pub fn encode(mut resources: Vec<Resource>) -> Self {
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        resources.dedup_by(|a, b| a.name == b.name);
        let mut buf = BytesMut::with_capacity(
            resources
                .iter()
                .map(|r| {
                    let len = r.encoded_len();
                    prost::encoding::key_len(RESOURCES_FIELD)
                        + prost::encoding::encoded_len_varint(len as u64)
                        + len
                })
                .sum(),
        );
        let mut bounds = Vec::with_capacity(resources.len());
        for r in &resources {
            let start = buf.len();
            prost::encoding::message::encode(RESOURCES_FIELD, r, &mut buf);
            bounds.push((start, buf.len()));
        }
        let blob = buf.freeze();
        let items = resources
            .iter()
            .zip(bounds)
            .map(|(r, (start, end))| WireResource {
                name: r.name.as_str().into(),
                version: r.version.as_str().into(),
                entry: blob.slice(start..end),
            })
            .collect();
        ResourceSet::with_digest(items, Some(blob))
    }

    fn with_digest(items: Vec<WireResource>, blob: Option<Bytes>) -> Self {
        let mut hasher = DefaultHasher::new();
        for r in &items {
            (&*r.name, &*r.version).hash(&mut hasher);
        }
        ResourceSet {
            digest: hasher.finish(),
            items,
            blob,
        }
    }

    /// A set of already encoded resources (the first of equal names is kept).
    pub fn from_wire(mut items: Vec<WireResource>) -> Self {
        items.sort_by(|a, b| a.name.cmp(&b.name));
        items.dedup_by(|a, b| a.name == b.name);
        ResourceSet::with_digest(items, None)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn get(&self, name: &str) -> Option<&WireResource> {
        self.items
            .binary_search_by(|r| (*r.name).cmp(name))
            .ok()
            .map(|i| &self.items[i])
    }

    /// The entries as few chunks as possible: the one buffer, or each entry.
    fn chunks(&self, out: &mut Vec<Bytes>) {
        match &self.blob {
            Some(blob) if !blob.is_empty() => out.push(blob.clone()),
            Some(_) => {}
            None => out.extend(self.items.iter().map(|r| r.entry.clone())),
        }
    }
}

/// The resources of one type: a part shared by every proxy of the same scope (one copy per push) plus a
/// small per-proxy part, with a digest of their names and versions. Names never repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeOutput {
    shared: Arc<ResourceSet>,
    local: Arc<ResourceSet>,
    digest: u64,
}

impl TypeOutput {
    pub fn new(resources: Vec<WireResource>) -> Self {
        TypeOutput::from_parts(
            Arc::new(ResourceSet::default()),
            ResourceSet::from_wire(resources),
        )
    }

    /// `local` names must not occur in `shared`.
    pub fn from_parts(shared: Arc<ResourceSet>, local: ResourceSet) -> Self {
        let mut hasher = DefaultHasher::new();
        (shared.digest, local.digest).hash(&mut hasher);
        TypeOutput {
            shared,
            local: Arc::new(local),
            digest: hasher.finish(),
        }
    }

    /// What a delta client says it holds (`initial_resource_versions`): names and versions, no bodies.
    pub fn from_versions(versions: &BTreeMap<String, String>) -> Self {
        TypeOutput::new(
            versions
                .iter()
                .map(|(name, version)| WireResource::known(name, version))
                .collect(),
        )
    }

    /// Every resource, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &WireResource> {
        let mut a = self.shared.items.iter().peekable();
        let mut b = self.local.items.iter().peekable();
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if y.name < x.name => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        })
    }

    pub fn to_vec(&self) -> Vec<WireResource> {
        self.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.shared.len() + self.local.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `version_info` of a state-of-the-world response carrying exactly this set.
    pub fn version(&self) -> String {
        format!("{:016x}", self.digest)
    }

    pub fn same_as(&self, other: &TypeOutput) -> bool {
        self.digest == other.digest && self.len() == other.len()
    }

    /// Only the named resources (a non-wildcard subscription).
    pub fn filtered(&self, mut keep: impl FnMut(&str) -> bool) -> TypeOutput {
        TypeOutput::new(self.iter().filter(|r| keep(&r.name)).cloned().collect())
    }

    /// This set without the named resources (a delta client dropped them).
    pub fn without(&self, names: &[String]) -> TypeOutput {
        self.filtered(|n| !names.iter().any(|x| x == n))
    }

    /// This set plus the resources of `old` that this set no longer has (make-before-break).
    pub fn union_with_removed(&self, old: &TypeOutput) -> TypeOutput {
        let mut all = self.to_vec();
        all.extend(
            diff(old, self)
                .removed
                .into_iter()
                .filter_map(|name| old.get(&name).cloned()),
        );
        TypeOutput::new(all)
    }

    pub fn get(&self, name: &str) -> Option<&WireResource> {
        self.shared.get(name).or_else(|| self.local.get(name))
    }

    /// The encoded entries of every resource, as few chunks as possible (order is free: proxies key
    /// resources by name).
    pub fn chunks(&self) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(2);
        self.shared.chunks(&mut out);
        self.local.chunks(&mut out);
        out
    }
}

/// What changed between two sets of one type.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// Added or changed resources, in name order.
    pub upserted: Vec<WireResource>,
    /// Names present before and gone now.
    pub removed: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

/// Merge walk over two name-sorted sets; a resource counts as changed when its content version differs.
pub fn diff(old: &TypeOutput, new: &TypeOutput) -> Diff {
    let mut out = Diff::default();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.name == y.name => {
                if x.version != y.version {
                    out.upserted.push((*y).clone());
                }
                a.next();
                b.next();
            }
            (Some(x), Some(y)) if x.name < y.name => {
                out.removed.push(x.name.to_string());
                a.next();
            }
            (Some(_), Some(y)) => {
                out.upserted.push((*y).clone());
                b.next();
            }
            (Some(x), None) => {
                out.removed.push(x.name.to_string());
                a.next();
            }
            (None, Some(y)) => {
                out.upserted.push((*y).clone());
                b.next();
            }
            (None, None) => break,
        }
    }
    out
}

/// The wire form of one shared (per-scope) translation part, encoded once per push and scope.
#[derive(Debug)]
pub struct SharedTypes {
    types: BTreeMap<&'static str, Arc<ResourceSet>>,
}

impl SharedTypes {
    pub fn new(resources: &ProxyResources) -> Self {
        let types = PUSH_ORDER
            .iter()
            .map(|t| {
                let set = ResourceSet::encode(halyard_config::wire::split(resources, t));
                (*t, Arc::new(set))
            })
            .collect();
        SharedTypes { types }
    }

    /// Bytes of encoded resources held (shared by every proxy of the scope).
    pub fn encoded_bytes(&self) -> usize {
        self.types
            .values()
            .filter_map(|s| s.blob.as_ref().map(Bytes::len))
            .sum()
    }
}

/// Everything one proxy is sent: per type, its scope's shared set (one copy per scope) and its own small
/// set. Only the encoded form is kept; `/debug/config_dump` decodes it on demand.
#[derive(Debug)]
pub struct ProxyOutput {
    types: BTreeMap<&'static str, Arc<TypeOutput>>,
}

impl ProxyOutput {
    /// A config with no shared part (tests, single proxies).
    pub fn new(resources: &ProxyResources) -> Self {
        ProxyOutput::from_parts(&SharedTypes::new(resources), &ProxyResources::default())
    }

    pub fn from_parts(shared: &SharedTypes, local: &ProxyResources) -> Self {
        let types = PUSH_ORDER
            .iter()
            .map(|t| {
                let part = shared.types.get(t).cloned().unwrap_or_default();
                let own = ResourceSet::encode(halyard_config::wire::split(local, t));
                (*t, Arc::new(TypeOutput::from_parts(part, own)))
            })
            .collect();
        ProxyOutput { types }
    }

    /// The assembled config (for `/debug/config_dump`), decoded from the wire form.
    pub fn resources(&self) -> Result<ProxyResources, WireError> {
        let mut sets: BTreeMap<String, BTreeMap<String, Resource>> = BTreeMap::new();
        for (type_url, set) in &self.types {
            let per_type = sets.entry(type_url.to_string()).or_default();
            for r in set.iter() {
                let resource = r.decode().map_err(|source| WireError::Decode {
                    type_url: type_url.to_string(),
                    name: r.name.to_string(),
                    source,
                })?;
                per_type.insert(resource.name.clone(), resource);
            }
        }
        let version = PUSH_ORDER
            .iter()
            .map(|t| self.of_type(t).version())
            .collect::<Vec<_>>()
            .join("/");
        halyard_config::wire::assemble(&sets, &version)
    }

    /// The resources of one type; an unknown type URL has none.
    pub fn of_type(&self, type_url: &str) -> Arc<TypeOutput> {
        self.types
            .get(type_url)
            .cloned()
            .unwrap_or_else(|| Arc::new(TypeOutput::new(Vec::new())))
    }
}

#[cfg(test)]
mod tests {
    use halyard_config::discovery::DiscoveryResponse;
    use halyard_config::resources::Cluster;
    use halyard_config::type_urls::CLUSTER;

    use super::*;

    fn r(name: &str, version: &str) -> WireResource {
        WireResource::known(name, version)
    }

    fn names(set: &TypeOutput) -> Vec<&str> {
        set.iter().map(|r| &*r.name).collect()
    }

    #[test]
    fn digest_ignores_order_and_tracks_versions() {
        let a = TypeOutput::new(vec![r("b", "1"), r("a", "1")]);
        let b = TypeOutput::new(vec![r("a", "1"), r("b", "1")]);
        let c = TypeOutput::new(vec![r("a", "1"), r("b", "2")]);
        assert!(a.same_as(&b));
        assert_eq!(a.version(), b.version());
        assert!(!a.same_as(&c));
    }

    #[test]
    fn diff_finds_upserts_and_removals() {
        let old = TypeOutput::new(vec![r("a", "1"), r("b", "1"), r("d", "1")]);
        let new = TypeOutput::new(vec![r("b", "2"), r("c", "1"), r("d", "1")]);
        let d = diff(&old, &new);
        let upserted: Vec<_> = d.upserted.iter().map(|r| &*r.name).collect();
        assert_eq!(upserted, vec!["b", "c"]);
        assert_eq!(d.removed, vec!["a".to_string()]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn union_keeps_removed_resources_for_make_before_break() {
        let old = TypeOutput::new(vec![r("a", "1"), r("b", "1")]);
        let new = TypeOutput::new(vec![r("b", "2"), r("c", "1")]);
        let union = new.union_with_removed(&old);
        let named: Vec<_> = union.iter().map(|r| (&*r.name, &*r.version)).collect();
        assert_eq!(named, vec![("a", "1"), ("b", "2"), ("c", "1")]);
    }

    #[test]
    fn from_versions_matches_the_same_set() {
        let set = TypeOutput::new(vec![r("a", "1"), r("b", "2")]);
        let known = TypeOutput::from_versions(&BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]));
        assert!(diff(&known, &set).is_empty());
        assert_eq!(set.filtered(|n| n == "b").len(), 1);
        assert_eq!(names(&set.without(&["a".to_string()])), vec!["b"]);
    }

    #[test]
    fn two_parts_iterate_in_name_order_and_diff_like_one() {
        let shared = Arc::new(ResourceSet::from_wire(vec![r("a", "1"), r("c", "1")]));
        let split = TypeOutput::from_parts(
            shared,
            ResourceSet::from_wire(vec![r("d", "1"), r("b", "1")]),
        );
        assert_eq!(names(&split), vec!["a", "b", "c", "d"]);
        let whole = TypeOutput::new(vec![r("a", "1"), r("b", "2"), r("c", "1"), r("d", "1")]);
        let d = diff(&split, &whole);
        assert_eq!(d.upserted.len(), 1);
        assert_eq!(&*d.upserted[0].name, "b");
        assert!(d.removed.is_empty());
        assert_eq!(split.get("d").map(|r| &*r.version), Some("1"));
    }

    fn clusters(names: &[&str]) -> ProxyResources {
        ProxyResources {
            clusters: names
                .iter()
                .map(|n| Cluster {
                    name: n.to_string(),
                    connect_timeout_ms: 1000,
                    ..Cluster::default()
                })
                .collect(),
            ..ProxyResources::default()
        }
    }

    #[test]
    fn a_scope_is_encoded_once_and_shared_by_reference() {
        let shared = SharedTypes::new(&clusters(&["b", "a", "c"]));
        let one = ProxyOutput::from_parts(&shared, &clusters(&["local"]));
        let two = ProxyOutput::from_parts(&shared, &clusters(&["other"]));
        let (c1, c2) = (one.of_type(CLUSTER).chunks(), two.of_type(CLUSTER).chunks());
        // the shared chunk is the same memory for both proxies; only the local chunk differs
        assert_eq!(c1.len(), 2);
        assert_eq!(c1[0].as_ptr(), c2[0].as_ptr());
        assert_ne!(c1[1], c2[1]);
        assert_eq!(shared.encoded_bytes(), c1[0].len());
        assert_eq!(names(&one.of_type(CLUSTER)), vec!["a", "b", "c", "local"]);
    }

    #[test]
    fn entries_decode_back_and_the_dump_reassembles_everything() {
        let shared = SharedTypes::new(&clusters(&["b", "a"]));
        let output = ProxyOutput::from_parts(&shared, &clusters(&["z"]));
        let set = output.of_type(CLUSTER);
        let a = set.get("a").unwrap().decode().unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(a.version, &*set.get("a").unwrap().version);
        let dumped = output.resources().unwrap();
        let got: Vec<_> = dumped.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(got, vec!["a", "b", "z"]);
        assert!(dumped.clusters.iter().all(|c| c.connect_timeout_ms == 1000));
    }

    #[test]
    fn a_chunked_set_is_a_valid_response_body() {
        let output =
            ProxyOutput::from_parts(&SharedTypes::new(&clusters(&["a", "b"])), &clusters(&["c"]));
        let mut body = Vec::new();
        for chunk in output.of_type(CLUSTER).chunks() {
            body.extend_from_slice(&chunk);
        }
        let decoded = DiscoveryResponse::decode(body.as_slice()).unwrap();
        let got: Vec<_> = decoded.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(got, vec!["a", "b", "c"]);
    }
}
