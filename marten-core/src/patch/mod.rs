//! Patching stored documents in place: typed operations on a document's fields
//! ([`PatchOp`]), applied by the database in one statement to one document (by id) or to
//! every document a filter matches ([`PatchTarget`]), without loading them.
//!
//! A session builds a patch with `session.patch::<T>(&id)` or
//! `session.patch_where::<T>(filter)`; the operations' field arguments are the typed
//! query paths the derive generates (nested paths too), and what each operation accepts
//! is bounded by the field's type with the traits of `bounds`.
//!
//! This module only declares its parts and re-exports their items under
//! `marten_core::patch`:
//! - `op`: [`PatchOp`], one operation as data, [`Patch`] (a list of them and its target);
//! - `bounds`: [`Incrementable`], [`ListField`] and [`Unsettable`], the
//!   `#[diagnostic::on_unimplemented]` traits bounding operations by field type.

mod bounds;
mod op;

pub use bounds::{Incrementable, ListField, NumberKind, Unsettable};
pub use op::{Patch, PatchOp, PatchTarget};

#[cfg(test)]
mod tests;
