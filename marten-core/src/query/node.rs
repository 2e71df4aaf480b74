//! The backend-neutral syntax tree of a filter ([`Node`]) and its operator and value
//! enums. Backends render it (PostgreSQL: SQL over `jsonb`). Uses only [`Path`].

use super::path::Path;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// How a value compares in SQL: as JSON, as text (byte order), as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Compare the JSON values (equality of any serde value).
    Json,
    /// Compare as text, byte order (`COLLATE "C"`), like Rust's `str` ordering.
    Text,
    /// Compare as numbers.
    Number,
    /// Compare as booleans.
    Bool,
}

/// A filter's syntax tree; backends render it (PostgreSQL: SQL over `jsonb`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Node {
    /// `path op value`
    Compare {
        /// The field.
        path: Path,
        /// The operator.
        op: CompareOp,
        /// How to compare.
        kind: ValueKind,
        /// The value, serialized.
        value: serde_json::Value,
    },
    /// The field equals one of the values (`= ANY(array)`); none matches nothing.
    OneOf {
        /// The field.
        path: Path,
        /// How to compare.
        kind: ValueKind,
        /// The values, serialized.
        values: Vec<serde_json::Value>,
    },
    /// A string test.
    Text {
        /// The field.
        path: Path,
        /// The test.
        op: TextOp,
        /// The argument.
        value: String,
    },
    /// The field is missing or `null` (`negated`: present and not null).
    IsNull {
        /// The field.
        path: Path,
        /// `is_some` rather than `is_none`.
        negated: bool,
    },
    /// A collection contains the value.
    Contains {
        /// The collection.
        path: Path,
        /// The value, serialized.
        value: serde_json::Value,
    },
    /// A collection is empty (or missing).
    IsEmpty {
        /// The collection.
        path: Path,
    },
    /// Some element of a collection matches `inner` (whose paths are relative to the
    /// element).
    Any {
        /// The collection.
        path: Path,
        /// The element filter.
        inner: Box<Node>,
    },
    /// All of them.
    And(Vec<Node>),
    /// Any of them.
    Or(Vec<Node>),
    /// Not this.
    Not(Box<Node>),
    /// A raw SQL fragment with `$1..` parameters (numbered from 1 within the fragment).
    Raw {
        /// The SQL.
        sql: String,
        /// The parameters, serialized as JSON text values.
        params: Vec<RawParam>,
    },
    /// A test that cannot be run: its value has a NaN or infinite float, which JSON
    /// cannot hold (serde writes it as `null`, which the database would read as `None`).
    /// A backend refuses the query with [`Error::InvalidQuery`](crate::Error::InvalidQuery)
    /// and this reason before sending anything.
    Invalid {
        /// Why, naming the field.
        reason: String,
    },
}

impl Node {
    /// This leaf, or [`Node::Invalid`] naming its field when its value has a NaN or
    /// infinite float (which the value's serialization marks, see
    /// [`super::bounds::to_json`]).
    pub(super) fn refusing_non_finite(self) -> Node {
        let marked = |v: &serde_json::Value| v.as_str() == Some(super::bounds::NON_FINITE);
        let path = match &self {
            Node::Compare { path, value, .. } if marked(value) => path,
            Node::OneOf { path, values, .. } if values.iter().any(marked) => path,
            Node::Contains { path, value }
                if value
                    .as_array()
                    .is_some_and(|items| items.iter().any(marked)) =>
            {
                path
            }
            _ => return self,
        };
        Node::Invalid {
            reason: format!(
                "the value compared with `{}` is NaN or infinite (or holds such a float), \
                 which JSON cannot hold",
                path.segments.join(".")
            ),
        }
    }
}

/// A parameter of a raw SQL fragment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RawParam {
    /// A text parameter.
    Text(String),
    /// A 64-bit integer parameter.
    Int(i64),
    /// A float parameter.
    Float(f64),
    /// A boolean parameter.
    Bool(bool),
    /// A `jsonb` parameter.
    Json(serde_json::Value),
    /// A `uuid` parameter.
    Uuid(uuid::Uuid),
    /// A value of the backend's own parameter type (PostgreSQL: any `ToSql` value, such
    /// as a timestamp, an array or a numeric), opaque here.
    Backend(BackendParam),
}

/// A parameter value only a backend knows how to send (see [`RawParam::Backend`]): the
/// backend wraps its own type and takes it back with [`downcast_ref`](Self::downcast_ref).
/// Clones share the value; two are equal when they share it.
#[derive(Clone)]
pub struct BackendParam {
    value: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    type_name: &'static str,
}

impl BackendParam {
    /// Wraps a backend's value; `type_name` names the user's type in `Debug` output.
    pub fn new<T: std::any::Any + Send + Sync>(value: T, type_name: &'static str) -> Self {
        BackendParam {
            value: std::sync::Arc::new(value),
            type_name,
        }
    }

    /// The backend's value, when it is a `T`.
    pub fn downcast_ref<T: std::any::Any>(&self) -> Option<&T> {
        self.value.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for BackendParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BackendParam")
            .field(&self.type_name)
            .finish()
    }
}

impl PartialEq for BackendParam {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.value, &other.value)
    }
}

/// A string test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    /// Starts with.
    StartsWith,
    /// Ends with.
    EndsWith,
    /// Contains.
    Contains,
    /// Equal ignoring ASCII case.
    EqIgnoreCase,
}
