//! A sharded projection's shard count: where it is recorded (the count row, see
//! [`crate::tables::progression`]), reading it, and changing it.
//!
//! Why a shard projects each of its events exactly once, gap-safe: a shard is a slot, and
//! its runner does what a whole projection's does with one difference. It reads the same
//! gap-safe pages after its own position (never past an event whose transaction may still
//! commit before it), keeps the page's events of its shard (a pure function of the event:
//! the stable hash of its stream id, or of the ids of the documents it slices to, the same
//! in every process) and moves its position over the whole page in the batch's one
//! compare-and-set of position and epoch. So each of the shard's events lies in exactly
//! one committed batch of the shard (a batch commits from the position it started at, for
//! the epoch its runner claimed, or writes nothing), and an event of another shard is
//! passed over only by shards that do not own it. Lock, epoch and takeover are the
//! slot's.
//!
//! Every shard's slot is claimed only while the recorded count is its own, and a whole
//! projection's only while none other is recorded (see [`super::ownership`]). A runner
//! that finds another count recorded changes it to its own ([`settle`]) only when every
//! slot of the old count stands at the same position (per tenant, with conjoined
//! events): the new slots then start there, and every event before it was projected once
//! by the old shards and every event after it will be by the new ones. Otherwise the
//! change is refused with [`Error::ShardCountChanged`]: shards at different positions
//! cannot be split anew without projecting some events twice or never (drain the old
//! count, or rebuild).
//!
//! The change is one transaction that first takes the projection's rebuild lock (so it
//! never falls between a rebuild's read of the count and its reset), then locks the count row (a shard's claim holds
//! it `FOR SHARE`, so claims of the old count wait or find the new one), then takes
//! every old slot (its epoch moves; its position is read under the lock, after any batch
//! in flight committed or rolled back), moves the epoch of every row of the projection,
//! puts the new slots at the old position and records the new count. A runner of the
//! old count still working has its next commit rejected by the epoch, as after a
//! takeover.
//!
//! Owns: the count row's name, its reads and the change. May use: the connection layer,
//! the daemon's tables, its slots and tenants, the store.

use marten_core::projection::shard::aligned;
use marten_core::tenant::DEFAULT_TENANT;
use marten_core::{Error, Result, Tenancy, TenantId};
use tokio_postgres::Client;

use super::options::MAX_SHARDS;
use super::progression;
use super::slot::Slot;
use super::tenants::tenants_on;
use crate::connection::{Conn, Db, Request};
use crate::error_map::{map_db_error, Failed};
use crate::events::Position;
use crate::store::DocumentStore;
use crate::tables::progression::{
    COUNT_FOR_UPDATE, COUNT_LOCK, COUNT_ROW_SUFFIX, FAMILY_BUMP, FAMILY_TENANTS, REBUILD_LOCK,
    SET_COUNT, SLOT_AT, SLOT_LOCK,
};
use crate::xid8::Xid8;

/// The name of `projection`'s count row.
pub(super) fn count_row(projection: &str) -> String {
    format!("{projection}{COUNT_ROW_SUFFIX}")
}

fn failed(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| map_db_error(e, Failed::Other(what))
}

/// A count read from a count row's `last_seq` (1 for none).
fn count_of(row: Option<tokio_postgres::Row>, projection: &str) -> Result<u32> {
    let Some(row) = row else { return Ok(1) };
    valid_count(projection, progression::position(&row)?.sequence)
}

/// `recorded`, the count stored in `projection`'s count row, when the daemon can run it
/// (1 to [`MAX_SHARDS`]; the daemon records no other): else the row was edited by hand,
/// [`Error::CorruptData`] naming it.
fn valid_count(projection: &str, recorded: i64) -> Result<u32> {
    match u32::try_from(recorded) {
        Ok(count @ 1..=MAX_SHARDS) => Ok(count),
        _ => Err(Error::CorruptData {
            owner: format!("projection {projection}"),
            id: Some(count_row(projection)),
            detail: format!("recorded shard count {recorded} is not between 1 and {MAX_SHARDS}"),
        }),
    }
}

/// The shard count recorded for `projection` (1: none), read on the lock's connection.
pub(super) async fn recorded_count(lock: &Client, projection: &str) -> Result<u32> {
    let row = lock
        .query_opt(progression::POSITION, &[&count_row(projection)])
        .await
        .map_err(failed("reading a projection's shard count"))?;
    count_of(row, projection)
}

/// [`recorded_count`] on a pooled connection.
pub(crate) async fn recorded_count_on(db: Db<'_>, projection: &str) -> Result<u32> {
    let row = db
        .query_opt(progression::POSITION, &[&count_row(projection)])
        .await
        .map_err(failed("reading a projection's shard count"))?;
    count_of(row, projection)
}

/// [`recorded_count_on`], locking the count row until the transaction on `db` ends.
pub(super) async fn locked_count_on(db: Db<'_>, projection: &str) -> Result<u32> {
    let row = db
        .query_opt(COUNT_FOR_UPDATE, &[&count_row(projection)])
        .await
        .map_err(failed("locking a projection's shard count"))?;
    count_of(row, projection)
}

