//! Subscription and async-daemon scenarios carried over from Marten's daemon tests
//! (`src/DaemonTests/Subscriptions/*`, `catching_up_mode_for_projections_and_subscriptions`,
//! `TenantPartitionedEventsTests/Daemon/rewind_subscription_per_tenant_pin`) and from the
//! JasperFx.Events compliance suites (`SubscriptionCompliance`, `AsyncDaemonCompliance`):
//! the behaviour and assertions, rewritten against marten-rs's API.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tally::{Added, Tally};
use common::{builder, builder_on, ok};
use marten::daemon::{Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten::subscriptions::{
    EventFilter, HandlerError, Subscription, SubscriptionBatch, SubscriptionTx,
};
use marten::{DocumentStoreBuilder, Tenancy};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct AEvent {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct BEvent {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct CEvent {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct DEvent {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct EEvent {
    n: i64,
}

/// What a probe recorded of one event it was handed.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    sequence: i64,
    stream: StreamId,
    version: i64,
    ty: String,
    tenant: Option<String>,
    n: Option<i64>,
}

type Log = Arc<Mutex<Vec<Seen>>>;
type FailWhen = Arc<dyn Fn(&EventEnvelope) -> bool + Send + Sync>;

/// A configurable subscription: records what it is handed (at least once), optionally
/// fills `outbox` through its transaction (exactly once), waits on a gate, sleeps per batch
/// or fails on the events `fail` picks.
struct Probe {
    name: &'static str,
    filter: EventFilter,
    log: Log,
    outbox: bool,
    fail: Option<FailWhen>,
    gate: Option<Arc<Semaphore>>,
    delay: Option<Duration>,
    batches: Arc<AtomicUsize>,
}

impl Probe {
    fn new(name: &'static str) -> Probe {
        Probe {
            name,
            filter: EventFilter::all(),
            log: Log::default(),
            outbox: false,
            fail: None,
            gate: None,
            delay: None,
            batches: Arc::default(),
        }
    }
}

fn number(e: &EventEnvelope) -> Option<i64> {
    e.data_as::<AEvent>()
        .map(|x| x.n)
        .or_else(|| e.data_as::<BEvent>().map(|x| x.n))
        .or_else(|| e.data_as::<CEvent>().map(|x| x.n))
        .or_else(|| e.data_as::<DEvent>().map(|x| x.n))
        .or_else(|| e.data_as::<EEvent>().map(|x| x.n))
        .or_else(|| e.data_as::<Added>().map(|x| x.n))
}

impl Subscription for Probe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn filter(&self) -> EventFilter {
        self.filter.clone()
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        if let Some(gate) = &self.gate {
            let _permit = gate
                .acquire()
                .await
                .map_err(|_| HandlerError::new("gate closed"))?;
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.batches.fetch_add(1, Ordering::SeqCst);
        let tenant = batch.tenant().map(|t| t.as_str().to_owned());
        for (id, e) in batch.deliveries() {
            if self.outbox {
                tx.execute(
                    "INSERT INTO outbox (delivery_id, sequence, tenant) VALUES ($1, $2, $3)",
                )
                .bind(id.to_string())
                .bind(e.sequence)
                .bind(tenant.clone());
            }
            if self.fail.as_ref().is_some_and(|f| f(e)) {
                return Err(HandlerError::at(e, "refused by the test"));
            }
            let mut log = self.log.lock().map_err(|_| HandlerError::new("poisoned"))?;
            log.push(Seen {
                sequence: e.sequence,
                stream: e.stream_id.clone(),
                version: e.version,
                ty: e.event_type.to_string(),
                tenant: tenant.clone(),
                n: number(e),
            });
        }
        Ok(())
    }
}

fn options() -> DaemonOptions {
    DaemonOptions {
        batch_size: 7,
        poll_interval: Duration::from_millis(20),
        retries: 1,
        ..DaemonOptions::default()
    }
}

fn sequences(log: &Log) -> Vec<i64> {
    log.lock()
        .expect("lock")
        .iter()
        .map(|s| s.sequence)
        .collect()
}

async fn outbox_table(schema: &TestSchema) {
    schema
        .raw_client()
        .await
        .batch_execute("CREATE TABLE outbox (delivery_id text, sequence bigint, tenant text)")
        .await
        .expect("outbox table");
}

/// The outbox's sequences, in order (duplicates kept).
async fn outbox(schema: &TestSchema) -> Vec<i64> {
    schema
        .raw_client()
        .await
        .query("SELECT sequence FROM outbox ORDER BY sequence", &[])
        .await
        .expect("outbox")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The sequences of the stored events (not archived), optionally of one type or tenant.
async fn stored(schema: &TestSchema, ty: Option<&str>, tenant: Option<&str>) -> Vec<i64> {
    schema
        .raw_client()
        .await
        .query(
            "SELECT seq_id FROM mt_events WHERE NOT is_archived \
             AND ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR tenant_id = $2) \
             ORDER BY seq_id",
            &[&ty, &tenant],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The checkpoint of progression row `name` (None: no row).
async fn checkpoint(schema: &TestSchema, name: &str) -> Option<i64> {
    schema
        .raw_client()
        .await
        .query_opt(
            "SELECT last_seq FROM mt_event_progression WHERE name = $1",
            &[&name],
        )
        .await
        .expect("progression")
        .map(|r| r.get(0))
}

async fn dead_letters(schema: &TestSchema) -> i64 {
    schema
        .raw_client()
        .await
        .query_one("SELECT count(*) FROM mt_dead_letters", &[])
        .await
        .map_or(0, |r| r.get(0))
}

/// Polls `done` until it holds, for at most 20 s.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Marten's four streams of letters (16 events: 4 A, 4 B, 4 C, 3 D, 1 E),
/// started in one save.
async fn four_letter_streams(store: &DocumentStore) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    let a = |n| PendingEvent::new(AEvent { n });
    let b = |n| PendingEvent::new(BEvent { n });
    let c = |n| PendingEvent::new(CEvent { n });
    let d = |n| PendingEvent::new(DEvent { n });
    let e = |n| PendingEvent::new(EEvent { n });
    ok(s.events().append(ids[0], [a(1), a(2), b(3), c(4)]));
    ok(s.events().append(ids[1], [b(5), a(6), b(7), c(8)]));
    ok(s.events().append(ids[2], [d(9), a(10), d(11), c(12)]));
    ok(s.events().append(ids[3], [e(13), b(14), d(15), c(16)]));
    ok(s.save_changes().await);
    ids
}

fn letters(b: DocumentStoreBuilder) -> DocumentStoreBuilder {
    b.event::<AEvent>()
        .event::<BEvent>()
        .event::<CEvent>()
        .event::<DEvent>()
        .event::<EEvent>()
}

/// Marten `subscriptions_end_to_end.run_events_through_with_event_filters`: a subscription
/// narrowed to two event types is handed only those (5 of 16), yet its checkpoint moves to
/// the last of the 16 events.
#[tokio::test]
async fn a_type_filtered_subscription_gets_only_its_types_and_checkpoints_at_the_head() {
    let (schema, b) = builder("msub_type_filter");
    let mut probe = Probe::new("fake");
    probe.filter = EventFilter::all().event::<BEvent>().event::<EEvent>();
    let log = probe.log.clone();
    let store = ok(letters(b).subscription(probe).build().await);
    let daemon = Daemon::start(&store, options());
    four_letter_streams(&store).await;
    let all = stored(&schema, None, None).await;
    assert_eq!(all.len(), 16);
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);

    let seen = log.lock().expect("lock").clone();
    assert_eq!(seen.len(), 5, "{seen:?}");
    let ns: Vec<Option<i64>> = seen.iter().map(|s| s.n).collect();
    assert_eq!(ns, vec![Some(3), Some(5), Some(7), Some(13), Some(14)]);
    assert!(seen
        .iter()
        .all(|s| s.ty == BEvent::EVENT_TYPE || s.ty == EEvent::EVENT_TYPE));
    assert_eq!(checkpoint(&schema, "fake").await, all.last().copied());
}

/// Filter by stream and type together (Marten's `FilteredSubscription`: event types plus a
/// stream narrowing; marten-rs narrows by stream id rather than stream type): only events
/// passing both narrowings are handed.
#[tokio::test]
async fn a_stream_and_type_filter_must_both_pass() {
    let (schema, b) = builder("msub_stream_filter");
    let mut probe = Probe::new("narrow");
    let log = probe.log.clone();
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    probe.filter = EventFilter::all()
        .event::<AEvent>()
        .event::<BEvent>()
        .stream(x)
        .stream(y);
    let store = ok(letters(b).subscription(probe).build().await);
    let mut s = store.lightweight_session();
    ok(s.events().append(
        x,
        [
            PendingEvent::new(AEvent { n: 1 }),
            PendingEvent::new(CEvent { n: 2 }),
        ],
    ));
    ok(s.events().append(
        Uuid::now_v7(),
        [
            PendingEvent::new(AEvent { n: 3 }),
            PendingEvent::new(BEvent { n: 4 }),
        ],
    ));
    ok(s.events().append(
        y,
        [
            PendingEvent::new(BEvent { n: 5 }),
            PendingEvent::new(DEvent { n: 6 }),
        ],
    ));
    ok(s.save_changes().await);
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    let ns: Vec<Option<i64>> = log.lock().expect("lock").iter().map(|s| s.n).collect();
    assert_eq!(ns, vec![Some(1), Some(5)]);
    assert_eq!(
        checkpoint(&schema, "narrow").await,
        stored(&schema, None, None).await.last().copied()
    );
}

/// JasperFx `SubscriptionCompliance`: events arrive with their data intact, in sequence
/// order, each stream's versions 1..n, from every stream; events appended in one transaction
/// across interleaved streams are handed in the global order.
#[tokio::test]
async fn one_transaction_across_streams_is_handed_in_order_with_data_intact() {
    let (schema, b) = builder("msub_one_tx");
    let probe = Probe::new("compliance");
    let log = probe.log.clone();
    let store = ok(letters(b).subscription(probe).build().await);
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    // Interleaved: stream k gets one event per round, in rounds 0..5.
    for round in 0..5 {
        for (k, id) in streams.iter().enumerate() {
            ok(s.events().append(
                *id,
                [PendingEvent::new(AEvent {
                    n: round * 10 + k as i64,
                })],
            ));
        }
    }
    ok(s.save_changes().await);
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);

    let seen = log.lock().expect("lock").clone();
    assert_eq!(
        seen.iter().map(|s| s.sequence).collect::<Vec<_>>(),
        stored(&schema, None, None).await,
        "every event once, in the global order"
    );
    for (k, id) in streams.iter().enumerate() {
        let mine: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.stream == StreamId::from(*id))
            .collect();
        assert_eq!(
            mine.iter().map(|s| s.version).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5],
            "stream {k}'s versions"
        );
        assert_eq!(
            mine.iter().map(|s| s.n).collect::<Vec<_>>(),
            (0..5).map(|r| Some(r * 10 + k as i64)).collect::<Vec<_>>(),
            "stream {k}'s data"
        );
    }
}

/// Marten `subscriptions_end_to_end.start_subscription_at_sequence_floor` (its default half)
/// and `subscribe_from_present.start_from_scratch`: a subscription added to a store whose
/// events already exist, and whose other subscription has already caught up, starts from
/// the first event, not from the other's checkpoint.
#[tokio::test]
async fn a_subscription_registered_after_events_exist_starts_from_the_beginning() {
    let (schema, b) = builder("msub_late");
    let early = Probe::new("early");
    let store = ok(letters(b).subscription(early).build().await);
    four_letter_streams(&store).await;
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    let all = stored(&schema, None, None).await;
    assert_eq!(checkpoint(&schema, "early").await, all.last().copied());

    let late = Probe::new("late");
    let log = late.log.clone();
    let store2 = ok(letters(builder_on(&schema))
        .subscription(Probe::new("early"))
        .subscription(late)
        .build()
        .await);
    let daemon = Daemon::start(&store2, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    assert_eq!(sequences(&log), all, "the late subscription gets all 16");
    assert_eq!(checkpoint(&schema, "late").await, all.last().copied());
}

/// Marten `subscriptions_end_to_end.run_events_through_and_rewind_from_scratch`: after a
/// subscription has caught up, a rebuild (marten-rs's rewind) hands all 16 events again and
/// the checkpoint ends at the head again.
#[tokio::test]
async fn a_rebuilt_subscription_is_handed_every_event_again() {
    let (schema, b) = builder("msub_rewind");
    let probe = Probe::new("fake");
    let log = probe.log.clone();
    let store = ok(letters(b).subscription(probe).build().await);
    let daemon = Daemon::start(&store, options());
    four_letter_streams(&store).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    let all = stored(&schema, None, None).await;
    assert_eq!(sequences(&log), all);
    log.lock().expect("lock").clear();

    ok(marten::daemon::rebuild(&store, "fake").await);
    eventually("the replay", || {
        let log = log.clone();
        let n = all.len();
        async move { log.lock().expect("lock").len() >= n }
    })
    .await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    assert_eq!(
        sequences(&log),
        all,
        "each event handed once more, in order"
    );
    assert_eq!(checkpoint(&schema, "fake").await, all.last().copied());
}

/// Marten's subscription error handling (retries before the poison policy): a handler that
/// fails once on one event, after queuing writes, then succeeds: nothing is dead-lettered,
/// no event is lost, and the exactly-once outbox holds each event once (the failed
/// attempt's queued writes never committed).
#[tokio::test]
async fn a_handler_failing_once_then_succeeding_loses_nothing_and_writes_once() {
    let (schema, b) = builder("msub_fail_once");
    let mut probe = Probe::new("flaky");
    probe.outbox = true;
    let log = probe.log.clone();
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    probe.fail = Some(Arc::new(move |e| {
        e.data_as::<AEvent>().is_some_and(|a| a.n == 10) && !f.swap(true, Ordering::SeqCst)
    }));
    let store = ok(letters(b).subscription(probe).build().await);
    outbox_table(&schema).await;
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events()
        .append(stream, (0..20).map(|n| PendingEvent::new(AEvent { n }))));
    ok(s.save_changes().await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            retries: 2,
            poison: PoisonPolicy::DeadLetter,
            ..options()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);

    assert!(failed.load(Ordering::SeqCst), "the handler did fail once");
    let all = stored(&schema, None, None).await;
    assert_eq!(outbox(&schema).await, all, "each event in the outbox once");
    assert_eq!(
        dead_letters(&schema).await,
        0,
        "a transient failure is retried"
    );
    let mut handed = sequences(&log);
    handed.sort_unstable();
    handed.dedup();
    assert_eq!(handed, all, "no event lost");
    assert_eq!(checkpoint(&schema, "flaky").await, all.last().copied());
}

/// Marten's daemon runs each subscription as its own shard: one subscription held up (its
/// handler blocked) does not hold up another, which catches up alone; released, the first
/// catches up too, each with its own checkpoint.
#[tokio::test]
async fn subscriptions_progress_independently() {
    let (schema, b) = builder("msub_independent");
    let gate = Arc::new(Semaphore::new(0));
    let mut slow = Probe::new("slow");
    slow.gate = Some(gate.clone());
    let slow_log = slow.log.clone();
    let fast = Probe::new("fast");
    let fast_log = fast.log.clone();
    let store = ok(letters(b)
        .subscription(slow)
        .subscription(fast)
        .build()
        .await);
    four_letter_streams(&store).await;
    let all = stored(&schema, None, None).await;
    let daemon = Daemon::start(&store, options());
    eventually("the fast subscription", || {
        let log = fast_log.clone();
        let n = all.len();
        async move { log.lock().expect("lock").len() >= n }
    })
    .await;
    assert_eq!(sequences(&fast_log), all);
    eventually("the fast checkpoint", || {
        let schema = &schema;
        let last = all.last().copied();
        async move { checkpoint(schema, "fast").await == last }
    })
    .await;
    assert!(
        sequences(&slow_log).is_empty(),
        "the slow one is still held"
    );
    assert!(
        checkpoint(&schema, "slow").await.unwrap_or(0) == 0,
        "the slow one committed nothing"
    );
    gate.add_permits(10_000);
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    assert_eq!(sequences(&slow_log), all);
    assert_eq!(checkpoint(&schema, "slow").await, all.last().copied());
}

/// Marten `catching_up_mode_for_projections_and_subscriptions` and JasperFx
/// `AsyncDaemonCompliance`: an async aggregate projection and a subscription in one daemon
/// both catch up; a poison event the subscription dead-letters is still folded by the
/// projection, and the dead letter names the subscription only.
#[tokio::test]
async fn a_subscription_and_an_async_projection_share_one_daemon() {
    let (schema, b) = builder("msub_with_projection");
    let mut probe = Probe::new("outbox_sub");
    probe.outbox = true;
    probe.fail = Some(Arc::new(|e| {
        e.data_as::<Added>().is_some_and(|a| a.n == 13)
    }));
    let store = ok(b
        .projection::<Tally>(Lifecycle::Async)
        .subscription(probe)
        .build()
        .await);
    outbox_table(&schema).await;
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for round in 0..4i64 {
        let mut s = store.lightweight_session();
        for (k, id) in streams.iter().enumerate() {
            let n = round * 10 + k as i64 + 1; // round 1, stream 2 is 13
            ok(s.events().append(*id, [Added { n }]));
        }
        ok(s.save_changes().await);
    }
    let all = stored(&schema, None, None).await;
    assert_eq!(all.len(), 12);
    let poison = all[5];
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            poison: PoisonPolicy::DeadLetter,
            ..options()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);

    for (k, id) in streams.iter().enumerate() {
        let tally: Option<Tally> = ok(store.query_session().load(id).await);
        let tally = tally.expect("projected");
        let expected: i64 = (0..4).map(|r| r * 10 + k as i64 + 1).sum();
        assert_eq!((tally.total, tally.count, tally.version), (expected, 4, 4));
    }
    let rest: Vec<i64> = all.iter().copied().filter(|s| *s != poison).collect();
    assert_eq!(outbox(&schema).await, rest, "every other event once");
    let rows = schema
        .raw_client()
        .await
        .query("SELECT projection, seq_id FROM mt_dead_letters", &[])
        .await
        .expect("dead letters");
    let dead: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(dead, vec![("outbox_sub".to_owned(), poison)]);
    for name in ["Tally", "outbox_sub"] {
        assert_eq!(
            checkpoint(&schema, name).await,
            all.last().copied(),
            "{name}"
        );
    }
}

/// Marten's `IncludeArchivedEvents` (off by default): events of archived streams are not
/// handed to a subscription, whether archived before the daemon starts or while it runs,
/// and the daemon is not left stale by them.
#[tokio::test]
async fn archived_streams_events_are_not_handed() {
    let (schema, b) = builder("msub_archived");
    let probe = Probe::new("watch");
    let log = probe.log.clone();
    let store = ok(letters(b).subscription(probe).build().await);
    let (live, gone, later) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().append(live, [AEvent { n: 1 }]));
    ok(s.events().append(gone, [AEvent { n: 2 }, AEvent { n: 3 }]));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    ok(s.events().archive_stream(gone));
    ok(s.save_changes().await);
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    assert_eq!(
        log.lock()
            .expect("lock")
            .iter()
            .map(|s| s.n)
            .collect::<Vec<_>>(),
        vec![Some(1)]
    );
    // A stream appended and archived while the daemon runs, newest of all.
    let mut s = store.lightweight_session();
    ok(s.events().append(live, [AEvent { n: 4 }]));
    ok(s.events().append(later, [AEvent { n: 5 }]));
    ok(s.events().archive_stream(later));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    let ns: Vec<Option<i64>> = log.lock().expect("lock").iter().map(|s| s.n).collect();
    assert_eq!(ns, vec![Some(1), Some(4)]);
    assert_eq!(sequences(&log), stored(&schema, None, None).await);
}

