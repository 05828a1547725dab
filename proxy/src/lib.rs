//! The data plane: sidecar and gateway proxy.

pub mod xds;
