//! `fetch_for_writing` with an expected version and under the stream's exclusive lock:
//! a decision made on the state read is never overtaken, proven by racing sessions.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::events::*;
use common::{builder, ok};
use marten::prelude::*;
use marten::RejectionKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// The tasks recorded on a project, in order (live).
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Tasks {
    id: Uuid,
    version: i64,
    titles: Vec<String>,
}

#[marten::apply]
impl Tasks {
    fn apply_recorded(&mut self, e: &TaskRecorded) {
        self.titles.push(e.title.clone());
    }
}

async fn store(label: &str, lock_timeout: Duration) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .pool_size(12)
        .exclusive_lock_timeout(lock_timeout)
        .build()
        .await);
    (schema, store)
}

/// Starts a stream with one task, `"0"`.
async fn project(store: &DocumentStore) -> Uuid {
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [task("0")]));
    ok(s.save_changes().await);
    stream
}

async fn titles(store: &DocumentStore, stream: Uuid) -> Vec<String> {
    let mut s = store.lightweight_session();
    ok(s.events().aggregate_stream::<Tasks>(stream).await).map_or_else(Vec::new, |t| t.titles)
}

fn unexpected_version(err: &marten::Error) -> (i64, Option<i64>) {
    match err {
        marten::Error::Rejected(r) if r.len() == 1 => match &r[0].kind {
            RejectionKind::UnexpectedStreamVersion { expected, actual } => (*expected, *actual),
            other => panic!("wrong rejection {other:?}"),
        },
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expected_version_that_is_not_the_streams_fails_at_the_fetch() {
    let (_schema, store) = store("ffw_expected", Duration::from_secs(1)).await;
    let stream = project(&store).await;
    let mut s = store.lightweight_session();
    let err = s
        .events()
        .fetch_for_writing_expected::<Tasks>(stream, 3)
        .await
        .err()
        .expect("the stream is at 1");
    assert_eq!(unexpected_version(&err), (3, Some(1)));
    // A new stream is at 0: expecting 0 starts it, expecting more fails naming no version.
    let fresh = Uuid::now_v7();
    let err = s
        .events()
        .fetch_for_writing_expected::<Tasks>(fresh, 2)
        .await
        .err()
        .expect("no such stream");
    assert_eq!(unexpected_version(&err), (2, None));
    let mut w = ok(s
        .events()
        .fetch_for_writing_expected::<Tasks>(fresh, 0)
        .await);
    assert!(w.state().is_none());
    ok(w.append([task("new")]));
    ok(s.save_changes().await);
    assert_eq!(titles(&store, fresh).await, ["new"]);

    // The right version: the append lands, and the save asserts it again.
    let mut w = ok(s
        .events()
        .fetch_for_writing_expected::<Tasks>(stream, 1)
        .await);
    assert_eq!(w.state().map(|t| t.titles.len()), Some(1));
    ok(w.append([task("1")]));
    let mut other = store.lightweight_session();
    ok(other.events().append(stream, [task("overtaking")]));
    ok(other.save_changes().await);
    let err = s.save_changes().await.expect_err("the stream moved");
    assert_eq!(unexpected_version(&err), (1, Some(2)));
    assert_eq!(titles(&store, stream).await, ["0", "overtaking"]);
}

#[tokio::test]
async fn an_exclusive_fetch_holds_other_writers_off_until_its_save() {
    let (_schema, store) = store("ffw_exclusive", Duration::from_millis(300)).await;
    let stream = project(&store).await;
    let mut holder = store.lightweight_session();
    let mut w = ok(holder
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await);
    assert_eq!(w.version(), 1);
    ok(w.append([task("holder")]));

    // Another exclusive fetch waits for the lock timeout, then fails with a typed error.
    let mut waiter = store.lightweight_session();
    let started = Instant::now();
    let err = waiter
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await
        .err()
        .expect("locked");
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");
    assert!(
        matches!(&err, marten::Error::StreamLocked { stream: s, .. } if *s == StreamId::Uuid(stream)),
        "{err:?}"
    );
    // A plain append waits for the holder's commit.
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
    // The waiter's session works afterwards and reads everything that landed.
    let mut w = ok(waiter
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await);
    assert_eq!(w.version(), 3);
    assert_eq!(
        w.state().map(|t| t.titles.clone()),
        Some(vec!["0".into(), "holder".into(), "plain".into()])
    );
    ok(w.append([task("waiter")]));
    // Saved, so no transaction is left open when the test's schema is dropped.
    ok(waiter.save_changes().await);
    assert_eq!(titles(&store, stream).await.len(), 4);
}

#[tokio::test]
async fn dropping_the_session_of_an_exclusive_fetch_releases_the_lock() {
    let (_schema, store) = store("ffw_exclusive_drop", Duration::from_millis(300)).await;
    let stream = project(&store).await;
    let probe = |store: DocumentStore| async move {
        let mut p = store.lightweight_session();
        let locked = p
            .events()
            .fetch_for_exclusive_writing::<Tasks>(stream)
            .await
            .map(|w| w.version());
        p.discard_changes();
        locked
    };
    // The session dropped while holding the lock, with an append queued.
    let mut s = store.lightweight_session();
    let mut w = ok(s
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await);
    ok(w.append([task("dropped")]));
    assert!(matches!(
        probe(store.clone()).await,
        Err(marten::Error::StreamLocked { .. })
    ));
    drop(s);
    let mut released = false;
    for _ in 0..50 {
        if probe(store.clone()).await.is_ok() {
            released = true;
            break;
        }
    }
    assert!(released, "no lock outlives its session");
    assert_eq!(
        titles(&store, stream).await,
        ["0"],
        "nothing of the dropped"
    );
}

#[tokio::test]
async fn racing_exclusive_deciders_never_overtake_each_other() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 6;
    let (_schema, store) = store("ffw_exclusive_race", Duration::from_secs(20)).await;
    let stream = project(&store).await;
    for _ in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    barrier.wait().await;
                    let mut w = s
                        .events()
                        .fetch_for_exclusive_writing::<Tasks>(stream)
                        .await?;
                    // The decision: the next title is the number of titles seen.
                    let next = w.state().map_or(0, |t| t.titles.len());
                    w.append([task(&next.to_string())])?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    s.save_changes().await
                })
            })
            .collect();
        for r in racers {
            ok(r.await.expect("racer"));
        }
    }
    // Every decider saw every decision before it: the titles count up without a repeat.
    let expected: Vec<String> = (0..=RACERS * ROUNDS).map(|n| n.to_string()).collect();
    assert_eq!(titles(&store, stream).await, expected);
}

