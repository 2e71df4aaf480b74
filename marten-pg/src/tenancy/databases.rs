//! The open tenant databases: one store (one pool) per connection string, opened on first
//! use by one caller while every other caller of that database waits for it. An open that
//! fails fails every caller that was already waiting for it, with a copy of its error (so
//! a database that is down costs its waiters one attempt, not one each); a caller that
//! comes after it ended tries again. An abandoned open (its caller's future dropped) is
//! taken over by one of its waiters. A failed or abandoned open leaves nothing behind. At
//! most `max_open` databases are open: once another opened, the least recently used one
//! that nobody holds a handle of (no session, no store handle) is closed and forgotten;
//! an open that fails closes nothing. One in use is never closed under its sessions:
//! while more than `max_open` databases are in use at once, that many stay open, and the
//! surplus is closed at a later open, once idle.
//!
//! A caller never gets a closed store: a store is handed out by cloning it under the lock
//! of the cache, and a database being opened counts as in use from the moment a caller
//! waits for it until each of its waiters (the opener among them) took its handle, so the
//! bound never closes it in between. Only [`remove`](Databases::remove) and
//! [`close_all`](Databases::close_all) forget a database under its waiters; they open it
//! again, a few times at most, then fail with a typed error.
//!
//! Generic over what it keeps ([`Pooled`]) so that its rules are tested without a
//! database. May use nothing of the crate but its error type.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use marten_core::{DatabaseError, Error, Result};
use tokio::sync::OnceCell;
use tracing::debug;

/// What the cache keeps: a handle of something with a pool.
pub(super) trait Pooled: Clone {
    /// Closes its pool (connections in use close when they are given back).
    fn close(&self);
    /// Whether handles of it are held beyond the cache's own (sessions, stores).
    fn in_use(&self) -> bool;
}

/// How many times a caller whose database was forgotten while it waited for its opening
/// ([`Databases::remove`], [`Databases::close_all`]) tries again.
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
    cell: Arc<Cell<S>>,
    last_used: u64,
    /// Callers that found it not open yet and have not taken their handle of it (the
    /// opener among them): while there is one, it is in use and never evicted.
    waiting: usize,
}

/// The opening of one database, shared by its callers.
struct Cell<S> {
    /// The store once opened.
    store: OnceCell<S>,
    /// How many opens of it failed: a caller that joined when it was `n` and finds it
    /// above `n` waited for an open that failed, and fails with its error.
    failures: AtomicU64,
    /// The error of the last failed open, copied for the callers that waited for it.
    last_failure: Mutex<Option<Error>>,
}

impl<S> Cell<S> {
    fn new() -> Self {
        Cell {
            store: OnceCell::new(),
            failures: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        }
    }

    fn get(&self) -> Option<&S> {
        self.store.get()
    }

    fn initialized(&self) -> bool {
        self.store.initialized()
    }

    /// Records the failure of an open: the callers waiting for it fail with `e`'s copy.
    fn failed(&self, e: &Error) {
        let mut last = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last = Some(replicate(e));
        self.failures.fetch_add(1, Ordering::SeqCst);
    }

    /// A copy of the error of an open that failed since the caller joined at `seen`
    /// failures, if one did.
    fn failure_since(&self, seen: u64) -> Option<Error> {
        if self.failures.load(Ordering::SeqCst) <= seen {
            return None;
        }
        let last = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(last.as_ref().map_or_else(
            || {
                Error::Connection(DatabaseError {
                    code: None,
                    context: "opening a tenant database (another caller's open failed)".to_owned(),
                    source: "the open failed".into(),
                })
            },
            replicate,
        ))
    }
}

/// What a caller finds in the cache.
enum Joined<'a, S: Pooled> {
    /// The database is open: a handle of its store, taken under the lock.
    Open(S),
    /// The database is not open yet: the caller waits for it (or opens it).
    Opening(Waiting<'a, S>),
}

