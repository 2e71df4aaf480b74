//! The event store: starting and appending to streams, reading them back with metadata,
//! archiving and deleting, event type names, one transaction with documents.

mod common;

use common::events::*;
use common::{builder, counted_builder, ok};
use marten::prelude::*;
use marten::{RejectionKind, UnknownEvents};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct Board {
    id: Uuid,
    title: String,
}

#[tokio::test]
async fn start_append_and_fetch_with_metadata() {
    let (_schema, b) = builder("ev_roundtrip");
    let store = ok(b.event::<ProjectStarted>().build().await);
    let project = Uuid::now_v7();
    let mut s = store.lightweight_session();
    s.set_correlation_id(Some("corr-1".into()));
    s.set_header("user", "ann");
    ok(s.events().start_stream(project, [started("Apollo")]));
    ok(s.events().append(project, [task("design"), task("build")]));
    ok(s.events().append(
        project,
        [PendingEvent::new(finished("design"))
            .with_causation_id("cmd-7")
            .with_header("ip", "10.0.0.1")
            .with_correlation_id("corr-own")],
    ));
    ok(s.save_changes().await);

    let events = ok(s.events().fetch_stream(project).await);
    assert_eq!(events.len(), 4);
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let seqs: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        events[0].data_as::<ProjectStarted>(),
        Some(&started("Apollo"))
    );
    assert_eq!(
        events[1]
            .data_as::<TaskRecorded>()
            .map(|t| t.title.as_str()),
        Some("design")
    );
    assert_eq!(events[3].event_type, "task_finished");
    assert!(events
        .iter()
        .all(|e| e.stream_id == StreamId::Uuid(project)));
    assert_eq!(events[0].correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(events[0].causation_id, None);
    assert_eq!(events[0].headers, Some(serde_json::json!({"user": "ann"})));
    assert_eq!(events[3].correlation_id.as_deref(), Some("corr-own"));
    assert_eq!(events[3].causation_id.as_deref(), Some("cmd-7"));
    assert_eq!(
        events[3].headers,
        Some(serde_json::json!({"user": "ann", "ip": "10.0.0.1"}))
    );
    assert!(events.iter().all(|e| e.transaction_id > 0));

    let state = ok(s.events().fetch_stream_state(project).await).expect("stream");
    assert_eq!(state.version, 4);
    assert!(!state.archived);

    // By version and by time.
    let upto2 = ok(s
        .events()
        .fetch_stream_with(project, StreamRange::all().up_to_version(2))
        .await);
    assert_eq!(upto2.len(), 2);
    let from3 = ok(s
        .events()
        .fetch_stream_with(project, StreamRange::all().from_version(3))
        .await);
    assert_eq!(from3.iter().map(|e| e.version).collect::<Vec<_>>(), [3, 4]);
    let before = ok(s
        .events()
        .fetch_stream_with(
            project,
            StreamRange::all().up_to_time(events[0].timestamp - time::Duration::seconds(1)),
        )
        .await);
    assert!(before.is_empty());
    let since = ok(s
        .events()
        .fetch_stream_with(project, StreamRange::all().from_time(events[0].timestamp))
        .await);
    assert_eq!(since.len(), 4);
}

#[tokio::test]
async fn event_type_names_are_stable_and_overridable() {
    assert_eq!(<TaskRecorded as marten::Event>::EVENT_TYPE, "task_recorded");
    assert_eq!(
        <ProjectCompleted as marten::Event>::EVENT_TYPE,
        "project_done"
    );
}

