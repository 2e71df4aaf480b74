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

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use marten_core::{Error, Result, TenantId};
use tracing::{info, warn};

use super::lookup::Lookup;
use super::{errors, TenantedStore};

/// The share of the cache expiry an entry may lose to jitter (at most a tenth): entries
/// read together (by [`tenants`](TenantedStore::tenants)) expire spread over that time
/// instead of all at once.
const EXPIRY_JITTER_DIVISOR: u32 = 10;

/// The tenants found in the lookup table (or added through this store), with what keeps
/// a read of the table that overlapped a change of it from being kept.
pub(super) struct Found {
    /// Tenant -> connection string of its database.
    tenants: HashMap<TenantId, Entry>,
    /// How long an entry is used before its row is read again (less a little jitter).
    expiry: Duration,
    /// Bumped at every write of the cache: when an add or remove starts and ends, when a
    /// lookup or a read of the whole table is kept.
    clock: u64,
    /// The clock when an add or remove last started or ended.
    changed_at: u64,
    /// The clock when a read of the whole table last changed the cache, or a lookup
    /// forgot a tenant another process removed.
    refreshed_at: u64,
    /// Adds and removes under way (their statement may be in flight).
    changing: usize,
    /// The clock when a lookup found no row for a tenant that was not cached: a lookup
    /// of that tenant that started before it (and read the row before another process
    /// removed it) is not kept. At most [`MAX_MISSES`]; past that, every lookup under
    /// way is not kept instead ([`Found::refreshed_at`]) and the misses are forgotten.
    misses: HashMap<TenantId, u64>,
}

/// The most tenants whose missing rows [`Found`] remembers one by one.
const MAX_MISSES: usize = 1024;

/// A tenant's connection string as found in the table (or written to it).
struct Entry {
    url: Arc<str>,
    /// When it was read (or written).
    at: Instant,
    /// How long it is used from `at`: the store's expiry less a little jitter.
    ttl: Duration,
    /// The clock when it was written to the cache.
    stamp: u64,
    /// Whether a lookup reading its row again (it expired) is under way: the other uses
    /// of the tenant are served this entry meanwhile instead of reading the row too.
    refreshing: bool,
}

impl Entry {
    /// Whether it is used without reading its row again.
    fn fresh(&self) -> bool {
        self.at.elapsed() < self.ttl
    }
}

/// What a use of a tenant does with the tenants found before ([`Found::claim`]).
enum Claim {
    /// Uses this connection string: fresh, or expired while another use reads the
    /// tenant's row again.
    Use(Arc<str>),
    /// Reads the tenant's row, the clock being `started`; `stale`: the expired entry
    /// (connection string and stamp), whose refresh this use now owns.
    Lookup {
        started: u64,
        stale: Option<(Arc<str>, u64)>,
    },
}

