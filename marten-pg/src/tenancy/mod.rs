//! A database per tenant: [`TenantedStore`] finds a tenant's database (a static map of
//! tenant -> connection string, then the lookup table of a master database for tenants
//! added at run time), opens one [`DocumentStore`] per database on first use (which
//! creates or checks its schema per the store's mode) and keeps a bounded number of them
//! open, and opens sessions for a tenant from the store of its database.
//!
//! `builder.rs` configures it, `found.rs` caches what the master table said (entries,
//! misses, lookups under way), `tenants.rs` finds a tenant's database and adds and
//! removes tenants, `lookup.rs` holds the master table, `databases.rs` the open stores and
//! their bound, `sessions.rs` opens a tenant's store and sessions, `daemons.rs` runs the
//! async daemon per tenant database, `errors.rs` names the
//! tenant in the errors of its database.
//!
//! May use: daemon, store, session, schema, connection, tables, error map. Nothing below
//! uses it.

mod builder;
mod daemons;
mod databases;
mod errors;
mod found;
mod lookup;
mod sessions;
mod tenants;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use marten_core::{Result, TenantId};
use tracing::info;

pub use self::builder::TenantedStoreBuilder;
pub use self::daemons::TenantDaemons;
use self::databases::{Databases, Pooled};
use self::lookup::Lookup;
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
///   at run time. A tenant found in neither is
///   [`Error::UnknownTenant`](marten_core::Error::UnknownTenant). A tenant found in the
///   lookup table is used without reading its row again for
///   [`tenant_cache_expiry`](TenantedStoreBuilder::tenant_cache_expiry) (30 s by
///   default): changes of other processes are seen within that time. The concurrent
///   first uses of a tenant share one lookup, and a tenant found in neither is remembered
///   as unknown for that time too, at most 2 s (this store's
///   [`add_tenant`](Self::add_tenant) of it is seen at once).
/// - The store of a database is built on its first use, by one caller while others wait
///   for it, with the builder the store's closure makes from the connection string: every
///   tenant database gets the same registrations and settings, and its schema is created
///   or checked per that builder's [`AutoCreate`](crate::AutoCreate) mode.
///   [`apply_all_schemas`](Self::apply_all_schemas) does this ahead of time. A database
///   that cannot be reached fails that call, and the calls that were waiting for it, with
///   the usual typed error (for example
///   [`Error::Connection`](marten_core::Error::Connection), whose context names the
///   tenant; see [`store_for`](Self::store_for) for which errors name it) and the next
///   call tries again. A database that fails to open closes no other.
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
    /// Tenants found in the lookup table (or added through this store), and how long
    /// one is used before its row is read again.
    found: RwLock<found::Found>,
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
    /// Builds the store of every known tenant's database (static and lookup table), which
    /// creates or updates its schema per the mode of the store's builder: the schema work
    /// done ahead of time instead of on first use. The open-database bound still holds,
    /// so with more databases than it allows, the earlier ones are closed again. Stops at
    /// the first database that fails, with its error (naming the tenant, see
    /// [`store_for`](Self::store_for) for the few errors that cannot).
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

    /// The store of the database at `url`, built on first use.
    async fn open(&self, tenant: &TenantId, url: &str) -> Result<DocumentStore> {
        self.inner
            .databases
            .get(url, || async {
                info!(tenant = %tenant, "opening a tenant database");
                (self.inner.make)(url).tenant_database().build().await
            })
            .await
            .map_err(|e| errors::naming_tenant(e, tenant))
    }
}
