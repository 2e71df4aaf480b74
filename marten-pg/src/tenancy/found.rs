//! What a [`TenantedStore`](super::TenantedStore) knows of the master database's lookup
//! table: the tenants found before (entries that expire), the tenants found in no row
//! (misses), the lookups of tenants with no entry under way (flights), and the clock
//! that tells a read of the table whether a change of this store overlapped it. The
//! rules that keep this cache from ever being older than this store's changes, or than a
//! newer read of the table, are in `tenants.rs`, which reads and writes it under its
//! lock. Uses the tenant ids and the error type only.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use marten_core::{Error, TenantId};
use tokio::sync::OnceCell;

use super::databases::replicate;

/// The share of the cache expiry an entry may lose to jitter (at most a tenth): entries
/// read together (by [`tenants`](super::TenantedStore::tenants)) expire spread over that time
/// instead of all at once.
pub(super) const EXPIRY_JITTER_DIVISOR: u32 = 10;

/// The tenants found in the lookup table (or added through this store), with what keeps
/// a read of the table that overlapped a change of it from being kept.
pub(super) struct Found {
    /// Tenant -> connection string of its database.
    pub(super) tenants: HashMap<TenantId, Entry>,
    /// How long an entry is used before its row is read again (less a little jitter).
    pub(super) expiry: Duration,
    /// Bumped at every write of the cache: when an add or remove starts and ends, when a
    /// lookup or a read of the whole table is kept.
    pub(super) clock: u64,
    /// The clock when an add or remove last started or ended.
    pub(super) changed_at: u64,
    /// The clock when a read of the whole table last changed the cache, or a lookup
    /// forgot a tenant another process removed.
    pub(super) refreshed_at: u64,
    /// Adds and removes under way (their statement may be in flight).
    pub(super) changing: usize,
    /// The tenants a lookup found no row for while they were not cached: used as
    /// unknown without a lookup until the miss expires, and a lookup of that tenant
    /// that started before the miss (and read the row before another process removed
    /// it) is not kept. At most [`MAX_MISSES`]; past that, every lookup under way is not
    /// kept instead ([`Found::refreshed_at`]) and the expired misses are forgotten (all
    /// of them, if they are all fresh).
    pub(super) misses: HashMap<TenantId, Miss>,
    /// The lookups of tenants with no entry under way, each shared by the uses of its
    /// tenant that arrive meanwhile; removed when it ends, when the last of its uses is
    /// dropped, or when a change or a read of the whole table detaches it.
    pub(super) flights: HashMap<TenantId, Joined>,
}

/// The longest a tenant found in no row is unknown without a lookup (less if the cache
/// expiry is shorter): long enough that made-up tenant ids cost the master database a
/// lookup each per that time, short enough that a tenant another process adds is found
/// soon (a sign-up handled by one node, its first request by another).
pub(super) const MISS_EXPIRY: Duration = Duration::from_secs(2);

/// The most tenants whose missing rows [`Found`] remembers one by one.
pub(super) const MAX_MISSES: usize = 1024;

/// A tenant a lookup found no row for (while it was not cached).
pub(super) struct Miss {
    /// The clock when it was kept.
    pub(super) stamp: u64,
    /// When it was read.
    pub(super) at: Instant,
    /// How long the tenant is unknown from `at` without a lookup: the store's expiry
    /// less a little jitter.
    pub(super) ttl: Duration,
}

impl Miss {
    /// Whether the tenant is unknown without a lookup.
    pub(super) fn fresh(&self) -> bool {
        self.at.elapsed() < self.ttl
    }
}

/// The lookup of a tenant that had no entry, shared by the uses of the tenant that
/// arrive while it runs (single flight). The use whose turn it is runs it (the first;
/// if its future is dropped, the next waiting use takes over); the others wait for its
/// row. When it fails, the uses that waited fail with a copy of its error (the same
/// variant and text, naming the tenant) instead of each running a lookup of their own:
/// a master database that is down costs a burst one failed lookup, not one each.
pub(super) struct Flight {
    /// The row read: the connection string, or `None` when the table has no row.
    pub(super) row: OnceCell<Option<Arc<str>>>,
    /// The error of the lookup, when it failed, copied for the uses that waited for it.
    pub(super) failure: Mutex<Option<Error>>,
}

impl Flight {
    pub(super) fn new() -> Self {
        Flight {
            row: OnceCell::new(),
            failure: Mutex::new(None),
        }
    }

