//! What an inline aggregate's apply methods see of each event: its real stream version on
//! every append path (start, plain append planned from the cache or from a locked read,
//! expected version, `fetch_for_writing`), equal to what `fetch_stream` reads afterwards,
//! and the metadata the events are appended with (correlation and causation ids,
//! headers).

mod common;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Ticked {
    n: i64,
}

/// An inline aggregate recording the version its apply saw for each event.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Trail {
    id: Uuid,
    version: i64,
    seen: Vec<(i64, i64)>,
    meta: Vec<Meta>,
}

/// The metadata an apply saw of one event.
type Meta = (Option<String>, Option<String>, Option<serde_json::Value>);

#[marten::apply]
impl Trail {
    fn apply(&mut self, e: &Ticked, meta: &EventEnvelope) {
        self.seen.push((e.n, meta.version));
        self.meta.push((
            meta.correlation_id.clone(),
            meta.causation_id.clone(),
            meta.headers.clone(),
        ));
    }
}

async fn run(label: &str, cache: usize) {
    let (_schema, b) = builder(label);
    let store = ok(b
        .projection::<Trail>(Lifecycle::Inline)
        .aggregate_cache(cache)
        .build()
        .await);
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
    let mut w = ok(s.events().fetch_for_writing::<Trail>(stream).await);
    ok(w.append([Ticked { n: 7 }]));
    ok(s.save_changes().await);
    // Two appends to the stream in one save.
    ok(s.events().append(stream, [Ticked { n: 8 }]));
    ok(s.events().append(stream, [Ticked { n: 9 }]));
    ok(s.save_changes().await);

    let events = ok(s.events().fetch_stream(stream).await);
    let stored: Vec<(i64, i64)> = events
        .iter()
        .map(|e| (e.data_as::<Ticked>().map_or(-1, |t| t.n), e.version))
        .collect();
    assert_eq!(stored.len(), 10);
    let doc = ok(s.load::<Trail>(&stream).await).expect("the inline document");
    assert_eq!(doc.seen, stored, "versions seen inline = versions stored");
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
    assert_eq!(doc.version, 10);
}

#[tokio::test]
async fn inline_applies_see_the_stored_versions_with_the_cache() {
    run("env_cached", 1_000).await;
}

#[tokio::test]
async fn inline_applies_see_the_stored_versions_from_locked_reads() {
    run("env_locked", 0).await;
}
