//! Cancellation at every await point: run an operation, drop its future after its k-th
//! pending poll, for every k until the operation completes without being dropped, and
//! check after each drop that the store left nothing behind on the server.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// A boxed operation under test.
pub type Operation<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a run of [`cancel_at_every_await`] went.
#[derive(Debug)]
pub struct CancelRun<T> {
    /// How many times the operation was dropped (once per pending poll it had).
    pub cancelled: usize,
    /// What the operation returned when it was finally let run to its end.
    pub output: T,
}

/// Runs `make(k)` for k = 1, 2, ...: polls the future, drops it after its k-th pending
/// poll and awaits `after_drop(k)`, until a run completes before its k-th pending poll.
/// Panics after `max` drops (an operation that never completes).
pub async fn cancel_at_every_await<T, M, A, AF>(
    max: usize,
    mut make: M,
    mut after_drop: A,
) -> CancelRun<T>
where
    M: FnMut(usize) -> Operation<T>,
    A: FnMut(usize) -> AF,
    AF: Future<Output = ()>,
{
    for k in 1..=max {
        let mut op = make(k);
        let mut pending = 0usize;
        let done = std::future::poll_fn(|cx| match op.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending => {
                pending += 1;
                if pending >= k {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                }
            }
        })
        .await;
        drop(op);
        match done {
            Some(output) => {
                return CancelRun {
                    cancelled: k - 1,
                    output,
                }
            }
            None => after_drop(k).await,
        }
    }
    panic!("the operation was still pending after {max} polls");
}

/// What the server shows of the connections whose `application_name` is `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftovers {
    /// Connections not idle (a statement running, or inside a transaction).
    pub busy: Vec<String>,
    /// Locks those connections hold (`locktype:mode`), advisory locks included.
    pub locks: Vec<String>,
}

impl Leftovers {
    /// Nothing running, nothing locked.
    pub fn is_clean(&self) -> bool {
        self.busy.is_empty() && self.locks.is_empty()
    }
}

/// Reads what the connections named `app` hold right now.
pub async fn leftovers(raw: &tokio_postgres::Client, app: &str) -> Leftovers {
    let busy = match raw
        .query(
            "SELECT coalesce(state, '') || ': ' || left(query, 80) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid() AND state <> 'idle'",
            &[&app],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect(),
        Err(e) => panic!("cannot read pg_stat_activity: {e}"),
    };
    let locks = match raw
        .query(
            "SELECT l.locktype || ':' || l.mode FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE a.application_name = $1 AND a.pid <> pg_backend_pid() \
             AND l.locktype <> 'virtualxid'",
            &[&app],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect(),
        Err(e) => panic!("cannot read pg_locks: {e}"),
    };
    Leftovers { busy, locks }
}

/// Waits (at most `within`) until the connections named `app` run nothing and hold no
/// lock; panics with what they still hold. A closed connection takes a moment to end on
/// the server, hence the wait.
pub async fn assert_clean(raw: &tokio_postgres::Client, app: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = leftovers(raw, app).await;
        if now.is_clean() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("connections of {app} still busy after {within:?}: {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
