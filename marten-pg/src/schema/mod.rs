//! Creating and checking the database objects a store needs, per the store's
//! [`AutoCreate`] mode. Each object's SQL lives with its own code
//! ([`crate::tables`]); this module decides what to run.
//!
//! The schema a DBA reviews is rendered here too: the tables marten expects are data
//! ([`crate::tables::def`]); `live` reads what a schema holds, `diff` compares the two,
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
/// 32-bit one gives two schemas of a large server the same lock now and then).
const MIGRATION_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('marten:schema:' || $1::text, 0))";

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
    let begin = match conn.source().request_timeout() {
        // A whole number of milliseconds of the store's own setting, not a caller's text.
        Some(request) => format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'",
            lock_wait(request).as_millis().clamp(1, i32::MAX as u128)
        ),
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

/// Ensures the schema itself and its functions.
pub(crate) async fn migrate_schema(client: &Client, schema: &str, mode: AutoCreate) -> Result<()> {
    let what = Failed::Migrating(schema);
    if mode == AutoCreate::None {
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await
            .map_err(|e| map_db_error(e, what))?
            .try_get(0)
            .map_err(|e| map_db_error(e, what))?;
        if !exists {
            return Err(Error::SchemaObjectMissing {
                object: format!("schema {schema}"),
            });
        }
        let guard: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = $1 AND p.proname = $2)",
                &[&schema, &functions::GUARD_FUNCTION],
            )
            .await
            .map_err(|e| map_db_error(e, what))?
            .try_get(0)
            .map_err(|e| map_db_error(e, what))?;
        if !guard {
            return Err(Error::SchemaObjectMissing {
                object: format!("{schema}.{}()", functions::GUARD_FUNCTION),
            });
        }
        return Ok(());
    }
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await
        .map_err(|e| map_db_error(e, what))?;
    client
        .batch_execute(&functions::create_guard(schema))
        .await
        .map_err(|e| map_db_error(e, what))?;
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
