//! Session-level event scenarios carried over from JasperFx.Events' compliance suites
//! (`src/JasperFx.Events.ComplianceTests/Suites` of JasperFx/jasperfx):
//! DocumentSessionEventsCompliance (a session's events accessor is the session's unit of
//! work), StringIdentitySingleStreamCompliance (single-stream aggregates over string-keyed
//! streams, persisted inline) and ActivityCorrelationCompliance (correlation and causation
//! ids, mapped onto the session's explicit metadata API: marten-rs seeds nothing from an
//! ambient trace context). Each test names the suite facts it ports.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::RejectionKind;
use serde::{Deserialize, Serialize};
use serde_json::json;

// ---------------------------------------------------------------------------------------
// The kiln domain (DocumentSessionEventsCompliance).

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct KilnFired {
    site: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct KilnCooled {
    degrees_per_hour: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Widget {
    id: Uuid,
    name: String,
}

fn fired(site: &str) -> KilnFired {
    KilnFired { site: site.into() }
}

/// A store on string-keyed streams knowing the kiln events and the widget document.
async fn kiln_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .event::<KilnFired>()
        .event::<KilnCooled>()
        .document::<Widget>()
        .build()
        .await);
    (schema, store)
}

fn kiln_key() -> String {
    format!("kiln-{}", Uuid::now_v7())
}

/// The kinds of a rejected save, or a panic naming what came back instead.
fn rejected_kinds(r: marten::Result<()>) -> Vec<RejectionKind> {
    match r {
        Err(marten::Error::Rejected(rs)) => rs.into_iter().map(|r| r.kind).collect(),
        other => panic!("expected a rejected save, got {other:?}"),
    }
}

/// DocumentSessionEventsCompliance `a_writable_session_exposes_the_full_event_store_api` and
/// `appending_through_the_accessor_rides_the_session_unit_of_work`: a start through a
/// writing session's events is queued, not written (another session sees no stream),
/// is dropped with the session if never saved, and lands at version 1 with its recorded
/// type on save.
#[tokio::test]
async fn a_start_through_the_session_is_written_only_by_its_save() {
    let (_schema, store) = kiln_store("jses_uow").await;

    let dropped = kiln_key();
    {
        let mut s = store.lightweight_session();
        ok(s.events()
            .start_stream_of("kiln", dropped.as_str(), [fired("West Ridge")]));
    }
    let mut probe = store.lightweight_session();
    assert!(ok(probe.events().fetch_stream_state(dropped.as_str()).await).is_none());

    let key = kiln_key();
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream_of("kiln", key.as_str(), [fired("North Ridge")]));
    assert!(
        ok(probe.events().fetch_stream_state(key.as_str()).await).is_none(),
        "a queued start is not visible before the save"
    );
    assert!(ok(probe.events().fetch_stream(key.as_str()).await).is_empty());
    assert!(
        ok(s.events().fetch_stream_state(key.as_str()).await).is_none(),
        "nor to reads of the session that queued it"
    );

    ok(s.save_changes().await);
    let state = ok(probe.events().fetch_stream_state(key.as_str()).await).expect("started");
    assert_eq!(state.id, StreamId::String(key.clone()));
    assert_eq!(state.version, 1);
    assert_eq!(state.aggregate_type.as_deref(), Some("kiln"));
    assert!(ok(probe.events().fetch_stream_state(dropped.as_str()).await).is_none());
}

