//! The admission server: sidecar injection and Istio config validation.
