//! Multi-document YAML to JSON values, with 0-based document indexes and 1-based line/column on errors.

use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::error::Error;

/// One non-empty document of a YAML stream.
#[derive(Clone, Debug, PartialEq)]
pub struct YamlDocument {
    /// Position in the stream, counting empty documents too, so it matches what a reader counts.
    pub index: usize,
    /// 1-based line where the document starts, if known.
    pub line: usize,
    pub value: Value,
}

/// Splits `text` into its documents and converts each into JSON. Empty documents (`---` alone, comments
/// only) are skipped but still counted. Integer and boolean mapping keys become strings, as Kubernetes
/// reads them (`portLevelMtls: {8080: ...}`); merge keys (`<<`) are applied.
pub fn split_documents(text: &str) -> Result<Vec<YamlDocument>, Error> {
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut value = serde_yaml::Value::deserialize(de).map_err(|e| yaml_error(index, &e))?;
        value.apply_merge().map_err(|e| yaml_error(index, &e))?;
        if value.is_null() {
            continue;
        }
        let line = document_start_line(text, index);
        let value = to_json(value, index, &mut String::new())?;
        out.push(YamlDocument { index, line, value });
    }
    Ok(out)
}

fn yaml_error(document: usize, e: &serde_yaml::Error) -> Error {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    Error::Yaml {
        document,
        line,
        column,
        message: e.to_string(),
    }
}

/// Line (1-based) on which document `index` starts: after the `---` that opens it.
fn document_start_line(text: &str, index: usize) -> usize {
    let mut starts = vec![1];
    let mut content_seen = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            if content_seen || starts.len() > 1 || starts[0] != 1 {
                starts.push(n + 2);
            } else {
                // A leading `---` opens document 0 rather than separating two documents.
                starts[0] = n + 2;
            }
            content_seen = false;
        } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            content_seen = true;
        }
    }
    starts.get(index).copied().unwrap_or(0)
}

fn to_json(v: serde_yaml::Value, document: usize, path: &mut String) -> Result<Value, Error> {
    Ok(match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => number(&n).ok_or_else(|| Error::YamlToJson {
            document,
            path: path.clone(),
            message: format!("number {n} has no JSON form"),
        })?,
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(to_json(item, document, path)?);
                path.truncate(len);
            }
            Value::Array(out)
        }
        serde_yaml::Value::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    serde_yaml::Value::Null => "null".to_string(),
                    other => {
                        return Err(Error::YamlToJson {
                            document,
                            path: path.clone(),
                            message: format!("mapping key {other:?} is not a string"),
                        });
                    }
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                let value = to_json(v, document, path)?;
                path.truncate(len);
                out.insert(key, value);
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(t) => to_json(t.value, document, path)?,
    })
}

fn number(n: &serde_yaml::Number) -> Option<Value> {
    if let Some(i) = n.as_i64() {
        Some(Value::Number(i.into()))
    } else if let Some(u) = n.as_u64() {
        Some(Value::Number(u.into()))
    } else {
        n.as_f64().and_then(Number::from_f64).map(Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_counts_empty_documents() {
        let docs =
            split_documents("---\na: 1\n---\n# only a comment\n---\nb: {8080: x, true: y}\n")
                .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].index, 0);
        assert_eq!(docs[0].line, 2);
        assert_eq!(docs[1].index, 2);
        assert_eq!(docs[1].line, 6);
        assert_eq!(
            docs[1].value,
            serde_json::json!({"b": {"8080": "x", "true": "y"}})
        );
    }

    #[test]
    fn parse_error_has_line_and_column() {
        let err = split_documents("a: 1\n---\nb: [1, 2\nc: 3\n").unwrap_err();
        match err {
            Error::Yaml {
                document,
                line,
                column,
                ..
            } => {
                assert_eq!(document, 1);
                assert!(line >= 3, "line {line}");
                assert!(column >= 1);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn merge_keys_are_applied() {
        let docs = split_documents("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n").unwrap();
        assert_eq!(
            docs[0].value["derived"],
            serde_json::json!({"x": 1, "y": 2})
        );
    }
}
