//! Recovery without a process restart: a daemon whose runtime is torn down at any point
//! of a batch, and a server restarted under writers and a daemon.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::tally::{Added, Tally};
use common::{named_builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten_testing::cancel::assert_clean;
use marten_testing::PrivateCluster;

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build a runtime: {e}"),
    }
}

async fn append_round(store: &DocumentStore, streams: &[Uuid], n: i64) {
    let mut s = store.lightweight_session();
    for id in streams {
        ok(s.events().append(*id, [Added { n }]));
    }
    ok(s.save_changes().await);
}

async fn assert_equals_live(store: &DocumentStore, streams: &[Uuid]) {
    let mut s = store.lightweight_session();
    for id in streams {
        let doc: Option<Tally> = ok(store.query_session().load(id).await);
        let live: Option<Tally> = ok(s.events().aggregate_stream(*id).await);
        assert_eq!(doc, live, "stream {id}");
    }
}

/// The daemon's tasks are dropped wherever they are (its runtime is shut down) a dozen
/// times, mid-batch: no connection of the store is left busy or holding a lock, and a
/// daemon started afterwards brings every document to the live fold of its stream (no
/// batch half-applied, none applied twice).
#[test]
fn a_daemon_torn_down_at_any_point_leaves_nothing_behind_and_misses_nothing() {
    let main = runtime();
    let (schema, b) = named_builder("daemon_torn_down");
    let builder = b.projection::<Tally>(Lifecycle::Async);
    let store = main.block_on(async { ok(builder.build().await) });
    let streams: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    main.block_on(async {
        for n in 1..=10 {
            append_round(&store, &streams, n).await;
        }
    });
    for round in 0..12u64 {
        let rt = runtime();
        let (_, b) = named_builder("unused");
        // A store of the torn-down runtime's own, on the same schema and name.
        let mut config: tokio_postgres::Config = match schema.url().parse() {
            Ok(c) => c,
            Err(e) => panic!("url: {e}"),
        };
        config.application_name(schema.name());
        drop(b);
        rt.block_on(async {
            let doomed = ok(DocumentStore::builder()
                .config(config)
                .schema(schema.name())
                .projection::<Tally>(Lifecycle::Async)
                .build()
                .await);
            let daemon = Daemon::start(
                &doomed,
                DaemonOptions {
                    batch_size: 7,
                    poll_interval: Duration::from_millis(5),
                    ..DaemonOptions::default()
                },
            );
            tokio::time::sleep(Duration::from_millis(20 + 9 * round)).await;
            // No graceful stop: the tasks die where they are when the runtime goes.
            std::mem::forget(daemon);
        });
        rt.shutdown_background();
        main.block_on(async {
            let raw = schema.raw_client().await;
            assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
            append_round(&store, &streams, 100 + round as i64).await;
        });
    }
    main.block_on(async {
        let daemon = Daemon::start(&store, DaemonOptions::default());
        ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
        ok(daemon.stop().await);
        assert_equals_live(&store, &streams).await;
    });
}

/// A server restart under 8 writers and a running daemon: writers get typed errors while
/// it is down and succeed again after, without a new store; every acknowledged append is
/// there afterwards; the daemon recovers and its documents equal the live folds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_under_writers_and_a_daemon_loses_no_acknowledged_write() {
    let cluster = Arc::new(match PrivateCluster::start() {
        Ok(c) => c,
        Err(e) => panic!("cannot start a private cluster: {e}"),
    });
    let store = ok(DocumentStore::builder()
        .connection_string(cluster.url())
        .schema("restart")
        .pool_size(10)
        .pool_wait_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let streams: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 20,
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, stream) in streams.iter().copied().enumerate() {
        let (store, stop) = (store.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut unknown = Vec::new();
            let mut failed = 0usize;
            let mut after_failure_ok = false;
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let id = Uuid::now_v7();
                let mut s = store.lightweight_session();
                ok(s.events()
                    .append(stream, [PendingEvent::new(Added { n: i }).with_id(id)]));
                match s.save_changes().await {
                    Ok(()) => {
                        acknowledged.push(id);
                        after_failure_ok |= failed > 0;
                    }
                    Err(marten::Error::OutcomeUnknown(_)) => unknown.push(id),
                    Err(
                        e @ (marten::Error::Connection(_)
                        | marten::Error::Timeout { .. }
                        | marten::Error::PoolExhausted { .. }
                        | marten::Error::TooManyConnections(_)),
                    ) => {
                        failed += 1;
                        if failed == 1 {
                            println!("writer {w}: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("writer {w}: untyped failure {e} ({e:?})"),
                }
            }
            (acknowledged, unknown, failed, after_failure_ok)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let restarting = cluster.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .expect("join")
        .expect("restart");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    let mut acknowledged: HashSet<Uuid> = HashSet::new();
    let mut unknown = 0;
    let mut failures = 0;
    for (acked, maybe, failed, recovered) in
        marten_testing::tasks::join_handles(writers, Duration::from_secs(300)).await
    {
        assert!(
            failed == 0 || recovered,
            "a writer never succeeded again after the restart"
        );
        acknowledged.extend(acked);
        unknown += maybe.len();
        failures += failed;
    }
    println!(
        "{} acknowledged, {unknown} unknown, {failures} failed during the restart",
        acknowledged.len()
    );
    assert!(failures + unknown > 0, "the restart was not noticed");
    let mut s = store.lightweight_session();
    let mut stored: HashSet<Uuid> = HashSet::new();
    for id in &streams {
        for e in ok(s.events().fetch_stream(*id).await) {
            stored.insert(e.id);
        }
    }
    let lost: Vec<&Uuid> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged appends lost: {lost:?}");

    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    assert_equals_live(&store, &streams).await;
}
