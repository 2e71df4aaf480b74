//! Snapshots of live aggregates (`.snapshot::<A>(n)`): the live fold starts from the last
//! snapshot and reads only the events after it. Proven by deleting the early events'
//! rows behind the store's back: a fold from the start could no longer give the state.
//! A snapshot is only ever the fold of a whole stream, every event applied (not of a
//! range from a later version or up to a time, not one that skipped an unknown event),
//! and only of the stream as it is: a deleted stream's snapshots go with it, and a write
//! racing a delete and restart of its stream writes nothing.

mod common;

use std::time::Duration;

use common::tally::{Added, Tally};
use common::{builder, builder_on, named_builder, ok};
use marten::prelude::*;
use marten::{AutoCreate, Tenancy, UnknownEvents};
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

/// [`Tally`] of a conjoined document type, for conjoined events.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct TenantTally {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl TenantTally {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
}

async fn snapshotting(label: &str, every: u32) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.event::<Added>().snapshot::<Tally>(every).build().await);
    (schema, store)
}

/// Appends `Added { n: from..to }` to `stream`, 100 events a save.
async fn add(store: &DocumentStore, stream: Uuid, from: i64, to: i64) {
    let mut s = store.lightweight_session();
    let mut n = from;
    while n < to {
        let end = (n + 100).min(to);
        ok(s.events().append(stream, (n..end).map(|n| Added { n })));
        ok(s.save_changes().await);
        n = end;
    }
}

/// The state a fold of `Added { n: 0..to }` gives.
fn expected(stream: Uuid, to: i64) -> Tally {
    Tally {
        id: stream,
        version: to,
        total: (0..to).sum(),
        count: to,
    }
}

/// The stored snapshot's version, if any (of `tenant`, in a conjoined table).
async fn snapshot_version(schema: &TestSchema, table: &str, tenant: Option<&str>) -> Option<i64> {
    let raw = schema.raw_client().await;
    let select = format!("SELECT (data->>'version')::bigint FROM {table}");
    let row = match tenant {
        Some(t) => {
            raw.query_opt(&format!("{select} WHERE tenant_id = $1"), &[&t])
                .await
        }
        None => raw.query_opt(&select, &[]).await,
    };
    row.expect("snapshot").map(|r| r.get(0))
}

/// Deletes the events of `stream` before `version`, behind the store's back.
async fn delete_events_before(schema: &TestSchema, stream: Uuid, version: i64) -> u64 {
    let raw = schema.raw_client().await;
    raw.execute(
        "DELETE FROM mt_events WHERE stream_id = $1 AND version < $2",
        &[&stream, &version],
    )
    .await
    .expect("delete early events")
}

