//! Concurrency of appends, proven by racing real connections behind barriers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::events::*;
use common::inversion::versions_in_global_order;
use common::{builder, ok};
use marten::prelude::*;
use marten::{Error, RejectionKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct Marker {
    id: Uuid,
    n: i64,
}

async fn version(store: &DocumentStore, stream: Uuid) -> i64 {
    ok(store
        .lightweight_session()
        .events()
        .fetch_stream_state(stream)
        .await)
    .map_or(0, |s| s.version)
}

#[tokio::test]
async fn racers_starting_the_same_stream_have_exactly_one_winner() {
    const RACERS: usize = 8;
    let (_schema, b) = builder("evc_start");
    let store = ok(b.pool_size(RACERS + 2).build().await);
    for round in 0..40 {
        let stream = Uuid::now_v7();
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|racer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let _ = s.events().fetch_stream_state(stream).await?;
                    s.events()
                        .start_stream(stream, [started(&format!("{racer}"))])?;
                    barrier.wait().await;
                    s.save_changes().await.map(|()| racer)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                Ok(r) => winners.push(r),
                Err(e) => assert_eq!(e.rejections()[0].kind, RejectionKind::StreamExists, "{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let events = ok(store
            .lightweight_session()
            .events()
            .fetch_stream(stream)
            .await);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].data_as::<ProjectStarted>(),
            Some(&started(&winners[0].to_string()))
        );
    }
}

#[tokio::test]
async fn racers_at_the_same_expected_version_have_exactly_one_winner_per_round() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 200;
    let (_schema, b) = builder("evc_expected");
    let store = ok(b.pool_size(RACERS + 2).build().await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("race")]));
    ok(s.save_changes().await);
    let mut sessions: Vec<LightweightSession> =
        (0..RACERS).map(|_| store.lightweight_session()).collect();
    let mut winners: Vec<(usize, usize)> = Vec::new();
    for round in 0..ROUNDS {
        let expected = version(&store, stream).await;
        assert_eq!(expected, 1 + 2 * round as i64);
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = sessions
            .drain(..)
            .enumerate()
            .map(|(racer, mut session)| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let result = async {
                        session.events().append_expected(
                            stream,
                            expected,
                            [
                                task(&format!("{round}/{racer}/a")),
                                task(&format!("{round}/{racer}/b")),
                            ],
                        )?;
                        barrier.wait().await;
                        session.save_changes().await
                    }
                    .await;
                    (racer, session, result)
                })
            })
            .collect();
        let mut round_winners = 0;
        for t in tasks {
            let (racer, session, result) = t.await.expect("task");
            sessions.push(session);
            match result {
                Ok(()) => {
                    round_winners += 1;
                    winners.push((round, racer));
                }
                Err(e) => assert_eq!(
                    e.rejections()[0].kind,
                    RejectionKind::UnexpectedStreamVersion {
                        expected,
                        actual: Some(expected + 2)
                    },
                    "{e}"
                ),
            }
        }
        assert_eq!(round_winners, 1, "round {round}");
    }
    let events = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await);
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=1 + 2 * ROUNDS as i64).collect::<Vec<_>>(),
        "contiguous"
    );
    let titles: Vec<String> = events[1..]
        .iter()
        .map(|e| {
            e.data_as::<TaskRecorded>()
                .map(|t| t.title.clone())
                .unwrap_or_default()
        })
        .collect();
    let expected: Vec<String> = winners
        .iter()
        .flat_map(|(round, racer)| [format!("{round}/{racer}/a"), format!("{round}/{racer}/b")])
        .collect();
    assert_eq!(
        titles, expected,
        "every winner's events, in order, nothing else"
    );
}

