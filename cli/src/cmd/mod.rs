//! One module per `halyard` subcommand.
pub mod demo;
pub mod install;
pub mod kube_inject;
pub mod proxy_config;
pub mod proxy_status;
pub mod validate;
pub mod version;
