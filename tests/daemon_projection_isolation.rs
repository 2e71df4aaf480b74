//! Async projections kept apart from each other and from what came before them (scenarios
//! ported from JasperFx.Events' compliance suites and Marten's daemon tests):
//!
//! - rebuilding one of two async projections rewrites only its own documents and
//!   progression row, also while appends go on and the other keeps running;
//! - a projection switched from inline to async on the same schema applies every event
//!   once (the daemon must not fold the inline-written events into the documents again);
//! - an event type the daemon's store does not register neither hangs the daemon nor
//!   corrupts a projection: it is skipped exactly, or stops it with a typed error naming
//!   the type and the sequence;
//! - an async aggregate's `version` is its stream's, as the live fold's is, also when the
//!   newest event is one the aggregate does not handle.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tally::{Added, Tally};
use common::{builder, builder_on, ok};
use marten::daemon::{rebuild, Daemon, DaemonHooks, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten::UnknownEvents;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

/// The longest any wait of this file may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// A multi-stream projection of the same `Added` events as `Tally`: their sum and count
/// per bucket (`n` modulo 3), in a document type of its own.
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct Bucket {
    id: String,
    total: i64,
    count: i64,
}

#[marten::apply]
impl Bucket {
    fn identities(e: &Added) -> Vec<String> {
        vec![bucket_of(e.n)]
    }
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
        self.count += 1;
    }
}

/// The bucket an `Added { n }` is counted in.
fn bucket_of(n: i64) -> String {
    format!("b{}", n.rem_euclid(3))
}

/// An event type only a second store registers.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "stranger")]
struct Stranger {
    note: String,
}

/// One document per event an event projection was given.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Seen {
    id: i64,
    event_type: String,
}

/// An event projection that takes every event the daemon hands it (no type filter).
struct SeenEvents;

impl marten::EventProjection for SeenEvents {
    fn name(&self) -> &'static str {
        "SeenEvents"
    }
    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut marten::ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        ops.store(Seen {
            id: event.sequence,
            event_type: event.event_type.to_string(),
        });
        Ok(())
    }
}

/// Records the sequences each projection's committed batches processed.
#[derive(Default)]
struct Commits(Mutex<HashMap<String, Vec<i64>>>);

impl Commits {
    /// The sequences `projection` committed, in commit order (repeats included).
    fn of(&self, projection: &str) -> Vec<i64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(projection).cloned().unwrap_or_default()
    }
}

impl DaemonHooks for Commits {
    fn after_commit(&self, projection: &str, sequences: &[i64]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(projection.to_owned())
            .or_default()
            .extend_from_slice(sequences);
    }
    fn reads_event_metadata(&self) -> bool {
        false
    }
}

/// A store on a fresh schema with `Tally` and `Bucket` both async.
async fn two_projections(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .projection::<Tally>(Lifecycle::Async)
        .multi_stream_projection::<Bucket>(Lifecycle::Async)
        .build()
        .await);
    (schema, store)
}

/// Starts a daemon polling every 20 ms, with `hooks`.
fn start(store: &DocumentStore, hooks: Arc<dyn DaemonHooks>) -> Daemon {
    Daemon::start(
        store,
        DaemonOptions {
            batch_size: 7,
            poll_interval: Duration::from_millis(20),
            hooks,
            ..DaemonOptions::default()
        },
    )
}

/// Waits (bounded by [`WAIT`]) until every async projection of the daemon's store caught up.
async fn caught_up(daemon: &Daemon, when: &str) {
    match tokio::time::timeout(
        WAIT + Duration::from_secs(5),
        daemon.wait_for_non_stale(WAIT),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the daemon did not catch up {when}: {e} ({e:?})"),
        Err(_) => panic!("the daemon's wait for catch-up {when} hung past its own timeout"),
    }
}

/// Appends `rounds` rounds of one `Added` per stream, one save per round; round `r`
/// (counted from `first`) appends `n = 10 * r + i` to the `i`-th stream.
async fn append_rounds(store: &DocumentStore, streams: &[Uuid], first: i64, rounds: i64) {
    let mut s = store.lightweight_session();
    for r in first..first + rounds {
        for (i, id) in (0_i64..).zip(streams) {
            ok(s.events().append(*id, [Added { n: 10 * r + i }]));
        }
        ok(s.save_changes().await);
    }
}

