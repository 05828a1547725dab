//! The crate's error type: every failure of the public API, each variant saying what and where.

pub use crate::names::NameError;
pub use crate::static_config::FormatError;
pub use crate::translate::TranslateError;
pub use crate::wire::WireError;

/// Any error of `halyard-config`; each module's functions return their own variant type, which
/// converts into this one with `?`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Translate(#[from] TranslateError),
}
