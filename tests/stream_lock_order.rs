//! Saves that append to (or archive) several streams lock the streams' rows in id order,
//! whatever order the session appended them in, and a batch of documents writes its rows
//! in id order, so two such saves never deadlock: each waits for the other instead of
//! losing PostgreSQL's deadlock check a second later and being sent again. Every deadlock
//! marten meets is logged ("lost a deadlock"); this binary's subscriber counts them, and
//! each test ends with none counted.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::deadlocks::deadlocks;
use common::tally::{Added, Tally};
use common::{builder, builder_on, ok};
use marten::prelude::*;
use marten::Tenancy;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// Two stream ids, the first below the second in PostgreSQL's order of `uuid`s.
fn two_streams() -> (Uuid, Uuid) {
    let mut ids = [Uuid::now_v7(), Uuid::now_v7()];
    ids.sort();
    (ids[0], ids[1])
}

/// Waits (bounded) until `n` sessions wait on a lock `holder` holds, or on a session
/// that does (the first waiter for a row takes its tuple lock, the next wait on it).
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

/// A raw transaction holding the row `id` of `table` (`FOR UPDATE`), and its backend's
/// pid.
async fn hold_row(
    schema: &marten_testing::TestSchema,
    table: &str,
    id: Uuid,
) -> (tokio_postgres::Client, i32) {
    let holder = schema.raw_client().await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let sql = format!("SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE");
    holder.execute(&sql, &[&id]).await.expect("hold the row");
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    (holder, pid)
}

/// [`hold_row`] of stream `id`.
async fn hold(schema: &marten_testing::TestSchema, id: Uuid) -> (tokio_postgres::Client, i32) {
    hold_row(schema, "mt_streams", id).await
}

/// A lightweight session, for `tenant` if there is one.
fn session(store: &DocumentStore, tenant: Option<&str>) -> LightweightSession {
    match tenant {
        Some(t) => ok(store.lightweight_session_for(t)),
        None => store.lightweight_session(),
    }
}

/// A save of one event to each of `streams`, in that order, for `tenant` (if any).
fn save_to(
    store: &DocumentStore,
    tenant: Option<&str>,
    streams: [Uuid; 2],
) -> tokio::task::JoinHandle<marten::Result<()>> {
    let store = store.clone();
    let tenant = tenant.map(str::to_owned);
    tokio::spawn(async move {
        let mut s = session(&store, tenant.as_deref());
        for id in streams {
            s.events().append(id, [Added { n: 1 }])?;
        }
        s.save_changes().await
    })
}

/// The deadlock of opposite orders, made certain: a raw transaction holds the first
/// stream's row; one save appends to (first, second) and waits on it; another appends to
/// (second, first): in the order it asked for, it would lock the second stream and wait
/// on the first, and the moment the raw transaction let go, the two would wait on each
/// other. Both commit, and none met a deadlock.
async fn opposite_orders(
    schema: &marten_testing::TestSchema,
    store: &DocumentStore,
    tenant: Option<&str>,
) {
    let (a, b) = two_streams();
    let mut s = session(store, tenant);
    ok(s.events().start_stream(a, [Added { n: 1 }]));
    ok(s.events().start_stream(b, [Added { n: 1 }]));
    ok(s.save_changes().await);
    drop(s);

    let (holder, pid) = hold(schema, a).await;
    let forward = save_to(store, tenant, [a, b]);
    until_waiting(schema, pid, 1).await;
    let backward = save_to(store, tenant, [b, a]);
    until_waiting(schema, pid, 2).await;
    holder.batch_execute("COMMIT").await.expect("let go");
    for (name, save) in [("forward", forward), ("backward", backward)] {
        let saved = tokio::time::timeout(Duration::from_secs(30), save)
            .await
            .unwrap_or_else(|_| panic!("the {name} save hung"));
        ok(saved.expect("join"));
    }

    let mut s = session(store, tenant);
    for id in [a, b] {
        let state = ok(s.events().fetch_stream_state(id).await).expect("stream");
        assert_eq!(state.version, 3, "stream {id}");
    }
    assert_eq!(deadlocks().load(Ordering::SeqCst), 0, "deadlocks met");
}

