//! One module per `halyard` subcommand.
pub mod demo;
pub mod proxy_config;
pub mod version;
