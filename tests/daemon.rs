//! The async daemon in one process: catch-up equals the live fold, runners exclude each
//! other, a long-open appending transaction delays but never skips, poison events,
//! rebuild (which clears the projection's dead letters: an event that no longer fails is
//! applied by the replay whichever way it is read).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::inversion::versions_in_global_order;
use common::tally::Added;
use common::{builder, ok, stopped_with};
use marten::daemon::{Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Poison {}

/// An event whose apply fails while [`FLAKY_FAILS`] is set (a projection bug, fixed later).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Flaky {
    n: i64,
}

/// Whether [`Flaky`] events fail to apply (only one test appends them).
static FLAKY_FAILS: AtomicBool = AtomicBool::new(true);

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Tally {
    id: Uuid,
    version: i64,
    total: i64,
    count: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
        self.count += 1;
    }
    fn apply_poison(&mut self, _e: &Poison) -> Result<(), String> {
        Err("poisoned".into())
    }
    fn apply_flaky(&mut self, e: &Flaky) -> Result<(), String> {
        if FLAKY_FAILS.load(Ordering::SeqCst) {
            return Err("flaky".into());
        }
        self.total += e.n;
        self.count += 1;
        Ok(())
    }
}

async fn store_for(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .pool_size(12)
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    (schema, store)
}

async fn append_many(store: &DocumentStore, streams: &[Uuid], rounds: i64) {
    let mut s = store.lightweight_session();
    for r in 0..rounds {
        for id in streams {
            ok(s.events().append(*id, [Added { n: r + 1 }]));
        }
        ok(s.save_changes().await);
    }
}

async fn assert_equals_live(store: &DocumentStore, streams: &[Uuid]) {
    let mut s = store.lightweight_session();
    for id in streams {
        let doc = ok(store.query_session().load::<Tally>(id).await).expect("projected");
        let live: Tally = ok(s.events().aggregate_stream(*id).await).expect("live");
        assert_eq!(doc, live, "stream {id}");
    }
}

#[tokio::test]
async fn catch_up_equals_the_live_fold_with_two_competing_daemons() {
    let (schema, store) = store_for("daemon_catch_up").await;
    let trace = std::env::temp_dir().join(format!("marten-trace-{}", schema.name()));
    let streams: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    append_many(&store, &streams, 10).await;
    let options = || DaemonOptions {
        batch_size: 37,
        hooks: std::sync::Arc::new(marten_testing::trace::TraceHooks::new(&trace).expect("trace")),
        ..DaemonOptions::default()
    };
    let a = Daemon::start(&store, options());
    let b = Daemon::start(&store, options());
    append_many(&store, &streams, 5).await;
    ok(a.wait_for_non_stale(Duration::from_secs(60)).await);
    assert_equals_live(&store, &streams).await;
    ok(a.stop().await);
    ok(b.stop().await);
    let report = marten_testing::trace::analyze(&trace).expect("trace");
    println!("{report}");
    assert_eq!(report.events_committed, 40 * 15, "every event processed");
    assert!(report.overlaps.is_empty(), "{report}");
    assert!(report.double_processed.is_empty(), "{report}");
    let _ = std::fs::remove_dir_all(&trace);
}

#[tokio::test]
async fn a_long_open_appending_transaction_delays_but_never_skips() {
    let (schema, store) = store_for("daemon_gap").await;
    let streams: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    append_many(&store, &streams, 2).await;
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 3,
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);

    // An open transaction appends to stream 0 (taking a low sequence) and stays open.
    let slow = schema.raw_client().await;
    slow.batch_execute("BEGIN").await.expect("begin");
    slow.execute(
        "WITH s AS (UPDATE mt_streams SET version = version + 1 WHERE id = $1 RETURNING version) \
         INSERT INTO mt_events (id, stream_id, version, type, data) SELECT gen_random_uuid(), $1, s.version, 'added', '{\"n\": 1000}' FROM s",
        &[&streams[0]],
    )
    .await
    .expect("slow append");
    // Later appends commit across several batches.
    append_many(&store, &streams[1..], 3).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let held = ok(store.query_session().load::<Tally>(&streams[1]).await).expect("doc");
    assert_eq!(held.count, 2, "events behind the open transaction wait");
    slow.batch_execute("COMMIT").await.expect("commit");
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    assert_equals_live(&store, &streams).await;
    let first = ok(store.query_session().load::<Tally>(&streams[0]).await).expect("doc");
    assert_eq!(
        first.total,
        1 + 2 + 1000,
        "the held event was applied, not skipped"
    );
    ok(daemon.stop().await);
}

