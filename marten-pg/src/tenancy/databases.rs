//! The open tenant databases: one store (one pool) per connection string, opened on first
//! use by one caller while every other caller of that database waits for it (a failed or
//! abandoned open leaves nothing behind: the next caller tries again), and at most
//! `max_open` of them open: when another must open, the least recently used one that
//! nobody holds a handle of (no session, no store handle) is closed and forgotten. One in
//! use is never closed under its sessions: while more than `max_open` databases are in use
//! at once, that many stay open, and the surplus is closed at a later open, once idle.
//!
//! Generic over what it keeps ([`Pooled`]) so that its rules are tested without a
//! database. May use nothing of the crate but its error type.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use marten_core::Result;
use tokio::sync::OnceCell;
use tracing::debug;

/// What the cache keeps: a handle of something with a pool.
pub(super) trait Pooled: Clone {
    /// Closes its pool (connections in use close when they are given back).
    fn close(&self);
    /// Whether handles of it are held beyond the cache's own (sessions, stores).
    fn in_use(&self) -> bool;
}

/// How many times a caller whose database was closed under it while it waited (the
/// bound evicted it) tries again.
const ATTEMPTS: usize = 3;

/// The open databases, by connection string.
pub(super) struct Databases<S> {
    max_open: usize,
    state: Mutex<State<S>>,
}

struct State<S> {
    /// Bumped at every use: the order of last uses.
    clock: u64,
    slots: HashMap<Arc<str>, Slot<S>>,
}

struct Slot<S> {
    /// Empty until opened; its initialization is the single flight.
    cell: Arc<OnceCell<S>>,
    last_used: u64,
}

impl<S: Pooled> Databases<S> {
    /// At most `max_open` databases open at once (at least one).
    pub(super) fn new(max_open: usize) -> Self {
        Databases {
            max_open: max_open.max(1),
            state: Mutex::new(State {
                clock: 0,
                slots: HashMap::new(),
            }),
        }
    }

