//! A runner catching up reads its next page on a second pooled connection while the batch
//! before it commits. With a pool of one connection the read ahead waits for the batch's
//! connection (or gives up and the runner reads the page itself): the daemon still
//! catches up, applies each event once, and leaves the pool's connection usable. Waiting
//! for the daemon (`wait_for_non_stale`) holds no pooled connection between its checks.

mod common;

use std::time::Duration;

use common::tally::{Added, Tally};
use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;

#[tokio::test]
async fn a_pool_of_one_connection_still_catches_up_with_each_event_applied_once() {
    let (_schema, b) = builder("daemon_read_ahead");
    let store = ok(b
        .pool_size(1)
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let streams: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    for round in 1..=20 {
        for id in &streams {
            ok(s.events().append(*id, [Added { n: round }]));
        }
        ok(s.save_changes().await);
    }
    drop(s);

    // Pages of 7 events: most are full, so the runner reads ahead on nearly every batch.
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 7,
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);

    let mut s = store.lightweight_session();
    for id in &streams {
        let tally: Tally = ok(s.load(id).await).expect("projected");
        assert_eq!(
            (tally.count, tally.total, tally.version),
            (20, 210, 20),
            "stream {id}: every event applied once"
        );
    }
    // The one connection went back to the pool clean: a save and a read still work.
    ok(s.events().append(streams[0], [Added { n: 1 }]));
    ok(s.save_changes().await);
    let events = ok(s.events().fetch_stream(streams[0]).await);
    assert_eq!(events.len(), 21);
}

#[tokio::test]
async fn waiting_for_the_daemon_holds_no_pooled_connection_between_checks() {
    let (_schema, b) = builder("daemon_wait_pool");
    let store = ok(b
        .pool_size(1)
        .pool_wait_timeout(Duration::from_secs(2))
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [Added { n: 1 }]));
    ok(s.save_changes().await);
    drop(s);

    // No daemon runs, so the projection stays stale and the waiter polls until its
    // deadline; meanwhile the application's saves must still get the one connection.
    let waiter = marten::daemon::wait_for_non_stale(&store, Duration::from_secs(4));
    let saves = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for n in 0..5 {
            let mut s = store.lightweight_session();
            ok(s.events().append(id, [Added { n }]));
            ok(s.save_changes().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (waited, ()) = tokio::join!(waiter, saves);
    assert!(
        matches!(waited, Err(marten::Error::Timeout { .. })),
        "the projection stays stale without a daemon: {waited:?}"
    );
}