#[tokio::test]
async fn a_poison_event_is_dead_lettered_after_retries() {
    let (schema, store) = store_for("daemon_poison").await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [
            PendingEvent::new(Added { n: 1 }),
            PendingEvent::new(Poison {}),
            PendingEvent::new(Added { n: 2 }),
        ],
    ));
    ok(s.save_changes().await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            retries: 2,
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let t = ok(store.query_session().load::<Tally>(&id).await).expect("doc");
    assert_eq!(
        (t.total, t.count),
        (3, 2),
        "the poison event was skipped, the rest applied"
    );
    let row = schema
        .raw_client()
        .await
        .query_one(
            "SELECT projection, event_type, error, attempts FROM mt_dead_letters",
            &[],
        )
        .await
        .expect("dead letter");
    assert_eq!(row.get::<_, String>(0), "Tally");
    assert_eq!(row.get::<_, String>(1), "poison");
    assert!(row.get::<_, String>(2).contains("poisoned"));
    assert_eq!(
        row.get::<_, i32>(3),
        3,
        "the first try and two retries are recorded"
    );
    ok(daemon.stop().await);
}

#[tokio::test]
async fn a_dead_letter_table_from_before_the_attempts_column_gets_it() {
    let (schema, b) = builder("daemon_dead_letter_upgrade");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    // The table as an older marten made it, with a dead letter recorded then.
    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "ALTER TABLE mt_dead_letters DROP COLUMN attempts;
         INSERT INTO mt_dead_letters (projection, seq_id, event_type, stream_id, error) \
         VALUES ('Tally', 1, 'poison', 'old', 'recorded before')",
    )
    .await
    .expect("an old table");
    drop(store);
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [PendingEvent::new(Poison {})]));
    ok(s.save_changes().await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            retries: 0,
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let rows = raw
        .query(
            "SELECT stream_id, attempts FROM mt_dead_letters ORDER BY id",
            &[],
        )
        .await
        .expect("dead letters");
    let got: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [("old".to_owned(), 0), (id.to_string(), 1)]);
}

#[tokio::test]
async fn a_poison_event_stops_the_projection_when_configured() {
    let (_schema, store) = store_for("daemon_poison_stop").await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [
            PendingEvent::new(Added { n: 1 }),
            PendingEvent::new(Poison {}),
        ],
    ));
    ok(s.save_changes().await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            retries: 1,
            poison: PoisonPolicy::Stop,
            ..DaemonOptions::default()
        },
    );
    let stopped = stopped_with(daemon).await;
    assert!(matches!(stopped, marten::Error::Apply { .. }), "{stopped}");
    assert!(
        ok(store.query_session().load::<Tally>(&id).await).is_none(),
        "nothing of the poisoned batch"
    );
}

#[tokio::test]
async fn rebuild_replays_from_the_start() {
    let (schema, store) = store_for("daemon_rebuild").await;
    let streams: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    append_many(&store, &streams, 4).await;
    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    schema
        .raw_client()
        .await
        .batch_execute("UPDATE mt_doc_tally SET data = jsonb_set(data, '{total}', '-1')")
        .await
        .expect("corrupt the projection");
    // A document no event makes (written by hand): a rebuild does not keep it.
    let stray = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.store(Tally {
        id: stray,
        version: 1,
        total: 7,
        count: 1,
    }));
    ok(s.save_changes().await);
    ok(marten::daemon::rebuild(&store, "Tally").await);
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    assert_equals_live(&store, &streams).await;
    assert!(ok(store.query_session().load::<Tally>(&stray).await).is_none());
    ok(daemon.stop().await);
}

/// Stream `s`: `Added` 1, `Flaky` 100, `Added` 2, each in a save of its own; then the
/// stored order is inverted by hand (version 3's `tx_id` set below version 2's), so a
/// daemon reading one event per batch meets version 3 first and reads version 2 to fill
/// the hole.
async fn flaky_second_read_by_a_hole(
    schema: &marten_testing::TestSchema,
    store: &DocumentStore,
) -> Uuid {
    let s = Uuid::now_v7();
    let events = [
        PendingEvent::new(Added { n: 1 }),
        PendingEvent::new(Flaky { n: 100 }),
        PendingEvent::new(Added { n: 2 }),
    ];
    for event in events {
        let mut session = store.lightweight_session();
        ok(session.events().append(s, [event]));
        ok(session.save_changes().await);
    }
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_events SET tx_id = (((SELECT tx_id FROM mt_events WHERE stream_id = $1 \
             AND version = 2)::text::bigint - 1)::text::xid8) WHERE stream_id = $1 AND version = 3",
            &[&s],
        )
        .await
        .expect("invert by hand");
    assert_eq!(versions_in_global_order(schema, s).await, [1, 3, 2]);
    s
}

