//! Typed document queries: `session.query::<T>()`.
//!
//! This module declares its parts and re-exports their public items under
//! `marten_pg::query`:
//! - `spec`: [`QuerySpec`], a query's definition (filters, order, skip, take);
//! - `statement`: the SELECT and count statements of a spec;
//! - `params`: [`param`] and [`SqlParams`], the typed parameters of `where_sql`;
//! - `search`: full-text searches (`search`, `phrase_search`, `web_search`) as filters;
//! - `render`: a filter's syntax tree as parameterized SQL;
//! - `rows`: decoding result rows into documents;
//! - `run`: [`Query`], running or streaming a spec on a session, its aggregates, and
//!   [`Page`];
//! - `select`: [`Selected`], a query returning some fields of each match;
//! - `include`: [`Including`], a query that also loads the documents its matches refer to;
//! - `batch`: [`QueryBatch`], several queries in one round trip;
//! - `collect`: a spec's statement parameters without its text, and its shape's key;
//! - `compiled`: [`CompiledQuery`], a query type rendered once and run with new values;
//! - `source`: [`QuerySource`], the sessions a query runs on (sealed);
//! - `condition`: a filter as the condition of a patch or a delete by filter;
//! - `deleted`: which rows of a soft-deleted type a statement matches.
//!
//! May use: the store (its catalog, to make sure tables exist), documents, connection,
//! error map; sessions implement [`QuerySource`] and sit above.

mod batch;
mod collect;
mod compiled;
pub(crate) mod condition;
pub(crate) mod deleted;
mod include;
mod params;
pub(crate) mod render;
mod rows;
mod run;
mod search;
mod select;
pub(crate) mod source;
mod spec;
mod statement;

pub use batch::{BatchItem, BatchResults, QueryBatch};
pub(crate) use compiled::run_compiled;
pub use compiled::{
    CompiledOutput, CompiledQuery, Count, Exists, First, Returns, Single, ToList, ToPage,
};
pub use include::{Included, Including};
pub use params::{param, SqlParams};
pub use run::{Page, Query};
pub use select::Selected;
pub use source::QuerySource;
pub use spec::QuerySpec;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod collect_tests;