/// A caller waiting for a database to open, counted in its slot's `waiting` until it is
/// dropped (after it took its handle, or with the caller's future).
struct Waiting<'a, S: Pooled> {
    databases: &'a Databases<S>,
    key: Arc<str>,
    cell: Arc<Cell<S>>,
    /// The failures of the cell when the caller joined.
    seen: u64,
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
    /// Callers of one key share one open; other keys are opened in parallel. When the
    /// open fails, every caller that was waiting for it fails with (a copy of) its error;
    /// a caller that comes after tries again. The store returned is never closed by the
    /// cache while the caller holds it. Fails with [`Error::Connection`] when the
    /// database was forgotten ([`remove`](Self::remove), [`close_all`](Self::close_all))
    /// each time it was opened.
    pub(super) async fn get<F, Fut>(&self, key: &str, open: F) -> Result<S>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<S>>,
    {
        for _ in 0..ATTEMPTS {
            let waiting = match self.join(key) {
                Joined::Open(store) => {
                    self.evict(Some(key), self.max_open);
                    return Ok(store);
                }
                Joined::Opening(waiting) => waiting,
            };
            let cell = &waiting.cell;
            cell.store
                .get_or_try_init(|| async {
                    // The turn of a caller that waited for an open that failed: its error.
                    if let Some(e) = cell.failure_since(waiting.seen) {
                        return Err(e);
                    }
                    // Nothing is closed before the open succeeded: the bound makes room
                    // once the new store exists (below).
                    let opened = open().await;
                    if let Err(e) = &opened {
                        cell.failed(e);
                    }
                    opened
                })
                .await?;
            if let Some(store) = waiting.take() {
                self.evict(Some(key), self.max_open);
                return Ok(store);
            }
            debug!("a tenant database was closed while it was being opened; opening it again");
        }
        Err(Error::Connection(DatabaseError {
            code: None,
            context: "opening a tenant database: it was closed each time it was opened (the \
                      tenanted store was closed or the tenant removed meanwhile)"
                .to_owned(),
            source: "the database was closed while it was being opened".into(),
        }))
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
    /// closes when its last session or handle is dropped). Callers waiting for it to open
    /// open it again.
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

    /// The slot of `key` (made if missing), marked as used now: a handle of its store if
    /// it is open, else the caller counted as waiting for it.
    fn join(&self, key: &str) -> Joined<'_, S> {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let slot = state.slots.entry(Arc::from(key)).or_insert_with(|| Slot {
            cell: Arc::new(Cell::new()),
            last_used: now,
            waiting: 0,
        });
        slot.last_used = now;
        if let Some(store) = slot.cell.get() {
            return Joined::Open(store.clone());
        }
        slot.waiting += 1;
        Joined::Opening(Waiting {
            databases: self,
            key: Arc::from(key),
            seen: slot.cell.failures.load(Ordering::SeqCst),
            cell: slot.cell.clone(),
        })
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
                        Some(&***k) != keep
                            && s.waiting == 0
                            && !s.cell.get().is_some_and(Pooled::in_use)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Pooled> Waiting<'_, S> {
    /// A handle of the opened store, taken under the lock while the slot is still the
    /// one waited for (and so not closed); `None` if it was forgotten meanwhile.
    fn take(self) -> Option<S> {
        let state = self.databases.lock();
        let current = state
            .slots
            .get(&*self.key)
            .is_some_and(|s| Arc::ptr_eq(&s.cell, &self.cell));
        let store = if current {
            self.cell.get().cloned()
        } else {
            None
        };
        drop(state);
        store
    }
}

impl<S: Pooled> Drop for Waiting<'_, S> {
    /// No longer waiting; a slot nobody waits for that never opened (its open failed or
    /// was abandoned) is forgotten.
    fn drop(&mut self) {
        let mut state = self.databases.lock();
        let forget = match state.slots.get_mut(&*self.key) {
            Some(slot) if Arc::ptr_eq(&slot.cell, &self.cell) => {
                slot.waiting = slot.waiting.saturating_sub(1);
                slot.waiting == 0 && !slot.cell.initialized()
            }
            _ => false,
        };
        if forget {
            state.slots.remove(&*self.key);
        }
    }
}