/// DocumentSessionEventsCompliance `documents_and_events_written_through_one_session_commit_together`:
/// a document and a stream start of one save both land; when either half of a later save
/// is rejected (the stream already exists, or the document id is taken), neither half is
/// written.
#[tokio::test]
async fn documents_and_events_of_one_save_land_or_fail_together() {
    let (_schema, store) = kiln_store("jses_together").await;
    let key = kiln_key();
    let widget = Widget {
        id: Uuid::now_v7(),
        name: "Nacelle".into(),
    };
    let mut s = store.lightweight_session();
    ok(s.insert(widget.clone()));
    ok(s.events()
        .start_stream(key.as_str(), [fired("South Ridge")]));
    ok(s.save_changes().await);

    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Widget>(&widget.id).await), Some(widget.clone()));
    let mut probe = store.lightweight_session();
    let state = ok(probe.events().fetch_stream_state(key.as_str()).await).expect("stream");
    assert_eq!(state.version, 1);

    // The events half is rejected: the new document is not written either.
    let second = Widget {
        id: Uuid::now_v7(),
        name: "Spinner".into(),
    };
    ok(s.insert(second.clone()));
    ok(s.events().start_stream(key.as_str(), [fired("again")]));
    let kinds = rejected_kinds(s.save_changes().await);
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, RejectionKind::StreamExists)),
        "{kinds:?}"
    );
    assert_eq!(ok(q.load::<Widget>(&second.id).await), None);

    // The document half is rejected: the new stream is not started either.
    let other = kiln_key();
    ok(s.insert(Widget {
        id: widget.id,
        name: "duplicate".into(),
    }));
    ok(s.events()
        .start_stream(other.as_str(), [fired("East Ridge")]));
    let kinds = rejected_kinds(s.save_changes().await);
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, RejectionKind::AlreadyExists)),
        "{kinds:?}"
    );
    assert!(ok(probe.events().fetch_stream_state(other.as_str()).await).is_none());
    assert_eq!(ok(q.load::<Widget>(&widget.id).await), Some(widget));
    let state = ok(probe.events().fetch_stream_state(key.as_str()).await).expect("stream");
    assert_eq!(state.version, 1, "the rejected start appended nothing");
}

/// DocumentSessionEventsCompliance `the_accessor_reads_events_back_from_the_stream_it_appended`:
/// a start of two events of different types reads back, from another session, as those two
/// events in order, each decoded as its own type at versions 1 and 2.
#[tokio::test]
async fn a_started_stream_reads_back_its_events_in_order_and_type() {
    let (_schema, store) = kiln_store("jses_read_back").await;
    let key = kiln_key();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream_of(
        "kiln",
        key.as_str(),
        [
            PendingEvent::new(fired("East Ridge")),
            PendingEvent::new(KilnCooled {
                degrees_per_hour: 120,
            }),
        ],
    ));
    ok(s.save_changes().await);

    let mut reader = store.lightweight_session();
    let events = ok(reader.events().fetch_stream(key.as_str()).await);
    assert_eq!(events.len(), 2);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_ref()).collect();
    assert_eq!(types, ["kiln_fired", "kiln_cooled"]);
    assert_eq!(events[0].data_as::<KilnFired>(), Some(&fired("East Ridge")));
    assert!(events[0].data_as::<KilnCooled>().is_none());
    assert_eq!(
        events[1].data_as::<KilnCooled>(),
        Some(&KilnCooled {
            degrees_per_hour: 120
        })
    );
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2]);
    assert!(events
        .iter()
        .all(|e| e.stream_id == StreamId::String(key.clone())));
}

// ---------------------------------------------------------------------------------------
// The quest domain (StringIdentitySingleStreamCompliance).

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct QuestStarted {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MembersJoined {
    day: i32,
    location: String,
    members: Vec<String>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MembersDeparted {
    members: Vec<String>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ArrivedAtLocation {
    location: String,
    day: i32,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MonsterSlain {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct QuestEnded {
    name: String,
}

/// The suite's custom projection: its creation reads the stream key from the event's
/// metadata, and an ending event deletes it.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct QuestParty {
    id: String,
    version: i64,
    name: String,
    members: Vec<String>,
    location: Option<String>,
    monsters_slain: Vec<String>,
}

#[marten::apply]
impl QuestParty {
    fn create(e: &QuestStarted, meta: &EventEnvelope) -> Self {
        let id = match &meta.stream_id {
            StreamId::String(key) => key.clone(),
            other => format!("not a string key: {other:?}"),
        };
        QuestParty {
            id,
            version: 0,
            name: e.name.clone(),
            members: Vec::new(),
            location: None,
            monsters_slain: Vec::new(),
        }
    }

    fn apply(&mut self, e: &MembersJoined) {
        self.members.extend(e.members.iter().cloned());
        self.location = Some(e.location.clone());
    }

    fn apply(&mut self, e: &MembersDeparted) {
        self.members.retain(|m| !e.members.contains(m));
    }

    fn apply(&mut self, e: &ArrivedAtLocation) {
        self.location = Some(e.location.clone());
    }

    fn apply(&mut self, e: &MonsterSlain) {
        self.monsters_slain.push(e.name.clone());
    }

    fn should_delete(&self, _e: &QuestEnded) -> bool {
        true
    }
}

/// The suite's self-aggregating type: its creation leaves the id empty, so the stored id
/// can only come from the store.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct SelfQuest {
    id: String,
    version: i64,
    name: String,
    members: Vec<String>,
}

#[marten::apply]
impl SelfQuest {
    fn create(e: &QuestStarted) -> Self {
        SelfQuest {
            id: String::new(),
            version: 0,
            name: e.name.clone(),
            members: Vec::new(),
        }
    }

    fn apply(&mut self, e: &MembersJoined) {
        self.members.extend(e.members.iter().cloned());
    }
}

/// The self-aggregating shape again, as a live aggregate with a snapshot policy.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct SnapQuest {
    id: String,
    version: i64,
    name: String,
    members: Vec<String>,
}

#[marten::apply]
impl SnapQuest {
    fn create(e: &QuestStarted) -> Self {
        SnapQuest {
            id: String::new(),
            version: 0,
            name: e.name.clone(),
            members: Vec::new(),
        }
    }

    fn apply(&mut self, e: &MembersJoined) {
        self.members.extend(e.members.iter().cloned());
    }
}

/// String-keyed streams with `QuestParty` and `SelfQuest` both projected inline.
async fn quest_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .projection::<QuestParty>(Lifecycle::Inline)
        .projection::<SelfQuest>(Lifecycle::Inline)
        .build()
        .await);
    (schema, store)
}

