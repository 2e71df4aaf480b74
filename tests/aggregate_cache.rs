//! The store's aggregate cache: a plain append to a stream whose aggregate is projected
//! inline is one round trip once the store has the aggregate cached; entries made stale
//! by other stores (other processes) cost a retry, never an update.

mod common;

use std::sync::Arc;

use common::events::*;
use common::{builder, counted_builder_on, ok};
use marten::prelude::*;
use marten::{DocumentStoreBuilder, RejectionKind};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Board {
    id: Uuid,
    version: i64,
    name: String,
    titles: Vec<String>,
    finished: Vec<String>,
}

#[marten::apply]
impl Board {
    fn create(e: &ProjectStarted) -> Self {
        Board {
            name: e.name.clone(),
            ..Board::default()
        }
    }

    fn apply(&mut self, e: &TaskRecorded) {
        self.titles.push(e.title.clone());
    }

    fn apply(&mut self, e: &TaskFinished) {
        self.finished.push(e.title.clone());
    }

    fn should_delete(&self, _e: &ProjectCompleted) -> bool {
        true
    }
}

/// The titles of the stream's `TaskRecorded` events, in stream order, and its version.
async fn recorded(store: &DocumentStore, id: Uuid) -> (Vec<String>, i64) {
    let mut s = store.lightweight_session();
    let events = ok(s.events().fetch_stream(id).await);
    let titles = events
        .iter()
        .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
        .collect();
    (titles, events.last().map_or(0, |e| e.version))
}

async fn append(store: &DocumentStore, id: Uuid, title: &str) {
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [task(title)]));
    ok(s.save_changes().await);
}

/// Another store on `schema` with `Board` inline, as another process would have it: its
/// own pool, its own cache.
async fn other_store(
    schema: &TestSchema,
    configure: impl FnOnce(DocumentStoreBuilder) -> DocumentStoreBuilder,
) -> DocumentStore {
    let builder = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .projection::<Board>(Lifecycle::Inline);
    ok(configure(builder).build().await)
}

/// Starts stream `id` with a `ProjectStarted` named `name`, in a save of its own.
async fn start(store: &DocumentStore, id: Uuid, name: &str) {
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started(name)]));
    ok(s.save_changes().await);
}

/// Renames the stored `Board` document behind the projection's back.
async fn rename_by_hand(schema: &TestSchema, id: Uuid) {
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_doc_board SET data = jsonb_set(data, '{name}', '\"renamed\"') WHERE id = $1",
            &[&id],
        )
        .await
        .expect("edit");
}

async fn board(store: &DocumentStore, id: Uuid) -> Option<Board> {
    ok(store.query_session().load::<Board>(&id).await)
}

#[tokio::test]
async fn a_plain_append_is_one_round_trip_once_the_aggregate_is_cached() {
    let (schema, _) = builder("cache_round_trip");
    let (proxy, b) = counted_builder_on(&schema).await;
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let other = other_store(&schema, |b| b).await;
    let id = Uuid::now_v7();
    start(&store, id, "cached").await;
    // Warm up every statement of both paths: cached, and stale then locked.
    append(&store, id, "warm-1").await;
    append(&other, id, "moved-0").await;
    append(&store, id, "warm-2").await;

    for round in 0..3 {
        let before = proxy.round_trips();
        append(&store, id, &format!("t{round}")).await;
        assert_eq!(
            proxy.round_trips() - before,
            1,
            "a cached aggregate: append and projected write in one flight"
        );
    }
    // Another process moved the stream: the cached entry is stale. The append's version
    // check rejects the first flight, the save reads under lock and writes: three trips,
    // and nothing is lost.
    append(&other, id, "moved-1").await;
    let before = proxy.round_trips();
    append(&store, id, "after-move").await;
    assert_eq!(
        proxy.round_trips() - before,
        3,
        "stale: rejected, locked read, write"
    );
    let before = proxy.round_trips();
    append(&store, id, "cached-again").await;
    assert_eq!(
        proxy.round_trips() - before,
        1,
        "the retry refreshed the entry"
    );

    let doc = board(&store, id).await.expect("board");
    let (titles, version) = recorded(&store, id).await;
    assert_eq!(doc.titles, titles);
    assert_eq!(doc.version, version);
    assert_eq!(
        doc.titles,
        [
            "warm-1",
            "moved-0",
            "warm-2",
            "t0",
            "t1",
            "t2",
            "moved-1",
            "after-move",
            "cached-again"
        ]
    );
}

