//! Blue/green rebuilds in the daemon: where a versioned projection's runner writes, and
//! the switch that makes its version the one readers see.
//!
//! The design, chosen so that readers pay nothing: the active version of a document
//! type's table is always the table its statements name (`mt_doc_tally`), so loads and
//! queries are unchanged and need no lookup. A newer version is projected into a table of
//! its own (`mt_doc_tally_v2`, same columns and indexes): its runner, and only it, sends
//! the document type's statements through [`Statements::redirected`], which names that
//! table instead. Once the runner has caught up with the high-water mark, it switches in
//! one transaction: it checks its own epoch (a runner that lost the projection cannot
//! switch), moves the epoch of the version it replaces (a runner of the old version, in
//! an old deployment, can no longer commit and steps down; at its next acquire it finds
//! itself superseded and stays idle), locks the document table (`ACCESS EXCLUSIVE`:
//! queries in flight finish first, later ones wait), renames the active table to
//! `mt_doc_tally_v1`, renames the build table to `mt_doc_tally`, and records the active
//! version in `mt_projection_versions`. A query therefore reads either the old table or
//! the new one, never a mix; PostgreSQL re-plans prepared statements after the renames.
//! Readers queue behind a switch that waits for the table lock, so the switch waits for
//! it only briefly (a fiftieth of the wait before its next attempt: 5 ms at first, 100
//! ms once that wait is at its cap), then gives up; the runner tries again after a
//! backoff that doubles from a poll interval up to 5 s (see the runner). A long reader
//! thus delays the switch, and costs the other readers about 2% of their time while it
//! does; a table always read by queries longer than the lock's wait is not switched
//! (the failed attempts are warned about).
//! After the switch the runner writes through the store's own statements. The old table
//! is dropped only by [`drop_old_projection_versions`](super::drop_old_projection_versions).
//!
//! Conjoined events: the daemon runs the new version per tenant (`Tally:v2@red`, ...),
//! every tenant's runner writing its tenant's rows into the one build table (a conjoined
//! document table holds every tenant's rows, so the table, and the switch, are shared).
//! A tenant's runner that has caught up switches only once the runner of every tenant
//! that has streams has caught up too (its slot has no events after its position);
//! until then it tries again at its next idle turn. The switch moves the epoch of every
//! tenant's slot of the old version. A runner of another tenant that was still writing
//! into the build table when it was renamed sees its batch fail, steps down, and on
//! acquiring its slot again finds its version active and goes on in the active table.
//! A sharded projection's shards are such slots too: readers switch once every shard
//! (of every tenant) has caught up, and the switch moves every shard's epoch.
//!
//! Owns: the build target and the switch. May use: the connection layer, the
//! projections' versions and tables, the staleness check of a slot, the tenants' read,
//! the store.

use std::sync::Arc;
use std::time::Duration;

use marten_core::{Error, Result};
use tokio_postgres::error::SqlState;

use super::ownership::Ownership;
use super::slot::Slot;
use super::stale::slot_behind;
use super::tenants::tenants_on;
use crate::connection::{timed_out, within, Conn, Db, Request, Statements};
use crate::error_map::{map_db_error, Failed};
use crate::projections::asynchronous::{AsyncProjection, DocumentTable};
use crate::store::DocumentStore;
use crate::tables::progression::PROGRESSION_TABLE;
use crate::tables::versions as sql;

/// Where a runner's projection writes, decided when it acquires the projection.
pub(super) enum Target {
    /// Into the document table readers read (its version is active, or unversioned).
    Active,
    /// Into its version's own table, through these statements, until it switches.
    Build(Arc<Statements>),
    /// A newer version is active: the runner does not run.
    Superseded(u32),
}

fn failed(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| map_db_error(e, Failed::Other(what))
}

/// The active version of document table `table` (1 when none was switched to, or no
/// version table exists: a store that never built a version needs none, whatever its
/// schema mode).
pub(super) async fn active_version(db: Db<'_>, schema: &str, table: &str) -> Result<u32> {
    let what = failed("reading the active projection version");
    let row = match db.query_opt(&sql::active(schema), &[&table]).await {
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => None,
        other => other.map_err(&what)?,
    };
    let active: i32 = match row {
        Some(row) => row.try_get(0).map_err(&what)?,
        None => return Ok(sql::FIRST_VERSION),
    };
    u32::try_from(active).map_err(|_| {
        Error::Configuration(format!(
            "{table}: active projection version {active} is not valid"
        ))
    })
}

/// The active version of `projection`'s document table if it is newer than the
/// projection's own (its runner is superseded and does not run); `None` otherwise, or for
/// a projection without a document table. One read, no lock, nothing created.
pub(super) async fn superseded(
    store: &DocumentStore,
    projection: &dyn AsyncProjection,
) -> Result<Option<u32>> {
    let Some(table) = projection.document_table() else {
        return Ok(None);
    };
    let schema = store.schema().to_owned();
    let active = Conn::new()
        .run(store, async |db| {
            active_version(db, &schema, table.name).await
        })
        .await?;
    Ok((active > projection.version()).then_some(active))
}