/// A copy of `e` for the callers that waited for the open (or the tenant lookup,
/// `tenants.rs`) that failed with it: the same variant and text, the underlying error
/// kept as its text (with its own sources).
pub(super) fn replicate(e: &Error) -> Error {
    let db = |d: &DatabaseError| DatabaseError {
        code: d.code.clone(),
        context: d.context.clone(),
        source: sources_of(d).into(),
    };
    match e {
        Error::Connection(d) => Error::Connection(db(d)),
        Error::Authentication(d) => Error::Authentication(db(d)),
        Error::TooManyConnections(d) => Error::TooManyConnections(db(d)),
        Error::Database(d) => Error::Database(db(d)),
        Error::Canceled(d) => Error::Canceled(db(d)),
        Error::LockNotAvailable(d) => Error::LockNotAvailable(db(d)),
        Error::OutcomeUnknown(d) => Error::OutcomeUnknown(db(d)),
        Error::Conflict { kind, source } => Error::Conflict {
            kind: *kind,
            source: db(source),
        },
        Error::Tls { kind, source } => Error::Tls {
            kind: *kind,
            source: db(source),
        },
        Error::Timeout { what } => Error::Timeout { what: what.clone() },
        Error::Configuration(m) => Error::Configuration(m.clone()),
        Error::SchemaObjectMissing { object } => Error::SchemaObjectMissing {
            object: object.clone(),
        },
        Error::SchemaMismatch { differences } => Error::SchemaMismatch {
            differences: differences.clone(),
        },
        Error::UnsupportedServerVersion { found, required } => Error::UnsupportedServerVersion {
            found: found.clone(),
            required: *required,
        },
        Error::PoolExhausted { size, waited_ms } => Error::PoolExhausted {
            size: *size,
            waited_ms: *waited_ms,
        },
        Error::NameConflict {
            first,
            second,
            name,
        } => Error::NameConflict {
            first,
            second,
            name: name.clone(),
        },
        Error::UnknownTenant { tenant } => Error::UnknownTenant {
            tenant: tenant.clone(),
        },
        other => Error::Database(DatabaseError {
            code: None,
            context: format!("opening or looking up a tenant database: {other}"),
            source: error_chain(other).into(),
        }),
    }
}

/// The text of `d`'s underlying error and of its sources, joined by `: `.
fn sources_of(d: &DatabaseError) -> String {
    error_chain(&*d.source)
}

