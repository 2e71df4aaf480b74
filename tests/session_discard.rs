//! `discard_changes`: what a session had pending is never written after it - queued
//! operations and the in-place changes of dirty-tracked documents alike - and a tracked
//! document that cannot be serialized fails its save with a typed error without
//! failing the session's later saves once it is discarded.

mod common;

use std::time::Duration;

use common::events::*;
use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize, Serializer};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Counter {
    id: String,
    name: String,
    n: i32,
}

/// A document whose serialization fails while `poisoned` is set.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Fragile {
    id: String,
    #[serde(serialize_with = "refuse_poisoned")]
    #[query(skip)]
    poisoned: bool,
    n: i32,
}

fn refuse_poisoned<S: Serializer>(poisoned: &bool, s: S) -> Result<S::Ok, S::Error> {
    if *poisoned {
        return Err(serde::ser::Error::custom("poisoned"));
    }
    s.serialize_bool(false)
}

async fn stored_counter(store: &DocumentStore, id: &str) -> Option<Counter> {
    ok(store.query_session().load::<Counter>(&id.to_owned()).await)
}

async fn stored_fragile(store: &DocumentStore, id: &str) -> Option<Fragile> {
    ok(store.query_session().load::<Fragile>(&id.to_owned()).await)
}

/// A document changed in place and then discarded goes back to its stored state and is
/// not written by the next save; a change made after the discard is written alone.
#[tokio::test]
async fn discard_changes_forgets_the_in_place_changes_of_tracked_documents() {
    let (_schema, b) = builder("discard_dirty");
    let store = ok(b.document::<Counter>().build().await);
    let id = "c".to_owned();
    let original = Counter {
        id: id.clone(),
        name: "a".into(),
        n: 1,
    };
    let mut w = store.lightweight_session();
    ok(w.store(original.clone()));
    ok(w.save_changes().await);

    let mut d = store.dirty_tracked_session();
    let doc = ok(d.load::<Counter>(&id).await).expect("stored");
    doc.n = 2;
    doc.name = "discarded".into();
    d.discard_changes();
    assert_eq!(
        d.get_mut::<Counter>(&id).map(|c| c.n),
        Some(1),
        "the session's copy is undone"
    );
    ok(d.save_changes().await);
    assert_eq!(
        stored_counter(&store, &id).await,
        Some(original.clone()),
        "the discarded change is not written"
    );
    let revision = ok(store.query_session().metadata::<Counter>(&id).await)
        .expect("stored")
        .version;
    assert_eq!(revision, 1, "nothing was written");

    // A further change is detected against the stored state, and written without the
    // discarded one.
    if let Some(doc) = d.get_mut::<Counter>(&id) {
        doc.n = 3;
    }
    ok(d.save_changes().await);
    assert_eq!(
        stored_counter(&store, &id).await.map(|c| (c.name, c.n)),
        Some(("a".to_owned(), 3)),
        "the change after the discard is written, the discarded one is not"
    );
    // And only once.
    ok(d.save_changes().await);
    let revision = ok(store.query_session().metadata::<Counter>(&id).await)
        .expect("stored")
        .version;
    assert_eq!(revision, 2);
}

/// A tracked document that cannot be serialized fails the save with
/// [`Error::Serialize`] naming its type and id, and nothing of the save is written. It
/// stays tracked: fixed in place, the next save writes it; discarded, it goes back to
/// its last saved state and later saves commit.
#[tokio::test]
async fn an_unserializable_tracked_document_fails_its_save_until_fixed_or_discarded() {
    let (_schema, b) = builder("discard_unserializable");
    let store = ok(b.document::<Fragile>().document::<Counter>().build().await);
    let id = "fragile-7".to_owned();
    let original = Fragile {
        id: id.clone(),
        poisoned: false,
        n: 1,
    };
    let mut w = store.lightweight_session();
    ok(w.store(original.clone()));
    ok(w.save_changes().await);
    let counter = |id: &str| Counter {
        id: id.into(),
        name: "x".into(),
        n: 0,
    };

    let mut d = store.dirty_tracked_session();
    let doc = ok(d.load::<Fragile>(&id).await).expect("stored");
    doc.poisoned = true;
    doc.n = 2;
    ok(d.store(counter("queued")));
    let failed = d.save_changes().await;
    match &failed {
        Err(Error::Serialize {
            document_type, id, ..
        }) => {
            assert_eq!(*document_type, <Fragile as Document>::DOCUMENT_TYPE);
            assert_eq!(id, "fragile-7");
        }
        other => panic!("expected a serialize error, got {other:?}"),
    }
    let message = failed.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains(<Fragile as Document>::DOCUMENT_TYPE) && message.contains("fragile-7"),
        "the message names the type and id: {message}"
    );
    assert_eq!(
        stored_counter(&store, "queued").await,
        None,
        "nothing of the failed save is written"
    );
    assert_eq!(stored_fragile(&store, &id).await, Some(original.clone()));

    // Still tracked, still failing: fixed in place, it is written.
    ok(d.store(counter("second")));
    assert!(matches!(
        d.save_changes().await,
        Err(Error::Serialize { .. })
    ));
    assert_eq!(stored_counter(&store, "second").await, None);
    if let Some(doc) = d.get_mut::<Fragile>(&id) {
        doc.poisoned = false;
    }
    ok(d.save_changes().await);
    assert_eq!(stored_fragile(&store, &id).await.map(|f| f.n), Some(2));

    // Poisoned again, then discarded: it is undone, and the session's later saves commit.
    if let Some(doc) = d.get_mut::<Fragile>(&id) {
        doc.poisoned = true;
        doc.n = 3;
    }
    assert!(matches!(
        d.save_changes().await,
        Err(Error::Serialize { .. })
    ));
    d.discard_changes();
    ok(d.store(counter("after")));
    ok(d.save_changes().await);
    assert_eq!(
        stored_counter(&store, "after").await,
        Some(counter("after"))
    );
    let held = stored_fragile(&store, &id).await;
    assert_eq!(
        held.as_ref().map(|f| f.n),
        Some(2),
        "the poisoned state is not written"
    );
    // The session's copy is the stored document again.
    let reloaded = ok(d.load::<Fragile>(&id).await).cloned();
    assert_eq!(reloaded, held);
}

/// `discard_changes` drops a queued exclusive append, but the transaction that holds the
/// stream's lock stays open until the next `save_changes`, which commits nothing else
/// and releases it.
#[tokio::test]
async fn discard_changes_keeps_an_exclusive_lock_until_the_next_save() {
    let (_schema, b) = builder("discard_exclusive");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_millis(300))
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [started("x")]));
    ok(s.save_changes().await);

    let mut holder = store.dirty_tracked_session();
    ok(holder
        .events()
        .append_exclusive(stream, [task("discarded")])
        .await);
    holder.discard_changes();
    assert_eq!(holder.pending_changes(), 0);

    let mut waiter = store.lightweight_session();
    let locked = waiter
        .events()
        .append_exclusive(stream, [task("waiter")])
        .await;
    assert!(
        matches!(locked, Err(Error::StreamLocked { .. })),
        "the lock is still held after the discard: {locked:?}"
    );

    ok(holder.save_changes().await);
    ok(waiter
        .events()
        .append_exclusive(stream, [task("waiter")])
        .await);
    ok(waiter.save_changes().await);
    let titles: Vec<String> = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await)
    .iter()
    .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
    .collect();
    assert_eq!(titles, ["waiter"], "the discarded append is not written");
}
