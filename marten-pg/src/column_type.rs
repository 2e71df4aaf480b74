//! The PostgreSQL type of a field duplicated into an indexed column.

/// A field type that can be duplicated into a typed, indexed column
/// (`#[document(index)]`, `#[document(unique)]`).
///
/// The column is a generated column, `(data ->> 'key')::SQL_TYPE`: PostgreSQL keeps it in
/// step with the document on every write, and queries on the field compare the column
/// (their value is cast the same way, `$1::text::SQL_TYPE`). So [`SQL_TYPE`] must be a
/// type that the field's JSON value, read as text, casts to with an immutable cast (a
/// generated column accepts nothing else), and whose order is the field's order when the
/// field is sorted or compared. A JSON `null` (`None`) or a missing key is a `NULL` column.
///
/// Out of the box: `String` (`text`), `i64` and `u32` (`bigint`), `i32`, `i16`, `i8`,
/// `u16` and `u8` (`integer`), `bool` (`boolean`), `Uuid` (`uuid`), `f64` and `f32`
/// (`double precision`), `Option<T>` of any of them (the type of `T`), and strong-typed ids
/// (`#[derive(DocumentId)]`, the type of their inner value). Type aliases
/// and paths (`std::string::String`) work as the type they name. Timestamps are not
/// included: PostgreSQL's text-to-`timestamptz` cast depends on the session's time zone
/// settings, so it cannot fill a generated column.
///
/// # Example
///
/// A newtype that serde writes as its inner string:
///
/// ```
/// # use marten_pg as marten;
/// use marten::ColumnType;
///
/// #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
/// #[serde(transparent)]
/// struct Sku(String);
///
/// impl ColumnType for Sku {
///     const SQL_TYPE: &'static str = "text";
/// }
///
/// assert_eq!(<Option<Sku> as ColumnType>::SQL_TYPE, "text");
/// ```
///
/// A document can then declare `#[document(index)] sku: Sku`; to query it with `eq`, also
/// implement `marten::query::Comparable` for `Sku`.
///
/// [`SQL_TYPE`]: ColumnType::SQL_TYPE
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an indexed column: marten does not know its PostgreSQL type",
    label = "this field is marked `#[document(index)]` or `#[document(unique)]`",
    note = "implement `marten::ColumnType` for `{Self}` (its `SQL_TYPE` is the PostgreSQL type its JSON value casts to, e.g. \"text\"), or remove `#[document(index)]` / `#[document(unique)]` from the field",
    note = "indexable out of the box: `String`, `bool`, `Uuid`, `f64`, `f32`, integers except `u64`, `i128`, `u128`, `isize` and `usize`, and `Option` of them"
)]
pub trait ColumnType {
    /// The PostgreSQL type of the column, e.g. `"bigint"`. It is written into the table's
    /// DDL and into queries as is: a type name, never user input.
    const SQL_TYPE: &'static str;
}

macro_rules! column_types {
    ($sql:literal: $($t:ty),*) => {$(
        impl ColumnType for $t {
            const SQL_TYPE: &'static str = $sql;
        }
    )*};
}

column_types!("text": String);
column_types!("bigint": i64, u32);
column_types!("integer": i32, i16, i8, u16, u8);
column_types!("boolean": bool);
column_types!("uuid": uuid::Uuid);
column_types!("double precision": f64, f32);

/// `None` is a `NULL` column; `Some(v)` is `v`'s column.
impl<T: ColumnType> ColumnType for Option<T> {
    const SQL_TYPE: &'static str = T::SQL_TYPE;
}

#[cfg(test)]
mod tests {
    use super::ColumnType;

    #[test]
    fn column_types_of_the_supported_fields() {
        assert_eq!(String::SQL_TYPE, "text");
        assert_eq!(<u32 as ColumnType>::SQL_TYPE, "bigint");
        assert_eq!(<u16 as ColumnType>::SQL_TYPE, "integer");
        assert_eq!(
            <Option<Option<f32>> as ColumnType>::SQL_TYPE,
            "double precision"
        );
        assert_eq!(<uuid::Uuid as ColumnType>::SQL_TYPE, "uuid");
    }
}
