//! Edges of inline single-stream aggregates and of in-memory events:
//!
//! - a deleted stream's inline aggregate document is deleted in the delete's transaction
//!   (as live aggregates' snapshots are): no read serves it, and the stream starts again
//!   from version 0, by `write_to_aggregate` or a plain start; a conjoined aggregate's
//!   document of the deleting tenant only, with conjoined events;
//! - an inline aggregate of a conjoined document type over single-tenant events (one
//!   stream every tenant shares, a document per tenant folded only from its own appends)
//!   is refused at build, naming the type;
//! - an event appended under an upcaster's old name reaches inline projections (single
//!   and multi-stream) and the command cache upcast, as reads give it back: the projected
//!   documents equal the live fold, and a decision on the cached state sees the upcast
//!   event.

mod common;

use common::events::*;
use common::{builder, ok};
use marten::prelude::*;
use marten::{DocumentStoreBuilder, Tenancy};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// A deleted stream's inline aggregate.
// ---------------------------------------------------------------------------------------

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Board {
    id: Uuid,
    version: i64,
    name: String,
    titles: Vec<String>,
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
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[document(tenancy = "conjoined")]
struct TenantBoard {
    id: Uuid,
    version: i64,
    name: String,
    titles: Vec<String>,
}

#[marten::apply]
impl TenantBoard {
    fn create(e: &ProjectStarted) -> Self {
        TenantBoard {
            name: e.name.clone(),
            ..TenantBoard::default()
        }
    }

    fn apply(&mut self, e: &TaskRecorded) {
        self.titles.push(e.title.clone());
    }
}

/// Starts stream `id` with a project and two tasks (version 3) and deletes it.
async fn start_and_delete(store: &DocumentStore, id: Uuid) {
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("old")]));
    ok(s.events().append(id, [task("a"), task("b")]));
    ok(s.save_changes().await);
    let board = ok(s.events().fetch_latest::<Board>(id).await).map(|b| b.version);
    assert_eq!(board, Some(3));
    ok(s.events().delete_stream(id));
    ok(s.save_changes().await);
}

#[tokio::test]
async fn a_deleted_streams_inline_aggregate_is_gone_and_the_stream_starts_again() {
    let (_schema, b) = builder("inline_edges_delete");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    start_and_delete(&store, id).await;

    let mut s = store.lightweight_session();
    assert_eq!(ok(s.events().fetch_latest::<Board>(id).await), None);
    assert_eq!(ok(s.events().aggregate_stream::<Board>(id).await), None);
    assert_eq!(ok(store.query_session().load::<Board>(&id).await), None);
    let writing = ok(s.events().fetch_for_writing::<Board>(id).await);
    assert_eq!((writing.version(), writing.state()), (0, None));
    drop(writing);

    // A command decides on nothing, and starts the stream again from version 0.
    let mut s = store.lightweight_session();
    let version = s
        .events()
        .write_to_aggregate::<Board, _, marten::Error>(id, |board| {
            assert_eq!(board, None, "decided on the deleted stream's document");
            Ok(vec![started("new")])
        })
        .await;
    assert_eq!(ok(version), 1);
    let mut s = store.lightweight_session();
    let board = ok(s.events().fetch_latest::<Board>(id).await);
    assert_eq!(
        board.map(|b| (b.version, b.name, b.titles)),
        Some((1, "new".into(), vec![]))
    );

    // A plain start after a delete, and a plain append to it.
    let other = Uuid::now_v7();
    start_and_delete(&store, other).await;
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(other, [started("again")]));
    ok(s.save_changes().await);
    ok(s.events().append(other, [task("c")]));
    ok(s.save_changes().await);
    let board = ok(store.query_session().load::<Board>(&other).await);
    assert_eq!(
        board.map(|b| (b.version, b.name, b.titles)),
        Some((2, "again".into(), vec!["c".into()]))
    );
}

/// An append and the stream's delete in one save: the delete takes the aggregate's
/// document, and the append's events (gone when the save commits) project nothing after
/// it, with the aggregate's document cached by an earlier save or not.
#[tokio::test]
async fn an_append_and_a_delete_of_its_stream_in_one_save_leave_no_document() {
    let (schema, b) = builder("inline_edges_append_delete");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    for cached in [true, false] {
        let id = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(id, [started("doomed")]));
        ok(s.save_changes().await);
        // Uncached: a store of its own on the schema, whose cache never saw the stream.
        let saving = if cached {
            store.clone()
        } else {
            ok(common::builder_on(&schema)
                .projection::<Board>(Lifecycle::Inline)
                .build()
                .await)
        };
        let mut s = saving.lightweight_session();
        ok(s.events().append(id, [task("last")]));
        ok(s.events().delete_stream(id));
        ok(s.save_changes().await);
        assert_eq!(
            ok(store.query_session().load::<Board>(&id).await),
            None,
            "cached: {cached}"
        );
        let mut s = store.lightweight_session();
        assert_eq!(ok(s.events().fetch_latest::<Board>(id).await), None);
        assert!(ok(s.events().fetch_stream(id).await).is_empty());
    }
}

