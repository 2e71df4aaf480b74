//! Every save takes its tags before any stream row, and all its tags in one (type, value)
//! order. A save whose inline projections read streams under lock while planning (an
//! aggregate not planned from its cache, a projection that reads the events' metadata and
//! so reserves their versions) locks its tags before those reads: it never holds a stream
//! row while it waits for a tag another save holds while waiting for that row. A save
//! with a tag lock that also archives or deletes streams locks its tags and those of the
//! streams' events together, in one order. Every deadlock marten meets is logged ("lost a
//! deadlock"); this binary's subscriber counts them, and each test ends with none counted.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::deadlocks::deadlocks;
use common::tally::{Added, Tally};
use common::{builder, builder_on, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// An event with one tag, which no projection of these tests handles.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Topical {
    #[tag(name = "topic")]
    topic: String,
}

fn topic(name: &str) -> Topical {
    Topical {
        topic: name.to_owned(),
    }
}

/// An aggregate whose apply method reads the event's envelope: a save that appends an
/// event it handles reserves the events' sequences and its plain appends' versions,
/// locking their streams, before it plans.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Stamped {
    id: Uuid,
    version: i64,
    count: i64,
    last_event: Uuid,
}

#[marten::apply]
impl Stamped {
    fn apply(&mut self, _e: &Added, meta: &EventEnvelope) {
        self.count += 1;
        self.last_event = meta.id;
    }
}

/// Two stream ids, the first below the second in PostgreSQL's order of `uuid`s.
fn two_streams() -> (Uuid, Uuid) {
    let mut ids = [Uuid::now_v7(), Uuid::now_v7()];
    ids.sort();
    (ids[0], ids[1])
}

/// Waits (bounded) until `n` sessions wait on a lock `holder` holds, or on a session
/// that does.
async fn until_waiting(schema: &marten_testing::TestSchema, holder: i32, n: i64) {
    let raw = schema.raw_client().await;
    for _ in 0..1000 {
        let waiting: i64 = raw
            .query_one(
                "WITH RECURSIVE blocked(pid) AS ( \
                   SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) \
                   UNION SELECT a.pid FROM pg_stat_activity a \
                   JOIN blocked b ON b.pid = ANY(pg_blocking_pids(a.pid))) \
                 SELECT count(*) FROM blocked",
                &[&holder],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} saves never waited on the held stream row");
}

/// A raw transaction holding stream `id`'s row, and its backend's pid.
async fn hold(schema: &marten_testing::TestSchema, id: Uuid) -> (tokio_postgres::Client, i32) {
    let holder = schema.raw_client().await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute("SELECT 1 FROM mt_streams WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .expect("hold the row");
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    (holder, pid)
}

/// How the projected save of [`planned_save_against_a_tag_holder`] plans.
#[derive(Clone, Copy, Debug)]
enum Planning {
    /// An inline aggregate with no cache: its locked read of the stream.
    LockedRead,
    /// An inline aggregate that reads the metadata: the reservation's lock of the stream.
    Reserved,
}

/// The inversion, made certain: streams `low` < `high` exist; a raw transaction holds
/// `low`'s row. The tag holder appends a tagged event to `low` and to `high` (its tags
/// locked first, then the rows in id order): it takes the tag and waits on `low`. The
/// projected save appends to `high`, in one append, an event its inline aggregate
/// handles and a tagged event: planning reads `high` under lock, and the append bumps
/// the tag. Taking the row in planning before the tag, it would hold `high` and wait on the tag, while the tag
/// holder, let go, would take `low` and wait on `high`: PostgreSQL fails one of them a
/// second later and marten sends it again. Both commit, and none met a deadlock.
async fn planned_save_against_a_tag_holder(planning: Planning) {
    deadlocks();
    let (schema, b) = builder(&format!("tag_lock_order_{planning:?}").to_lowercase());
    let b = b.event::<Topical>().pool_size(4);
    let store = ok(match planning {
        Planning::LockedRead => b.projection::<Tally>(Lifecycle::Inline).aggregate_cache(0),
        Planning::Reserved => b.projection::<Stamped>(Lifecycle::Inline),
    }
    .build()
    .await);
    let (low, high) = two_streams();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(low, [Added { n: 1 }]));
    ok(s.events().start_stream(high, [Added { n: 1 }]));
    ok(s.save_changes().await);
    drop(s);

    let (holder, pid) = hold(&schema, low).await;
    let tag_holder = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            s.events().append(high, [topic("rust")])?;
            s.events().append(low, [topic("rust")])?;
            s.save_changes().await
        })
    };
    until_waiting(&schema, pid, 1).await;
    let projected = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            let events = [
                PendingEvent::new(Added { n: 1 }),
                PendingEvent::new(topic("rust")),
            ];
            s.events().append(high, events)?;
            s.save_changes().await
        })
    };
    until_waiting(&schema, pid, 2).await;
    holder.batch_execute("COMMIT").await.expect("let go");
    for (name, save) in [("tag holder", tag_holder), ("projected", projected)] {
        let saved = tokio::time::timeout(Duration::from_secs(30), save)
            .await
            .unwrap_or_else(|_| panic!("the {name} save hung"));
        ok(saved.expect("join"));
    }

    let mut s = store.lightweight_session();
    let state = ok(s.events().fetch_stream_state(high).await).expect("stream");
    assert_eq!(state.version, 4, "{planning:?}");
    let count = match planning {
        Planning::LockedRead => ok(s.load::<Tally>(&high).await).map(|t| t.count),
        Planning::Reserved => ok(s.load::<Stamped>(&high).await).map(|t| t.count),
    };
    assert_eq!(count, Some(2), "{planning:?}");
    assert_eq!(
        deadlocks().load(Ordering::SeqCst),
        0,
        "deadlocks met ({planning:?})"
    );
}

