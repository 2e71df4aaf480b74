//! Request deadlines without a timer per request.
//!
//! Every request is bounded by the store's request timeout. A tokio timer per request
//! (`tokio::time::timeout`) is inserted into the runtime's timer wheel on its first poll
//! and removed when dropped, each under the wheel's lock: about 450 of a lone save's
//! client instructions and 50-70 of its code lines (BENCHMARKS.md). Instead the process
//! has one table of [`SLOTS`] deadline slots and one watcher thread. A request takes a
//! free slot, writes its deadline into it and registers its task's waker there; the
//! watcher sleeps until the earliest deadline in the table, a second at most while
//! requests come (parked for good once none came for two seconds), marks each slot whose
//! deadline passed as expired and wakes its request, which then ends as timed out. A
//! request whose deadline lies before the watcher's next wake-up unparks it to look
//! again: with time limits of seconds, only the first request after a quiet spell. The answer wins a tie: a request whose answers are in when it
//! is polled returns them even past its deadline, as `tokio::time::timeout` does.
//!
//! The watcher is a thread, not a task, so that it runs whatever runtime a request runs
//! on, one that shut down or is not being driven included; it measures real time (a
//! runtime whose clock is paused does not move it). A request falls back to a tokio timer
//! of its own when every slot is taken or the watcher thread could not be started.
//!
//! Owns: the deadline table and its watcher thread. May use: std, tokio's timer for the
//! fallback.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::task::{Context, Poll};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;

/// How many requests of the process can wait on the table at once; more fall back to a
/// timer each.
pub(crate) const SLOTS: usize = 256;

/// A slot's deadline value when no request holds it.
const FREE: u64 = 0;
/// A slot's deadline value once the watcher found its deadline passed.
const EXPIRED: u64 = 1;
/// Deadlines are milliseconds since the table's base plus this, so none is `FREE` or
/// `EXPIRED`.
const OFFSET: u64 = 2;
/// `next_wake` of a watcher parked until a request unparks it.
const NEVER: u64 = u64::MAX;
/// The longest the watcher sleeps while requests come: their deadlines (seconds away) then
/// lie after its next wake-up, and a request does not unpark it.
const IDLE: Duration = Duration::from_secs(1);
/// After this many wake-ups with no request in between, the watcher parks until the next
/// request unparks it.
const IDLE_ROUNDS: u32 = 2;

thread_local! {
    /// The slot this thread's last request took: the next one tries it first, so that
    /// one task's requests reuse one slot (its cache line stays with the thread) and
    /// threads do not contend for the first free slot.
    static HINT: Cell<usize> = const { Cell::new(0) };
}

/// A deadline table and its watcher thread (started with the first request): the
/// process's ([`Deadlines::global`]), or a test's own.
pub(crate) struct Deadlines {
    table: Arc<Table>,
    /// The watcher; `None` inside when it could not be started.
    watcher: OnceLock<Option<JoinHandle<()>>>,
}

/// The slots and what the watcher and the requests tell each other.
struct Table {
    base: Instant,
    slots: [Slot; SLOTS],
    /// The table's owner was dropped: the watcher ends.
    closed: AtomicBool,
    /// When the watcher wakes next, in deadline units ([`NEVER`]: parked). It writes this
    /// before it reads the slots, and a request reads it after writing its slot: either
    /// the watcher sees the request's deadline or the request sees when the watcher will
    /// look again.
    next_wake: AtomicU64,
    /// A request took a slot since the watcher's last look (set by requests, cleared by
    /// the watcher): a watcher that saw none for [`IDLE_ROUNDS`] parks for good.
    active: AtomicBool,
    /// How many times the watcher looked (for the tests).
    scans: AtomicU64,
}

/// One request's deadline and its task's waker, on cache lines of its own (two: the
/// prefetcher of x86 fetches lines in pairs).
#[repr(align(128))]
struct Slot {
    deadline: AtomicU64,
    waker: AtomicWaker,
}