#[tokio::test]
async fn a_long_stream_folds_only_the_events_after_its_snapshot() {
    let (schema, store) = snapshotting("snap_long", 100).await;
    let stream = Uuid::now_v7();
    add(&store, stream, 0, 1000).await;
    // A store without the policy folds from the start: the reference.
    let plain = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .event::<Added>()
        .build()
        .await);
    let full: Tally = ok(plain
        .lightweight_session()
        .events()
        .aggregate_stream(stream)
        .await)
    .expect("full fold");
    assert_eq!(full, expected(stream, 1000));
    assert_eq!(snapshot_version(&schema, "mt_doc_tally", None).await, None);

    let mut s = store.lightweight_session();
    let t: Tally = ok(s.events().aggregate_stream(stream).await).expect("tally");
    assert_eq!(t, full, "the first fold is a full one");
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(1000),
        "1000 events past no snapshot: one is written"
    );
    // A fold up to a version does not use or write a snapshot past it.
    let half: Tally = ok(s
        .events()
        .aggregate_stream_with(stream, StreamRange::all().up_to_version(500))
        .await)
    .expect("half");
    assert_eq!(half, expected(stream, 500));

    // Without the early events, only a fold from the snapshot can give the state.
    assert_eq!(delete_events_before(&schema, stream, 1000).await, 999);
    add(&store, stream, 1000, 1050).await;
    let t: Tally = ok(s.events().aggregate_stream(stream).await).expect("tally");
    assert_eq!(t, expected(stream, 1050));
    let latest: Tally = ok(s.events().fetch_latest(stream).await).expect("latest");
    assert_eq!(latest, expected(stream, 1050));
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(1000),
        "50 events past the snapshot: not yet a new one"
    );

    let mut w = ok(s.events().fetch_for_writing::<Tally>(stream).await);
    assert_eq!(w.version(), 1050);
    assert_eq!(w.state(), Some(&expected(stream, 1050)));
    ok(w.append((1050..1110).map(|n| Added { n })));
    ok(s.save_changes().await);
    let w = ok(s
        .events()
        .fetch_for_writing_expected::<Tally>(stream, 1110)
        .await);
    assert_eq!(w.state(), Some(&expected(stream, 1110)));
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(1110),
        "110 events past the snapshot: a new one"
    );
    assert_eq!(delete_events_before(&schema, stream, 1110).await, 110);

    // Under the exclusive lock: read from the snapshot, none written inside the
    // transaction.
    add(&store, stream, 1110, 1250).await;
    let mut s = store.lightweight_session();
    let mut w = ok(s
        .events()
        .fetch_for_exclusive_writing::<Tally>(stream)
        .await);
    assert_eq!(w.version(), 1250);
    assert_eq!(w.state(), Some(&expected(stream, 1250)));
    ok(w.append([Added { n: 1250 }]));
    ok(s.save_changes().await);
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(1110)
    );
    let events = ok(s.events().fetch_stream(stream).await);
    assert_eq!(events.first().map(|e| e.version), Some(1110));
    assert_eq!(events.last().map(|e| e.version), Some(1251));
    // Outside a transaction the next read writes it.
    let t: Tally = ok(s.events().aggregate_stream(stream).await).expect("tally");
    assert_eq!(t, expected(stream, 1251));
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(1251)
    );
}

#[tokio::test]
async fn a_snapshot_that_no_longer_deserializes_falls_back_to_a_full_fold() {
    let (schema, store) = snapshotting("snap_shape", 10).await;
    let stream = Uuid::now_v7();
    add(&store, stream, 0, 30).await;
    let mut s = store.lightweight_session();
    ok(s.events().aggregate_stream::<Tally>(stream).await);
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(30)
    );
    // The aggregate's shape "changed": the stored snapshot no longer reads as `Tally`.
    let raw = schema.raw_client().await;
    raw.execute(
        "UPDATE mt_doc_tally SET data = '{\"old_shape\": true}'",
        &[],
    )
    .await
    .expect("old shape");
    let t: Tally = ok(s.events().aggregate_stream(stream).await).expect("tally");
    assert_eq!(t, expected(stream, 30), "a full fold, not an error");
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(30),
        "the full fold wrote a snapshot of the current shape"
    );
}

#[tokio::test]
async fn a_deleted_streams_snapshot_is_not_built_on() {
    let (schema, store) = snapshotting("snap_deleted", 5).await;
    let stream = Uuid::now_v7();
    add(&store, stream, 0, 20).await;
    let mut s = store.lightweight_session();
    ok(s.events().aggregate_stream::<Tally>(stream).await);
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(20)
    );
    ok(s.events().delete_stream(stream));
    ok(s.save_changes().await);
    assert_eq!(ok(s.events().aggregate_stream::<Tally>(stream).await), None);
    // Started again, shorter: its event at the snapshot's version does not exist.
    add(&store, stream, 0, 3).await;
    let t: Tally = ok(s.events().aggregate_stream(stream).await).expect("tally");
    assert_eq!(t, expected(stream, 3));
}