#[tokio::test]
async fn without_the_cache_a_plain_append_reads_under_lock_first() {
    let (schema, _) = builder("cache_off");
    let (proxy, b) = counted_builder_on(&schema).await;
    let store = ok(b
        .aggregate_cache(0)
        .projection::<Board>(Lifecycle::Inline)
        .build()
        .await);
    let id = Uuid::now_v7();
    start(&store, id, "uncached").await;
    append(&store, id, "warm").await;
    let before = proxy.round_trips();
    append(&store, id, "t").await;
    assert_eq!(proxy.round_trips() - before, 2, "lock and read, then write");
    assert_eq!(
        board(&store, id).await.expect("board").titles,
        ["warm", "t"]
    );
}

#[tokio::test]
async fn stores_with_their_own_caches_racing_plain_appends_lose_nothing() {
    const PER_STORE: usize = 4;
    const ROUNDS: usize = 60;
    let (schema, b) = builder("cache_race");
    let first = ok(b
        .pool_size(PER_STORE + 1)
        .projection::<Board>(Lifecycle::Inline)
        .build()
        .await);
    let second = other_store(&schema, |b| b.pool_size(PER_STORE + 1)).await;
    let id = Uuid::now_v7();
    let mut s = first.lightweight_session();
    ok(s.events().start_stream(id, [started("contended")]));
    ok(s.save_changes().await);
    // Both stores start with a cached entry.
    append(&second, id, "seed").await;

    let barrier = Arc::new(Barrier::new(2 * PER_STORE));
    let tasks: Vec<_> = (0..2 * PER_STORE)
        .map(|w| {
            let store = if w % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    barrier.wait().await;
                    let mut s = store.lightweight_session();
                    s.events().append(id, [task(&format!("{w}-{round}"))])?;
                    s.save_changes().await?;
                }
                marten::Result::Ok(())
            })
        })
        .collect();
    for t in tasks {
        ok(t.await.expect("writer"));
    }
    let (titles, version) = recorded(&first, id).await;
    assert_eq!(
        titles.len(),
        1 + 2 * PER_STORE * ROUNDS,
        "every append committed"
    );
    let doc = board(&first, id).await.expect("board");
    assert_eq!(
        doc.version, version,
        "the document is at the stream version"
    );
    assert_eq!(
        doc.titles, titles,
        "the document holds every event, in stream order"
    );
}

#[tokio::test]
async fn cached_and_uncached_stores_project_the_same_documents() {
    let (schema, b) = builder("cache_same");
    let cached = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let uncached = other_store(&schema, |b| b.aggregate_cache(0)).await;
    // The document after every step, with the stream id blanked out.
    let mut traces: Vec<Vec<Option<Board>>> = Vec::new();
    for store in [&cached, &uncached] {
        let id = Uuid::now_v7();
        let mut trace = Vec::new();
        let mut s = store.lightweight_session();
        macro_rules! step {
            ($($e:expr);+) => {{
                $( $e; )+
                trace.push(board(store, id).await.map(|b| Board { id: Uuid::nil(), ..b }));
            }};
        }
        step!(ok(s.events().start_stream(id, [started("same")])); ok(s.save_changes().await));
        step!(append(store, id, "a").await);
        // Two appends to the stream in one save.
        step!(ok(s.events().append(id, [task("b")])); ok(s.events().append(id, [finished("a")])); ok(s.save_changes().await));
        // The projection deletes the document; later events start from nothing.
        step!(ok(s.events().append(id, [ProjectCompleted {}])); ok(s.save_changes().await));
        step!(append(store, id, "after-delete").await);
        step!(ok(s.events().append(id, [started("again")])); ok(s.save_changes().await));
        step!(append(store, id, "c").await);
        // A deleted stream started anew: nothing of the old one carries over.
        step!(ok(s.events().delete_stream(id)); ok(s.save_changes().await));
        step!(ok(s.events().start_stream(id, [started("reborn")])); ok(s.save_changes().await));
        step!(append(store, id, "d").await);
        traces.push(trace);
    }
    assert_eq!(traces[0], traces[1]);
    assert_eq!(traces[0][3], None, "deleted by the projection");
    assert_eq!(
        traces[0].last().cloned().flatten(),
        Some(Board {
            id: Uuid::nil(),
            version: 2,
            name: "reborn".into(),
            titles: vec!["d".into()],
            finished: vec![],
        })
    );
}

