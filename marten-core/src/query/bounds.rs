//! The traits that bound a field's operators by the field's type, each with a
//! `#[diagnostic::on_unimplemented]` message naming the misuse: [`Comparable`],
//! [`Orderable`], [`TextField`], [`OptionField`], [`Collection`] and [`ContainsOp`], and
//! their implementations for the standard types. Uses the syntax tree of `node`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::node::{Node, TextOp, ValueKind};
use super::path::Path;
use crate::{Error, Result};

/// What a syntax tree holds in place of a value with a NaN or infinite float (see
/// [`to_json`]): a string with a NUL character, which no query value can be (PostgreSQL
/// `text` and `jsonb` cannot hold one, so such a value is refused), so it never stands for
/// a real value. [`Node::refusing_non_finite`] turns a leaf holding it into
/// [`Node::Invalid`].
pub(super) const NON_FINITE: &str = "\u{0}marten: a NaN or infinite float";

/// A value serialized for a syntax tree; a value serde refuses is JSON `null`. Written
/// as documents are written (serde_json's writer puts an `f32` in its shortest form,
/// `123.45`) and read back: `serde_json::to_value` would widen an `f32` to the nearest
/// `f64` (`123.44999694824219`), which no stored document holds, so no equality found it.
/// A value with a NaN or infinite float (serde writes it as `null`, which a query would
/// read as `None`) is [`NON_FINITE`].
pub(super) fn to_json<T: Comparable>(v: &T) -> serde_json::Value {
    if !v.is_finite_value() {
        return serde_json::Value::String(NON_FINITE.to_owned());
    }
    serde_json::to_vec(v)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Comparison semantics of a type whose values can be compared for equality in queries.
pub trait Comparable: Serialize + PartialEq + Send + Sync + 'static {
    /// How the database compares it.
    const KIND: ValueKind;

    /// Whether JSON holds the value as it is: `false` for a NaN or infinite float (also in
    /// an `Option` or a `Vec`), which serde writes as `null`, so that a query would read
    /// it as `None`. A query with such a value is refused ([`crate::Error::InvalidQuery`]).
    /// `true` unless a type says otherwise.
    fn is_finite_value(&self) -> bool {
        true
    }
}

/// Types with an order the database reproduces (integers, floats, strings, uuids, bools).
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no order a query can use",
    label = "cannot compare or sort by this field",
    note = "ordering (`gt`, `lt`, `asc`, `desc`, ...) exists for numbers, `String`, `Uuid` and `bool` fields"
)]
pub trait Orderable: Comparable + PartialOrd {}

macro_rules! kinds {
    ($kind:ident: $($t:ty),*) => {$(
        impl Comparable for $t {
            const KIND: ValueKind = ValueKind::$kind;
        }
        impl Orderable for $t {}
    )*};
}

kinds!(Number: i8, i16, i32, i64, u8, u16, u32, u64);
kinds!(Text: String, uuid::Uuid);
kinds!(Bool: bool);

macro_rules! floats {
    ($($t:ty),*) => {$(
        impl Comparable for $t {
            const KIND: ValueKind = ValueKind::Number;
            fn is_finite_value(&self) -> bool {
                self.is_finite()
            }
        }
        impl Orderable for $t {}
    )*};
}

floats!(f32, f64);

impl<T: Comparable> Comparable for Option<T> {
    const KIND: ValueKind = ValueKind::Json;
    fn is_finite_value(&self) -> bool {
        match self {
            Some(v) => v.is_finite_value(),
            None => true,
        }
    }
}

impl<T: Comparable> Comparable for Vec<T> {
    const KIND: ValueKind = ValueKind::Json;
    fn is_finite_value(&self) -> bool {
        self.iter().all(Comparable::is_finite_value)
    }
}

/// NumericField fields (integers, floats, and `Option`s of them): `sum` and `avg`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a numeric field",
    label = "`sum` and `avg` need a number",
    note = "`sum` and `avg` exist for integer and float fields (and `Option`s of them); `min`, `max` and `count_distinct` work on other fields"
)]
pub trait NumericField: Comparable {
    /// What the values add up to (`i64` for signed integers, `u64` for unsigned ones,
    /// `f64` for floats).
    type Sum: DeserializeOwned + Send + 'static;
    /// The sum in Rust (`None` without any value). Integers add up exactly, as the
    /// database's `numeric` sum does: a sum out of the range of [`Self::Sum`] is
    /// [`Error::CorruptData`] (the database's sum does not read as one either), whatever
    /// the partial sums on the way.
    fn sum_of(values: &mut dyn Iterator<Item = &Self>) -> Result<Option<Self::Sum>>;
    /// The value as a float (`None` for an `Option`'s `None`).
    fn to_f64(&self) -> Option<f64>;
}

