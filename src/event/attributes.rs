use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A small, self-describing value inside [`Attributes`].
///
/// Floats must be finite; nesting is bounded by `limits.max_attribute_depth` and the
/// whole tree by `limits.max_attribute_entries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A string.
    String(String),
    /// A list.
    List(Vec<Value>),
    /// A map with ordered keys.
    Map(BTreeMap<String, Value>),
}

macro_rules! value_from {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(
            impl From<$ty> for Value {
                fn from(v: $ty) -> Value {
                    Value::$variant(v.into())
                }
            }
        )*
    };
}

value_from!(
    bool => Bool,
    i64 => Int,
    i32 => Int,
    u32 => Int,
    f64 => Float,
    String => String,
    &str => String,
    Vec<Value> => List,
    BTreeMap<String, Value> => Map,
);

/// An ordered map of string keys to [`Value`]s: the context of a task or the payload
/// of a [`Custom`](super::Custom) event.
///
/// ```
/// use arbiter_events::Attributes;
/// let context = Attributes::new().with("task_type", "refactor").with("files", 3);
/// assert_eq!(context.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(pub BTreeMap<String, Value>);

impl Attributes {
    /// An empty map.
    pub fn new() -> Attributes {
        Attributes::default()
    }

    /// This map with `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Attributes {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.0.insert(key.into(), value.into())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// The number of top-level keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Attributes {
        Attributes(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}
