//! Which database a tenant has: the static map, the tenants found in the master table
//! before, then the master table itself; adding and removing tenants at run time.
//!
//! The tenants found before are a cache of the master table, and a cache must never be
//! older than the changes this store made, nor than a newer read of the table. Its
//! entries expire ([`TenantedStoreBuilder::tenant_cache_expiry`](super::TenantedStoreBuilder::tenant_cache_expiry)):
//! an expired entry is read from the table again at its next use, so the changes of
//! other processes are seen within that time. One use at a time reads an expired entry
//! again (the uses meanwhile are served the entry as it was), and each entry's expiry
//! loses a little jitter, so entries read together do not all expire at once. These
//! rules keep it so:
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
//!
//! A tenant with no entry is read by one lookup however many uses of it arrive while it
//! runs (a [`Flight`]): they wait for its row instead of each taking a connection of the
//! master's pool. A use that comes after an add, a remove or a read of the whole table
//! of this store never joins a lookup that started before it: those detach the lookups
//! under way (their uses still get their row: they ran concurrently). A tenant found in
//! no row is remembered as unknown for the same expiry, at most
//! [`MISS_EXPIRY`](super::found::MISS_EXPIRY) (a miss, at most
//! [`MAX_MISSES`](super::found::MAX_MISSES) of them), so that made-up tenant ids cost the
//! master one lookup per that time each; an
//! add of this store forgets the miss at once, an add of another process is seen once
//! it expired (or after [`tenants`](TenantedStore::tenants)).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use marten_core::{Error, Result, TenantId};
use tracing::{debug, info, warn};

use super::found::{Claim, Entry, Flight, Found, Miss};
use super::lookup::Lookup;
use super::{errors, TenantedStore};

/// The refresh of a tenant's expired entry that a use owns: ended when dropped (after
/// the lookup, or with the caller's future), so that the next use of the tenant after
/// it reads the row again if the entry is still expired.
struct Refresh<'a> {
    store: &'a TenantedStore,
    tenant: &'a TenantId,
    stamp: u64,
}

impl Drop for Refresh<'_> {
    fn drop(&mut self) {
        self.store.found().end_refresh(self.tenant, self.stamp);
    }
}

/// A use joined to the lookup of a tenant with no entry: leaves it when dropped (after
/// its row or error, or with the caller's future), the last one removing it.
struct FlightUse<'a> {
    store: &'a TenantedStore,
    tenant: &'a TenantId,
    flight: Arc<Flight>,
}

