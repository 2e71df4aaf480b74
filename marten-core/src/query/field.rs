//! [`Field`]: the typed path from a root document to a value, and every operator on it —
//! comparisons, string tests, `Option` and collection tests, `any` over a collection's
//! elements, the sort keys `asc` / `desc`, and the aggregates `sum`, `avg`, `min`, `max`,
//! `count_distinct`. Each filter operator builds a [`Node`] and
//! the same test in Rust. The methods stay in the module that defines `Field` so that
//! compiler messages name them `Field::<R, T>::method`. Uses `path`, `node`, `filter`,
//! `order` and the bounds of `bounds`.

use serde::de::DeserializeOwned;

use super::aggregate::{self, Aggregation, AggregationOp};
use super::bounds::{
    to_json, Collection, Comparable, ContainsOp, NumericField, OptionField, Orderable, TextField,
};
use super::filter::Filter;
use super::node::{CompareOp, Node, TextOp, ValueKind};
use super::order::Order;
use super::path::{Base, Getter, HasFields, Path};

/// A typed path from root document `R` to a value of type `T`.
pub struct Field<R, T> {
    pub(super) path: Path,
    pub(super) get: Getter<R, T>,
}

impl<R, T> Clone for Field<R, T> {
    fn clone(&self) -> Self {
        Field {
            path: self.path.clone(),
            get: self.get.clone(),
        }
    }
}

