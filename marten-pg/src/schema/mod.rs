//! Creating and checking the database objects a store needs, per the store's
//! [`AutoCreate`] mode. Each object's SQL lives with its own code
//! ([`crate::tables`]); this module decides what to run.
//!
//! The schema a DBA reviews is rendered here too: the tables marten expects are data
//! ([`crate::tables::def`]); `live` reads what a schema holds, `types` asks the server
//! for the canonical names of the expected column types, `diff` compares the two,
//! `patch` renders the script and the patch, `ensure` applies what the mode allows.
//!
//! May use: connection, error map, tables and leaf helpers; `Catalog` is what every
//! layer above reaches the database through.

mod bounded;
mod catalog;
mod diff;
mod ensure;
mod live;
pub(crate) mod names;
mod patch;
mod types;
mod version;

pub(crate) use bounded::{timed_out, SchemaConn};
pub(crate) use catalog::{Catalog, DefineFn};
pub(crate) use ensure::ensure_tables;
pub(crate) use patch::{apply, patch, script};
pub use patch::{PatchOptions, SchemaPatch};
pub(crate) use version::check_server_version;

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use marten_core::{Error, Result, StreamIdentity, Tenancy};
use tokio_postgres::Client;
use tracing::Instrument;

use crate::error_map::{map_db_error, Failed};
use crate::tables::functions;

/// What a store may do to the database schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AutoCreate {
    /// Create missing objects, add missing columns, create missing indexes and replace
    /// indexes whose kind changed (the default).
    #[default]
    CreateOrUpdate,
    /// Create missing tables, functions and indexes; never alter an existing table (a
    /// missing column is an error naming it) nor replace an index.
    CreateOnly,
    /// Touch nothing; a missing schema, table, column or function is an error naming it
    /// (index differences are only logged; `DocumentStore::assert_schema` reports them).
    None,
    /// Drop and recreate every table of a registered document type and the event
    /// store's tables (tests only: this deletes data).
    All,
}

/// A type-erased migration of one document type.
pub(crate) type MigrateFn = for<'a> fn(
    &'a Client,
    &'a str,
    AutoCreate,
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Marker types naming the event store's tables for each stream identity and event
/// tenancy in the store's set of created objects.
struct UuidEventTables;
struct StringEventTables;
struct UuidConjoinedEventTables;
struct StringConjoinedEventTables;
/// Marker for the daemon's tables in the store's set of created objects.
struct DaemonTables;
/// Marker for the HiLo table in the store's set of created objects.
struct HiLoTable;

/// The `TypeId` and migration of the HiLo table (created at build with the event and
/// daemon tables; in mode `None`, checked on first use).
pub(crate) fn hilo_schema() -> (TypeId, MigrateFn) {
    (TypeId::of::<HiLoTable>(), |c, s, m: AutoCreate| {
        Box::pin(migrate_hilo(c, s, m))
    })
}

/// The `TypeId` and migration of the daemon's tables.
pub(crate) fn daemon_schema() -> (TypeId, MigrateFn) {
    (TypeId::of::<DaemonTables>(), |c, s, m: AutoCreate| {
        Box::pin(migrate_daemon(c, s, m))
    })
}

/// The `TypeId` and migration of the event tables for a stream identity and event
/// tenancy.
pub(crate) fn events_schema(identity: StreamIdentity, tenancy: Tenancy) -> (TypeId, MigrateFn) {
    use StreamIdentity::{String as Text, Uuid};
    use Tenancy::{Conjoined, Single};
    match (identity, tenancy) {
        (Uuid, Single) => (TypeId::of::<UuidEventTables>(), |c, s, m: AutoCreate| {
            Box::pin(migrate_events(c, s, m, Uuid, Single))
        }),
        (Text, Single) => (TypeId::of::<StringEventTables>(), |c, s, m: AutoCreate| {
            Box::pin(migrate_events(c, s, m, Text, Single))
        }),
        (Uuid, Conjoined) => (
            TypeId::of::<UuidConjoinedEventTables>(),
            |c, s, m: AutoCreate| Box::pin(migrate_events(c, s, m, Uuid, Conjoined)),
        ),
        (Text, Conjoined) => (
            TypeId::of::<StringConjoinedEventTables>(),
            |c, s, m: AutoCreate| Box::pin(migrate_events(c, s, m, Text, Conjoined)),
        ),
    }
}

