//! What inline projections' apply methods see of each event: its real stream version,
//! global sequence and transaction id on every append path (start, plain append planned
//! from the cache or from a locked read, expected version, `fetch_for_writing`, tagged
//! appends), equal to what `fetch_stream` reads afterwards, and the metadata the events
//! are appended with (correlation and causation ids, headers). For aggregates,
//! multi-stream projections and event projections alike.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::{EventProjection, ProjectedOps, Tenancy};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Ticked {
    n: i64,
}

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Topic(Uuid);

/// A tagged event: appended by the tagged statements.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Tocked {
    #[tag]
    topic: Topic,
    n: i64,
}

/// What an apply saw of one event: (n, version, sequence, transaction id, timestamp in
/// microseconds).
type Seen = (i64, i64, i64, u64, i128);

fn seen(n: i64, meta: &EventEnvelope) -> Seen {
    let micros = meta.timestamp.unix_timestamp_nanos() / 1_000;
    (n, meta.version, meta.sequence, meta.transaction_id, micros)
}

/// The number carried by a `Ticked` or `Tocked`.
fn number(e: &EventEnvelope) -> i64 {
    e.data_as::<Ticked>()
        .map(|t| t.n)
        .or_else(|| e.data_as::<Tocked>().map(|t| t.n))
        .unwrap_or(-1)
}

/// What is stored of events, as applies see it.
fn stored(events: &[EventEnvelope]) -> Vec<Seen> {
    events.iter().map(|e| seen(number(e), e)).collect()
}

/// An inline aggregate recording the version its apply saw for each event.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Trail {
    id: Uuid,
    version: i64,
    seen: Vec<Seen>,
    meta: Vec<Meta>,
}

/// The metadata an apply saw of one event.
type Meta = (Option<String>, Option<String>, Option<serde_json::Value>);

#[marten::apply]
impl Trail {
    fn apply(&mut self, e: &Ticked, meta: &EventEnvelope) {
        self.record(e.n, meta);
    }

    fn apply_tocked(&mut self, e: &Tocked, meta: &EventEnvelope) {
        self.record(e.n, meta);
    }

    fn record(&mut self, n: i64, meta: &EventEnvelope) {
        self.seen.push(seen(n, meta));
        self.meta.push((
            meta.correlation_id.clone(),
            meta.causation_id.clone(),
            meta.headers.clone(),
        ));
    }
}

/// A multi-stream projection of every event into one document per stream id text
/// (`identity` by the envelope: the stream), recording what its applies saw.
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default)]
#[concurrency(numeric)]
struct Ledger {
    id: String,
    seen: Vec<Seen>,
}

#[marten::apply]
impl Ledger {
    fn identity(_e: &Ticked) -> String {
        "all".to_owned()
    }

    fn identity_tocked(_e: &Tocked) -> String {
        "all".to_owned()
    }

    fn apply(&mut self, e: &Ticked, meta: &EventEnvelope) {
        self.seen.push(seen(e.n, meta));
    }

    fn apply_tocked(&mut self, e: &Tocked, meta: &EventEnvelope) {
        self.seen.push(seen(e.n, meta));
    }
}

/// One document per event, written by an event projection.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Stamp {
    id: Uuid,
    seen: Seen,
}

struct Stamps;

impl EventProjection for Stamps {
    fn name(&self) -> &'static str {
        "Stamps"
    }

    fn apply(&self, e: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), marten::ApplyError> {
        ops.store(Stamp {
            id: e.id,
            seen: seen(number(e), e),
        });
        Ok(())
    }
}

/// Which inline projections a run registers.
#[derive(Clone, Copy, PartialEq)]
enum With {
    /// The aggregate `Trail`, the multi-stream `Ledger` and the event projection.
    All,
    /// `Ledger` and the event projection only: no aggregate reads the streams, so the
    /// versions of plain appends come from the save's reservation alone.
    NoAggregate,
}

