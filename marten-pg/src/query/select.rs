//! [`Selected`]: a [`Query`] returning some fields of each match instead of the whole
//! document — `select(|f| (f.name, f.total))` reads tuples, `select(|f| f.name)` one
//! field's values, `select_into::<S>(..)` a `Deserialize` struct built with
//! `jsonb_build_object` of the chosen fields (keyed by their JSON keys). Only the chosen
//! values are sent and deserialized. Uses `run`, `spec`, `statement`, `rows` and
//! `render`.

use std::marker::PhantomData;

use marten_core::query::{Base, HasFields, Selection};
use marten_core::{Error, Result};
use serde::de::DeserializeOwned;

use super::render::{shape_expr, Shape};
use super::rows::decode_shape;
use super::run::Query;
use super::QuerySource;
use crate::documents::PgDocument;

/// A query returning values of type `Out` (some fields of each match) instead of
/// documents: filters, order, skip and take are the query's.
#[must_use]
pub struct Selected<'s, S: QuerySource, D, Out> {
    query: Query<'s, S, D>,
    _out: PhantomData<fn() -> Out>,
}

impl<'s, S: QuerySource, D: PgDocument + HasFields> Query<'s, S, D> {
    /// Returns the chosen fields of each match instead of the document: one field
    /// (`|f| f.name`, read as its type) or a tuple of up to eight (`|f| (f.name,
    /// f.total)`, read as a tuple).
    pub fn select<Sel: Selection<D>>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Sel,
    ) -> Selected<'s, S, D, Sel::Output> {
        let sel = f(D::fields_at(Base::root()));
        let shape = if Sel::SINGLE {
            Shape::Single
        } else {
            Shape::Array
        };
        self.shaped(shape_expr(&sel.paths(), shape))
    }

    /// Returns each match as an `Out` deserialized from an object of the chosen fields
    /// (`|f| (f.name, f.total)`), keyed by each field's JSON key: name `Out`'s fields
    /// like them (or rename them with serde).
    pub fn select_into<Out: DeserializeOwned, Sel: Selection<D>>(
        self,
        f: impl FnOnce(D::Fields<D>) -> Sel,
    ) -> Selected<'s, S, D, Out> {
        let sel = f(D::fields_at(Base::root()));
        self.shaped(shape_expr(&sel.paths(), Shape::Object))
    }

    fn shaped<Out>(mut self, expr: String) -> Selected<'s, S, D, Out> {
        self.spec.shape = Some(expr);
        Selected {
            query: self,
            _out: PhantomData,
        }
    }
}

impl<S: QuerySource, D: PgDocument + HasFields, Out: DeserializeOwned> Selected<'_, S, D, Out> {
    /// The SQL this query runs (for `EXPLAIN` and logs).
    pub fn to_sql(&self) -> String {
        self.query.to_sql()
    }

    /// The selected values of every match.
    pub async fn to_list(self) -> Result<Vec<Out>> {
        let rows = self.query.rows().await?;
        rows.iter().map(decode_shape::<D, Out>).collect()
    }

    /// The selected values of the first match, if any.
    pub async fn first(mut self) -> Result<Option<Out>> {
        self.query.spec.take = Some(1);
        Ok(self.to_list().await?.into_iter().next())
    }

    /// The selected values of the only match: `Ok(None)` for none,
    /// [`Error::NotSingle`] for more than one.
    pub async fn single(mut self) -> Result<Option<Out>> {
        self.query.spec.take = Some(2);
        let mut found = self.to_list().await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(Error::NotSingle {
                document_type: D::DOCUMENT_TYPE,
            }),
        }
    }
}
