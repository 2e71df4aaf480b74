//! [`Aggregation`]: a typed aggregate over a field of the filtered documents (`sum`,
//! `avg`, `min`, `max`, `count_distinct`), built by the field's methods (in `field`),
//! with the same computation in Rust (as a filter carries its predicate), and those Rust
//! computations. Uses `path`, `node` and the bounds of `bounds`.

use std::sync::Arc;

use super::bounds::{to_json, Comparable, NumericField, Orderable};
use super::node::ValueKind;
use super::path::{Getter, Path};
use crate::{Error, Result};

/// What an aggregate computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AggregationOp {
    /// The sum of the values (`None` without any).
    Sum,
    /// The mean of the values, as `f64` (`None` without any).
    Avg,
    /// The least value (`None` without any).
    Min,
    /// The greatest value (`None` without any).
    Max,
    /// How many distinct values there are (a missing field or `None` is no value).
    CountDistinct,
}

/// The Rust computation of an aggregate over documents `R`.
type Compute<R, Out> = Arc<dyn Fn(&mut dyn Iterator<Item = &R>) -> Result<Out> + Send + Sync>;

/// An aggregate of type `Out` over a field of documents `R` (`f.total.sum()`): what the
/// database computes (`op` over `path`, compared as `kind`), and the same in Rust.
pub struct Aggregation<R, Out> {
    /// What it computes.
    pub op: AggregationOp,
    /// The field.
    pub path: Path,
    /// How the field's values compare and add up.
    pub kind: ValueKind,
    compute: Compute<R, Out>,
}

impl<R, Out> Clone for Aggregation<R, Out> {
    fn clone(&self) -> Self {
        Aggregation {
            op: self.op,
            path: self.path.clone(),
            kind: self.kind,
            compute: self.compute.clone(),
        }
    }
}

impl<R, Out> std::fmt::Debug for Aggregation<R, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregation")
            .field("op", &self.op)
            .field("path", &self.path)
            .finish()
    }
}

impl<R: 'static, Out> Aggregation<R, Out> {
    /// The aggregate computed in Rust over `docs` (what the database answers). A sum of
    /// integers out of the range of its type (`i64`, `u64`) is [`Error::CorruptData`]
    /// naming the document type and field, as the database's exact sum does not read
    /// as one either.
    pub fn compute<'a>(&self, docs: impl IntoIterator<Item = &'a R>) -> Result<Out>
    where
        R: 'a,
    {
        (self.compute)(&mut docs.into_iter())
    }
}

impl<R: 'static, Out> Aggregation<R, Out> {
    /// An aggregate of the values `get` reaches, folded in Rust by `fold` (its
    /// [`Error::CorruptData`] is given the document type and the field).
    pub(super) fn over<T: 'static>(
        op: AggregationOp,
        kind: ValueKind,
        path: Path,
        get: Getter<R, T>,
        fold: impl Fn(&mut dyn Iterator<Item = &T>) -> Result<Out> + Send + Sync + 'static,
    ) -> Self {
        let field = path.segments.join(".");
        Aggregation {
            op,
            path,
            kind,
            compute: Arc::new(move |docs| {
                fold(&mut docs.filter_map(|r| get(r))).map_err(|e| match e {
                    Error::CorruptData { id, detail, .. } => Error::CorruptData {
                        owner: std::any::type_name::<R>().to_owned(),
                        id,
                        detail: format!("field `{field}`: {detail}"),
                    },
                    other => other,
                })
            }),
        }
    }
}

/// The sum in Rust of a numeric field's values.
pub(super) fn sum<T: NumericField>(values: &mut dyn Iterator<Item = &T>) -> Result<Option<T::Sum>> {
    T::sum_of(values)
}

/// The mean in Rust of a numeric field's values.
pub(super) fn mean<T: NumericField>(values: &mut dyn Iterator<Item = &T>) -> Result<Option<f64>> {
    let (mut sum, mut n) = (0f64, 0u64);
    for x in values.filter_map(NumericField::to_f64) {
        sum += x;
        n += 1;
    }
    Ok((n > 0).then(|| sum / n as f64))
}

/// How many distinct values there are in Rust (JSON `null` is no value).
pub(super) fn distinct<T: Comparable>(values: &mut dyn Iterator<Item = &T>) -> Result<i64> {
    let mut seen: Vec<serde_json::Value> = Vec::new();
    for json in values.map(to_json).filter(|j| !j.is_null()) {
        if !seen.contains(&json) {
            seen.push(json);
        }
    }
    Ok(i64::try_from(seen.len()).unwrap_or(i64::MAX))
}

/// The least value in Rust.
pub(super) fn least<T: Orderable + Clone>(
    values: &mut dyn Iterator<Item = &T>,
) -> Result<Option<T>> {
    Ok(extreme(values, |best, v| v < best))
}

/// The greatest value in Rust.
pub(super) fn greatest<T: Orderable + Clone>(
    values: &mut dyn Iterator<Item = &T>,
) -> Result<Option<T>> {
    Ok(extreme(values, |best, v| v > best))
}

/// The value that wins every comparison `better(current, candidate)`.
fn extreme<T: Clone>(
    values: &mut dyn Iterator<Item = &T>,
    better: fn(&T, &T) -> bool,
) -> Option<T> {
    let mut best: Option<&T> = None;
    for v in values {
        if best.is_none_or(|b| better(b, v)) {
            best = Some(v);
        }
    }
    best.cloned()
}
