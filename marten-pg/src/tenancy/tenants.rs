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
//! no row is remembered as unknown for the same expiry (a miss, at most [`MAX_MISSES`]
//! of them), so that made-up tenant ids cost the master one lookup per expiry each; an
//! add of this store forgets the miss at once, an add of another process is seen once
//! it expired (or after [`tenants`](TenantedStore::tenants)).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use marten_core::{Error, Result, TenantId};
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use super::databases::replicate;
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
    /// The tenants a lookup found no row for while they were not cached: used as
    /// unknown without a lookup until the miss expires, and a lookup of that tenant
    /// that started before the miss (and read the row before another process removed
    /// it) is not kept. At most [`MAX_MISSES`]; past that, every lookup under way is not
    /// kept instead ([`Found::refreshed_at`]) and the expired misses are forgotten (all
    /// of them, if they are all fresh).
    misses: HashMap<TenantId, Miss>,
    /// The lookups of tenants with no entry under way, each shared by the uses of its
    /// tenant that arrive meanwhile; removed when it ends, when the last of its uses is
    /// dropped, or when a change or a read of the whole table detaches it.
    flights: HashMap<TenantId, Joined>,
}

/// The most tenants whose missing rows [`Found`] remembers one by one.
const MAX_MISSES: usize = 1024;

/// A tenant a lookup found no row for (while it was not cached).
struct Miss {
    /// The clock when it was kept.
    stamp: u64,
    /// When it was read.
    at: Instant,
    /// How long the tenant is unknown from `at` without a lookup: the store's expiry
    /// less a little jitter.
    ttl: Duration,
}

impl Miss {
    /// Whether the tenant is unknown without a lookup.
    fn fresh(&self) -> bool {
        self.at.elapsed() < self.ttl
    }
}

/// The lookup of a tenant that had no entry, shared by the uses of the tenant that
/// arrive while it runs (single flight). The use whose turn it is runs it (the first;
/// if its future is dropped, the next waiting use takes over); the others wait for its
/// row. When it fails, the uses that waited fail with a copy of its error (the same
/// variant and text, naming the tenant) instead of each running a lookup of their own:
/// a master database that is down costs a burst one failed lookup, not one each.
struct Flight {
    /// The row read: the connection string, or `None` when the table has no row.
    row: OnceCell<Option<Arc<str>>>,
    /// The error of the lookup, when it failed, copied for the uses that waited for it.
    failure: Mutex<Option<Error>>,
}

impl Flight {
    fn new() -> Self {
        Flight {
            row: OnceCell::new(),
            failure: Mutex::new(None),
        }
    }

    /// Records the lookup's failure: the uses waiting for it fail with `e`'s copy.
    fn fail(&self, e: &Error) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(replicate(e));
    }

    /// A copy of the error of the lookup, if it failed.
    fn failure(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(replicate)
    }
}

