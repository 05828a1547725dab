//! `security.istio.io`: PeerAuthentication, AuthorizationPolicy and RequestAuthentication.
//! Served as v1 and v1beta1 (one schema; storage v1).

mod authorization_policy;
mod peer_authentication;
mod request_authentication;

pub use authorization_policy::*;
pub use peer_authentication::*;
pub use request_authentication::*;

/// The API group of these kinds.
pub const GROUP: &str = "security.istio.io";
/// Served versions, storage version first.
pub const VERSIONS: &[&str] = &["v1", "v1beta1"];