/// The text of `e` and of its sources, joined by `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        text.push_str(": ");
        text.push_str(&source.to_string());
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::Poll;
    use std::time::Duration;

    use tokio::sync::Semaphore;

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

    /// Callers waiting for an open that fails get its error, not an open of their own
    /// each, one after another: ten callers of a database that is down all fail within
    /// about one attempt's time, with one open; a caller after them tries again.
    #[tokio::test]
    async fn waiters_of_an_open_that_fails_get_its_error() {
        let dbs = Databases::new(4);
        let opens = AtomicUsize::new(0);
        let down = || async {
            opens.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err::<Fake, _>(Error::Configuration("down".into()))
        };
        let started = std::time::Instant::now();
        let gets: Vec<_> = (0..10).map(|_| dbs.get("a", down)).collect();
        let results = futures_util::future::join_all(gets).await;
        let took = started.elapsed();
        for r in &results {
            match r {
                Err(Error::Configuration(m)) => assert_eq!(m, "down"),
                Err(e) => panic!("expected the open's error: {e}"),
                Ok(_) => panic!("expected the open's error, got a store"),
            }
        }
        assert_eq!(opens.load(Ordering::SeqCst), 1, "one open for every waiter");
        assert!(took < Duration::from_millis(500), "took {took:?}");
        assert_eq!(dbs.open_count(), 0);
        // A later caller tries again.
        assert!(dbs.get("a", down).await.is_err());
        assert_eq!(opens.load(Ordering::SeqCst), 2);
        assert!(!open(&dbs, "a").await.is_closed());
    }

    /// An open that fails closes nothing: with room for two databases, a and b open and
    /// idle, two failed opens of c leave a and b open.
    #[tokio::test]
    async fn a_failed_open_closes_no_open_database() {
        let dbs = Databases::new(2);
        let a = open(&dbs, "a").await;
        let b = open(&dbs, "b").await;
        let (a_closed, b_closed) = (a.closed.clone(), b.closed.clone());
        drop((a, b)); // idle
        for _ in 0..2 {
            let c = dbs
                .get("c", || async {
                    Err::<Fake, _>(Error::Configuration("down".into()))
                })
                .await;
            assert!(c.is_err());
        }
        assert!(
            !a_closed.load(Ordering::SeqCst) && !b_closed.load(Ordering::SeqCst),
            "a failed open closed an idle database"
        );
        assert_eq!(dbs.open_count(), 2);
        // A successful one makes room once it opened.
        drop(open(&dbs, "c").await);
        assert!(
            a_closed.load(Ordering::SeqCst),
            "a, least recently used, closed"
        );
        assert_eq!(dbs.open_count(), 2);
    }

    /// Polls `f` once.
    async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
    }

    /// An open of `name` that waits for a permit of `gate` (and uses it up).
    async fn gated(gate: &Semaphore, name: &'static str) -> Result<Fake> {
        if let Ok(permit) = gate.acquire().await {
            permit.forget();
        }
        Ok(Fake::new(name))
    }

    /// A caller waiting for another's open of its database is never handed it closed: with
    /// room for one open database, the opener finishes and drops its handle, and another
    /// database opens before the waiter runs again, which closed the one it waited for
    /// (nobody seemed to use it) - three times in a row, until the waiter gave up trying
    /// and took the closed store.
    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_never_gets_the_database_it_waited_for_closed() {
        let dbs = Arc::new(Databases::new(1));
        let gate = Semaphore::new(0);
        let instant = |name: &'static str| move || async move { Ok(Fake::new(name)) };
        let open_a = || gated(&gate, "a");
        let mut opener = Box::pin(dbs.get("a", &open_a));
        let mut first = poll_once(&mut opener).await;
        assert!(first.is_pending(), "the opener waits at the gate");
        let waiter = tokio::spawn({
            let dbs = dbs.clone();
            async move { dbs.get("a", instant("a")).await }
        });
        tokio::task::yield_now().await; // the waiter waits for the opener's open
        for round in 0..ATTEMPTS {
            gate.add_permits(1);
            let opened = match first {
                Poll::Ready(opened) => opened,
                Poll::Pending => opener.await,
            };
            drop(opened.map(|a| assert!(!a.is_closed())));
            // Opening b closes a if it looks idle.
            drop(open(&dbs, "b").await);
            // The next opener of a, in place before the waiter runs again.
            opener = Box::pin(dbs.get("a", &open_a));
            first = if round + 1 < ATTEMPTS {
                poll_once(&mut opener).await
            } else {
                Poll::Ready(Ok(Fake::new("unused")))
            };
            tokio::task::yield_now().await; // the waiter takes its handle, or waits again
        }
        let got = match waiter.await {
            Ok(Ok(store)) => store,
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(got.name, "a");
        assert!(!got.is_closed(), "the waiter was handed a closed store");
    }

    /// A database forgotten (removed, or every database closed) each time it finished
    /// opening is a typed error after a few attempts, not a store handed out anyway.
    #[tokio::test]
    async fn a_database_forgotten_at_every_open_is_a_typed_error() {
        let dbs = Databases::new(2);
        let gate = Semaphore::new(0);
        let mut get = Box::pin(dbs.get("a", || gated(&gate, "a")));
        for _ in 0..ATTEMPTS {
            assert!(poll_once(&mut get).await.is_pending());
            dbs.remove("a");
            gate.add_permits(1);
        }
        match get.await {
            Err(Error::Connection(e)) => assert!(e.context.contains("tenant database"), "{e}"),
            Err(e) => panic!("expected a connection error: {e}"),
            Ok(_) => panic!("expected a connection error, got a store"),
        }
        assert_eq!(dbs.open_count(), 0);
        // The next use opens it.
        assert!(!open(&dbs, "a").await.is_closed());
    }

    /// Many callers of many databases at once on two threads, with room for one open
    /// database: each gets its database's store and never a closed one (one the bound
    /// closed after it opened and before its caller took its handle, while nobody seemed
    /// to use it); half of them hold it a while, and it is not closed under them either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_never_gets_a_closed_database() {
        const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
        let dbs = Arc::new(Databases::new(1));
        let closed = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (dbs, closed) = (dbs.clone(), closed.clone());
                tokio::spawn(async move {
                    for round in 0..100 {
                        let key = KEYS[(i + round) % KEYS.len()];
                        let opened = dbs
                            .get(key, move || async move {
                                tokio::task::yield_now().await;
                                Ok(Fake::new(key))
                            })
                            .await;
                        let store = match opened {
                            Ok(store) => store,
                            Err(e) => panic!("{e}"),
                        };
                        assert_eq!(store.name, key);
                        if store.is_closed() {
                            closed.fetch_add(1, Ordering::SeqCst);
                        }
                        if i % 2 == 0 {
                            // Held: in use, never closed under its holder.
                            tokio::task::yield_now().await;
                            if store.is_closed() {
                                closed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                panic!("{e}");
            }
        }
        assert_eq!(closed.load(Ordering::SeqCst), 0, "closed stores handed out");
    }
}
