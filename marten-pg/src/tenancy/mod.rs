//! A database per tenant: [`TenantedStore`] finds a tenant's database (a static map of
//! tenant -> connection string, then the lookup table of a master database for tenants
//! added at run time), opens one [`DocumentStore`] per database on first use (which
//! creates or checks its schema per the store's mode) and keeps a bounded number of them
//! open, and opens sessions for a tenant from the store of its database.
//!
//! `builder.rs` configures it, `databases.rs` holds the open stores and their bound,
//! `lookup.rs` the master table, `errors.rs` names the tenant in the errors of its
//! database.
//!
//! May use: store, session, schema, connection, tables, error map. Nothing below uses it.

mod builder;
mod databases;
mod errors;
mod lookup;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use marten_core::{Error, Result, TenantId};
use tracing::info;

pub use self::builder::TenantedStoreBuilder;
use self::databases::{Databases, Pooled};
use self::lookup::Lookup;
use crate::session::{DirtyTrackedSession, IdentitySession, LightweightSession, QuerySession};
use crate::store::{DocumentStore, DocumentStoreBuilder};

/// Makes the builder of a tenant database's store from its connection string.
type MakeStore = dyn Fn(&str) -> DocumentStoreBuilder + Send + Sync;

/// A document store with a database per tenant (Marten's static and master-table
/// multi-tenancy). Cheap to clone: clones share the open databases.
///
/// - A tenant's database is found in the static map given to the builder
///   ([`TenantedStoreBuilder::tenant`]), else in the lookup table `mt_tenant_databases`
///   of the master database ([`TenantedStoreBuilder::master_database`]), which
///   [`add_tenant`](Self::add_tenant) and [`remove_tenant`](Self::remove_tenant) change
///   at run time. A tenant found in neither is [`Error::UnknownTenant`].
/// - The store of a database is built on its first use, by one caller while others wait
///   for it, with the builder the store's closure makes from the connection string: every
///   tenant database gets the same registrations and settings, and its schema is created
///   or checked per that builder's [`AutoCreate`](crate::AutoCreate) mode.
///   [`apply_all_schemas`](Self::apply_all_schemas) does this ahead of time. A database
///   that cannot be reached fails that call with the usual typed error (for example
///   [`Error::Connection`], whose context names the tenant) and the next call tries
///   again.
/// - Tenants sharing a connection string share one store (one pool); in it, the rows of
///   conjoined document types are kept apart per tenant, single-tenanted ones are shared.
/// - At most [`max_open_databases`](TenantedStoreBuilder::max_open_databases) stores are
///   open: when another must open, the least recently used one that no session or store
///   handle is held of is closed. A store in use is never closed under its sessions (the
///   bound is exceeded while more databases than it allows are in use at once).
///
/// Tenant ids and connection strings are bound as parameters, never written into SQL.
/// The lookup table holds connection strings as given, passwords included: restrict who
/// may read it, or give credentials another way (a `.pgpass` file, the environment).
#[derive(Clone)]
pub struct TenantedStore {
    inner: Arc<Inner>,
}

struct Inner {
    make: Box<MakeStore>,
    statics: HashMap<TenantId, Arc<str>>,
    lookup: Option<Lookup>,
    /// Tenants found in the lookup table (or added through this store).
    found: RwLock<HashMap<TenantId, Arc<str>>>,
    databases: Databases<DocumentStore>,
}

impl fmt::Debug for TenantedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut statics: Vec<&TenantId> = self.inner.statics.keys().collect();
        statics.sort();
        f.debug_struct("TenantedStore")
            .field("static_tenants", &statics)
            .field(
                "master_schema",
                &self.inner.lookup.as_ref().map(|l| l.store().schema()),
            )
            .field("open_databases", &self.open_databases())
            .finish_non_exhaustive()
    }
}

impl Pooled for DocumentStore {
    fn close(&self) {
        DocumentStore::close(self);
    }

    fn in_use(&self) -> bool {
        self.handles() > 1
    }
}

