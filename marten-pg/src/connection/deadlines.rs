//! Request deadlines without a timer per request, and the one timer a store keeps
//! pending on its runtime.
//!
//! Every request is bounded by the store's request timeout. A tokio timer per request
//! (`tokio::time::timeout`) is inserted into the runtime's timer wheel on its first poll
//! and removed when dropped, each under the wheel's lock: about 400 of a lone append's
//! 21,800 client instructions, and 1-2 points of its ratio to raw tokio-postgres
//! (BENCHMARKS.md). Instead a store has a table of [`SLOTS`] deadline slots and one
//! watcher task. A request takes a free slot, writes its deadline into it and registers
//! its task's waker there; the watcher sleeps until the earliest deadline in the table,
//! or [`IDLE`] at most, marks each slot whose deadline passed as expired and wakes its
//! request, which then ends as timed out. A request whose deadline lies before the
//! watcher's next wake-up (a limit shorter than [`IDLE`]) wakes the watcher so that it
//! sleeps less. The answer wins a tie: a request whose answers are in when it is polled
//! returns them even past its deadline, as `tokio::time::timeout` does.
//!
//! The watcher also keeps a timer pending on the runtime at all times. Tokio wakes the
//! thread that drives I/O and timers whenever a timer is registered that is due before
//! every timer already pending, and with none pending any timer is: with the bounded
//! waits left on tokio timers (the pool's wait, making a connection, the fallback below)
//! each would wake that thread. Counted with `strace` over 2,000 lone appends, a timer
//! per request on an otherwise idle runtime cost one more `write`, two to three more
//! `futex` and one more `epoll_wait` per append than raw tokio-postgres; with a timer
//! pending, the counts are raw's.
//!
//! A request falls back to a tokio timer of its own when every slot is taken, when the
//! store was built outside a runtime (there is no watcher), or when the watcher's
//! runtime shut down. The watcher ends at its first wake-up after the store (every
//! [`Deadlines`] handle) is dropped, or with its runtime.
//!
//! Owns: the deadline table and the watcher task. May use: tokio.

use std::cell::Cell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// The longest the watcher sleeps: shorter than any time limit worth setting on a
/// request, so that their timers lie after it; long enough to cost nothing.
pub(crate) const IDLE: Duration = Duration::from_secs(1);

/// How many requests of a store can wait on the table at once; more fall back to a
/// timer each.
pub(crate) const SLOTS: usize = 64;

/// A slot's deadline value when no request holds it.
const FREE: u64 = 0;
/// A slot's deadline value once the watcher found its deadline passed.
const EXPIRED: u64 = 1;
/// Deadlines are milliseconds since the table's base plus this, so none is `FREE` or
/// `EXPIRED`.
const OFFSET: u64 = 2;

thread_local! {
    /// The slot this thread's last request took: the next one tries it first, so that
    /// one task's requests reuse one slot (its cache line stays with the thread) and
    /// threads do not contend for the first free slot.
    static HINT: Cell<usize> = const { Cell::new(0) };
}

/// A store's deadline table and the watcher it runs (none outside a runtime). Clones
/// share them (a replica's connector uses its primary's).
#[derive(Clone, Default)]
pub(crate) struct Deadlines {
    table: Option<Arc<Table>>,
}

/// The slots and what the watcher and the requests tell each other.
struct Table {
    base: Instant,
    slots: [Slot; SLOTS],
    /// When the watcher wakes next, in deadline units. It writes this before it reads
    /// the slots, and a request reads it after writing its slot: either the watcher sees
    /// the request's deadline or the request sees when the watcher will look again.
    next_wake: AtomicU64,
    /// The watcher runs: cleared when its runtime drops it.
    watching: AtomicBool,
    /// Wakes the watcher early.
    nudge: Arc<Notify>,
}

/// One request's deadline and its task's waker, on a cache line of its own.
#[repr(align(64))]
struct Slot {
    deadline: AtomicU64,
    waker: AtomicWaker,
}

impl Deadlines {
    /// A table and its watcher on the current runtime; without a runtime, none (every
    /// request then uses a timer of its own).
    pub(crate) fn start() -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self::default();
        };
        let table = Arc::new(Table {
            base: Instant::now(),
            slots: std::array::from_fn(|_| Slot {
                deadline: AtomicU64::new(FREE),
                waker: AtomicWaker::new(),
            }),
            next_wake: AtomicU64::new(OFFSET),
            watching: AtomicBool::new(true),
            nudge: Arc::new(Notify::new()),
        });
        let watched = Arc::downgrade(&table);
        runtime.spawn(watch(
            watched.clone(),
            table.nudge.clone(),
            Watching(watched),
        ));
        Self { table: Some(table) }
    }

    /// Awaits `answers` for at most `limit`: `None` when the deadline passed first.
    pub(crate) async fn within<T>(
        &self,
        limit: Duration,
        answers: impl Future<Output = T>,
    ) -> Option<T> {
        let mut answers = pin!(answers);
        match self.arm(limit) {
            Some(armed) => std::future::poll_fn(|cx| armed.poll(cx, answers.as_mut())).await,
            None => tokio::time::timeout(limit, answers).await.ok(),
        }
    }

    /// A slot holding a deadline `limit` from now, or `None`: no watcher runs, or every
    /// slot is taken.
    fn arm(&self, limit: Duration) -> Option<Armed<'_>> {
        let table = self.table.as_deref()?;
        if !table.watching.load(Ordering::Relaxed) {
            return None;
        }
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
            if deadline < table.next_wake.load(Ordering::SeqCst) {
                table.nudge.notify_one();
            }
            return Some(Armed { slot });
        }
        None
    }
}

