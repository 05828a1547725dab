//! Kubernetes API types for MeshInstall and the Istio kinds, their CRD generation, and the validator.

pub mod validation;