#[tokio::test]
async fn an_aggregates_locked_read_waits_for_the_tags_instead_of_deadlocking() {
    planned_save_against_a_tag_holder(Planning::LockedRead).await;
}

#[tokio::test]
async fn a_reservations_lock_waits_for_the_tags_instead_of_deadlocking() {
    planned_save_against_a_tag_holder(Planning::Reserved).await;
}

/// The state of a boundary over topics.
#[derive(Default, Debug)]
struct Topics {
    count: i64,
}

#[marten::apply]
impl Topics {
    fn apply(&mut self, _e: &Topical) {
        self.count += 1;
    }
}

/// A raw transaction holding the version row of topic `value`, and its backend's pid.
async fn hold_topic(
    schema: &marten_testing::TestSchema,
    value: &str,
) -> (tokio_postgres::Client, i32) {
    let holder = schema.raw_client().await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute(
            "SELECT 1 FROM mt_tag_versions WHERE tag_type = 'topic' AND tag_value = $1 FOR UPDATE",
            &[&value],
        )
        .await
        .expect("hold the tag");
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    (holder, pid)
}

/// A save through a boundary over topics `a` and `c` that also archives (or deletes) a
/// stream whose event has topic `b` locks `a`, `b` and `c` in that order. Made certain: a
/// raw transaction holds `c`; the boundary save waits on it; a lone append of topics `b`
/// and `c` bumps `b` and waits on `c` too. Locking its own tags (`a`, `c`) in one
/// statement and the archived stream's (`b`) in the next, the boundary save would get
/// `c` when the raw transaction let go and wait on `b`, which the lone append holds while
/// it waits on `c`.
#[tokio::test]
async fn a_boundary_save_that_archives_locks_all_its_tags_in_one_order() {
    deadlocks();
    for delete in [false, true] {
        let (schema, b) = builder(&format!("tag_lock_order_archive_{delete}"));
        let store = ok(b
            .event::<Topical>()
            .event::<Added>()
            .pool_size(4)
            .build()
            .await);
        let x = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(x, [topic("b")]));
        ok(s.events()
            .start_stream(Uuid::now_v7(), [topic("a"), topic("c")]));
        ok(s.save_changes().await);
        drop(s);

        let (holder, pid) = hold_topic(&schema, "c").await;
        let boundary = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                let query = TagQuery::new()
                    .tag_named("topic", "a")
                    .tag_named("topic", "c");
                let mut boundary = s
                    .events()
                    .fetch_for_writing_by_tags::<Topics>(query)
                    .await?;
                boundary.append([Added { n: 1 }])?;
                if delete {
                    s.events().delete_stream(x)?;
                } else {
                    s.events().archive_stream(x)?;
                }
                s.save_changes().await
            })
        };
        until_waiting(&schema, pid, 1).await;
        let lone = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                s.events()
                    .append(Uuid::now_v7(), [topic("b"), topic("c")])?;
                s.save_changes().await
            })
        };
        until_waiting(&schema, pid, 2).await;
        holder.batch_execute("COMMIT").await.expect("let go");
        let mut ended = Vec::new();
        for save in [boundary, lone] {
            let saved = tokio::time::timeout(Duration::from_secs(30), save)
                .await
                .expect("a save hung");
            ended.push(saved.expect("join"));
        }
        assert_eq!(
            deadlocks().load(Ordering::SeqCst),
            0,
            "deadlocks met (delete: {delete})"
        );
        for saved in ended {
            ok(saved);
        }
    }
}