/// A delete of a stream and a plain append to it in one save: the append starts the
/// stream anew, and its aggregate is folded from nothing (it was planned from the state
/// before the delete and rejected on every attempt).
#[tokio::test]
async fn a_delete_then_an_append_in_one_save_start_the_stream_anew() {
    let (_schema, b) = builder("inline_edges_delete_append");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("old")]));
    ok(s.events().append(id, [task("a")]));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    ok(s.events().delete_stream(id));
    ok(s.events().append(id, [started("new")]));
    ok(s.events().append(id, [task("b")]));
    ok(s.save_changes().await);
    let board = ok(store.query_session().load::<Board>(&id).await);
    assert_eq!(
        board.map(|b| (b.version, b.name, b.titles)),
        Some((2, "new".into(), vec!["b".into()]))
    );
    let mut s = store.lightweight_session();
    assert_eq!(ok(s.events().fetch_stream(id).await).len(), 2);
}

#[tokio::test]
async fn a_session_that_held_the_document_forgets_it_with_the_stream() {
    let (_schema, b) = builder("inline_edges_identity");
    let store = ok(b.projection::<Board>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.identity_session();
    ok(s.events().start_stream(id, [started("held")]));
    ok(s.save_changes().await);
    assert!(ok(s.load::<Board>(&id).await).is_some());
    ok(s.events().delete_stream(id));
    ok(s.save_changes().await);
    assert_eq!(ok(s.load::<Board>(&id).await), None);
}

#[tokio::test]
async fn a_deleted_stream_takes_its_tenants_conjoined_document_only() {
    let (_schema, b) = builder("inline_edges_delete_tenant");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<TenantBoard>(Lifecycle::Inline)
        .build()
        .await);
    let id = Uuid::now_v7();
    for tenant in ["acme", "globex"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events().start_stream(id, [started(tenant)]));
        ok(s.save_changes().await);
    }
    let mut s = ok(store.lightweight_session_for("acme"));
    ok(s.events().delete_stream(id));
    ok(s.save_changes().await);

    let mut acme = ok(store.lightweight_session_for("acme"));
    assert_eq!(
        ok(acme.events().fetch_latest::<TenantBoard>(id).await),
        None
    );
    let mut globex = ok(store.lightweight_session_for("globex"));
    let kept = ok(globex.events().fetch_latest::<TenantBoard>(id).await);
    assert_eq!(
        kept.map(|b| (b.version, b.name)),
        Some((1, "globex".into()))
    );

    // Acme's stream starts again from nothing.
    ok(acme.events().start_stream(id, [started("acme again")]));
    ok(acme.save_changes().await);
    let board = ok(acme.events().fetch_latest::<TenantBoard>(id).await);
    assert_eq!(
        board.map(|b| (b.version, b.name)),
        Some((1, "acme again".into()))
    );
}

// ---------------------------------------------------------------------------------------
// A conjoined inline aggregate over single-tenant events.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_conjoined_inline_aggregate_over_single_tenant_events_is_refused() {
    let (_schema, b) = builder("inline_edges_tenancy");
    let refused = b.projection::<TenantBoard>(Lifecycle::Inline).build().await;
    match refused {
        Err(marten::Error::Configuration(message)) => {
            for part in [std::any::type_name::<TenantBoard>(), "events_tenancy"] {
                assert!(message.contains(part), "{part} in {message}");
            }
        }
        Err(other) => panic!("expected Configuration, got {other}"),
        Ok(_) => panic!("a conjoined inline aggregate over single-tenant events was built"),
    }

    // What still builds: conjoined events; a single-tenant aggregate; a live conjoined
    // aggregate, snapshotted or not (every snapshot is the fold of the whole stream).
    type Configure = fn(DocumentStoreBuilder) -> DocumentStoreBuilder;
    let valid: [(&str, Configure); 4] = [
        ("conjoined events", |b| {
            b.events_tenancy(Tenancy::Conjoined)
                .projection::<TenantBoard>(Lifecycle::Inline)
        }),
        ("single-tenant aggregate", |b| {
            b.projection::<Board>(Lifecycle::Inline)
        }),
        ("live", |b| b.projection::<TenantBoard>(Lifecycle::Live)),
        ("snapshotted", |b| {
            b.projection::<TenantBoard>(Lifecycle::Live)
                .snapshot::<TenantBoard>(2)
        }),
    ];
    for (label, configure) in valid {
        let (_schema, b) = builder("inline_edges_tenancy_ok");
        if let Err(e) = configure(b).build().await {
            panic!("{label}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Events appended under an upcaster's old name.
// ---------------------------------------------------------------------------------------

/// The former shape, still appended by old code.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "greeting_said")]
struct GreetingSaidV1 {
    value: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "greeting_said_v2")]
struct GreetingSaid {
    value: String,
    loud: bool,
}

fn said(value: &str, loud: bool) -> GreetingSaid {
    GreetingSaid {
        value: value.into(),
        loud,
    }
}

/// The inline aggregate.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Greetings {
    id: Uuid,
    version: i64,
    said: Vec<String>,
}

#[marten::apply]
impl Greetings {
    fn apply(&mut self, e: &GreetingSaid) {
        self.said
            .push(format!("{}{}", e.value, if e.loud { "!" } else { "" }));
    }
}

/// The one document of the multi-stream projection.
const LOG: Uuid = Uuid::from_u128(0x4680);

/// The multi-stream projection: every greeting of every stream.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct GreetingLog {
    id: Uuid,
    said: Vec<String>,
}

