//! Where a live fold starts: the aggregate's stored document (an inline aggregate's
//! document, or a live aggregate's snapshot) when there is one the fold may build on.

use marten_core::{Aggregate, Error, Result, TenantId};
use tracing::warn;

use crate::connection::Db;
use crate::documents::load;
use crate::documents::PgDocument;
use crate::error_map::reading_documents as reading;
use crate::json::JsonRef;
use crate::projections::snapshot::{SnapshotPolicy, Tip};
use crate::projections::ProjectionCatalog;
use crate::tenant_key::TenantKey;

/// A stored aggregate document a fold starts from.
pub(super) struct Stored<A> {
    pub(super) doc: A,
    pub(super) json: Vec<u8>,
    /// The stream version it was folded up to.
    pub(super) version: i64,
}

/// What a live fold of an aggregate with a snapshot policy starts from: the snapshot, if
/// there is one it may build on, the sequence of its own event (the event at its
/// version, as its write recorded it; `None`: a row no snapshot write wrote, not to be
/// built on), and the stream's last event up to the fold's last version, read in the
/// same statement snapshot (`None`: no event).
pub(super) struct Start<A> {
    pub(super) stored: Option<Stored<A>>,
    pub(super) sequence: Option<i64>,
    pub(super) tip: Option<Tip>,
}

impl<A> Default for Start<A> {
    fn default() -> Self {
        Start {
            stored: None,
            sequence: None,
            tip: None,
        }
    }
}

/// The stored document of aggregate `id` (of `tenant`, a conjoined type), if it exists,
/// is not past `to_version`. `snapshot`: it is a live aggregate's snapshot, and one that
/// does not deserialize (the aggregate's shape changed since it was stored) is skipped
/// with a warning: the fold then starts from the first event. An inline aggregate's
/// document that does not deserialize is [`Error::Deserialize`], as it is to the save
/// that would plan from it. A stored version no event can follow is
/// [`Error::CorruptData`].
pub(super) async fn stored<A: Aggregate + PgDocument>(
    store: &ProjectionCatalog,
    client: Db<'_>,
    tenant: Option<&TenantId>,
    id: &A::Id,
    to_version: i64,
    snapshot: bool,
) -> Result<Option<Stored<A>>> {
    store.ensure::<A>().await?;
    let loaded = match load::load_one::<A>(client, tenant, id).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return Ok(None),
        Err(Error::Deserialize { source, .. }) if snapshot => {
            skipped::<A>(id, &source);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let version = loaded.doc.version();
    checked_version::<A>(id, version)?;
    Ok((version <= to_version).then_some(Stored {
        doc: loaded.doc,
        json: loaded.json,
        version,
    }))
}

/// The snapshot of live aggregate `id` (of `tenant`, a conjoined type) under `policy`, as
/// [`stored`] reads it, with the sequence of its own event, and the stream's tip at or
/// below `to_version`, in one statement (`conjoined_events`: the tip among the tenant's
/// events). Makes sure of the aggregate's snapshot table first (its snapshot column).
pub(super) async fn snapshot<A: Aggregate + PgDocument>(
    store: &ProjectionCatalog,
    client: Db<'_>,
    policy: &SnapshotPolicy,
    conjoined_events: bool,
    tenant: Option<&TenantId>,
    id: &A::Id,
    to_version: i64,
) -> Result<Start<A>> {
    let (table, migrate) = policy.table;
    store.ensure_erased(table, migrate).await?;
    // The snapshot table covers the aggregate's own (see `SnapshotPolicy::ensure`).
    store.catalog().mark_ensured([std::any::TypeId::of::<A>()]);
    let tenant = TenantKey::of(tenant).filter(|_| crate::documents::conjoined::<A>());
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match &tenant {
        Some(t) => vec![id, t, &to_version],
        None => vec![id, &to_version],
    };
    let row = client
        .query_one(policy.start(conjoined_events), &params)
        .await
        .map_err(reading::<A>)?;
    let json: Option<JsonRef<'_>> = row.try_get(0).map_err(reading::<A>)?;
    let own: Option<i64> = row.try_get(1).map_err(reading::<A>)?;
    let version: Option<i64> = row.try_get(2).map_err(reading::<A>)?;
    let sequence: Option<i64> = row.try_get(3).map_err(reading::<A>)?;
    let tip = version
        .zip(sequence)
        .map(|(version, sequence)| Tip { version, sequence });
    let none = Start {
        stored: None,
        sequence: None,
        tip,
    };
    let Some(json) = json else {
        return Ok(none);
    };
    let doc: A = match serde_json::from_slice(json.0) {
        Ok(doc) => doc,
        Err(source) => {
            skipped::<A>(id, &source);
            return Ok(none);
        }
    };
    let version = doc.version();
    checked_version::<A>(id, version)?;
    let stored = (version <= to_version).then(|| Stored {
        doc,
        json: json.0.to_vec(),
        version,
    });
    Ok(Start {
        stored,
        sequence: own,
        tip,
    })
}

/// Logs a snapshot of `id` that does not deserialize, passed over.
fn skipped<A: Aggregate + PgDocument>(id: &A::Id, source: &serde_json::Error) {
    warn!(
        document_type = A::DOCUMENT_TYPE,
        id = %id,
        error = %source,
        "aggregate snapshot does not deserialize: folding its stream from the start"
    );
}

/// [`Error::CorruptData`] for a stored `version` of `id` no event can follow.
fn checked_version<A: Aggregate + PgDocument>(id: &A::Id, version: i64) -> Result<()> {
    if version < 0 || version == i64::MAX {
        return Err(Error::CorruptData {
            owner: A::DOCUMENT_TYPE.to_owned(),
            id: Some(id.to_string()),
            detail: format!(
                "its stored version {version} is not a stream version events can follow"
            ),
        });
    }
    Ok(())
}
