//! The master database's lookup table (`mt_tenant_databases`, its SQL in
//! [`crate::tables::tenants`]): made sure of per the master store's schema mode, read on a
//! lookup miss, written when a tenant is added or removed at run time. Every statement
//! goes through the master store's pool within its time limits, with the tenant id and
//! the connection string bound as parameters.
//!
//! May use: store, connection, schema, tables, error map.

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;

use marten_core::{Result, TenantId};
use tokio_postgres::Client;
use tracing::warn;

use crate::connection::Conn;
use crate::error_map::{map_db_error, Failed};
use crate::schema::{ensure_tables, AutoCreate};
use crate::store::{DocumentStore, DocumentStoreBuilder};
use crate::tables::tenants::{self, TenantStatements};

/// Marker naming the master table in the master store's set of created objects.
struct TenantDatabasesTable;

/// The lookup table of a master database.
pub(super) struct Lookup {
    store: DocumentStore,
    sql: TenantStatements,
}

impl Lookup {
    /// Builds the master store from `builder` (its own tables, if any, are left alone:
    /// only the lookup table is made sure of) and makes sure of the lookup table.
    pub(super) async fn open(builder: DocumentStoreBuilder) -> Result<Self> {
        let store = builder.apply_schema_at_build(false).build().await?;
        store
            .ensure_erased(TypeId::of::<TenantDatabasesTable>(), migrate)
            .await?;
        let sql = tenants::statements(store.schema());
        Ok(Lookup { store, sql })
    }

    /// The connection string of `tenant`'s database, if the table has a row for it.
    pub(super) async fn find(&self, tenant: &TenantId) -> Result<Option<String>> {
        let failed = |e| map_db_error(e, Failed::Other("looking up the tenant's database"));
        Conn::new()
            .run(&self.store, async |db| {
                let row = db
                    .query_opt(self.sql.lookup.as_str(), &[&tenant.as_str()])
                    .await
                    .map_err(failed)?;
                row.map(|r| r.try_get::<_, String>(0).map_err(failed))
                    .transpose()
            })
            .await
    }

    /// Every tenant of the table with its connection string. Rows whose tenant id is not
    /// a valid [`TenantId`] (written by hand) are skipped with a warning.
    pub(super) async fn all(&self) -> Result<Vec<(TenantId, String)>> {
        let failed = |e| map_db_error(e, Failed::Other("reading the tenant databases"));
        let rows = Conn::new()
            .run(&self.store, async |db| {
                db.query(self.sql.all.as_str(), &[]).await.map_err(failed)
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0).map_err(failed)?;
            let url: String = row.try_get(1).map_err(failed)?;
            match TenantId::new(&id) {
                Ok(tenant) => out.push((tenant, url)),
                Err(e) => warn!(error = %e, "skipping a row of mt_tenant_databases"),
            }
        }
        Ok(out)
    }

    /// Adds `tenant` with the connection string of its database (or changes it).
    pub(super) async fn upsert(&self, tenant: &TenantId, url: &str) -> Result<()> {
        let failed = |e| map_db_error(e, Failed::Other("adding a tenant database"));
        Conn::new()
            .run(&self.store, async |db| {
                db.execute(self.sql.upsert.as_str(), &[&tenant.as_str(), &url])
                    .await
                    .map_err(failed)
            })
            .await?;
        Ok(())
    }

    /// Removes `tenant`; whether it had a row.
    pub(super) async fn delete(&self, tenant: &TenantId) -> Result<bool> {
        let failed = |e| map_db_error(e, Failed::Other("removing a tenant database"));
        let removed = Conn::new()
            .run(&self.store, async |db| {
                db.execute(self.sql.delete.as_str(), &[&tenant.as_str()])
                    .await
                    .map_err(failed)
            })
            .await?;
        Ok(removed > 0)
    }

    /// Closes the master store's pool.
    pub(super) fn close(&self) {
        self.store.close();
    }

    /// The master store.
    pub(super) fn store(&self) -> &DocumentStore {
        &self.store
    }
}

/// Creates or checks the lookup table (never dropped, even by [`AutoCreate::All`]: it
/// lists the tenants).
fn migrate<'a>(
    client: &'a Client,
    schema: &'a str,
    mode: AutoCreate,
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
    let mode = match mode {
        AutoCreate::All => AutoCreate::CreateOrUpdate,
        other => other,
    };
    Box::pin(async move { ensure_tables(client, schema, mode, &[tenants::table_def()]).await })
}
