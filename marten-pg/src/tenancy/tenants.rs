//! Which database a tenant has: the static map, the tenants found in the master table
//! before, then the master table itself; adding and removing tenants at run time.
//!
//! The tenants found before are a cache of the master table, and a cache must never be
//! older than the changes this store made, nor than a newer read of the table. Its
//! entries expire ([`TenantedStoreBuilder::tenant_cache_expiry`](super::TenantedStoreBuilder::tenant_cache_expiry)):
//! an expired entry is read from the table again at its next use, so the changes of
//! other processes are seen within that time. These rules keep it so:
//!
//! - an add or a remove is a [`Change`]: before its statement is sent, the tenant's entry
//!   is forgotten and the change is counted as under way; when it ends - answered, failed
//!   or dropped (cancelled, timed out) - it is counted as ended, and only an add answered
//!   with no other change overlapping it writes its connection string back. An add or
//!   remove dropped after its statement committed therefore leaves the tenant uncached,
//!   and the next use reads the table;
//! - a clock, bumped at every write of the cache, stamps each entry and tells a reader of
//!   the table (a lookup, [`tenants`](TenantedStore::tenants)) whether any change started
//!   or ended while its statement ran: if one did, or one is still under way, what it read
//!   may be older than that change, and it is not kept (it is still returned: the reader
//!   ran concurrently with the change). Likewise a lookup whose tenant was written
//!   meanwhile (by another lookup or by [`tenants`](TenantedStore::tenants)), or that
//!   overlapped a read of the whole table that changed the cache, is not kept: that read
//!   may be newer; and a read of the whole table that overlapped any write of the cache
//!   only forgets the entries that disagree with it;
//! - the cache is only written under its lock, after these checks, in one step.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use marten_core::{Error, Result, TenantId};
use tracing::{info, warn};

use super::lookup::Lookup;
use super::{errors, TenantedStore};

/// The tenants found in the lookup table (or added through this store), with what keeps
/// a read of the table that overlapped a change of it from being kept.
#[derive(Default)]
pub(super) struct Found {
    /// Tenant -> connection string of its database.
    tenants: HashMap<TenantId, Entry>,
    /// Bumped at every write of the cache: when an add or remove starts and ends, when a
    /// lookup or a read of the whole table is kept.
    clock: u64,
    /// The clock when an add or remove last started or ended.
    changed_at: u64,
    /// The clock when a read of the whole table last changed the cache.
    refreshed_at: u64,
    /// Adds and removes under way (their statement may be in flight).
    changing: usize,
}

/// A tenant's connection string as found in the table (or written to it).
struct Entry {
    url: Arc<str>,
    /// When it was read (or written): it expires after the store's cache expiry.
    at: Instant,
    /// The clock when it was written to the cache.
    stamp: u64,
}

impl Found {
    /// Whether a read of the whole table that started at clock `started` may replace the
    /// cache: nothing was written to it since, and no change is under way.
    fn unchanged_since(&self, started: u64) -> bool {
        self.clock == started && self.changing == 0
    }

    /// Whether a lookup of `tenant` that started at clock `started` may be kept: no change
    /// started or ended since nor is under way, no read of the whole table changed the
    /// cache since, and the tenant's entry was not written since (by a newer read).
    fn lookup_keeps(&self, tenant: &TenantId, started: u64) -> bool {
        self.changing == 0
            && self.changed_at <= started
            && self.refreshed_at <= started
            && self.tenants.get(tenant).is_none_or(|e| e.stamp <= started)
    }

    /// Bumps the clock: the stamp of a write.
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Keeps `url` for `tenant`, read (or written) now.
    fn insert(&mut self, tenant: TenantId, url: Arc<str>) -> Option<Arc<str>> {
        let stamp = self.tick();
        let entry = Entry {
            url,
            at: Instant::now(),
            stamp,
        };
        self.tenants.insert(tenant, entry).map(|e| e.url)
    }
}

/// An add or remove of one tenant under way: made right before its statement is sent,
/// ended when dropped (after the statement's answer, or with the caller's future).
struct Change<'a> {
    store: &'a TenantedStore,
    tenant: TenantId,
    /// The clock right after this change started.
    started: u64,
    /// The tenant's connection string once the statement was answered (a successful
    /// add); `None`: removed, failed or dropped, the tenant is left uncached.
    outcome: Option<Arc<str>>,
}

