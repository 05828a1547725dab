//! A JSON value together with its field path, so every rule reports where it looked.
//!
//! The rules read the object's JSON form (Istio's field names) rather than the Rust structs: the path in each
//! error is then exactly what the user wrote, and a value of the wrong type is reported at its path instead of
//! stopping the whole object.

use serde_json::Value;

use super::report::Ctx;

#[derive(Debug, Clone)]
pub(crate) struct Node<'a> {
    pub(crate) v: &'a Value,
    pub(crate) path: String,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'a> Node<'a> {
    pub(crate) fn root(v: &'a Value, path: &str) -> Self {
        Node {
            v,
            path: path.to_string(),
        }
    }

    /// Path of a (possibly absent) field of this node.
    pub(crate) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The field, when present and not `null` (protobuf JSON treats `null` as unset).
    pub(crate) fn get(&self, key: &str) -> Option<Node<'a>> {
        match self.v.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(Node {
                v,
                path: self.at(key),
            }),
        }
    }

    /// The first present field of several spellings (protobuf JSON accepts both `camelCase` and `snake_case`).
    pub(crate) fn get_any(&self, keys: &[&str]) -> Option<Node<'a>> {
        keys.iter().find_map(|k| self.get(k))
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn as_str(&self, cx: &mut Ctx) -> Option<&'a str> {
        match self.v {
            Value::String(s) => Some(s.as_str()),
            _ => {
                cx.err(&self.path, "must be a string");
                None
            }
        }
    }

    pub(crate) fn as_i64(&self, cx: &mut Ctx) -> Option<i64> {
        match self.v.as_i64() {
            Some(n) => Some(n),
            None => match self.v.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(f as i64),
                _ => {
                    cx.err(&self.path, "must be an integer");
                    None
                }
            },
        }
    }

    pub(crate) fn as_f64(&self, cx: &mut Ctx) -> Option<f64> {
        match self.v.as_f64() {
            Some(f) => Some(f),
            None => {
                cx.err(&self.path, "must be a number");
                None
            }
        }
    }

    pub(crate) fn as_bool(&self, cx: &mut Ctx) -> Option<bool> {
        match self.v {
            Value::Bool(b) => Some(*b),
            _ => {
                cx.err(&self.path, "must be a boolean");
                None
            }
        }
    }

    pub(crate) fn is_object(&self, cx: &mut Ctx) -> bool {
        if self.v.is_object() {
            true
        } else {
            cx.err(&self.path, "must be an object");
            false
        }
    }

    pub(crate) fn str(&self, key: &str, cx: &mut Ctx) -> Option<&'a str> {
        self.get(key).and_then(|n| n.as_str(cx))
    }

    /// A string field, empty when absent (protobuf's default).
    pub(crate) fn str_or_empty(&self, key: &str, cx: &mut Ctx) -> &'a str {
        self.str(key, cx).unwrap_or("")
    }

    pub(crate) fn i64(&self, key: &str, cx: &mut Ctx) -> Option<i64> {
        self.get(key).and_then(|n| n.as_i64(cx))
    }

    pub(crate) fn f64(&self, key: &str, cx: &mut Ctx) -> Option<f64> {
        self.get(key).and_then(|n| n.as_f64(cx))
    }

    pub(crate) fn bool(&self, key: &str, cx: &mut Ctx) -> Option<bool> {
        self.get(key).and_then(|n| n.as_bool(cx))
    }

    /// An object-valued field; a non-object value is reported and treated as absent.
    pub(crate) fn obj(&self, key: &str, cx: &mut Ctx) -> Option<Node<'a>> {
        self.get(key).filter(|n| n.is_object(cx))
    }

    /// Items of a list field with paths `key[i]`; absent means empty.
    pub(crate) fn list(&self, key: &str, cx: &mut Ctx) -> Vec<Node<'a>> {
        match self.get(key) {
            None => Vec::new(),
            Some(n) => n.items(cx),
        }
    }

    /// Items of this list node.
    pub(crate) fn items(&self, cx: &mut Ctx) -> Vec<Node<'a>> {
        match self.v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Node {
                    v,
                    path: format!("{}[{i}]", self.path),
                })
                .collect(),
            _ => {
                cx.err(&self.path, "must be a list");
                Vec::new()
            }
        }
    }

    /// Whether a list field is present (even if empty): Istio distinguishes `from: []` from no `from`.
    pub(crate) fn list_present(&self, key: &str) -> bool {
        matches!(self.v.get(key), Some(Value::Array(_)))
    }

    /// String items of a list field; non-strings are reported.
    pub(crate) fn str_list(&self, key: &str, cx: &mut Ctx) -> Vec<(String, &'a str)> {
        self.list(key, cx)
            .into_iter()
            .filter_map(|n| n.as_str(cx).map(|s| (n.path.clone(), s)))
            .collect()
    }

    /// Entries of a map field with paths `key[k]` (Kubernetes' notation for map keys).
    pub(crate) fn map(&self, key: &str, cx: &mut Ctx) -> Vec<(&'a str, Node<'a>)> {
        match self.get(key) {
            None => Vec::new(),
            Some(n) => n.entries(cx),
        }
    }

    pub(crate) fn entries(&self, cx: &mut Ctx) -> Vec<(&'a str, Node<'a>)> {
        match self.v {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str(),
                        Node {
                            v,
                            path: format!("{}[{k}]", self.path),
                        },
                    )
                })
                .collect(),
            _ => {
                cx.err(&self.path, "must be an object");
                Vec::new()
            }
        }
    }

    /// A string-to-string map field (labels, header values); non-string values are reported.
    pub(crate) fn str_map(&self, key: &str, cx: &mut Ctx) -> Vec<(String, &'a str, &'a str)> {
        self.map(key, cx)
            .into_iter()
            .filter_map(|(k, n)| n.as_str(cx).map(|v| (n.path.clone(), k, v)))
            .collect()
    }

    /// Number of items of a list field or entries of a map field (0 when absent or of another type).
    pub(crate) fn len(&self, key: &str) -> usize {
        match self.v.get(key) {
            Some(Value::Array(a)) => a.len(),
            Some(Value::Object(m)) => m.len(),
            _ => 0,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_follow_fields_items_and_keys() {
        let v = json!({"spec": {"http": [{"route": [{}, {"weight": 5}]}], "labels": {"app.kubernetes.io/name": "x"}}});
        let mut cx = Ctx::default();
        let spec = Node::root(&v, "").get("spec").unwrap();
        let http = spec.list("http", &mut cx);
        let routes = http[0].list("route", &mut cx);
        assert_eq!(
            routes[1].get("weight").unwrap().path,
            "spec.http[0].route[1].weight"
        );
        let labels = spec.str_map("labels", &mut cx);
        assert_eq!(labels[0].0, "spec.labels[app.kubernetes.io/name]");
        assert!(!cx.has_errors());
    }

    #[test]
    fn wrong_types_are_reported_not_panicked() {
        let v = json!({"a": 1, "b": "x", "c": "y", "d": 1.5});
        let mut cx = Ctx::default();
        let n = Node::root(&v, "spec");
        assert_eq!(n.str("a", &mut cx), None);
        assert!(n.list("b", &mut cx).is_empty());
        assert!(n.map("c", &mut cx).is_empty());
        assert_eq!(n.i64("d", &mut cx), None);
        let r = cx.into_report();
        let paths: Vec<_> = r.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["spec.a", "spec.b", "spec.c", "spec.d"]);
    }

    #[test]
    fn null_is_absent() {
        let v = json!({"a": null});
        assert!(Node::root(&v, "").get("a").is_none());
    }
}
