//! The projection engine's backend-neutral parts: what projecting events into documents
//! needs that no database is involved in. For now the store-wide cache of inline
//! aggregate documents ([`cache`]); a backend adds the statements that guard a save
//! planned from it.

pub mod cache;

pub use cache::{AggregateCache, CacheKey, CacheUpdate, Cached};
