//! Snapshots of live aggregates: the policy registered per aggregate type (a snapshot
//! every `n` events) and the write of one snapshot after a fold.
//!
//! A snapshot is the aggregate's own document (its version field is the stream version
//! it was folded up to). The live fold starts from it and applies only the later events
//! (see `aggregate::start`). A fold that passed `n` events beyond the stored snapshot
//! hands back a [`PendingSnapshot`], which the session writes as a statement of its own
//! after the read, outside any transaction: the statement writes only where the event it
//! was folded up to is committed, so a snapshot is never ahead of the events, and its
//! failure is logged, never returned (a read never fails for a snapshot).

use std::sync::Arc;

use marten_core::{Aggregate, Tenancy};
use tokio_postgres::types::ToSql;
use tracing::{debug, warn};

use crate::connection::Db;
use crate::documents::PgDocument;
use crate::json::RawJson;
use crate::tables::snapshots::snapshot_upsert;
use crate::tenant_key::TenantKey;

/// How often a live aggregate type is snapshotted, and the statement that writes it.
pub(crate) struct SnapshotPolicy {
    /// The aggregate's Rust type name, for configuration errors.
    pub(crate) aggregate: &'static str,
    /// A snapshot is written once a fold passes this many events beyond the last one.
    pub(crate) every: u32,
    /// The write with single-tenant events, then with conjoined events.
    upsert: [String; 2],
}

impl SnapshotPolicy {
    /// A snapshot of `A` every `every` events.
    pub(crate) fn of<A: Aggregate + PgDocument>(every: u32) -> Self {
        let (table, id_type) = (A::TABLE_NAME, <A::Id as crate::PgId>::SQL_TYPE);
        let docs = A::TENANCY == Tenancy::Conjoined;
        SnapshotPolicy {
            aggregate: std::any::type_name::<A>(),
            every,
            upsert: [
                snapshot_upsert(table, id_type, docs, false),
                snapshot_upsert(table, id_type, docs, true),
            ],
        }
    }

    /// Whether a fold from the snapshot at `from` (0: none) to the stream version `to`
    /// is due a new snapshot.
    pub(crate) fn due(&self, from: i64, to: i64) -> bool {
        to.saturating_sub(from) >= i64::from(self.every)
    }
}

/// A snapshot a fold asks to be written: the aggregate's document at a stream version.
pub(crate) struct PendingSnapshot {
    pub(crate) policy: Arc<SnapshotPolicy>,
    pub(crate) conjoined_events: bool,
    pub(crate) id: Box<dyn ToSql + Send + Sync>,
    pub(crate) json: RawJson,
    pub(crate) version: i64,
    /// The document's tenant (a conjoined aggregate type only).
    pub(crate) tenant: Option<TenantKey>,
    pub(crate) document_type: &'static str,
    pub(crate) stream: String,
}

impl PendingSnapshot {
    /// Writes the snapshot; a failure is logged as a warning, never returned.
    pub(crate) async fn write(self, client: Db<'_>) {
        let sql = &self.policy.upsert[usize::from(self.conjoined_events)];
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&*self.id, &self.json, &self.version];
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