#[tokio::test]
async fn optimistic_deciders_are_rejected_when_overtaken() {
    const RACERS: usize = 8;
    let (_schema, store) = store("ffw_optimistic_race", Duration::from_secs(1)).await;
    let stream = project(&store).await;
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|racer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let mut w = s.events().fetch_for_writing::<Tasks>(stream).await?;
                    barrier.wait().await;
                    w.append([task(&format!("{round}/{racer}"))])?;
                    s.save_changes().await
                })
            })
            .collect();
        let mut won = 0;
        for r in racers {
            match r.await.expect("racer") {
                Ok(()) => won += 1,
                Err(e) => {
                    unexpected_version(&e);
                }
            }
        }
        assert_eq!(won, 1, "one decider per round");
    }
    assert_eq!(titles(&store, stream).await.len(), 6);
}

/// An archived stream reads as new to `fetch_for_writing` (its events are archived), so
/// the handle starts it; the save names the stream archived, not as one that exists.
#[tokio::test]
async fn an_append_read_from_an_archived_stream_is_rejected_as_archived() {
    let (_schema, store) = store("ffw_archived", Duration::from_secs(5)).await;
    let stream = project(&store).await;
    let mut s = store.lightweight_session();
    ok(s.events().archive_stream(stream));
    ok(s.save_changes().await);

    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_writing::<Tasks>(stream).await);
    assert_eq!((w.version(), w.state()), (0, None));
    ok(w.append([task("1")]));
    let err = s
        .save_changes()
        .await
        .expect_err("an archived stream takes no events");
    let kinds: Vec<_> = err.rejections().iter().map(|r| r.kind.clone()).collect();
    assert_eq!(kinds, [RejectionKind::StreamArchived], "{err}");
    // And through the exclusive lock, which finds the row archived at once.
    let mut s = store.lightweight_session();
    let locked = s
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await;
    assert!(
        matches!(&locked, Err(e) if e.rejections().iter().any(|r| r.kind == RejectionKind::StreamArchived)),
        "{:?}",
        locked.err()
    );
    assert_eq!(titles(&store, stream).await, Vec::<String>::new());
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Refused {}

