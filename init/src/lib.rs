//! The init container: iptables capture rules for a pod network namespace, compatible with
//! `istio-iptables` (same flags, chain names and rules).
//!
//! Pure parts: [`config`] (flags → [`Config`]), [`render`] ([`Config`] → [`RuleSet`]), [`rules`] (the model
//! and its `iptables-restore` form), [`state`] (reading `iptables-save` output, planning replacement and
//! cleanup) and [`backend`]'s choice. I/O parts: [`host`] (facts about the namespace) and [`apply`].

pub mod apply;
pub mod backend;
pub mod config;
pub mod error;
pub mod exec;
pub mod host;
pub mod render;
pub mod rules;
pub mod state;

pub use config::{Config, Flags, HostFacts};
pub use error::InitError;
pub use rules::{Family, RuleSet};
