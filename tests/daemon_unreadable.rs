//! Events the daemon cannot decode (a stored body edited so it no longer reads as its
//! type, an upcaster that refuses an old body): under `PoisonPolicy::DeadLetter` each is
//! recorded once per projection that handles its type and the projection goes on; under
//! `PoisonPolicy::Stop` such a projection stops with the typed error naming the event's
//! type and sequence; a projection or subscription that does not handle the type passes
//! over it under either policy. Lean and full reads, subscriptions and shards alike.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tally::{Added, Tally};
use common::{builder, ok, stopped_with};
use marten::daemon::{Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten::subscriptions::{
    EventFilter, HandlerError, Subscription, SubscriptionBatch, SubscriptionTx,
};
use serde::{Deserialize, Serialize};

/// An event none of the `Added` projections handle.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {}

/// `Added` folded with metadata: its runner reads full pages (Tally's read lean).
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Stamped {
    id: Uuid,
    version: i64,
    total: i64,
    last_sequence: i64,
}

#[marten::apply]
impl Stamped {
    fn apply(&mut self, e: &Added, meta: &EventEnvelope) {
        self.total += e.n;
        self.last_sequence = meta.sequence;
    }
}

/// Counts `Noted` events: it handles no `Added`.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Notes {
    id: Uuid,
    version: i64,
    count: i64,
}

#[marten::apply]
impl Notes {
    fn apply(&mut self, _e: &Noted) {
        self.count += 1;
    }
}

/// A subscription that records the sequences it is handed, of every event or of the
/// `Noted` ones only.
#[derive(Clone)]
struct Seen {
    name: &'static str,
    only_noted: bool,
    sequences: Arc<Mutex<Vec<i64>>>,
}

impl Seen {
    fn new(name: &'static str, only_noted: bool) -> Self {
        Seen {
            name,
            only_noted,
            sequences: Arc::default(),
        }
    }

    fn sequences(&self) -> Vec<i64> {
        let mut seen = self.sequences.lock().expect("lock").clone();
        seen.sort_unstable();
        seen
    }
}

impl Subscription for Seen {
    fn name(&self) -> &'static str {
        self.name
    }

    fn filter(&self) -> EventFilter {
        match self.only_noted {
            true => EventFilter::all().event::<Noted>(),
            false => EventFilter::all(),
        }
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        let mut seen = self
            .sequences
            .lock()
            .map_err(|_| HandlerError::new("poisoned lock"))?;
        seen.extend(batch.deliveries().map(|(_, e)| e.sequence));
        Ok(())
    }
}

fn options(poison: PoisonPolicy) -> DaemonOptions {
    DaemonOptions {
        poison,
        retries: 0,
        poll_interval: Duration::from_millis(20),
        ..DaemonOptions::default()
    }
}

/// Appends `Added` 1, 2, 3 to a new stream and a `Noted` to another, then edits the
/// second `Added`'s body so it no longer reads as an `Added`. Returns the `Added`
/// stream, the `Noted` stream, and the sequences of every event and of the edited one.
async fn with_a_corrupt_event(
    schema: &marten_testing::TestSchema,
    store: &DocumentStore,
) -> (Uuid, Uuid, Vec<i64>, i64) {
    let (id, noted) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events()
        .append(id, [Added { n: 1 }, Added { n: 2 }, Added { n: 3 }]));
    ok(s.events().append(noted, [Noted {}]));
    ok(s.save_changes().await);
    let raw = schema.raw_client().await;
    let seq: i64 = raw
        .query_one(
            "UPDATE mt_events SET data = '{\"n\": \"two\"}' WHERE stream_id = $1 AND version = 2 \
             RETURNING seq_id",
            &[&id],
        )
        .await
        .expect("corrupt the event")
        .get(0);
    let all = raw
        .query("SELECT seq_id FROM mt_events ORDER BY seq_id", &[])
        .await
        .expect("sequences")
        .iter()
        .map(|r| r.get(0))
        .collect();
    (id, noted, all, seq)
}

/// The dead letters recorded: projection, sequence, type, stream and attempts, by
/// projection.
async fn dead_letters(
    schema: &marten_testing::TestSchema,
) -> Vec<(String, i64, String, String, i32)> {
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT projection, seq_id, event_type, stream_id, attempts, error \
             FROM mt_dead_letters ORDER BY projection, id",
            &[],
        )
        .await
        .expect("dead letters");
    for row in &rows {
        let error: String = row.get(5);
        let seq: i64 = row.get(1);
        assert!(
            error.contains(&format!("at sequence {seq}")),
            "the error names the event: {error}"
        );
    }
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test]
async fn an_unreadable_event_is_dead_lettered_once_per_projection_and_the_daemon_goes_on() {
    let (schema, b) = builder("unreadable_dead_letter");
    let (every, noted_only) = (Seen::new("every", false), Seen::new("noted_only", true));
    let store = ok(b
        .projection::<Tally>(Lifecycle::Async)
        .projection::<Stamped>(Lifecycle::Async)
        .projection::<Notes>(Lifecycle::Async)
        .subscription(every.clone())
        .subscription(noted_only.clone())
        .build()
        .await);
    let (id, noted, all, seq) = with_a_corrupt_event(&schema, &store).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::DeadLetter));
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);

    let mut q = store.query_session();
    let tally = ok(q.load::<Tally>(&id).await).expect("tally");
    assert_eq!(
        (tally.total, tally.count),
        (4, 2),
        "1 and 3 applied, 2 left out"
    );
    let stamped = ok(q.load::<Stamped>(&id).await).expect("stamped");
    assert_eq!(stamped.total, 4, "the full read leaves it out too");
    let notes = ok(q.load::<Notes>(&noted).await).expect("notes");
    assert_eq!(notes.count, 1);
    let readable: Vec<i64> = all.iter().copied().filter(|s| *s != seq).collect();
    assert_eq!(every.sequences(), readable, "every readable event, once");
    assert_eq!(noted_only.sequences(), [*all.last().expect("noted")]);

    let letter = |p: &str| (p.to_owned(), seq, "added".to_owned(), id.to_string(), 1);
    assert_eq!(
        dead_letters(&schema).await,
        [letter("Stamped"), letter("Tally"), letter("every")],
        "one per projection or subscription handling the type; none for the others"
    );

    // The projections go on past it.
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [Added { n: 4 }]));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let tally = ok(q.load::<Tally>(&id).await).expect("tally");
    assert_eq!((tally.total, tally.count), (8, 3));
    assert_eq!(dead_letters(&schema).await.len(), 3, "recorded once");
    ok(daemon.stop().await);
}