#[tokio::test]
async fn opposite_orders_wait_instead_of_deadlocking() {
    deadlocks();
    let (schema, b) = builder("lock_order_plain");
    let store = ok(b.event::<Added>().pool_size(4).build().await);
    opposite_orders(&schema, &store, None).await;
}

#[tokio::test]
async fn opposite_orders_of_a_tenant_wait_instead_of_deadlocking() {
    deadlocks();
    let (schema, b) = builder("lock_order_tenant");
    let store = ok(b
        .event::<Added>()
        .events_tenancy(Tenancy::Conjoined)
        .pool_size(4)
        .build()
        .await);
    opposite_orders(&schema, &store, Some("blue")).await;
}

#[tokio::test]
async fn opposite_orders_planned_from_the_aggregate_cache_wait_instead_of_deadlocking() {
    deadlocks();
    let (schema, b) = builder("lock_order_cached");
    let store = ok(b
        .projection::<Tally>(Lifecycle::Inline)
        .pool_size(4)
        .build()
        .await);
    opposite_orders(&schema, &store, None).await;
    let mut s = store.lightweight_session();
    let counts: Vec<i64> = ok(s.query::<Tally>().to_list().await)
        .iter()
        .map(|t| t.count)
        .collect();
    assert_eq!(
        counts,
        [3, 3],
        "each stream's document saw its three events once"
    );
}

#[tokio::test]
async fn opposite_orders_of_archives_and_appends_wait_instead_of_deadlocking() {
    deadlocks();
    let (schema, b) = builder("lock_order_archive");
    let store = ok(b.event::<Added>().pool_size(4).build().await);
    let (a, b) = two_streams();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(a, [Added { n: 1 }]));
    ok(s.events().start_stream(b, [Added { n: 1 }]));
    ok(s.save_changes().await);
    drop(s);

    let (holder, pid) = hold(&schema, a).await;
    let forward = save_to(&store, None, [a, b]);
    until_waiting(&schema, pid, 1).await;
    let backward = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            s.events().archive_stream(b)?;
            s.events().append(a, [Added { n: 1 }])?;
            s.save_changes().await
        })
    };
    until_waiting(&schema, pid, 2).await;
    holder.batch_execute("COMMIT").await.expect("let go");
    for save in [forward, backward] {
        let saved = tokio::time::timeout(Duration::from_secs(30), save)
            .await
            .expect("a save hung");
        ok(saved.expect("join"));
    }
    assert_eq!(deadlocks().load(Ordering::SeqCst), 0, "deadlocks met");
}

/// An event with one tag.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Topical {
    #[tag(name = "topic")]
    topic: String,
}