fn quest_key() -> String {
    format!("quest-{}", Uuid::now_v7())
}

fn started(name: &str) -> PendingEvent {
    PendingEvent::new(QuestStarted { name: name.into() })
}

fn joined(location: &str, members: &[&str]) -> PendingEvent {
    PendingEvent::new(MembersJoined {
        day: 1,
        location: location.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    })
}

async fn party(store: &DocumentStore, key: &str) -> Option<QuestParty> {
    ok(store
        .query_session()
        .load::<QuestParty>(&key.to_owned())
        .await)
}

/// StringIdentitySingleStreamCompliance `custom_projection_creates_aggregate_on_start_stream`:
/// starting a string-keyed stream stores the projected document under the stream's key,
/// with the key its creation read from the event's metadata.
#[tokio::test]
async fn a_string_keyed_start_stores_the_projected_party_under_its_key() {
    let (_schema, store) = quest_store("jses_quest_start").await;
    let key = quest_key();
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream(key.as_str(), [started("Destroy the Ring")]));
    ok(s.save_changes().await);

    let p = party(&store, &key).await.expect("projected on start");
    assert_eq!(p.id, key);
    assert_eq!(p.name, "Destroy the Ring");
    assert_eq!(p.version, 1);
    assert!(p.members.is_empty() && p.location.is_none());
}

/// StringIdentitySingleStreamCompliance `custom_projection_applies_multiple_events`: every
/// event of the start is applied to the stored document, in order.
#[tokio::test]
async fn every_event_of_a_string_keyed_start_is_applied() {
    let (_schema, store) = quest_store("jses_quest_many").await;
    let key = quest_key();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        key.as_str(),
        [
            started("Fellowship"),
            joined("Rivendell", &["Aragorn", "Legolas", "Gimli"]),
        ],
    ));
    ok(s.save_changes().await);

    let p = party(&store, &key).await.expect("projected");
    assert_eq!(p.name, "Fellowship");
    assert_eq!(p.members, ["Aragorn", "Legolas", "Gimli"]);
    assert_eq!(p.location.as_deref(), Some("Rivendell"));
    assert_eq!(p.version, 2);
}

