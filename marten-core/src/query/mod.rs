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
//! - `path`: field paths ([`Path`], [`Base`], [`Field`], [`HasFields`]);
//! - `node`: the backend-neutral syntax tree ([`Node`] and its operator enums);
//! - `filter`: [`Filter`] and its combinators;
//! - `bounds`: the `#[diagnostic::on_unimplemented]` traits bounding operators by type;
//! - `operators`: the filter-building methods of [`Field`];
//! - `order`: sort keys ([`Order`], `Field::asc` / `desc`).

mod bounds;
mod filter;
mod node;
mod operators;
mod order;
mod path;

pub use bounds::{Collection, Comparable, ContainsOp, OptionField, Orderable, Test, TextField};
pub use filter::Filter;
pub use node::{CompareOp, Node, RawParam, TextOp, ValueKind};
pub use order::Order;
pub use path::{Base, Field, Getter, HasFields, Path};

#[cfg(test)]
mod tests;
