//! Subscriptions run by the daemon: every matching event handed once and in order,
//! exactly-once writes that commit with the checkpoint, the poison policy for a failing
//! handler, and per-tenant runs with conjoined events.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten::subscriptions::{
    EventFilter, HandlerError, Subscription, SubscriptionBatch, SubscriptionTx,
};
use marten::Tenancy;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Placed {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Shipped {
    n: i64,
}

/// A document a subscription stores through its transaction.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Receipt {
    id: Uuid,
    last_sequence: i64,
}

/// A tenant's document a subscription stores through its transaction.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct TenantReceipt {
    id: Uuid,
    last_sequence: i64,
}

type Seen = Arc<Mutex<Vec<(i64, String)>>>;

/// Records each `Placed` it is handed (at least once: outside any transaction).
struct Collector(Seen);

impl Subscription for Collector {
    fn name(&self) -> &'static str {
        "collector"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event::<Placed>()
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        let mut seen = self
            .0
            .lock()
            .map_err(|_| HandlerError::new("poisoned lock"))?;
        for (id, e) in batch.deliveries() {
            if !e.is::<Placed>() {
                return Err(HandlerError::at(e, "not a Placed"));
            }
            seen.push((e.sequence, id.to_string()));
        }
        Ok(())
    }
}

/// Fills `outbox` through its transaction (exactly once), and stores a receipt per stream.
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
        let tenant = batch.tenant().map(|t| t.as_str().to_owned());
        for (id, e) in batch.deliveries() {
            tx.execute("INSERT INTO outbox (delivery_id, sequence, tenant) VALUES ($1, $2, $3)")
                .bind(id.to_string())
                .bind(e.sequence)
                .bind(tenant.clone());
            if let StreamId::Uuid(stream) = &e.stream_id {
                let (id, last_sequence) = (*stream, e.sequence);
                match batch.tenant() {
                    None => tx.store(Receipt { id, last_sequence }),
                    Some(_) => tx.store(TenantReceipt { id, last_sequence }),
                }
            }
        }
        Ok(())
    }
}

/// Fails on every `Placed { n: 13 }`.
struct Failing(Seen);

impl Subscription for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        for e in batch.events() {
            if e.data_as::<Placed>().is_some_and(|p| p.n == 13) {
                return Err(HandlerError::at(e, "thirteen"));
            }
            if let Ok(mut seen) = self.0.lock() {
                seen.push((e.sequence, String::new()));
            }
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

/// Appends `rounds` saves of a `Placed` and a `Shipped` to each of `streams`.
async fn append(store: &DocumentStore, tenant: Option<&str>, streams: &[Uuid], rounds: i64) {
    for round in 0..rounds {
        let mut s = match tenant {
            Some(t) => ok(store.lightweight_session_for(t)),
            None => store.lightweight_session(),
        };
        for id in streams {
            ok(s.events().append(
                *id,
                [
                    PendingEvent::new(Placed { n: round }),
                    PendingEvent::new(Shipped { n: round }),
                ],
            ));
        }
        ok(s.save_changes().await);
    }
}

/// The sequences of every event of type `ty`, in the global order.
async fn sequences_of(store: &DocumentStore, ty: Option<&str>) -> Vec<i64> {
    let page = ok(store.read_all_events(Position::START, 10_000).await);
    page.events
        .iter()
        .filter(|e| ty.is_none_or(|t| e.event_type == t))
        .map(|e| e.sequence)
        .collect()
}

async fn outbox_table(schema: &marten_testing::TestSchema) {
    schema
        .raw_client()
        .await
        .batch_execute("CREATE TABLE outbox (delivery_id text, sequence bigint, tenant text)")
        .await
        .expect("outbox table");
}

#[tokio::test]
async fn a_subscription_is_handed_every_matching_event_once_in_order() {
    let (_schema, b) = builder("subs_in_order");
    let seen = Seen::default();
    let store = ok(b
        .event::<Placed>()
        .event::<Shipped>()
        .subscription(Collector(seen.clone()))
        .build()
        .await);
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    append(&store, None, &streams, 5).await;
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    append(&store, None, &streams, 3).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);

