#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

extern crate self as marten;

pub use marten_core::concurrency;
pub use marten_core::{
    Aggregate, AggregateId, AnyEvent, Apply, ApplyError, ConcurrencyMode, ConflictKind,
    DatabaseError, Document, DocumentId, DocumentMetadata, Error, Event, EventEnvelope, EventTag,
    IdKey, Identities, Rejection, RejectionKind, Result, SchemaDifference, SoftDeleted, StreamId,
    StreamIdentity, StreamState, Tag, Tenancy, TenantId, TlsFailure, MAX_ID_BYTES,
};
pub use marten_derive::{apply, Aggregate, Document, DocumentId, Event, Queryable, Tag};
pub use marten_pg::Postgres;
/// The connection libraries the store uses, re-exported so a caller's pool
/// ([`DocumentStoreBuilder::pool`]) and config are of the same versions.
pub use marten_pg::{deadpool_postgres, tokio_postgres};
pub use marten_pg::{
    AfterConnect, AfterConnectFuture, Pooler, ReplicaReads, SslMode, TlsBackend, WriteToken,
};
pub use marten_pg::{
    AutoCreate, BulkMode, BulkOptions, ColumnType, DirtyTrackedSession, DirtyTracking,
    DocumentStore, DocumentStoreBuilder, EventPage, EventProjection, EventQuery, Events, HiLoId,
    IdentityMap, IdentitySession, Lifecycle, Lightweight, LightweightSession, NewIds,
    OwnedDocuments, PatchOptions, PendingEvent, PgDocument, Position, ProjectedOps, QuerySession,
    SchemaPatch, Session, SessionOptions, StreamRange, Tracking, UnknownEvents, Writing,
};
pub use marten_pg::{
    BatchItem, BatchResults, Included, Including, Page, Query, QueryBatch, QuerySpec, Selected,
};
pub use marten_pg::{CompiledQuery, CompiledQueryStats};
pub use marten_pg::{Health, HealthCheck, HealthFailure, ProjectionHealth, ProjectionStatus};
pub use marten_pg::{TenantDaemons, TenantedStore, TenantedStoreBuilder};

/// The sessions as marten-core defines them, generic over their backend: what a
/// [`Session`] is made of and the traits a backend implements ([`Postgres`] here).
pub mod session {
    pub use marten_core::session::{
        Backend, CompiledQueryBackend, DocumentBackend, EventMeta, Loaded, Parts, PatchBackend,
        Patching, QueryBackend, Session,
    };
}

/// Patching stored documents in place (see the README, "Patching"): the operations as
/// data and the traits bounding them by field type.
pub mod patch {
    pub use marten_core::patch::{
        Incrementable, ListField, Patch, PatchOp, PatchTarget, Unsettable,
    };
}
pub use marten_pg::{Boundary, EventTypes, TagQuery};

/// The async projection daemon.
pub mod daemon {
    pub use marten_core::projection::shard::{shard_of, Shard};
    pub use marten_pg::daemon::{
        active_projection_version, drop_old_projection_versions,
        drop_old_projection_versions_named, rebuild, rebuild_tenant, wait_for_non_stale, Daemon,
        DaemonHooks, DaemonOptions, NoHooks, PoisonPolicy, MAX_SHARDS,
    };
}

/// Subscriptions: consumers of events that are not projections (a broker, mail, an
/// outbox), run by the async daemon; see [`subscriptions::Subscription`].
pub mod subscriptions {
    pub use marten_pg::subscriptions::{
        DeliveryId, EventFilter, HandlerError, SqlStatement, Subscription, SubscriptionBatch,
        SubscriptionTx,
    };
}

/// A command line for a service's store, on `clap` (the `marten-cli` crate, behind the
/// `cli` feature): embed [`cli::Command`] in your parser and hand it to [`cli::run`].
#[cfg(feature = "cli")]
pub mod cli {
    pub use marten_cli::{
        clap, execute, progress_line, projections, projections_with, rebuild_until,
        rebuild_with_progress, run, schema, status, CliError, Command, ProjectionStatus,
        ProjectionsCommand, RebuildOutcome, SchemaCommand, STATUS_ATTEMPTS,
    };
}