/// JasperFx `SubscriptionCompliance` ("whatever page boundaries the daemon chose"): 1,234
/// events over pages of 100 are handed once each, strictly ascending, and the exactly-once
/// outbox holds each once.
#[tokio::test]
async fn large_backlogs_cross_page_boundaries_without_loss_or_repeats() {
    let (schema, b) = builder("msub_pages");
    let mut probe = Probe::new("bulk");
    probe.outbox = true;
    let log = probe.log.clone();
    let batches = probe.batches.clone();
    let store = ok(letters(b).subscription(probe).build().await);
    outbox_table(&schema).await;
    let streams: Vec<Uuid> = (0..7).map(|_| Uuid::now_v7()).collect();
    let mut n = 0i64;
    while n < 1234 {
        let mut s = store.lightweight_session();
        for _ in 0..200 {
            if n == 1234 {
                break;
            }
            ok(s.events()
                .append(streams[(n % 7) as usize], [PendingEvent::new(BEvent { n })]));
            n += 1;
        }
        ok(s.save_changes().await);
    }
    let all = stored(&schema, None, None).await;
    assert_eq!(all.len(), 1234);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 100,
            ..options()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let handed = sequences(&log);
    assert!(handed.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
    assert_eq!(handed, all);
    assert_eq!(outbox(&schema).await, all);
    assert!(
        batches.load(Ordering::SeqCst) >= 13,
        "pages of at most 100 events"
    );
    assert_eq!(checkpoint(&schema, "bulk").await, all.last().copied());
}

/// Marten's daemon stop/restart (`StopAllAsync` then a new daemon): a daemon stopped
/// mid-backlog and a new one started after more appends skip nothing, and the exactly-once
/// outbox holds each event once; at stop, the outbox matches the checkpoint exactly.
#[tokio::test]
async fn stopping_and_restarting_mid_stream_skips_nothing_and_writes_once() {
    let (schema, b) = builder("msub_restart");
    let mut probe = Probe::new("relay");
    probe.outbox = true;
    probe.delay = Some(Duration::from_millis(15));
    let log = probe.log.clone();
    let store = ok(letters(b).subscription(probe).build().await);
    outbox_table(&schema).await;
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let append = |from: i64, to: i64| {
        let store = &store;
        let streams = &streams;
        async move {
            let mut s = store.lightweight_session();
            for n in from..to {
                ok(s.events()
                    .append(streams[(n % 4) as usize], [PendingEvent::new(CEvent { n })]));
            }
            ok(s.save_changes().await);
        }
    };
    append(0, 300).await;
    let opts = || DaemonOptions {
        batch_size: 5,
        ..options()
    };
    let daemon = Daemon::start(&store, opts());
    eventually("some progress", || {
        let schema = &schema;
        async move { checkpoint(schema, "relay").await.unwrap_or(0) > 0 }
    })
    .await;
    ok(daemon.stop().await);
    let at_stop = checkpoint(&schema, "relay").await.unwrap_or(0);
    let all = stored(&schema, None, None).await;
    let upto: Vec<i64> = all.iter().copied().filter(|s| *s <= at_stop).collect();
    assert!(
        upto.len() < all.len(),
        "stopped mid-backlog ({} of {})",
        upto.len(),
        all.len()
    );
    assert_eq!(outbox(&schema).await, upto, "outbox equals the checkpoint");

    append(300, 350).await;
    let daemon = Daemon::start(&store, opts());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let all = stored(&schema, None, None).await;
    assert_eq!(all.len(), 350);
    assert_eq!(outbox(&schema).await, all, "each event once");
    let mut handed = sequences(&log);
    handed.sort_unstable();
    handed.dedup();
    assert_eq!(handed, all, "nothing skipped");
}

/// Marten `using_for_tenant_with_side_effects_and_subscriptions` / the per-tenant daemon:
/// with conjoined events each tenant's runner has its own checkpoint; one tenant's poison
/// event stopping its runner (PoisonPolicy::Stop) does not hold up another tenant.
#[tokio::test]
async fn a_tenants_stopped_subscription_does_not_hold_up_another_tenant() {
    let (schema, b) = builder("msub_tenant_stop");
    let mut probe = Probe::new("per_tenant");
    probe.outbox = true;
    probe.fail = Some(Arc::new(|e| {
        e.data_as::<AEvent>().is_some_and(|a| a.n == 666)
    }));
    let store = ok(letters(b.events_tenancy(Tenancy::Conjoined))
        .subscription(probe)
        .build()
        .await);
    outbox_table(&schema).await;
    let append = |tenant: &'static str, ns: Vec<i64>| {
        let store = &store;
        async move {
            let mut s = ok(store.lightweight_session_for(tenant));
            ok(s.events().append(
                Uuid::now_v7(),
                ns.into_iter().map(|n| PendingEvent::new(AEvent { n })),
            ));
            ok(s.save_changes().await);
        }
    };
    append("red", vec![1, 2, 666, 4]).await;
    append("blue", vec![5, 6, 7]).await;
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            poison: PoisonPolicy::Stop,
            ..options()
        },
    );
    let blue = stored(&schema, None, Some("blue")).await;
    let red = stored(&schema, None, Some("red")).await;
    eventually("blue's checkpoint", || {
        let schema = &schema;
        let last = blue.last().copied();
        async move { checkpoint(schema, "per_tenant@blue").await == last }
    })
    .await;
    // Blue keeps going after red stopped.
    append("blue", vec![8]).await;
    let blue = stored(&schema, None, Some("blue")).await;
    eventually("blue's new event", || {
        let schema = &schema;
        let last = blue.last().copied();
        async move { checkpoint(schema, "per_tenant@blue").await == last }
    })
    .await;
    // Red's runner stops after its retries, which a loaded machine may take longer to run
    // than blue's two batches.
    eventually("red's runner to stop", || {
        let stopped = daemon.stopped_runners();
        async move { stopped.iter().any(|(slot, _)| slot.ends_with("@red")) }
    })
    .await;
    let stopped = daemon.stop().await;
    assert!(stopped.is_err(), "red's runner stopped on its poison event");
    let rows = schema
        .raw_client()
        .await
        .query("SELECT tenant, sequence FROM outbox ORDER BY sequence", &[])
        .await
        .expect("outbox");
    let mut by_tenant: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &rows {
        by_tenant
            .entry(r.get::<_, Option<String>>(0).unwrap_or_default())
            .or_default()
            .push(r.get(1));
    }
    assert_eq!(by_tenant.get("blue"), Some(&blue));
    let red_at = checkpoint(&schema, "per_tenant@red").await.unwrap_or(0);
    assert!(
        red_at < red[2],
        "red's checkpoint stays before its poison event"
    );
    // The batch holding the poison event never committed: red's outbox is exactly its
    // events up to its checkpoint (none of the failed batch's writes).
    let red_upto: Vec<i64> = red.iter().copied().filter(|s| *s <= red_at).collect();
    assert_eq!(by_tenant.get("red").cloned().unwrap_or_default(), red_upto);
}

