//! Snapshots of live aggregates: the policy registered per aggregate type (a snapshot
//! every `n` events), the write of one snapshot after a fold, and the deletes of a
//! deleted stream's snapshots.
//!
//! A snapshot is the aggregate's own document (its version field is the stream version
//! it was folded up to): the fold of the whole stream, events `1..=version`, none
//! skipped. The live fold starts from it and applies only the later events (see
//! `aggregate::start`). A fold of the whole stream that passed `n` events beyond the
//! stored snapshot, skipping none, hands back a [`PendingSnapshot`], which the session
//! writes as a statement of its own after the read, outside any transaction: the
//! statement writes only where the event it was folded up to is committed and the
//! stream is still the one the fold read, and records that event's sequence, which a
//! later fold requires of the first event it reads (see [`crate::tables::snapshots`]),
//! so a snapshot is never ahead of the events nor of another incarnation of its stream,
//! nor built on by another incarnation (one started again after a delete that left the
//! row behind), and its failure is logged, never returned (a read never fails for a
//! snapshot). A stream's delete deletes its snapshots in the same transaction
//! ([`queue_deletes`]), and so the documents inline single-stream aggregates keep of it
//! ([`StreamDocuments`]).

use std::sync::Arc;

use marten_core::{Aggregate, AggregateId, StreamId, Tenancy};
use tokio_postgres::types::ToSql;
use tracing::{debug, warn};

use crate::connection::{Db, SqlText};
use crate::documents::{document_target, PgDocument};
use crate::events::stream_id::StreamKey;
use crate::events::EventTenant;
use crate::json::RawJson;
use crate::projections::ProjectionRegistry;
use crate::schema::MigrateFn;
use crate::tables::snapshots::{snapshot_delete, snapshot_start, snapshot_upsert};
use crate::tenant_key::TenantKey;
use crate::unit_of_work::{OpList, Operation, SessionState, Target};

/// How often a live aggregate type is snapshotted, and the statements that read, write
/// and delete its snapshots. Each statement comes twice: with single-tenant events, then
/// with conjoined events.
pub(crate) struct SnapshotPolicy {
    /// The aggregate's Rust type name, for configuration errors.
    pub(crate) aggregate: &'static str,
    /// A snapshot is written once a fold passes this many events beyond the last one.
    pub(crate) every: u32,
    /// The aggregate's table with the snapshot column, and the key the store records it
    /// under once made sure of (see [`crate::documents::snapshot_migrate_fn`]).
    pub(crate) table: (std::any::TypeId, MigrateFn),
    /// The fold's first read: the snapshot and the stream's tip (see [`snapshot_start`]).
    start: [String; 2],
    /// The write of a snapshot (see [`snapshot_upsert`]).
    upsert: [String; 2],
    /// The snapshot rows of a deleted stream, deleted with it.
    rows: Arc<StreamDocuments>,
}

impl SnapshotPolicy {
    /// Makes sure of the aggregate's snapshot table (`aggregate` its type), with `conn`
    /// set aside over a caller's pool, and records the aggregate's own table as made sure
    /// of with it: the snapshot table is that table and its snapshot column, and a later
    /// plain use of the type must not make it again without the column (in
    /// [`AutoCreate::All`](crate::AutoCreate::All), which drops and recreates).
    pub(crate) async fn ensure(
        &self,
        catalog: &crate::schema::Catalog,
        conn: &mut crate::connection::Conn,
        aggregate: std::any::TypeId,
    ) -> marten_core::Result<()> {
        let (table, migrate) = self.table;
        catalog.ensure_for(conn, table, migrate).await?;
        catalog.mark_ensured([aggregate]);
        Ok(())
    }

    /// A snapshot of `A` every `every` events.
    pub(crate) fn of<A: Aggregate + PgDocument>(every: u32) -> Self {
        let (table, id_type) = (A::TABLE_NAME, <A::Id as crate::PgId>::SQL_TYPE);
        let docs = A::TENANCY == Tenancy::Conjoined;
        let scope = crate::documents::storage::scope::<A>();
        SnapshotPolicy {
            aggregate: std::any::type_name::<A>(),
            every,
            table: crate::documents::snapshot_migrate_fn::<A>(),
            start: [false, true].map(|events| snapshot_start(table, id_type, scope, events)),
            upsert: [false, true].map(|events| snapshot_upsert(table, id_type, docs, events)),
            rows: Arc::new(StreamDocuments::of::<A>()),
        }
    }

    /// Whether a fold from the snapshot at `from` (0: none) to the stream version `to`
    /// is due a new snapshot.
    pub(crate) fn due(&self, from: i64, to: i64) -> bool {
        to.saturating_sub(from) >= i64::from(self.every)
    }

    /// The fold's first read with single-tenant (`false`) or conjoined events.
    pub(crate) fn start(&self, conjoined_events: bool) -> &str {
        &self.start[usize::from(conjoined_events)]
    }
}

/// The last event of a stream a fold's first statement read: its version and global
/// sequence, which no other event of any stream has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    /// The event's stream version.
    pub(crate) version: i64,
    /// The event's global sequence (`seq_id`).
    pub(crate) sequence: i64,
}

