//! An RFC 6902 operation list written straight to JSON text.

use serde::Serialize;

use crate::error::Error;

pub(super) struct Ops {
    buf: Vec<u8>,
    count: usize,
}

impl Ops {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(8 * 1024);
        buf.push(b'[');
        Ops { buf, count: 0 }
    }

    fn op<T: Serialize + ?Sized>(
        &mut self,
        op: &str,
        path: &str,
        value: Option<&T>,
    ) -> Result<(), Error> {
        if self.count > 0 {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(b"{\"op\":\"");
        self.buf.extend_from_slice(op.as_bytes());
        self.buf.extend_from_slice(b"\",\"path\":");
        serde_json::to_writer(&mut self.buf, path).map_err(unserialisable)?;
        if let Some(v) = value {
            self.buf.extend_from_slice(b",\"value\":");
            serde_json::to_writer(&mut self.buf, v).map_err(unserialisable)?;
        }
        self.buf.push(b'}');
        self.count += 1;
        Ok(())
    }

    /// `add`: creates a member or replaces it; inserts into an array at an index, or appends at `-`.
    pub fn add<T: Serialize + ?Sized>(&mut self, path: &str, value: &T) -> Result<(), Error> {
        self.op("add", path, Some(value))
    }

    pub fn replace<T: Serialize + ?Sized>(&mut self, path: &str, value: &T) -> Result<(), Error> {
        self.op("replace", path, Some(value))
    }

    pub fn remove(&mut self, path: &str) -> Result<(), Error> {
        self.op::<()>("remove", path, None)
    }

    /// The JSON text and the number of operations.
    pub fn finish(mut self) -> (Vec<u8>, usize) {
        self.buf.push(b']');
        (self.buf, self.count)
    }
}

/// A JSON pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub(super) fn escape(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains(['~', '/']) {
        std::borrow::Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        std::borrow::Cow::Borrowed(token)
    }
}

fn unserialisable(e: serde_json::Error) -> Error {
    Error::NotInjectable {
        what: "pod".into(),
        why: format!("the patch cannot be serialised: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_valid_patch() {
        let mut ops = Ops::new();
        ops.add("/a~1b", &serde_json::json!({"x": 1})).unwrap();
        ops.remove("/c/0").unwrap();
        ops.replace("/d", "v\"").unwrap();
        let (text, n) = ops.finish();
        assert_eq!(n, 3);
        let patch: json_patch::Patch = serde_json::from_slice(&text).unwrap();
        let mut doc = serde_json::json!({"c": [1], "d": 0});
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"a/b": {"x": 1}, "c": [], "d": "v\""})
        );
        assert_eq!(Ops::new().finish(), (b"[]".to_vec(), 0));
        assert_eq!(escape("a/b~c"), "a~1b~0c");
    }
}