impl Deadlines {
    /// The process's table.
    pub(crate) fn global() -> &'static Deadlines {
        static GLOBAL: LazyLock<Deadlines> = LazyLock::new(Deadlines::new);
        &GLOBAL
    }

    /// A table whose watcher starts with its first request.
    fn new() -> Self {
        Deadlines {
            table: Arc::new(Table {
                base: Instant::now(),
                slots: std::array::from_fn(|_| Slot {
                    deadline: AtomicU64::new(FREE),
                    waker: AtomicWaker::new(),
                }),
                closed: AtomicBool::new(false),
                next_wake: AtomicU64::new(NEVER),
                active: AtomicBool::new(false),
                scans: AtomicU64::new(0),
            }),
            watcher: OnceLock::new(),
        }
    }

    /// The watcher thread, started on first use; `None`: it could not be.
    fn watcher(&self) -> Option<&Thread> {
        self.watcher
            .get_or_init(|| {
                let table = Arc::downgrade(&self.table);
                std::thread::Builder::new()
                    .name("marten-deadlines".to_owned())
                    .spawn(move || watch(&table))
                    .ok()
            })
            .as_ref()
            .map(JoinHandle::thread)
    }

    /// A slot holding a deadline `limit` from now, or `None`: every slot is taken, or
    /// there is no watcher.
    fn arm(&self, limit: Duration) -> Option<Armed<'_>> {
        let watcher = self.watcher()?;
        let table = &*self.table;
        // One millisecond more: `now` rounds down, and the deadline must not come early.
        let deadline = table.now().saturating_add(millis(limit)).saturating_add(1);
        let first = HINT.get();
        for step in 0..SLOTS {
            let index = (first + step) % SLOTS;
            let slot = &table.slots[index];
            if slot.deadline.load(Ordering::Relaxed) != FREE
                || slot
                    .deadline
                    .compare_exchange(FREE, deadline, Ordering::SeqCst, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            HINT.set(index);
            if !table.active.load(Ordering::Relaxed) {
                table.active.store(true, Ordering::Relaxed);
            }
            if deadline < table.next_wake.load(Ordering::SeqCst) {
                watcher.unpark();
            }
            return Some(Armed { slot });
        }
        None
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        // Closed before the unpark: the watcher, woken now or finding the unpark's token
        // at its next park, sees it and ends.
        self.table.closed.store(true, Ordering::SeqCst);
        if let Some(Some(watcher)) = self.watcher.get() {
            watcher.thread().unpark();
        }
    }
}

pin_project! {
    /// A request's answers awaited within its time limit: `None` when the deadline passed
    /// first. One future holding the answers' in place (no layer of `async` around
    /// them, which would move them once more per layer where the compiler does not
    /// optimise); it takes its slot when first polled and frees it when dropped.
    pub(crate) struct Within<'d, F> {
        #[pin]
        answers: F,
        bound: Bound<'d>,
    }
}

