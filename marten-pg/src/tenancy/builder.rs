//! Configuring a [`TenantedStore`]: how a tenant database's store is built, the static map
//! of tenants, the master database and the bound on open databases. `build` opens only
//! the master database (making sure of its lookup table); tenant databases open on first
//! use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use marten_core::{Error, Result, TenantId};

use super::databases::Databases;
use super::found::Found;
use super::lookup::Lookup;
use super::{Inner, MakeStore, TenantedStore};
use crate::store::DocumentStoreBuilder;

/// The default of [`TenantedStoreBuilder::max_open_databases`].
const DEFAULT_MAX_OPEN_DATABASES: usize = 64;

/// The default of [`TenantedStoreBuilder::tenant_cache_expiry`].
const DEFAULT_TENANT_CACHE_EXPIRY: Duration = Duration::from_secs(30);

/// Configures and builds a [`TenantedStore`].
#[must_use]
pub struct TenantedStoreBuilder {
    make: Box<MakeStore>,
    statics: HashMap<TenantId, Arc<str>>,
    master: Option<DocumentStoreBuilder>,
    max_open: usize,
    tenant_expiry: Duration,
    error: Option<Error>,
}

impl TenantedStore {
    /// Starts configuring a store with a database per tenant. `store` makes the builder of
    /// a tenant database's store from its connection string: call
    /// `connection_string(url)` on it and register the documents, events and projections
    /// and settings every tenant database shares (its schema, its mode, its pool size).
    ///
    /// ```no_run
    /// # async fn demo() -> marten_core::Result<()> {
    /// use marten_pg::{DocumentStore, TenantedStore};
    /// let tenanted = TenantedStore::builder(|url| {
    ///     DocumentStore::builder().connection_string(url).schema("app").pool_size(4)
    /// })
    /// .tenant("acme", "postgres://app@db/acme")
    /// .master_database(DocumentStore::builder().connection_string("postgres://app@db/main"))
    /// .build()
    /// .await?;
    /// let mut session = tenanted.lightweight_session_for("acme").await?;
    /// # Ok(()) }
    /// ```
    pub fn builder<F>(store: F) -> TenantedStoreBuilder
    where
        F: Fn(&str) -> DocumentStoreBuilder + Send + Sync + 'static,
    {
        TenantedStoreBuilder {
            make: Box::new(store),
            statics: HashMap::new(),
            master: None,
            max_open: DEFAULT_MAX_OPEN_DATABASES,
            tenant_expiry: DEFAULT_TENANT_CACHE_EXPIRY,
            error: None,
        }
    }
}

impl TenantedStoreBuilder {
    /// Adds `tenant` to the static map, its database at `connection_string`. Tenants given
    /// the same connection string share its store. An invalid tenant id, one given twice
    /// or a connection string that does not parse fails `build`.
    pub fn tenant(mut self, tenant: impl AsRef<str>, connection_string: impl Into<String>) -> Self {
        let url: Arc<str> = connection_string.into().into();
        let checked = TenantId::new(tenant).and_then(|tenant| {
            super::errors::check_connection_string(&url, &tenant).map(|()| tenant)
        });
        match checked {
            Ok(tenant) => {
                if self.statics.insert(tenant.clone(), url).is_some() {
                    self.error.get_or_insert(Error::Configuration(format!(
                        "tenant {tenant:?} is in the static map twice"
                    )));
                }
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// The master database, whose table `mt_tenant_databases` (in the builder's schema)
    /// lists the tenants added at run time and is read when a tenant is not in the static
    /// map. `build` makes sure of the table per the builder's schema mode, and of nothing
    /// else: the master store holds no documents or events.
    pub fn master_database(mut self, master: DocumentStoreBuilder) -> Self {
        self.master = Some(master);
        self
    }

    /// How many tenant databases may have an open store (a pool) at once (default 64, at
    /// least 1). When another must open, the least recently used one that no session or
    /// store handle is held of is closed. A store in use is never closed under its
    /// sessions: while more databases than this are in use at once, they all stay open,
    /// and the surplus is closed at a later open, once idle. Hold sessions, not stores: a
    /// store handle kept for good keeps its database open.
    pub fn max_open_databases(mut self, max: usize) -> Self {
        self.max_open = max.max(1);
        self
    }

    /// How long a tenant's database, once read from the master table, is used without
    /// reading its row again (default 30 s). After that, its next use reads the row:
    /// a tenant another process moved to another database (or removed) is seen here
    /// within this time (at once after [`TenantedStore::tenants`]). Shorter sees such
    /// changes sooner at the cost of a master-table read per tenant per this time;
    /// `Duration::ZERO` reads the row at every use. Tenants of the static map are not
    /// concerned. Each entry expires up to a tenth of this time early (jitter), and one
    /// use at a time reads an expired row again: the uses of the tenant meanwhile are
    /// served the database read before. While the row cannot be read (the master
    /// database is down), a tenant read before keeps its database for another such time,
    /// with a warning, unless this store added, moved or removed it meanwhile (then the
    /// lookup's error); a tenant never read fails with the lookup's error.
    ///
    /// A tenant with no entry is read by one lookup however many uses of it come while
    /// that lookup runs: they wait for its row (or fail with a copy of its error), so a
    /// burst of first uses takes one connection of the master's pool, not one each. A
    /// tenant the table has no row for is remembered as unknown for this time too, at
    /// most 2 s (and at most 1024 such tenants; past that the older ones are forgotten),
    /// so made-up tenant ids cost the master database one lookup each per that time: this
    /// store's own [`TenantedStore::add_tenant`] of it is seen at once, another process's
    /// within that time (at once after [`TenantedStore::tenants`]).
    pub fn tenant_cache_expiry(mut self, expiry: Duration) -> Self {
        self.tenant_expiry = expiry;
        self
    }

    /// Checks the configuration and opens the master database (making sure of its lookup
    /// table). Tenant databases are opened on first use, or by
    /// [`TenantedStore::apply_all_schemas`].
    pub async fn build(self) -> Result<TenantedStore> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.statics.is_empty() && self.master.is_none() {
            return Err(Error::Configuration(
                "no tenant databases: add tenants with tenant(..) or a master database with \
                 master_database(..)"
                    .to_owned(),
            ));
        }
        let lookup = match self.master {
            Some(master) => Some(Lookup::open(master).await?),
            None => None,
        };
        tracing::info!(
            static_tenants = self.statics.len(),
            master = lookup.is_some(),
            max_open = self.max_open,
            "tenanted store ready"
        );
        Ok(TenantedStore {
            inner: Arc::new(Inner {
                make: self.make,
                statics: self.statics,
                lookup,
                found: RwLock::new(Found::new(self.tenant_expiry)),
                databases: Databases::new(self.max_open),
            }),
        })
    }
}