    let expected = sequences_of(&store, Some("placed")).await;
    assert_eq!(expected.len(), 24);
    let seen = seen.lock().expect("lock").clone();
    let sequences: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(sequences, expected, "every Placed once, in global order");
    for (sequence, id) in &seen {
        assert_eq!(id, &format!("collector:{sequence}"));
    }
}

/// In a store of one database the delivery id is `name:sequence` whatever the event's
/// tenant: the tenant a session appended single-tenant events for is not named (the
/// database's one sequence keeps the deliveries apart; naming it changed the text that
/// consumers deduplicate by).
#[tokio::test]
async fn a_delivery_id_of_one_database_names_no_tenant() {
    let (_schema, b) = builder("subs_ids_one_db");
    let seen = Seen::default();
    let store = ok(b
        .event::<Placed>()
        .event::<Shipped>()
        .subscription(Collector(seen.clone()))
        .build()
        .await);
    let stream = Uuid::now_v7();
    append(&store, None, &[stream], 1).await;
    append(&store, Some("acme"), &[stream], 1).await;
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (sequence, id) in &seen {
        assert_eq!(id, &format!("collector:{sequence}"));
    }
}

#[tokio::test]
async fn exactly_once_writes_commit_with_the_checkpoint_or_not_at_all() {
    let (schema, b) = builder("subs_exactly_once");
    let store = ok(b
        .event::<Placed>()
        .event::<Shipped>()
        .document::<Receipt>()
        .subscription(Outbox)
        .build()
        .await);
    let streams: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
    append(&store, None, &streams, 4).await;
    // No outbox table yet: every batch's statement fails, so the checkpoint stays put.
    let daemon = Daemon::start(&store, options());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let client = schema.raw_client().await;
    let moved: Option<i64> = client
        .query_opt(
            "SELECT last_seq FROM mt_event_progression WHERE name = 'outbox'",
            &[],
        )
        .await
        .expect("progression")
        .map(|r| r.get(0));
    assert!(
        moved.unwrap_or(0) == 0,
        "checkpoint moved without its writes: {moved:?}"
    );

    outbox_table(&schema).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    let expected = sequences_of(&store, None).await;
    let rows = client
        .query(
            "SELECT sequence, delivery_id FROM outbox ORDER BY sequence",
            &[],
        )
        .await
        .expect("outbox");
    let got: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut sorted = expected.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "each event in the outbox exactly once");
    let checkpoint: i64 = client
        .query_one(
            "SELECT last_seq FROM mt_event_progression WHERE name = 'outbox'",
            &[],
        )
        .await
        .expect("progression")
        .get(0);
    assert_eq!(Some(&checkpoint), expected.last());
    let dead: i64 = client
        .query_one("SELECT count(*) FROM mt_dead_letters", &[])
        .await
        .expect("dead letters")
        .get(0);
    assert_eq!(
        dead, 0,
        "a failing statement is retried, not a poison event"
    );
    let receipt = ok(store.query_session().load::<Receipt>(&streams[0]).await);
    assert!(receipt.is_some_and(|r| expected.contains(&r.last_sequence)));
}