/// What bounds a [`Within`].
enum Bound<'d> {
    /// No time limit.
    None,
    /// Not polled yet: the limit, and the table to take a slot of.
    Limit(&'d Deadlines, Duration),
    /// A slot of the table.
    Armed(Armed<'d>),
    /// A tokio timer of its own (every slot was taken, or there is no watcher).
    Timer(Pin<Box<tokio::time::Sleep>>),
}

impl<'d, F: Future> Within<'d, F> {
    /// `answers` bounded by `limit` on `deadlines` (`None`: not bounded).
    pub(crate) fn new(answers: F, limit: Option<(&'d Deadlines, Duration)>) -> Self {
        let bound = match limit {
            Some((deadlines, limit)) => Bound::Limit(deadlines, limit),
            None => Bound::None,
        };
        Within { answers, bound }
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Bound::Limit(deadlines, limit) = *this.bound {
            *this.bound = match deadlines.arm(limit) {
                Some(armed) => Bound::Armed(armed),
                None => Bound::Timer(Box::pin(tokio::time::sleep(limit))),
            };
        }
        if let Poll::Ready(answer) = this.answers.poll(cx) {
            return Poll::Ready(Some(answer));
        }
        match this.bound {
            Bound::Armed(armed) => armed.poll_expired(cx),
            Bound::Timer(timer) => timer.as_mut().poll(cx).map(|()| None),
            Bound::None | Bound::Limit(..) => Poll::Pending,
        }
    }
}

/// A slot a request holds; dropped (the request answered, timed out or was cancelled),
/// the slot is free again.
struct Armed<'t> {
    slot: &'t Slot,
}

impl Armed<'_> {
    /// Ready (`None`) once the watcher found the deadline passed; until then the task
    /// waits for its answers or for the watcher.
    fn poll_expired<T>(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Registered before the check: the watcher marks the slot expired and then
        // wakes the waker registered, so either the check sees the mark or the wake
        // reaches this task.
        self.slot.waker.register(cx.waker());
        if self.slot.deadline.load(Ordering::SeqCst) == EXPIRED {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        // The waker stays until the slot's next request replaces it (at most one task's
        // memory a slot): waking it late only wakes a task for nothing.
        self.slot.deadline.store(FREE, Ordering::Release);
    }
}

impl Table {
    /// Now, in deadline units.
    fn now(&self) -> u64 {
        OFFSET.saturating_add(millis(self.base.elapsed()))
    }

    /// Marks every slot whose deadline passed as expired and wakes its request; returns
    /// when to look again: the earliest deadline still pending, `cap` at the latest
    /// (`None`: never, until unparked). `cap` is published before the slots are read
    /// and what is returned is no later, so a request that reads either and finds its
    /// deadline earlier unparks the watcher, and one that finds it later is seen in time.
    fn expire_due(&self, now: u64, cap: u64) -> Option<Instant> {
        self.scans.fetch_add(1, Ordering::Relaxed);
        self.next_wake.store(cap, Ordering::SeqCst);
        let mut next = cap;
        for slot in &self.slots {
            let deadline = slot.deadline.load(Ordering::SeqCst);
            if deadline < OFFSET {
                continue;
            }
            if deadline > now {
                next = next.min(deadline);
            } else if slot
                .deadline
                .compare_exchange(deadline, EXPIRED, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                slot.waker.wake();
            }
        }
        self.next_wake.store(next, Ordering::SeqCst);
        // A deadline past what an `Instant` can hold never comes: park.
        self.base
            .checked_add(Duration::from_millis(next.checked_sub(OFFSET)?))
    }
}

/// The watcher: expires due slots and sleeps until the next deadline, [`IDLE`] at most
/// while requests come (so that they need not unpark it) and for good once none came for
/// [`IDLE_ROUNDS`] wake-ups; a request whose deadline is earlier unparks it. It ends once
/// the table is closed.
fn watch(table: &Weak<Table>) {
    let mut quiet = 0;
    loop {
        let Some(live) = table.upgrade() else {
            return;
        };
        if live.closed.load(Ordering::SeqCst) {
            return;
        }
        let now = live.now();
        let cap = if quiet >= IDLE_ROUNDS {
            NEVER
        } else {
            now.saturating_add(millis(IDLE))
        };
        let next = live.expire_due(now, cap);
        quiet = if live.active.swap(false, Ordering::Relaxed) {
            0
        } else {
            quiet.saturating_add(1)
        };
        drop(live);
        match next {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

/// Whole milliseconds in `d`, rounded up; saturating.
fn millis(d: Duration) -> u64 {
    let whole = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()));
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        whole
    } else {
        whole.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that never completes.
    fn never() -> std::future::Pending<()> {
        std::future::pending()
    }

    fn free_slots(d: &Deadlines) -> usize {
        d.table
            .slots
            .iter()
            .filter(|s| s.deadline.load(Ordering::SeqCst) == FREE)
            .count()
    }

    impl Deadlines {
        /// Awaits `answers` for at most `limit` on this table.
        fn within<F: Future>(&self, limit: Duration, answers: F) -> Within<'_, F> {
            Within::new(answers, Some((self, limit)))
        }

        /// Drops the table and hands back its watcher thread, to see it end.
        fn close(mut self) -> Option<JoinHandle<()>> {
            let watcher = self.watcher.take().flatten();
            self.table.closed.store(true, Ordering::SeqCst);
            if let Some(watcher) = &watcher {
                watcher.thread().unpark();
            }
            watcher
        }
    }

    #[tokio::test]
    async fn steady_requests_do_not_wake_the_watcher_each() {
        let d = Deadlines::new();
        for _ in 0..500 {
            let answered = d.within(Duration::from_secs(30), async {
                tokio::time::sleep(Duration::from_micros(200)).await;
            });
            assert_eq!(answered.await, Some(()));
        }
        let scans = d.table.scans.load(Ordering::Relaxed);
        assert!(
            scans <= 5,
            "the watcher looked {scans} times for 500 requests"
        );
    }

    #[tokio::test]
    async fn an_answer_in_time_is_returned_and_frees_its_slot() {
        let d = Deadlines::new();
        let answer = d
            .within(Duration::from_secs(5), async {
                tokio::task::yield_now().await;
                7
            })
            .await;
        assert_eq!(answer, Some(7));
        assert_eq!(free_slots(&d), SLOTS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_without_an_answer_ends_at_its_deadline_not_before() {
        let d = Arc::new(Deadlines::new());
        // A long request first: the watcher then sleeps until its deadline, and each
        // shorter one must wake it.
        let held = d.clone();
        let long = tokio::spawn(async move { held.within(Duration::from_secs(30), never()).await });
        for limit_ms in [30u64, 120, 300] {
            let limit = Duration::from_millis(limit_ms);
            let started = Instant::now();
            // Bounded by a timer of the test's own, so that a deadline missed fails.
            let ended = tokio::time::timeout(Duration::from_secs(5), d.within(limit, never()));
            assert_eq!(ended.await, Ok(None), "the request ends");
            let waited = started.elapsed();
            assert!(
                waited >= limit,
                "ended after {waited:?}, before its {limit:?}"
            );
            assert!(
                waited < limit + Duration::from_millis(250),
                "ended after {waited:?}, long after its {limit:?}"
            );
        }
        long.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_requests_free_their_slots() {
        let d = Arc::new(Deadlines::new());
        let waiting: Vec<_> = (0..SLOTS)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move { d.within(Duration::from_secs(60), never()).await })
            })
            .collect();
        let full = Instant::now() + Duration::from_secs(5);
        while free_slots(&d) > 0 {
            assert!(
                Instant::now() < full,
                "{} slots never taken",
                free_slots(&d)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for task in &waiting {
            task.abort();
        }
        for task in waiting {
            assert!(task.await.is_err_and(|e| e.is_cancelled()));
        }
        assert_eq!(free_slots(&d), SLOTS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_the_table_still_end_at_their_deadlines() {
        let d = Arc::new(Deadlines::new());
        let limit = Duration::from_millis(300);
        let started = Instant::now();
        let waiting: Vec<_> = (0..SLOTS * 2)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move { d.within(limit, never()).await })
            })
            .collect();
        for task in waiting {
            assert_eq!(task.await.expect("the request's task"), None);
        }
        let waited = started.elapsed();
        assert!(
            waited >= limit && waited < limit + Duration::from_secs(1),
            "{waited:?}"
        );
        assert_eq!(free_slots(&d), SLOTS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_requests_each_end_by_answer_or_deadline() {
        let d = Arc::new(Deadlines::new());
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let racers: Vec<_> = (0..32u64)
            .map(|i| {
                let (d, barrier) = (d.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut ended = (0, 0);
                    for round in 0..40u64 {
                        barrier.wait().await;
                        // Half answer at once, half never do.
                        let limit = Duration::from_millis(5 + (i + round) % 20);
                        let started = Instant::now();
                        let answer = if (i + round) % 2 == 0 {
                            d.within(limit, async { tokio::task::yield_now().await })
                                .await
                        } else {
                            d.within(limit, never()).await
                        };
                        match answer {
                            Some(()) => ended.0 += 1,
                            None => {
                                assert!(started.elapsed() >= limit, "ended early");
                                ended.1 += 1;
                            }
                        }
                    }
                    ended
                })
            })
            .collect();
        let all = async {
            let mut total = (0, 0);
            for racer in racers {
                let (answered, timed_out) = racer.await.expect("a racer");
                total = (total.0 + answered, total.1 + timed_out);
            }
            total
        };
        let (answered, timed_out) = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("every request ended");
        assert_eq!(answered, 640, "every answered request got its answer");
        assert_eq!(timed_out, 640, "every unanswered request timed out");
        assert_eq!(free_slots(&d), SLOTS);
    }

    #[test]
    fn requests_end_at_their_deadlines_on_any_runtime() {
        let d = Deadlines::new();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime")
        };
        // The watcher starts on the first runtime, which is then dropped; a second one,
        // never driven, is kept alive meanwhile: neither matters to the watcher.
        let first = runtime();
        assert_eq!(
            first.block_on(d.within(Duration::from_millis(20), never())),
            None
        );
        drop(first);
        let _idle = runtime();
        let second = runtime();
        let started = Instant::now();
        let answer = second.block_on(d.within(Duration::from_millis(50), never()));
        assert_eq!(answer, None);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_watcher_ends_with_its_table() {
        let d = Deadlines::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        assert_eq!(
            runtime.block_on(d.within(Duration::from_millis(5), never())),
            None
        );
        let watcher = d.close().expect("a watcher thread");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !watcher.is_finished() {
            assert!(Instant::now() < deadline, "the watcher ends with its table");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn limits_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_millis(5)), 5);
        assert_eq!(millis(Duration::from_micros(5_001)), 6);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
