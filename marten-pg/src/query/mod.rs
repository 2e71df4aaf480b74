//! Typed document queries: `session.query::<T>()`.
//!
//! This module declares its parts and re-exports their public items under
//! `marten_pg::query`:
//! - `spec`: [`QuerySpec`], a query's definition (filters, order, skip, take);
//! - `statement`: the SELECT and count statements of a spec;
//! - `params`: [`param`] and [`SqlParams`], the typed parameters of `where_sql`;
//! - `render`: a filter's syntax tree as parameterized SQL;
//! - `rows`: decoding result rows into documents;
//! - `run`: [`Query`], running or streaming a spec on a session, its aggregates, and
//!   [`Page`];
//! - `select`: [`Selected`], a query returning some fields of each match;
//! - `include`: [`Including`], a query that also loads the documents its matches refer to;
//! - `batch`: [`QueryBatch`], several queries in one round trip;
//! - `source`: [`QuerySource`], the sessions a query runs on (sealed);
//! - `condition`: a filter as the condition of a patch or a delete by filter.
//!
//! May use: the store (its catalog, to make sure tables exist), documents, connection,
//! error map; sessions implement [`QuerySource`] and sit above.

mod batch;
pub(crate) mod condition;
mod include;
mod params;
pub(crate) mod render;
mod rows;
mod run;
mod select;
pub(crate) mod source;
mod spec;
mod statement;

pub use batch::{BatchItem, BatchResults, QueryBatch};
pub use include::{Included, Including};
pub use params::{param, SqlParams};
pub use run::{Page, Query};
pub use select::Selected;
pub use source::QuerySource;
pub use spec::QuerySpec;

#[cfg(test)]
mod tests;
