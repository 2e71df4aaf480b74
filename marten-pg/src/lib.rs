//! PostgreSQL backend of marten: [`DocumentStore`], sessions, schema management and the
//! pipelined unit of work. Use it through the `marten` facade crate.

#![warn(missing_docs)]

mod column_type;
mod connection;
pub mod daemon;
pub mod documents;
mod error_map;
mod event_tenant;
pub mod events;
mod health;
mod id;
mod json;
#[doc(hidden)]
pub mod private;
pub mod projections;
pub mod query;
pub mod schema;
pub mod session;
mod sql_lexer;
mod status;
mod store;
mod stream_key;
pub mod subscriptions;
pub mod tables;
mod tenancy;
mod tenant_key;
mod trace;
mod unit_of_work;
mod validate;
mod xid8;

pub use column_type::ColumnType;
pub use connection::{AfterConnect, AfterConnectFuture, Pooler, SslMode, TlsBackend, WriteToken};
/// The `deadpool_postgres` the store's pools are made with (for
/// [`DocumentStoreBuilder::pool`]).
pub use deadpool_postgres;
pub use documents::{
    BasicWrite, BulkMode, BulkOptions, DocumentStorage, NumericStorage, NumericWrite, OffStorage,
    OptimisticStorage, PgDocument, PgVersion, WriteOf,
};
pub use events::{
    EventPage, EventTypes, PendingEvent, Position, StreamRange, TagQuery, UnknownEvents,
};
pub use health::{Health, HealthCheck, HealthFailure, ProjectionHealth};
#[doc(hidden)]
pub use id::PgNewtype;
pub use id::{HiLoId, PgId};
pub use json::{JsonRef, RawJson};
pub use projections::{EventProjection, Lifecycle, OwnedDocuments, ProjectedOps};
pub use query::{
    BatchItem, BatchResults, CompiledOutput, CompiledQuery, Included, Including, Page, Query,
    QueryBatch, QuerySpec, Selected, SqlParams,
};
pub use schema::{AutoCreate, PatchOptions, SchemaPatch};
pub use session::{
    Boundary, DirtyTrackedSession, DirtyTracking, EventQuery, Events, IdentityMap, IdentitySession,
    Lightweight, LightweightSession, NewIds, Postgres, QuerySession, QuerySource, ReplicaReads,
    Session, SessionOptions, Tracking, Writing,
};
pub use status::ProjectionStatus;
pub use store::{CompiledQueryStats, DocumentStore, DocumentStoreBuilder};
pub use tenancy::{TenantDaemons, TenantedStore, TenantedStoreBuilder};
/// The `tokio_postgres` the store connects with (its `Config`, `Client`).
pub use tokio_postgres;