#[tokio::test]
async fn conjoined_tenants_keep_separate_snapshots() {
    let (schema, b) = builder("snap_tenants");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .event::<Added>()
        .snapshot::<TenantTally>(10)
        .build()
        .await);
    let stream = Uuid::now_v7();
    for (tenant, n, count) in [("red", 1, 25), ("blue", 2, 40)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events()
            .start_stream(stream, (0..count).map(|_| Added { n })));
        ok(s.save_changes().await);
        let t: TenantTally = ok(s.events().aggregate_stream(stream).await).expect("tally");
        assert_eq!((t.total, t.version), (n * count, count));
    }
    let table = "mt_doc_tenanttally";
    assert_eq!(
        snapshot_version(&schema, table, Some("red")).await,
        Some(25)
    );
    assert_eq!(
        snapshot_version(&schema, table, Some("blue")).await,
        Some(40)
    );
    // Each tenant's fold starts from its own snapshot.
    let raw = schema.raw_client().await;
    let deleted = raw
        .execute(
            "DELETE FROM mt_events WHERE stream_id = $1 AND version < 25",
            &[&stream],
        )
        .await
        .expect("delete");
    assert_eq!(deleted, 48);
    for (tenant, n, count) in [("red", 1, 25), ("blue", 2, 40)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events().append(stream, [Added { n: 100 }]));
        ok(s.save_changes().await);
        let t: TenantTally = ok(s.events().aggregate_stream(stream).await).expect("tally");
        assert_eq!(
            (t.total, t.version),
            (n * count + 100, count + 1),
            "{tenant}"
        );
    }
}

#[tokio::test]
async fn a_policy_the_aggregate_cannot_have_is_refused_at_build() {
    let (_schema, b) = builder("snap_config");
    let inline = b
        .snapshot::<Tally>(10)
        .projection::<Tally>(Lifecycle::Inline)
        .build()
        .await;
    let err = inline.expect_err("inline is its own snapshot");
    assert!(err.to_string().contains("its own snapshot"), "{err}");
    let (_schema, b) = builder("snap_config_zero");
    let err = b.snapshot::<Tally>(0).build().await.expect_err("every 0");
    assert!(matches!(err, marten::Error::Configuration(_)), "{err}");
    let (_schema, b) = builder("snap_config_tenancy");
    let err = b
        .events_tenancy(Tenancy::Conjoined)
        .snapshot::<Tally>(10)
        .build()
        .await
        .expect_err("a single-tenant snapshot of conjoined events");
    assert!(err.to_string().contains("conjoined"), "{err}");
}

/// An append and a read that writes a snapshot (one every event), for `k`.
fn append_and_read(store: &DocumentStore, stream: Uuid, k: usize) -> Operation<marten::Result<()>> {
    let store = store.clone();
    Box::pin(async move {
        let mut s = store.lightweight_session();
        s.events().append(stream, [Added { n: k as i64 }])?;
        s.save_changes().await?;
        s.events().aggregate_stream::<Tally>(stream).await?;
        Ok(())
    })
}

#[tokio::test]
async fn a_read_writing_a_snapshot_cancelled_at_every_await_leaves_nothing_open() {
    let (schema, b) = named_builder("snap_cancel");
    let store = ok(b
        .pool_size(1)
        .event::<Added>()
        .snapshot::<Tally>(1)
        .build()
        .await);
    let stream = Uuid::now_v7();
    add(&store, stream, 0, 1).await;
    let raw = schema.raw_client().await;
    let within = Duration::from_secs(5);
    let run = cancel_at_every_await(
        200,
        |k| append_and_read(&store, stream, k),
        |_| assert_clean(&raw, schema.name(), within),
    )
    .await;
    ok(run.output);
    assert!(run.cancelled >= 3, "only {} pending polls", run.cancelled);
    assert_clean(&raw, schema.name(), within).await;
    // Every snapshot left behind is the fold of the events up to its version.
    let events = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await);
    let row = raw
        .query_one("SELECT data FROM mt_doc_tally", &[])
        .await
        .expect("a snapshot");
    let snapshot: Tally = serde_json::from_value(row.get(0)).expect("a tally");
    let upto: Vec<i64> = events
        .iter()
        .filter(|e| e.version <= snapshot.version)
        .filter_map(|e| e.data_as::<Added>().map(|a| a.n))
        .collect();
    assert_eq!(snapshot.total, upto.iter().sum::<i64>());
    assert_eq!(snapshot.count, upto.len() as i64);
    let t: Tally = ok(store
        .lightweight_session()
        .events()
        .aggregate_stream(stream)
        .await)
    .expect("tally");
    assert_eq!(t.version, events.len() as i64);
}

/// An event type only some builds know (see
/// [`a_fold_that_skipped_an_unknown_event_writes_no_snapshot`]).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Dropped {
    n: i64,
}

