//! Snapshots of live aggregates (`.snapshot::<A>(n)`): the live fold starts from the last
//! snapshot and reads only the events after it. Proven by deleting the early events'
//! rows behind the store's back: a fold from the start could no longer give the state.

mod common;

use std::time::Duration;

use common::tally::{Added, Tally};
use common::{builder, named_builder, ok};
use marten::prelude::*;
use marten::Tenancy;
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
