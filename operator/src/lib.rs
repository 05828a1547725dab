//! The control plane: MeshInstall controller, service registry, discovery server, certificate authority.

pub mod install;
