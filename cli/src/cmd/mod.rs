//! One module per `halyard` subcommand.
pub mod demo;
pub mod version;