#[tokio::test]
async fn unknown_event_types_are_a_typed_error_or_skipped() {
    let (schema, b) = builder("ev_unknown");
    let store = ok(b.build().await);
    let project = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(project, [started("x")]));
    ok(s.events().append(project, [task("a")]));
    ok(s.save_changes().await);
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_events SET type = 'renamed_away' WHERE version = 2",
            &[],
        )
        .await
        .expect("rename");
    let seq: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT seq_id FROM mt_events WHERE version = 2", &[])
        .await
        .expect("seq")
        .get(0);
    let err = s
        .events()
        .fetch_stream(project)
        .await
        .expect_err("unknown type");
    match &err {
        marten::Error::UnknownEventType {
            event_type,
            sequence,
        } => {
            assert_eq!(event_type, "renamed_away");
            assert_eq!(*sequence, seq);
        }
        other => panic!("wrong error {other}"),
    }
    let skipping = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .event::<ProjectStarted>()
        .unknown_events(UnknownEvents::Skip)
        .build()
        .await);
    let events = ok(skipping
        .lightweight_session()
        .events()
        .fetch_stream(project)
        .await);
    assert_eq!(events.len(), 1);
    assert!(events[0].is::<ProjectStarted>());

    // A stored event that no longer deserializes names its type and sequence.
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_events SET data = '{\"name\": 5}' WHERE version = 1",
            &[],
        )
        .await
        .expect("corrupt");
    let err = skipping
        .lightweight_session()
        .events()
        .fetch_stream(project)
        .await
        .expect_err("bad json");
    assert!(
        matches!(err, marten::Error::DeserializeEvent { ref event_type, .. } if event_type == "project_started"),
        "{err}"
    );
}

#[tokio::test]
async fn zero_event_appends_archive_and_delete() {
    let (_schema, b) = builder("ev_archive");
    let store = ok(b.build().await);
    let project = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream(project, [started("p"), ProjectStarted { name: "q".into() }]));
    ok(s.save_changes().await);
    ok(s.events().append(project, Vec::<TaskRecorded>::new()));
    ok(s.save_changes().await);
    assert_eq!(
        ok(s.events().fetch_stream_state(project).await)
            .expect("s")
            .version,
        2
    );
    ok(s.events()
        .append_expected(project, 2, Vec::<TaskRecorded>::new()));
    ok(s.save_changes().await);
    assert_eq!(
        ok(s.events().fetch_stream_state(project).await)
            .expect("s")
            .version,
        2
    );

    // A stream cannot be started with no events: refused at once, nothing created.
    let empty = Uuid::now_v7();
    let refused = s.events().start_stream(empty, Vec::<ProjectStarted>::new());
    assert!(
        matches!(&refused, Err(marten::Error::InvalidInput { field, .. }) if field == "events"),
        "{refused:?}"
    );
    ok(s.save_changes().await);
    assert!(ok(s.events().fetch_stream_state(empty).await).is_none());

    ok(s.events().archive_stream(project));
    ok(s.save_changes().await);
    assert!(ok(s.events().fetch_stream(project).await).is_empty());
    let archived = ok(s
        .events()
        .fetch_stream_with(project, StreamRange::all().including_archived())
        .await);
    assert_eq!(archived.len(), 2);
    assert!(archived.iter().all(|e| e.archived));
    assert!(
        ok(s.events().fetch_stream_state(project).await)
            .expect("s")
            .archived
    );
    ok(s.events().append(project, [task("late")]));
    let err = s.save_changes().await.expect_err("archived");
    assert_eq!(err.rejections()[0].kind, RejectionKind::StreamArchived);
    let err = s
        .events()
        .append_optimistic(project, [task("late")])
        .await
        .expect_err("archived");
    assert_eq!(err.rejections()[0].kind, RejectionKind::StreamArchived);
    assert_eq!(
        ok(s.events().fetch_stream_state(project).await)
            .expect("s")
            .version,
        2,
        "never goes down or up"
    );

    ok(s.events().delete_stream(project));
    ok(s.save_changes().await);
    assert!(ok(s.events().fetch_stream_state(project).await).is_none());
    assert!(ok(s
        .events()
        .fetch_stream_with(project, StreamRange::all().including_archived())
        .await)
    .is_empty());
}

