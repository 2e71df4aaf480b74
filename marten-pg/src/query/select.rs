//! [`Selected`]: a [`Query`] returning some fields of each match instead of the whole
//! document — `select(|f| (f.name, f.total))` reads tuples, `select(|f| f.name)` one
//! field's values, `select_into::<S>(..)` a `Deserialize` struct built with
//! `jsonb_build_object` of the chosen fields (keyed by their JSON keys). Only the chosen
//! values are sent and deserialized (`select` and `select_into` are `Query`'s methods, in
//! `run`). Uses `run` and `rows`.

use std::marker::PhantomData;

use marten_core::query::HasFields;
use marten_core::{Error, Result};
use serde::de::DeserializeOwned;

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

impl<'s, S: QuerySource, D, Out> Selected<'s, S, D, Out> {
    /// The query, returning what its spec's shape selects.
    pub(super) fn new(query: Query<'s, S, D>) -> Self {
        Selected {
            query,
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
        self.query.spec.at_most(1);
        Ok(self.to_list().await?.into_iter().next())
    }

    /// The selected values of the only match: `Ok(None)` for none,
    /// [`Error::NotSingle`] for more than one.
    pub async fn single(mut self) -> Result<Option<Out>> {
        self.query.spec.at_most(2);
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