/// A build that knows only `Added`: under `UnknownEvents::Skip` its folds skip `Dropped`.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(table = "ledger")]
struct LedgerV1 {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl LedgerV1 {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
}

/// The next build of the same aggregate (the same table): it applies `Dropped` too.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(table = "ledger")]
struct LedgerV2 {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl LedgerV2 {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }

    fn apply(&mut self, e: &Dropped) {
        self.total += e.n;
    }
}

/// Appends `count` events `Added { n }` to `stream` in one save (`start`: starting it).
async fn add_n(store: &DocumentStore, stream: Uuid, count: i64, n: i64, start: bool) {
    let mut s = store.lightweight_session();
    let events = (0..count).map(|_| Added { n });
    if start {
        ok(s.events().start_stream(stream, events));
    } else {
        ok(s.events().append(stream, events));
    }
    ok(s.save_changes().await);
}

/// The total and version a plain `aggregate_stream` of `stream` gives.
async fn folded(store: &DocumentStore, stream: Uuid) -> (i64, i64) {
    let t: Tally = ok(store
        .lightweight_session()
        .events()
        .aggregate_stream(stream)
        .await)
    .expect("tally");
    (t.total, t.version)
}

#[tokio::test]
async fn a_fold_from_a_later_version_writes_no_snapshot() {
    let (schema, store) = snapshotting("snap_partial", 5).await;
    let stream = Uuid::now_v7();
    add_n(&store, stream, 20, 1, true).await;
    let mut s = store.lightweight_session();
    let tail: Tally = ok(s
        .events()
        .aggregate_stream_with(stream, StreamRange::all().from_version(11))
        .await)
    .expect("tail");
    assert_eq!(
        (tail.total, tail.version),
        (10, 20),
        "the fold of events 11..=20"
    );
    // Events 11..=20 are not the aggregate at version 20: no snapshot of them.
    assert_eq!(folded(&store, stream).await, (20, 20));
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(20)
    );

    // Nor does one replace a good snapshot.
    add_n(&store, stream, 10, 1, false).await;
    let tail: Tally = ok(s
        .events()
        .aggregate_stream_with(stream, StreamRange::all().from_version(21))
        .await)
    .expect("tail");
    assert_eq!((tail.total, tail.version), (10, 30));
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(20),
        "the good snapshot is kept"
    );
    assert_eq!(folded(&store, stream).await, (30, 30));
}

#[tokio::test]
async fn a_fold_up_to_a_time_writes_no_snapshot() {
    let (schema, store) = snapshotting("snap_to_time", 5).await;
    let stream = Uuid::now_v7();
    add_n(&store, stream, 20, 1, true).await;
    // An event's timestamp is its transaction's: a later version can carry an earlier
    // time (its transaction started first), so a fold up to a time is not always the
    // fold of a first part of the stream. Here event 10 is stamped after the others.
    let raw = schema.raw_client().await;
    raw.execute(
        "UPDATE mt_events SET timestamp = timestamp + interval '2 days' \
         WHERE stream_id = $1 AND version = 10",
        &[&stream],
    )
    .await
    .expect("restamp");
    let far = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let until: Tally = ok(store
        .lightweight_session()
        .events()
        .aggregate_stream_with(stream, StreamRange::all().up_to_time(far))
        .await)
    .expect("until");
    assert_eq!((until.total, until.count, until.version), (19, 19, 20));
    assert_eq!(
        folded(&store, stream).await,
        (20, 20),
        "the fold up to a time left no snapshot behind"
    );
}

#[tokio::test]
async fn a_stream_deleted_and_started_again_longer_is_not_folded_from_the_old_snapshot() {
    let (schema, store) = snapshotting("snap_restarted", 5).await;
    let stream = Uuid::now_v7();
    add_n(&store, stream, 20, 1, true).await;
    assert_eq!(folded(&store, stream).await, (20, 20));
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(20)
    );
    let mut s = store.lightweight_session();
    ok(s.events().delete_stream(stream));
    ok(s.save_changes().await);
    // Started again past the old snapshot's version: its event at version 20 exists.
    add_n(&store, stream, 25, 2, true).await;
    assert_eq!(folded(&store, stream).await, (50, 25));
    let w = ok(s.events().fetch_for_writing::<Tally>(stream).await);
    assert_eq!(w.state().map(|t| (t.total, t.count)), Some((50, 25)));
    assert_eq!(
        snapshot_version(&schema, "mt_doc_tally", None).await,
        Some(25),
        "the new stream's own snapshot"
    );
}