/// An archive (or delete) bumps the tags of its stream's events, and takes them before
/// the stream's row, as a tagged save takes its tags before its streams. Made certain: a
/// raw transaction holds the stream's row, the archive waits on it (holding the tags),
/// then a save of two tagged appends, one to that stream, waits on the archive for the
/// tag. Taking the tags after the row, the archive would wait on the tag the save holds
/// while the save waits on the row the archive holds.
#[tokio::test]
async fn an_archive_racing_a_tagged_save_to_its_stream_waits_instead_of_deadlocking() {
    deadlocks();
    for delete in [false, true] {
        let (schema, b) = builder(&format!("lock_order_archive_tags_{delete}"));
        let store = ok(b.event::<Topical>().pool_size(4).build().await);
        let topic = || Topical {
            topic: "rust".into(),
        };
        let x = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(x, [topic()]));
        ok(s.save_changes().await);
        drop(s);

        let (holder, pid) = hold(&schema, x).await;
        let command = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                if delete {
                    s.events().delete_stream(x)?;
                } else {
                    s.events().archive_stream(x)?;
                }
                s.save_changes().await
            })
        };
        until_waiting(&schema, pid, 1).await;
        let tagged = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                s.events().append(x, [topic()])?;
                s.events().append(Uuid::now_v7(), [topic()])?;
                s.save_changes().await
            })
        };
        until_waiting(&schema, pid, 2).await;
        holder.batch_execute("COMMIT").await.expect("let go");
        let ended = |save: tokio::task::JoinHandle<marten::Result<()>>| async move {
            tokio::time::timeout(Duration::from_secs(30), save)
                .await
                .expect("a save hung")
                .expect("join")
        };
        ok(ended(command).await);
        match ended(tagged).await {
            // A deleted stream is started again by a plain append.
            Ok(()) => assert!(delete, "an append to an archived stream was saved"),
            Err(e) => {
                assert!(!delete, "{e}");
                assert!(
                    matches!(
                        e.rejections()[0].kind,
                        marten::RejectionKind::StreamArchived
                    ),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(deadlocks().load(Ordering::SeqCst), 0, "deadlocks met");
}

/// A lone tagged append bumps its tags before it takes its stream's row, the order of an
/// archive (or delete) of that stream. Made certain: a raw transaction holds the row, the
/// tagged append waits on it holding its tag, then the archive waits on the append for the
/// tag. Taking the row first, the append would hold the row and wait on the tag the
/// archive took first.
#[tokio::test]
async fn a_lone_tagged_append_racing_an_archive_of_its_stream_waits_instead_of_deadlocking() {
    deadlocks();
    for delete in [false, true] {
        let (schema, b) = builder(&format!("lock_order_lone_tagged_{delete}"));
        let store = ok(b.event::<Topical>().pool_size(4).build().await);
        let topic = || Topical {
            topic: "rust".into(),
        };
        let x = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(x, [topic()]));
        ok(s.save_changes().await);
        drop(s);

        let (holder, pid) = hold(&schema, x).await;
        let tagged = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                s.events().append(x, [topic()])?;
                s.save_changes().await
            })
        };
        until_waiting(&schema, pid, 1).await;
        let command = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                if delete {
                    s.events().delete_stream(x)?;
                } else {
                    s.events().archive_stream(x)?;
                }
                s.save_changes().await
            })
        };
        until_waiting(&schema, pid, 2).await;
        holder.batch_execute("COMMIT").await.expect("let go");
        for save in [tagged, command] {
            let saved = tokio::time::timeout(Duration::from_secs(30), save)
                .await
                .expect("a save hung");
            ok(saved.expect("join"));
        }
    }
    assert_eq!(deadlocks().load(Ordering::SeqCst), 0, "deadlocks met");
}