/// StringIdentitySingleStreamCompliance `custom_projection_updates_on_append`: appends in
/// later saves of the same session update the stored document (location moved, monster
/// recorded, a departed member removed) and its version follows the stream.
#[tokio::test]
async fn later_appends_to_a_string_keyed_stream_update_the_stored_party() {
    let (_schema, store) = quest_store("jses_quest_append").await;
    let key = quest_key();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        key.as_str(),
        [started("Adventure"), joined("Start", &["Hero", "Squire"])],
    ));
    ok(s.save_changes().await);

    ok(s.events().append(
        key.as_str(),
        [
            PendingEvent::new(ArrivedAtLocation {
                location: "Dungeon".into(),
                day: 2,
            }),
            PendingEvent::new(MonsterSlain {
                name: "Goblin".into(),
            }),
        ],
    ));
    ok(s.save_changes().await);
    ok(s.events().append(
        key.as_str(),
        [MembersDeparted {
            members: vec!["Squire".into()],
        }],
    ));
    ok(s.save_changes().await);

    let p = party(&store, &key).await.expect("projected");
    assert_eq!(p.location.as_deref(), Some("Dungeon"));
    assert_eq!(p.monsters_slain, ["Goblin"]);
    assert_eq!(p.members, ["Hero"]);
    assert_eq!((p.id.as_str(), p.version), (key.as_str(), 5));
    let live = ok(s
        .events()
        .aggregate_stream::<QuestParty>(key.as_str())
        .await);
    assert_eq!(
        live,
        Some(p),
        "the stored document is the fold of its stream"
    );
}

/// StringIdentitySingleStreamCompliance `custom_projection_should_delete_removes_aggregate`:
/// an ending event appended later removes the stored document (the stream and the other
/// projection's document stay).
#[tokio::test]
async fn an_ending_event_deletes_the_string_keyed_party() {
    let (_schema, store) = quest_store("jses_quest_delete").await;
    let key = quest_key();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        key.as_str(),
        [started("Doomed Quest"), joined("Start", &["Hero"])],
    ));
    ok(s.save_changes().await);
    assert!(party(&store, &key).await.is_some());

    ok(s.events().append(
        key.as_str(),
        [QuestEnded {
            name: "Doomed Quest".into(),
        }],
    ));
    ok(s.save_changes().await);

    assert_eq!(party(&store, &key).await, None);
    let count = ok(s.query::<QuestParty>().count().await);
    assert_eq!(count, 0, "the row is gone, not merely left behind");
    let other = ok(store.query_session().load::<SelfQuest>(&key).await).expect("kept");
    assert_eq!(other.members, ["Hero"]);
    let state = ok(s.events().fetch_stream_state(key.as_str()).await).expect("stream");
    assert_eq!(state.version, 3);
}

/// Follows from StringIdentitySingleStreamCompliance `custom_projection_should_delete_removes_aggregate`
/// (the ending event is one the other inline aggregate does not handle): a save that
/// appends only events an inline aggregate has no method for leaves its document as it
/// was (no read to plan it: the README's inline rule), and every read of the aggregate
/// (`aggregate_stream`, `fetch_latest`, `fetch_for_writing`) starts from that document and
/// applies the events after it, so it reads the stream's version.
#[tokio::test]
async fn an_append_of_unhandled_events_leaves_the_inline_document_and_reads_run_on() {
    let (_schema, store) = quest_store("jses_quest_unhandled").await;
    let key = quest_key();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        key.as_str(),
        [started("Long Quest"), joined("Start", &["Hero"])],
    ));
    ok(s.save_changes().await);
    ok(s.events().append(
        key.as_str(),
        [QuestEnded {
            name: "Long Quest".into(),
        }],
    ));
    ok(s.save_changes().await);

    let state = ok(s.events().fetch_stream_state(key.as_str()).await).expect("stream");
    assert_eq!(state.version, 3);
    let live = ok(s.events().aggregate_stream::<SelfQuest>(key.as_str()).await).expect("live");
    assert_eq!(live.version, 3, "the live fold counts the unhandled event");
    let latest = ok(s.events().fetch_latest::<SelfQuest>(key.as_str()).await).expect("latest");
    assert_eq!(latest, live);
    let writing = ok(s
        .events()
        .fetch_for_writing::<SelfQuest>(key.as_str())
        .await);
    assert_eq!(writing.version(), 3);
    assert_eq!(writing.state(), Some(&live));
    drop(writing);
    let stored = ok(store.query_session().load::<SelfQuest>(&key).await).expect("stored");
    assert_eq!(
        stored.version, 2,
        "the document of the last save it handled an event of"
    );
    assert_eq!(
        SelfQuest {
            version: 3,
            ..stored
        },
        live
    );
    // The next handled event brings the document to the stream's version.
    ok(s.events()
        .append(key.as_str(), [joined("Road", &["Squire"])]));
    ok(s.save_changes().await);
    let stored = ok(store.query_session().load::<SelfQuest>(&key).await).expect("stored");
    let live = ok(s.events().aggregate_stream::<SelfQuest>(key.as_str()).await).expect("live");
    assert_eq!((stored.version, &stored), (4, &live));
}

