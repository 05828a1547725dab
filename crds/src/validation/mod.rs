//! Istio config validation (Galley's rules) as pure functions over the typed objects.