/// A save with one tagged append (or start) that also writes another stream's row takes
/// its tags before the rows, as every tagged save does: both when it locks the rows first
/// (an append to a second stream) and when an append before a tagged start takes its own
/// row (a start is in no stream lock). Made certain: a raw transaction holds the row the
/// save takes first; the save waits on it (holding the tag when it locks tags first); a
/// lone tagged append to that stream then waits too. Taking the row first, the save would
/// get it when the raw transaction let go and wait on the tag the lone append took
/// meanwhile, which waits on the row.
#[tokio::test]
async fn a_tagged_save_that_writes_another_stream_locks_its_tags_before_the_rows() {
    deadlocks();
    let topic = || Topical {
        topic: "rust".into(),
    };
    for start_after_append in [false, true] {
        let (schema, b) = builder(&format!("lock_order_tagged_{start_after_append}"));
        let store = ok(b.event::<Topical>().pool_size(4).build().await);
        let (held, other) = two_streams();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(held, [topic()]));
        ok(s.events().start_stream(other, [Added { n: 1 }]));
        ok(s.save_changes().await);
        drop(s);

        let (holder, pid) = hold(&schema, held).await;
        let tagged = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                if start_after_append {
                    s.events().append(held, [Added { n: 1 }])?;
                    s.events().start_stream(Uuid::now_v7(), [topic()])?;
                } else {
                    s.events().append(held, [topic()])?;
                    s.events().append(other, [Added { n: 1 }])?;
                }
                s.save_changes().await
            })
        };
        until_waiting(&schema, pid, 1).await;
        let lone = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                s.events().append(held, [topic()])?;
                s.save_changes().await
            })
        };
        until_waiting(&schema, pid, 2).await;
        holder.batch_execute("COMMIT").await.expect("let go");
        for save in [tagged, lone] {
            let saved = tokio::time::timeout(Duration::from_secs(30), save)
                .await
                .expect("a save hung");
            ok(saved.expect("join"));
        }
        let mut s = store.lightweight_session();
        let state = ok(s.events().fetch_stream_state(held).await).expect("stream");
        assert_eq!(state.version, 3, "start after append: {start_after_append}");
    }
    assert_eq!(deadlocks().load(Ordering::SeqCst), 0, "deadlocks met");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_saves_to_several_streams_in_any_order_never_deadlock() {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 25;
    deadlocks();
    let (schema, b) = builder("lock_order_racing");
    let cached = ok(b
        .projection::<Tally>(Lifecycle::Inline)
        .pool_size(WRITERS + 2)
        .build()
        .await);
    let plain = ok(builder_on(&schema)
        .projection::<Tally>(Lifecycle::Inline)
        .aggregate_cache(0)
        .pool_size(WRITERS + 2)
        .build()
        .await);
    // Streams that exist: rows not there yet cannot be locked, so two saves that both
    // start the same streams in opposite orders may still deadlock (README).
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
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
            let mut appended = 0;
            for round in 0..ROUNDS {
                barrier.wait().await;
                // Two or three of the streams, each writer in its own order.
                let picks = 2 + (w + round) % 2;
                let mine: Vec<Uuid> = (0..picks)
                    .map(|k| streams[(w + round + k * (1 + w % 3)) % streams.len()])
                    .collect();
                let mut s = store.lightweight_session();
                let mut seen = Vec::new();
                for id in mine.iter().rev() {
                    if !seen.contains(id) {
                        seen.push(*id);
                        ok(s.events().append(*id, [Added { n: 1 }]));
                        appended += 1;
                    }
                }
                let saved = tokio::time::timeout(Duration::from_secs(30), s.save_changes()).await;
                ok(saved.unwrap_or_else(|_| panic!("writer {w} round {round} hung")));
            }
            appended
        }));
    }
    let mut appended = 0;
    for t in tasks {
        appended += t.await.expect("writer");
    }
    assert_eq!(deadlocks().load(Ordering::SeqCst), 0, "deadlocks met");

    let mut s = plain.lightweight_session();
    let mut total = 0;
    appended += streams.len();
    for id in &streams {
        let events = ok(s.events().fetch_stream(*id).await);
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        let want: Vec<i64> = (1..=events.len() as i64).collect();
        assert_eq!(versions, want, "stream {id}");
        let doc: Option<Tally> = ok(s.load(id).await);
        assert_eq!(
            doc.map(|t| t.count),
            Some(events.len() as i64),
            "stream {id}"
        );
        total += events.len();
    }
    assert_eq!(total, appended);
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Plain {
    id: Uuid,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct Checked {
    id: Uuid,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(numeric)]
struct Counted {
    id: Uuid,
    n: i64,
}

/// Stores `make(x)` and `make(y)` (x below y), then the two saves of opposite orders
/// behind a held row of x, as for streams, storing (or, with `update`, updating) both:
/// both commit, no deadlock.
async fn documents_in_opposite_orders<D>(
    label: &str,
    table: &str,
    make: fn(Uuid, i64) -> D,
    update: bool,
) where
    D: marten::PgDocument + Send + 'static,
{
    let (schema, b) = builder(label);
    let store = ok(b.document::<D>().pool_size(4).build().await);
    let (x, y) = two_streams();
    let mut s = store.lightweight_session();
    ok(s.store(make(x, 0)));
    ok(s.store(make(y, 0)));
    ok(s.save_changes().await);
    drop(s);

    let (holder, pid) = hold_row(&schema, table, x).await;
    let save = |ids: [Uuid; 2], n: i64| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            for id in ids {
                if update {
                    s.update(make(id, n))?;
                } else {
                    s.store(make(id, n))?;
                }
            }
            s.save_changes().await
        })
    };
    let forward = save([x, y], 1);
    until_waiting(&schema, pid, 1).await;
    let backward = save([y, x], 2);
    until_waiting(&schema, pid, 2).await;
    holder.batch_execute("COMMIT").await.expect("let go");
    for save in [forward, backward] {
        let saved = tokio::time::timeout(Duration::from_secs(30), save)
            .await
            .expect("a save hung");
        ok(saved.expect("join"));
    }
    assert_eq!(
        deadlocks().load(Ordering::SeqCst),
        0,
        "deadlocks met ({label})"
    );
}