/// StringIdentitySingleStreamCompliance `multiple_string_keyed_streams_projected_independently`:
/// two string-keyed streams started in one save each get their own document with only
/// their own events.
#[tokio::test]
async fn string_keyed_streams_of_one_save_project_independently() {
    let (_schema, store) = quest_store("jses_quest_two").await;
    let (first, second) = (quest_key(), quest_key());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        first.as_str(),
        [started("Quest 1"), joined("Town A", &["Alpha"])],
    ));
    ok(s.events().start_stream(
        second.as_str(),
        [started("Quest 2"), joined("Town B", &["Beta", "Gamma"])],
    ));
    ok(s.save_changes().await);

    let one = party(&store, &first).await.expect("first");
    let two = party(&store, &second).await.expect("second");
    assert_eq!(
        (one.id.as_str(), one.name.as_str(), one.members.clone()),
        (first.as_str(), "Quest 1", vec!["Alpha".to_owned()])
    );
    assert_eq!(
        (two.id.as_str(), two.name.as_str(), two.members.clone()),
        (
            second.as_str(),
            "Quest 2",
            vec!["Beta".to_owned(), "Gamma".to_owned()]
        )
    );
    assert_eq!(one.location.as_deref(), Some("Town A"));
    assert_eq!(two.location.as_deref(), Some("Town B"));
}

/// StringIdentitySingleStreamCompliance `self_aggregating_snapshot_with_string_identity`,
/// with the type projected inline: a self-aggregating type whose creation sets no id is
/// stored under the stream's string key.
#[tokio::test]
async fn a_self_aggregating_inline_type_is_stored_under_the_string_key() {
    let (_schema, store) = quest_store("jses_quest_self").await;
    let key = format!("snap-{}", Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        key.as_str(),
        [started("Snapshot Quest"), joined("Castle", &["Knight"])],
    ));
    ok(s.save_changes().await);

    let q = ok(store.query_session().load::<SelfQuest>(&key).await).expect("stored");
    assert_eq!(
        q,
        SelfQuest {
            id: key.clone(),
            version: 2,
            name: "Snapshot Quest".into(),
            members: vec!["Knight".into()],
        }
    );
}

/// StringIdentitySingleStreamCompliance `self_aggregating_snapshot_with_string_identity`,
/// with marten-rs's snapshot policy (a live aggregate snapshotted on read): the snapshot
/// document a read writes is stored under the string key, with the folded state.
#[tokio::test]
async fn a_live_string_keyed_snapshot_is_stored_under_its_key() {
    let (_schema, b) = builder("jses_quest_snapshot");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .snapshot::<SnapQuest>(1)
        .build()
        .await);
    let key = format!("snap-{}", Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        key.as_str(),
        [started("Snapshot Quest"), joined("Castle", &["Knight"])],
    ));
    ok(s.save_changes().await);
    assert_eq!(
        ok(store.query_session().load::<SnapQuest>(&key).await),
        None,
        "saves write no snapshot"
    );

    let live = ok(s.events().aggregate_stream::<SnapQuest>(key.as_str()).await).expect("folded");
    let expected = SnapQuest {
        id: key.clone(),
        version: 2,
        name: "Snapshot Quest".into(),
        members: vec!["Knight".into()],
    };
    assert_eq!(live, expected);
    let snapshot = ok(store.query_session().load::<SnapQuest>(&key).await).expect("snapshot");
    assert_eq!(snapshot, expected);
}

// ---------------------------------------------------------------------------------------
// Correlation and causation (ActivityCorrelationCompliance).

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct TracedQuestStarted {
    name: String,
}

fn traced(name: &str) -> TracedQuestStarted {
    TracedQuestStarted { name: name.into() }
}

async fn traced_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.event::<TracedQuestStarted>().build().await);
    (schema, store)
}

/// (correlation, causation, headers) of every event of `stream`, read by a fresh session.
async fn stamps(
    store: &DocumentStore,
    stream: Uuid,
) -> Vec<(Option<String>, Option<String>, Option<serde_json::Value>)> {
    let mut reader = store.lightweight_session();
    ok(reader.events().fetch_stream(stream).await)
        .into_iter()
        .map(|e| (e.correlation_id, e.causation_id, e.headers))
        .collect()
}

