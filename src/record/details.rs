//! The flat `details` object of an event: string, number and boolean
//! values under keys that cannot forge a record field.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Largest accepted number of `details` entries.
pub const MAX_DETAILS: usize = 256;

/// A scalar value of the flat `details` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DetailValue {
    /// `true` / `false`.
    Bool(bool),
    /// Any JSON number, kept as written.
    Number(serde_json::Number),
    /// A string.
    Text(String),
}

impl fmt::Display for DetailValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetailValue::Bool(b) => write!(f, "{b}"),
            DetailValue::Number(n) => write!(f, "{n}"),
            DetailValue::Text(s) => f.write_str(s),
        }
    }
}

/// The flat `details` object, sorted by key so records are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Details(pub BTreeMap<String, DetailValue>);

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Details;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a flat object of strings, numbers and booleans")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !valid_detail_key(&key) {
                        return Err(de::Error::custom(format_args!(
                            "details key {key:?} must be 1-64 characters of A-Z a-z 0-9 _ . -"
                        )));
                    }
                    let value: serde_json::Value = map.next_value()?;
                    let value = match value {
                        serde_json::Value::Bool(b) => DetailValue::Bool(b),
                        serde_json::Value::Number(n) => DetailValue::Number(n),
                        serde_json::Value::String(s) => DetailValue::Text(s),
                        other => {
                            return Err(de::Error::custom(format_args!(
                                "details.{key} must be a string, number or boolean, not {}",
                                json_type(&other)
                            )))
                        }
                    };
                    if out.insert(key.clone(), value).is_some() {
                        return Err(de::Error::custom(format_args!(
                            "duplicate field `details.{key}`"
                        )));
                    }
                    if out.len() > MAX_DETAILS {
                        return Err(de::Error::custom(format_args!(
                            "details has more than {MAX_DETAILS} entries"
                        )));
                    }
                }
                Ok(Details(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Whether `key` may name a `details` entry: it becomes `details.KEY=` in the
/// record, so it is restricted to characters that cannot forge a field.
pub fn valid_detail_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