/// Asserts each stream's `Tally` document equals its live fold, every event counted once.
async fn assert_tallies_are_live(store: &DocumentStore, streams: &[Uuid]) {
    let mut s = store.lightweight_session();
    for id in streams {
        let doc: Option<Tally> = ok(store.query_session().load(id).await);
        let live: Option<Tally> = ok(s.events().aggregate_stream(*id).await);
        let live = live.expect("the stream has events");
        assert_eq!(
            doc.as_ref(),
            Some(&live),
            "stream {id}: the document is not the live fold (an event applied twice or lost?)"
        );
        assert_eq!(live.count, live.version, "stream {id}: one count per event");
    }
}

/// The `Bucket` documents the stored `Added` events make, computed from the raw rows.
async fn expected_buckets(schema: &TestSchema) -> BTreeMap<String, Bucket> {
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT (data->>'n')::bigint FROM mt_events WHERE type = 'added'",
            &[],
        )
        .await
        .expect("the events");
    let mut buckets = BTreeMap::<String, Bucket>::new();
    for row in rows {
        let n: i64 = row.get(0);
        let b = buckets.entry(bucket_of(n)).or_insert_with(|| Bucket {
            id: bucket_of(n),
            ..Bucket::default()
        });
        b.total += n;
        b.count += 1;
    }
    buckets
}

/// Asserts the stored `Bucket` documents are exactly those the events make.
async fn assert_buckets_exact(store: &DocumentStore, schema: &TestSchema) {
    let expected = expected_buckets(schema).await;
    assert!(!expected.is_empty(), "the test appended events");
    for (id, want) in &expected {
        let got: Option<Bucket> = ok(store.query_session().load(id).await);
        assert_eq!(got.as_ref(), Some(want), "bucket {id}");
    }
    let stored: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT count(*) FROM mt_doc_bucket", &[])
        .await
        .expect("count the buckets")
        .get(0);
    assert_eq!(stored, expected.len() as i64, "no stray bucket");
}

/// Every row of a document table as text (id, body, last modified, `xmin`), in id order:
/// any rewrite of a row changes its `xmin`.
async fn raw_rows(schema: &TestSchema, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT format('%s %s %s xmin=%s', id, data, mt_last_modified, xmin) FROM {table} ORDER BY id"
    );
    let rows = schema
        .raw_client()
        .await
        .query(sql.as_str(), &[])
        .await
        .expect("the raw rows");
    rows.iter().map(|r| r.get(0)).collect()
}