async fn run(label: &str, cache: usize, with: With) {
    let (_schema, b) = builder(label);
    let b = b
        .multi_stream_projection::<Ledger>(Lifecycle::Inline)
        .event_projection(Stamps, Lifecycle::Inline)
        .event::<Tocked>()
        .aggregate_cache(cache);
    let b = match with {
        With::All => b.projection::<Trail>(Lifecycle::Inline),
        With::NoAggregate => b.document::<Trail>(),
    };
    let store = ok(b.build().await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream(stream, [Ticked { n: 0 }, Ticked { n: 1 }]));
    ok(s.save_changes().await);
    // Plain appends: planned from the cache (when on) or a locked read.
    for n in 2..5 {
        ok(s.events().append(stream, [Ticked { n }]));
        ok(s.save_changes().await);
    }
    s.set_correlation_id(Some("request-1".into()));
    let tagged = PendingEvent::new(Ticked { n: 6 })
        .with_header("source", "test")
        .with_causation_id("command-6");
    ok(s.events()
        .append_expected(stream, 5, [PendingEvent::new(Ticked { n: 5 }), tagged]));
    ok(s.save_changes().await);
    if with == With::All {
        let mut w = ok(s.events().fetch_for_writing::<Trail>(stream).await);
        ok(w.append([Ticked { n: 7 }]));
    } else {
        ok(s.events().append(stream, [Ticked { n: 7 }]));
    }
    ok(s.save_changes().await);
    // Two appends to the stream in one save, then a tagged one.
    ok(s.events().append(stream, [Ticked { n: 8 }]));
    ok(s.events().append(stream, [Ticked { n: 9 }]));
    ok(s.save_changes().await);
    let topic = Topic(Uuid::now_v7());
    let tocks = [Tocked { topic, n: 10 }, Tocked { topic, n: 11 }];
    ok(s.events().append(stream, tocks));
    ok(s.save_changes().await);

    let events = ok(s.events().fetch_stream(stream).await);
    let stored = stored(&events);
    assert_eq!(stored.len(), 12);
    assert!(stored.iter().all(|(_, _, seq, tx, _)| *seq > 0 && *tx > 0));
    let ledger = ok(s.load::<Ledger>(&"all".to_owned()).await).expect("the ledger");
    assert_eq!(ledger.seen, stored, "multi-stream: seen inline = stored");
    for (e, want) in events.iter().zip(&stored) {
        let stamp = ok(s.load::<Stamp>(&e.id).await).expect("a stamp");
        assert_eq!(&stamp.seen, want, "event projection: seen inline = stored");
    }
    if with == With::All {
        check_trail(&mut s, stream, &events, &stored).await;
    }
}

/// The aggregate saw what is stored: versions, sequences, transactions and metadata.
async fn check_trail(
    s: &mut LightweightSession,
    stream: Uuid,
    events: &[EventEnvelope],
    stored: &[Seen],
) {
    let doc = ok(s.load::<Trail>(&stream).await).expect("the inline document");
    assert_eq!(doc.seen, stored, "aggregate: seen inline = stored");
    let stored_meta: Vec<Meta> = events
        .iter()
        .map(|e| {
            (
                e.correlation_id.clone(),
                e.causation_id.clone(),
                e.headers.clone(),
            )
        })
        .collect();
    assert_eq!(
        doc.meta, stored_meta,
        "metadata seen inline = metadata stored"
    );
    assert_eq!(
        doc.meta[6].1.as_deref(),
        Some("command-6"),
        "{:?}",
        doc.meta
    );
    assert_eq!(doc.meta[9].0.as_deref(), Some("request-1"));
    assert_eq!(doc.version, 12);
}

#[tokio::test]
async fn inline_applies_see_the_stored_versions_with_the_cache() {
    run("env_cached", 1_000, With::All).await;
}

#[tokio::test]
async fn inline_applies_see_the_stored_versions_from_locked_reads() {
    run("env_locked", 0, With::All).await;
}

#[tokio::test]
async fn multi_stream_and_event_projections_see_the_stored_versions_of_plain_appends() {
    run("env_no_aggregate", 0, With::NoAggregate).await;
}

/// A conjoined inline aggregate: each tenant's stream of the same id.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct TenantTrail {
    id: Uuid,
    version: i64,
    seen: Vec<Seen>,
}

#[marten::apply]
impl TenantTrail {
    fn apply(&mut self, e: &Ticked, meta: &EventEnvelope) {
        self.seen.push(seen(e.n, meta));
    }
}

#[tokio::test]
async fn conjoined_tenants_see_their_own_stored_sequences() {
    let (_schema, b) = builder("env_conjoined");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<TenantTrail>(Lifecycle::Inline)
        .build()
        .await);
    let stream = Uuid::now_v7();
    for round in 0..3 {
        for tenant in ["red", "blue"] {
            let mut s = ok(store.lightweight_session_for(tenant));
            ok(s.events().append(stream, [Ticked { n: round }]));
            if tenant == "red" {
                ok(s.events().append(stream, [Ticked { n: round }]));
            }
            ok(s.save_changes().await);
        }
    }
    for (tenant, n) in [("red", 6), ("blue", 3)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        let events = ok(s.events().fetch_stream(stream).await);
        assert_eq!(events.len(), n, "{tenant}");
        let doc = ok(s.load::<TenantTrail>(&stream).await).expect("the inline document");
        assert_eq!(doc.seen, stored(&events), "{tenant}");
        assert_eq!(doc.version, n as i64);
    }
}