/// Runs `body` in a transaction holding the schema's migration lock on `conn`, so
/// concurrent stores on one schema never race their DDL. Every wait is bounded by the
/// store's request timeout: `BEGIN`, the migration lock, `COMMIT` and `ROLLBACK` are
/// steps of `conn` ([`SchemaConn::step`]), and `body` sends its statements in steps of
/// its own; past the timeout the migration fails with [`Error::Timeout`] and its
/// connection is cancelled and closed (which rolls it back). Every lock the migration
/// waits for (the migration lock itself, the locks its DDL takes on tables others are
/// using) is waited for at most [`lock_wait`] of the request timeout: the migration then
/// fails with [`Error::LockNotAvailable`](marten_core::Error) naming the schema and is
/// rolled back.
pub(crate) async fn with_migration_lock<'a, 's, F, Fut>(
    conn: &'a SchemaConn<'s>,
    schema: &'a str,
    body: F,
) -> Result<()>
where
    F: FnOnce(&'a SchemaConn<'s>) -> Fut,
    Fut: Future<Output = Result<()>> + 'a,
{
    let span = crate::trace::schema(schema);
    locked_migration(conn, schema, body).instrument(span).await
}

/// What schema work on `schema` is doing, for the error of a step that timed out.
pub(crate) fn migrating(schema: &str) -> String {
    format!("migrating schema {schema}")
}

/// How long a migration waits for each lock, with a request timeout of `request`: a
/// little less than it (a quarter less, by at most a second), so that a lock that is not
/// granted is reported as such, [`Error::LockNotAvailable`](marten_core::Error), before
/// the request timeout ends the wait for an answer.
pub(crate) fn lock_wait(request: Duration) -> Duration {
    request.saturating_sub((request / 4).min(Duration::from_secs(1)))
}

/// The key of a schema's migration lock: 64 bits of a hash of the schema's name (a
/// 32-bit one gives two schemas of a large server the same lock now and then). Taken
/// for a transaction, `$1` the schema; also by the daemon's build tables (DDL of their
/// own, see `daemon/bluegreen.rs`).
pub(crate) const MIGRATION_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('marten:schema:' || $1::text, 0))";

/// The schema's migration lock ([`MIGRATION_LOCK`]'s key) taken for the session, for
/// work that cannot run in one transaction (a concurrent patch).
const MIGRATION_SESSION_LOCK: &str =
    "SELECT pg_advisory_lock(hashtextextended('marten:schema:' || $1::text, 0))";

/// Releases [`MIGRATION_SESSION_LOCK`].
const MIGRATION_SESSION_UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtextextended('marten:schema:' || $1::text, 0))";

/// `SET lock_timeout` for a session waiting at most `request`'s [`lock_wait`], or
/// `None` without a request timeout. A whole number of milliseconds of the store's own
/// setting, not a caller's text.
fn lock_timeout(request: Option<Duration>, local: bool) -> Option<String> {
    let scope = if local { "LOCAL " } else { "" };
    request.map(|request| {
        format!(
            "SET {scope}lock_timeout = '{}ms'",
            lock_wait(request).as_millis().clamp(1, i32::MAX as u128)
        )
    })
}

/// Runs `body` on `conn` holding the schema's migration lock for the session (the same
/// key [`with_migration_lock`] takes for a transaction, so the two exclude each other),
/// for schema work that cannot run in a transaction: the statements of a concurrent
/// patch (`CREATE INDEX CONCURRENTLY`), each committed on its own.
///
/// Every lock waited for (the migration lock, those `body`'s statements take) is waited
/// for at most [`lock_wait`] of the request timeout (`lock_timeout` is set for the
/// session), then the work fails with [`Error::LockNotAvailable`](marten_core::Error)
/// naming the schema; each step waits for its answer at most the request timeout
/// ([`Error::Timeout`] past it). The lock is released when `body` ends, whether it
/// succeeded or failed. `conn` must be a connection of its own that is never given back
/// to a pool ([`SchemaConn`] holds a [`Dedicated`](crate::connection::Dedicated) one,
/// closed when dropped): when the work is given up (a step past the request timeout, a
/// release without an answer) or its future is dropped, closing the connection is what
/// releases the lock and ends the session's `lock_timeout`.
pub(crate) async fn with_session_migration_lock<'a, 's, F, Fut>(
    conn: &'a SchemaConn<'s>,
    schema: &'a str,
    body: F,
) -> Result<()>
where
    F: FnOnce(&'a SchemaConn<'s>) -> Fut,
    Fut: Future<Output = Result<()>> + 'a,
{
    let span = crate::trace::schema(schema);
    session_locked(conn, schema, body).instrument(span).await
}