/// The dead letters recorded: stream and type, in order.
async fn dead_letters(schema: &marten_testing::TestSchema) -> Vec<(String, String)> {
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT stream_id, event_type FROM mt_dead_letters ORDER BY stream_id, id",
            &[],
        )
        .await
        .expect("dead letters");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// A rebuild clears the projection's dead letters in the transaction of its reset: the
/// replay applies the events that no longer fail (the projection was fixed), whether a
/// page reads them (`read`) or a batch reads them to fill a hole in their stream
/// (`hole`), and no dead letter of the earlier run is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_clears_the_dead_letters_and_replays_the_events_that_no_longer_fail() {
    const WAIT: Duration = Duration::from_secs(30);
    let (schema, store) = store_for("daemon_rebuild_dead_letters").await;
    let read = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(
        read,
        [
            PendingEvent::new(Added { n: 1 }),
            PendingEvent::new(Flaky { n: 100 }),
            PendingEvent::new(Added { n: 2 }),
        ],
    ));
    ok(s.save_changes().await);
    let hole = flaky_second_read_by_a_hole(&schema, &store).await;
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 1,
            retries: 0,
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(WAIT).await);
    for id in [read, hole] {
        let t = ok(store.query_session().load::<Tally>(&id).await).expect("doc");
        assert_eq!(
            (t.total, t.count, t.version),
            (3, 2, 3),
            "the flaky event left out"
        );
    }
    let mut letters = vec![
        (read.to_string(), "flaky".to_owned()),
        (hole.to_string(), "flaky".to_owned()),
    ];
    letters.sort();
    assert_eq!(dead_letters(&schema).await, letters);

    FLAKY_FAILS.store(false, Ordering::SeqCst);
    ok(marten::daemon::rebuild(&store, "Tally").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    for (id, how) in [(read, "read by its page"), (hole, "read to fill a hole")] {
        let t = ok(store.query_session().load::<Tally>(&id).await).expect("doc");
        assert_eq!(
            (t.total, t.count, t.version),
            (103, 3, 3),
            "the event {how}"
        );
    }
    assert!(
        dead_letters(&schema).await.is_empty(),
        "the rebuild cleared the dead letters of the run it replaced"
    );
    assert_equals_live(&store, &[read, hole]).await;
    ok(tokio::time::timeout(WAIT, daemon.stop())
        .await
        .expect("the daemon stopped in time"));
}

/// A rebuild of a projection no event feeds finishes, and the daemon is not stale.
#[tokio::test]
async fn a_rebuild_without_events_finishes() {
    let (_schema, store) = store_for("daemon_rebuild_empty").await;
    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(marten::daemon::rebuild(&store, "Tally").await);
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    // And it projects what comes next.
    let id = Uuid::now_v7();
    append_many(&store, &[id], 2).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    assert_equals_live(&store, &[id]).await;
    ok(daemon.stop().await);
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Assigned {
    to: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Workload {
    id: String,
    tasks: i64,
}

#[marten::apply]
impl Workload {
    fn identities(e: &Assigned) -> Vec<String> {
        e.to.clone()
    }
    fn create(_e: &Assigned) -> Self {
        Workload {
            id: String::new(),
            tasks: 1,
        }
    }
    fn apply(&mut self, _e: &Assigned) {
        self.tasks += 1;
    }
}

#[tokio::test]
async fn async_multi_stream_projection_groups_events_from_many_streams() {
    let (_schema, b) = builder("daemon_multi");
    let store = ok(b
        .multi_stream_projection::<Workload>(Lifecycle::Async)
        .build()
        .await);
    let mut s = store.lightweight_session();
    for i in 0..30 {
        let to = if i % 3 == 0 {
            vec!["ann".to_owned(), "bob".to_owned()]
        } else {
            vec!["bob".to_owned()]
        };
        ok(s.events().append(Uuid::now_v7(), [Assigned { to }]));
    }
    ok(s.save_changes().await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 7,
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<Workload>(&"ann".to_owned()).await).map(|w| w.tasks),
        Some(10)
    );
    assert_eq!(
        ok(q.load::<Workload>(&"bob".to_owned()).await).map(|w| w.tasks),
        Some(30)
    );
    ok(daemon.stop().await);
}

#[tokio::test]
async fn the_cli_rebuild_reports_progress_up_to_the_head() {
    let (_schema, store) = store_for("daemon_cli").await;
    let streams: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    append_many(&store, &streams, 25).await;
    let mut seen = Vec::new();
    ok(
        marten::cli::rebuild_with_progress(&store, "Tally", DaemonOptions::default(), |s| {
            seen.push(s.clone())
        })
        .await,
    );
    let last = seen.last().expect("progress reported");
    assert_eq!((last.position, last.lag()), (last.head, 0), "{last:?}");
    assert!(last.head >= 500);
    let line = marten::cli::progress_line(last, 0.0);
    assert!(line.contains(&"#".repeat(30)), "{line}");
    let status = ok(marten::cli::status(&store).await);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].name, "Tally");
    assert_equals_live(&store, &streams).await;
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Big {
    id: i64,
    n: i64,
}