macro_rules! numeric {
    ($sum:ty, $add:ident: $($t:ty),*) => {$(
        impl NumericField for $t {
            type Sum = $sum;
            fn sum_of(values: &mut dyn Iterator<Item = &Self>) -> Result<Option<$sum>> {
                $add(values.map(|v| *v))
            }
            #[allow(clippy::cast_precision_loss, clippy::cast_lossless)]
            fn to_f64(&self) -> Option<f64> {
                Some(*self as f64)
            }
        }
    )*};
}

numeric!(i64, exact_sum: i8, i16, i32, i64);
numeric!(u64, exact_sum: u8, u16, u32, u64);
numeric!(f64, float_sum: f32, f64);

/// The exact sum of integers (`None` without any), or [`Error::CorruptData`] when it is
/// out of the range of `S`. Added up as `i128`, so partial sums out of that range (a
/// large value, then a negative one) do not matter, as they do not to the database.
fn exact_sum<V, S>(values: impl Iterator<Item = V>) -> Result<Option<S>>
where
    i128: From<V>,
    S: TryFrom<i128>,
{
    let mut sum: Option<i128> = None;
    for v in values {
        let total = sum.unwrap_or(0).checked_add(i128::from(v));
        sum = Some(total.ok_or_else(|| out_of_range::<S>("beyond i128"))?);
    }
    sum.map(|s| S::try_from(s).map_err(|_| out_of_range::<S>(&s.to_string())))
        .transpose()
}

/// The sum of floats (`None` without any): never out of range (it may be infinite).
fn float_sum<V>(values: impl Iterator<Item = V>) -> Result<Option<f64>>
where
    f64: From<V>,
{
    Ok(values.fold(None, |acc, v| Some(acc.unwrap_or(0.0) + f64::from(v))))
}

/// The error of a sum out of the range of `S`.
fn out_of_range<S>(sum: &str) -> Error {
    let ty = std::any::type_name::<S>();
    Error::CorruptData {
        owner: format!("a sum of {ty}"),
        id: None,
        detail: format!("the values add up to {sum}, out of the range of {ty}"),
    }
}

impl<T: NumericField> NumericField for Option<T> {
    type Sum = T::Sum;
    fn sum_of(values: &mut dyn Iterator<Item = &Self>) -> Result<Option<T::Sum>> {
        T::sum_of(&mut values.filter_map(Option::as_ref))
    }
    fn to_f64(&self) -> Option<f64> {
        self.as_ref().and_then(NumericField::to_f64)
    }
}

/// String fields: `starts_with`, `ends_with`, `contains`, `eq_ignore_case`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a string field",
    label = "string operators need a `String` field",
    note = "`starts_with`, `ends_with` and `eq_ignore_case` exist only for `String` fields"
)]
pub trait TextField: Comparable + AsRef<str> {}
impl TextField for String {}

/// `Option` fields: `is_none`, `is_some`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `Option` field",
    label = "`is_none` / `is_some` need an `Option` field"
)]
pub trait OptionField {
    /// Whether the value is `None`.
    fn is_none_value(&self) -> bool;
}
impl<T> OptionField for Option<T> {
    fn is_none_value(&self) -> bool {
        self.is_none()
    }
}

/// Collection fields: `contains`, `is_empty`, `any`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a collection field",
    label = "collection operators need a `Vec` field",
    note = "`is_empty` and `any` exist only for `Vec` fields"
)]
pub trait Collection {
    /// The element type.
    type Item;
    /// The elements.
    fn items(&self) -> &[Self::Item];
}
impl<E> Collection for Vec<E> {
    type Item = E;
    fn items(&self) -> &[E] {
        self
    }
}

/// A Rust-side test of a field's value.
pub type Test<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

/// `contains`: a substring of a `String` field, or an element of a `Vec` field.
#[diagnostic::on_unimplemented(
    message = "`contains` is not defined for a `{Self}` field with a `{V}` argument",
    note = "a `String` field contains a substring; a `Vec<T>` field contains a `T`"
)]
pub trait ContainsOp<V> {
    #[doc(hidden)]
    fn contains_node(path: Path, value: V) -> (Node, Test<Self>);
}

impl<V: Into<String>> ContainsOp<V> for String {
    fn contains_node(path: Path, value: V) -> (Node, Test<Self>) {
        let value: String = value.into();
        let node = Node::Text {
            path,
            op: TextOp::Contains,
            value: value.clone(),
        };
        (node, Box::new(move |s: &String| s.contains(value.as_str())))
    }
}