/// Where `projection`'s runner writes; a build target's table is created (idempotent:
/// a restarted build goes on in the table it had).
///
/// The active version is read first without a lock; a runner of an older version than
/// its own (a build) then reads it again, and creates the build table, in one
/// transaction that
/// holds a lock on the active table ([`sql::share_lock`]) the switch's `ACCESS
/// EXCLUSIVE` waits for, and that the switch's waits for in turn: a switch either
/// committed before the read (its version is seen active and nothing is created), or
/// renames a build table this one made or found. Read apart from the DDL, a switch
/// committing in between left this runner a build target whose table the switch had
/// just renamed, and its `CREATE TABLE IF NOT EXISTS` made a new, empty one that its
/// batches (and a rebuild's) then wrote into while readers read the switched table.
/// The schema's migration lock comes first, as for every DDL of the schema: build
/// tables of one version made by two runners at once do not race their catalog rows.
pub(super) async fn target(
    store: &DocumentStore,
    projection: &dyn AsyncProjection,
) -> Result<Target> {
    let Some(table) = projection.document_table() else {
        return Ok(Target::Active);
    };
    let mine = projection.version();
    let schema = store.schema().to_owned();
    let mut conn = Conn::new();
    // Read first without a lock or DDL: a runner of the active version (every
    // projection's, without blue/green) needs neither, nor the rights to create tables.
    let seen = conn
        .run(store, async |db| {
            active_version(db, &schema, table.name).await
        })
        .await?;
    let active = if seen >= mine {
        seen
    } else {
        let build = sql::build_def(&(table.def)(), mine);
        let req = conn.request(store).await?;
        let at = (schema.as_str(), table.name, mine);
        req.transaction_within(store, |req| Box::pin(target_in(req, at, &build)))
            .await?
    };
    if active > mine {
        return Ok(Target::Superseded(active));
    }
    if active == mine {
        return Ok(Target::Active);
    }
    let connector: &crate::connection::Connector = store.as_ref();
    let build = sql::versioned(table.name, mine);
    let redirected = connector.statements().redirected(table.name, &build);
    Ok(Target::Build(Arc::new(redirected)))
}

/// [`target`]'s transaction (rolled back by the caller when it fails): the migration
/// lock, the active table's share lock (when the table exists), the versions table, the
/// active version, and for a newer version `mine` of `table` its build table `build`.
/// Returns the active version.
async fn target_in(
    req: &mut Request<'_>,
    (schema, table, mine): (&str, &str, u32),
    build: &crate::tables::def::TableDef,
) -> Result<u32> {
    req.set_in_transaction(true);
    let db = req.client();
    let what = failed("creating a projection version's table");
    db.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
        .await
        .map_err(&what)?;
    db.execute(crate::schema::MIGRATION_LOCK, &[&schema])
        .await
        .map_err(&what)?;
    let qualified = format!("{schema}.{table}");
    let exists = db
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
        .await
        .map_err(&what)?;
    if exists.try_get::<_, bool>(0).map_err(&what)? {
        db.batch_execute(&sql::share_lock(schema, table))
            .await
            .map_err(&what)?;
    }
    // The versions table first: a read of a missing one would abort the transaction.
    db.batch_execute(&sql::ddl(schema)).await.map_err(&what)?;
    let active = active_version(db, schema, table).await?;
    if active < mine {
        for statement in build.ddl(schema) {
            db.batch_execute(&statement).await.map_err(&what)?;
        }
    }
    db.batch_execute("COMMIT").await.map_err(&what)?;
    req.set_in_transaction(false);
    Ok(active)
}

/// How a switch attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Switch {
    /// Readers see this version now.
    Done,
    /// The runner no longer owns its slot, or a version as new is active already.
    Lost,
    /// Another tenant's or shard's runner of this version has not caught up yet.
    NotYet,
    /// The runner's own slot has events after its position again (appended since it
    /// read its last page): it projects them and tries again once caught up.
    Behind,
}

/// The progression row of version `version` of the projection `name` (at `mine`).
fn slot_of(name: &str, mine: u32, version: u32) -> String {
    let base = name.strip_suffix(&format!(":v{mine}")).unwrap_or(name);
    if version <= sql::FIRST_VERSION {
        base.to_owned()
    } else {
        format!("{base}:v{version}")
    }
}