#[tokio::test]
async fn reading_the_aggregate_warms_the_cache() {
    let (schema, b) = builder("cache_read_warms");
    let writer = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    start(&writer, id, "read").await;
    append(&writer, id, "a").await;

    // A store that never wrote the stream (another process, just started).
    let (proxy, b) = counted_builder_on(&schema).await;
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    // Prepare the statements on a stream of its own.
    let warm = Uuid::now_v7();
    append(&store, warm, "x").await;
    append(&store, warm, "y").await;

    let mut s = store.lightweight_session();
    let latest = ok(s.events().fetch_latest::<Board>(id).await).expect("board");
    assert_eq!(
        (latest.version, latest.titles.as_slice()),
        (2, &["a".to_string()][..])
    );
    ok(s.events().append(id, [task("b")]));
    let before = proxy.round_trips();
    ok(s.save_changes().await);
    assert_eq!(
        proxy.round_trips() - before,
        1,
        "planned from what the read saw"
    );
    drop(s);
    assert_eq!(board(&store, id).await.expect("board").titles, ["a", "b"]);
}

#[tokio::test]
async fn a_plain_append_to_an_archived_stream_is_rejected_as_archived() {
    let (schema, b) = builder("cache_archived");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let other = other_store(&schema, |b| b).await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("old")]));
    ok(s.save_changes().await);
    append(&store, id, "a").await;
    // The other store (process) has the aggregate cached when the stream is archived.
    append(&other, id, "b").await;
    ok(s.events().archive_stream(id));
    ok(s.save_changes().await);
    for (who, store) in [("archiving store", &store), ("other store", &other)] {
        let mut s = store.lightweight_session();
        ok(s.events().append(id, [task("late")]));
        let err = s.save_changes().await.expect_err("archived");
        assert_eq!(
            err.rejections().first().map(|r| r.kind.clone()),
            Some(marten::RejectionKind::StreamArchived),
            "{who}: {err}"
        );
    }
    let archived = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().including_archived())
        .await);
    assert_eq!(archived.len(), 3, "nothing appended after the archive");
}

/// A save that holds an exclusive stream lock never plans from the cache: a stale entry
/// would roll the save back and release the lock, letting a waiting writer in before the
/// exclusive append.
#[tokio::test]
async fn an_exclusive_append_keeps_its_lock_when_another_stream_is_stale() {
    let (schema, b) = builder("cache_exclusive");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let other = other_store(&schema, |b| b).await;
    let (locked, stale) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(locked, [started("locked")]));
    ok(s.events().start_stream(stale, [started("stale")]));
    ok(s.save_changes().await);
    append(&store, stale, "cached").await;
    // Another process moves `stale`: this store's entry for it is now behind.
    append(&other, stale, "moved").await;

    ok(s.events()
        .append_exclusive(locked, [task("exclusive")])
        .await);
    // A writer queues on the lock.
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move { append(&other, locked, "after").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the writer waits for the exclusive lock"
    );
    ok(s.events().append(stale, [task("with the exclusive")]));
    ok(s.save_changes().await);
    waiter.await.expect("waiter");

    let (titles, version) = recorded(&store, locked).await;
    assert_eq!(
        titles,
        ["exclusive", "after"],
        "the exclusive append went first"
    );
    assert_eq!(board(&store, locked).await.expect("board").version, version);
    let (titles, _) = recorded(&store, stale).await;
    assert_eq!(titles, ["cached", "moved", "with the exclusive"]);
}

/// Another process deletes the stream, starts it again with other events and brings it
/// back to the version this store has cached: the version check alone would pass, the
/// check of the stored document does not, and the save replans from a locked read.
#[tokio::test]
async fn a_stream_restarted_elsewhere_at_the_cached_version_is_not_planned_from_the_cache() {
    let (schema, b) = builder("cache_aba");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let other = other_store(&schema, |b| b).await;
    let id = Uuid::now_v7();
    start(&store, id, "first life").await;
    append(&store, id, "old task").await;
    // This store now has the aggregate cached at version 2.
    let mut o = other.lightweight_session();
    ok(o.events().delete_stream(id));
    ok(o.save_changes().await);
    ok(o.events().start_stream(id, [started("second life")]));
    ok(o.save_changes().await);
    append(&other, id, "new task").await;
    assert_eq!(
        board(&other, id).await.expect("board").version,
        2,
        "back at the cached version"
    );

    append(&store, id, "after").await;
    let doc = board(&store, id).await.expect("board");
    assert_eq!(doc.name, "second life");
    assert_eq!(doc.titles, ["new task", "after"]);
    assert_eq!(doc.version, 3);
}

/// A document edited by hand is what the next projected write builds on, as it would be
/// with a locked read.
#[tokio::test]
async fn a_hand_edited_aggregate_document_is_not_overwritten_from_the_cache() {
    let (schema, b) = builder("cache_hand_edit");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    start(&store, id, "edited").await;
    append(&store, id, "a").await;
    rename_by_hand(&schema, id).await;
    append(&store, id, "b").await;
    let doc = board(&store, id).await.expect("board");
    assert_eq!((doc.name.as_str(), doc.titles.len()), ("renamed", 2));
}

