//! The projection engine's backend-neutral parts: what projecting events into documents
//! needs that no database is involved in. The store-wide cache of inline aggregate
//! documents ([`cache`]); the slicing of an async projection's batch into per-document
//! slices dealt to workers, and the write each folded slice needs ([`slice`](mod@slice)); the
//! daemon's retry backoff and poison policy ([`poison`]); which shard of a sharded
//! projection an id belongs to ([`shard`]); the merge of the stream
//! versions an inline save's projections require ([`requirements`]); what a daemon
//! runner does after each step ([`runner`]); the planners of inline projections
//! ([`inline`]); an async aggregate's events in its stream's version order
//! ([`stream_order`]). A backend adds the statements, the loads and the tasks.

pub mod cache;
pub mod inline;
pub mod poison;
pub mod requirements;
pub mod runner;
pub mod shard;
pub mod slice;
pub mod stream_order;

pub use cache::{AggregateCache, CacheKey, CacheUpdate, Cached};
pub use poison::{backoff, on_failure, FailureAction, PoisonPolicy};
pub use requirements::{assertion, merge, Assertion, Merge, Required};
pub use slice::{deal, decide, group, try_group, Slice, SliceWrite};
