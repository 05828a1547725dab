//! One module per `halyard` subcommand.
pub mod version;