#[tokio::test]
async fn a_failing_handler_meets_the_poison_policy() {
    for policy in [PoisonPolicy::DeadLetter, PoisonPolicy::Stop] {
        let (schema, b) = builder("subs_poison");
        let seen = Seen::default();
        let store = ok(b
            .event::<Placed>()
            .event::<Shipped>()
            .subscription(Failing(seen.clone()))
            .build()
            .await);
        let stream = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().append(stream, (10..16).map(|n| Placed { n })));
        ok(s.save_changes().await);
        // The gap-safe read may trail a commit briefly (the xid horizon).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = sequences_of(&store, None).await;
        while all.len() < 6 {
            assert!(Instant::now() < deadline, "the events become readable");
            tokio::time::sleep(Duration::from_millis(20)).await;
            all = sequences_of(&store, None).await;
        }
        let daemon = Daemon::start(
            &store,
            DaemonOptions {
                poison: policy,
                ..options()
            },
        );
        let poison = all[3];
        match policy {
            PoisonPolicy::DeadLetter => {
                ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
                ok(daemon.stop().await);
                let row = schema
                    .raw_client()
                    .await
                    .query_one("SELECT projection, seq_id, error FROM mt_dead_letters", &[])
                    .await
                    .expect("one dead letter");
                assert_eq!(row.get::<_, String>(0), "failing");
                assert_eq!(row.get::<_, i64>(1), poison);
                assert!(row.get::<_, String>(2).contains("thirteen"));
                let mut handled: Vec<i64> =
                    seen.lock().expect("lock").iter().map(|(s, _)| *s).collect();
                handled.dedup();
                let rest: Vec<i64> = all.iter().copied().filter(|s| *s != poison).collect();
                // The events before the poison one were handed again with each retry.
                let mut unique = handled.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique, rest, "every other event handled");
            }
            _ => {
                let err = daemon.wait_for_non_stale(Duration::from_secs(10)).await;
                assert!(err.is_err(), "stopped, so stale");
                let stopped = daemon
                    .stop()
                    .await
                    .expect_err("stopped on the poison event");
                assert!(matches!(stopped, marten::Error::Apply { .. }), "{stopped}");
            }
        }
    }
}

#[tokio::test]
async fn each_tenant_has_its_own_checkpoint_and_writes() {
    let (schema, b) = builder("subs_tenants");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .event::<Placed>()
        .event::<Shipped>()
        .document::<TenantReceipt>()
        .subscription(Outbox)
        .build()
        .await);
    outbox_table(&schema).await;
    let stream = Uuid::now_v7();
    append(&store, Some("red"), &[stream], 3).await;
    append(&store, Some("blue"), &[stream], 2).await;
    let daemon = Daemon::start(&store, options());
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = schema.raw_client().await;
    loop {
        ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
        let n: i64 = client
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .expect("count")
            .get(0);
        if n == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "outbox has {n} rows of 10");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(daemon.stop().await);
    for (tenant, count) in [("red", 6), ("blue", 4)] {
        let rows = client
            .query(
                "SELECT o.sequence FROM outbox o JOIN mt_events e ON e.seq_id = o.sequence \
                 WHERE o.tenant = $1 AND e.tenant_id = $1",
                &[&tenant],
            )
            .await
            .expect("tenant's rows");
        assert_eq!(rows.len(), count, "{tenant}'s events, under {tenant}");
        // One database, one sequence: the ids name no tenant.
        let named = client
            .query(
                "SELECT sequence FROM outbox WHERE tenant = $1 \
                 AND delivery_id <> 'outbox:' || sequence",
                &[&tenant],
            )
            .await
            .expect("tenant's delivery ids");
        assert!(named.is_empty(), "{tenant}'s delivery ids are not outbox:N");
        let last: i64 = client
            .query_one(
                "SELECT last_seq FROM mt_event_progression WHERE name = $1",
                &[&format!("outbox@{tenant}")],
            )
            .await
            .expect("the tenant's checkpoint")
            .get(0);
        let receipt = ok(ok(store.query_session_for(tenant))
            .load::<TenantReceipt>(&stream)
            .await);
        assert_eq!(
            receipt.map(|r| r.last_sequence),
            Some(last),
            "{tenant}'s receipt"
        );
    }
}

/// Stores a conjoined document whatever the batch's tenant.
struct Misplaced;

