//! serde support for protobuf enum fields: prost stores them as `i32`; JSON/YAML use the proto
//! value names (`"ROUND_ROBIN"`), and numbers are accepted on input too. `build.rs` generates one
//! small module per enum (`crate::serde_enum::*`) that calls these functions.

use std::fmt;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserializer, Serializer};

/// Name <-> number mapping of one proto enum.
pub(crate) struct EnumNames {
    pub what: &'static str,
    pub name: fn(i32) -> Option<&'static str>,
    pub parse: fn(&str) -> Option<i32>,
}

pub(crate) fn serialize<S: Serializer>(e: &EnumNames, v: &i32, s: S) -> Result<S::Ok, S::Error> {
    match (e.name)(*v) {
        Some(name) => s.serialize_str(name),
        None => s.serialize_i32(*v),
    }
}

pub(crate) fn serialize_optional<S: Serializer>(
    e: &EnumNames,
    v: &Option<i32>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => serialize(e, v, s),
        None => s.serialize_none(),
    }
}

pub(crate) fn serialize_repeated<S: Serializer>(
    e: &EnumNames,
    v: &[i32],
    s: S,
) -> Result<S::Ok, S::Error> {
    struct One<'a>(&'a EnumNames, i32);
    impl serde::Serialize for One<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, &self.1, s)
        }
    }
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&One(e, *x))?;
    }
    seq.end()
}

#[derive(Clone, Copy)]
struct Seed<'a>(&'a EnumNames);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = i32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i32, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = i32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value name or number of enum {}", self.0.what)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<i32, E> {
        (self.0.parse)(s)
            .ok_or_else(|| E::custom(format!("unknown value {s:?} for enum {}", self.0.what)))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i32, E> {
        i32::try_from(v)
            .map_err(|_| E::custom(format!("{v} is out of range for enum {}", self.0.what)))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i32, E> {
        i32::try_from(v)
            .map_err(|_| E::custom(format!("{v} is out of range for enum {}", self.0.what)))
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(e: &EnumNames, d: D) -> Result<i32, D::Error> {
    Seed(e).deserialize(d)
}

pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(
    e: &EnumNames,
    d: D,
) -> Result<Option<i32>, D::Error> {
    struct Opt<'a>(&'a EnumNames);
    impl<'de> Visitor<'de> for Opt<'_> {
        type Value = Option<i32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "null or a value of enum {}", self.0.what)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Seed(self.0).deserialize(d).map(Some)
        }
    }
    d.deserialize_option(Opt(e))
}

pub(crate) fn deserialize_repeated<'de, D: Deserializer<'de>>(
    e: &EnumNames,
    d: D,
) -> Result<Vec<i32>, D::Error> {
    struct Rep<'a>(&'a EnumNames);
    impl<'de> Visitor<'de> for Rep<'_> {
        type Value = Vec<i32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of values of enum {}", self.0.what)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Seed(self.0))? {
                out.push(v);
            }
            Ok(out)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(Rep(e))
}