#[tokio::test]
async fn append_optimistic_fails_if_the_stream_moved() {
    let (_schema, b) = builder("evc_optimistic");
    let store = ok(b.build().await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("o")]));
    ok(s.save_changes().await);

    let mut a = store.lightweight_session();
    ok(a.events().append_optimistic(stream, [task("a")]).await);
    let mut b = store.lightweight_session();
    ok(b.events().append(stream, [task("b")]));
    ok(b.save_changes().await);
    let err = a.save_changes().await.expect_err("moved");
    assert_eq!(
        err.rejections()[0].kind,
        RejectionKind::UnexpectedStreamVersion {
            expected: 1,
            actual: Some(2)
        }
    );
    // Unmoved: succeeds.
    ok(a.events().append_optimistic(stream, [task("a2")]).await);
    ok(a.save_changes().await);
    assert_eq!(version(&store, stream).await, 3);

    let missing = Uuid::now_v7();
    let err = a
        .events()
        .append_optimistic(missing, [task("x")])
        .await
        .expect_err("missing");
    match err {
        marten::Error::StreamNotFound { stream } => assert_eq!(stream, StreamId::Uuid(missing)),
        other => panic!("wrong error {other}"),
    }
    assert!(err_names_stream(
        &a.events().append_exclusive(missing, [task("x")]).await,
        missing
    ));
}

#[tokio::test]
async fn optimistic_racers_have_exactly_one_winner_per_round() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 100;
    let (_schema, b) = builder("evc_optimistic_race");
    let store = ok(b.pool_size(RACERS + 2).build().await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("race")]));
    ok(s.save_changes().await);
    drop(s);
    let mut winners: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let seen = version(&store, stream).await;
        assert_eq!(seen, 1 + round as i64, "one event per round");
        // Every racer reads the version (append_optimistic), then all save at once.
        let read = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|racer| {
                let (store, read) = (store.clone(), read.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let title = format!("{round}/{racer}");
                    s.events().append_optimistic(stream, [task(&title)]).await?;
                    read.wait().await;
                    s.save_changes().await.map(|()| title)
                })
            })
            .collect();
        let mut round_winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                Ok(title) => round_winners.push(title),
                Err(e) => assert_eq!(
                    e.rejections()[0].kind,
                    RejectionKind::UnexpectedStreamVersion {
                        expected: seen,
                        actual: Some(seen + 1)
                    },
                    "{e}"
                ),
            }
        }
        assert_eq!(round_winners.len(), 1, "round {round}: {round_winners:?}");
        winners.extend(round_winners);
    }
    let events = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await);
    let titles: Vec<String> = events[1..]
        .iter()
        .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
        .collect();
    assert_eq!(
        titles, winners,
        "the winners' events, in order, nothing else"
    );
}

fn err_names_stream(r: &marten::Result<()>, id: Uuid) -> bool {
    matches!(r, Err(marten::Error::StreamNotFound { stream }) if *stream == StreamId::Uuid(id))
}

#[tokio::test]
async fn append_exclusive_times_out_with_a_typed_error() {
    let (_schema, b) = builder("evc_exclusive_timeout");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_millis(300))
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("x")]));
    ok(s.save_changes().await);

    let mut holder = store.lightweight_session();
    ok(holder
        .events()
        .append_exclusive(stream, [task("holder")])
        .await);
    let mut waiter = store.lightweight_session();
    let started_at = Instant::now();
    let err = waiter
        .events()
        .append_exclusive(stream, [task("waiter")])
        .await
        .expect_err("locked");
    assert!(
        started_at.elapsed() >= Duration::from_millis(250),
        "it waited for the timeout"
    );
    match &err {
        marten::Error::StreamLocked { stream: locked, .. } => {
            assert_eq!(*locked, StreamId::Uuid(stream))
        }
        other => panic!("wrong error {other}"),
    }
    // A plain append waits for the holder too: it only lands after the holder commits.
    let plain = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut p = store.lightweight_session();
            p.events().append(stream, [task("plain")])?;
            p.save_changes().await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!plain.is_finished(), "the plain append waits for the lock");
    ok(holder.save_changes().await);
    ok(plain.await.expect("task"));
    let titles: Vec<String> = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await)
    .iter()
    .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
    .collect();
    assert_eq!(titles, ["holder", "plain"]);
    // The waiter's session is usable afterwards.
    ok(waiter
        .events()
        .append_exclusive(stream, [task("waiter")])
        .await);
    ok(waiter.save_changes().await);
    assert_eq!(version(&store, stream).await, 4);
}

