//! The crate's error type for parsing objects, reading YAML and building CRDs.

/// What went wrong turning outside input into typed objects. Every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is not a JSON/YAML object.
    #[error("cannot decode configuration: expected an object, found {found}")]
    NotAnObject { found: &'static str },

    /// `apiVersion` or `kind` is missing or not a string.
    #[error("cannot decode configuration: missing or non-string field \"{field}\"")]
    MissingTypeField { field: &'static str },

    /// Neither an Istio kind nor MeshInstall.
    #[error("unrecognized type {kind}")]
    UnrecognizedType { api_version: String, kind: String },

    /// An Istio kind halyard deliberately does not implement (EnvoyFilter, WasmPlugin, ...).
    #[error("{kind} ({api_version}) is an Istio kind that halyard does not implement: {reason}")]
    NotImplemented {
        api_version: String,
        kind: String,
        reason: &'static str,
    },

    /// A known kind under an apiVersion Istio does not serve it at.
    #[error("unsupported apiVersion \"{api_version}\" for {kind} (served: {served})")]
    UnsupportedVersion {
        api_version: String,
        kind: String,
        served: String,
    },

    /// A field the kind does not have, with its path (Istio's wording).
    #[error("unknown field \"{field}\" on {kind} resource {resource} at {path}")]
    UnknownField {
        kind: String,
        resource: String,
        field: String,
        path: String,
    },

    /// A field of the wrong type or value (bad enum value, string instead of number, ...).
    #[error("error decoding configuration: {kind} {resource} at {path}: {message}")]
    Decode {
        kind: String,
        resource: String,
        path: String,
        message: String,
    },

    /// The YAML text does not parse; line and column are 1-based, the document index 0-based.
    #[error("YAML parse error in document {document} at line {line}, column {column}: {message}")]
    Yaml {
        document: usize,
        line: usize,
        column: usize,
        message: String,
    },

    /// YAML that has no JSON equivalent (a mapping key that is itself a mapping, ...).
    #[error("YAML document {document} at {path}: {message}")]
    YamlToJson {
        document: usize,
        path: String,
        message: String,
    },

    /// Serializing a typed object back to JSON failed.
    #[error("cannot encode {kind} {resource}: {message}")]
    Encode {
        kind: String,
        resource: String,
        message: String,
    },

    /// Building a CRD's schema failed.
    #[error("cannot build the CRD schema of {kind}: {message}")]
    Schema { kind: String, message: String },
}
