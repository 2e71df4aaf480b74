//! Live folds read only what they need: a type whose methods take no metadata folds from
//! each event's data, type, sequence and version alone; a type with a method that takes
//! `meta: &EventEnvelope` still sees every field of the envelope, equal to what
//! `fetch_stream` reads.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Reset;

/// Takes no metadata: folded from the lean read.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Sum {
    id: Uuid,
    version: i64,
    total: i64,
    resets: i64,
}

#[marten::apply]
impl Sum {
    fn apply(&mut self, e: &Noted) {
        self.total += e.n;
    }

    fn apply_reset(&mut self, _e: &Reset) {
        self.total = 0;
        self.resets += 1;
    }
}

/// What a method with metadata saw of one event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Seen {
    sequence: i64,
    id: Uuid,
    version: i64,
    timestamp: i64,
    correlation_id: Option<String>,
    headers: Option<serde_json::Value>,
    transaction_id: u64,
}

impl Seen {
    fn of(e: &EventEnvelope) -> Self {
        Seen {
            sequence: e.sequence,
            id: e.id,
            version: e.version,
            timestamp: e.timestamp.unix_timestamp_nanos() as i64 / 1000,
            correlation_id: e.correlation_id.clone(),
            headers: e.headers.clone(),
            transaction_id: e.transaction_id,
        }
    }
}

/// One method takes metadata: folded from the full read.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Audit {
    id: Uuid,
    version: i64,
    seen: Vec<Seen>,
    resets: i64,
}

#[marten::apply]
impl Audit {
    fn apply(&mut self, _e: &Noted, meta: &EventEnvelope) {
        self.seen.push(Seen::of(meta));
    }

    fn apply_reset(&mut self, _e: &Reset) {
        self.resets += 1;
    }
}

// The derive knows whether a method takes metadata (checked when this file compiles).
const _: () = {
    assert!(!<Sum as marten::Apply>::USES_METADATA);
    assert!(<Audit as marten::Apply>::USES_METADATA);
};

/// A store folding `Sum` (lean) and `Audit` (full) live.
async fn live_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .projection::<Sum>(Lifecycle::Live)
        .projection::<Audit>(Lifecycle::Live)
        .build()
        .await);
    (schema, store)
}

#[tokio::test]
async fn lean_and_full_folds_agree_with_the_stream() {
    let (_schema, store) = live_store("live_folds").await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(Noted { n: 5 }).with_correlation_id("c-1"),
            PendingEvent::new(Noted { n: 7 }).with_header("who", "test"),
        ],
    ));
    ok(s.save_changes().await);
    ok(s.events().append(id, [Reset]));
    ok(s.save_changes().await);
    ok(s.events().append(id, [Noted { n: 11 }, Noted { n: 13 }]));
    ok(s.save_changes().await);

    let sum: Sum = ok(s.events().aggregate_stream(id).await).expect("sum");
    assert_eq!(
        sum,
        Sum {
            id,
            version: 5,
            total: 24,
            resets: 1
        }
    );
    // A range still applies to the lean read.
    let upto: Sum = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().up_to_version(2))
        .await)
    .expect("sum to 2");
    assert_eq!((upto.version, upto.total, upto.resets), (2, 12, 0));

    let audit: Audit = ok(s.events().aggregate_stream(id).await).expect("audit");
    let stored = ok(s.events().fetch_stream(id).await);
    let expected: Vec<Seen> = stored
        .iter()
        .filter(|e| e.data_as::<Noted>().is_some())
        .map(Seen::of)
        .collect();
    assert_eq!(expected.len(), 4);
    assert_eq!(audit.seen, expected);
    assert_eq!(audit.seen[0].correlation_id.as_deref(), Some("c-1"));
    assert!(audit.seen.iter().all(|e| e.sequence > 0 && !e.id.is_nil()));
    assert_eq!((audit.version, audit.resets), (5, 1));
}

#[tokio::test]
async fn a_lean_fold_of_a_conjoined_stream_reads_its_tenant_only() {
    let (_schema, b) = builder("live_folds_tenants");
    let store = ok(b
        .events_tenancy(marten::Tenancy::Conjoined)
        .projection::<Sum>(Lifecycle::Live)
        .build()
        .await);
    let id = Uuid::now_v7();
    for (tenant, n) in [("red", 1), ("blue", 100)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events().start_stream(id, [Noted { n }, Noted { n }]));
        ok(s.save_changes().await);
    }
    let mut s = ok(store.lightweight_session_for("red"));
    let red: Sum = ok(s.events().aggregate_stream(id).await).expect("red");
    assert_eq!((red.version, red.total), (2, 2));
    let mut s = ok(store.lightweight_session_for("blue"));
    let blue: Sum = ok(s.events().aggregate_stream(id).await).expect("blue");
    assert_eq!((blue.version, blue.total), (2, 200));
}

/// A fold decodes a long stream a chunk of events at a time: the state carries across
/// the chunks, a reset in the middle of one counts once, and a range ending inside a
/// later chunk stops there, for the lean read and the full one alike.
#[tokio::test]
async fn a_long_stream_folds_across_its_chunks_as_one() {
    let (_schema, store) = live_store("live_folds_long").await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    // Versions 1..=300: Noted { n: version } except a Reset at version 150.
    let events: Vec<PendingEvent> = (1..=300)
        .map(|v| match v {
            150 => PendingEvent::new(Reset),
            _ => PendingEvent::new(Noted { n: v }),
        })
        .collect();
    ok(s.events().start_stream(id, events));
    ok(s.save_changes().await);

    let sum: Sum = ok(s.events().aggregate_stream(id).await).expect("sum");
    let after_reset: i64 = (151..=300).sum();
    assert_eq!(
        (sum.id, sum.version, sum.total, sum.resets),
        (id, 300, after_reset, 1)
    );
    let upto: Sum = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().up_to_version(130))
        .await)
    .expect("sum to 130");
    assert_eq!(
        (upto.version, upto.total, upto.resets),
        (130, (1..=130).sum(), 0)
    );
    let from: Sum = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().from_version(200))
        .await)
    .expect("sum from 200");
    assert_eq!((from.version, from.total), (300, (200..=300).sum()));

    let audit: Audit = ok(s.events().aggregate_stream(id).await).expect("audit");
    let versions: Vec<i64> = audit.seen.iter().map(|e| e.version).collect();
    let expected: Vec<i64> = (1..=300).filter(|v| *v != 150).collect();
    assert_eq!(versions, expected);
    assert_eq!((audit.version, audit.resets), (300, 1));
}
