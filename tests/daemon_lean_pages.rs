//! A daemon runner whose projection's apply methods take no metadata, with hooks that
//! read none, reads its pages lean: each event's sequence, stream, version, type, data
//! and transaction id, not its id, timestamp or headers. It projects what a full read
//! does, skipping events of types the store does not know; an aggregate whose apply
//! methods take metadata, or hooks that read it, get every field of every event.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tally::{Added, Tally};
use common::{builder, ok};
use marten::daemon::{Daemon, DaemonHooks, DaemonOptions};
use marten::prelude::*;
use marten::DocumentStoreBuilder;
use serde::{Deserialize, Serialize};

/// An aggregate whose apply method takes the envelope: it keeps the last event's id and
/// timestamp.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Stamped {
    id: Uuid,
    version: i64,
    last_event: Uuid,
    last_at: Option<i64>,
}

#[marten::apply]
impl Stamped {
    fn apply(&mut self, _e: &Added, meta: &EventEnvelope) {
        self.last_event = meta.id;
        self.last_at = Some(meta.timestamp.unix_timestamp_nanos() as i64);
    }
}

/// An event type the daemon's store does not register: its runners skip it.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {
    text: String,
}

/// What a hook saw of one event.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: Uuid,
    stream: StreamId,
    version: i64,
    transaction_id: u64,
    at: i64,
}

/// Records every event the hooks are told, per projection and sequence; `metadata` is
/// what it answers to `reads_event_metadata`.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<HashMap<(String, i64), Seen>>>,
    metadata: bool,
}

impl Recorder {
    fn new(metadata: bool) -> Self {
        Recorder {
            seen: Arc::default(),
            metadata,
        }
    }

    fn seen(&self) -> HashMap<(String, i64), Seen> {
        match self.seen.lock() {
            Ok(seen) => seen.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl DaemonHooks for Recorder {
    fn before_event(&self, projection: &str, e: &EventEnvelope) {
        let seen = Seen {
            id: e.id,
            stream: e.stream_id.clone(),
            version: e.version,
            transaction_id: e.transaction_id,
            at: e.timestamp.unix_timestamp_nanos() as i64,
        };
        if let Ok(mut all) = self.seen.lock() {
            all.insert((projection.to_owned(), e.sequence), seen);
        }
    }

    fn reads_event_metadata(&self) -> bool {
        self.metadata
    }
}

const STREAMS: usize = 6;
const ROUNDS: i64 = 9;

/// Appends `ROUNDS` rounds of one `Added` per stream, each round in a transaction of its
/// own, with a `Noted` of a type the daemon does not know in every third round: the
/// full envelopes of the `Added` events, by sequence.
async fn seed(b: DocumentStoreBuilder, streams: &[Uuid]) -> HashMap<i64, EventEnvelope> {
    let writer = ok(b.event::<Added>().event::<Noted>().build().await);
    let mut s = writer.lightweight_session();
    for round in 1..=ROUNDS {
        for id in streams {
            ok(s.events().append(*id, [Added { n: round }]));
            if round % 3 == 0 {
                let text = format!("round {round}");
                ok(s.events().append(*id, [Noted { text }]));
            }
        }
        ok(s.save_changes().await);
    }
    let mut full = HashMap::new();
    for id in streams {
        for e in ok(s.events().fetch_stream(*id).await) {
            if e.is::<Added>() {
                full.insert(e.sequence, e);
            }
        }
    }
    full
}

/// Runs the daemon over `store` with `hooks` until it has caught up.
async fn catch_up(store: &DocumentStore, hooks: Recorder) {
    let options = DaemonOptions {
        batch_size: 10,
        ..DaemonOptions::default()
    };
    let daemon = Daemon::start(store, options.with_hooks(hooks));
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);
}

#[tokio::test]
async fn a_runner_without_metadata_reads_lean_pages_and_projects_the_same() {
    let (schema, b) = builder("daemon_lean_pages");
    let streams: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::now_v7()).collect();
    let full = seed(b, &streams).await;
    let store = ok(common::builder_on(&schema)
        .event::<Added>()
        .projection::<Tally>(Lifecycle::Async)
        .projection::<Stamped>(Lifecycle::Async)
        .build()
        .await);
    let hooks = Recorder::new(false);
    catch_up(&store, hooks.clone()).await;

    let mut s = store.query_session();
    // Noted events come after Added in rounds 3, 6, 9: the stream's version counts them.
    let version = ROUNDS + ROUNDS / 3;
    for id in &streams {
        let tally: Tally = ok(s.load(id).await).expect("projected");
        assert_eq!(
            (tally.count, tally.total, tally.version),
            (ROUNDS, ROUNDS * (ROUNDS + 1) / 2, version - 1),
            "stream {id}: each Added applied once, the unknown events skipped"
        );
        let stamped: Stamped = ok(s.load(id).await).expect("projected");
        let last = full
            .values()
            .filter(|e| e.stream_id == StreamId::from(*id))
            .max_by_key(|e| e.sequence)
            .expect("events");
        assert_eq!(
            stamped.last_event, last.id,
            "stream {id}: the metadata read"
        );
        assert_eq!(
            stamped.last_at,
            Some(last.timestamp.unix_timestamp_nanos() as i64)
        );
    }

    let seen = hooks.seen();
    assert_eq!(
        seen.len(),
        2 * full.len(),
        "each Added told once per projection"
    );
    for (sequence, e) in &full {
        let lean = &seen[&("Tally".to_owned(), *sequence)];
        assert_eq!(lean.id, Uuid::nil(), "Tally's pages are lean: no event id");
        assert_eq!(
            (&lean.stream, lean.version, lean.transaction_id),
            (&e.stream_id, e.version, e.transaction_id),
            "event {sequence}: what a lean page reads is read"
        );
        assert_ne!(lean.at, e.timestamp.unix_timestamp_nanos() as i64);
        let whole = &seen[&("Stamped".to_owned(), *sequence)];
        assert_eq!(whole.id, e.id, "Stamped reads metadata: its pages are full");
        assert_eq!(whole.at, e.timestamp.unix_timestamp_nanos() as i64);
    }
}

#[tokio::test]
async fn hooks_that_read_metadata_get_every_field() {
    let (schema, b) = builder("daemon_lean_hooks");
    let streams: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
    let full = seed(b, &streams).await;
    let store = ok(common::builder_on(&schema)
        .event::<Added>()
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let hooks = Recorder::new(true);
    catch_up(&store, hooks.clone()).await;

    let seen = hooks.seen();
    assert_eq!(seen.len(), full.len());
    for (sequence, e) in &full {
        let told = &seen[&("Tally".to_owned(), *sequence)];
        assert_eq!(told.id, e.id, "event {sequence}: its id");
        assert_eq!(told.at, e.timestamp.unix_timestamp_nanos() as i64);
        assert_eq!(told.transaction_id, e.transaction_id);
    }
    let tally: Tally = ok(store.query_session().load(&streams[1]).await).expect("projected");
    assert_eq!(tally.count, ROUNDS);
}