/// Tasks that cannot fold a `Refused` event: its apply fails.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Picky {
    id: Uuid,
    version: i64,
    count: u32,
}

#[marten::apply]
impl Picky {
    fn apply_recorded(&mut self, _e: &TaskRecorded) {
        self.count += 1;
    }
    fn apply_refused(&mut self, _e: &Refused) -> Result<(), String> {
        Err("refused".into())
    }
}

/// A `fetch_for_exclusive_writing` whose fold fails leaves no decision to protect: the
/// lock it took is released at once, not held until the session saves or is dropped.
/// A session that held another stream's lock before keeps its transaction (and both
/// locks) until it saves.
#[tokio::test]
async fn a_failed_exclusive_fetch_releases_the_lock_it_took() {
    let (_schema, store) = store("ffw_failed_fold", Duration::from_millis(300)).await;
    let stream = project(&store).await;
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, [Refused {}]));
    ok(s.save_changes().await);

    let mut held = store.lightweight_session();
    let failed = held
        .events()
        .fetch_for_exclusive_writing::<Picky>(stream)
        .await;
    assert!(
        matches!(failed, Err(marten::Error::Apply { .. })),
        "{:?}",
        failed.err()
    );
    // `held` is still open: another writer takes the lock at once.
    let mut other = store.lightweight_session();
    let mut w = ok(other
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await);
    ok(w.append([task("1")]));
    ok(other.save_changes().await);
    // And the session whose fetch failed goes on writing.
    ok(held.events().append(stream, [task("2")]));
    ok(held.save_changes().await);
    assert_eq!(titles(&store, stream).await, ["0", "1", "2"]);

    // Holding another stream's lock first: the failed fetch's lock stays with it.
    let second = project(&store).await;
    let mut held = store.lightweight_session();
    ok(held.events().append_exclusive(second, [task("1")]).await);
    let failed = held
        .events()
        .fetch_for_exclusive_writing::<Picky>(stream)
        .await;
    assert!(failed.is_err());
    let mut other = store.lightweight_session();
    let locked = other
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await;
    assert!(
        matches!(locked, Err(marten::Error::StreamLocked { .. })),
        "{:?}",
        locked.err()
    );
    drop(other);
    ok(held.save_changes().await);
    let mut other = store.lightweight_session();
    ok(other
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await);
    ok(other.save_changes().await);
    assert_eq!(titles(&store, second).await, ["0", "1"]);
}

/// The exclusive lock timeout bounds the wait for the exclusive lock only: the rest of
/// the session's transaction waits for other locks as any save does (bounded by the
/// request timeout). It used to stay set for the whole transaction, so the save's append
/// to another stream, whose row another writer held, failed after the exclusive timeout.
#[tokio::test]
async fn the_exclusive_lock_timeout_ends_with_the_exclusive_lock() {
    let (_schema, store) = store("ffw_exclusive_scope", Duration::from_millis(200)).await;
    let (a, b) = (project(&store).await, project(&store).await);
    let mut other = store.lightweight_session();
    {
        let held = ok(other.events().fetch_for_exclusive_writing::<Tasks>(b).await);
        assert_eq!(held.version(), 1);
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            let mut w = s.events().fetch_for_exclusive_writing::<Tasks>(a).await?;
            w.append([task("a")])?;
            s.events().append(b, [task("b")])?;
            s.save_changes().await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !writer.is_finished(),
        "the save waits for the other writer's lock past the exclusive lock timeout"
    );
    ok(other.save_changes().await);
    ok(writer.await.expect("task"));
    assert_eq!(titles(&store, a).await, ["0", "a"]);
    assert_eq!(titles(&store, b).await, ["0", "b"]);
}