#[tokio::test]
async fn exclusive_racers_within_the_timeout_all_succeed_in_turn() {
    const RACERS: usize = 8;
    let (_schema, b) = builder("evc_exclusive_race");
    let store = ok(b
        .pool_size(RACERS + 2)
        .exclusive_lock_timeout(Duration::from_secs(20))
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("x")]));
    ok(s.save_changes().await);
    for round in 0..10 {
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|racer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let _ = s.events().fetch_stream_state(stream).await?;
                    barrier.wait().await;
                    s.events()
                        .append_exclusive(stream, [task(&format!("{round}/{racer}"))])
                        .await?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    s.save_changes().await
                })
            })
            .collect();
        for t in tasks {
            ok(t.await.expect("task"));
        }
    }
    let events = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await);
    assert_eq!(events.len(), 1 + 10 * RACERS);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.version == i as i64 + 1),
        "contiguous"
    );
}

#[tokio::test]
async fn the_exclusive_lock_is_released_on_commit_rollback_and_drop() {
    let (_schema, b) = builder("evc_exclusive_release");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_millis(500))
        .document::<Marker>()
        .build()
        .await);
    let stream = Uuid::now_v7();
    let marker = Marker {
        id: Uuid::now_v7(),
        n: 0,
    };
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("x")]));
    ok(s.store(marker.clone()));
    ok(s.save_changes().await);
    let probe = |store: DocumentStore| async move {
        let mut p = store.lightweight_session();
        let r = p.events().append_exclusive(stream, [task("probe")]).await;
        p.discard_changes();
        r
    };

    // Commit.
    let mut a = store.lightweight_session();
    ok(a.events().append_exclusive(stream, [task("commit")]).await);
    assert!(matches!(
        probe(store.clone()).await,
        Err(marten::Error::StreamLocked { .. })
    ));
    ok(a.save_changes().await);
    ok(probe(store.clone()).await);

    // Rollback: the save fails on a stale document, the lock goes with it.
    let mut b = store.lightweight_session();
    let _: Option<Marker> = ok(b.load(&marker.id).await);
    let mut c = store.lightweight_session();
    ok(c.store(Marker {
        n: 1,
        ..marker.clone()
    }));
    ok(c.save_changes().await);
    ok(b.events()
        .append_exclusive(stream, [task("rolled back")])
        .await);
    ok(b.store(Marker {
        n: 2,
        ..marker.clone()
    }));
    assert!(b.save_changes().await.is_err());
    ok(probe(store.clone()).await);

    // Dropped session.
    let mut d = store.lightweight_session();
    ok(d.events().append_exclusive(stream, [task("dropped")]).await);
    assert!(matches!(
        probe(store.clone()).await,
        Err(marten::Error::StreamLocked { .. })
    ));
    drop(d);
    let mut released = false;
    for _ in 0..50 {
        if probe(store.clone()).await.is_ok() {
            released = true;
            break;
        }
    }
    assert!(released, "dropping the session released the lock");
    let titles: Vec<String> = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await)
    .iter()
    .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
    .collect();
    assert_eq!(
        titles,
        ["commit"],
        "nothing of the rolled back or dropped sessions"
    );
}

#[tokio::test]
async fn racing_plain_appends_to_a_new_stream_all_land_with_contiguous_versions() {
    const RACERS: usize = 8;
    let (_schema, b) = builder("evc_plain_new");
    let store = ok(b.pool_size(RACERS + 2).build().await);
    for _round in 0..20 {
        let stream = Uuid::now_v7();
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|racer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let _ = s.events().fetch_stream_state(stream).await?;
                    s.events().append(stream, [task(&format!("{racer}"))])?;
                    barrier.wait().await;
                    s.save_changes().await
                })
            })
            .collect();
        for t in tasks {
            ok(t.await.expect("task"));
        }
        let events = ok(store
            .lightweight_session()
            .events()
            .fetch_stream(stream)
            .await);
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=RACERS as i64).collect::<Vec<_>>());
        assert_eq!(version(&store, stream).await, RACERS as i64);
    }
}

