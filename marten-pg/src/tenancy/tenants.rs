//! Which database a tenant has: the static map, the tenants found in the master table
//! before, then the master table itself; adding and removing tenants at run time.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use marten_core::{Error, Result, TenantId};
use tracing::info;

use super::lookup::Lookup;
use super::{errors, TenantedStore};

impl TenantedStore {
    /// Adds `tenant` to the master database's lookup table with the connection string of
    /// its database, or changes its connection string (adding it again is harmless). The
    /// database must exist; its schema is made on first use, or by
    /// [`apply_all_schemas`](Self::apply_all_schemas). Other processes find the tenant on
    /// their next lookup of it. [`Error::Configuration`] without a master database, for
    /// a tenant of the static map or for a connection string that does not parse.
    pub async fn add_tenant(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
        connection_string: impl Into<String>,
    ) -> Result<()> {
        let tenant = tenant.try_into()?;
        let url: String = connection_string.into();
        let lookup = self.lookup_for_change(&tenant)?;
        errors::check_connection_string(&url, &tenant)?;
        lookup.upsert(&tenant, &url).await?;
        info!(tenant = %tenant, "tenant database added");
        let previous = self.found().insert(tenant, Arc::from(url.as_str()));
        if let Some(previous) = previous.filter(|p| **p != *url) {
            self.close_if_unused(&previous);
        }
        Ok(())
    }

    /// Removes `tenant` from the master database's lookup table; whether it was there. Its
    /// database is left as it is; its store is closed unless another tenant uses it
    /// (sessions still open on it finish their work; the pool closes when the last of them
    /// is dropped).
    /// Other processes keep a database they already resolved for the tenant until they
    /// read the table again ([`tenants`](Self::tenants),
    /// [`apply_all_schemas`](Self::apply_all_schemas)) or restart.
    /// [`Error::Configuration`] without a master database or for a tenant of the static
    /// map.
    pub async fn remove_tenant(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<bool> {
        let tenant = tenant.try_into()?;
        let lookup = self.lookup_for_change(&tenant)?;
        let removed = lookup.delete(&tenant).await?;
        info!(tenant = %tenant, removed, "tenant database removed");
        let previous = self.found().remove(&tenant);
        if let Some(previous) = previous {
            self.close_if_unused(&previous);
        }
        Ok(removed)
    }

    /// Every tenant known: the static map's and the lookup table's, sorted. Reading the
    /// table also refreshes what this store knows of it: tenants another process removed
    /// or moved to another database are seen from here on.
    pub async fn tenants(&self) -> Result<Vec<TenantId>> {
        Ok(self
            .all_tenants()
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect())
    }

    /// The connection string of `tenant`'s database: the static map, the tenants found
    /// before, then the lookup table.
    pub(super) async fn resolve(&self, tenant: &TenantId) -> Result<Arc<str>> {
        if let Some(url) = self.inner.statics.get(tenant) {
            return Ok(url.clone());
        }
        if let Some(url) = self.found_read().get(tenant) {
            return Ok(url.clone());
        }
        let unknown = || Error::UnknownTenant {
            tenant: tenant.to_string(),
        };
        let lookup = self.inner.lookup.as_ref().ok_or_else(unknown)?;
        let url: Arc<str> = lookup.find(tenant).await?.ok_or_else(unknown)?.into();
        self.found().insert(tenant.clone(), url.clone());
        Ok(url)
    }

    /// The static map's tenants and the lookup table's, sorted by tenant (a static tenant
    /// wins over a row of the table). The tenants found before are replaced by the
    /// table's: tenants removed or changed by other processes are seen from now on.
    pub(super) async fn all_tenants(&self) -> Result<Vec<(TenantId, Arc<str>)>> {
        let mut all: HashMap<TenantId, Arc<str>> = HashMap::new();
        if let Some(lookup) = &self.inner.lookup {
            for (tenant, url) in lookup.all().await? {
                all.insert(tenant, url.into());
            }
            let before = std::mem::replace(&mut *self.found(), all.clone());
            for (_, url) in before {
                self.close_if_unused(&url);
            }
        }
        all.extend(
            self.inner
                .statics
                .iter()
                .map(|(t, u)| (t.clone(), u.clone())),
        );
        let mut all: Vec<(TenantId, Arc<str>)> = all.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// The lookup table, for adding or removing `tenant`.
    fn lookup_for_change(&self, tenant: &TenantId) -> Result<&Lookup> {
        if self.inner.statics.contains_key(tenant) {
            return Err(Error::Configuration(format!(
                "tenant {tenant:?} is in the static map of tenant databases: it cannot be \
                 added or removed at run time"
            )));
        }
        self.inner.lookup.as_ref().ok_or_else(|| {
            Error::Configuration(
                "tenants are added and removed in the master database's table: configure \
                 one with master_database(..)"
                    .to_owned(),
            )
        })
    }

    /// Closes the store of the database at `url` unless a known tenant still uses it.
    fn close_if_unused(&self, url: &Arc<str>) {
        let used = self.inner.statics.values().any(|u| u == url)
            || self.found_read().values().any(|u| u == url);
        if !used {
            self.inner.databases.remove(url);
        }
    }

    fn found(&self) -> RwLockWriteGuard<'_, HashMap<TenantId, Arc<str>>> {
        self.inner
            .found
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn found_read(&self) -> RwLockReadGuard<'_, HashMap<TenantId, Arc<str>>> {
        self.inner
            .found
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
