//! Rebuilding a projection: reset its position, take it from any runner and delete its
//! dead letters and its documents in one transaction; a running daemon then replays it
//! from the first event. The replay meets every event again: one that still fails is
//! dead-lettered anew, one that no longer fails is applied, whichever way it is read (a
//! dead letter kept from an earlier run would leave its event out of an aggregate's read
//! of a stream's earlier versions, and be reported for a run that no longer exists).
//! A sharded projection's shards are reset together (those of the count recorded, read
//! under the count row's lock, so no count change comes between): every shard then
//! stands at the start, so a daemon with another count may take it up at once.
//!
//! A rebuild and the batch commits of its projection are never in flight together: the
//! rebuild takes the projection's rebuild lock exclusively first (see
//! [`progression::REBUILD_LOCK`]), every batch commit holds it shared (see
//! `super::commit`). Without it a rebuild of every tenant read the tenants with streams,
//! then reset their slots, then deleted the documents, each a statement of its own: a
//! tenant whose first events and first batch committed in between had its documents
//! deleted while its slot kept its position, lost for good. With it, the tenants are read
//! once every batch in flight has committed (a slot that has committed anything has
//! events, so its tenant is read) and no batch commits until the rebuild has: one that
//! comes later writes after the delete (a new tenant's) or finds its slot reset.
//! A slot's claim needs no lock: it writes no document, and the reset of a slot locks
//! its row, so a claim lands wholly before the reset (whose new epoch then rejects the
//! runner's next batch) or after it (and starts from the reset position).
//!
//! One tenant's rebuild deletes that tenant's dead letters (those its slots recorded) and
//! documents alone: a projection that writes documents shared by every tenant (an event
//! projection owning a type that is not conjoined) is refused ([`Error::Configuration`])
//! and nothing changes, its dead letters included.
//!
//! Owns: the reset. May use: the connection layer, the daemon's tables, the projection's
//! `clear`, the store (its async projections).

use marten_core::{Error, Result, Tenancy, TenantId};

use super::bluegreen::Target;
use super::progression;
use super::shard::locked_count_on;
use super::slot::Slot;
use super::tenants::tenants_on;
use crate::connection::Conn;
use crate::connection::Request;
use crate::error_map::{map_db_error, Failed};
use crate::projections::asynchronous::AsyncProjection;
use crate::store::DocumentStore;

/// Resets an async projection and deletes its documents and its dead letters (every
/// tenant's and shard's: the replay dead-letters anew the events that still fail); a
/// running daemon replays it from the first event. Readers see no documents until the
/// replay has caught up (the trade-off of this simple rebuild; a versioned projection
/// builds beside the old table instead: see `DocumentStoreBuilder::projection_versioned`).
/// A version still being built clears and replays its own table. With conjoined events,
/// every tenant's slot is reset (see [`rebuild_tenant`] for one tenant alone).
pub async fn rebuild(store: &DocumentStore, projection: &str) -> Result<()> {
    rebuild_slots(store, projection, None).await
}

/// Rebuilds `projection` for one tenant alone (conjoined events): resets the tenant's
/// slot and deletes the tenant's documents and dead letters of the projection (every
/// other tenant's are kept); a running daemon replays that tenant's events while every
/// other tenant's runner goes on. Fails with [`Error::Configuration`] when the store's
/// events are not conjoined, and when the projection writes documents shared by every
/// tenant (an event projection owning a document type that is not conjoined: one
/// tenant's documents of it cannot be told apart); rebuild such a projection whole with
/// [`rebuild`]. A refused rebuild changes nothing.
pub async fn rebuild_tenant(
    store: &DocumentStore,
    projection: &str,
    tenant: impl TryInto<TenantId, Error = Error>,
) -> Result<()> {
    let tenant = tenant.try_into()?;
    if store.events_tenancy() != Tenancy::Conjoined {
        return Err(Error::Configuration(format!(
            "cannot rebuild {projection} for tenant {tenant}: the store's events are not conjoined"
        )));
    }
    rebuild_slots(store, projection, Some(tenant)).await
}

