//! The traits bounding patch operations by the field's type, each with a
//! `#[diagnostic::on_unimplemented]` message naming the misuse: [`Incrementable`]
//! (numbers), [`ListField`] (`Vec`), [`Unsettable`] (`Option`).

use serde::Serialize;

/// Number fields, which `increment` adds to (integers and floats).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a number field: it cannot be incremented",
    label = "`increment` needs an integer or float field",
    note = "`increment` exists for `i8`..`i64`, `u8`..`u64`, `f32` and `f64` fields; use `set` for other fields"
)]
pub trait Incrementable: Serialize + Copy + Send + Sync + 'static {
    /// The amount's type: the field's own (named through the field, so the field's type
    /// decides it and an integer literal takes the field's integer type).
    type By: Serialize;
    /// The field's number type, whose range the sum must stay within.
    const KIND: NumberKind;
}

/// The number type of an incremented field: the backend refuses a sum out of its range
/// (the stored document would no longer deserialize).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberKind {
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

macro_rules! incrementable {
    ($($t:ty => $kind:ident),*) => {$(
        impl Incrementable for $t {
            type By = $t;
            const KIND: NumberKind = NumberKind::$kind;
        }
    )*};
}

incrementable!(
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    f32 => F32, f64 => F64
);

/// Collection fields, which `append`, `append_if_missing` and `remove` change.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Vec` field",
    label = "`append` / `remove` need a `Vec` field",
    note = "`append`, `append_if_missing` and `remove` exist only for `Vec<T>` fields, with a `T` argument"
)]
pub trait ListField {
    /// The element type.
    type Item: Serialize;
}

impl<E: Serialize> ListField for Vec<E> {
    type Item = E;
}

/// `Option` fields, which `unset` sets to `None`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `Option` field: it cannot be unset",
    label = "`unset` needs an `Option` field",
    note = "a required field cannot be removed from a stored document; use `set` to change it"
)]
pub trait Unsettable {}

impl<T> Unsettable for Option<T> {}