/// A snapshot a fold asks to be written: the aggregate's document at a stream version.
pub(crate) struct PendingSnapshot {
    pub(crate) policy: Arc<SnapshotPolicy>,
    pub(crate) conjoined_events: bool,
    pub(crate) id: Box<dyn ToSql + Send + Sync>,
    pub(crate) json: RawJson,
    pub(crate) version: i64,
    /// The stream's last event when the fold started: the write requires it still there.
    pub(crate) tip: Tip,
    /// The document's tenant (a conjoined aggregate type only).
    pub(crate) tenant: Option<TenantKey>,
    pub(crate) document_type: &'static str,
    pub(crate) stream: String,
}

impl PendingSnapshot {
    /// Writes the snapshot; a failure is logged as a warning, never returned.
    pub(crate) async fn write(self, client: Db<'_>) {
        let sql = &self.policy.upsert[usize::from(self.conjoined_events)];
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &*self.id,
            &self.json,
            &self.version,
            &self.tip.version,
            &self.tip.sequence,
        ];
        if let Some(t) = &self.tenant {
            params.push(t);
        }
        let written = client.execute(sql.as_str(), &params).await;
        match written {
            Ok(rows) => debug!(
                document_type = self.document_type,
                stream = %self.stream,
                version = self.version,
                written = rows == 1,
                "aggregate snapshot"
            ),
            Err(error) => warn!(
                document_type = self.document_type,
                stream = %self.stream,
                version = self.version,
                %error,
                "aggregate snapshot not written"
            ),
        }
    }
}

/// The document rows of a single-stream aggregate type keyed by a stream's id: a live
/// aggregate's snapshots, or an inline aggregate's projected documents. Both are the
/// fold of the stream they are keyed by, so a delete of the stream deletes them with it.
pub(crate) struct StreamDocuments {
    /// The aggregate's Rust type name: the order the deletes lock the tables in, and
    /// named in configuration errors.
    pub(crate) aggregate: &'static str,
    /// Whether the aggregate's documents are conjoined (one per tenant).
    pub(crate) conjoined: bool,
    /// The delete of a deleted stream's rows with single-tenant (`[0]`) or conjoined
    /// (`[1]`) events (see [`snapshot_delete`]).
    delete: [String; 2],
    /// The aggregate's document table, created before a delete of its rows.
    target: Target,
    /// Whether a stream id can be the aggregate's id (its rows are keyed by it).
    keyed_by: fn(&StreamId) -> bool,
    /// Forgets what a session holds of the document of a stream id (identity map, dirty
    /// tracking), once the delete committed.
    forget: fn(&StreamId, &mut SessionState),
}

impl StreamDocuments {
    /// The rows of aggregate `A` keyed by stream ids.
    pub(crate) fn of<A: Aggregate + PgDocument>() -> Self {
        let (table, id_type) = (A::TABLE_NAME, <A::Id as crate::PgId>::SQL_TYPE);
        let docs = A::TENANCY == Tenancy::Conjoined;
        StreamDocuments {
            aggregate: std::any::type_name::<A>(),
            conjoined: docs,
            delete: [
                snapshot_delete(table, id_type, docs, false),
                snapshot_delete(table, id_type, docs, true),
            ],
            target: document_target::<A>(),
            keyed_by: |id| <A::Id as AggregateId>::from_stream_id(id).is_some(),
            forget: |stream, state| {
                if let Some(id) = <A::Id as AggregateId>::from_stream_id(stream) {
                    let docs = state.doc_state::<A>();
                    docs.identity.remove(&id);
                    docs.tracked.remove(&id);
                }
            },
        }
    }
}

/// Queues on `queue`, after the delete of `stream` (of `tenant`) queued there, the delete
/// of the rows every aggregate type of `registry` keeps of it - the snapshots of live
/// aggregates with a policy, the documents of inline single-stream aggregates - so the
/// delete's transaction takes them too: a stream started again under the same id never
/// starts from a snapshot of the deleted one, and no read serves the deleted stream's
/// projected document.
pub(crate) fn queue_deletes(
    registry: &ProjectionRegistry,
    tenant: &EventTenant,
    stream: &StreamKey,
    queue: &mut OpList,
) {
    let snapshots = registry.snapshots.values().map(|p| &p.rows);
    let inline = registry.inline.iter().filter_map(|p| p.stream_documents());
    let mut rows: Vec<&Arc<StreamDocuments>> = snapshots
        .chain(inline)
        .filter(|r| (r.keyed_by)(&stream.0))
        .collect();
    // One order for every save: the tables are locked in it.
    rows.sort_unstable_by_key(|r| r.aggregate);
    rows.dedup_by(|a, b| Arc::ptr_eq(a, b));
    for rows in rows {
        queue.push_op(Box::new(StreamDocumentsDelete {
            rows: Arc::clone(rows),
            stream: stream.clone(),
            tenant: tenant.scope().cloned(),
        }));
    }
}

/// The delete of one aggregate type's rows of a deleted stream (see [`queue_deletes`]).
struct StreamDocumentsDelete {
    rows: Arc<StreamDocuments>,
    stream: StreamKey,
    /// The stream's tenant, with conjoined events.
    tenant: Option<String>,
}

impl Operation for StreamDocumentsDelete {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Built(&self.rows.delete[usize::from(self.tenant.is_some())])
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match &self.tenant {
            Some(t) => vec![&self.stream, t],
            None => vec![&self.stream],
        }
    }

    fn target(&self) -> Target {
        self.rows.target
    }

    fn committed(&self, state: &mut SessionState) {
        (self.rows.forget)(&self.stream.0, state);
    }
}