    /// Records the lookup's failure: the uses waiting for it fail with `e`'s copy.
    pub(super) fn fail(&self, e: &Error) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(replicate(e));
    }

    /// A copy of the error of the lookup, if it failed.
    pub(super) fn failure(&self) -> Option<Error> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(replicate)
    }
}

/// A lookup in [`Found::flights`] with the number of uses joined to it.
pub(super) struct Joined {
    pub(super) flight: Arc<Flight>,
    pub(super) uses: usize,
}

/// A tenant's connection string as found in the table (or written to it).
pub(super) struct Entry {
    pub(super) url: Arc<str>,
    /// When it was read (or written).
    pub(super) at: Instant,
    /// How long it is used from `at`: the store's expiry less a little jitter.
    pub(super) ttl: Duration,
    /// The clock when it was written to the cache.
    pub(super) stamp: u64,
    /// Whether a lookup reading its row again (it expired) is under way: the other uses
    /// of the tenant are served this entry meanwhile instead of reading the row too.
    pub(super) refreshing: bool,
}

impl Entry {
    /// Whether it is used without reading its row again.
    pub(super) fn fresh(&self) -> bool {
        self.at.elapsed() < self.ttl
    }
}

/// What a use of a tenant does with the tenants found before ([`Found::claim`]).
pub(super) enum Claim {
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
    pub(super) fn unchanged_since(&self, started: u64) -> bool {
        self.clock == started && self.changing == 0
    }

    /// Whether a lookup of `tenant` that started at clock `started` may be kept: no change
    /// started or ended since nor is under way, no read of the whole table changed the
    /// cache since, and the tenant's entry was not written since (by a newer read).
    pub(super) fn lookup_keeps(&self, tenant: &TenantId, started: u64) -> bool {
        self.changing == 0
            && self.changed_at <= started
            && self.refreshed_at <= started
            && self.tenants.get(tenant).is_none_or(|e| e.stamp <= started)
            && self.misses.get(tenant).is_none_or(|m| m.stamp <= started)
    }

    /// Bumps the clock: the stamp of a write.
    pub(super) fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The expiry of an entry written now: the store's, less up to a tenth of it.
    pub(super) fn ttl(&self) -> Duration {
        let random = RandomState::new().build_hasher().finish() % 1000;
        let jitter =
            self.expiry.as_nanos() / u128::from(EXPIRY_JITTER_DIVISOR) * u128::from(random) / 1000;
        self.expiry.saturating_sub(Duration::from_nanos(
            u64::try_from(jitter).unwrap_or(u64::MAX),
        ))
    }

    /// An entry for `url` read (or written) now with `stamp`.
    pub(super) fn entry(&self, url: Arc<str>, stamp: u64) -> Entry {
        Entry {
            url,
            at: Instant::now(),
            ttl: self.ttl(),
            stamp,
            refreshing: false,
        }
    }

    /// Keeps `url` for `tenant`, read (or written) now.
    pub(super) fn insert(&mut self, tenant: TenantId, url: Arc<str>) -> Option<Arc<str>> {
        self.misses.remove(&tenant);
        let stamp = self.tick();
        let entry = self.entry(url, stamp);
        self.tenants.insert(tenant, entry).map(|e| e.url)
    }

    /// What a use of `tenant` does: use its entry (fresh, or expired while another use
    /// reads its row again), fail as unknown (a fresh miss), or read its row; the use that
    /// reads the row of an expired entry owns its refresh (one at a time per tenant), the
    /// uses of a tenant with no entry share one lookup.
    pub(super) fn claim(&mut self, tenant: &TenantId) -> Claim {
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
    pub(super) fn leave_flight(&mut self, tenant: &TenantId, flight: &Arc<Flight>) {
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
    pub(super) fn end_flight(&mut self, tenant: &TenantId, flight: &Arc<Flight>) {
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
    pub(super) fn insert_miss(&mut self, tenant: &TenantId) {
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
            ttl: self.ttl().min(MISS_EXPIRY),
        };
        self.misses.insert(tenant.clone(), miss);
    }

    /// Ends the refresh of `tenant`'s entry of `stamp`, unless it was replaced meanwhile.
    pub(super) fn end_refresh(&mut self, tenant: &TenantId, stamp: u64) {
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
    pub(super) fn keep_lookup(
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
    pub(super) fn keep_stale(&mut self, tenant: &TenantId, stamp: u64) -> Option<Arc<str>> {
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
