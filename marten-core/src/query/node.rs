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
