//! Joining racing tasks so that one task's failure ends the test at once: a writer that
//! panics leaves its peers waiting at their barrier for ever, and a test that awaited
//! the handles in order would hang instead of saying what failed.

use std::future::Future;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

/// Runs `futures` as tasks and waits for all of them, at most `limit`: returns their
/// outputs in order; the first task that panics fails the caller with its panic, and a
/// run longer than `limit` fails naming how many tasks were still running.
pub async fn join_racers<T, F>(futures: Vec<F>, limit: Duration) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut set = JoinSet::new();
    let count = futures.len();
    for (i, f) in futures.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut out: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let deadline = tokio::time::Instant::now() + limit;
    while !set.is_empty() {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok((i, v)))) => out[i] = Some(v),
            Ok(Some(Err(e))) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Some(Err(e))) => panic!("a racing task was cancelled: {e}"),
            Ok(None) => break,
            Err(_) => panic!(
                "{} of {count} racing tasks still running after {limit:?}",
                set.len()
            ),
        }
    }
    out.into_iter()
        .map(|v| v.expect("every task ended"))
        .collect()
}

/// Waits for spawned `handles` like [`join_racers`].
pub async fn join_handles<T: Send + 'static>(
    handles: Vec<JoinHandle<T>>,
    limit: Duration,
) -> Vec<T> {
    join_racers(
        handles
            .into_iter()
            .map(|h| async move {
                match h.await {
                    Ok(v) => v,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => panic!("a racing task was cancelled: {e}"),
                }
            })
            .collect(),
        limit,
    )
    .await
}