/// A slot a request holds; dropped (the request answered, timed out or was cancelled),
/// the slot is free again.
struct Armed<'t> {
    slot: &'t Slot,
}

impl Armed<'_> {
    /// Polls `answers`; pending, the task waits for them or for the watcher.
    fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        answers: Pin<&mut impl Future<Output = T>>,
    ) -> Poll<Option<T>> {
        if let Poll::Ready(answer) = answers.poll(cx) {
            return Poll::Ready(Some(answer));
        }
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
        // The waker stays until the next request of the slot replaces it: waking it
        // late only wakes a task for nothing.
        self.slot.deadline.store(FREE, Ordering::Release);
    }
}

impl Table {
    /// Now, in deadline units.
    fn now(&self) -> u64 {
        OFFSET.saturating_add(millis(self.base.elapsed()))
    }

    /// Marks every slot whose deadline passed as expired and wakes its request; returns
    /// when to look again (the earliest deadline still pending, [`IDLE`] at most).
    fn expire_due(&self) -> Instant {
        let now = self.now();
        let mut next = now.saturating_add(millis(IDLE));
        self.next_wake.store(next, Ordering::SeqCst);
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
        self.base + Duration::from_millis(next - OFFSET)
    }
}

/// The watcher: expires due slots, sleeps until the next deadline (or a nudge), and
/// ends once the table is gone.
async fn watch(table: Weak<Table>, nudge: Arc<Notify>, _watching: Watching) {
    loop {
        let Some(live) = table.upgrade() else {
            return;
        };
        let until = live.expire_due();
        drop(live);
        let _ = tokio::time::timeout_at(until.into(), nudge.notified()).await;
    }
}

/// Held by the watcher task: dropped with the task (its runtime shut down, or the
/// table is gone), it tells requests to use timers of their own.
struct Watching(Weak<Table>);

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(table) = self.0.upgrade() {
            table.watching.store(false, Ordering::Relaxed);
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

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    fn free_slots(d: &Deadlines) -> usize {
        let table = d.table.as_deref().expect("a table");
        table
            .slots
            .iter()
            .filter(|s| s.deadline.load(Ordering::SeqCst) == FREE)
            .count()
    }

    #[tokio::test]
    async fn an_answer_in_time_is_returned_and_frees_its_slot() {
        let d = Deadlines::start();
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
        let d = Deadlines::start();
        // Let the watcher settle into its idle sleep, so the short limit must nudge it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for limit_ms in [30u64, 120, 300] {
            let limit = Duration::from_millis(limit_ms);
            let started = Instant::now();
            assert_eq!(d.within(limit, never()).await, None);
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
        assert_eq!(free_slots(&d), SLOTS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_requests_free_their_slots() {
        let d = Deadlines::start();
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
        let d = Deadlines::start();
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
        let d = Deadlines::start();
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let racers: Vec<_> = (0..32u64)
            .map(|i| {
                let (d, barrier) = (d.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut ended = (0, 0);
                    for round in 0..40u64 {
                        barrier.wait().await;
                        // Half answer within a few milliseconds, half never do.
                        let limit = Duration::from_millis(5 + (i + round) % 20);
                        let answer = if (i + round) % 2 == 0 {
                            d.within(limit, async { tokio::task::yield_now().await })
                                .await
                        } else {
                            d.within(limit, never()).await
                        };
                        match answer {
                            Some(()) => ended.0 += 1,
                            None => ended.1 += 1,
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

    #[tokio::test]
    async fn the_watcher_runs_while_its_store_holds_it_and_ends_after() {
        assert_eq!(alive_tasks(), 0);
        let d = Deadlines::start();
        tokio::time::sleep(IDLE + IDLE / 2).await;
        assert_eq!(alive_tasks(), 1, "the watcher outlives its first wake-up");
        drop(d);
        let deadline = Instant::now() + IDLE * 3;
        while alive_tasks() > 0 {
            assert!(
                Instant::now() < deadline,
                "the watcher ends after its store"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn outside_a_runtime_there_is_no_watcher_and_timers_stand_in() {
        let d = Deadlines::start();
        assert!(d.table.is_none());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let answer = runtime.block_on(d.within(Duration::from_millis(20), never()));
        assert_eq!(answer, None);
    }

    #[test]
    fn a_store_outliving_its_runtime_falls_back_to_timers() {
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let d = first.block_on(async { Deadlines::start() });
        drop(first);
        let table = d.table.as_deref().expect("a table");
        assert!(
            !table.watching.load(Ordering::Relaxed),
            "the watcher is gone"
        );
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let started = Instant::now();
        let answer = second.block_on(d.within(Duration::from_millis(50), never()));
        assert_eq!(answer, None);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn limits_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_millis(5)), 5);
        assert_eq!(millis(Duration::from_micros(5_001)), 6);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
