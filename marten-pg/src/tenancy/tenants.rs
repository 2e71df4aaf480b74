//! Which database a tenant has: the static map, the tenants found in the master table
//! before, then the master table itself; adding and removing tenants at run time.
//!
//! The tenants found before are a cache of the master table, and a cache must never be
//! older than the changes this store made. Three rules keep it so:
//!
//! - an add or a remove is a [`Change`]: before its statement is sent, the tenant's entry
//!   is forgotten and the change is counted as under way; when it ends - answered, failed
//!   or dropped (cancelled, timed out) - it is counted as ended, and only an add answered
//!   with no other change overlapping it writes its connection string back. An add or
//!   remove dropped after its statement committed therefore leaves the tenant uncached,
//!   and the next use reads the table;
//! - a generation, bumped when a change starts and when it ends, tells a reader of the
//!   table (a lookup, [`tenants`](TenantedStore::tenants)) whether any change started or
//!   ended while its statement ran: if one did, or one is still under way, what it read
//!   may be older than that change, and it is not kept (it is still returned: the reader
//!   ran concurrently with the change);
//! - the cache is only written under its lock, after these checks, in one step.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use marten_core::{Error, Result, TenantId};
use tracing::info;

use super::lookup::Lookup;
use super::{errors, TenantedStore};

/// The tenants found in the lookup table (or added through this store), with what keeps
/// a read of the table that overlapped a change of it from being kept.
#[derive(Default)]
pub(super) struct Found {
    /// Tenant -> connection string of its database.
    tenants: HashMap<TenantId, Arc<str>>,
    /// Bumped when an add or remove starts and when it ends.
    generation: u64,
    /// Adds and removes under way (their statement may be in flight).
    changing: usize,
}

impl Found {
    /// Whether a read of the table that started at `generation` may be kept: no change
    /// started or ended since, and none is under way.
    fn unchanged_since(&self, generation: u64) -> bool {
        self.generation == generation && self.changing == 0
    }
}

/// An add or remove of one tenant under way: made right before its statement is sent,
/// ended when dropped (after the statement's answer, or with the caller's future).
struct Change<'a> {
    store: &'a TenantedStore,
    tenant: TenantId,
    /// The generation right after this change started.
    generation: u64,
    /// The tenant's connection string once the statement was answered (a successful
    /// add); `None`: removed, failed or dropped, the tenant is left uncached.
    outcome: Option<Arc<str>>,
}

impl<'a> Change<'a> {
    /// Starts a change of `tenant`: its entry is forgotten (and returned) and reads of the
    /// table overlapping the change are not kept.
    fn start(store: &'a TenantedStore, tenant: &TenantId) -> (Self, Option<Arc<str>>) {
        let mut found = store.found();
        found.generation += 1;
        found.changing += 1;
        let previous = found.tenants.remove(tenant);
        let change = Change {
            store,
            tenant: tenant.clone(),
            generation: found.generation,
            outcome: None,
        };
        (change, previous)
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        let mut found = self.store.found();
        // Alone: no other change started or ended while this one was under way, so the
        // table holds what this one wrote.
        let alone = found.generation == self.generation && found.changing == 1;
        found.generation += 1;
        found.changing = found.changing.saturating_sub(1);
        match self.outcome.take() {
            Some(url) if alone => {
                found.tenants.insert(self.tenant.clone(), url);
            }
            _ => {
                found.tenants.remove(&self.tenant);
            }
        }
    }
}

impl TenantedStore {
    /// Adds `tenant` to the master database's lookup table with the connection string of
    /// its database, or changes its connection string (adding it again is harmless). The
    /// database must exist; its schema is made on first use, or by
    /// [`apply_all_schemas`](Self::apply_all_schemas). Other processes find the tenant on
    /// their next lookup of it. [`Error::Configuration`] without a master database, for
    /// a tenant of the static map or for a connection string that does not parse.
    ///
    /// Dropped or failed once its statement was sent, the tenant is forgotten by this
    /// store and read from the table on its next use, whatever became of the statement.
    pub async fn add_tenant(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
        connection_string: impl Into<String>,
    ) -> Result<()> {
        let tenant = tenant.try_into()?;
        let url: String = connection_string.into();
        let lookup = self.lookup_for_change(&tenant)?;
        errors::check_connection_string(&url, &tenant)?;
        let url: Arc<str> = Arc::from(url);
        let (mut change, previous) = Change::start(self, &tenant);
        lookup.upsert(&tenant, &url).await?;
        change.outcome = Some(url.clone());
        drop(change);
        info!(tenant = %tenant, "tenant database added");
        if let Some(previous) = previous.filter(|p| *p != url) {
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
    ///
    /// Dropped or failed once its statement was sent, the tenant is forgotten by this
    /// store and read from the table on its next use, whatever became of the statement.
    pub async fn remove_tenant(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<bool> {
        let tenant = tenant.try_into()?;
        let lookup = self.lookup_for_change(&tenant)?;
        let (change, previous) = Change::start(self, &tenant);
        let removed = lookup.delete(&tenant).await?;
        drop(change);
        info!(tenant = %tenant, removed, "tenant database removed");
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
        let generation = {
            let found = self.found_read();
            if let Some(url) = found.tenants.get(tenant) {
                return Ok(url.clone());
            }
            found.generation
        };
        let unknown = || Error::UnknownTenant {
            tenant: tenant.to_string(),
        };
        let lookup = self.inner.lookup.as_ref().ok_or_else(unknown)?;
        let url: Arc<str> = lookup.find(tenant).await?.ok_or_else(unknown)?.into();
        let mut found = self.found();
        if found.unchanged_since(generation) {
            found.tenants.insert(tenant.clone(), url.clone());
        }
        Ok(url)
    }

    /// The static map's tenants and the lookup table's, sorted by tenant (a static tenant
    /// wins over a row of the table). The tenants found before are replaced by the
    /// table's: tenants removed or changed by other processes are seen from now on. When
    /// an add or remove of this store overlapped the read, nothing of it is kept: only
    /// the tenants found before that disagree with it are forgotten.
    pub(super) async fn all_tenants(&self) -> Result<Vec<(TenantId, Arc<str>)>> {
        let mut all: HashMap<TenantId, Arc<str>> = HashMap::new();
        if let Some(lookup) = &self.inner.lookup {
            let generation = self.found_read().generation;
            for (tenant, url) in lookup.all().await? {
                all.insert(tenant, url.into());
            }
            let forgotten: Vec<Arc<str>> = {
                let mut found = self.found();
                if found.unchanged_since(generation) {
                    std::mem::replace(&mut found.tenants, all.clone())
                        .into_values()
                        .collect()
                } else {
                    let mut forgotten = Vec::new();
                    found.tenants.retain(|tenant, url| {
                        let agrees = all.get(tenant) == Some(url);
                        if !agrees {
                            forgotten.push(url.clone());
                        }
                        agrees
                    });
                    forgotten
                }
            };
            for url in forgotten {
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
            || self.found_read().tenants.values().any(|u| u == url);
        if !used {
            self.inner.databases.remove(url);
        }
    }

    fn found(&self) -> RwLockWriteGuard<'_, Found> {
        self.inner
            .found
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn found_read(&self) -> RwLockReadGuard<'_, Found> {
        self.inner
            .found
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
