//! One immutable version of the mesh as a registry saw it, indexed for the translator.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use halyard_config::ProxyResources;
use halyard_config::discovery::Node;
use halyard_config::mesh::{MeshInput, MeshModel};
use halyard_config::translate::{Translator, scope_key};
use serde_json::{Value, json};

use super::{ConfigObject, MeshObjects, Rejected};

/// What every push is computed from. Built once per registry change, shared by every stream.
pub struct MeshSnapshot {
    /// Increases by one per change of the registry's content.
    pub version: u64,
    /// `local:<dir>` or `kubernetes`.
    pub source: String,
    /// The admitted Istio objects as they came (for `/debug/configz`).
    pub configs: Vec<ConfigObject>,
    /// Objects skipped by validation or parsing.
    pub rejected: Vec<Rejected>,
    input: MeshInput,
    /// The indexed model with its cache of shared (per-scope) translation parts.
    translator: Translator,
}

impl std::fmt::Debug for MeshSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshSnapshot")
            .field("version", &self.version)
            .field("source", &self.source)
            .field("configs", &self.configs.len())
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl MeshSnapshot {
    /// Parses the admitted Istio objects into typed ones (an object that fails to parse is rejected, not
    /// pushed) and indexes everything for translation.
    pub fn build(
        version: u64,
        source: String,
        objects: MeshObjects,
        mut rejected: Vec<Rejected>,
    ) -> Self {
        let mut configs = Vec::with_capacity(objects.configs.len());
        let mut istio = Vec::with_capacity(objects.configs.len());
        for config in objects.configs {
            match halyard_crds::object::parse_object(&config.object) {
                Ok(parsed) => {
                    istio.push(parsed.object);
                    configs.push(config);
                }
                Err(err) => rejected.push(Rejected {
                    origin: source.clone(),
                    kind: config.kind,
                    namespace: config.namespace,
                    name: config.name,
                    reason: err.to_string(),
                }),
            }
        }
        let input = MeshInput {
            mesh: objects.mesh,
            istio,
            services: objects.services,
            endpoint_slices: objects.endpoint_slices,
            pods: objects.pods,
            namespaces: objects.namespaces,
        };
        let translator = Translator::new(MeshModel::build(&input));
        MeshSnapshot {
            version,
            source,
            configs,
            rejected,
            input,
            translator,
        }
    }

    pub fn input(&self) -> &MeshInput {
        &self.input
    }

    /// One proxy's config as (scope hash, shared part, own part). Proxies with the same scope share the
    /// first two; the shared part comes from the translator's per-scope cache.
    pub fn parts(&self, node: &Node) -> Result<(u64, Arc<ProxyResources>, ProxyResources), String> {
        let (shared, local) = self.translator.parts(node).map_err(|e| e.to_string())?;
        let mut h = DefaultHasher::new();
        scope_key(self.translator.model(), node).hash(&mut h);
        Ok((h.finish(), shared, local))
    }

    /// One proxy's whole config.
    pub fn generate(&self, node: &Node) -> Result<ProxyResources, String> {
        self.translator.translate(node).map_err(|e| e.to_string())
    }

    /// `/debug/configz`: the Istio objects in force, those skipped, and what the translator ignored.
    pub fn configz(&self) -> Value {
        json!({
            "version": self.version,
            "source": self.source,
            "configs": self.configs.iter().map(|c| &c.object).collect::<Vec<_>>(),
            "rejected": self.rejected,
            "warnings": self.translator.model().warnings().iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    /// `/debug/registryz`: the services and workloads the registry knows.
    pub fn registryz(&self) -> Value {
        json!({
            "version": self.version,
            "source": self.source,
            "services": self.input.services,
            "endpointSlices": self.input.endpoint_slices,
            "pods": self.input.pods.iter().map(|p| json!({
                "namespace": p.metadata.namespace,
                "name": p.metadata.name,
                "labels": p.metadata.labels,
                "podIPs": p.status.as_ref().and_then(|s| s.pod_ips.clone()),
            })).collect::<Vec<_>>(),
            "namespaces": self.input.namespaces.iter().filter_map(|n| n.metadata.name.clone()).collect::<Vec<_>>(),
        })
    }
}