/// [`with_session_migration_lock`] in its span.
async fn session_locked<'a, 's, F, Fut>(
    conn: &'a SchemaConn<'s>,
    schema: &'a str,
    body: F,
) -> Result<()>
where
    F: FnOnce(&'a SchemaConn<'s>) -> Fut,
    Fut: Future<Output = Result<()>> + 'a,
{
    let what = Failed::Migrating(schema);
    let doing = migrating(schema);
    let client = conn.client();
    if let Some(set) = lock_timeout(conn.source().request_timeout(), false) {
        conn.step(&doing, async {
            client
                .batch_execute(&set)
                .await
                .map_err(|e| map_db_error(e, what))
        })
        .await?;
    }
    conn.step(&doing, async {
        client
            .execute(MIGRATION_SESSION_LOCK, &[&schema])
            .await
            .map(|_| ())
            .map_err(|e| map_db_error(e, what))
    })
    .await?;
    tracing::debug!(schema, "took the schema's migration lock for the session");
    let result = body(conn).await;
    if conn.is_lost() {
        // Closing the connection releases the lock.
        return result;
    }
    let released = conn
        .step(&doing, async {
            client
                .query_one(MIGRATION_SESSION_UNLOCK, &[&schema])
                .await
                .and_then(|row| row.try_get::<_, bool>(0))
                .map_err(|e| map_db_error(e, what))
        })
        .await;
    match released {
        Ok(true) => {}
        // Not held: nothing to release (never expected).
        Ok(false) => tracing::warn!(schema, "the schema's migration lock was not held"),
        // The connection is closed when dropped, which releases it.
        Err(e) => {
            tracing::warn!(schema, error = %e, "releasing the schema's migration lock failed")
        }
    }
    result
}

/// [`with_migration_lock`] in its span.
async fn locked_migration<'a, 's, F, Fut>(
    conn: &'a SchemaConn<'s>,
    schema: &'a str,
    body: F,
) -> Result<()>
where
    F: FnOnce(&'a SchemaConn<'s>) -> Fut,
    Fut: Future<Output = Result<()>> + 'a,
{
    let what = Failed::Migrating(schema);
    let doing = migrating(schema);
    let client = conn.client();
    let begin = match lock_timeout(conn.source().request_timeout(), true) {
        Some(set) => format!("BEGIN; {set}"),
        None => "BEGIN".to_owned(),
    };
    conn.step(&doing, async {
        client
            .batch_execute(&begin)
            .await
            .map_err(|e| map_db_error(e, what))
    })
    .await?;
    let locked = conn
        .step(&doing, async {
            client
                .execute(MIGRATION_LOCK, &[&schema])
                .await
                .map(|_| ())
                .map_err(|e| map_db_error(e, what))
        })
        .await;
    let result = match locked {
        Ok(()) => body(conn).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            conn.step(&doing, async {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| map_db_error(e, what))
            })
            .await
        }
        Err(e) => {
            // A connection given up is closed, which rolls the migration back; a
            // rollback without an answer in time gives it up too.
            if !conn.is_lost() {
                let rolled_back = conn
                    .step(&doing, async {
                        client
                            .batch_execute("ROLLBACK")
                            .await
                            .map_err(|e| map_db_error(e, what))
                    })
                    .await;
                if let Err(failed) = rolled_back {
                    tracing::debug!(error = %failed, "rolling back a failed migration failed");
                }
            }
            Err(e)
        }
    }
}

/// Whether schema `$1` exists, and whether it holds a function named `$2` (the guard).
const SCHEMA_OBJECTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
     EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
       WHERE n.nspname = $1 AND p.proname = $2)";

/// Ensures the schema itself and its guard function, under the migration lock the
/// caller holds: what exists is left as it is, and only what is missing is created (in
/// every mode but `None`, which creates nothing and names what is missing).
///
/// Existence is checked first, so that a store whose role owns (or may create in) its
/// schema needs no `CREATE` privilege on the database (`CREATE SCHEMA IF NOT EXISTS`
/// checks it before it sees the schema exists), and a guard function a DBA created (owned
/// by another role) is never replaced (`CREATE OR REPLACE` needs its ownership). The
/// function's definition is not compared: an existing `mt_assert_no_rejections()` is
/// kept as it is, as the schema check (`diff`) only looks for its existence too.
pub(crate) async fn migrate_schema(client: &Client, schema: &str, mode: AutoCreate) -> Result<()> {
    let what = Failed::Migrating(schema);
    let fail = |e| map_db_error(e, what);
    let found = client
        .query_one(SCHEMA_OBJECTS, &[&schema, &functions::GUARD_FUNCTION])
        .await
        .map_err(fail)?;
    let schema_exists: bool = found.try_get(0).map_err(fail)?;
    let guard_exists: bool = found.try_get(1).map_err(fail)?;
    if mode == AutoCreate::None {
        if !schema_exists {
            return Err(Error::SchemaObjectMissing {
                object: format!("schema {schema}"),
            });
        }
        if !guard_exists {
            return Err(Error::SchemaObjectMissing {
                object: format!("{schema}.{}()", functions::GUARD_FUNCTION),
            });
        }
        return Ok(());
    }
    if !schema_exists {
        tracing::debug!(schema, "creating the schema");
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(fail)?;
    }
    if !guard_exists {
        tracing::debug!(
            schema,
            function = functions::GUARD_FUNCTION,
            "creating the guard function"
        );
        client
            .batch_execute(&functions::create_guard(schema))
            .await
            .map_err(fail)?;
    }
    Ok(())
}