/// ActivityCorrelationCompliance `events_appended_in_activity_scope_carry_root_and_parent_ids`
/// (the ids set on the session rather than seeded from an ambient trace): every event the
/// session appends, to every stream and in later saves of the same session, carries the
/// session's correlation and causation ids, persisted and read back by another session.
#[tokio::test]
async fn the_sessions_correlation_and_causation_reach_every_event_it_appends() {
    let (_schema, store) = traced_store("jses_corr_session").await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let root = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01";
    let mut s = store.lightweight_session();
    s.set_correlation_id(Some(root.into()));
    s.set_causation_id(Some(parent.into()));
    ok(s.events()
        .start_stream(a, [traced("Traced Quest"), traced("second")]));
    ok(s.events().start_stream(b, [traced("other stream")]));
    ok(s.save_changes().await);
    ok(s.events().append(a, [traced("a later save")]));
    ok(s.save_changes().await);

    let expected = (Some(root.to_owned()), Some(parent.to_owned()), None);
    let on_a = stamps(&store, a).await;
    assert_eq!(on_a.len(), 3);
    assert!(on_a.iter().all(|st| *st == expected), "{on_a:?}");
    assert_eq!(stamps(&store, b).await, vec![expected]);
}

/// ActivityCorrelationCompliance `explicit_caller_value_wins_over_activity`: an event's own
/// correlation or causation id wins over the session's, its headers are merged over the
/// session's (its own value winning a shared key), and ids or headers set on the session
/// later stamp only the events appended after that (what was already appended keeps its
/// values).
#[tokio::test]
async fn an_events_own_metadata_wins_and_later_session_values_apply_from_then_on() {
    let (_schema, store) = traced_store("jses_corr_explicit").await;
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    s.set_correlation_id(Some("session-corr".into()));
    s.set_causation_id(Some("session-cause".into()));
    s.set_header("user", "ann");
    s.set_header("origin", "session");
    ok(s.events().start_stream(
        stream,
        [
            PendingEvent::new(traced("plain")),
            PendingEvent::new(traced("explicit"))
                .with_correlation_id("explicit-corr")
                .with_header("origin", "event")
                .with_header("ip", "10.1.1.1"),
            PendingEvent::new(traced("own cause")).with_causation_id("explicit-cause"),
        ],
    ));
    s.set_correlation_id(Some("replaced-corr".into()));
    s.set_header("user", "bob");
    ok(s.events().append(stream, [traced("after the change")]));
    ok(s.save_changes().await);

    let got = stamps(&store, stream).await;
    assert_eq!(
        got,
        vec![
            (
                Some("session-corr".to_owned()),
                Some("session-cause".to_owned()),
                Some(json!({"user": "ann", "origin": "session"})),
            ),
            (
                Some("explicit-corr".to_owned()),
                Some("session-cause".to_owned()),
                Some(json!({"user": "ann", "origin": "event", "ip": "10.1.1.1"})),
            ),
            (
                Some("session-corr".to_owned()),
                Some("explicit-cause".to_owned()),
                Some(json!({"user": "ann", "origin": "session"})),
            ),
            (
                Some("replaced-corr".to_owned()),
                Some("session-cause".to_owned()),
                Some(json!({"user": "bob", "origin": "session"})),
            ),
        ]
    );
}

/// ActivityCorrelationCompliance `no_activity_leaves_correlation_null`: a session given no
/// metadata stores events without correlation, causation or headers, and a session that
/// clears its ids stops stamping them.
#[tokio::test]
async fn without_session_metadata_events_carry_none() {
    let (_schema, store) = traced_store("jses_corr_none").await;
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [traced("untraced")]));
    ok(s.save_changes().await);
    assert_eq!(stamps(&store, stream).await, vec![(None, None, None)]);

    s.set_correlation_id(Some("corr".into()));
    s.set_causation_id(Some("cause".into()));
    ok(s.events().append(stream, [traced("traced")]));
    s.set_correlation_id(None);
    s.set_causation_id(None);
    ok(s.events().append(stream, [traced("cleared")]));
    ok(s.save_changes().await);
    assert_eq!(
        stamps(&store, stream).await,
        vec![
            (None, None, None),
            (Some("corr".to_owned()), Some("cause".to_owned()), None),
            (None, None, None),
        ]
    );
}