/// Records `configured` as `projection`'s shard count, moving its slots (see the module
/// doc), in one transaction within the store's request timeout. Nothing changes if the
/// count is `configured` already.
pub(super) async fn settle(
    store: &DocumentStore,
    projection: &'static str,
    configured: u32,
) -> Result<()> {
    progression::ensure_tables(store).await?;
    let conjoined = store.events_tenancy() == Tenancy::Conjoined;
    let key = progression::rebuild_key(store.schema(), projection);
    let mut conn = Conn::new();
    let req = conn.request(store).await?;
    req.transaction_within(store, |req| {
        Box::pin(change_count(req, (projection, &key), configured, conjoined))
    })
    .await
}

/// The change's transaction (rolled back by the caller when it fails). It first takes
/// the projection's rebuild lock (`key`) exclusively, as a rebuild does: a rebuild that
/// read no count row (the projection never sharded) locked none, and a change committed
/// between its read and its reset would start the new shards at the old position while
/// the rebuild deleted the documents and reset only the whole projection's slot.
async fn change_count(
    req: &mut Request<'_>,
    (projection, key): (&'static str, &str),
    configured: u32,
    conjoined: bool,
) -> Result<()> {
    req.set_in_transaction(true);
    let db = req.client();
    let what = failed("changing a projection's shard count");
    db.batch_execute("BEGIN").await.map_err(&what)?;
    db.execute(REBUILD_LOCK, &[&key]).await.map_err(&what)?;
    let counted = count_row(projection);
    let row = db.query_one(COUNT_LOCK, &[&counted]).await.map_err(&what)?;
    let recorded = valid_count(projection, row.try_get(0).map_err(&what)?)?;
    if recorded != configured {
        let mut starts = Vec::new();
        for tenant in tenants_of(db, projection, conjoined).await? {
            let positions = old_positions(db, projection, tenant.as_ref(), recorded).await?;
            let Some(start) = aligned(&positions, Position::START) else {
                let at = (tenant.as_ref(), positions.as_slice());
                tracing::debug!(?positions, "old shards at different positions");
                return Err(unaligned(projection, recorded, configured, at));
            };
            starts.push((tenant, start));
        }
        db.execute(FAMILY_BUMP, &[&projection])
            .await
            .map_err(&what)?;
        for (tenant, start) in &starts {
            for slot in Slot::all(projection, tenant.as_ref(), configured) {
                let (tx, seq) = (Xid8(start.transaction_id), start.sequence);
                db.execute(SLOT_AT, &[&slot.name(), &slot.tenant_column(), &tx, &seq])
                    .await
                    .map_err(&what)?;
            }
        }
        let count = i64::from(configured);
        db.execute(SET_COUNT, &[&counted, &count])
            .await
            .map_err(&what)?;
        tracing::info!(projection, recorded, configured, "shard count changed");
    }
    db.batch_execute("COMMIT").await.map_err(&what)?;
    req.set_in_transaction(false);
    Ok(())
}

/// The tenants whose slots a count change moves: every event's (`None`), or with
/// conjoined events each tenant with streams or with a slot of the projection.
async fn tenants_of(
    db: Db<'_>,
    projection: &str,
    conjoined: bool,
) -> Result<Vec<Option<TenantId>>> {
    if !conjoined {
        return Ok(vec![None]);
    }
    let mut tenants = tenants_on(db).await?;
    let rows = db
        .query(FAMILY_TENANTS, &[&projection])
        .await
        .map_err(failed("reading a projection's tenants"))?;
    for row in rows {
        let stored: &str = row
            .try_get(0)
            .map_err(failed("reading a projection's tenants"))?;
        if let (false, Ok(t)) = (stored == DEFAULT_TENANT, TenantId::new(stored)) {
            if !tenants.contains(&t) {
                tenants.push(t);
            }
        }
    }
    Ok(tenants.into_iter().map(Some).collect())
}

/// Takes the slots of `projection` split `recorded` ways over `tenant`'s events and
/// returns their positions.
async fn old_positions(
    db: Db<'_>,
    projection: &'static str,
    tenant: Option<&TenantId>,
    recorded: u32,
) -> Result<Vec<Position>> {
    let mut positions = Vec::new();
    for slot in Slot::all(projection, tenant, recorded) {
        let row = db
            .query_one(SLOT_LOCK, &[&slot.name(), &slot.tenant_column()])
            .await
            .map_err(failed("reading a shard's position"))?;
        positions.push(progression::position(&row)?);
    }
    Ok(positions)
}

/// The refusal of a count change whose old slots stand at different positions.
fn unaligned(
    projection: &str,
    recorded: u32,
    configured: u32,
    (tenant, positions): (Option<&TenantId>, &[Position]),
) -> Error {
    let whose = tenant.map_or(String::new(), |t| format!(" of tenant {t}"));
    let at: Vec<String> = positions.iter().map(|p| p.sequence.to_string()).collect();
    Error::ShardCountChanged {
        projection: projection.to_owned(),
        recorded,
        configured,
        reason: format!(
            "the {recorded} old slot(s){whose} stand at different positions (after sequences \
             {}); drain them (run the old count until every shard has caught up with no \
             appends in between) or rebuild the projection, then start this count again",
            at.join(", ")
        ),
    }
}