#[tokio::test]
async fn a_conjoined_delete_takes_its_tenants_snapshot_only() {
    let (schema, b) = builder("snap_tenant_delete");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .event::<Added>()
        .snapshot::<TenantTally>(5)
        .build()
        .await);
    let stream = Uuid::now_v7();
    for tenant in ["red", "blue"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events()
            .start_stream(stream, (0..20).map(|_| Added { n: 1 })));
        ok(s.save_changes().await);
        ok(s.events().aggregate_stream::<TenantTally>(stream).await);
    }
    let table = "mt_doc_tenanttally";
    let mut red = ok(store.lightweight_session_for("red"));
    ok(red.events().delete_stream(stream));
    ok(red.save_changes().await);
    assert_eq!(snapshot_version(&schema, table, Some("red")).await, None);
    assert_eq!(
        snapshot_version(&schema, table, Some("blue")).await,
        Some(20)
    );
    ok(red
        .events()
        .start_stream(stream, (0..25).map(|_| Added { n: 2 })));
    ok(red.save_changes().await);
    let t: TenantTally = ok(red.events().aggregate_stream(stream).await).expect("red");
    assert_eq!((t.total, t.version), (50, 25));
    let mut blue = ok(store.lightweight_session_for("blue"));
    let t: TenantTally = ok(blue.events().aggregate_stream(stream).await).expect("blue");
    assert_eq!((t.total, t.version), (20, 20));
}

/// How many locks on `table` of `schema` are waited for.
async fn waiting_on(raw: &tokio_postgres::Client, schema: &str, table: &str) -> i64 {
    raw.query_one(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT l.granted AND c.relname = $1 AND n.nspname = $2",
        &[&table, &schema],
    )
    .await
    .expect("pg_locks")
    .get(0)
}