impl TenantedStore {
    /// The store of `tenant`'s database, scoped to `tenant`
    /// ([`DocumentStore::for_tenant`]), built (and its schema made sure of) on the first
    /// use of that database. [`Error::UnknownTenant`] if no database is configured for
    /// it, [`Error::InvalidTenant`] for an invalid id.
    pub async fn store_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<DocumentStore> {
        let tenant = tenant.try_into()?;
        let url = self.resolve(&tenant).await?;
        let store = self.open(&tenant, &url).await?;
        store.for_tenant(&tenant)
    }

    /// Opens a read-only session on `tenant`'s database (see [`store_for`](Self::store_for)).
    pub async fn query_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<QuerySession> {
        Ok(self.store_for(tenant).await?.query_session())
    }

    /// Opens a lightweight session on `tenant`'s database.
    pub async fn lightweight_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<LightweightSession> {
        Ok(self.store_for(tenant).await?.lightweight_session())
    }

    /// Opens an identity-map session on `tenant`'s database.
    pub async fn identity_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<IdentitySession> {
        Ok(self.store_for(tenant).await?.identity_session())
    }

    /// Opens a dirty-tracked session on `tenant`'s database.
    pub async fn dirty_tracked_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<DirtyTrackedSession> {
        Ok(self.store_for(tenant).await?.dirty_tracked_session())
    }

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
    /// restart. [`Error::Configuration`] without a master database or for a tenant of the
    /// static map.
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

    /// Every tenant known: the static map's and the lookup table's, sorted.
    pub async fn tenants(&self) -> Result<Vec<TenantId>> {
        Ok(self
            .all_tenants()
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect())
    }

    /// Builds the store of every known tenant's database (static and lookup table), which
    /// creates or updates its schema per the mode of the store's builder: the schema work
    /// done ahead of time instead of on first use. The open-database bound still holds,
    /// so with more databases than it allows, the earlier ones are closed again. Stops at
    /// the first database that fails, with its error (naming the tenant).
    pub async fn apply_all_schemas(&self) -> Result<()> {
        let mut done = BTreeSet::new();
        for (tenant, url) in self.all_tenants().await? {
            if !done.insert(url.clone()) {
                continue;
            }
            self.open(&tenant, &url).await?;
        }
        Ok(())
    }

    /// How many tenant databases have an open store (a pool).
    pub fn open_databases(&self) -> usize {
        self.inner.databases.open_count()
    }

    /// Closes every open store and the master database's pool; sessions still open keep
    /// their connection until dropped. A later use opens the stores again (and the master
    /// store's pool, closed for good, fails its lookups).
    pub fn close(&self) {
        self.inner.databases.close_all();
        if let Some(lookup) = &self.inner.lookup {
            lookup.close();
        }
    }

    /// The connection string of `tenant`'s database: the static map, the tenants found
    /// before, then the lookup table.
    async fn resolve(&self, tenant: &TenantId) -> Result<Arc<str>> {
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

    /// The store of the database at `url`, built on first use.
    async fn open(&self, tenant: &TenantId, url: &str) -> Result<DocumentStore> {
        self.inner
            .databases
            .get(url, || async {
                info!(tenant = %tenant, "opening a tenant database");
                (self.inner.make)(url).build().await
            })
            .await
            .map_err(|e| errors::naming_tenant(e, tenant))
    }

    /// The static map's tenants and the lookup table's, sorted by tenant (a static tenant
    /// wins over a row of the table).
    async fn all_tenants(&self) -> Result<Vec<(TenantId, Arc<str>)>> {
        let mut all: HashMap<TenantId, Arc<str>> = HashMap::new();
        if let Some(lookup) = &self.inner.lookup {
            let rows = lookup.all().await?;
            let mut found = self.found();
            for (tenant, url) in rows {
                let url: Arc<str> = url.into();
                found.insert(tenant.clone(), url.clone());
                all.insert(tenant, url);
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

    fn found(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<TenantId, Arc<str>>> {
        self.inner
            .found
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn found_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TenantId, Arc<str>>> {
        self.inner
            .found
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