impl Drop for FlightUse<'_> {
    fn drop(&mut self) {
        self.store.found().leave_flight(self.tenant, &self.flight);
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
    /// Starts a change of `tenant`: its entry and its miss are forgotten (the entry
    /// returned), reads of the table overlapping the change are not kept, and the uses
    /// that come from now on do not join a lookup of it that started before.
    fn start(store: &'a TenantedStore, tenant: &TenantId) -> (Self, Option<Arc<str>>) {
        let mut found = store.found();
        let started = found.tick();
        found.changed_at = started;
        found.changing += 1;
        found.misses.remove(tenant);
        found.flights.remove(tenant);
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
        // A lookup started while the change was under way may have read the table before
        // it: the uses that come after it do not join that lookup.
        found.flights.remove(&self.tenant);
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
    /// before (unless expired), then the lookup table. A lookup error names the tenant.
    ///
    /// A tenant with no entry is read by one lookup at a time: the uses of it that come
    /// while that lookup runs wait for its row (or fail with a copy of its error); when
    /// that use's future is dropped, one of them runs the lookup instead. A tenant the
    /// table has no row for is [`Error::UnknownTenant`] without a lookup for an expiry.
    ///
    /// An expired entry is read again by one use at a time: the uses of the tenant while
    /// that lookup runs are served the entry as it was (so a hot tenant costs one lookup
    /// per expiry, and a master database that is down holds up one use, not all). When
    /// that lookup fails (the master database is down), the entry is used for another
    /// expiry time instead, with a warning - unless this store added, moved, removed or
    /// read the tenant again meanwhile: then the lookup's error.
    pub(super) async fn resolve(&self, tenant: &TenantId) -> Result<Arc<str>> {
        if let Some(url) = self.inner.statics.get(tenant) {
            return Ok(url.clone());
        }
        let unknown = || Error::UnknownTenant {
            tenant: tenant.to_string(),
        };
        let lookup = self.inner.lookup.as_ref().ok_or_else(unknown)?;
        {
            let found = self.found_read();
            match found.tenants.get(tenant) {
                Some(entry) if entry.fresh() => return Ok(entry.url.clone()),
                Some(_) => {}
                None if found.misses.get(tenant).is_some_and(Miss::fresh) => {
                    return Err(unknown());
                }
                None => {}
            }
        }
        let claim = self.found().claim(tenant);
        match claim {
            Claim::Use(url) => Ok(url),
            Claim::Unknown => Err(unknown()),
            Claim::Refresh { started, stale } => self.refresh(lookup, tenant, started, stale).await,
            Claim::Join(flight) => {
                // Leaves the lookup, whatever becomes of this use.
                let joined = FlightUse {
                    store: self,
                    tenant,
                    flight,
                };
                let flight = &joined.flight;
                let row = flight
                    .row
                    .get_or_try_init(|| async {
                        // The turn of a use that waited for a lookup that failed.
                        if let Some(e) = flight.failure() {
                            debug!(tenant = %tenant, "the shared lookup of the tenant failed");
                            return Err(e);
                        }
                        self.first_lookup(lookup, tenant, flight).await
                    })
                    .await?;
                row.clone().ok_or_else(unknown)
            }
        }
    }

    /// Reads the row of `tenant`, which had no entry, for the uses joined to `flight`:
    /// the row is kept (per [`Found::keep_lookup`]) and the lookup ended; its error is
    /// recorded for the uses that waited.
    async fn first_lookup(
        &self,
        lookup: &Lookup,
        tenant: &TenantId,
        flight: &Arc<Flight>,
    ) -> Result<Option<Arc<str>>> {
        let started = self.found_read().clock;
        let read = lookup.find(tenant).await;
        match read {
            Ok(row) => {
                let row = row.map(Arc::<str>::from);
                self.keep_read(tenant, started, &row, Some(flight));
                Ok(row)
            }
            Err(e) => {
                let e = errors::naming_tenant(e, tenant);
                flight.fail(&e);
                self.found().end_flight(tenant, flight);
                Err(e)
            }
        }
    }

    /// Reads the row of `tenant`'s expired entry (`stale`: its connection string and
    /// stamp) again, the clock being `started`; on failure, the entry read before if
    /// it is still there unchanged.
    async fn refresh(
        &self,
        lookup: &Lookup,
        tenant: &TenantId,
        started: u64,
        stale: (Arc<str>, u64),
    ) -> Result<Arc<str>> {
        let stamp = stale.1;
        // Ends the refresh this use owns, whatever becomes of the lookup.
        let _refresh = Refresh {
            store: self,
            tenant,
            stamp,
        };
        let row = match lookup.find(tenant).await {
            Ok(row) => row.map(Arc::<str>::from),
            Err(e) => {
                let e = errors::naming_tenant(e, tenant);
                let kept = self.found().keep_stale(tenant, stamp);
                let Some(url) = kept else {
                    return Err(e);
                };
                warn!(
                    tenant = %tenant,
                    error = %marten_core::WithSources(&e),
                    "cannot read the tenant's row again: using its database as read before"
                );
                return Ok(url);
            }
        };
        self.keep_read(tenant, started, &row, None);
        row.ok_or_else(|| Error::UnknownTenant {
            tenant: tenant.to_string(),
        })
    }

    /// Keeps what a lookup of `tenant` that started at clock `started` read (`row`), if
    /// it may be kept, ending `flight` (the lookup of a tenant with no entry) in the same
    /// step; the database the tenant had before (moved or removed by another process) is
    /// closed unless another tenant uses it.
    fn keep_read(
        &self,
        tenant: &TenantId,
        started: u64,
        row: &Option<Arc<str>>,
        flight: Option<&Arc<Flight>>,
    ) {
        let previous = {
            let mut found = self.found();
            if let Some(flight) = flight {
                found.end_flight(tenant, flight);
            }
            found.keep_lookup(tenant, started, row.clone())
        };
        if let Some(previous) = previous {
            if row.as_ref() != Some(&previous) {
                self.close_if_unused(&previous);
            }
        }
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
                // A lookup that started before this read and ends after it is not kept, and
                // the uses that come from now on do not join it; a tenant missed before
                // that the table has now is looked up at its next use.
                let stamp = found.tick();
                found.refreshed_at = stamp;
                found.flights.clear();
                found.misses.retain(|tenant, _| !all.contains_key(tenant));
                if unchanged {
                    let read = all.iter().map(|(tenant, url)| {
                        let entry = found.entry(url.clone(), stamp);
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
