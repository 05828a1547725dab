//! The one error type of the library.

use std::path::PathBuf;

/// Everything that can go wrong while validating flags, reading state or applying rules.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A flag or environment variable holds a value we cannot use.
    #[error("invalid value {value:?} for {flag}: {reason}")]
    InvalidFlag {
        /// The flag as the user wrote it, e.g. `-x/--istio-service-exclude-cidr`.
        flag: &'static str,
        /// The offending value (one list item where the flag takes a list).
        value: String,
        /// Why it was refused.
        reason: String,
    },

    /// Two flags that cannot be combined.
    #[error("{first} and {second} cannot be used together: {reason}")]
    ConflictingFlags {
        first: &'static str,
        second: &'static str,
        reason: String,
    },

    /// A file we need (e.g. `/etc/resolv.conf`) could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A helper program could not be started at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A helper program ran and failed.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Command {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },

    /// No usable iptables binary set was found.
    #[error("no usable {family} iptables backend: {details}")]
    NoBackend {
        family: &'static str,
        details: String,
    },

    /// `iptables-restore` refused one of our rules; the rule is identified from the line number it reported.
    #[error(
        "{program} rejected line {line} ({table} table): `{rule}`: {stderr}; previous rules were left in place"
    )]
    RuleRejected {
        program: String,
        line: usize,
        table: String,
        rule: String,
        stderr: String,
    },

    /// `iptables-restore` failed without a line we could map to a rule.
    #[error("{program} failed: {stderr}; previous rules were left in place")]
    RestoreFailed { program: String, stderr: String },

    /// A failed apply could not be undone.
    #[error("{program} failed ({cause}) and restoring the previous rules also failed: {rollback}")]
    RollbackFailed {
        program: String,
        cause: String,
        rollback: String,
    },
}