/// Eight writers race saves that each append to two or three of five streams, with a
/// document written first in half of them (so a save holds its transaction id before it
/// reaches a stream's row), barrier-synchronised for 30 rounds; then every stream's events come in the stored global order with versions
/// 1, 2, 3, ... (ascending and contiguous), and `read_all` agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_multi_stream_saves_keep_every_stream_in_version_order() {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 30;
    let (schema, b) = builder("order_racing_saves");
    let store = ok(b
        .event::<ProjectStarted>()
        .pool_size(WRITERS + 2)
        .build()
        .await);
    let streams: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    for id in &streams {
        ok(s.events().start_stream(*id, [started("start")]));
    }
    ok(s.save_changes().await);
    drop(s);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, streams, barrier) = (store.clone(), streams.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                barrier.wait().await;
                let mut s = store.lightweight_session();
                if (w + round) % 2 == 0 {
                    let n = (w * 1000 + round) as i64;
                    ok(s.store(Marker {
                        id: Uuid::now_v7(),
                        n,
                    }));
                }
                // In any order: the save locks existing streams in id order.
                let picks = 2 + (w + round) % 2;
                let mut mine: Vec<Uuid> = Vec::new();
                for k in 0..picks {
                    let id = streams[(w * 3 + round + k * 2) % streams.len()];
                    if !mine.contains(&id) {
                        mine.push(id);
                    }
                }
                if w % 2 == 1 {
                    mine.reverse();
                }
                for stream in mine {
                    ok(s.events()
                        .append(stream, [started(&format!("{w}/{round}"))]));
                }
                ok(s.save_changes().await);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    for s in &streams {
        let versions = versions_in_global_order(&schema, *s).await;
        let want: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, want, "stream {s} in the stored global order");
    }
    let total: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT count(*) FROM mt_events", &[])
        .await
        .expect("count")
        .get(0);
    // Other tests' open writers (anywhere in the cluster) hold the reader back: wait.
    let (mut all, mut at) = (Vec::new(), Position::START);
    for _ in 0..600 {
        let page = ok(store.read_all_events(at, 100).await);
        at = page.next;
        all.extend(page.events);
        if all.len() as i64 >= total {
            break;
        }
        if page.rows == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert_eq!(all.len() as i64, total, "read_all read every event");
    for s in &streams {
        let versions: Vec<i64> = all
            .iter()
            .filter(|e| e.stream_id == StreamId::Uuid(*s))
            .map(|e| e.version)
            .collect();
        assert!(
            versions.windows(2).all(|w| w[1] == w[0] + 1),
            "read_all, stream {s}: {versions:?}"
        );
    }
}