/// A lookup in [`Found::flights`] with the number of uses joined to it.
struct Joined {
    flight: Arc<Flight>,
    uses: usize,
}

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
    /// The tenant is unknown: a lookup found no row for it less than an expiry ago.
    Unknown,
    /// Reads the row of the tenant's expired entry again, the clock being `started`;
    /// `stale`: the expired entry (connection string and stamp), whose refresh this use
    /// now owns.
    Refresh {
        started: u64,
        stale: (Arc<str>, u64),
    },
    /// The tenant has no entry: this use joined the lookup of its row (made for it if
    /// none was under way), and leaves it with [`Found::leave_flight`].
    Join(Arc<Flight>),
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
            flights: HashMap::new(),
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
            && self.misses.get(tenant).is_none_or(|m| m.stamp <= started)
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
    /// reads its row again), fail as unknown (a fresh miss), or read its row; the use that
    /// reads the row of an expired entry owns its refresh (one at a time per tenant), the
    /// uses of a tenant with no entry share one lookup.
    fn claim(&mut self, tenant: &TenantId) -> Claim {
        let started = self.clock;
        match self.tenants.get_mut(tenant) {
            Some(entry) if entry.fresh() || entry.refreshing => Claim::Use(entry.url.clone()),
            Some(entry) => {
                entry.refreshing = true;
                Claim::Refresh {
                    started,
                    stale: (entry.url.clone(), entry.stamp),
                }
            }
            None if self.misses.get(tenant).is_some_and(Miss::fresh) => Claim::Unknown,
            None => {
                let joined = self
                    .flights
                    .entry(tenant.clone())
                    .or_insert_with(|| Joined {
                        flight: Arc::new(Flight::new()),
                        uses: 0,
                    });
                joined.uses += 1;
                Claim::Join(joined.flight.clone())
            }
        }
    }

    /// A use joined to `flight` is done with it (answered, failed or dropped): the last
    /// one removes it if it is still `tenant`'s lookup under way.
    fn leave_flight(&mut self, tenant: &TenantId, flight: &Arc<Flight>) {
        if let Some(joined) = self.flights.get_mut(tenant) {
            if Arc::ptr_eq(&joined.flight, flight) {
                joined.uses = joined.uses.saturating_sub(1);
                if joined.uses == 0 {
                    self.flights.remove(tenant);
                }
            }
        }
    }

    /// `flight`, `tenant`'s lookup, ended (answered or failed): the uses that come from
    /// now on read the cache (or start another lookup), not its row.
    fn end_flight(&mut self, tenant: &TenantId, flight: &Arc<Flight>) {
        if self
            .flights
            .get(tenant)
            .is_some_and(|joined| Arc::ptr_eq(&joined.flight, flight))
        {
            self.flights.remove(tenant);
        }
    }

    /// Keeps a miss of `tenant`, read now: it is unknown without a lookup until the miss
    /// expires, and a lookup of it that started before is not kept. Past [`MAX_MISSES`],
    /// every lookup under way is not kept instead and the expired misses are forgotten
    /// (all of them, if none expired).
    fn insert_miss(&mut self, tenant: &TenantId) {
        if self.misses.len() >= MAX_MISSES && !self.misses.contains_key(tenant) {
            self.refreshed_at = self.tick();
            self.misses.retain(|_, miss| miss.fresh());
            if self.misses.len() >= MAX_MISSES {
                self.misses.clear();
            }
        }
        let miss = Miss {
            stamp: self.tick(),
            at: Instant::now(),
            ttl: self.ttl(),
        };
        self.misses.insert(tenant.clone(), miss);
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
                } else {
                    // Another lookup of this tenant may have read its row before it went;
                    // and the tenant is unknown without a lookup for an expiry.
                    self.insert_miss(tenant);
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

    /// The clock a lookup of `t` starts at (a miss: nothing fresh cached), with the
    /// expired entry it refreshes. A tenant with no entry: the clock its lookup starts
    /// at, its use left joined (as if a change had detached it, lookups of one tenant
    /// side by side).
    fn start_lookup(found: &mut Found, t: &TenantId) -> (u64, Option<(Arc<str>, u64)>) {
        match found.claim(t) {
            Claim::Refresh { started, stale } => (started, Some(stale)),
            Claim::Join(_) => {
                found.flights.remove(t);
                (found.clock, None)
            }
            Claim::Use(u) => panic!("{t} served {u} from the cache"),
            Claim::Unknown => panic!("{t} is a fresh miss"),
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
            _ => panic!("acme's lookup was not kept after a ghost's miss"),
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
        // Misses expire at once: the later lookup below is not served the miss.
        let mut found = Found::new(Duration::ZERO);
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
                _ => panic!("a second lookup while one refreshes acme"),
            }
        }
        found.end_refresh(&acme, stamp);
        assert!(matches!(found.claim(&acme), Claim::Refresh { .. }));
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

    /// The uses of a tenant with no entry share one lookup: it is removed when it ends,
    /// or when the last of its uses leaves it (their futures dropped), so a later use
    /// starts another; a use that joins after it ended never gets it.
    #[test]
    fn uses_of_a_tenant_with_no_entry_share_one_lookup() {
        let mut found = Found::new(Duration::from_secs(30));
        let acme = tenant("acme");
        let joined: Vec<Arc<Flight>> = (0..5)
            .map(|_| match found.claim(&acme) {
                Claim::Join(f) => f,
                _ => panic!("acme has no entry"),
            })
            .collect();
        assert!(joined.iter().all(|f| Arc::ptr_eq(f, &joined[0])));
        assert_eq!(found.flights.get(&acme).map(|j| j.uses), Some(5));
        // Every use dropped: the lookup is forgotten.
        for f in &joined {
            found.leave_flight(&acme, f);
        }
        assert!(found.flights.is_empty());
        // Ended: the next use starts another, the leaving uses touch it not.
        let Claim::Join(first) = found.claim(&acme) else {
            panic!("acme has no entry");
        };
        found.end_flight(&acme, &first);
        let Claim::Join(second) = found.claim(&acme) else {
            panic!("acme has no entry");
        };
        assert!(!Arc::ptr_eq(&first, &second));
        found.leave_flight(&acme, &first);
        assert_eq!(found.flights.get(&acme).map(|j| j.uses), Some(1));
        found.leave_flight(&acme, &second);
        assert!(found.flights.is_empty());
    }

    /// A tenant the table has no row for is unknown without a lookup until its miss
    /// expires; a kept row forgets the miss.
    #[test]
    fn a_miss_is_unknown_until_it_expires() {
        let mut found = Found::new(Duration::from_secs(30));
        let ghost = tenant("ghost");
        let (started, _) = start_lookup(&mut found, &ghost);
        assert_eq!(found.keep_lookup(&ghost, started, None), None);
        assert!(matches!(found.claim(&ghost), Claim::Unknown));
        // Added (by this store, or read by a later lookup): known at once.
        found.insert(ghost.clone(), url("g"));
        assert!(found.misses.is_empty());
        assert!(matches!(found.claim(&ghost), Claim::Use(u) if u == url("g")));
        // Expired at once: every use looks the tenant up.
        let mut found = Found::new(Duration::ZERO);
        let (started, _) = start_lookup(&mut found, &ghost);
        found.keep_lookup(&ghost, started, None);
        assert!(matches!(found.claim(&ghost), Claim::Join(_)));
    }

    /// Past [`MAX_MISSES`] tenants, the expired misses are forgotten first: the fresh
    /// ones stay unknown without a lookup; all fresh, all are forgotten.
    #[test]
    fn the_misses_stay_bounded() {
        let mut found = Found::new(Duration::from_secs(30));
        for n in 0..MAX_MISSES {
            let ghost = tenant(&format!("ghost{n}"));
            let (at, _) = start_lookup(&mut found, &ghost);
            found.keep_lookup(&ghost, at, None);
        }
        assert_eq!(found.misses.len(), MAX_MISSES);
        // Half of them expired.
        for (n, miss) in found.misses.iter_mut() {
            if n.as_str().ends_with(['0', '2', '4', '6', '8']) {
                miss.ttl = Duration::ZERO;
            }
        }
        let fresh = found.misses.values().filter(|m| m.fresh()).count();
        let extra = tenant("extra");
        let (at, _) = start_lookup(&mut found, &extra);
        found.keep_lookup(&extra, at, None);
        assert_eq!(found.misses.len(), fresh + 1);
        assert!(matches!(found.claim(&tenant("ghost1")), Claim::Unknown));
        assert!(matches!(found.claim(&extra), Claim::Unknown));
        // All fresh and full: all forgotten but the new one.
        while found.misses.len() < MAX_MISSES {
            let ghost = tenant(&format!("more{}", found.misses.len()));
            let (at, _) = start_lookup(&mut found, &ghost);
            found.keep_lookup(&ghost, at, None);
        }
        let last = tenant("last");
        let (at, _) = start_lookup(&mut found, &last);
        found.keep_lookup(&last, at, None);
        assert_eq!(found.misses.len(), 1);
        assert!(matches!(found.claim(&last), Claim::Unknown));
    }
}
