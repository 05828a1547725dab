//! Reading and writing `ProxyResources` as YAML or JSON (the proxy's static-mode config file,
//! `/config_dump`, `halyard proxy-config -o json|yaml`).
//!
//! YAML goes through the JSON data model so both formats have the same shape: oneofs are maps
//! keyed by the variant (`handler: {http: {...}}`), not YAML tags.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ProxyResources;

/// A config file that could not be read; the text names the field path and the problem.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{origin}: not valid YAML: {source}")]
    Yaml {
        origin: String,
        source: serde_yaml::Error,
    },
    #[error("{origin}: not valid JSON: {source}")]
    Json {
        origin: String,
        source: serde_json::Error,
    },
    #[error("{origin}: at `{path}`: {message}")]
    Field {
        origin: String,
        path: String,
        message: String,
    },
}

/// Parses YAML (or JSON, which is YAML) into any resource message. `origin` names the input in
/// errors (a file path, `stdin`).
pub fn from_yaml<T: DeserializeOwned>(origin: &str, text: &str) -> Result<T, FormatError> {
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|source| FormatError::Yaml {
            origin: origin.to_string(),
            source,
        })?;
    from_value(origin, value)
}

/// Parses JSON into any resource message.
pub fn from_json<T: DeserializeOwned>(origin: &str, text: &str) -> Result<T, FormatError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|source| FormatError::Json {
            origin: origin.to_string(),
            source,
        })?;
    from_value(origin, value)
}

fn from_value<T: DeserializeOwned>(
    origin: &str,
    value: serde_json::Value,
) -> Result<T, FormatError> {
    serde_path_to_error::deserialize(value).map_err(|e| FormatError::Field {
        origin: origin.to_string(),
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

/// Pretty JSON.
pub fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these messages cannot fail: every map key is a string and no custom
    // serializer returns an error.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// YAML with the same shape as the JSON form.
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| serde_yaml::to_string(&v).ok())
        .unwrap_or_default()
}

/// Reads a static-mode proxy config file's contents (YAML or JSON).
pub fn parse_proxy_resources(origin: &str, text: &str) -> Result<ProxyResources, FormatError> {
    from_yaml(origin, text)
}