/// The database harness of marten's own tests, for yours (the `marten-testing` crate,
/// behind the `testing` feature): [`testing::database_url`] finds a server
/// (`DATABASE_URL`, else the local default, else a throwaway cluster) and
/// [`testing::TestSchema`] gives each test a schema of its own, dropped afterwards.
#[cfg(feature = "testing")]
pub mod testing {
    pub use marten_testing::*;
}

/// The storage types a document's concurrency mode selects (see the README, "Modes as
/// types"), and the writes each mode offers as types: [`BasicWrite`](storage::BasicWrite)
/// for every mode, [`NumericWrite`](storage::NumericWrite) (adding the revision writes)
/// for numeric documents only.
pub mod storage {
    pub use marten_pg::{
        BasicWrite, DocumentStorage, NumericStorage, NumericWrite, OffStorage, OptimisticStorage,
        PgVersion, WriteOf,
    };
}

/// Typed query paths, filters and orders.
pub mod query {
    pub use marten_core::query::{
        Aggregation, AggregationOp, BackendParam, Collection, Comparable, ContainsOp, Field,
        Filter, FullTextSearch, HasFields, NumericField, OptionField, Order, Orderable, RawParam,
        TextField, ValueKind,
    };
    pub use marten_pg::query::param;
    pub use marten_pg::SqlParams;
}

/// Compiled queries (see the README, "Compiled queries"): what a [`CompiledQuery`]
/// returns ([`ToList`](compiled::ToList), [`First`](compiled::First),
/// [`Single`](compiled::Single), [`Count`](compiled::Count), [`Exists`](compiled::Exists),
/// [`ToPage`](compiled::ToPage)).
pub mod compiled {
    pub use marten_pg::query::{
        CompiledOutput, Count, Exists, First, Returns, Single, ToList, ToPage,
    };
}

/// The projection engine's pure fold over owned state.
pub mod aggregate {
    pub use marten_core::aggregate::fold;
}

/// Everything a typical program needs: `use marten::prelude::*;`.
pub mod prelude {
    pub use crate::Queryable;
    pub use crate::{
        apply, Aggregate, AutoCreate, BulkMode, CompiledQuery, Document, DocumentId, DocumentStore,
        Error, Event, EventEnvelope, IdentitySession, Lifecycle, LightweightSession, NewIds,
        PendingEvent, Position, QuerySession, ReplicaReads, SessionOptions, StreamId,
        StreamIdentity, StreamRange, Tag, TagQuery, TenantId, TenantedStore, WriteToken,
    };
    pub use uuid::Uuid;
}

/// Re-exports of dependencies users' types need.
pub use {serde, serde_json, time, uuid};

/// Paths used by code that `#[derive(Document)]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use marten_core::aggregate::support;
    pub use marten_core::concurrency;
    pub use marten_core::query;
    pub use marten_core::IndexSpec;
    pub use marten_core::Tenancy;
    pub use marten_core::{
        plain_tag, Aggregate, AggregateId, AnyEvent, Apply, ApplyError, Document, DocumentId,
        Event, EventDecoder, EventEnvelope, EventTag, Identities, SoftDeleted, Tag,
    };
    pub use marten_pg::{
        ColumnType, DocumentStorage, NumericStorage, OffStorage, OptimisticStorage, PgDocument,
    };
    pub use std::sync::OnceLock;

    // For `#[derive(DocumentId)]`.
    pub use bytes::BytesMut;
    pub use marten_core::newtype::Newtype;
    pub use marten_core::StreamId;
    pub use marten_pg::{HiLoId, PgId, PgNewtype};
    pub use postgres_types;
    pub use serde;

    /// Fails to compile, at the id field's type, when it is not a supported id type.
    pub fn assert_document_id<T: DocumentId>() {}

    /// Fails to compile, at the id field's type, when it is not a stream id type.
    pub fn assert_aggregate_id<T: AggregateId>() {}
}