/// A statement that fails inside a session's open transaction (an exclusive lock held)
/// aborts that transaction on the server. The save after it must not report success: its
/// `COMMIT` only ends the aborted transaction, so nothing of it is written. `warm`: the
/// save's statements are already prepared on the connection (else preparing them fails).
async fn save_after_a_failed_read_in_the_locked_transaction(schema: &str, warm: usize) {
    let (_schema, b) = builder(schema);
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_millis(500))
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("x")]));
    ok(s.store(Marker {
        id: Uuid::now_v7(),
        n: 1,
    }));
    ok(s.save_changes().await);
    // A session keeps its connection: the first rounds fill its statement cache, so the
    // save's statements are not prepared again (a prepare in an aborted transaction fails).
    let mut locked = store.lightweight_session();
    for _ in 0..warm {
        ok(locked
            .events()
            .append_exclusive(stream, [task("warm")])
            .await);
        ok(locked.save_changes().await);
    }
    let before = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await)
    .len();

    ok(locked
        .events()
        .append_exclusive(stream, [task("lost")])
        .await);
    let bad = locked
        .query::<Marker>()
        .where_sql("d.no_such_column = 1", ())
        .to_list()
        .await;
    assert!(bad.is_err(), "the bad fragment fails");
    let saved = locked.save_changes().await;
    let after = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await);
    assert_eq!(after.len(), before, "nothing of the save was written");
    let err = saved.expect_err("a save whose transaction was aborted reports it");
    assert!(
        err.to_string().contains("abort") || format!("{err:?}").contains("25P02"),
        "the error says the transaction was aborted: {err:?}"
    );
    // The lock is gone with the transaction, and the session works again.
    let mut other = store.lightweight_session();
    ok(other
        .events()
        .append_exclusive(stream, [task("other")])
        .await);
    ok(other.save_changes().await);
    ok(locked
        .events()
        .append_exclusive(stream, [task("again")])
        .await);
    ok(locked.save_changes().await);
    let titles: Vec<String> = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await)
    .iter()
    .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
    .collect();
    let mut expected = vec!["warm"; warm];
    expected.extend(["other", "again"]);
    assert_eq!(titles, expected);
}

#[tokio::test]
async fn a_save_after_a_failed_read_in_the_locked_transaction_is_an_error_not_a_silent_loss() {
    save_after_a_failed_read_in_the_locked_transaction("evc_aborted_tx", 2).await;
}

#[tokio::test]
async fn a_save_after_a_failed_read_in_the_locked_transaction_fails_with_a_cold_statement_cache() {
    save_after_a_failed_read_in_the_locked_transaction("evc_aborted_cold", 0).await;
}

/// An exclusive lock attempt in a transaction a failed statement aborted reports the abort
/// (not the savepoint it could not undo), and the save after it still says nothing was
/// written.
#[tokio::test]
async fn an_exclusive_lock_attempt_in_an_aborted_transaction_reports_the_abort() {
    let (_schema, b) = builder("evc_aborted_lock");
    let store = ok(b.build().await);
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(first, [started("a")]));
    ok(s.events().start_stream(second, [started("b")]));
    ok(s.save_changes().await);
    // A session keeps its connection: the first rounds fill its statement cache, so the
    // attempt in the aborted transaction is sent as it is and its savepoint refused.
    let mut locked = store.lightweight_session();
    for stream in [first, second, first, second] {
        ok(locked
            .events()
            .append_exclusive(stream, [task("warm")])
            .await);
        ok(locked.save_changes().await);
    }
    ok(locked
        .events()
        .append_exclusive(first, [task("lost")])
        .await);
    let bad = locked
        .query::<Marker>()
        .where_sql("d.no_such_column = 1", ())
        .to_list()
        .await;
    assert!(bad.is_err(), "the bad fragment fails");
    let err = locked
        .events()
        .append_exclusive(second, [task("lost too")])
        .await
        .expect_err("the transaction is aborted");
    let text = format!("{err:?}");
    assert!(
        text.contains("25P02") && !text.contains("3B001"),
        "the abort, not the missing savepoint: {text}"
    );
    assert!(locked.save_changes().await.is_err(), "the save reports it");
    for stream in [first, second] {
        let events = ok(store
            .lightweight_session()
            .events()
            .fetch_stream(stream)
            .await);
        assert_eq!(events.len(), 3, "nothing was appended to {stream}");
    }
    ok(locked
        .events()
        .append_exclusive(second, [task("again")])
        .await);
    ok(locked.save_changes().await);
    let events = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(second)
        .await);
    assert_eq!(events.len(), 4);
}

/// How a test ends a session's locked transaction behind its back.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// The server terminates the session's connection while it idles in the transaction.
    Terminated,
    /// A second lock attempt waits past the request timeout (the connection is closed).
    TimedOut,
    /// A second lock attempt is cancelled while it waits (the connection is closed).
    Cancelled,
}