/// Several cached aggregates in one save are checked together; one changed document
/// replans the whole save.
#[tokio::test]
async fn one_changed_document_among_several_replans_the_save() {
    let (schema, b) = builder("cache_several");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let ids = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let mut s = store.lightweight_session();
    for id in ids {
        ok(s.events().start_stream(id, [started("several")]));
    }
    ok(s.save_changes().await);
    for id in ids {
        ok(s.events().append(id, [task("a")]));
    }
    ok(s.save_changes().await);
    rename_by_hand(&schema, ids[1]).await;
    for id in ids {
        ok(s.events().append(id, [task("b")]));
    }
    ok(s.save_changes().await);
    for (i, id) in ids.iter().enumerate() {
        let doc = board(&store, *id).await.expect("board");
        let name = if i == 1 { "renamed" } else { "several" };
        assert_eq!(
            (doc.name.as_str(), doc.titles.len()),
            (name, 2),
            "stream {i}"
        );
    }
}

/// Where the cache says the projection deleted the document, a document inserted by
/// hand since is what the next append builds on: the guarded write expects none stored,
/// finds one, writes nothing, and the save plans again from a locked read.
#[tokio::test]
async fn a_document_inserted_where_the_cache_has_none_is_built_on() {
    let (schema, b) = builder("cache_none_guard");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    start(&store, id, "ended").await;
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [ProjectCompleted {}]));
    ok(s.save_changes().await);
    assert_eq!(board(&store, id).await, None, "deleted by the projection");
    // The cache now holds "no document" for the stream at version 2.
    let by_hand = serde_json::json!({
        "id": id, "version": 2, "name": "inserted", "titles": ["kept"], "finished": []
    });
    schema
        .raw_client()
        .await
        .execute(
            "INSERT INTO mt_doc_board (id, data, mt_last_modified) VALUES ($1, $2, now())",
            &[&id, &by_hand],
        )
        .await
        .expect("insert");
    append(&store, id, "next").await;
    let doc = board(&store, id).await.expect("board");
    assert_eq!(
        (doc.name.as_str(), doc.titles.as_slice(), doc.version),
        (
            "inserted",
            ["kept".to_owned(), "next".to_owned()].as_slice(),
            3
        )
    );
}

/// `Board` in the numeric and optimistic modes: the guarded projected write has a shape
/// per mode.
mod modes {
    use super::*;

    macro_rules! board {
        ($name:ident, $($attr:tt)*) => {
            #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
            $($attr)*
            pub struct $name {
                pub id: Uuid,
                pub version: i64,
                pub name: String,
                pub titles: Vec<String>,
            }

            #[marten::apply]
            impl $name {
                fn create(e: &ProjectStarted) -> Self {
                    $name {
                        name: e.name.clone(),
                        ..$name::default()
                    }
                }

                fn apply(&mut self, e: &TaskRecorded) {
                    self.titles.push(e.title.clone());
                }
            }
        };
    }

