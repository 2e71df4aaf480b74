//! A subscription's runner dropped at every await point - while it acquires the
//! subscription, reads a page, hands a batch to the handler or commits it - leaves
//! nothing running, locked or in a transaction, and the outbox it fills exactly once
//! holds each event up to the committed checkpoint once, and nothing after it.

mod common;

use std::time::Duration;

use common::tally::Added;
use common::{named_builder, ok};
use marten::daemon::DaemonOptions;
use marten::prelude::*;
use marten::subscriptions::{HandlerError, Subscription, SubscriptionBatch, SubscriptionTx};
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::TestSchema;
use tokio::sync::watch;

/// Fills `outbox` through its transaction, yielding once per batch inside the handler.
struct Outbox;

impl Subscription for Outbox {
    fn name(&self) -> &'static str {
        "outbox"
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        for (id, e) in batch.deliveries() {
            tx.execute("INSERT INTO outbox (delivery_id, sequence) VALUES ($1, $2)")
                .bind(id.to_string())
                .bind(e.sequence);
        }
        tokio::task::yield_now().await;
        Ok(())
    }
}

const WITHIN: Duration = Duration::from_secs(10);

/// The outbox's rows, its distinct sequences, and the events up to the checkpoint.
async fn outbox_and_covered(raw: &tokio_postgres::Client) -> (i64, i64, i64) {
    let row = raw
        .query_one(
            "SELECT (SELECT count(*) FROM outbox), (SELECT count(DISTINCT sequence) FROM outbox), \
             (SELECT count(*) FROM mt_events WHERE seq_id <= coalesce( \
               (SELECT last_seq FROM mt_event_progression WHERE name = 'outbox'), 0))",
            &[],
        )
        .await
        .expect("outbox");
    (row.get(0), row.get(1), row.get(2))
}

async fn check_after_drop(schema: &TestSchema, k: usize) {
    let raw = schema.raw_client().await;
    assert_clean(&raw, schema.name(), WITHIN).await;
    let (rows, distinct, covered) = outbox_and_covered(&raw).await;
    assert_eq!(
        (rows, distinct),
        (covered, covered),
        "after the drop at pending poll {k}, the outbox and the checkpoint disagree"
    );
}

/// Appends an event, then runs the subscription's runner until it has caught up.
fn append_and_catch_up(store: &DocumentStore, stream: Uuid) -> Operation<marten::Result<()>> {
    let store = store.clone();
    Box::pin(async move {
        let mut s = store.lightweight_session();
        s.events()
            .append(stream, [Added { n: 1 }, Added { n: 2 }])?;
        s.save_changes().await?;
        let (stop, stopped) = watch::channel(false);
        let options = DaemonOptions {
            batch_size: 3,
            ..DaemonOptions::default()
        };
        let Some(runner) = marten_testing::daemon::runner(&store, "outbox", options, stopped)
        else {
            panic!("outbox is registered");
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

#[tokio::test]
async fn a_subscription_runner_dropped_at_any_await_point_writes_each_event_once() {
    let (schema, builder) = named_builder("subs_cancel");
    let store = ok(builder.event::<Added>().subscription(Outbox).build().await);
    schema
        .raw_client()
        .await
        .batch_execute("CREATE TABLE outbox (delivery_id text NOT NULL, sequence bigint NOT NULL)")
        .await
        .expect("outbox");
    let stream = Uuid::now_v7();
    let run = cancel_at_every_await(
        1000,
        |_k| append_and_catch_up(&store, stream),
        |k| check_after_drop(&schema, k),
    )
    .await;
    ok(run.output);
    assert!(
        run.cancelled >= 20,
        "the runner had only {} pending polls",
        run.cancelled
    );
    let raw = schema.raw_client().await;
    let (rows, distinct, covered) = outbox_and_covered(&raw).await;
    let events: i64 = raw
        .query_one("SELECT count(*) FROM mt_events", &[])
        .await
        .expect("events")
        .get(0);
    assert_eq!((rows, distinct, covered), (events, events, events));
    eprintln!(
        "dropped at {} pending polls; {events} events",
        run.cancelled
    );
}