struct BigAdds;

impl marten::EventProjection for BigAdds {
    fn name(&self) -> &'static str {
        "BigAdds"
    }
    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut marten::ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(a) = event.data_as::<Added>() {
            if a.n >= 3 {
                ops.store(Big {
                    id: event.sequence,
                    n: a.n,
                });
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn async_event_projection_writes_documents_per_event() {
    let (_schema, b) = builder("daemon_event_projection");
    let store = ok(b
        .event::<Added>()
        .event_projection(BigAdds, Lifecycle::Async)
        .document::<Big>()
        .build()
        .await);
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    append_many(&store, &streams, 5).await;
    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let big = ok(store.query_session().query::<Big>().count().await);
    assert_eq!(
        big,
        4 * 3,
        "events with n >= 3: rounds 3, 4, 5 of 4 streams"
    );
    ok(daemon.stop().await);
}

/// `BigAdds` owning its documents: a rebuild deletes them before it replays.
struct OwnedBigAdds;

impl marten::EventProjection for OwnedBigAdds {
    fn name(&self) -> &'static str {
        "OwnedBigAdds"
    }
    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut marten::ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        BigAdds.apply(event, ops)
    }
    fn owned_documents(&self, owned: &mut marten::OwnedDocuments) {
        owned.document::<Big>();
    }
}

/// A rebuild deletes the documents of the types an event projection owns (a stray one no
/// event makes is gone, the others come back from the replay) and leaves those of a
/// projection that declares none (its stray document survives); a projection whose owned
/// type's table was never made rebuilds too.
#[tokio::test]
async fn a_rebuild_deletes_the_documents_an_event_projection_owns() {
    for owned in [true, false] {
        let (_schema, b) = builder("daemon_event_projection_owned");
        let b = b.event::<Added>();
        let (b, name) = match owned {
            true => (
                b.event_projection(OwnedBigAdds, Lifecycle::Async),
                "OwnedBigAdds",
            ),
            false => (b.event_projection(BigAdds, Lifecycle::Async), "BigAdds"),
        };
        let store = ok(b.build().await);
        // Nothing written yet: the owned type's table does not exist.
        ok(marten::daemon::rebuild(&store, name).await);
        let streams: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
        append_many(&store, &streams, 4).await;
        let daemon = Daemon::start(&store, DaemonOptions::default());
        ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
        let mut s = store.lightweight_session();
        ok(s.store(Big { id: -1, n: 99 }));
        ok(s.save_changes().await);
        ok(marten::daemon::rebuild(&store, name).await);
        ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
        ok(daemon.stop().await);
        let mut q = store.query_session();
        let stray: Option<Big> = ok(q.load(&-1i64).await);
        assert_eq!(stray.is_none(), owned, "owned: {owned}");
        let projected = ok(q.query::<Big>().count().await) - i64::from(!owned);
        assert_eq!(
            projected,
            2 * 2,
            "rounds 3 and 4 of 2 streams, owned: {owned}"
        );
    }
}

/// Deleted streams and the daemon: a stream deleted before the daemon starts is never
/// projected, one deleted while it runs neither stalls it nor loses the others' events,
/// and a rebuild leaves no document for a deleted stream.
#[tokio::test]
async fn deleted_streams_neither_stall_the_daemon_nor_survive_a_rebuild() {
    let (_schema, store) = store_for("daemon_deleted_streams").await;
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    append_many(&store, &streams, 3).await;
    let delete = |id: Uuid| {
        let store = store.clone();
        async move {
            let mut s = store.lightweight_session();
            ok(s.events().delete_stream(id));
            ok(s.save_changes().await);
        }
    };
    delete(streams[1]).await;
    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let kept = [streams[0], streams[2]];
    assert_equals_live(&store, &kept).await;
    assert!(ok(store.query_session().load::<Tally>(&streams[1]).await).is_none());
    // While it runs: the third stream is deleted, the first goes on.
    append_many(&store, &streams[..1], 2).await;
    delete(streams[2]).await;
    append_many(&store, &streams[..1], 2).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    assert_equals_live(&store, &streams[..1]).await;
    ok(marten::daemon::rebuild(&store, "Tally").await);
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    assert_equals_live(&store, &streams[..1]).await;
    for gone in &streams[1..] {
        assert!(ok(store.query_session().load::<Tally>(gone).await).is_none());
    }
    ok(daemon.stop().await);
}