/// The titles of a stream's task events.
async fn titles(store: &DocumentStore, stream: Uuid) -> Vec<String> {
    ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await)
    .iter()
    .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
    .collect()
}

/// Terminates the connections of `schema`'s store idle in a transaction (a session
/// holding an exclusive lock), waits for the client to read the server's goodbye, and
/// returns how many were terminated.
async fn kill_locked_sessions(schema: &marten_testing::TestSchema) -> usize {
    let raw = schema.raw_client().await;
    let killed = raw
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'idle in transaction'",
            &[&schema.name()],
        )
        .await
        .expect("terminate")
        .len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    killed
}

/// A session holding an exclusive lock whose transaction ends behind its back (the
/// connection is killed, or closed after a request on it timed out or was cancelled) must
/// not save as if it still held the lock: its save fails with
/// [`Error::TransactionLost`] and writes nothing, and the session works again after it.
async fn a_save_after_its_locked_transaction_was_lost(loss: Loss) {
    let (schema, b) = common::named_builder(&format!("evc_lost_{loss:?}").to_lowercase());
    let store = ok(b
        .request_timeout(Some(Duration::from_millis(500)))
        .exclusive_lock_timeout(Duration::from_secs(20))
        .build()
        .await);
    let (locked_stream, other_stream) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(locked_stream, [started("a")]));
    ok(s.events().start_stream(other_stream, [started("b")]));
    ok(s.save_changes().await);

    let mut locked = store.lightweight_session();
    ok(locked
        .events()
        .append_exclusive(locked_stream, [task("lost")])
        .await);
    let mut holder = store.lightweight_session();
    match loss {
        Loss::Terminated => {
            assert_eq!(kill_locked_sessions(&schema).await, 1, "the locked session");
        }
        Loss::TimedOut | Loss::Cancelled => {
            ok(holder
                .events()
                .append_exclusive(other_stream, [task("holder")])
                .await);
            let mut events = locked.events();
            let waiting = events.append_exclusive(other_stream, [task("waiter")]);
            if let Loss::Cancelled = loss {
                let r = tokio::time::timeout(Duration::from_millis(150), waiting).await;
                assert!(r.is_err(), "the lock attempt was still waiting: {r:?}");
            } else {
                match waiting.await {
                    Err(Error::Timeout { .. }) => {}
                    other => panic!("the lock attempt outlived the request timeout: {other:?}"),
                }
            }
            ok(holder.save_changes().await);
        }
    }
    match locked.save_changes().await {
        Err(e @ Error::TransactionLost { .. }) => {
            assert!(e.is_retryable(), "{e}");
            assert!(e.to_string().contains("nothing was written"), "{e}");
        }
        other => panic!("{loss:?}: a save without its lock reported {other:?}"),
    }
    assert_eq!(titles(&store, locked_stream).await, Vec::<String>::new());
    // The failed save ended the session's loss: the next unit of work runs as usual.
    ok(locked
        .events()
        .append_exclusive(locked_stream, [task("again")])
        .await);
    ok(locked.save_changes().await);
    assert_eq!(titles(&store, locked_stream).await, ["again"]);
}

#[tokio::test]
async fn a_save_whose_locked_connection_the_server_killed_fails_typed() {
    a_save_after_its_locked_transaction_was_lost(Loss::Terminated).await;
}

#[tokio::test]
async fn a_save_after_a_request_timed_out_in_its_locked_transaction_fails_typed() {
    a_save_after_its_locked_transaction_was_lost(Loss::TimedOut).await;
}

#[tokio::test]
async fn a_save_after_a_request_was_cancelled_in_its_locked_transaction_fails_typed() {
    a_save_after_its_locked_transaction_was_lost(Loss::Cancelled).await;
}