impl Found {
    /// An empty cache whose entries expire after `expiry` (less a little jitter).
    pub(super) fn new(expiry: Duration) -> Self {
        Found {
            tenants: HashMap::new(),
            expiry,
            clock: 0,
            changed_at: 0,
            refreshed_at: 0,
            changing: 0,
            misses: HashMap::new(),
        }
    }

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
            && self.misses.get(tenant).is_none_or(|&m| m <= started)
    }

    /// Bumps the clock: the stamp of a write.
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The expiry of an entry written now: the store's, less up to a tenth of it.
    fn ttl(&self) -> Duration {
        let random = RandomState::new().build_hasher().finish() % 1000;
        let jitter =
            self.expiry.as_nanos() / u128::from(EXPIRY_JITTER_DIVISOR) * u128::from(random) / 1000;
        self.expiry.saturating_sub(Duration::from_nanos(
            u64::try_from(jitter).unwrap_or(u64::MAX),
        ))
    }

    /// An entry for `url` read (or written) now with `stamp`.
    fn entry(&self, url: Arc<str>, stamp: u64) -> Entry {
        Entry {
            url,
            at: Instant::now(),
            ttl: self.ttl(),
            stamp,
            refreshing: false,
        }
    }

    /// Keeps `url` for `tenant`, read (or written) now.
    fn insert(&mut self, tenant: TenantId, url: Arc<str>) -> Option<Arc<str>> {
        self.misses.remove(&tenant);
        let stamp = self.tick();
        let entry = self.entry(url, stamp);
        self.tenants.insert(tenant, entry).map(|e| e.url)
    }

    /// What a use of `tenant` does: use its entry (fresh, or expired while another use
    /// reads its row again), or read its row; the use that reads the row of an expired
    /// entry owns its refresh (one at a time per tenant).
    fn claim(&mut self, tenant: &TenantId) -> Claim {
        let started = self.clock;
        match self.tenants.get_mut(tenant) {
            Some(entry) if entry.fresh() || entry.refreshing => Claim::Use(entry.url.clone()),
            Some(entry) => {
                entry.refreshing = true;
                Claim::Lookup {
                    started,
                    stale: Some((entry.url.clone(), entry.stamp)),
                }
            }
            None => Claim::Lookup {
                started,
                stale: None,
            },
        }
    }

    /// Ends the refresh of `tenant`'s entry of `stamp`, unless it was replaced meanwhile.
    fn end_refresh(&mut self, tenant: &TenantId, stamp: u64) {
        if let Some(entry) = self.tenants.get_mut(tenant) {
            if entry.stamp == stamp {
                entry.refreshing = false;
            }
        }
    }

    /// What a lookup of `tenant` that started at clock `started` read (`row`: its
    /// connection string, `None`: no row) does to the cache, when it may be kept: the
    /// tenant is cached, or forgotten when it had an entry. The connection string it had
    /// before, replaced or forgotten.
    fn keep_lookup(
        &mut self,
        tenant: &TenantId,
        started: u64,
        row: Option<Arc<str>>,
    ) -> Option<Arc<str>> {
        if !self.lookup_keeps(tenant, started) {
            return None;
        }
        match row {
            Some(url) => self.insert(tenant.clone(), url),
            None => {
                // Removed by another process: forgotten here too, and a lookup that
                // started before this one and ends after it is not kept. A tenant that
                // was not cached (any unknown id) changes nothing: the lookups of others
                // are kept as before.
                let removed = self.tenants.remove(tenant).map(|e| e.url);
                if removed.is_some() {
                    self.refreshed_at = self.tick();
                } else if self.misses.len() < MAX_MISSES {
                    // Another lookup of this tenant may have read its row before it went.
                    let at = self.tick();
                    self.misses.insert(tenant.clone(), at);
                } else {
                    self.refreshed_at = self.tick();
                    self.misses.clear();
                }
                removed
            }
        }
    }

    /// When the lookup refreshing `tenant`'s expired entry of `stamp` failed: the entry,
    /// used for another expiry time, if it is still there unchanged. `None` when this
    /// store changed (added, moved or removed) or read the tenant again meanwhile: what
    /// was read before may be a database it no longer has.
    fn keep_stale(&mut self, tenant: &TenantId, stamp: u64) -> Option<Arc<str>> {
        let ttl = self.ttl();
        let entry = self.tenants.get_mut(tenant)?;
        if entry.stamp != stamp {
            return None;
        }
        entry.at = Instant::now();
        entry.ttl = ttl;
        Some(entry.url.clone())
    }
}

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
    /// before (unless expired), then the lookup table. A lookup error names the tenant.
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
        if let Some(entry) = self.found_read().tenants.get(tenant) {
            if entry.fresh() {
                return Ok(entry.url.clone());
            }
        }
        let (started, stale) = match self.found().claim(tenant) {
            Claim::Use(url) => return Ok(url),
            Claim::Lookup { started, stale } => (started, stale),
        };
        // Ends the refresh this use owns, whatever becomes of the lookup.
        let _refresh = stale.as_ref().map(|(_, stamp)| Refresh {
            store: self,
            tenant,
            stamp: *stamp,
        });
        let unknown = || Error::UnknownTenant {
            tenant: tenant.to_string(),
        };
        let lookup = self.inner.lookup.as_ref().ok_or_else(unknown)?;
        let row = match lookup.find(tenant).await {
            Ok(row) => row.map(Arc::<str>::from),
            Err(e) => {
                let e = errors::naming_tenant(e, tenant);
                let Some((_, stamp)) = stale else {
                    return Err(e);
                };
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
        let previous = self.found().keep_lookup(tenant, started, row.clone());
        let url = row.ok_or_else(unknown);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        match TenantId::new(id) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    fn url(db: &str) -> Arc<str> {
        Arc::from(format!("postgres://app@db/{db}"))
    }

    /// The clock a lookup of `t` starts at (a miss: nothing fresh cached).
    fn start_lookup(found: &mut Found, t: &TenantId) -> (u64, Option<(Arc<str>, u64)>) {
        match found.claim(t) {
            Claim::Lookup { started, stale } => (started, stale),
            Claim::Use(u) => panic!("{t} served {u} from the cache"),
        }
    }

    /// A lookup of a tenant that has no row and was not cached (any unknown id) does not
    /// keep the lookups of other tenants that started before it from being kept.
    #[test]
    fn a_lookup_of_an_unknown_tenant_invalidates_no_other_lookup() {
        let mut found = Found::new(Duration::from_secs(30));
        let (acme, ghost) = (tenant("acme"), tenant("ghost"));
        let (acme_started, _) = start_lookup(&mut found, &acme);
        let (ghost_started, _) = start_lookup(&mut found, &ghost);
        assert_eq!(found.keep_lookup(&ghost, ghost_started, None), None);
        assert_eq!(found.keep_lookup(&acme, acme_started, Some(url("a"))), None);
        match found.claim(&acme) {
            Claim::Use(u) => assert_eq!(u, url("a")),
            Claim::Lookup { .. } => panic!("acme's lookup was not kept after a ghost's miss"),
        }
    }

    /// A lookup that finds a cached tenant removed (by another process) forgets it, and a
    /// lookup of it that started before and read the row is not kept.
    #[test]
    fn a_lookup_older_than_a_removal_seen_is_not_kept() {
        let mut found = Found::new(Duration::ZERO);
        let acme = tenant("acme");
        found.insert(acme.clone(), url("a"));
        let (older, _) = start_lookup(&mut found, &acme);
        found.end_refresh(&acme, found.clock);
        let (newer, _) = start_lookup(&mut found, &acme);
        assert_eq!(found.keep_lookup(&acme, newer, None), Some(url("a")));
        assert_eq!(found.keep_lookup(&acme, older, Some(url("a"))), None);
        assert!(!found.tenants.contains_key(&acme));
    }

    /// The same for a tenant that was not cached: lookups of it run side by side, and
    /// one that read the row before another process removed it, ending after a lookup
    /// that found no row, is not kept; past [`MAX_MISSES`] tenants, no lookup under way is.
    #[test]
    fn a_lookup_older_than_a_miss_of_an_uncached_tenant_is_not_kept() {
        let mut found = Found::new(Duration::from_secs(30));
        let x = tenant("x");
        let (older, _) = start_lookup(&mut found, &x);
        let (newer, _) = start_lookup(&mut found, &x);
        assert_eq!(found.keep_lookup(&x, newer, None), None);
        assert_eq!(found.keep_lookup(&x, older, Some(url("a"))), None);
        assert!(!found.tenants.contains_key(&x));
        // A lookup that starts after the miss (the tenant added again) is kept.
        let (later, _) = start_lookup(&mut found, &x);
        assert_eq!(found.keep_lookup(&x, later, Some(url("b"))), None);
        assert_eq!(found.tenants.get(&x).map(|e| e.url.clone()), Some(url("b")));
        // Many unknown tenants: the misses stay bounded, and the overflow invalidates
        // every lookup under way instead.
        let y = tenant("y");
        let (pending, _) = start_lookup(&mut found, &y);
        for n in 0..=MAX_MISSES {
            let ghost = tenant(&format!("ghost{n}"));
            let (at, _) = start_lookup(&mut found, &ghost);
            found.keep_lookup(&ghost, at, None);
        }
        assert!(found.misses.len() <= MAX_MISSES);
        assert_eq!(found.keep_lookup(&y, pending, Some(url("c"))), None);
        assert!(!found.tenants.contains_key(&y));
    }

    /// An expired entry is read again by one use at a time: the others are served it
    /// meanwhile; once that refresh ends (kept or not), the next use reads the row again.
    #[test]
    fn one_use_at_a_time_refreshes_an_expired_entry() {
        let mut found = Found::new(Duration::ZERO);
        let acme = tenant("acme");
        found.insert(acme.clone(), url("a"));
        let (_, stale) = start_lookup(&mut found, &acme);
        let Some((stale_url, stamp)) = stale else {
            panic!("the expired entry was not handed to its refresh");
        };
        assert_eq!(stale_url, url("a"));
        for _ in 0..10 {
            match found.claim(&acme) {
                Claim::Use(u) => assert_eq!(u, url("a")),
                Claim::Lookup { .. } => panic!("a second lookup while one refreshes acme"),
            }
        }
        found.end_refresh(&acme, stamp);
        assert!(matches!(
            found.claim(&acme),
            Claim::Lookup { stale: Some(_), .. }
        ));
    }

    /// Entries read together do not all expire at once: each loses up to a tenth of the
    /// expiry, never gains.
    #[test]
    fn expiries_are_jittered_within_a_tenth() {
        let expiry = Duration::from_secs(30);
        let found = Found::new(expiry);
        let ttls: Vec<Duration> = (0..50).map(|_| found.ttl()).collect();
        assert!(ttls
            .iter()
            .all(|t| *t <= expiry && *t >= expiry - expiry / 10));
        assert!(ttls.iter().any(|t| *t != ttls[0]), "{ttls:?}");
        assert_eq!(Found::new(Duration::ZERO).ttl(), Duration::ZERO);
        assert!(Found::new(Duration::MAX).ttl() <= Duration::MAX);
    }

    /// When the refresh of an expired entry fails, the entry is used again only if it is
    /// still the one that refresh read: not after an add (a move) or a remove meanwhile.
    #[test]
    fn a_failed_refresh_keeps_only_the_entry_it_read() {
        let acme = tenant("acme");
        // Unchanged: used for another expiry time.
        let mut found = Found::new(Duration::ZERO);
        found.insert(acme.clone(), url("u"));
        let (_, stale) = start_lookup(&mut found, &acme);
        let stamp = stale.map_or(0, |(_, s)| s);
        assert_eq!(found.keep_stale(&acme, stamp), Some(url("u")));
        // Moved by this store meanwhile: the lookup's error.
        found.insert(acme.clone(), url("v"));
        assert_eq!(found.keep_stale(&acme, stamp), None);
        // Removed by this store meanwhile: the lookup's error.
        let (_, stale) = start_lookup(&mut found, &acme);
        let stamp = stale.map_or(0, |(_, s)| s);
        found.tenants.remove(&acme);
        assert_eq!(found.keep_stale(&acme, stamp), None);
    }
}