/// Resets the slots of `projection` (every slot, or `tenant`'s) and deletes their dead
/// letters and documents, in one transaction within the store's request timeout.
async fn rebuild_slots(
    store: &DocumentStore,
    projection: &str,
    tenant: Option<TenantId>,
) -> Result<()> {
    progression::ensure_tables(store).await?;
    let Some(p) = store
        .projections()
        .asynchronous
        .iter()
        .find(|p| p.name() == projection)
    else {
        return Err(Error::Configuration(format!(
            "no async projection named {projection}"
        )));
    };
    let conjoined = store.events_tenancy() == Tenancy::Conjoined;
    // A version being built clears and replays its own table, not the one readers see.
    let mut conn = match super::bluegreen::target(store, p.as_ref()).await? {
        Target::Active => Conn::new(),
        Target::Build(statements) => Conn::with_statements(statements),
        Target::Superseded(active) => {
            return Err(Error::Configuration(format!(
                "cannot rebuild {projection}: version {active} of its documents is active"
            )))
        }
    };
    let req = conn.request(store).await?;
    let key = progression::rebuild_key(store.schema(), p.name());
    // Bounded as a whole by the request timeout, the wait for the rebuild lock with it.
    req.transaction_within(store, |req| {
        Box::pin(reset_and_clear(
            req,
            (p.as_ref(), &key),
            conjoined,
            tenant.as_ref(),
        ))
    })
    .await
}

/// In one transaction: takes the projection's rebuild lock (`key`) exclusively, so no
/// batch of it is in flight and none commits until this transaction ends; takes the
/// slots from any runner (the epoch moves, so a batch that waited can no longer commit:
/// its progress update finds another epoch), resets their positions, deletes their dead
/// letters and their documents. The slots: `tenant`'s; or every slot (with `conjoined`
/// events, every tenant's with streams, read under the lock; the dead letters of every
/// tenant, with streams or not); each shard's of the recorded count.
async fn reset_and_clear(
    req: &mut Request<'_>,
    (p, key): (&dyn AsyncProjection, &str),
    conjoined: bool,
    tenant: Option<&TenantId>,
) -> Result<()> {
    req.set_in_transaction(true);
    let client = req.client();
    let what = |e| map_db_error(e, Failed::Other("resetting a projection"));
    client.batch_execute("BEGIN").await.map_err(what)?;
    client
        .execute(progression::REBUILD_LOCK, &[&key])
        .await
        .map_err(what)?;
    let count = locked_count_on(client, p.name()).await?;
    let tenants: Vec<Option<TenantId>> = match (tenant, conjoined) {
        (Some(t), _) => vec![Some(t.clone())],
        (None, false) => vec![None],
        (None, true) => tenants_on(client).await?.into_iter().map(Some).collect(),
    };
    let slots = tenants
        .iter()
        .flat_map(|t| Slot::all(p.name(), t.as_ref(), count));
    for slot in slots {
        client
            .execute(progression::RESET, &[&slot.name(), &slot.tenant_column()])
            .await
            .map_err(what)?;
    }
    // After the slots' rows, before the documents: the order a batch writes them in.
    progression::clear_dead_letters(client, p.name(), tenant).await?;
    // One tenant's documents of a type shared by every tenant cannot be deleted alone:
    // the clear refuses before it deletes any of that type, and the caller rolls the
    // transaction back (the resets, the dead letters' and another owned type's deletes,
    // with it).
    p.clear(client, tenant)
        .await
        .map_err(|e| match (e, tenant) {
            (Error::Configuration(why), Some(t)) => Error::Configuration(format!(
                "cannot rebuild {} for tenant {t} alone: {why}; rebuild the projection whole \
             (every tenant) instead",
                p.name()
            )),
            (e, _) => e,
        })?;
    client.batch_execute("COMMIT").await.map_err(what)?;
    req.set_in_transaction(false);
    Ok(())
}