/// Creates, updates or checks the event store's tables for a stream identity and event
/// tenancy.
pub(crate) async fn migrate_events(
    client: &Client,
    schema: &str,
    mode: AutoCreate,
    identity: StreamIdentity,
    tenancy: Tenancy,
) -> Result<()> {
    if mode != AutoCreate::All {
        check_event_tenancy(client, schema, tenancy).await?;
    }
    let tables = crate::tables::event_ddl::table_defs(schema, identity, tenancy);
    ensure_tables(client, schema, mode, &tables).await?;
    check_xid_horizon(client, schema).await
}

/// Fails with [`Error::CorruptData`] when the newest event's transaction id is not below
/// the server's next one: the events were written by another cluster (a dump restored
/// into a new one restarts the transaction counter), and reading on would skip every
/// event the new cluster writes below the stored positions.
async fn check_xid_horizon(client: &Client, schema: &str) -> Result<()> {
    use crate::tables::event_order::NEWEST_EVENT_XID;
    let what = Failed::Migrating(schema);
    let rows = client
        .query(NEWEST_EVENT_XID, &[])
        .await
        .map_err(|e| map_db_error(e, what))?;
    let Some(row) = rows.first() else {
        return Ok(());
    };
    let ahead: bool = row.try_get(0).map_err(|e| map_db_error(e, what))?;
    if !ahead {
        return Ok(());
    }
    let newest: String = row.try_get(1).map_err(|e| map_db_error(e, what))?;
    let next: String = row.try_get(2).map_err(|e| map_db_error(e, what))?;
    Err(Error::CorruptData {
        owner: format!("the event store in schema {schema}"),
        id: None,
        detail: format!(
            "its newest event's transaction id {newest} is not below the server's next one              ({next}): the events were written by another cluster (a dump restored into a new              one restarts the counter), and the global order would skip new events; move              the cluster's transaction ids past {newest} first (`pg_resetwal --epoch` on the              stopped cluster)"
        ),
    })
}

/// Fails with [`Error::Configuration`] when the schema holds event tables of the other
/// tenancy (told by the primary key of the streams table): they are never converted.
async fn check_event_tenancy(client: &Client, schema: &str, tenancy: Tenancy) -> Result<()> {
    use crate::tables::event_ddl::STREAMS_KEY_HAS_TENANT;
    let what = Failed::Migrating(schema);
    let found: Option<bool> = client
        .query_one(STREAMS_KEY_HAS_TENANT, &[&schema])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| map_db_error(e, what))?;
    let found = match found {
        None => return Ok(()),
        Some(true) => Tenancy::Conjoined,
        Some(false) => Tenancy::Single,
    };
    if found == tenancy {
        return Ok(());
    }
    Err(Error::Configuration(format!(
        "the event tables in schema {schema} are {found:?} (by tenant), but the store's events \
         are {tenancy:?}: existing event tables are not converted between tenancy modes"
    )))
}

/// Creates or checks the daemon's tables (never dropped, even by [`AutoCreate::All`]).
pub(crate) async fn migrate_daemon(client: &Client, schema: &str, mode: AutoCreate) -> Result<()> {
    let mode = match mode {
        AutoCreate::All => AutoCreate::CreateOrUpdate,
        other => other,
    };
    let tables = crate::tables::progression::table_defs();
    ensure_tables(client, schema, mode, &tables).await
}

/// Creates or checks the HiLo table (never dropped, even by [`AutoCreate::All`]: its
/// counters are what keeps ids already handed out from being handed out again).
pub(crate) async fn migrate_hilo(client: &Client, schema: &str, mode: AutoCreate) -> Result<()> {
    let mode = match mode {
        AutoCreate::All => AutoCreate::CreateOrUpdate,
        other => other,
    };
    ensure_tables(client, schema, mode, &[crate::tables::hilo::table_def()]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_waits_for_a_lock_less_than_the_request_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(lock_wait(ms(500)), ms(375));
        assert_eq!(lock_wait(ms(2000)), ms(1500));
        assert_eq!(lock_wait(Duration::from_secs(60)), Duration::from_secs(59));
        assert_eq!(lock_wait(ms(2)), ms(2) - ms(2) / 4);
        assert_eq!(lock_wait(Duration::ZERO), Duration::ZERO);
        assert!(lock_wait(Duration::MAX) < Duration::MAX);
    }
}
