//! One proxy's computed config, split per resource type as it goes on the wire and shared between every
//! proxy that computes to the same thing.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use halyard_config::ProxyResources;
use halyard_config::discovery::Resource;
use halyard_config::type_urls::PUSH_ORDER;

/// The resources of one type, sorted by name: a part shared by every proxy of the same scope (one copy per
/// push) plus a small per-proxy part, with a digest of their names and versions. Names never repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeOutput {
    shared: Arc<Vec<Resource>>,
    local: Vec<Resource>,
    digest: u64,
}

fn sorted(mut resources: Vec<Resource>) -> Vec<Resource> {
    resources.sort_by(|a, b| a.name.cmp(&b.name));
    resources.dedup_by(|a, b| a.name == b.name);
    resources
}

fn digest_of(resources: &[Resource]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for r in resources {
        (&r.name, &r.version).hash(&mut hasher);
    }
    hasher.finish()
}

impl TypeOutput {
    pub fn new(resources: Vec<Resource>) -> Self {
        TypeOutput::from_parts(Arc::new(sorted(resources)), Vec::new())
    }

    /// `shared` must be sorted by name (as [`SharedTypes`] keeps it); `local` names must not occur in it.
    pub fn from_parts(shared: Arc<Vec<Resource>>, local: Vec<Resource>) -> Self {
        let local = sorted(local);
        let mut hasher = DefaultHasher::new();
        (digest_of(&shared), digest_of(&local)).hash(&mut hasher);
        TypeOutput {
            shared,
            local,
            digest: hasher.finish(),
        }
    }

    /// What a delta client says it holds (`initial_resource_versions`): names and versions, no bodies.
    pub fn from_versions(versions: &BTreeMap<String, String>) -> Self {
        TypeOutput::new(
            versions
                .iter()
                .map(|(name, version)| Resource {
                    name: name.clone(),
                    version: version.clone(),
                    resource: None,
                    aliases: Vec::new(),
                })
                .collect(),
        )
    }

    /// Every resource, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        let mut a = self.shared.iter().peekable();
        let mut b = self.local.iter().peekable();
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if y.name < x.name => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        })
    }

    pub fn to_vec(&self) -> Vec<Resource> {
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
    pub fn filtered(&self, names: &[String]) -> TypeOutput {
        TypeOutput::new(
            self.iter()
                .filter(|r| names.contains(&r.name))
                .cloned()
                .collect(),
        )
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

    fn get(&self, name: &str) -> Option<&Resource> {
        [self.shared.as_slice(), self.local.as_slice()]
            .into_iter()
            .find_map(|part| {
                part.binary_search_by(|r| r.name.as_str().cmp(name))
                    .ok()
                    .map(|i| &part[i])
            })
    }
}

/// What changed between two sets of one type.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// Added or changed resources, in name order.
    pub upserted: Vec<Resource>,
    /// Names present before and gone now.
    pub removed: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

/// Merge walk over two name-sorted sets.
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
                out.removed.push(x.name.clone());
                a.next();
            }
            (Some(_), Some(y)) => {
                out.upserted.push((*y).clone());
                b.next();
            }
            (Some(x), None) => {
                out.removed.push(x.name.clone());
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

/// The wire form of one shared (per-scope) translation part, built once per push and scope.
#[derive(Debug)]
pub struct SharedTypes {
    pub resources: Arc<ProxyResources>,
    types: BTreeMap<&'static str, Arc<Vec<Resource>>>,
}

impl SharedTypes {
    pub fn new(resources: Arc<ProxyResources>) -> Self {
        let types = PUSH_ORDER
            .iter()
            .map(|t| {
                (
                    *t,
                    Arc::new(sorted(halyard_config::wire::split(&resources, t))),
                )
            })
            .collect();
        SharedTypes { resources, types }
    }
}

/// Everything one proxy is sent: its shared part (one copy per scope), its own small part, and the wire
/// form per type.
#[derive(Debug)]
pub struct ProxyOutput {
    shared: Arc<ProxyResources>,
    local: ProxyResources,
    types: BTreeMap<&'static str, Arc<TypeOutput>>,
}

impl ProxyOutput {
    /// A config with no shared part (tests, single proxies).
    pub fn new(resources: ProxyResources) -> Self {
        ProxyOutput::from_parts(
            &SharedTypes::new(Arc::new(resources)),
            ProxyResources::default(),
        )
    }

    pub fn from_parts(shared: &SharedTypes, local: ProxyResources) -> Self {
        let types = PUSH_ORDER
            .iter()
            .map(|t| {
                let part = shared.types.get(t).cloned().unwrap_or_default();
                let own = halyard_config::wire::split(&local, t);
                (*t, Arc::new(TypeOutput::from_parts(part, own)))
            })
            .collect();
        ProxyOutput {
            shared: shared.resources.clone(),
            local,
            types,
        }
    }

    /// The assembled config (for `/debug/config_dump`), built on demand.
    pub fn resources(&self) -> ProxyResources {
        halyard_config::translate::merge(&self.shared, &self.local)
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
    use super::*;

    fn r(name: &str, version: &str) -> Resource {
        Resource {
            name: name.into(),
            version: version.into(),
            resource: None,
            aliases: Vec::new(),
        }
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
        let upserted: Vec<_> = d.upserted.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(upserted, vec!["b", "c"]);
        assert_eq!(d.removed, vec!["a".to_string()]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn union_keeps_removed_resources_for_make_before_break() {
        let old = TypeOutput::new(vec![r("a", "1"), r("b", "1")]);
        let new = TypeOutput::new(vec![r("b", "2"), r("c", "1")]);
        let union = new.union_with_removed(&old);
        let names: Vec<_> = union
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(names, vec![("a", "1"), ("b", "2"), ("c", "1")]);
    }

    #[test]
    fn from_versions_matches_the_same_set() {
        let set = TypeOutput::new(vec![r("a", "1"), r("b", "2")]);
        let known = TypeOutput::from_versions(&BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]));
        assert!(diff(&known, &set).is_empty());
        assert_eq!(set.filtered(&["b".to_string()]).len(), 1);
    }

    #[test]
    fn two_parts_iterate_in_name_order_and_diff_like_one() {
        let shared = Arc::new(vec![r("a", "1"), r("c", "1")]);
        let split = TypeOutput::from_parts(shared, vec![r("d", "1"), r("b", "1")]);
        let names: Vec<_> = split.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c", "d"]);
        let whole = TypeOutput::new(vec![r("a", "1"), r("b", "2"), r("c", "1"), r("d", "1")]);
        let d = diff(&split, &whole);
        assert_eq!(d.upserted.len(), 1);
        assert_eq!(d.upserted[0].name, "b");
        assert!(d.removed.is_empty());
        assert_eq!(split.get("d").map(|r| r.version.as_str()), Some("1"));
    }
}