#[tokio::test]
async fn documents_stored_or_updated_in_opposite_orders_wait_instead_of_deadlocking() {
    deadlocks();
    for update in [false, true] {
        let tag = if update { "update" } else { "store" };
        let plain = |id, n| Plain { id, n };
        let checked = |id, n| Checked { id, n };
        let counted = |id, n| Counted { id, n };
        documents_in_opposite_orders(
            &format!("lock_order_docs_{tag}"),
            "mt_doc_plain",
            plain,
            update,
        )
        .await;
        documents_in_opposite_orders(
            &format!("lock_order_checked_{tag}"),
            "mt_doc_checked",
            checked,
            update,
        )
        .await;
        documents_in_opposite_orders(
            &format!("lock_order_counted_{tag}"),
            "mt_doc_counted",
            counted,
            update,
        )
        .await;
    }
}

/// A batch queued in descending id order is written in ascending order: every document
/// lands with its own data, the session learns each one's own version (optimistic: the
/// version the client chose for that row; numeric: 1), and a stale one among them is the
/// one named in the rejection.
#[tokio::test]
async fn a_batch_put_in_id_order_keeps_each_documents_data_and_version() {
    let (schema, b) = builder("row_order_batch");
    let store = ok(b.document::<Checked>().document::<Counted>().build().await);
    let mut ids: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    ids.reverse();
    let mut s = store.lightweight_session();
    for (n, id) in ids.iter().enumerate() {
        ok(s.store(Checked {
            id: *id,
            n: n as i64,
        }));
        ok(s.store(Counted {
            id: *id,
            n: n as i64,
        }));
    }
    ok(s.save_changes().await);
    let raw = schema.raw_client().await;
    for (n, id) in ids.iter().enumerate() {
        let row = raw
            .query_one(
                "SELECT (c.data->>'n')::bigint, c.mt_version, (r.data->>'n')::bigint, r.mt_revision \
                 FROM mt_doc_checked c JOIN mt_doc_counted r USING (id) WHERE id = $1",
                &[id],
            )
            .await
            .expect("stored");
        let (checked_n, checked_v, counted_n, counted_v): (i64, Uuid, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!((checked_n, counted_n), (n as i64, n as i64), "document {n}");
        assert_eq!(s.version_of::<Checked>(id), Some(checked_v), "document {n}");
        assert_eq!(s.version_of::<Counted>(id), Some(counted_v), "document {n}");
    }

    // Another session moves one of them; this one's batch, in descending order again,
    // is rejected naming that one alone.
    let stale = ids[7];
    let mut other = store.lightweight_session();
    ok(other.store_with_version(Checked { id: stale, n: -1 }, ok_version(&mut s, stale)));
    ok(other.save_changes().await);
    for (n, id) in ids.iter().enumerate() {
        let v = ok_version(&mut s, *id);
        ok(s.store_with_version(
            Checked {
                id: *id,
                n: 100 + n as i64,
            },
            v,
        ));
    }
    match s.save_changes().await {
        Err(marten::Error::Rejected(r)) => {
            let named: Vec<String> = r.iter().map(|r| r.id.to_string()).collect();
            assert_eq!(named, [stale.to_string()]);
        }
        other => panic!("the stale document was not rejected: {other:?}"),
    }
}

fn ok_version(s: &mut LightweightSession, id: Uuid) -> Uuid {
    s.version_of::<Checked>(&id).expect("a known version")
}