    board!(RevisedBoard, #[concurrency(numeric)]);
    board!(VersionedBoard, #[concurrency(optimistic)]);
}

/// Starts a stream, appends to it, edits its document by hand (`edit`, with the stream
/// id as `$1`), and appends again, each in a session of its own from `session`.
async fn edited_between_appends(
    schema: &TestSchema,
    session: impl Fn() -> LightweightSession,
    edit: &str,
) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = session();
    ok(s.events().start_stream(id, [started("guarded")]));
    ok(s.save_changes().await);
    for title in ["a", "b"] {
        if title == "b" {
            schema
                .raw_client()
                .await
                .execute(edit, &[&id])
                .await
                .expect("edit");
        }
        let mut s = session();
        ok(s.events().append(id, [task(title)]));
        ok(s.save_changes().await);
    }
    id
}

/// The hand edit survives in every mode: each mode's guarded write rejects the cached
/// plan, and the locked read's plan builds on the edited document.
#[tokio::test]
async fn a_hand_edited_document_is_built_on_in_every_mode() {
    use modes::{RevisedBoard, VersionedBoard};
    let (schema, b) = builder("cache_guard_modes");
    let store = ok(b
        .projection::<RevisedBoard>(Lifecycle::Inline)
        .projection::<VersionedBoard>(Lifecycle::Inline)
        .build()
        .await);
    let rename = |table: &str| {
        format!(
            "UPDATE {table} SET data = jsonb_set(data, '{{name}}', '\"renamed\"') WHERE id = $1"
        )
    };
    let id = edited_between_appends(
        &schema,
        || store.lightweight_session(),
        &rename("mt_doc_revisedboard"),
    )
    .await;
    let doc = ok(store.query_session().load::<RevisedBoard>(&id).await).expect("revised");
    assert_eq!((doc.name.as_str(), doc.titles.len()), ("renamed", 2));
    let id = edited_between_appends(
        &schema,
        || store.lightweight_session(),
        &rename("mt_doc_versionedboard"),
    )
    .await;
    let doc = ok(store.query_session().load::<VersionedBoard>(&id).await).expect("versioned");
    assert_eq!((doc.name.as_str(), doc.titles.len()), ("renamed", 2));
}

/// A save rejected for its own reason (a stale expected version) whose cached document
/// was also edited names only its own rejection: the guard's is the cache's, retried
/// when it is the only one, never reported.
#[tokio::test]
async fn a_rejected_save_does_not_name_the_cache_guard() {
    let (schema, b) = builder("cache_guard_unnamed");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let (stale, edited) = (Uuid::now_v7(), Uuid::now_v7());
    start(&store, stale, "stale").await;
    start(&store, edited, "edited").await;
    append(&store, edited, "cached").await;
    rename_by_hand(&schema, edited).await;
    let mut s = store.lightweight_session();
    ok(s.events().append_expected(stale, 5, [task("too late")]));
    ok(s.events().append(edited, [task("from the cache")]));
    match s.save_changes().await {
        Err(Error::Rejected(rejections)) => {
            let kinds: Vec<(&str, &RejectionKind)> = rejections
                .iter()
                .map(|r| (r.document_type, &r.kind))
                .collect();
            assert_eq!(
                kinds,
                [(
                    "stream",
                    &RejectionKind::UnexpectedStreamVersion {
                        expected: 5,
                        actual: Some(1)
                    }
                )]
            );
        }
        other => panic!("expected the stream's rejection alone, got {other:?}"),
    }
    let doc = board(&store, edited).await.expect("board");
    assert_eq!((doc.name.as_str(), doc.titles.len()), ("renamed", 1));
}

/// A save of only events the aggregate does not handle moves the cache entry's version
/// with the stream (the document does not change), so the next append it handles is
/// still one round trip; the inline document keeps the version of its last handled save,
/// and reads run on from it. A stream another store moved meanwhile makes that guess
/// wrong: the next append is rejected and planned again from a locked read, and nothing
/// is lost.
#[tokio::test]
async fn an_append_the_aggregate_does_not_handle_keeps_the_cached_entry_in_step() {
    let (schema, _) = builder("cache_unhandled");
    let (proxy, b) = counted_builder_on(&schema).await;
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let other = other_store(&schema, |b| b).await;
    let id = Uuid::now_v7();
    let unhandled = |store: DocumentStore| async move {
        let mut s = store.lightweight_session();
        ok(s.events().append(id, [TaskStarted { title: "x".into() }]));
        ok(s.save_changes().await);
    };
    start(&store, id, "steps").await;
    // Warm up every statement: cached, unhandled, stale then locked.
    append(&store, id, "warm-1").await;
    unhandled(store.clone()).await;
    append(&other, id, "moved-0").await;
    append(&store, id, "warm-2").await;
    append(&store, id, "warm-3").await;

    for round in 0..3 {
        let before = proxy.round_trips();
        unhandled(store.clone()).await;
        assert_eq!(
            proxy.round_trips() - before,
            1,
            "round {round}: the unhandled save"
        );
        let before = proxy.round_trips();
        append(&store, id, &format!("t{round}")).await;
        assert_eq!(
            proxy.round_trips() - before,
            1,
            "round {round}: the entry moved with the unhandled save"
        );
    }
    // Another store appends between: the entry's guess is behind, the append is
    // rejected, read under lock, written.
    append(&other, id, "moved-1").await;
    unhandled(store.clone()).await;
    let before = proxy.round_trips();
    append(&store, id, "after-move").await;
    assert_eq!(
        proxy.round_trips() - before,
        3,
        "stale: rejected, locked read, write"
    );

    let doc = board(&store, id).await.expect("board");
    let (titles, version) = recorded(&store, id).await;
    assert_eq!(doc.titles, titles);
    assert_eq!(doc.version, version, "the last save handled an event");
    assert_eq!(
        doc.titles,
        [
            "warm-1",
            "moved-0",
            "warm-2",
            "warm-3",
            "t0",
            "t1",
            "t2",
            "moved-1",
            "after-move"
        ]
    );
}