impl<'a> Change<'a> {
    /// Starts a change of `tenant`: its entry is forgotten (and returned) and reads of the
    /// table overlapping the change are not kept.
    fn start(store: &'a TenantedStore, tenant: &TenantId) -> (Self, Option<Arc<str>>) {
        let mut found = store.found();
        let started = found.tick();
        found.changed_at = started;
        found.changing += 1;
        let previous = found.tenants.remove(tenant).map(|e| e.url);
        let change = Change {
            store,
            tenant: tenant.clone(),
            started,
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
        let alone = found.changed_at == self.started && found.changing == 1;
        found.changed_at = found.tick();
        found.changing = found.changing.saturating_sub(1);
        match self.outcome.take() {
            Some(url) if alone => {
                found.insert(self.tenant.clone(), url);
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
    /// [`apply_all_schemas`](Self::apply_all_schemas). Other processes find a new tenant
    /// on its first use there; one they already used, and found at its old database, they
    /// find at the new one once their cached entry expired
    /// ([`tenant_cache_expiry`](super::TenantedStoreBuilder::tenant_cache_expiry), 30 s by
    /// default) or after their next [`tenants`](Self::tenants).
    /// [`Error::Configuration`] without a master database, for
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
    /// Other processes keep a database they already resolved for the tenant until their
    /// cached entry expired
    /// ([`tenant_cache_expiry`](super::TenantedStoreBuilder::tenant_cache_expiry)) or
    /// they read the table again ([`tenants`](Self::tenants),
    /// [`apply_all_schemas`](Self::apply_all_schemas)).
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
    /// before (unless expired), then the lookup table. A lookup error names the tenant;
    /// when the lookup of an expired entry fails (the master database is down), the
    /// entry is used for another expiry time instead, with a warning.
    pub(super) async fn resolve(&self, tenant: &TenantId) -> Result<Arc<str>> {
        if let Some(url) = self.inner.statics.get(tenant) {
            return Ok(url.clone());
        }
        let (started, expired) = {
            let found = self.found_read();
            let entry = found.tenants.get(tenant);
            if let Some(entry) = entry {
                if entry.at.elapsed() < self.inner.tenant_expiry {
                    return Ok(entry.url.clone());
                }
            }
            (found.clock, entry.map(|e| (e.url.clone(), e.stamp)))
        };
        let unknown = || Error::UnknownTenant {
            tenant: tenant.to_string(),
        };
        let lookup = self.inner.lookup.as_ref().ok_or_else(unknown)?;
        let row = match lookup.find(tenant).await {
            Ok(row) => row,
            Err(e) => {
                let e = errors::naming_tenant(e, tenant);
                let Some((url, stamp)) = expired else {
                    return Err(e);
                };
                warn!(
                    tenant = %tenant,
                    error = %marten_core::WithSources(&e),
                    "cannot read the tenant's row again: using its database as read before"
                );
                let mut found = self.found();
                if let Some(entry) = found.tenants.get_mut(tenant) {
                    if entry.stamp == stamp {
                        entry.at = Instant::now();
                    }
                }
                return Ok(url);
            }
        };
        let (url, previous) = {
            let mut found = self.found();
            let keep = found.lookup_keeps(tenant, started);
            match row {
                Some(url) => {
                    let url: Arc<str> = url.into();
                    let previous = if keep {
                        found.insert(tenant.clone(), url.clone())
                    } else {
                        None
                    };
                    (Ok(url), previous)
                }
                None => {
                    // Removed by another process: forgotten here too, and a lookup that
                    // started before this one and ends after it is not kept.
                    let previous = if keep {
                        found.refreshed_at = found.tick();
                        found.tenants.remove(tenant).map(|e| e.url)
                    } else {
                        None
                    };
                    (Err(unknown()), previous)
                }
            }
        };
        // The database it had before (moved or removed by another process) is closed
        // unless another tenant uses it.
        if let Some(previous) = previous {
            if url.as_ref().map_or(true, |u| *u != previous) {
                self.close_if_unused(&previous);
            }
        }
        url
    }

    /// The static map's tenants and the lookup table's, sorted by tenant (a static tenant
    /// wins over a row of the table). The tenants found before are replaced by the
    /// table's: tenants removed or changed by other processes are seen from now on. When
    /// an add or remove of this store overlapped the read, nothing of it is kept: only
    /// the tenants found before that disagree with it are forgotten.
    pub(super) async fn all_tenants(&self) -> Result<Vec<(TenantId, Arc<str>)>> {
        let mut all: HashMap<TenantId, Arc<str>> = HashMap::new();
        if let Some(lookup) = &self.inner.lookup {
            let started = self.found_read().clock;
            for (tenant, url) in lookup.all().await? {
                all.insert(tenant, url.into());
            }
            let forgotten: Vec<Arc<str>> = {
                let mut found = self.found();
                let unchanged = found.unchanged_since(started);
                // A lookup that started before this read and ends after it is not kept.
                let stamp = found.tick();
                found.refreshed_at = stamp;
                if unchanged {
                    let at = Instant::now();
                    let read = all.iter().map(|(tenant, url)| {
                        let entry = Entry {
                            url: url.clone(),
                            at,
                            stamp,
                        };
                        (tenant.clone(), entry)
                    });
                    let read: HashMap<TenantId, Entry> = read.collect();
                    std::mem::replace(&mut found.tenants, read)
                        .into_values()
                        .map(|e| e.url)
                        .collect()
                } else {
                    let mut forgotten = Vec::new();
                    found.tenants.retain(|tenant, entry| {
                        let agrees = all.get(tenant) == Some(&entry.url);
                        if !agrees {
                            forgotten.push(entry.url.clone());
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
            || self.found_read().tenants.values().any(|e| e.url == *url);
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
