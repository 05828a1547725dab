//! One proxy's computed config, split per resource type as it goes on the wire and shared between every
//! proxy that computes to the same thing.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use halyard_config::ProxyResources;
use halyard_config::discovery::Resource;
use halyard_config::type_urls::PUSH_ORDER;

/// The resources of one type, sorted by name, with a digest of their names and versions.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeOutput {
    resources: Vec<Resource>,
    digest: u64,
}

impl TypeOutput {
    pub fn new(mut resources: Vec<Resource>) -> Self {
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        resources.dedup_by(|a, b| a.name == b.name);
        let mut hasher = DefaultHasher::new();
        for r in &resources {
            (&r.name, &r.version).hash(&mut hasher);
        }
        TypeOutput {
            digest: hasher.finish(),
            resources,
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

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The `version_info` of a state-of-the-world response carrying exactly this set.
    pub fn version(&self) -> String {
        format!("{:016x}", self.digest)
    }

    pub fn same_as(&self, other: &TypeOutput) -> bool {
        self.digest == other.digest && self.resources.len() == other.resources.len()
    }

    /// Only the named resources (a non-wildcard subscription).
    pub fn filtered(&self, names: &[String]) -> TypeOutput {
        TypeOutput::new(
            self.resources
                .iter()
                .filter(|r| names.contains(&r.name))
                .cloned()
                .collect(),
        )
    }

    /// This set plus the resources of `old` that this set no longer has (make-before-break).
    pub fn union_with_removed(&self, old: &TypeOutput) -> TypeOutput {
        let mut all = self.resources.clone();
        all.extend(
            diff(old, self)
                .removed
                .into_iter()
                .filter_map(|name| old.get(&name).cloned()),
        );
        TypeOutput::new(all)
    }

    fn get(&self, name: &str) -> Option<&Resource> {
        self.resources
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.resources[i])
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
    let (mut i, mut j) = (0, 0);
    let (a, b) = (&old.resources, &new.resources);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.name == y.name => {
                if x.version != y.version {
                    out.upserted.push(y.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.name < y.name => {
                out.removed.push(x.name.clone());
                i += 1;
            }
            (Some(_), Some(y)) => {
                out.upserted.push(y.clone());
                j += 1;
            }
            (Some(x), None) => {
                out.removed.push(x.name.clone());
                i += 1;
            }
            (None, Some(y)) => {
                out.upserted.push(y.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Everything one proxy is sent: the assembled config (for `/debug/config_dump`) and its wire form per type.
#[derive(Debug)]
pub struct ProxyOutput {
    pub resources: Arc<ProxyResources>,
    types: BTreeMap<&'static str, Arc<TypeOutput>>,
}

impl ProxyOutput {
    pub fn new(resources: ProxyResources) -> Self {
        let types = PUSH_ORDER
            .iter()
            .map(|t| {
                (
                    *t,
                    Arc::new(TypeOutput::new(halyard_config::wire::split(&resources, t))),
                )
            })
            .collect();
        ProxyOutput {
            resources: Arc::new(resources),
            types,
        }
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
            .resources()
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
        assert_eq!(set.filtered(&["b".to_string()]).resources().len(), 1);
    }
}