/// A session that holds one stream's lock can fetch a stream that does not exist yet for
/// exclusive writing (version 0, no state): the attempt on the missing stream does not
/// disturb the transaction holding the first lock, and one save commits both.
#[tokio::test]
async fn an_exclusive_fetch_of_a_new_stream_keeps_the_locks_already_held() {
    let (_schema, store) = store("ffw_exclusive_new", Duration::from_millis(300)).await;
    let held = project(&store).await;
    let new = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_exclusive_writing::<Tasks>(held).await);
    ok(w.append([task("held")]));
    let mut w = ok(s.events().fetch_for_exclusive_writing::<Tasks>(new).await);
    assert_eq!((w.version(), w.state().is_none()), (0, true));
    ok(w.append([task("new")]));
    ok(s.save_changes().await);
    assert_eq!(titles(&store, held).await, ["0", "held"]);
    assert_eq!(titles(&store, new).await, ["new"]);
}

/// A lock attempt that failed (the stream locked elsewhere) leaves nothing behind that a
/// later attempt's undo could roll back to: the locks taken after it stay held.
#[tokio::test]
async fn a_failed_lock_attempt_cannot_release_locks_taken_after_it() {
    let (_schema, store) = store("ffw_exclusive_stack", Duration::from_millis(200)).await;
    let [first, busy, later] = [
        project(&store).await,
        project(&store).await,
        project(&store).await,
    ];
    let mut other = store.lightweight_session();
    ok(other.events().append_exclusive(busy, [task("other")]).await);

    let mut s = store.lightweight_session();
    ok(s.events().append_exclusive(first, [task("s")]).await);
    assert!(matches!(
        s.events().append_exclusive(busy, [task("s")]).await,
        Err(marten::Error::StreamLocked { .. })
    ));
    ok(s.events().append_exclusive(later, [task("s")]).await);
    // A stream with no row to lock: its attempt fails after the select answered.
    let w = ok(s
        .events()
        .fetch_for_exclusive_writing::<Tasks>(Uuid::now_v7())
        .await);
    assert_eq!(w.version(), 0);
    drop(w);

    let mut probe = store.lightweight_session();
    let probed = probe
        .events()
        .append_exclusive(later, [task("probe")])
        .await;
    assert!(
        matches!(&probed, Err(marten::Error::StreamLocked { .. })),
        "the later stream is still locked by the session: {probed:?}"
    );
    drop(probe);
    ok(s.save_changes().await);
    ok(other.save_changes().await);
    assert_eq!(titles(&store, first).await, ["0", "s"]);
    assert_eq!(titles(&store, later).await, ["0", "s"]);
    assert_eq!(titles(&store, busy).await, ["0", "other"]);
}

/// `fetch_for_exclusive_writing` whose read under the lock times out ends the transaction
/// it began: the loss of it is that call's error (`Timeout`), not a later save's, so the
/// session's next save of other work commits.
#[tokio::test]
async fn a_timed_out_read_under_a_lock_this_fetch_took_does_not_fail_the_next_save() {
    let (schema, b) = builder("ffw_lost_own");
    let store = ok(b
        .request_timeout(Some(Duration::from_millis(500)))
        .build()
        .await);
    let stream = project(&store).await;
    let raw = schema.raw_client().await;
    // The fold's read of the events waits behind this lock, past the request timeout.
    raw.batch_execute("BEGIN; LOCK TABLE mt_events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let mut s = store.lightweight_session();
    let fetched = s
        .events()
        .fetch_for_exclusive_writing::<Tasks>(stream)
        .await
        .map(|w| w.version());
    assert!(
        matches!(fetched, Err(marten::Error::Timeout { .. })),
        "{fetched:?}"
    );
    raw.batch_execute("ROLLBACK").await.expect("unlock");
    ok(s.events().append(stream, [task("plain")]));
    ok(s.save_changes().await);
    assert_eq!(titles(&store, stream).await, ["0", "plain"]);
}