#[tokio::test]
async fn string_stream_ids() {
    let (_schema, b) = builder("ev_string_ids");
    let store = ok(b.stream_identity(StreamIdentity::String).build().await);
    let mut s = store.lightweight_session();
    ok(s.events().start_stream("project-'1'", [started("x")]));
    ok(s.events().append("project-'1'", [task("y")]));
    ok(s.save_changes().await);
    let events = ok(s.events().fetch_stream("project-'1'").await);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].stream_id, StreamId::String("project-'1'".into()));
    let err = s
        .events()
        .append(Uuid::now_v7(), [task("z")])
        .expect_err("wrong kind");
    assert!(
        matches!(err, marten::Error::InvalidStreamId { .. }),
        "{err}"
    );
    let err = s.events().append("", [task("z")]).expect_err("empty");
    assert!(
        matches!(err, marten::Error::InvalidStreamId { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn documents_and_events_commit_together_or_not_at_all() {
    let (schema, b) = builder("ev_with_docs");
    let store = ok(b.document::<Board>().build().await);
    let board = Board {
        id: Uuid::now_v7(),
        title: "b".into(),
    };
    let mut s = store.lightweight_session();
    ok(s.store(board.clone()));
    let project = Uuid::now_v7();
    ok(s.events().start_stream(project, [started("with docs")]));
    ok(s.save_changes().await);
    assert_eq!(ok(s.events().fetch_stream(project).await).len(), 1);

    // A stale document write rolls back the append of the same save.
    let mut other = store.lightweight_session();
    ok(other.store(Board {
        title: "moved".into(),
        ..board.clone()
    }));
    ok(other.save_changes().await);
    ok(s.store(Board {
        title: "stale".into(),
        ..board.clone()
    }));
    ok(s.events().append(project, [task("lost with the batch")]));
    let err = s.save_changes().await.expect_err("stale");
    assert_eq!(err.rejections().len(), 1);
    assert_eq!(ok(s.events().fetch_stream(project).await).len(), 1);

    // A rejected append rolls back the documents of the same save.
    let fresh = Board {
        id: Uuid::now_v7(),
        title: "never".into(),
    };
    ok(s.store(fresh.clone()));
    ok(s.events().start_stream(project, [started("again")]));
    let err = s.save_changes().await.expect_err("exists");
    assert_eq!(err.rejections()[0].kind, RejectionKind::StreamExists);
    let n: i64 = schema
        .raw_client()
        .await
        .query_one(
            "SELECT count(*) FROM mt_doc_board WHERE id = $1",
            &[&fresh.id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

/// Every kind of append is one round trip, alone and together with documents (counted
/// by a proxy between the store and the server, after the statements are prepared).
#[tokio::test]
async fn appends_are_one_round_trip() {
    let (_schema, proxy, b) = counted_builder("ev_round_trip").await;
    let store = ok(b.document::<Board>().build().await);
    let mut s = store.lightweight_session();
    // Twice: the first pass prepares the statements, the second counts.
    for pass in 0..2 {
        let id = Uuid::now_v7();
        let mut trips = Vec::new();
        let mut measure = async |s: &mut LightweightSession, what: &str| {
            let before = proxy.round_trips();
            ok(s.save_changes().await);
            trips.push((what.to_owned(), proxy.round_trips() - before));
        };
        ok(s.events().start_stream(id, [started("p"), started("q")]));
        measure(&mut s, "start").await;
        ok(s.events().append(id, [task("one")]));
        measure(&mut s, "append one").await;
        ok(s.events().append(id, [task("a"), task("b"), task("c")]));
        measure(&mut s, "append three").await;
        ok(s.events().append_expected(id, 6, [task("d")]));
        measure(&mut s, "append expected").await;
        ok(s.store(Board {
            id: Uuid::now_v7(),
            title: format!("{pass}"),
        }));
        ok(s.events().append(id, [task("e")]));
        ok(s.events().append(Uuid::now_v7(), [task("f")]));
        measure(&mut s, "two appends and a document").await;
        if pass == 1 {
            for (what, n) in &trips {
                assert_eq!(*n, 1, "{what}: {n} round trips");
            }
        }
        let events = ok(s.events().fetch_stream(id).await);
        assert_eq!(events.len(), 8, "everything was written");
    }
}

/// Each append saved alone (the one-statement path): one without metadata, one with
/// headers, correlation and causation ids, and expected-version appends of both kinds,
/// rejected at a stale version and accepted at the right one; the session's tenant is
/// recorded on every event.
#[tokio::test]
async fn lone_appends_with_and_without_metadata() {
    let (_schema, b) = builder("ev_lone_meta");
    let store = ok(b.event::<ProjectStarted>().build().await);
    let project = Uuid::now_v7();
    let mut s = ok(store.lightweight_session_for("acme"));
    ok(s.events().append(project, [started("Bare")]));
    ok(s.save_changes().await);
    ok(s.events().append(
        project,
        [PendingEvent::new(task("dressed"))
            .with_causation_id("cmd-1")
            .with_header("ip", "10.0.0.2")
            .with_correlation_id("corr-2")],
    ));
    ok(s.save_changes().await);
    // Stale expected versions, bare and with metadata: nothing written.
    ok(s.events().append_expected(project, 1, [task("stale bare")]));
    let err = s.save_changes().await.expect_err("stale");
    assert!(
        matches!(
            err.rejections()[0].kind,
            RejectionKind::UnexpectedStreamVersion { .. }
        ),
        "{err:?}"
    );
    ok(s.events().append_expected(
        project,
        1,
        [PendingEvent::new(task("stale dressed")).with_causation_id("cmd-2")],
    ));
    assert!(s.save_changes().await.is_err());
    // The right version, bare.
    ok(s.events().append_expected(project, 2, [task("third")]));
    ok(s.save_changes().await);

    let events = ok(s.events().fetch_stream(project).await);
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(events[0].correlation_id, None);
    assert_eq!(events[0].causation_id, None);
    assert_eq!(events[0].headers, None);
    assert_eq!(events[1].correlation_id.as_deref(), Some("corr-2"));
    assert_eq!(events[1].causation_id.as_deref(), Some("cmd-1"));
    assert_eq!(
        events[1].headers,
        Some(serde_json::json!({"ip": "10.0.0.2"}))
    );
    assert_eq!(
        events[2]
            .data_as::<TaskRecorded>()
            .map(|t| t.title.as_str()),
        Some("third")
    );
    assert!(
        events
            .iter()
            .all(|e| e.tenant.as_ref().map(|t| t.as_str()) == Some("acme")),
        "{:?}",
        events.iter().map(|e| &e.tenant).collect::<Vec<_>>()
    );
}

/// Stream commands at their edges, with events of `tenancy`: archiving twice leaves the
/// stream as archived at its version, archiving a missing stream creates nothing,
/// starting one stream twice in a save is refused (naming it) with nothing written, and a
/// start and an append in one save both land.
async fn stream_commands_at_their_edges(tenancy: marten::Tenancy, label: &str) {
    let (_schema, b) = builder(label);
    let store = ok(b.events_tenancy(tenancy).build().await);
    let mut s = match tenancy {
        marten::Tenancy::Conjoined => ok(store.lightweight_session_for("red")),
        _ => store.lightweight_session(),
    };
    let p = Uuid::now_v7();
    ok(s.events().start_stream(p, [started("p")]));
    ok(s.save_changes().await);
    for _ in 0..2 {
        ok(s.events().archive_stream(p));
        ok(s.save_changes().await);
        let state = ok(s.events().fetch_stream_state(p).await).expect("the stream");
        assert_eq!((state.version, state.archived), (1, true));
    }
    let missing = Uuid::now_v7();
    ok(s.events().archive_stream(missing));
    ok(s.save_changes().await);
    assert!(ok(s.events().fetch_stream_state(missing).await).is_none());

    let twice = Uuid::now_v7();
    ok(s.events().start_stream(twice, [started("a")]));
    ok(s.events().start_stream(twice, [started("b")]));
    let err = s.save_changes().await.expect_err("started twice");
    let rejections = err.rejections();
    assert_eq!(rejections.len(), 1, "{err}");
    assert_eq!(rejections[0].kind, RejectionKind::StreamExists);
    assert_eq!(rejections[0].id, marten::IdKey::Uuid(twice), "{err}");
    assert!(ok(s.events().fetch_stream_state(twice).await).is_none());

    let both = Uuid::now_v7();
    ok(s.events().start_stream(both, [started("a")]));
    ok(s.events().append(both, [task("t")]));
    ok(s.save_changes().await);
    assert_eq!(ok(s.events().fetch_stream(both).await).len(), 2);
}

#[tokio::test]
async fn stream_commands_at_their_edges_single() {
    stream_commands_at_their_edges(marten::Tenancy::Single, "ev_stream_edges").await;
}

#[tokio::test]
async fn stream_commands_at_their_edges_conjoined() {
    stream_commands_at_their_edges(marten::Tenancy::Conjoined, "ev_stream_edges_conj").await;
}