/// Saves racing on a few streams and one tag, in rounds that start together: tagged
/// appends of an event the inline aggregate handles (planned from a locked read, or from
/// the cache), tagged appends to two streams, and boundary saves over the tag. None meets
/// a deadlock; a boundary whose tag or stream moved is rejected, nothing else fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_tagged_saves_with_inline_aggregates_never_deadlock() {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 20;
    deadlocks();
    let (schema, b) = builder("tag_lock_order_racing");
    let build = |b: marten::DocumentStoreBuilder, cache: bool| {
        let b = b
            .event::<Topical>()
            .projection::<Tally>(Lifecycle::Inline)
            .pool_size(WRITERS + 2);
        if cache {
            b
        } else {
            b.aggregate_cache(0)
        }
    };
    let cached = ok(build(b, true).build().await);
    let plain = ok(build(builder_on(&schema), false).build().await);
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut s = cached.lightweight_session();
    for id in &streams {
        ok(s.events().start_stream(*id, [Added { n: 1 }]));
    }
    ok(s.save_changes().await);
    drop(s);
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 {
            cached.clone()
        } else {
            plain.clone()
        };
        let (streams, barrier) = (streams.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut rejected = 0;
            let mut failed = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let one = streams[(w + round) % streams.len()];
                let other = streams[(w + round + 1) % streams.len()];
                let mut s = store.lightweight_session();
                let kind = (w / 2 + round) % 3;
                let saved = async {
                    match kind {
                        0 => {
                            let events = [
                                PendingEvent::new(Added { n: 1 }),
                                PendingEvent::new(topic("rust")),
                            ];
                            s.events().append(one, events)?;
                        }
                        1 => {
                            s.events().append(one, [topic("rust")])?;
                            s.events().append(other, [topic("rust")])?;
                        }
                        _ => {
                            let query = TagQuery::new().tag_named("topic", "rust");
                            let mut boundary = s
                                .events()
                                .fetch_for_writing_by_tags::<Topics>(query)
                                .await?;
                            boundary.append_to(one, [Added { n: 1 }])?;
                        }
                    }
                    s.save_changes().await
                };
                let saved = tokio::time::timeout(Duration::from_secs(30), saved).await;
                // A failure is counted, not panicked on: the other writers would wait for
                // this one at the barrier for ever.
                match saved {
                    Err(_) => failed.push(format!("writer {w} round {round} hung")),
                    Ok(Ok(())) => {}
                    Ok(Err(marten::Error::Rejected(r)))
                        if kind == 2
                            && r.iter().all(|r| {
                                matches!(
                                    r.kind,
                                    marten::RejectionKind::DcbConcurrency { .. }
                                        | marten::RejectionKind::UnexpectedStreamVersion { .. }
                                )
                            }) =>
                    {
                        rejected += 1;
                    }
                    Ok(Err(e)) => {
                        failed.push(format!("writer {w} round {round} (kind {kind}): {e}"))
                    }
                }
            }
            (rejected, failed)
        }));
    }
    let mut rejected = 0;
    let mut failed = Vec::new();
    for t in tasks {
        let (r, f) = t.await.expect("writer");
        rejected += r;
        failed.extend(f);
    }
    println!(
        "{rejected} of {} saves rejected by a moved boundary",
        WRITERS * ROUNDS
    );
    assert_eq!(deadlocks().load(Ordering::SeqCst), 0, "deadlocks met");
    assert!(failed.is_empty(), "{failed:#?}");
    let mut s = plain.lightweight_session();
    for id in &streams {
        let events = ok(s.events().fetch_stream(*id).await);
        let added = events.iter().filter(|e| e.is::<Added>()).count();
        let doc: Option<Tally> = ok(s.load(id).await);
        assert_eq!(doc.map(|t| t.count), Some(added as i64), "stream {id}");
    }
}
