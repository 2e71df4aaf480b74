//! The second pass over a filter's syntax tree, for compiled queries: the parameters
//! `node` would bind, in the order it binds them, without writing any SQL, and the
//! [`ShapeKey`] of everything the SQL depends on besides those values — the tree's
//! structure, paths, operators and kinds, each raw fragment, and what of a value changes
//! the SQL (its JSON type: a GIN containment test for a scalar, an element equality for a
//! `contains` of an array or object, `IS NULL` for `None` on an indexed `Option` field, a
//! key absent from the `jsonb` read as `None`; a refused node). Two trees with
//! the same key render the same text. Each arm mirrors the arm of `node` that renders the
//! same kind of node, through the same helpers for the values bound. Uses `node`, `one_of`, `raw`, `nul` and [`Sql`].

use marten_core::query::{CompareOp, Node, Path, RawParam, ValueKind};

use super::node::{
    compared_param, containment_doc, containment_is_equality, nested_in, null_column_test,
};
use super::nul::{nul_reason, refuse_nul};
use super::one_of::{one_of_matches_null, one_of_param};
use super::raw::{raw_value, refuse_raw_nul};
use super::sql::Sql;

/// What a statement's text depends on besides its parameter values, written as bytes
/// (each variable-length part with its length, so that two different shapes never write
/// the same bytes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ShapeKey(Vec<u8>);

impl ShapeKey {
    /// One tag or small number.
    pub(crate) fn tag(&mut self, tag: u8) {
        self.0.push(tag);
    }

    /// A number.
    pub(crate) fn number(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }

    /// A text, with its length.
    pub(crate) fn text(&mut self, s: &str) {
        self.number(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A field path: its keys and its duplicated column.
    pub(crate) fn path(&mut self, path: &Path) {
        self.number(path.segments.len());
        for s in &path.segments {
            self.text(s);
        }
        match path.column {
            Some((column, sql_type)) => {
                self.tag(1);
                self.text(column);
                self.text(sql_type);
            }
            None => self.tag(0),
        }
    }

    /// How a value compares.
    pub(crate) fn kind(&mut self, kind: ValueKind) {
        self.tag(kind as u8);
    }

    /// The key's bytes.
    pub(crate) fn into_bytes(self) -> Box<[u8]> {
        self.0.into_boxed_slice()
    }
}

/// The JSON type of a value (what of a compared value its SQL depends on).
fn json_type(value: &serde_json::Value) -> u8 {
    match value {
        serde_json::Value::Null => 0,
        serde_json::Value::Bool(_) => 1,
        serde_json::Value::Number(_) => 2,
        serde_json::Value::String(_) => 3,
        serde_json::Value::Array(_) => 4,
        serde_json::Value::Object(_) => 5,
    }
}

/// Adds the parameters [`render`](super::render) binds for `node` to `sql` (and marks it
/// invalid where render would for a value), and writes the node's shape to `key`.
pub(crate) fn collect(node: &Node, gin: bool, sql: &mut Sql, key: &mut ShapeKey) {
    key.tag(u8::from(gin));
    collect_in(gin, true, node, sql, key);
}

/// [`collect`] below `d.data` (`root`) or an `any` element; `gin` only at the root.
fn collect_in(gin: bool, root: bool, node: &Node, sql: &mut Sql, key: &mut ShapeKey) {
    match node {
        Node::Compare {
            path,
            op,
            kind,
            value,
        } => compare(gin && root, root, sql, key, (path, *op, *kind, value)),
        Node::OneOf { path, kind, values } => {
            key.tag(2);
            key.path(path);
            key.kind(*kind);
            key.tag(u8::from(one_of_matches_null(*kind, values)));
            for v in values {
                refuse_nul(sql, v);
            }
            sql.params.push(one_of_param(root, path, *kind, values));
        }
        Node::Text { path, op, value } => {
            key.tag(3);
            key.path(path);
            key.tag(*op as u8);
            if value.contains('\0') {
                sql.invalid.get_or_insert_with(nul_reason);
            }
            sql.params.push(Box::new(value.clone()));
        }
        Node::IsNull { path, negated } => {
            key.tag(4);
            key.path(path);
            key.tag(u8::from(*negated));
        }
        Node::Contains { path, value } => {
            key.tag(5);
            key.path(path);
            key.tag(u8::from(containment_is_equality(value)));
            refuse_nul(sql, value);
            if gin && root {
                sql.params.push(Box::new(nested_in(path, value.clone())));
            }
            sql.params.push(Box::new(value.clone()));
        }
        Node::IsEmpty { path } => {
            key.tag(6);
            key.path(path);
        }
        Node::Any { path, inner } => {
            key.tag(7);
            key.path(path);
            collect_in(false, false, inner, sql, key);
        }
        Node::And(nodes) => joined(8, root, gin, nodes, sql, key),
        Node::Or(nodes) => joined(9, root, gin, nodes, sql, key),
        Node::Not(inner) => {
            key.tag(10);
            collect_in(gin, root, inner, sql, key);
        }
        Node::Raw {
            sql: fragment,
            params,
        } => raw(sql, key, fragment, params),
        Node::Invalid { reason } => {
            key.tag(13);
            sql.invalid.get_or_insert_with(|| reason.clone());
        }
        _ => key.tag(12),
    }
}

/// A comparison (`gin_root`: at the root of a document with a GIN index).
fn compare(
    gin_root: bool,
    root: bool,
    sql: &mut Sql,
    key: &mut ShapeKey,
    (path, op, kind, value): (&Path, CompareOp, ValueKind, &serde_json::Value),
) {
    key.tag(1);
    key.path(path);
    key.tag(op as u8);
    key.kind(kind);
    key.tag(json_type(value));
    refuse_nul(sql, value);
    if let Some(doc) = containment_doc(gin_root, path, op, value) {
        sql.params.push(Box::new(doc));
    }
    if null_column_test(root, path, op, kind, value).is_none() {
        sql.params.push(compared_param(root, path, op, kind, value));
    }
}

/// A raw fragment: its text and count of parameters, and its parameters.
fn raw(sql: &mut Sql, key: &mut ShapeKey, fragment: &str, params: &[RawParam]) {
    key.tag(11);
    key.text(fragment);
    key.number(params.len());
    for p in params {
        refuse_raw_nul(sql, p);
        let value = raw_value(sql, p);
        sql.params.push(value);
    }
}

/// The nodes of an `AND` (`tag` 8) or `OR` (9), each in turn.
fn joined(tag: u8, root: bool, gin: bool, nodes: &[Node], sql: &mut Sql, key: &mut ShapeKey) {
    key.tag(tag);
    key.number(nodes.len());
    for n in nodes {
        collect_in(gin, root, n, sql, key);
    }
}
