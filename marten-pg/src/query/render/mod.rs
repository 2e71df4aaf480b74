//! Renders a filter's syntax tree to parameterized SQL over `jsonb` (or over a
//! duplicated column when the field has one). Every leaf is wrapped in
//! `coalesce(.., false)` so SQL's three-valued logic agrees with the Rust predicate:
//! a missing field is simply "no match", also under `NOT` — except an `Option` (a field
//! compared as JSON) whose key is absent from a present object, which serde reads as
//! `None`: `<>`, `= None` and `is_one_of` with a `None` read it as JSON `null`.
//!
//! Parts, each using only the ones above it:
//! - `sql`: [`Sql`], the text and parameters being built;
//! - `aggregate`: an aggregate over a field (`sum`, `min`, ..) as one `jsonb` value;
//! - `backend_value`: typed (`ToSql`) raw parameters carried through the syntax tree;
//! - `expr`: expressions for a field path (`#>`, `#>>`, typed and duplicated columns);
//! - `nul`: refusing values PostgreSQL cannot hold (NUL characters);
//! - `placeholders`: the scanner that renumbers a raw fragment's `$n`;
//! - `one_of`: rendering `is_one_of` as `= ANY($n)` with one array parameter;
//! - `raw`: rendering a raw fragment and its parameters;
//! - `shape`: the expression of a selection of fields (a value, an array, an object);
//! - `node`: rendering each kind of [`Node`](marten_core::query::Node);
//! - `collect`: the parameters `node` binds, without the text, and the key of the
//!   shape the text depends on (for compiled queries).

mod aggregate;
mod backend_value;
mod collect;
mod expr;
mod node;
mod nul;
mod one_of;
mod placeholders;
mod raw;
mod shape;
mod sql;

pub(crate) use aggregate::aggregate_expr;
pub(crate) use backend_value::PgValue;
pub(crate) use collect::{collect, ShapeKey};
pub(crate) use expr::{text_expr, typed_expr};
pub(crate) use node::render;
pub(crate) use shape::{shape_expr, shared_key, Shape};
pub(crate) use sql::Sql;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod examples;

#[cfg(test)]
mod feature_examples;