/// `discard_changes` forgets the queue, not the session's transaction: a save after it
/// still counts on the locks the session took, so a loss of them found then is reported.
#[tokio::test]
async fn discarding_does_not_hide_a_lost_transaction() {
    let (schema, b) = common::named_builder("evc_lost_discard");
    let store = ok(b.build().await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("a")]));
    ok(s.save_changes().await);
    let mut locked = store.lightweight_session();
    ok(locked
        .events()
        .append_exclusive(stream, [task("lost")])
        .await);
    assert_eq!(kill_locked_sessions(&schema).await, 1);
    locked.discard_changes();
    ok(locked.events().append(stream, [task("decided again")]));
    match locked.save_changes().await {
        Err(Error::TransactionLost { .. }) => {}
        other => panic!("a save after the lock was lost reported {other:?}"),
    }
    ok(locked.events().append(stream, [task("plain")]));
    ok(locked.save_changes().await);
    assert_eq!(titles(&store, stream).await, ["plain"]);
}

/// A lock taken after the session's transaction was lost opens a new transaction; the
/// save that reports the loss ends that one too, so its lock is not held on.
#[tokio::test]
async fn the_save_reporting_a_lost_transaction_releases_the_locks_taken_since() {
    let (schema, b) = common::named_builder("evc_lost_since");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_millis(500))
        .build()
        .await);
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(first, [started("a")]));
    ok(s.events().start_stream(second, [started("b")]));
    ok(s.save_changes().await);
    let mut locked = store.lightweight_session();
    ok(locked
        .events()
        .append_exclusive(first, [task("lost")])
        .await);
    assert_eq!(kill_locked_sessions(&schema).await, 1);
    ok(locked
        .events()
        .append_exclusive(second, [task("since")])
        .await);
    match locked.save_changes().await {
        Err(Error::TransactionLost { .. }) => {}
        other => panic!("a save after the lock was lost reported {other:?}"),
    }
    let mut other = store.lightweight_session();
    ok(other
        .events()
        .append_exclusive(second, [task("other")])
        .await);
    ok(other.save_changes().await);
    assert_eq!(titles(&store, first).await, Vec::<String>::new());
    assert_eq!(titles(&store, second).await, ["other"]);
}

/// The tasks of a project, live.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Project {
    id: Uuid,
    version: i64,
    tasks: usize,
}

#[marten::apply]
impl Project {
    fn apply_recorded(&mut self, _e: &TaskRecorded) {
        self.tasks += 1;
    }
}

/// A lost lock is reported by the session's next save even when it has nothing to write
/// (a decision that appended nothing), and only by it: the save after is of other work.
/// A lock taken since the loss by an operation that then gave it up (a refused decision)
/// is released, while the earlier loss stays to be reported.
#[tokio::test]
async fn a_lost_lock_is_reported_once_by_the_next_save_even_an_empty_one() {
    let (schema, b) = common::named_builder("evc_lost_empty");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_millis(500))
        .build()
        .await);
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(first, [started("a")]));
    ok(s.events().start_stream(second, [started("b")]));
    ok(s.save_changes().await);

    let mut locked = store.lightweight_session();
    ok(locked
        .events()
        .append_exclusive(first, [task("lost")])
        .await);
    assert_eq!(kill_locked_sessions(&schema).await, 1);
    // A decision on another stream, refused: its own lock is given up at once.
    let refused: Result<i64, Error> = locked
        .events()
        .write_exclusively_to_aggregate::<Project, Vec<TaskRecorded>, Error>(second, |_| {
            Err(Error::Configuration("refused".into()))
        })
        .await;
    assert!(refused.is_err());
    let mut other = store.lightweight_session();
    ok(other
        .events()
        .append_exclusive(second, [task("other")])
        .await);
    ok(other.save_changes().await);
    locked.discard_changes();
    match locked.save_changes().await {
        Err(Error::TransactionLost { .. }) => {}
        other => panic!("an empty save after the lock was lost reported {other:?}"),
    }
    ok(locked.events().append(first, [task("plain")]));
    ok(locked.save_changes().await);
    assert_eq!(titles(&store, first).await, ["plain"]);
    assert_eq!(titles(&store, second).await, ["other"]);
}