impl Subscription for Misplaced {
    fn name(&self) -> &'static str {
        "misplaced"
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        for e in batch.events() {
            tx.store(TenantReceipt {
                id: Uuid::now_v7(),
                last_sequence: e.sequence,
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_conjoined_document_in_a_batch_without_a_tenant_fails_the_batch() {
    let (schema, b) = builder("subs_no_tenant");
    let store = ok(b
        .event::<Placed>()
        .document::<TenantReceipt>()
        .subscription(Misplaced)
        .build()
        .await);
    let mut s = store.lightweight_session();
    ok(s.events().append(Uuid::now_v7(), [Placed { n: 1 }]));
    ok(s.save_changes().await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            poison: PoisonPolicy::DeadLetter,
            ..options()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    let client = schema.raw_client().await;
    let error: String = client
        .query_one(
            "SELECT error FROM mt_dead_letters WHERE projection = 'misplaced'",
            &[],
        )
        .await
        .expect("dead letter")
        .get(0);
    assert!(error.contains("conjoined by tenant"), "{error}");
    let stored: i64 = client
        .query_one("SELECT count(*) FROM mt_doc_tenantreceipt", &[])
        .await
        .map_or(0, |r| r.get(0));
    assert_eq!(stored, 0, "nothing stored without a tenant");
}

/// Another subscription named `collector`.
struct Twin;

impl Subscription for Twin {
    fn name(&self) -> &'static str {
        "collector"
    }

    async fn handle(
        &self,
        _batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_name_registered_twice_is_refused() {
    let (_schema, b) = builder("subs_twice");
    let built = b
        .subscription(Collector(Seen::default()))
        .subscription(Twin)
        .build()
        .await;
    match built {
        Err(marten::Error::Configuration(m)) => assert!(m.contains("collector"), "{m}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("two subscriptions named collector were accepted"),
    }
}

/// Records the sequences it is handed, under the name it is given.
struct Named(&'static str, Arc<Mutex<Vec<i64>>>);

impl Subscription for Named {
    fn name(&self) -> &'static str {
        self.0
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        let mut seen = self.1.lock().map_err(|_| HandlerError::new("poisoned"))?;
        seen.extend(batch.deliveries().map(|(_, e)| e.sequence));
        Ok(())
    }
}

#[tokio::test]
async fn one_type_runs_under_two_names() {
    let (_schema, b) = builder("subs_one_type_two_names");
    let (first, second) = (Arc::default(), Arc::default());
    let store = ok(b
        .event::<Placed>()
        .event::<Shipped>()
        .subscription(Named("first", Arc::clone(&first)))
        .subscription(Named("second", Arc::clone(&second)))
        .build()
        .await);
    append(&store, None, &[Uuid::now_v7()], 3).await;
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let all = sequences_of(&store, None).await;
    for seen in [&first, &second] {
        assert_eq!(
            *seen.lock().expect("lock"),
            all,
            "each is handed every event"
        );
    }
}

/// A subscription whose name would read as another's slot of a tenant or a shard.
struct Separated(&'static str);

impl Subscription for Separated {
    fn name(&self) -> &'static str {
        self.0
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event::<Placed>()
    }

    async fn handle(
        &self,
        _batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// The daemon names a tenant's progression row `name@tenant` and a shard's `name#i/n`: a
/// name holding either separator (or none at all) could share another slot's row, so
/// `build` refuses it and names it.
#[tokio::test]
async fn a_subscription_name_holding_a_slot_separator_is_refused() {
    for bad in ["Mail@eu", "Mail#1/2", ""] {
        let (_schema, b) = builder("subs_bad_name");
        let built = b
            .event::<Placed>()
            .subscription(Separated(bad))
            .build()
            .await;
        match built {
            Err(marten::Error::Configuration(message)) => {
                assert!(message.contains(&format!("{bad:?}")), "{message}")
            }
            Err(other) => panic!("wrong error for {bad:?}: {other}"),
            Ok(_) => panic!("{bad:?} was accepted"),
        }
    }
    let (_schema, b) = builder("subs_good_name");
    ok(b.event::<Placed>()
        .subscription(Separated("Mail-eu"))
        .build()
        .await);
}