/// An element is equal to the value, as in Rust: the database tests containment of
/// `[value]` (which an index can serve), exact for a string, number, boolean or `null`
/// element, and for an array or object element (where containment is only "a subset":
/// `[[1, 2]]` contains `[[1]]` and `[[]]`) also an element equal to it.
impl<E: Comparable, V: Into<E>> ContainsOp<V> for Vec<E> {
    fn contains_node(path: Path, value: V) -> (Node, Test<Self>) {
        let value: E = value.into();
        let node = Node::Contains {
            path,
            value: serde_json::Value::Array(vec![to_json(&value)]),
        };
        (node, Box::new(move |v: &Vec<E>| v.contains(&value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum<T: NumericField>(values: &[T]) -> Result<Option<T::Sum>> {
        T::sum_of(&mut values.iter())
    }

    /// The detail of an out-of-range error.
    fn refused<S: std::fmt::Debug>(r: Result<Option<S>>) -> String {
        match r {
            Err(Error::CorruptData { detail, .. }) => detail,
            other => panic!("expected CorruptData, got {other:?}"),
        }
    }

    #[test]
    fn integer_sums_at_the_edges() {
        assert_eq!(sum::<i64>(&[]).ok(), Some(None));
        assert_eq!(sum(&[i64::MAX]).ok(), Some(Some(i64::MAX)));
        assert_eq!(sum(&[i64::MIN]).ok(), Some(Some(i64::MIN)));
        assert_eq!(sum(&[i64::MAX, i64::MIN]).ok(), Some(Some(-1)));
        // Partial sums out of range, the total in range: as the database's exact sum.
        assert_eq!(sum(&[i64::MAX, 1, -1]).ok(), Some(Some(i64::MAX)));
        assert_eq!(sum(&[i64::MIN, -1, 1]).ok(), Some(Some(i64::MIN)));
        assert_eq!(sum(&[u64::MAX, 0]).ok(), Some(Some(u64::MAX)));
        assert_eq!(sum(&[i8::MAX, i8::MAX]).ok(), Some(Some(254i64)));
        assert_eq!(sum(&[Some(i64::MAX), None]).ok(), Some(Some(i64::MAX)));
        assert_eq!(sum::<Option<i64>>(&[None, None]).ok(), Some(None));
    }

    #[test]
    fn integer_sums_out_of_range_are_errors() {
        let detail = refused(sum(&[i64::MAX, 1]));
        assert!(
            detail.contains("9223372036854775808") && detail.contains("i64"),
            "{detail}"
        );
        refused(sum(&[i64::MIN, -1]));
        refused(sum(&[i64::MAX, i64::MAX, i64::MAX]));
        let detail = refused(sum(&[u64::MAX, 1]));
        assert!(detail.contains("18446744073709551616"), "{detail}");
        refused(sum(&[Some(u64::MAX), None, Some(u64::MAX)]));
    }

    #[test]
    fn non_finite_floats_are_marked_and_make_a_leaf_invalid() {
        assert!(!f64::NAN.is_finite_value());
        assert!(!Some(f32::INFINITY).is_finite_value());
        assert!(!vec![1.0, f64::NEG_INFINITY].is_finite_value());
        assert!(Some(1.5f64).is_finite_value() && None::<f64>.is_finite_value());
        assert_eq!(to_json(&Some(f64::NAN)), serde_json::json!(NON_FINITE));
        assert_eq!(to_json(&None::<f64>), serde_json::Value::Null);
        assert_eq!(to_json(&Some(1.5f64)), serde_json::json!(1.5));
        let path = || Path {
            segments: vec!["a", "score"],
            column: None,
        };
        let compare = Node::Compare {
            path: path(),
            op: super::super::node::CompareOp::Eq,
            kind: ValueKind::Json,
            value: to_json(&Some(f64::NAN)),
        };
        match compare.refusing_non_finite() {
            Node::Invalid { reason } => assert!(reason.contains("`a.score`"), "{reason}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
        let (contains, _) = <Vec<f64> as ContainsOp<f64>>::contains_node(path(), f64::NAN);
        assert!(matches!(
            contains.refusing_non_finite(),
            Node::Invalid { .. }
        ));
        let (finite, test) = <Vec<f64> as ContainsOp<f64>>::contains_node(path(), 2.0);
        assert!(matches!(
            finite.refusing_non_finite(),
            Node::Contains { .. }
        ));
        assert!(test(&vec![1.0, 2.0]) && !test(&vec![1.0]));
    }

    #[test]
    fn contains_of_a_composite_element_is_element_equality_in_rust() {
        let path = Path {
            segments: vec!["grid"],
            column: None,
        };
        let (_, test) = <Vec<Vec<i32>> as ContainsOp<Vec<i32>>>::contains_node(path, vec![1]);
        assert!(!test(&vec![vec![1, 2]]));
        assert!(test(&vec![vec![1, 2], vec![1]]));
    }

    #[test]
    fn float_sums_are_never_refused() {
        assert_eq!(sum(&[f64::MAX, f64::MAX]).ok(), Some(Some(f64::INFINITY)));
        assert_eq!(sum(&[1.5f32, 2.0]).ok(), Some(Some(3.5)));
        assert_eq!(sum::<f64>(&[]).ok(), Some(None));
    }
}
