//! Typed, compiler-checked document queries: field paths the derive generates, operators
//! bounded by the field's type, and filters that carry both their SQL-neutral syntax
//! tree and a Rust predicate computing the same answer.
//!
//! A [`Field<R, T>`] is a path from root document `R` to a value of type `T`. Its
//! operators accept only `T` (or what converts into it), ordering exists only for
//! [`Orderable`] types, string operators only for `String`, collection operators only for
//! `Vec`. A [`Filter<R>`] only combines with filters of the same root and is only
//! accepted by a query of that root.
//!
//! This module only declares its parts and re-exports their items under
//! `marten_core::query`:
//! - `path`: field paths ([`Path`], [`Base`], [`HasFields`]);
//! - `field`: [`Field`] and every operator on it (filters, `asc` / `desc`);
//! - `node`: the backend-neutral syntax tree ([`Node`] and its operator enums);
//! - `filter`: [`Filter`] and its combinators;
//! - `bounds`: the `#[diagnostic::on_unimplemented]` traits bounding operators (and
//!   aggregates) by type;
//! - `order`: sort keys ([`Order`]);
//! - `select`: [`Selection`], the fields a query returns instead of whole documents;
//! - `full_text`: [`FullTextSearch`], the marker of the types a query can search by
//!   full text;
//! - `aggregate`: typed aggregates over a field ([`Aggregation`]: `sum`, `avg`, `min`,
//!   `max`, `count_distinct`).

mod aggregate;
mod bounds;
mod field;
mod filter;
mod full_text;
mod node;
mod order;
mod path;
mod select;

pub use aggregate::{Aggregation, AggregationOp};
pub use bounds::{
    Collection, Comparable, ContainsOp, NumericField, OptionField, Orderable, Test, TextField,
};
pub use field::Field;
pub use filter::Filter;
pub use full_text::{FullTextSearch, DEFAULT_FULL_TEXT_CONFIG};
pub use node::{BackendParam, CompareOp, Node, RawParam, TextOp, ValueKind};
pub use order::Order;
pub use path::{Base, Getter, HasFields, Path};
pub use select::Selection;

#[cfg(test)]
mod tests;