/// A projection's progression row as text (position, epoch, owner, last update, `xmin`)
/// and its owner epoch.
async fn progression(schema: &TestSchema, name: &str) -> (String, i64) {
    let row = schema
        .raw_client()
        .await
        .query_one(
            "SELECT format('%s/%s epoch=%s owner=%s at %s xmin=%s', last_tx, last_seq, \
             owner_epoch, owner, last_updated, xmin), owner_epoch \
             FROM mt_event_progression WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("the progression row of {name}: {e}"));
    (row.get(0), row.get(1))
}

/// Rebuilding `Tally` resets and replays only `Tally`: the `Bucket` rows are not
/// written at all (same body, timestamp and `xmin`) and its progression row does not
/// move; the rebuilt tallies equal the live folds again.
#[tokio::test]
async fn rebuilding_one_projection_leaves_the_other_untouched() {
    let (schema, store) = two_projections("iso_rebuild_one").await;
    let streams: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    append_rounds(&store, &streams, 0, 4).await;
    let daemon = start(&store, Arc::new(Commits::default()));
    caught_up(&daemon, "before the rebuild").await;
    assert_buckets_exact(&store, &schema).await;

    let buckets_before = raw_rows(&schema, "mt_doc_bucket").await;
    let (bucket_progress, _) = progression(&schema, "Bucket").await;
    let (_, tally_epoch) = progression(&schema, "Tally").await;
    // Damage the tallies so that only a real replay makes them right again.
    schema
        .raw_client()
        .await
        .batch_execute("UPDATE mt_doc_tally SET data = jsonb_set(data, '{total}', '-1')")
        .await
        .expect("damage the tallies");

    let rebuilt = tokio::time::timeout(WAIT, rebuild(&store, "Tally")).await;
    ok(rebuilt.expect("the rebuild ends"));
    caught_up(&daemon, "after the rebuild").await;
    ok(daemon.stop().await);

    let (_, tally_epoch_after) = progression(&schema, "Tally").await;
    assert!(
        tally_epoch_after > tally_epoch,
        "the rebuild reset Tally's slot ({tally_epoch} -> {tally_epoch_after})"
    );
    assert_tallies_are_live(&store, &streams).await;
    assert_eq!(
        raw_rows(&schema, "mt_doc_bucket").await,
        buckets_before,
        "a rebuild of Tally rewrote Bucket documents"
    );
    assert_eq!(
        progression(&schema, "Bucket").await.0,
        bucket_progress,
        "a rebuild of Tally moved Bucket's progression row"
    );
    assert_buckets_exact(&store, &schema).await;
}

/// A rebuild of `Tally` while appends go on and the daemon keeps running `Bucket`:
/// nothing is lost for either. `Bucket` keeps its owner (epoch) and commits every event
/// exactly once; every tally equals its live fold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_appends_continue_loses_nothing_for_either() {
    let (schema, store) = two_projections("iso_rebuild_busy").await;
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    append_rounds(&store, &streams, 0, 5).await;
    let commits = Arc::new(Commits::default());
    let daemon = start(&store, commits.clone());
    caught_up(&daemon, "before the appends").await;
    let (_, bucket_epoch) = progression(&schema, "Bucket").await;

    let (midway_tx, midway) = tokio::sync::oneshot::channel();
    let mut midway_tx = Some(midway_tx);
    let appender = {
        let (store, streams) = (store.clone(), streams.clone());
        tokio::spawn(async move {
            for r in 5..35 {
                append_rounds(&store, &streams, r, 1).await;
                if r == 12 {
                    if let Some(tx) = midway_tx.take() {
                        let _ = tx.send(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::timeout(WAIT, midway)
        .await
        .expect("the appender got midway in time")
        .expect("the appender signals midway");
    let rebuilt = tokio::time::timeout(WAIT, rebuild(&store, "Tally")).await;
    ok(rebuilt.expect("the rebuild ends"));
    tokio::time::timeout(WAIT, appender)
        .await
        .expect("the appender ends in time")
        .expect("the appender does not panic");
    caught_up(&daemon, "after the rebuild and the appends").await;
    ok(daemon.stop().await);

    assert_tallies_are_live(&store, &streams).await;
    assert_buckets_exact(&store, &schema).await;
    let (_, bucket_epoch_after) = progression(&schema, "Bucket").await;
    assert_eq!(
        bucket_epoch_after, bucket_epoch,
        "the rebuild of Tally took Bucket from its runner"
    );
    let all: Vec<i64> = schema
        .raw_client()
        .await
        .query("SELECT seq_id FROM mt_events ORDER BY seq_id", &[])
        .await
        .expect("the sequences")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut bucket = commits.of("Bucket");
    bucket.sort_unstable();
    assert_eq!(
        bucket, all,
        "Bucket committed every event exactly once across the rebuild"
    );
    let tally = commits.of("Tally");
    assert!(
        tally.len() > all.len(),
        "Tally replayed after its rebuild ({} commits of {} events)",
        tally.len(),
        all.len()
    );
}

/// Store A projects `Tally` inline; store B, on the same schema, registers it async and
/// appends more; B's daemon catches up. Each tally must be the live fold of its stream:
/// the events A folded inline must not be folded into the documents a second time, and
/// B's appends must be projected.
#[tokio::test]
async fn switching_a_projection_from_inline_to_async_applies_each_event_once() {
    let (schema, b) = builder("iso_inline_to_async");
    let inline = ok(b.projection::<Tally>(Lifecycle::Inline).build().await);
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    append_rounds(&inline, &streams, 0, 3).await;
    for id in &streams {
        let doc: Option<Tally> = ok(inline.query_session().load(id).await);
        assert_eq!(doc.map(|t| t.count), Some(3), "written inline");
    }
    drop(inline);

    let store = ok(builder_on(&schema)
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    append_rounds(&store, &streams, 3, 2).await;
    let daemon = start(&store, Arc::new(Commits::default()));
    caught_up(&daemon, "after the switch").await;
    ok(daemon.stop().await);
    assert_tallies_are_live(&store, &streams).await;
}

/// After the same switch, a rebuild of the async projection makes every document its
/// live fold (the remedy when the daemon is started over inline-written documents).
#[tokio::test]
async fn after_switching_from_inline_to_async_a_rebuild_makes_the_documents_exact() {
    let (schema, b) = builder("iso_inline_to_async_rebuild");
    let inline = ok(b.projection::<Tally>(Lifecycle::Inline).build().await);
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    append_rounds(&inline, &streams, 0, 3).await;
    drop(inline);

    let store = ok(builder_on(&schema)
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    append_rounds(&store, &streams, 3, 2).await;
    let rebuilt = tokio::time::timeout(WAIT, rebuild(&store, "Tally")).await;
    ok(rebuilt.expect("the rebuild ends"));
    let daemon = start(&store, Arc::new(Commits::default()));
    caught_up(&daemon, "after the rebuild").await;
    ok(daemon.stop().await);
    assert_tallies_are_live(&store, &streams).await;
}

/// The global sequences of the stored events of type `ty`, ascending.
async fn sequences_of(schema: &TestSchema, ty: &str) -> Vec<i64> {
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT seq_id FROM mt_events WHERE type = $1 ORDER BY seq_id",
            &[&ty],
        )
        .await
        .expect("the sequences");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Runs the unknown-event scenario under `policy`: store `known` (Tally and an event
/// projection taking every event, `Stranger` unregistered) and store `other` (which
/// registers `Stranger`) share a schema; `other` appends `Stranger` events in the middle
/// of a stream, as a stream of their own and as the newest event. The daemon of `known`
/// must not hang, and must either project exactly the known events or stop with a typed
/// error naming `stranger` and one of its sequences.
/// Returns what happened, for the test's output.
async fn unknown_event_type_under(policy: PoisonPolicy, label: &str) -> String {
    let (schema, b) = builder(label);
    let known = ok(b
        .event::<Added>()
        .projection::<Tally>(Lifecycle::Async)
        .event_projection(SeenEvents, Lifecycle::Async)
        .document::<Seen>()
        .build()
        .await);
    let other = ok(builder_on(&schema)
        .event::<Added>()
        .event::<Stranger>()
        .build()
        .await);
    let (mixed, strangers_only) = (Uuid::now_v7(), Uuid::now_v7());
    let stranger = |note: &str| {
        PendingEvent::new(Stranger {
            note: note.to_owned(),
        })
    };
    let mut s = other.lightweight_session();
    ok(s.events().append(
        mixed,
        [
            PendingEvent::new(Added { n: 1 }),
            stranger("middle"),
            PendingEvent::new(Added { n: 2 }),
        ],
    ));
    ok(s.save_changes().await);
    ok(s.events().append(strangers_only, [stranger("alone")]));
    ok(s.save_changes().await);
    ok(s.events().append(mixed, [stranger("newest")]));
    ok(s.save_changes().await);

    let daemon = Daemon::start(
        &known,
        DaemonOptions {
            retries: 0,
            poison: policy,
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    let waited = tokio::time::timeout(
        WAIT + Duration::from_secs(5),
        daemon.wait_for_non_stale(WAIT),
    )
    .await
    .unwrap_or_else(|_| panic!("{policy:?}: the daemon's wait hung past its own timeout"));
    let raw = schema.raw_client().await;
    let added = sequences_of(&schema, "added").await;
    let strangers = sequences_of(&schema, "stranger").await;
    assert_eq!((added.len(), strangers.len()), (2, 3), "the premise");
    match waited {
        Ok(()) => {
            ok(daemon.stop().await);
            let seen: Vec<(i64, String)> = raw
                .query(
                    "SELECT id, data->>'event_type' FROM mt_doc_seen ORDER BY id",
                    &[],
                )
                .await
                .expect("the seen documents")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let want: Vec<(i64, String)> = added.iter().map(|s| (*s, "added".into())).collect();
            assert_eq!(
                seen, want,
                "{policy:?}: the event projection was given exactly the known events"
            );
            // Exact: the fold of the known events alone, as a store that reads past
            // unknown types (and so never sees the strangers) folds the stream.
            let skipping = ok(builder_on(&schema)
                .projection::<Tally>(Lifecycle::Live)
                .unknown_events(UnknownEvents::Skip)
                .build()
                .await);
            let doc: Option<Tally> = ok(known.query_session().load(&mixed).await);
            let live: Option<Tally> = ok(skipping
                .lightweight_session()
                .events()
                .aggregate_stream(mixed)
                .await);
            assert_eq!(
                doc, live,
                "{policy:?}: the tally is the fold of the known events"
            );
            assert_eq!(
                doc.map(|t| (t.total, t.count)),
                Some((3, 2)),
                "{policy:?}: each known event once"
            );
            let none: Option<Tally> = ok(known.query_session().load(&strangers_only).await);
            assert_eq!(none, None, "{policy:?}: no tally for unknown events alone");
            let dead_letters: i64 = raw
                .query_one("SELECT count(*) FROM mt_dead_letters", &[])
                .await
                .expect("count the dead letters")
                .get(0);
            format!(
                "caught up, unknown events skipped, projections exact; {dead_letters} dead letters"
            )
        }
        Err(marten::Error::ProjectionStopped { .. }) => {
            match tokio::time::timeout(WAIT, daemon.stop()).await {
                Ok(Err(marten::Error::UnknownEventType {
                    event_type,
                    sequence,
                })) => {
                    assert_eq!(event_type, "stranger", "{policy:?}");
                    assert!(
                        strangers.contains(&sequence),
                        "{policy:?}: sequence {sequence} is not a stranger's ({strangers:?})"
                    );
                    format!("stopped with UnknownEventType {{ {event_type}, {sequence} }}")
                }
                Ok(other) => panic!(
                    "{policy:?}: stopped, but not with UnknownEventType naming the type: {other:?}"
                ),
                Err(_) => panic!("{policy:?}: the daemon's stop hung"),
            }
        }
        Err(e) => panic!("{policy:?}: neither caught up nor stopped with a typed error: {e:?}"),
    }
}

/// Under the default poison policy (dead letters).
#[tokio::test]
async fn an_unknown_event_type_neither_hangs_nor_corrupts_with_dead_letters() {
    let outcome = unknown_event_type_under(PoisonPolicy::DeadLetter, "iso_unknown_type_dead").await;
    println!("unknown event type, PoisonPolicy::DeadLetter: {outcome}");
}

/// Under `PoisonPolicy::Stop`.
#[tokio::test]
async fn an_unknown_event_type_neither_hangs_nor_corrupts_when_stopping() {
    let outcome = unknown_event_type_under(PoisonPolicy::Stop, "iso_unknown_type_stop").await;
    println!("unknown event type, PoisonPolicy::Stop: {outcome}");
}

/// An event type the store registers but `Tally` has no method for.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {}

/// The smallest case of the daemon and the live fold disagreeing on an aggregate's
/// `version`: a stream whose newest event is of a registered type the aggregate does
/// not handle. The live fold (and an inline document) keeps `version` at the stream
/// version; the daemon's document must too.
#[tokio::test]
async fn an_async_aggregate_keeps_the_stream_version_past_events_it_does_not_handle() {
    let (_schema, b) = builder("iso_unhandled_version");
    let store = ok(b
        .event::<Noted>()
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [
            PendingEvent::new(Added { n: 1 }),
            PendingEvent::new(Noted {}),
        ],
    ));
    ok(s.save_changes().await);
    let daemon = start(&store, Arc::new(Commits::default()));
    caught_up(&daemon, "").await;
    ok(daemon.stop().await);
    let doc: Option<Tally> = ok(store.query_session().load(&id).await);
    let live: Option<Tally> = ok(s.events().aggregate_stream(id).await);
    assert_eq!(live.as_ref().map(|t| t.version), Some(2), "the live fold");
    assert_eq!(doc, live, "the daemon's document is not the live fold");
}