#[marten::apply]
impl GreetingLog {
    fn identities(_e: &GreetingSaid) -> Vec<Uuid> {
        vec![LOG]
    }
    fn create(e: &GreetingSaid) -> Self {
        GreetingLog {
            id: LOG,
            said: vec![e.value.clone()],
        }
    }
    fn apply(&mut self, e: &GreetingSaid) {
        self.said.push(e.value.clone());
    }
}

/// A live aggregate: commands on it decide on the cache's state.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Greeted {
    id: Uuid,
    version: i64,
    said: Vec<String>,
}

#[marten::apply]
impl Greeted {
    fn apply(&mut self, e: &GreetingSaid) {
        self.said.push(e.value.clone());
    }
}

fn greeting_upcaster(b: DocumentStoreBuilder) -> DocumentStoreBuilder {
    b.upcast_from::<GreetingSaidV1, GreetingSaid, _>("greeting_said", |old| GreetingSaid {
        value: old.value,
        loud: false,
    })
}

#[tokio::test]
async fn an_old_type_appended_under_the_upcasters_name_is_projected_upcast() {
    let (_schema, b) = builder("inline_edges_upcast");
    let store = ok(greeting_upcaster(b)
        .projection::<Greetings>(Lifecycle::Inline)
        .multi_stream_projection::<GreetingLog>(Lifecycle::Inline)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let hello = GreetingSaidV1 {
        value: "hello".into(),
    };
    ok(s.events().start_stream(id, [hello]));
    ok(s.save_changes().await);
    ok(s.events().append(id, [said("hi", true)]));
    ok(s.save_changes().await);

    let expected = vec!["hello".to_owned(), "hi!".to_owned()];
    let stored = ok(store.query_session().load::<Greetings>(&id).await);
    assert_eq!(
        stored.map(|g| (g.version, g.said)),
        Some((2, expected.clone()))
    );
    let mut s = store.lightweight_session();
    let live: Option<Greetings> = ok(s.events().aggregate_stream(id).await);
    assert_eq!(live.map(|g| (g.version, g.said)), Some((2, expected)));
    let log = ok(store.query_session().load::<GreetingLog>(&LOG).await);
    assert_eq!(log.map(|l| l.said), Some(vec!["hello".into(), "hi".into()]));
}

#[tokio::test]
async fn a_command_decides_on_the_upcast_event_it_appended_before() {
    let (_schema, b) = builder("inline_edges_upcast_command");
    let store = ok(greeting_upcaster(b).build().await);
    let id = Uuid::now_v7();
    // The first command starts the stream with the old shape: the store's cache keeps
    // the state a read of it gives.
    let first = store
        .lightweight_session()
        .events()
        .write_to_aggregate::<Greeted, _, marten::Error>(id, |g| {
            assert_eq!(g, None);
            Ok(vec![GreetingSaidV1 {
                value: "hello".into(),
            }])
        })
        .await;
    assert_eq!(ok(first), 1);
    // The second decides on the greeting the first appended.
    let second = store
        .lightweight_session()
        .events()
        .write_to_aggregate::<Greeted, _, marten::Error>(id, |g| {
            let greeted = g.is_some_and(|g| g.said == ["hello"]);
            Ok(vec![said(if greeted { "again" } else { "first" }, false)])
        })
        .await;
    assert_eq!(ok(second), 2);
    let mut s = store.lightweight_session();
    let live: Option<Greeted> = ok(s.events().aggregate_stream(id).await);
    assert_eq!(
        live.map(|g| g.said),
        Some(vec!["hello".into(), "again".into()])
    );
}
