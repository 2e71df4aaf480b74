//! The daemon's runner dropped at every await point - while it acquires the projection,
//! reads a page, reads the versions a batch skipped, plans or commits a batch - leaves
//! nothing running, locked or in a transaction, and never leaves a projected document
//! ahead of or behind the progress it committed with: no event is applied twice or lost,
//! whatever the moment of the drop.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::tally::{Added, Tally};
use common::{named_builder, ok};
use marten::daemon::DaemonOptions;
use marten::prelude::*;
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::TestSchema;
use tokio::sync::watch;

const WITHIN: Duration = Duration::from_secs(10);

/// Per stream, how many events the projection has applied (from its documents) and how
/// many its committed position covers (from the events table).
async fn applied_and_covered(
    raw: &tokio_postgres::Client,
) -> (BTreeMap<Uuid, i64>, BTreeMap<Uuid, i64>) {
    let position: i64 = raw
        .query_opt(
            "SELECT last_seq FROM mt_event_progression WHERE name = 'Tally'",
            &[],
        )
        .await
        .expect("progression")
        .map_or(0, |row| row.get(0));
    let covered = raw
        .query(
            "SELECT stream_id, count(*) FROM mt_events WHERE seq_id <= $1 AND type = 'added' \
             GROUP BY stream_id",
            &[&position],
        )
        .await
        .expect("events")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let applied = raw
        .query("SELECT id, (data->>'count')::bigint FROM mt_doc_tally", &[])
        .await
        .unwrap_or_default()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    (applied, covered)
}

/// After a drop: nothing of the store's runs or is locked, and the documents are exactly
/// the events up to the committed position.
async fn check_after_drop(schema: &TestSchema, k: usize) {
    let raw = schema.raw_client().await;
    assert_clean(&raw, schema.name(), WITHIN).await;
    let (applied, covered) = applied_and_covered(&raw).await;
    assert_eq!(
        applied, covered,
        "after the drop at pending poll {k}, the documents and the committed position disagree"
    );
}

/// Resets the projection, then runs its runner until the projection is not stale, then
/// stops it.
fn catch_up(store: &DocumentStore) -> Operation<marten::Result<()>> {
    let store = store.clone();
    Box::pin(async move {
        marten::daemon::rebuild(&store, "Tally").await?;
        let (stop, stopped) = watch::channel(false);
        let options = DaemonOptions {
            batch_size: 5,
            ..DaemonOptions::default()
        };
        let Some(runner) = marten_testing::daemon::runner(&store, "Tally", options, stopped) else {
            panic!("Tally is registered as an async projection");
        };
        let stopper = async {
            let caught_up = marten::daemon::wait_for_non_stale(&store, WITHIN).await;
            let _ = stop.send(true);
            caught_up
        };
        let (ran, caught_up) = tokio::join!(runner, stopper);
        ran.and(caught_up)
    })
}

/// An event the tally does not handle.
#[derive(Event, serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Noted {}

/// Four streams of three `Added` each (after a `Noted` each, with `noted_first`), then
/// the runner dropped at every await point of a rebuild and catch-up: nothing left behind,
/// every event applied once.
async fn dropped_at_every_await_point(label: &str, noted_first: bool) {
    let (schema, builder) = named_builder(label);
    let store = ok(builder
        .event::<Noted>()
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    if noted_first {
        for id in &streams {
            ok(s.events().append(*id, [Noted {}]));
        }
        ok(s.save_changes().await);
    }
    for round in 1..=3 {
        for id in &streams {
            ok(s.events().append(*id, [Added { n: round }]));
        }
        ok(s.save_changes().await);
    }
    drop(s);

    let run = cancel_at_every_await(
        3000,
        |_k| catch_up(&store),
        |k| check_after_drop(&schema, k),
    )
    .await;
    ok(run.output);
    eprintln!("dropped at {} pending polls", run.cancelled);
    assert!(
        run.cancelled >= 20,
        "the runner had only {} pending polls",
        run.cancelled
    );
    let raw = schema.raw_client().await;
    let (applied, covered) = applied_and_covered(&raw).await;
    assert_eq!(applied.len(), 4);
    assert!(applied.values().all(|n| *n == 3), "{applied:?}");
    assert_eq!(applied, covered);
}

#[tokio::test]
async fn a_runner_dropped_at_any_await_point_leaves_nothing_behind_and_applies_each_event_once() {
    dropped_at_every_await_point("daemon_cancel", false).await;
}

/// Each stream's first event is one the tally does not handle, so batches of five leave
/// holes the runner reads (`EventSql::fetch_ranges`): a drop there too leaves nothing.
#[tokio::test]
async fn a_runner_dropped_while_it_reads_the_versions_a_batch_skipped_leaves_nothing_behind() {
    dropped_at_every_await_point("daemon_cancel_holes", true).await;
}