/// Marten `rewind_subscription_per_tenant_pin` (Marten refuses a per-tenant rewind; marten-rs
/// supports it through `rebuild_tenant`): rewinding one tenant's subscription hands that
/// tenant's events again and not the other tenant's.
#[tokio::test]
async fn rewinding_one_tenants_subscription_replays_that_tenant_only() {
    let (schema, b) = builder("msub_tenant_rewind");
    let probe = Probe::new("tenanted");
    let log = probe.log.clone();
    let store = ok(letters(b.events_tenancy(Tenancy::Conjoined))
        .subscription(probe)
        .build()
        .await);
    for (tenant, ns) in [("red", vec![1, 2, 3]), ("blue", vec![4, 5])] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events().append(
            Uuid::now_v7(),
            ns.into_iter().map(|n| PendingEvent::new(DEvent { n })),
        ));
        ok(s.save_changes().await);
    }
    let red = stored(&schema, None, Some("red")).await;
    let blue = stored(&schema, None, Some("blue")).await;
    let daemon = Daemon::start(&store, options());
    let of = |log: &Log, tenant: &str| -> Vec<i64> {
        log.lock()
            .expect("lock")
            .iter()
            .filter(|s| s.tenant.as_deref() == Some(tenant))
            .map(|s| s.sequence)
            .collect()
    };
    eventually("both tenants", || {
        let log = log.clone();
        async move { log.lock().expect("lock").len() >= 5 }
    })
    .await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    assert_eq!(of(&log, "red"), red);
    assert_eq!(of(&log, "blue"), blue);
    log.lock().expect("lock").clear();

    ok(marten::daemon::rebuild_tenant(&store, "tenanted", "red").await);
    eventually("red's replay", || {
        let log = log.clone();
        async move { log.lock().expect("lock").len() >= 3 }
    })
    .await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    ok(daemon.stop().await);
    assert_eq!(of(&log, "red"), red, "red's events handed again");
    assert!(of(&log, "blue").is_empty(), "blue's not");
    assert_eq!(
        checkpoint(&schema, "tenanted@red").await,
        red.last().copied()
    );
    assert_eq!(
        checkpoint(&schema, "tenanted@blue").await,
        blue.last().copied()
    );
}