/// Makes `projection`'s version the active one (see the module doc); `slot` is the
/// runner's. The switch waits at most `lock_wait` for the document table's lock (readers
/// that come meanwhile queue behind it); past it, it fails and nothing changed.
pub(super) async fn switch(
    store: &DocumentStore,
    projection: &dyn AsyncProjection,
    slot: &Slot,
    own: &Ownership,
    lock_wait: Duration,
) -> Result<Switch> {
    let Some(table) = projection.document_table() else {
        return Ok(Switch::Done);
    };
    let mut conn = Conn::new();
    let mut req = conn.request(store).await?;
    req.set_in_transaction(true);
    let at = SwitchAt {
        schema: store.schema(),
        projection,
        slot,
        table,
        epoch: own.epoch,
        lock_wait,
    };
    let Some(result) = within(store, switch_in(req.client(), at)).await else {
        req.mark_lost();
        return Err(timed_out(store));
    };
    match &result {
        Ok(Switch::Done) => req.set_in_transaction(false),
        _ => req.rollback_within(store).await,
    }
    req.settle(&result);
    result
}

/// What a switch is about: the store's schema, the projection and the runner's slot,
/// its document table, the epoch the runner claimed, how long it waits for the table's
/// lock.
struct SwitchAt<'a> {
    schema: &'a str,
    projection: &'a dyn AsyncProjection,
    slot: &'a Slot,
    table: DocumentTable,
    epoch: i64,
    lock_wait: Duration,
}

/// Whether the runner of every slot of the version has caught up (`None`): with
/// conjoined events every tenant's with streams, for a sharded projection every shard's
/// (otherwise the runner's slot is the only one). The runner's own slot is checked
/// first ([`Switch::Behind`]), then the others ([`Switch::NotYet`]).
async fn every_slot_caught_up(db: Db<'_>, at: &SwitchAt<'_>) -> Result<Option<Switch>> {
    let (slot, name) = (at.slot, at.projection.name());
    if slot.tenant.is_none() && slot.shard.is_none() {
        return Ok(None);
    }
    if slot_behind(db, slot).await? {
        return Ok(Some(Switch::Behind));
    }
    let tenants = match slot.tenant {
        Some(_) => tenants_on(db).await?.into_iter().map(Some).collect(),
        None => vec![None],
    };
    for tenant in &tenants {
        for other in Slot::all(name, tenant.as_ref(), slot.count()) {
            if other.name() != slot.name() && slot_behind(db, &other).await? {
                return Ok(Some(Switch::NotYet));
            }
        }
    }
    Ok(None)
}

/// The switch's transaction (ended by the caller when it returns anything but
/// `Ok(Switch::Done)`).
async fn switch_in(db: Db<'_>, at: SwitchAt<'_>) -> Result<Switch> {
    let what = failed("switching a projection version");
    let (schema, table) = (at.schema, at.table);
    let (name, mine) = (at.projection.name(), at.projection.version());
    db.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
        .await
        .map_err(&what)?;
    let owned =
        format!("SELECT owner_epoch FROM {schema}.{PROGRESSION_TABLE} WHERE name = $1 FOR UPDATE");
    let slot = at.slot.name();
    let held: Option<i64> = match db.query_opt(&owned, &[&slot]).await.map_err(&what)? {
        Some(row) => row.try_get(0).map_err(&what)?,
        None => None,
    };
    if held != Some(at.epoch) {
        return Ok(Switch::Lost);
    }
    if let Some(not_yet) = every_slot_caught_up(db, &at).await? {
        return Ok(not_yet);
    }
    // Readers queue behind the lock's request: it is only waited for briefly, and the
    // statements after it (the renames, the build table's lock) get the usual 2 s.
    let lock_ms = at.lock_wait.as_millis().max(1);
    let lock = format!(
        "SET LOCAL lock_timeout = '{lock_ms}ms'; {}; SET LOCAL lock_timeout = '2s'",
        sql::lock(schema, table.name)
    );
    db.batch_execute(&lock).await.map_err(&what)?;
    let active = active_version(db, schema, table.name).await?;
    if active >= mine {
        return Ok(Switch::Lost);
    }
    // The old version's slot, and with conjoined events every tenant's (`Tally@red`),
    // sharded every shard's (`Tally#1/3`).
    let old = slot_of(name, mine, active);
    let moved = format!(
        "UPDATE {schema}.{PROGRESSION_TABLE} SET owner_epoch = owner_epoch + 1 \
         WHERE name = $1 OR left(name, length($1) + 1) IN ($1 || '@', $1 || '#')"
    );
    db.execute(&moved, &[&old]).await.map_err(&what)?;
    for statement in sql::switch(schema, &(table.def)(), active, mine) {
        db.batch_execute(&statement).await.map_err(&what)?;
    }
    let mine_i32 = i32::try_from(mine)
        .map_err(|_| Error::Configuration(format!("{name}: version {mine} is too large")))?;
    db.execute(&sql::set_active(schema), &[&table.name, &mine_i32])
        .await
        .map_err(&what)?;
    db.batch_execute("COMMIT").await.map_err(&what)?;
    Ok(Switch::Done)
}

#[cfg(test)]
mod tests {
    use super::slot_of;

    #[test]
    fn the_replaced_versions_progression_row_is_named_like_its_projection() {
        assert_eq!(slot_of("Tally:v3", 3, 1), "Tally");
        assert_eq!(slot_of("Tally:v3", 3, 2), "Tally:v2");
    }
}