impl<R: 'static, T: 'static> Field<R, T> {
    /// The field's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn filter(&self, node: Node, test: impl Fn(&T) -> bool + Send + Sync + 'static) -> Filter<R> {
        let get = self.get.clone();
        Filter::new(node, move |r| get(r).is_some_and(&test))
    }

    fn compare(&self, op: CompareOp, value: T, test: fn(&T, &T) -> bool) -> Filter<R>
    where
        T: Comparable,
    {
        let node = Node::Compare {
            path: self.path.clone(),
            op,
            kind: T::KIND,
            value: to_json(&value),
        };
        self.filter(node, move |v| test(v, &value))
    }

    /// Equal to `value`.
    pub fn eq(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Comparable,
    {
        self.compare(CompareOp::Eq, value.into(), |a, b| a == b)
    }

    /// Not equal to `value` (a missing field matches neither `eq` nor `ne`).
    pub fn ne(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Comparable,
    {
        self.compare(CompareOp::Ne, value.into(), |a, b| a != b)
    }

    /// Equal to one of `values` (`= ANY($n)` with one array parameter; on the primary key
    /// for the id field, on the column for an indexed field). No values match nothing.
    pub fn is_one_of<V: Into<T>>(&self, values: impl IntoIterator<Item = V>) -> Filter<R>
    where
        T: Comparable,
    {
        let values: Vec<T> = values.into_iter().map(Into::into).collect();
        let node = Node::OneOf {
            path: self.path.clone(),
            kind: T::KIND,
            values: values.iter().map(to_json).collect(),
        };
        self.filter(node, move |v| values.contains(v))
    }

    /// Greater than `value`.
    pub fn gt(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Orderable,
    {
        self.compare(CompareOp::Gt, value.into(), |a, b| a > b)
    }

    /// Greater than or equal to `value`.
    pub fn ge(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Orderable,
    {
        self.compare(CompareOp::Ge, value.into(), |a, b| a >= b)
    }

    /// Less than `value`.
    pub fn lt(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Orderable,
    {
        self.compare(CompareOp::Lt, value.into(), |a, b| a < b)
    }

    /// Less than or equal to `value`.
    pub fn le(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Orderable,
    {
        self.compare(CompareOp::Le, value.into(), |a, b| a <= b)
    }

    /// Sort ascending by this field.
    pub fn asc(&self) -> Order<R>
    where
        T: Orderable,
    {
        Order::new(self.path.clone(), T::KIND, false)
    }

    /// Sort descending by this field.
    pub fn desc(&self) -> Order<R>
    where
        T: Orderable,
    {
        Order::new(self.path.clone(), T::KIND, true)
    }

    fn text(&self, op: TextOp, value: String, test: fn(&str, &str) -> bool) -> Filter<R>
    where
        T: TextField,
    {
        let node = Node::Text {
            path: self.path.clone(),
            op,
            value: value.clone(),
        };
        self.filter(node, move |v| test(v.as_ref(), &value))
    }

    /// Starts with `prefix`.
    pub fn starts_with(&self, prefix: impl Into<String>) -> Filter<R>
    where
        T: TextField,
    {
        self.text(TextOp::StartsWith, prefix.into(), |v, p| v.starts_with(p))
    }

    /// Ends with `suffix`.
    pub fn ends_with(&self, suffix: impl Into<String>) -> Filter<R>
    where
        T: TextField,
    {
        self.text(TextOp::EndsWith, suffix.into(), |v, p| v.ends_with(p))
    }

    /// Equal ignoring ASCII case.
    pub fn eq_ignore_case(&self, value: impl Into<String>) -> Filter<R>
    where
        T: TextField,
    {
        self.text(TextOp::EqIgnoreCase, value.into(), |v, p| {
            v.eq_ignore_ascii_case(p)
        })
    }

    /// A `String` field contains a substring; a `Vec<T>` field contains a `T`.
    pub fn contains<V>(&self, value: V) -> Filter<R>
    where
        T: ContainsOp<V>,
    {
        let (node, test) = T::contains_node(self.path.clone(), value);
        self.filter(node, test)
    }

    /// The field is `None` (or missing).
    pub fn is_none(&self) -> Filter<R>
    where
        T: OptionField,
    {
        self.null_test(false)
    }

    /// The field is `Some`.
    pub fn is_some(&self) -> Filter<R>
    where
        T: OptionField,
    {
        self.null_test(true)
    }

    /// `is_none`, or with `negated` `is_some`.
    fn null_test(&self, negated: bool) -> Filter<R>
    where
        T: OptionField,
    {
        let get = self.get.clone();
        let path = self.path.clone();
        Filter::new(Node::IsNull { path, negated }, move |r| match get(r) {
            Some(v) if !v.is_none_value() => negated,
            _ => !negated,
        })
    }

    /// The collection is empty (or missing).
    pub fn is_empty(&self) -> Filter<R>
    where
        T: Collection,
    {
        let get = self.get.clone();
        Filter::new(
            Node::IsEmpty {
                path: self.path.clone(),
            },
            move |r| get(r).is_none_or(|v| v.items().is_empty()),
        )
    }

    /// Some element matches: `f.lines.any(|l| l.sku.eq("A-1"))`.
    pub fn any<E>(&self, predicate: impl FnOnce(E::Fields<E>) -> Filter<E>) -> Filter<R>
    where
        T: Collection<Item = E>,
        E: HasFields,
    {
        let inner = predicate(E::fields_at(Base::root()));
        let node = Node::Any {
            path: self.path.clone(),
            inner: Box::new(inner.node().clone()),
        };
        self.filter(node, move |v| v.items().iter().any(|e| inner.matches(e)))
    }

    /// The sum of this numeric field over the matches (`None` when none has a value).
    pub fn sum(&self) -> Aggregation<R, Option<T::Sum>>
    where
        T: NumericField,
    {
        self.aggregation(AggregationOp::Sum, ValueKind::Number, aggregate::sum)
    }

    /// The mean of this numeric field over the matches (`None` when none has a value).
    pub fn avg(&self) -> Aggregation<R, Option<f64>>
    where
        T: NumericField,
    {
        self.aggregation(AggregationOp::Avg, ValueKind::Number, aggregate::mean)
    }

    /// The least value of this field over the matches (`None` without any).
    pub fn min(&self) -> Aggregation<R, Option<T>>
    where
        T: Orderable + DeserializeOwned + Clone,
    {
        self.aggregation(AggregationOp::Min, T::KIND, aggregate::least)
    }

    /// The greatest value of this field over the matches (`None` without any).
    pub fn max(&self) -> Aggregation<R, Option<T>>
    where
        T: Orderable + DeserializeOwned + Clone,
    {
        self.aggregation(AggregationOp::Max, T::KIND, aggregate::greatest)
    }

    /// How many distinct values this field has over the matches (`None` of an `Option`
    /// field is no value).
    pub fn count_distinct(&self) -> Aggregation<R, i64>
    where
        T: Comparable,
    {
        self.aggregation(AggregationOp::CountDistinct, T::KIND, aggregate::distinct)
    }

    fn aggregation<Out: 'static>(
        &self,
        op: AggregationOp,
        kind: ValueKind,
        fold: fn(&mut dyn Iterator<Item = &T>) -> crate::Result<Out>,
    ) -> Aggregation<R, Out> {
        Aggregation::over(op, kind, self.path.clone(), self.get.clone(), fold)
    }
}