    /// The store of the database at `key`, opened with `open` if it is not open yet.
    /// Callers of one key share one open; other keys are opened in parallel.
    pub(super) async fn get<F, Fut>(&self, key: &str, open: F) -> Result<S>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<S>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let cell = self.touch(key);
            let opened = cell
                .get_or_try_init(|| async {
                    self.evict(Some(key), self.max_open - 1);
                    open().await
                })
                .await
                .cloned();
            let store = match opened {
                Ok(store) => store,
                Err(e) => {
                    self.forget_failed(key, &cell);
                    return Err(e);
                }
            };
            self.evict(Some(key), self.max_open);
            if self.is_current(key, &cell) || attempt >= ATTEMPTS {
                return Ok(store);
            }
            debug!("a tenant database was closed while it was being opened; opening it again");
        }
    }

    /// How many databases are open.
    pub(super) fn open_count(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|s| s.cell.initialized())
            .count()
    }

    /// Forgets the database at `key`, closing it unless it is in use (then its pool
    /// closes when its last session or handle is dropped).
    pub(super) fn remove(&self, key: &str) {
        let removed = self.lock().slots.remove(key);
        if let Some(store) = removed.as_ref().and_then(|s| s.cell.get()) {
            if !store.in_use() {
                store.close();
            }
        }
    }

    /// Closes and forgets every database.
    pub(super) fn close_all(&self) {
        let slots: Vec<Slot<S>> = self.lock().slots.drain().map(|(_, s)| s).collect();
        for store in slots.iter().filter_map(|s| s.cell.get()) {
            store.close();
        }
    }

    /// The slot of `key` (made if missing), marked as used now.
    fn touch(&self, key: &str) -> Arc<OnceCell<S>> {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let slot = state.slots.entry(Arc::from(key)).or_insert_with(|| Slot {
            cell: Arc::new(OnceCell::new()),
            last_used: now,
        });
        slot.last_used = now;
        slot.cell.clone()
    }

    /// Closes idle open databases other than `keep`, least recently used first, until at
    /// most `limit` are open or none is idle.
    fn evict(&self, keep: Option<&str>, limit: usize) {
        let mut victims = Vec::new();
        {
            let mut state = self.lock();
            loop {
                let open: Vec<(&Arc<str>, &Slot<S>)> = state
                    .slots
                    .iter()
                    .filter(|(_, s)| s.cell.initialized())
                    .collect();
                if open.len() <= limit {
                    break;
                }
                let victim = open
                    .iter()
                    .filter(|(k, s)| {
                        Some(&***k) != keep && !s.cell.get().is_some_and(Pooled::in_use)
                    })
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| Arc::clone(k));
                let Some(victim) = victim else {
                    break;
                };
                if let Some(slot) = state.slots.remove(&victim) {
                    victims.push(slot);
                }
            }
        }
        for store in victims.iter().filter_map(|s| s.cell.get()) {
            debug!("closing the least recently used tenant database");
            store.close();
        }
    }

    /// Forgets the slot of `key` if it is still `cell` and was never opened.
    fn forget_failed(&self, key: &str, cell: &Arc<OnceCell<S>>) {
        let mut state = self.lock();
        let failed = state
            .slots
            .get(key)
            .is_some_and(|s| Arc::ptr_eq(&s.cell, cell) && !s.cell.initialized());
        if failed {
            state.slots.remove(key);
        }
    }

    /// Whether `cell` is still the slot of `key` (it was not evicted meanwhile).
    fn is_current(&self, key: &str, cell: &Arc<OnceCell<S>>) -> bool {
        self.lock()
            .slots
            .get(key)
            .is_some_and(|s| Arc::ptr_eq(&s.cell, cell))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use marten_core::Error;

    #[derive(Clone)]
    struct Fake {
        name: &'static str,
        closed: Arc<AtomicBool>,
        handles: Arc<()>,
    }

    impl Fake {
        fn new(name: &'static str) -> Self {
            Fake {
                name,
                closed: Arc::default(),
                handles: Arc::default(),
            }
        }

        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::SeqCst)
        }
    }

    impl Pooled for Fake {
        fn close(&self) {
            self.closed.store(true, Ordering::SeqCst);
        }

        fn in_use(&self) -> bool {
            // Beyond the cache's own copy.
            Arc::strong_count(&self.handles) > 1
        }
    }

    async fn open(dbs: &Databases<Fake>, name: &'static str) -> Fake {
        match dbs.get(name, || async { Ok(Fake::new(name)) }).await {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn the_least_recently_used_database_is_closed_when_another_must_open() {
        let dbs = Databases::new(2);
        let a = open(&dbs, "a").await;
        drop(open(&dbs, "b").await);
        drop(open(&dbs, "a").await);
        let b = dbs.get("b", || async { panic!("b is open") }).await;
        assert!(b.is_ok());
        drop(b);
        drop(a);
        // b was used last: c replaces a, then a replaces b.
        drop(open(&dbs, "b").await);
        let c = open(&dbs, "c").await;
        assert_eq!(dbs.open_count(), 2);
        assert_eq!(c.name, "c");
        let again = open(&dbs, "a").await;
        assert!(!again.is_closed());
        assert_eq!(dbs.open_count(), 2);
    }

    #[tokio::test]
    async fn a_database_in_use_is_never_closed() {
        let dbs = Databases::new(2);
        let a = open(&dbs, "a").await; // held: in use
        let b = open(&dbs, "b").await;
        drop(open(&dbs, "c").await);
        assert!(!a.is_closed() && !b.is_closed(), "a and b are in use");
        assert_eq!(dbs.open_count(), 3, "beyond the bound while in use");
        drop(b);
        let d = open(&dbs, "d").await; // c and b idle: both closed
        assert!(!a.is_closed());
        assert_eq!(dbs.open_count(), 2);
        drop((a, d));
        let dbs1 = Databases::new(1);
        let a = open(&dbs1, "a").await;
        drop(open(&dbs1, "b").await);
        assert!(!a.is_closed());
        drop(a);
        drop(open(&dbs1, "c").await);
        assert_eq!(dbs1.open_count(), 1);
    }

    #[tokio::test]
    async fn concurrent_first_uses_open_once_and_failures_are_not_kept() {
        let dbs = Databases::new(4);
        let opens = AtomicUsize::new(0);
        let slow = || async {
            opens.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Fake::new("a"))
        };
        let (x, y) = tokio::join!(dbs.get("a", slow), dbs.get("a", slow));
        assert!(x.is_ok() && y.is_ok());
        assert_eq!(opens.load(Ordering::SeqCst), 1);

        let failing = dbs
            .get("b", || async { Err(Error::Configuration("down".into())) })
            .await;
        assert!(failing.is_err());
        assert_eq!(dbs.open_count(), 1);
        assert!(dbs.get("b", || async { Ok(Fake::new("b")) }).await.is_ok());
        dbs.remove("b");
        assert_eq!(dbs.open_count(), 1);
        dbs.close_all();
        assert_eq!(dbs.open_count(), 0);
    }
}
