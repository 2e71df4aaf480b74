//! Creating and checking the database objects a store needs, per the store's
//! [`AutoCreate`] mode. Each object's SQL lives with its own code
//! ([`crate::tables`]); this module decides what to run.
//!
//! May use: connection, error map, tables and leaf helpers; `Catalog` is what every
//! layer above reaches the database through.

mod catalog;
pub(crate) mod names;

pub(crate) use catalog::Catalog;

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;

use marten_core::{Error, Result, StreamIdentity};
use tokio_postgres::Client;
use tracing::debug;

use crate::error_map::{map_db_error, Failed};
use crate::tables::functions;

/// What a store may do to the database schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AutoCreate {
    /// Create missing objects and add missing columns (the default).
    #[default]
    CreateOrUpdate,
    /// Create missing tables and functions; never alter an existing table (a missing
    /// column is an error naming it).
    CreateOnly,
    /// Touch nothing; a missing object is an error naming it.
    None,
    /// Drop and recreate every table of a registered document type (tests only: this
    /// deletes data).
    All,
}

/// A type-erased migration of one document type.
pub(crate) type MigrateFn = for<'a> fn(
    &'a Client,
    &'a str,
    AutoCreate,
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Marker types naming the event store's tables for each stream identity in the store's
/// set of created objects.
struct UuidEventTables;
struct StringEventTables;

/// The `TypeId` and migration of the event tables for a stream identity.
pub(crate) fn events_schema(identity: StreamIdentity) -> (TypeId, MigrateFn) {
    match identity {
        StreamIdentity::Uuid => (TypeId::of::<UuidEventTables>(), |c, s, m: AutoCreate| {
            Box::pin(migrate_events(c, s, m, StreamIdentity::Uuid))
        }),
        StreamIdentity::String => (TypeId::of::<StringEventTables>(), |c, s, m: AutoCreate| {
            Box::pin(migrate_events(c, s, m, StreamIdentity::String))
        }),
    }
}

/// Runs `body` in a transaction holding the schema's migration lock, so concurrent
/// stores on one schema never race their DDL.
pub(crate) async fn with_migration_lock<'a, F, Fut>(
    client: &'a Client,
    schema: &'a str,
    body: F,
) -> Result<()>
where
    F: FnOnce(&'a Client) -> Fut,
    Fut: Future<Output = Result<()>> + 'a,
{
    let what = Failed::Migrating(schema);
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| map_db_error(e, what))?;
    let locked = client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('marten:schema:' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(|e| map_db_error(e, what));
    let result = match locked {
        Ok(_) => body(client).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| map_db_error(e, what)),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
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

/// The columns of a table as `(name, type name)`; empty when the table does not exist.
pub(crate) async fn describe(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT column_name::text, udt_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &table],
        )
        .await
        .map_err(|e| map_db_error(e, Failed::Migrating(table)))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| map_db_error(e, Failed::Migrating(table)))
}

pub(crate) fn udt_of(sql_type: &str) -> &str {
    match sql_type {
        "bigint" => "int8",
        "integer" => "int4",
        other => other,
    }
}

/// Creates, updates or checks the event store's tables for a stream identity.
pub(crate) async fn migrate_events(
    client: &Client,
    schema: &str,
    mode: AutoCreate,
    identity: marten_core::StreamIdentity,
) -> Result<()> {
    use crate::tables::events as table;
    let what = Failed::Migrating("event store");
    if mode == AutoCreate::All {
        for t in [
            table::TAG_VERSIONS_TABLE,
            table::TAGS_TABLE,
            table::EVENTS_TABLE,
            table::STREAMS_TABLE,
        ] {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {schema}.{t} CASCADE"))
                .await
                .map_err(|e| map_db_error(e, what))?;
        }
    }
    let mut missing = Vec::new();
    for (t, required) in [
        (table::STREAMS_TABLE, table::STREAM_COLUMNS),
        (table::EVENTS_TABLE, table::EVENT_COLUMNS_REQUIRED),
        (table::TAGS_TABLE, table::TAG_COLUMNS),
        (table::TAG_VERSIONS_TABLE, table::TAG_VERSION_COLUMNS),
    ] {
        let columns = describe(client, schema, t).await?;
        if columns.is_empty() {
            missing.push(format!("{schema}.{t}"));
            continue;
        }
        if let Some((_, found)) = columns.iter().find(|(name, _)| name == "id") {
            let expected = udt_of(table::id_type(identity));
            if t == table::STREAMS_TABLE && found != expected {
                return Err(Error::Configuration(format!(
                    "table {schema}.{t} has {found} stream ids, but the store is configured for {expected}"
                )));
            }
        }
        for c in required {
            if !columns.iter().any(|(name, _)| name == c) {
                missing.push(format!("{schema}.{t}.{c}"));
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if mode == AutoCreate::None
        || (mode == AutoCreate::CreateOnly && missing.iter().any(|m| m.matches('.').count() > 1))
    {
        return Err(Error::SchemaObjectMissing {
            object: missing.join(", "),
        });
    }
    debug!(schema, ?missing, "creating the event store tables");
    for sql in table::ddl(schema, identity) {
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| map_db_error(e, what))?;
    }
    Ok(())
}