#[tokio::test]
async fn an_unreadable_event_stops_a_projection_that_handles_it_when_configured() {
    let (schema, b) = builder("unreadable_stop");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let (id, _, _, seq) = with_a_corrupt_event(&schema, &store).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::Stop));
    match stopped_with(daemon).await {
        marten::Error::DeserializeEvent {
            event_type,
            sequence,
            ..
        } => assert_eq!((event_type.as_str(), sequence), ("added", seq)),
        other => panic!("expected DeserializeEvent, got {other}"),
    }
    assert!(
        ok(store.query_session().load::<Tally>(&id).await).is_none(),
        "nothing of the batch"
    );
    assert!(dead_letters(&schema).await.is_empty());
}

#[tokio::test]
async fn projections_that_do_not_handle_an_unreadable_events_type_pass_over_it() {
    let (schema, b) = builder("unreadable_pass_over");
    let noted_only = Seen::new("noted_only", true);
    let store = ok(b
        .event::<Added>()
        .projection::<Notes>(Lifecycle::Async)
        .subscription(noted_only.clone())
        .build()
        .await);
    let (_, noted, all, _) = with_a_corrupt_event(&schema, &store).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::Stop));
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let notes = ok(store.query_session().load::<Notes>(&noted).await).expect("notes");
    assert_eq!(notes.count, 1);
    assert_eq!(noted_only.sequences(), [*all.last().expect("noted")]);
    assert!(dead_letters(&schema).await.is_empty());
    ok(daemon.stop().await);
}

/// An old event type, stored under the name the reading store upcasts from.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "added_v1")]
struct AddedV1 {
    amount: i64,
}

#[tokio::test]
async fn an_event_its_upcaster_refuses_is_dead_lettered_under_its_stored_name() {
    let (schema, b) = builder("unreadable_upcast");
    let old = ok(b.event::<AddedV1>().build().await);
    let id = Uuid::now_v7();
    let mut s = old.lightweight_session();
    ok(s.events().append(
        id,
        [
            AddedV1 { amount: 5 },
            AddedV1 { amount: 6 },
            AddedV1 { amount: 7 },
        ],
    ));
    ok(s.save_changes().await);
    let raw = schema.raw_client().await;
    let seq: i64 = raw
        .query_one(
            "UPDATE mt_events SET data = '{}' WHERE stream_id = $1 AND version = 2 \
             RETURNING seq_id",
            &[&id],
        )
        .await
        .expect("strip the old body")
        .get(0);
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .upcast::<Added, _>("added_v1", |mut json| {
            let body = json.as_object_mut().ok_or("not an object")?;
            let amount = body.remove("amount").ok_or("no amount")?;
            body.insert("n".into(), amount);
            Ok(json)
        })
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let daemon = Daemon::start(&store, options(PoisonPolicy::DeadLetter));
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let tally = ok(store.query_session().load::<Tally>(&id).await).expect("tally");
    assert_eq!((tally.total, tally.count), (12, 2));
    let letters = dead_letters(&schema).await;
    let want = (
        "Tally".to_owned(),
        seq,
        "added_v1".to_owned(),
        id.to_string(),
        1,
    );
    assert_eq!(letters, [want]);
}

#[tokio::test]
async fn a_sharded_projection_dead_letters_an_unreadable_event_once() {
    let (schema, b) = builder("unreadable_shards");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let mut corrupt = Vec::new();
    for _ in 0..4 {
        let (id, _, _, seq) = with_a_corrupt_event(&schema, &store).await;
        corrupt.push((id, seq));
    }
    let daemon = Daemon::start(
        &store,
        options(PoisonPolicy::DeadLetter).with_shards("Tally", 3),
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let mut want: Vec<_> = corrupt
        .iter()
        .map(|(id, seq)| {
            (
                "Tally".to_owned(),
                *seq,
                "added".to_owned(),
                id.to_string(),
                1,
            )
        })
        .collect();
    want.sort();
    let mut letters = dead_letters(&schema).await;
    letters.sort();
    assert_eq!(letters, want, "each once, by one of the three shards");
    for (id, _) in &corrupt {
        let tally = ok(store.query_session().load::<Tally>(id).await).expect("tally");
        assert_eq!((tally.total, tally.count), (4, 2));
    }
}