/// Polls `done` every 20 ms for up to 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    for _ in 0..500 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The write race: a fold reads the stream, the stream is deleted and started again past
/// the version the fold read up to, and only then does the fold's snapshot write run. The
/// write is held back by a lock on the snapshot table (`EXCLUSIVE`: reads pass, writes
/// wait) taken between the read and the write; its statement snapshot is taken once the
/// lock is granted, so it sees the new stream, whose event at the fold's version exists.
#[tokio::test]
async fn a_snapshot_write_racing_a_delete_and_restart_writes_nothing() {
    let (schema, store) = snapshotting("snap_write_race", 5).await;
    let stream = Uuid::now_v7();
    // The snapshot table exists before it is locked.
    assert_eq!(
        ok(store
            .lightweight_session()
            .events()
            .aggregate_stream::<Tally>(stream)
            .await),
        None
    );
    add_n(&store, stream, 20, 1, true).await;
    let lock = schema.raw_client().await;
    lock.batch_execute("BEGIN; LOCK TABLE mt_doc_tally IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let raw = schema.raw_client().await;
    let read = tokio::spawn({
        let store = store.clone();
        async move {
            let t: Option<Tally> = store
                .lightweight_session()
                .events()
                .aggregate_stream(stream)
                .await?;
            marten::Result::Ok(t)
        }
    });
    eventually("the snapshot write to wait", || async {
        waiting_on(&raw, schema.name(), "mt_doc_tally").await == 1
    })
    .await;
    let restart = tokio::spawn({
        let store = store.clone();
        async move {
            let mut s = store.lightweight_session();
            s.events().delete_stream(stream)?;
            s.save_changes().await?;
            s.events()
                .start_stream(stream, (0..25).map(|_| Added { n: 2 }))?;
            s.save_changes().await
        }
    });
    // The restart commits, or waits for the table too (its delete of the snapshots).
    eventually("the restart", || async {
        restart.is_finished() || waiting_on(&raw, schema.name(), "mt_doc_tally").await == 2
    })
    .await;
    lock.batch_execute("COMMIT").await.expect("unlock");
    let t = ok(read.await.expect("read task")).expect("tally");
    assert_eq!(
        (t.total, t.version),
        (20, 20),
        "the read saw the first stream"
    );
    ok(restart.await.expect("restart task"));
    assert_eq!(
        folded(&store, stream).await,
        (50, 25),
        "the first stream's fold is not the new stream's snapshot"
    );
}

#[tokio::test]
async fn a_fold_that_skipped_an_unknown_event_writes_no_snapshot() {
    let (schema, b) = builder("snap_unknown");
    let writer = ok(b.event::<Added>().event::<Dropped>().build().await);
    let stream = Uuid::now_v7();
    let mut s = writer.lightweight_session();
    ok(s.events().start_stream(
        stream,
        (0..10)
            .map(|_| PendingEvent::new(Added { n: 1 }))
            .chain([PendingEvent::new(Dropped { n: 5 })])
            .chain((0..10).map(|_| PendingEvent::new(Added { n: 1 }))),
    ));
    ok(s.save_changes().await);
    // A build that does not know `Dropped` skips it.
    let v1 = ok(builder_on(&schema)
        .unknown_events(UnknownEvents::Skip)
        .snapshot::<LedgerV1>(5)
        .build()
        .await);
    let l: LedgerV1 = ok(v1
        .lightweight_session()
        .events()
        .aggregate_stream(stream)
        .await)
    .expect("ledger");
    assert_eq!((l.total, l.version), (20, 21));
    assert_eq!(
        snapshot_version(&schema, "ledger", None).await,
        None,
        "a fold that skipped an event is not the aggregate at its version"
    );
    // The next build knows it: its fold is not built on the skip.
    let v2 = ok(builder_on(&schema).snapshot::<LedgerV2>(5).build().await);
    let l: LedgerV2 = ok(v2
        .lightweight_session()
        .events()
        .aggregate_stream(stream)
        .await)
    .expect("ledger");
    assert_eq!((l.total, l.version), (25, 21));
    assert_eq!(snapshot_version(&schema, "ledger", None).await, Some(21));
}

/// The version, total and count of the snapshot row of `stream`, if any, and whether it
/// names its event (`mt_snapshot_seq` set).
async fn snapshot_of(schema: &TestSchema, stream: Uuid) -> Option<((i64, i64, i64), bool)> {
    let raw = schema.raw_client().await;
    let row = raw
        .query_opt(
            "SELECT (data->>'version')::bigint, (data->>'total')::bigint, \
             (data->>'count')::bigint, mt_snapshot_seq IS NOT NULL FROM mt_doc_tally WHERE id = $1",
            &[&stream],
        )
        .await
        .expect("snapshot");
    row.map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
}

/// A stream deleted where its snapshot row is left behind (by SQL of one's own, or by
/// a store that did not register the policy, whose delete does not know the row), then
/// started again longer than the snapshot's version: the old row's version is among the
/// new stream's, but not its event, and no read builds on it.
#[tokio::test]
async fn a_snapshot_left_behind_by_a_delete_is_not_built_on_by_the_stream_started_again() {
    let (schema, store) = snapshotting("snap_left_behind", 100).await;
    let plain = ok(builder_on(&schema).event::<Added>().build().await);
    for by_sql in [true, false] {
        let stream = Uuid::now_v7();
        add_n(&store, stream, 100, 1, true).await;
        assert_eq!(folded(&store, stream).await, (100, 100));
        assert_eq!(
            snapshot_of(&schema, stream).await,
            Some(((100, 100, 100), true))
        );
        if by_sql {
            let raw = schema.raw_client().await;
            let deleted = raw
                .execute("DELETE FROM mt_streams WHERE id = $1", &[&stream])
                .await
                .expect("delete by SQL");
            assert_eq!(deleted, 1);
        } else {
            let mut s = plain.lightweight_session();
            ok(s.events().delete_stream(stream));
            ok(s.save_changes().await);
        }
        assert_eq!(
            snapshot_of(&schema, stream).await,
            Some(((100, 100, 100), true)),
            "the delete left the snapshot row (by SQL: {by_sql})"
        );
        add_n(&store, stream, 150, 2, true).await;

        let mut s = store.lightweight_session();
        let w = ok(s.events().fetch_for_writing::<Tally>(stream).await);
        assert_eq!(w.version(), 150);
        assert_eq!(
            w.state().map(|t| (t.total, t.count)),
            Some((300, 150)),
            "fetch_for_writing decides on the new stream (by SQL: {by_sql})"
        );
        assert_eq!(
            folded(&store, stream).await,
            (300, 150),
            "aggregate_stream (by SQL: {by_sql})"
        );
        assert_eq!(
            snapshot_of(&schema, stream).await,
            Some(((150, 300, 150), true)),
            "the next snapshot is the new stream's (by SQL: {by_sql})"
        );
        // The new snapshot is built on: without the early events only it gives the state.
        assert_eq!(delete_events_before(&schema, stream, 150).await, 149);
        add_n(&store, stream, 10, 1, false).await;
        assert_eq!(folded(&store, stream).await, (310, 160));
    }
}

/// A snapshot row that does not name its event (written before the column was added,
/// NULL) is not built on; the next snapshot written names it.
#[tokio::test]
async fn a_snapshot_without_the_sequence_of_its_event_is_not_built_on() {
    let (schema, store) = snapshotting("snap_unnamed", 10).await;
    let stream = Uuid::now_v7();
    add_n(&store, stream, 20, 1, true).await;
    assert_eq!(folded(&store, stream).await, (20, 20));
    let raw = schema.raw_client().await;
    raw.execute(
        "UPDATE mt_doc_tally SET mt_snapshot_seq = NULL, \
         data = jsonb_set(data, '{total}', '1000')",
        &[],
    )
    .await
    .expect("an unnamed row");
    assert_eq!(
        folded(&store, stream).await,
        (20, 20),
        "folded from the start"
    );
    assert_eq!(
        snapshot_of(&schema, stream).await,
        Some(((20, 20, 20), true))
    );
    assert_eq!(delete_events_before(&schema, stream, 20).await, 19);
    add_n(&store, stream, 5, 1, false).await;
    assert_eq!(
        folded(&store, stream).await,
        (25, 25),
        "folded from the new row"
    );
}

/// A table the aggregate type had as a plain document, without the snapshot column:
/// `AutoCreate::None` names the column missing, `CreateOrUpdate` adds it, and its rows
/// (none written by a snapshot write) are not built on.
#[tokio::test]
async fn a_document_table_without_the_snapshot_column_gets_it() {
    let (schema, b) = builder("snap_column");
    let plain = ok(b.event::<Added>().document::<Tally>().build().await);
    let stream = Uuid::now_v7();
    add_n(&plain, stream, 20, 1, true).await;
    let mut s = plain.lightweight_session();
    ok(s.store(Tally {
        id: stream,
        version: 20,
        total: 1000,
        count: 1000,
    }));
    ok(s.save_changes().await);
    let err = builder_on(&schema)
        .auto_create(AutoCreate::None)
        .event::<Added>()
        .snapshot::<Tally>(10)
        .build()
        .await
        .expect_err("no snapshot column");
    assert!(err.to_string().contains("mt_snapshot_seq"), "{err}");
    // Registered as a plain document too, before or after: the snapshot table wins.
    let store = ok(builder_on(&schema)
        .event::<Added>()
        .document::<Tally>()
        .snapshot::<Tally>(10)
        .build()
        .await);
    assert_eq!(
        snapshot_of(&schema, stream).await,
        Some(((20, 1000, 1000), false))
    );
    assert_eq!(
        folded(&store, stream).await,
        (20, 20),
        "folded from the start"
    );
    assert_eq!(
        snapshot_of(&schema, stream).await,
        Some(((20, 20, 20), true))
    );
    let none = ok(builder_on(&schema)
        .auto_create(AutoCreate::None)
        .event::<Added>()
        .snapshot::<Tally>(10)
        .document::<Tally>()
        .build()
        .await);
    assert_eq!(folded(&none, stream).await, (20, 20));
}
