//! Scenarios carried over from five JasperFx.Events compliance suites, asserted against
//! marten-rs on a real PostgreSQL (each test on a schema of its own):
//!
//! - `DcbTagQueryAndConsistencyCompliance`: the parts `marten_tag_scenarios.rs` and
//!   `dcb.rs` do not cover yet (OR of tags of one type, a boundary state without an id,
//!   the happy path's state and versions, a conflicting append to the boundary's own
//!   stream, tags taken from an appended event's fields, an untagged append through a
//!   boundary), each decision also made through `write_to_boundary`;
//! - `DcbHasTagLinqCompliance`: a tag of a type no event carries;
//! - `EventQueryCompliance`: global sequence order across streams, paging through the
//!   global order, type, stream, time-window and data filters alone and combined, limits
//!   and counts, tag reads, empty answers;
//! - `StreamStateQueryCompliance`: what `fetch_stream_state` reports (version, creation,
//!   last change, aggregate type, archive, string keys);
//! - `StrongTypedIdentityCompliance`: newtype ids over `Uuid` and `String` as aggregate
//!   ids, live, inline and async, through every read and write entry point.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::{EventTag, IdKey, RejectionKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

// =====================================================================================
// DCB: tags, events and boundary states
// =====================================================================================

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[tag(name = "student")]
struct StudentId(Uuid);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[tag(name = "course")]
struct CourseId(Uuid);

/// A tag type that no event of these tests carries.
#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct UnusedTagId(Uuid);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StudentEnrolled {
    #[tag]
    student: StudentId,
    #[tag]
    course: CourseId,
    student_name: String,
    course_name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AssignmentSubmitted {
    #[tag]
    student: StudentId,
    #[tag]
    course: CourseId,
    assignment: String,
    score: i32,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StudentDropped {
    #[tag]
    student: StudentId,
    reason: String,
}

/// Its tags come from its fields alone.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StudentGraded {
    #[tag]
    student: StudentId,
    #[tag]
    course: CourseId,
    grade: i32,
}

/// Carries no tag at all.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct SystemNotification {
    message: String,
}

/// A boundary state folded from a student's events.
#[derive(Default, Clone, Debug)]
struct Enrollment {
    student_name: String,
    course_name: String,
    assignments: Vec<String>,
    dropped: bool,
}

#[marten::apply]
impl Enrollment {
    fn apply_enrolled(&mut self, e: &StudentEnrolled) {
        self.student_name = e.student_name.clone();
        self.course_name = e.course_name.clone();
    }
    fn apply_submitted(&mut self, e: &AssignmentSubmitted) {
        self.assignments.push(e.assignment.clone());
    }
    fn apply_dropped(&mut self, _e: &StudentDropped) {
        self.dropped = true;
    }
}

/// A boundary state with no id at all: counts only.
#[derive(Default, Clone, Debug, PartialEq)]
struct CourseLoad {
    enrollments: i32,
    assignments: i32,
}

#[marten::apply]
impl CourseLoad {
    fn apply_enrolled(&mut self, _e: &StudentEnrolled) {
        self.enrollments += 1;
    }
    fn apply_submitted(&mut self, _e: &AssignmentSubmitted) {
        self.assignments += 1;
    }
    fn apply_dropped(&mut self, _e: &StudentDropped) {
        self.enrollments -= 1;
    }
}

fn student() -> StudentId {
    StudentId(Uuid::now_v7())
}

fn course() -> CourseId {
    CourseId(Uuid::now_v7())
}

fn enrolled(
    student: StudentId,
    course: CourseId,
    name: &str,
    course_name: &str,
) -> StudentEnrolled {
    StudentEnrolled {
        student,
        course,
        student_name: name.into(),
        course_name: course_name.into(),
    }
}

fn submitted(student: StudentId, course: CourseId, assignment: &str) -> AssignmentSubmitted {
    AssignmentSubmitted {
        student,
        course,
        assignment: assignment.into(),
        score: 90,
    }
}

async fn dcb_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .event::<StudentEnrolled>()
        .event::<AssignmentSubmitted>()
        .event::<StudentDropped>()
        .event::<StudentGraded>()
        .event::<SystemNotification>()
        .build()
        .await);
    (schema, store)
}

/// Appends `events` to `stream` in a session of its own and saves.
async fn append_to(store: &DocumentStore, stream: Uuid, events: Vec<PendingEvent>) {
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, events));
    ok(s.save_changes().await);
}

/// The events a fresh boundary over `q` reads.
async fn boundary_events(store: &DocumentStore, q: TagQuery) -> Vec<EventEnvelope> {
    let mut s = store.lightweight_session();
    let b = ok(s.events().fetch_for_writing_by_tags::<CourseLoad>(q).await);
    b.events().to_vec()
}

/// The assignments a fresh boundary over `student` folds.
async fn assignments_of(store: &DocumentStore, student: StudentId) -> Vec<String> {
    let mut s = store.lightweight_session();
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Enrollment>(TagQuery::new().tag(student))
        .await);
    b.state().map(|e| e.assignments.clone()).unwrap_or_default()
}

/// The version a boundary read for `tag`.
fn version_of(versions: &[(EventTag, i64)], tag: &EventTag) -> i64 {
    versions
        .iter()
        .find(|(t, _)| t == tag)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no version for {tag:?} in {versions:?}"))
}

/// The (tag type, tag value) of each rejection of `err`, which must be DCB rejections.
#[track_caller]
fn dcb_rejections(err: &marten::Error) -> Vec<(String, String)> {
    let marten::Error::Rejected(rejections) = err else {
        panic!("expected a DCB rejection, got {err} ({err:?})");
    };
    assert!(!rejections.is_empty(), "{err:?}");
    rejections
        .iter()
        .map(|r| match (&r.kind, &r.id) {
            (
                RejectionKind::DcbConcurrency {
                    tag_type,
                    expected,
                    actual,
                },
                IdKey::String(value),
            ) => {
                assert!(actual > expected, "{err:?}");
                (tag_type.clone(), value.clone())
            }
            other => panic!("expected only DCB rejections, got {other:?} in {err:?}"),
        })
        .collect()
}

/// A boundary over one student reads only that student's events; a boundary over two
/// students (one tag type, OR) reads both students' events and no third student's.
#[tokio::test]
async fn a_boundary_over_tags_of_one_type_is_an_or_of_them() {
    let (_schema, store) = dcb_store("jx_dcb_or_one_type").await;
    let (alice, bob, carol, math) = (student(), student(), student(), course());
    let mut s = store.lightweight_session();
    for (who, name) in [(alice, "Alice"), (bob, "Bob"), (carol, "Carol")] {
        ok(s.events()
            .append(Uuid::now_v7(), [enrolled(who, math, name, "Math")]));
    }
    ok(s.save_changes().await);

    let names = |events: &[EventEnvelope]| -> Vec<String> {
        events
            .iter()
            .map(|e| {
                e.data_as::<StudentEnrolled>()
                    .expect("an enrollment")
                    .student_name
                    .clone()
            })
            .collect()
    };
    let one = boundary_events(&store, TagQuery::new().tag(alice)).await;
    assert_eq!(names(&one), ["Alice"]);
    let two = boundary_events(&store, TagQuery::new().tag(alice).tag(bob)).await;
    assert_eq!(names(&two), ["Alice", "Bob"]);
    assert!(two.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let other = boundary_events(&store, TagQuery::new().tag(student())).await;
    assert!(other.is_empty());
}

/// A boundary state without any id (a pure count over a tag query) folds the matching
/// events, takes an append through `fetch_for_writing_by_tags` and decisions through
/// `write_to_boundary`, and a fresh read folds what they appended.
#[tokio::test]
async fn an_identity_less_boundary_state_folds_and_is_written_to() {
    let (_schema, store) = dcb_store("jx_dcb_identity_less").await;
    let (alice, math) = (student(), course());
    append_to(
        &store,
        Uuid::now_v7(),
        vec![
            enrolled(alice, math, "Alice", "Math").into(),
            submitted(alice, math, "HW1").into(),
        ],
    )
    .await;
    let q = || TagQuery::new().tag(alice);

    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseLoad>(q())
        .await);
    assert_eq!(
        b.state(),
        Some(&CourseLoad {
            enrollments: 1,
            assignments: 1
        })
    );
    assert!(version_of(b.versions(), &EventTag::of(&alice)) > 0);
    ok(b.append([submitted(alice, math, "HW2")]));
    ok(s.save_changes().await);

    let mut s = store.lightweight_session();
    let after = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseLoad>(q())
        .await);
    assert_eq!(
        after.state(),
        Some(&CourseLoad {
            enrollments: 1,
            assignments: 2
        })
    );
    drop(after);

    // The same state through commands: drop the student while enrolled, then nothing.
    let drop_decision = |load: Option<&CourseLoad>| -> Result<Vec<StudentDropped>, marten::Error> {
        match load {
            Some(l) if l.enrollments > 0 => Ok(vec![StudentDropped {
                student: alice,
                reason: "moved".into(),
            }]),
            _ => Ok(vec![]),
        }
    };
    let mut s = store.lightweight_session();
    let dropped = ok(s.events().write_to_boundary(q(), drop_decision).await);
    assert!(dropped.is_some(), "the drop was appended to a new stream");
    let mut s = store.lightweight_session();
    let again = ok(s.events().write_to_boundary(q(), drop_decision).await);
    assert_eq!(again, None, "no enrollment left: nothing decided");

    let mut s = store.lightweight_session();
    let last = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseLoad>(q())
        .await);
    assert_eq!(
        last.state(),
        Some(&CourseLoad {
            enrollments: 0,
            assignments: 2
        })
    );
    assert_eq!(last.events().len(), 4);
}

/// The happy path: a boundary read exposes the folded state, the matching events and a
/// positive version of the queried tag; its append saves and moves that version; a
/// command on the boundary decides on the state including that append.
#[tokio::test]
async fn a_boundary_read_exposes_state_events_and_versions_and_saves() {
    let (_schema, store) = dcb_store("jx_dcb_happy_path").await;
    let (alice, math) = (student(), course());
    append_to(
        &store,
        Uuid::now_v7(),
        vec![enrolled(alice, math, "Alice", "Math").into()],
    )
    .await;
    let q = || TagQuery::new().tag(alice);
    let tag = EventTag::of(&alice);

    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Enrollment>(q())
        .await);
    let state = b.state().expect("a state").clone();
    assert_eq!(
        (state.student_name.as_str(), state.course_name.as_str()),
        ("Alice", "Math")
    );
    assert!(state.assignments.is_empty() && !state.dropped);
    assert_eq!(b.events().len(), 1);
    assert_eq!(b.versions().len(), 1, "only the queried tag");
    let before = version_of(b.versions(), &tag);
    assert!(before > 0);
    ok(b.append([submitted(alice, math, "HW1")]));
    ok(s.save_changes().await);

    let mut s = store.lightweight_session();
    let after = ok(s
        .events()
        .fetch_for_writing_by_tags::<Enrollment>(q())
        .await);
    assert!(version_of(after.versions(), &tag) > before);
    assert_eq!(
        after.state().map(|e| e.assignments.clone()),
        Some(vec!["HW1".to_owned()])
    );
    drop(after);

    // Submit HW2 unless it is already in: the second command finds it and decides nothing.
    let hw2 = |e: Option<&Enrollment>| -> Result<Vec<AssignmentSubmitted>, marten::Error> {
        match e {
            Some(e) if !e.assignments.iter().any(|a| a == "HW2") => {
                Ok(vec![submitted(alice, math, "HW2")])
            }
            _ => Ok(vec![]),
        }
    };
    let mut s = store.lightweight_session();
    assert!(ok(s.events().write_to_boundary(q(), hw2).await).is_some());
    let mut s = store.lightweight_session();
    assert_eq!(ok(s.events().write_to_boundary(q(), hw2).await), None);
    assert_eq!(assignments_of(&store, alice).await, ["HW1", "HW2"]);
}

/// Another session's tagged append to the boundary's own stream, after the read, rejects
/// the boundary's save (DCB concurrency on the queried tag) and writes none of it; a
/// command whose kept boundary was moved the same way decides again on a fresh read that
/// includes the other append.
#[tokio::test]
async fn an_append_to_the_boundarys_own_stream_after_the_read_rejects_the_save() {
    let (_schema, store) = dcb_store("jx_dcb_same_stream_conflict").await;
    let (alice, math) = (student(), course());
    let stream = Uuid::now_v7();
    append_to(
        &store,
        stream,
        vec![enrolled(alice, math, "Alice", "Math").into()],
    )
    .await;
    let q = || TagQuery::new().tag(alice);

    let mut s1 = store.lightweight_session();
    let mut b = ok(s1
        .events()
        .fetch_for_writing_by_tags::<Enrollment>(q())
        .await);
    append_to(
        &store,
        stream,
        vec![submitted(alice, math, "HW-conflict").into()],
    )
    .await;
    ok(b.append([submitted(alice, math, "HW1")]));
    let err = s1.save_changes().await.expect_err("the boundary moved");
    assert_eq!(
        dcb_rejections(&err),
        [("student".to_owned(), alice.0.to_string())]
    );
    assert_eq!(assignments_of(&store, alice).await, ["HW-conflict"]);

    // Through commands: the first keeps the boundary, a plain append moves it, and the
    // second decides on the kept state, is rejected, and decides again on a fresh read.
    let seen: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());
    let next = |name: &'static str| {
        let seen = &seen;
        move |e: Option<&Enrollment>| -> Result<Vec<AssignmentSubmitted>, marten::Error> {
            let saw = e.map(|e| e.assignments.clone()).unwrap_or_default();
            seen.lock().expect("not poisoned").push(saw);
            Ok(vec![submitted(alice, math, name)])
        }
    };
    let mut s = store.lightweight_session();
    ok(s.events().write_to_boundary(q(), next("HW1")).await);
    append_to(
        &store,
        stream,
        vec![submitted(alice, math, "HW-conflict-2").into()],
    )
    .await;
    let mut s = store.lightweight_session();
    ok(s.events().write_to_boundary(q(), next("HW2")).await);
    assert_eq!(
        *seen.lock().expect("not poisoned"),
        [
            vec!["HW-conflict".to_owned()],
            vec!["HW-conflict".to_owned(), "HW1".to_owned()],
            vec![
                "HW-conflict".to_owned(),
                "HW1".to_owned(),
                "HW-conflict-2".to_owned()
            ],
        ],
        "the second command decided on the kept state, then on a fresh read"
    );
    assert_eq!(
        assignments_of(&store, alice).await,
        ["HW-conflict", "HW1", "HW-conflict-2", "HW2"]
    );
}

/// An event appended through a boundary is tagged from its `#[tag]` fields: it is found
/// by each of its tags afterwards, through `fetch_for_writing_by_tags` and through
/// `write_to_boundary` alike.
#[tokio::test]
async fn an_event_appended_through_a_boundary_is_tagged_from_its_fields() {
    let (_schema, store) = dcb_store("jx_dcb_inferred_tags").await;
    let (alice, math) = (student(), course());
    append_to(
        &store,
        Uuid::now_v7(),
        vec![enrolled(alice, math, "Alice", "Math").into()],
    )
    .await;

    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Enrollment>(TagQuery::new().tag(alice))
        .await);
    ok(b.append([StudentGraded {
        student: alice,
        course: math,
        grade: 95,
    }]));
    ok(s.save_changes().await);

    let grades = |events: &[EventEnvelope]| -> Vec<i32> {
        events
            .iter()
            .filter_map(|e| e.data_as::<StudentGraded>().map(|g| g.grade))
            .collect()
    };
    let by_student = boundary_events(&store, TagQuery::new().tag(alice)).await;
    assert_eq!(by_student.len(), 2);
    assert_eq!(grades(&by_student[1..]), [95]);
    let by_course = boundary_events(&store, TagQuery::new().tag(math)).await;
    assert_eq!(
        grades(&by_course),
        [95],
        "the course tag came from the field"
    );

    let mut s = store.lightweight_session();
    ok(s.events()
        .write_to_boundary(TagQuery::new().tag(math), |_: Option<&CourseLoad>| {
            Ok::<_, marten::Error>([StudentGraded {
                student: alice,
                course: math,
                grade: 88,
            }])
        })
        .await);
    assert_eq!(
        grades(&boundary_events(&store, TagQuery::new().tag(alice)).await),
        [95, 88]
    );
}

/// Unlike JasperFx (which refuses an event it cannot route by tags), an untagged event
/// appended through a boundary goes to a new stream of its own and saves; the save still
/// asserts the boundary, so a tagged append in between rejects it.
#[tokio::test]
async fn an_untagged_event_through_a_boundary_saves_and_still_asserts_it() {
    let (_schema, store) = dcb_store("jx_dcb_untagged_append").await;
    let (alice, math) = (student(), course());
    append_to(
        &store,
        Uuid::now_v7(),
        vec![enrolled(alice, math, "Alice", "Math").into()],
    )
    .await;
    let q = || TagQuery::new().tag(alice);
    let note = |m: &str| SystemNotification { message: m.into() };

    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Enrollment>(q())
        .await);
    ok(b.append([note("saved")]));
    ok(s.save_changes().await);
    assert_eq!(boundary_events(&store, q()).await.len(), 1, "not tagged");

    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Enrollment>(q())
        .await);
    append_to(
        &store,
        Uuid::now_v7(),
        vec![submitted(alice, math, "HW1").into()],
    )
    .await;
    ok(b.append([note("rejected")]));
    let err = s.save_changes().await.expect_err("the boundary moved");
    assert_eq!(dcb_rejections(&err).len(), 1);

    let mut s = store.lightweight_session();
    let stream = ok(s
        .events()
        .write_to_boundary(q(), |_: Option<&Enrollment>| {
            Ok::<_, marten::Error>([note("commanded")])
        })
        .await)
    .expect("a new stream");
    let mut s = store.lightweight_session();
    let events = ok(s.events().fetch_stream(stream).await);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]
            .data_as::<SystemNotification>()
            .map(|n| n.message.as_str()),
        Some("commanded")
    );
}

/// Unlike JasperFx (which refuses a tag type it has not registered), marten-rs has no tag
/// registry: a boundary over a tag type no event carries, typed or named, reads nothing,
/// has no state and version 0, and its save commits.
#[tokio::test]
async fn a_tag_type_no_event_carries_reads_an_empty_boundary() {
    let (_schema, store) = dcb_store("jx_dcb_unknown_tag_type").await;
    let (alice, math) = (student(), course());
    append_to(
        &store,
        Uuid::now_v7(),
        vec![enrolled(alice, math, "Alice", "Math").into()],
    )
    .await;
    for q in [
        TagQuery::new().tag(UnusedTagId(alice.0)),
        TagQuery::new().tag_named("no_such_tag_type", alice.0),
    ] {
        let mut s = store.lightweight_session();
        let mut b = ok(s.events().fetch_for_writing_by_tags::<Enrollment>(q).await);
        assert!(b.events().is_empty());
        assert!(b.state().is_none());
        assert!(
            b.versions().iter().all(|(_, v)| *v == 0),
            "{:?}",
            b.versions()
        );
        ok(b.append([SystemNotification {
            message: "ok".into(),
        }]));
        ok(s.save_changes().await);
    }
}

// =====================================================================================
// Event queries: types, streams, windows, limits, tags
// =====================================================================================

#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug)]
struct CargoLoaded {
    cargo: String,
}

#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug)]
struct CargoInspected {
    inspector: String,
}

#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug)]
struct CargoUnloaded {
    port: String,
}

/// Registered, never appended.
#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug)]
struct CargoLost {
    note: String,
}

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[tag(name = "manifest")]
struct ManifestId(Uuid);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ManifestLoaded {
    #[tag]
    manifest: ManifestId,
    cargo: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ManifestInspected {
    #[tag]
    manifest: ManifestId,
    inspector: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ManifestUnloaded {
    #[tag]
    manifest: ManifestId,
    port: String,
}

/// Carries two manifests' tags.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CoManifested {
    #[tag]
    first: ManifestId,
    #[tag]
    second: ManifestId,
    cargo: String,
}

/// What a tag read of manifests folds: the names, in order.
#[derive(Default, Debug)]
struct ManifestLog {
    seen: Vec<String>,
}

#[marten::apply]
impl ManifestLog {
    fn apply_loaded(&mut self, e: &ManifestLoaded) {
        self.seen.push(e.cargo.clone());
    }
    fn apply_inspected(&mut self, e: &ManifestInspected) {
        self.seen.push(e.inspector.clone());
    }
    fn apply_unloaded(&mut self, e: &ManifestUnloaded) {
        self.seen.push(e.port.clone());
    }
    fn apply_co(&mut self, e: &CoManifested) {
        self.seen.push(e.cargo.clone());
    }
}

async fn cargo_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .event::<CargoLoaded>()
        .event::<CargoInspected>()
        .event::<CargoUnloaded>()
        .event::<CargoLost>()
        .event::<ManifestLoaded>()
        .event::<ManifestInspected>()
        .event::<ManifestUnloaded>()
        .event::<CoManifested>()
        .build()
        .await);
    (schema, store)
}

fn loaded(cargo: &str) -> PendingEvent {
    CargoLoaded {
        cargo: cargo.into(),
    }
    .into()
}

fn inspected(inspector: &str) -> PendingEvent {
    CargoInspected {
        inspector: inspector.into(),
    }
    .into()
}

fn unloaded(port: &str) -> PendingEvent {
    CargoUnloaded { port: port.into() }.into()
}

/// Five saves alternating between two streams: the first gets loaded, inspected and
/// unloaded, the second loaded and inspected.
async fn seed_interleaved(store: &DocumentStore) -> (Uuid, Uuid) {
    let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
    append_to(store, one, vec![loaded("grain")]).await;
    append_to(store, two, vec![loaded("coal")]).await;
    append_to(store, one, vec![inspected("alice")]).await;
    append_to(store, two, vec![inspected("bob")]).await;
    append_to(store, one, vec![unloaded("Lisbon")]).await;
    (one, two)
}

/// Every event of the store in the global order, once `expected` of them are past the
/// gap-safe horizon (another test's open transaction on the server may hold it back).
async fn read_everything(store: &DocumentStore, expected: usize) -> Vec<EventEnvelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut s = store.lightweight_session();
        let page = ok(s.events().read_all(Position::START, 10_000).await);
        if page.events.len() >= expected || tokio::time::Instant::now() > deadline {
            assert_eq!(page.events.len(), expected);
            return page.events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sequences(events: &[EventEnvelope]) -> Vec<i64> {
    events.iter().map(|e| e.sequence).collect()
}

/// The sequences of the inspections recorded within `since..=until` (either bound may
/// be left open), and their count.
async fn inspected_within(
    store: &DocumentStore,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> (Vec<i64>, i64) {
    macro_rules! query {
        ($s:expr) => {{
            let mut q = $s.events().query::<CargoInspected>();
            if let Some(t) = since {
                q = q.since(t);
            }
            if let Some(t) = until {
                q = q.until(t);
            }
            q
        }};
    }
    let mut s = store.lightweight_session();
    let list = ok(query!(s).to_list().await);
    let count = ok(query!(s).count().await);
    (sequences(&list), count)
}

/// The sequences of the loads of `stream`, recorded at the instant `at`, of `cargo`
/// (each filter left out when `None`), and their count.
async fn loaded_where(
    store: &DocumentStore,
    stream: Option<Uuid>,
    at: Option<OffsetDateTime>,
    cargo: Option<&str>,
) -> (Vec<i64>, i64) {
    macro_rules! query {
        ($s:expr) => {{
            let mut q = $s.events().query::<CargoLoaded>();
            if let Some(st) = stream {
                q = q.stream(st);
            }
            if let Some(t) = at {
                q = q.since(t).until(t);
            }
            if let Some(c) = cargo {
                q = q.filter(|f| f.cargo.eq(c.to_owned()));
            }
            q
        }};
    }
    let mut s = store.lightweight_session();
    let list = ok(query!(s).to_list().await);
    let count = ok(query!(s).count().await);
    (sequences(&list), count)
}

/// Events of several streams read in the global sequence order (strictly increasing,
/// alternating between the streams as the saves did), both in the global read and in a
/// query by type.
#[tokio::test]
async fn events_of_several_streams_read_in_global_sequence_order() {
    let (_schema, store) = cargo_store("jx_query_order").await;
    let (one, two) = seed_interleaved(&store).await;
    let all = read_everything(&store, 5).await;
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let streams: Vec<StreamId> = all.iter().map(|e| e.stream_id.clone()).collect();
    let (a, b) = (StreamId::Uuid(one), StreamId::Uuid(two));
    assert_eq!(
        streams,
        [a.clone(), b.clone(), a.clone(), b.clone(), a.clone()]
    );

    let mut s = store.lightweight_session();
    let loads = ok(s.events().query::<CargoLoaded>().to_list().await);
    assert_eq!(
        loads
            .iter()
            .map(|e| e.stream_id.clone())
            .collect::<Vec<_>>(),
        [a, b]
    );
    assert_eq!(sequences(&loads), [all[0].sequence, all[1].sequence]);
}

/// Pages of the global order are disjoint, complete and ordered: pages of two over five
/// events are 2, 2 and 1 events, then empty, and together they are the unpaged read.
#[tokio::test]
async fn pages_of_the_global_order_are_disjoint_and_complete() {
    let (_schema, store) = cargo_store("jx_query_paging").await;
    seed_interleaved(&store).await;
    let all = read_everything(&store, 5).await;
    let mut s = store.lightweight_session();
    let mut position = Position::START;
    let mut sizes = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..4 {
        let page = ok(s.events().read_all(position, 2).await);
        sizes.push(page.events.len());
        paged.extend(page.events);
        position = page.next;
    }
    assert_eq!(sizes, [2, 2, 1, 0]);
    assert_eq!(sequences(&paged), sequences(&all));
}

/// A query by type matches exactly that type's events (a strict subset), counts them,
/// and narrows further by a data field.
#[tokio::test]
async fn a_query_by_type_matches_only_that_type() {
    let (_schema, store) = cargo_store("jx_query_type").await;
    seed_interleaved(&store).await;
    let mut s = store.lightweight_session();
    let found = ok(s.events().query::<CargoInspected>().to_list().await);
    let who: Vec<&str> = found
        .iter()
        .map(|e| {
            e.data_as::<CargoInspected>()
                .expect("inspected")
                .inspector
                .as_str()
        })
        .collect();
    assert_eq!(who, ["alice", "bob"]);
    assert_eq!(ok(s.events().query::<CargoInspected>().count().await), 2);
    assert_eq!(ok(s.events().query::<CargoLoaded>().count().await), 2);
    assert_eq!(ok(s.events().query::<CargoUnloaded>().count().await), 1);
    assert_eq!(
        ok(s.events()
            .query::<CargoInspected>()
            .filter(|f| f.inspector.eq("bob"))
            .count()
            .await),
        1
    );
}

/// A stream and a type combine as AND: each stream holds an event the other filter keeps.
#[tokio::test]
async fn a_stream_and_a_type_combine_as_and() {
    let (_schema, store) = cargo_store("jx_query_type_stream").await;
    let (one, two) = seed_interleaved(&store).await;
    let mut s = store.lightweight_session();
    let grain = ok(s
        .events()
        .query::<CargoLoaded>()
        .stream(one)
        .to_list()
        .await);
    assert_eq!(grain.len(), 1);
    assert_eq!(
        grain[0].data_as::<CargoLoaded>().map(|c| c.cargo.as_str()),
        Some("grain")
    );
    assert_eq!(grain[0].stream_id, StreamId::Uuid(one));
    let bob = ok(s
        .events()
        .query::<CargoInspected>()
        .stream(two)
        .to_list()
        .await);
    assert_eq!(
        bob.iter()
            .map(|e| e
                .data_as::<CargoInspected>()
                .expect("inspected")
                .inspector
                .clone())
            .collect::<Vec<_>>(),
        ["bob"]
    );
    assert_eq!(
        ok(s.events()
            .query::<CargoUnloaded>()
            .stream(two)
            .count()
            .await),
        0
    );
    assert_eq!(
        ok(s.events()
            .query::<CargoUnloaded>()
            .stream(one)
            .count()
            .await),
        1
    );
}

/// Time windows are inclusive at both ends (bounds equal to stored timestamps keep those
/// events), one bound alone is half open, a one-instant window keeps the events at that
/// instant, and a window in the future or inverted is an empty answer, not an error.
#[tokio::test]
async fn time_windows_are_inclusive_and_half_open_alone() {
    let (_schema, store) = cargo_store("jx_query_time").await;
    let stream = Uuid::now_v7();
    append_to(&store, stream, vec![inspected("a")]).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    append_to(&store, stream, vec![inspected("b"), inspected("c")]).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    append_to(&store, stream, vec![inspected("d")]).await;

    let mut s = store.lightweight_session();
    let all = ok(s.events().query::<CargoInspected>().to_list().await);
    assert_eq!(all.len(), 4);
    let ts: Vec<OffsetDateTime> = all.iter().map(|e| e.timestamp).collect();
    assert!(ts[0] < ts[1] && ts[2] < ts[3], "batches are apart: {ts:?}");
    let seq = sequences(&all);

    assert_eq!(
        inspected_within(&store, Some(ts[1]), Some(ts[2])).await,
        (seq[1..3].to_vec(), 2)
    );
    assert_eq!(
        inspected_within(&store, Some(ts[1]), None).await,
        (seq[1..].to_vec(), 3)
    );
    assert_eq!(
        inspected_within(&store, None, Some(ts[2])).await,
        (seq[..3].to_vec(), 3)
    );
    assert_eq!(
        inspected_within(&store, Some(ts[3]), Some(ts[3])).await,
        (seq[3..].to_vec(), 1)
    );
    assert_eq!(
        inspected_within(&store, Some(ts[0]), Some(ts[3])).await,
        (seq.clone(), 4)
    );
    let future = OffsetDateTime::now_utc() + time::Duration::days(3650);
    assert_eq!(
        inspected_within(&store, Some(future), None).await,
        (vec![], 0)
    );
    assert_eq!(
        inspected_within(&store, Some(ts[3] + time::Duration::days(1)), Some(ts[0])).await,
        (vec![], 0)
    );
    assert_eq!(
        inspected_within(&store, Some(ts[3]), Some(ts[0])).await,
        (vec![], 0)
    );
}

/// Stream, type, time window and a data filter combine as AND: exactly one event passes
/// all four, and dropping any one filter lets in the decoy that fails only that filter.
#[tokio::test]
async fn stream_type_time_and_data_filters_combine_as_and() {
    let (_schema, store) = cargo_store("jx_query_kitchen_sink").await;
    let (target_stream, other_stream) = (Uuid::now_v7(), Uuid::now_v7());
    append_to(&store, target_stream, vec![loaded("bullseye")]).await; // wrong time
    tokio::time::sleep(Duration::from_millis(40)).await;
    let mut s = store.lightweight_session();
    ok(s.events().append(
        target_stream,
        [loaded("bullseye"), inspected("bullseye"), loaded("decoy")], // target, wrong type, wrong data
    ));
    ok(s.events().append(other_stream, [loaded("bullseye")])); // wrong stream
    ok(s.save_changes().await);
    tokio::time::sleep(Duration::from_millis(40)).await;
    append_to(&store, target_stream, vec![loaded("bullseye")]).await; // wrong time

    let mut s = store.lightweight_session();
    let of_stream = ok(s
        .events()
        .query::<CargoLoaded>()
        .stream(target_stream)
        .to_list()
        .await);
    let target = of_stream
        .iter()
        .find(|e| e.version == 2)
        .expect("the target")
        .clone();
    let at = target.timestamp;
    let (t, w, d) = (Some(target_stream), Some(at), Some("bullseye"));
    assert_eq!(
        loaded_where(&store, t, w, d).await,
        (vec![target.sequence], 1)
    );
    assert_eq!(loaded_where(&store, None, w, d).await.1, 2, "wrong stream");
    assert_eq!(loaded_where(&store, t, None, d).await.1, 3, "wrong time");
    assert_eq!(loaded_where(&store, t, w, None).await.1, 2, "wrong data");
}
/// A limit keeps the oldest matches of the filtered result (not of all events), and a
/// count reports the filtered total whatever the limit.
#[tokio::test]
async fn a_limit_keeps_the_oldest_filtered_matches_and_count_ignores_it() {
    let (_schema, store) = cargo_store("jx_query_limit").await;
    for i in 0..10 {
        let e = if i % 3 == 0 {
            loaded(&format!("noise-{i}"))
        } else {
            inspected(&format!("match-{i}"))
        };
        append_to(&store, Uuid::now_v7(), vec![e]).await;
    }
    let mut s = store.lightweight_session();
    let unlimited = ok(s.events().query::<CargoInspected>().to_list().await);
    assert_eq!(unlimited.len(), 6);
    let first = ok(s.events().query::<CargoInspected>().take(3).to_list().await);
    assert_eq!(sequences(&first), sequences(&unlimited[..3]));
    let names: Vec<&str> = first
        .iter()
        .map(|e| {
            e.data_as::<CargoInspected>()
                .expect("inspected")
                .inspector
                .as_str()
        })
        .collect();
    assert_eq!(
        names,
        ["match-1", "match-2", "match-4"],
        "filtered, then limited"
    );
    let beyond = ok(s
        .events()
        .query::<CargoInspected>()
        .take(100)
        .to_list()
        .await);
    assert_eq!(sequences(&beyond), sequences(&unlimited));
    assert_eq!(
        ok(s.events().query::<CargoInspected>().take(3).count().await),
        6
    );
}

/// A read by tag returns only events carrying the tag, across streams and types, in
/// global sequence order with untagged events in between; an event carrying both queried
/// tags comes once; limiting the read to one event type narrows it.
#[tokio::test]
async fn a_tag_read_returns_tagged_events_once_each_in_global_order() {
    let (_schema, store) = cargo_store("jx_query_tags").await;
    let (first, second) = (ManifestId(Uuid::now_v7()), ManifestId(Uuid::now_v7()));
    let new = Uuid::now_v7;
    append_to(
        &store,
        new(),
        vec![ManifestLoaded {
            manifest: first,
            cargo: "grain".into(),
        }
        .into()],
    )
    .await;
    append_to(&store, new(), vec![inspected("noise-1")]).await;
    append_to(
        &store,
        new(),
        vec![ManifestInspected {
            manifest: first,
            inspector: "alice".into(),
        }
        .into()],
    )
    .await;
    append_to(&store, new(), vec![loaded("noise-2")]).await;
    append_to(
        &store,
        new(),
        vec![CoManifested {
            first,
            second,
            cargo: "both".into(),
        }
        .into()],
    )
    .await;
    append_to(
        &store,
        new(),
        vec![ManifestUnloaded {
            manifest: first,
            port: "Lisbon".into(),
        }
        .into()],
    )
    .await;
    append_to(
        &store,
        new(),
        vec![ManifestLoaded {
            manifest: second,
            cargo: "coal".into(),
        }
        .into()],
    )
    .await;
    let all = read_everything(&store, 7).await;

    let read = |q: TagQuery| {
        let store = store.clone();
        async move {
            let mut s = store.lightweight_session();
            let b = ok(s.events().fetch_for_writing_by_tags::<ManifestLog>(q).await);
            let seen = b.state().map(|l| l.seen.clone()).unwrap_or_default();
            (seen, sequences(b.events()))
        }
    };
    let (seen, seqs) = read(TagQuery::new().tag(first)).await;
    assert_eq!(seen, ["grain", "alice", "both", "Lisbon"]);
    let want: Vec<i64> = [0, 2, 4, 5].iter().map(|&i| all[i].sequence).collect();
    assert_eq!(seqs, want);

    let (seen, seqs) = read(TagQuery::new().tag(first).tag(second)).await;
    assert_eq!(seen, ["grain", "alice", "both", "Lisbon", "coal"]);
    let mut distinct = seqs.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 5);

    let (seen, _) = read(
        TagQuery::new()
            .tag(first)
            .event_types::<(ManifestLoaded,)>(),
    )
    .await;
    assert_eq!(seen, ["grain"]);
    let (seen, _) = read(
        TagQuery::new()
            .tag(first)
            .tag(second)
            .event_types::<(ManifestLoaded,)>(),
    )
    .await;
    assert_eq!(seen, ["grain", "coal"]);
}

/// Each filter alone, against data none of it fits, is an empty answer and a zero count,
/// never an error: a type never appended, an unknown stream, a window in the future or
/// the distant past, a data value nobody has, a tag nobody carries.
#[tokio::test]
async fn each_filter_alone_matching_nothing_is_an_empty_answer() {
    let (_schema, store) = cargo_store("jx_query_nothing").await;
    seed_interleaved(&store).await;
    let mut s = store.lightweight_session();
    assert!(ok(s.events().query::<CargoLost>().to_list().await).is_empty());
    assert_eq!(ok(s.events().query::<CargoLost>().count().await), 0);
    let stream = Uuid::now_v7();
    assert!(ok(s
        .events()
        .query::<CargoLoaded>()
        .stream(stream)
        .to_list()
        .await)
    .is_empty());
    assert_eq!(
        ok(s.events()
            .query::<CargoLoaded>()
            .stream(stream)
            .count()
            .await),
        0
    );
    let future = OffsetDateTime::now_utc() + time::Duration::days(3650);
    assert_eq!(
        ok(s.events()
            .query::<CargoLoaded>()
            .since(future)
            .count()
            .await),
        0
    );
    let past = OffsetDateTime::now_utc() - time::Duration::days(3650);
    assert_eq!(
        ok(s.events().query::<CargoLoaded>().until(past).count().await),
        0
    );
    assert_eq!(
        ok(s.events()
            .query::<CargoLoaded>()
            .filter(|f| f.cargo.eq("nothing"))
            .count()
            .await),
        0
    );
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<ManifestLog>(TagQuery::new().tag(ManifestId(Uuid::now_v7())))
        .await);
    assert!(b.events().is_empty() && b.state().is_none());
}

// =====================================================================================
// Stream state
// =====================================================================================

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct FreighterLaunched {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct FreighterDocked {
    port: String,
}

fn voyage(docks: usize) -> Vec<PendingEvent> {
    std::iter::once(PendingEvent::from(FreighterLaunched {
        name: "Cargolux".into(),
    }))
    .chain((0..docks).map(|i| {
        PendingEvent::from(FreighterDocked {
            port: format!("Port {i}"),
        })
    }))
    .collect()
}

async fn freighter_store(
    label: &str,
    identity: StreamIdentity,
) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .stream_identity(identity)
        .event::<FreighterLaunched>()
        .event::<FreighterDocked>()
        .build()
        .await);
    (schema, store)
}

/// Starts a stream of `aggregate_type` with a launch and `docks` dockings.
async fn a_freighter(store: &DocumentStore, aggregate_type: &str, docks: usize) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream_of(aggregate_type, id, voyage(docks)));
    ok(s.save_changes().await);
    id
}

async fn state_of(
    store: &DocumentStore,
    stream: impl Into<StreamId>,
) -> Option<marten::StreamState> {
    let mut s = store.lightweight_session();
    ok(s.events().fetch_stream_state(stream).await)
}

/// A stream's state reports its version, keeps its creation time while its last-change
/// time moves with each append (an older stream appended to later is the newest by last
/// change and still the oldest by creation), reports an archive in both directions, and
/// an unknown stream has no state.
#[tokio::test]
async fn stream_state_reports_version_creation_last_change_and_archive() {
    let (_schema, store) = freighter_store("jx_stream_state", StreamIdentity::Uuid).await;
    let early = a_freighter(&store, "freighter", 0).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    let late = a_freighter(&store, "freighter", 2).await;
    let early_before = state_of(&store, early).await.expect("early");
    tokio::time::sleep(Duration::from_millis(40)).await;
    let mut s = store.lightweight_session();
    ok(s.events().append(
        early,
        [FreighterDocked {
            port: "Later".into(),
        }],
    ));
    ok(s.save_changes().await);

    let e = state_of(&store, early).await.expect("early");
    let l = state_of(&store, late).await.expect("late");
    assert_eq!((e.version, l.version), (2, 3));
    assert_eq!(e.id, StreamId::Uuid(early));
    assert_eq!(e.created, early_before.created, "creation never moves");
    assert!(
        e.updated > early_before.updated,
        "the append moved the last change"
    );
    assert!(e.created < l.created, "created first");
    assert!(e.updated > l.updated, "changed last");
    assert!(!e.archived && !l.archived);

    let mut s = store.lightweight_session();
    ok(s.events().archive_stream(late));
    ok(s.save_changes().await);
    let l = state_of(&store, late)
        .await
        .expect("an archived stream still has a state");
    assert!(l.archived);
    assert_eq!(l.version, 3, "archiving appends nothing");
    assert!(!state_of(&store, early).await.expect("early").archived);
    assert!(state_of(&store, Uuid::now_v7()).await.is_none());
}

/// A stream records the aggregate type it was started for; a stream started (or created
/// by an append) without one records none; appends keep the recorded type.
#[tokio::test]
async fn stream_state_records_the_aggregate_type_it_was_started_for() {
    let (_schema, store) = freighter_store("jx_stream_state_type", StreamIdentity::Uuid).await;
    let freighter = a_freighter(&store, "freighter", 1).await;
    let tug = a_freighter(&store, "tugboat", 1).await;
    let (untyped, appended) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(untyped, voyage(0)));
    ok(s.events().append(appended, voyage(0)));
    ok(s.events().append(
        freighter,
        [FreighterDocked {
            port: "Kiel".into(),
        }],
    ));
    ok(s.save_changes().await);

    let ty = |st: Option<marten::StreamState>| st.expect("a stream").aggregate_type;
    assert_eq!(
        ty(state_of(&store, freighter).await).as_deref(),
        Some("freighter")
    );
    assert_eq!(ty(state_of(&store, tug).await).as_deref(), Some("tugboat"));
    assert_eq!(ty(state_of(&store, untyped).await), None);
    assert_eq!(ty(state_of(&store, appended).await), None);
}

/// On a store with string stream ids, a stream's state is found by its key, names that
/// key and its own version, and an unknown key has no state.
#[tokio::test]
async fn stream_state_by_a_string_key() {
    let (_schema, store) = freighter_store("jx_stream_state_string", StreamIdentity::String).await;
    let mut s = store.lightweight_session();
    ok(s.events().start_stream("freighter-a", voyage(0)));
    ok(s.events().start_stream("freighter-b", voyage(1)));
    ok(s.save_changes().await);
    let b = state_of(&store, "freighter-b").await.expect("b");
    assert_eq!(b.id, StreamId::String("freighter-b".into()));
    assert_eq!(b.version, 2);
    assert_eq!(
        state_of(&store, "freighter-a").await.map(|a| a.version),
        Some(1)
    );
    assert!(state_of(&store, "freighter-c").await.is_none());
}

// =====================================================================================
// Strong-typed aggregate ids
// =====================================================================================

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PaymentId(Uuid);

#[derive(DocumentId, Clone, Debug, PartialEq, Eq, Hash)]
struct InvoiceId(String);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentRaised {
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentSettled {
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct InvoiceIssued {
    customer: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct InvoicePaid {}

/// Keyed by a uuid newtype; its creation does not know the id: the store sets it.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Payment {
    id: PaymentId,
    version: i64,
    outstanding: i64,
    settled: bool,
}

#[marten::apply]
impl Payment {
    fn create(e: &PaymentRaised) -> Self {
        Payment {
            id: PaymentId(Uuid::nil()),
            version: 0,
            outstanding: e.cents,
            settled: false,
        }
    }
    fn apply(&mut self, e: &PaymentSettled) {
        self.outstanding -= e.cents;
        self.settled = self.outstanding <= 0;
    }
}

/// Keyed by a string newtype, on a store with string stream ids.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Invoice {
    id: InvoiceId,
    version: i64,
    customer: String,
    paid: bool,
}

#[marten::apply]
impl Invoice {
    fn create(e: &InvoiceIssued) -> Self {
        Invoice {
            id: InvoiceId("unset".into()),
            version: 0,
            customer: e.customer.clone(),
            paid: false,
        }
    }
    fn apply(&mut self, _e: &InvoicePaid) {
        self.paid = true;
    }
}

async fn payment_store(
    label: &str,
    lifecycle: Option<Lifecycle>,
) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let b = b.event::<PaymentRaised>().event::<PaymentSettled>();
    let b = match lifecycle {
        Some(l) => b.projection::<Payment>(l),
        None => b,
    };
    (schema, ok(b.build().await))
}

/// Starts a payment stream with `events`, by its typed id.
async fn a_payment(store: &DocumentStore, events: Vec<PendingEvent>) -> PaymentId {
    let id = PaymentId(Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, events));
    ok(s.save_changes().await);
    id
}

fn raised(cents: i64) -> PendingEvent {
    PaymentRaised { cents }.into()
}

fn settled(cents: i64) -> PendingEvent {
    PaymentSettled { cents }.into()
}

/// A live fold by a uuid newtype id carries the stream's id in the aggregate's id field
/// (creation left it nil) and the folded state.
#[tokio::test]
async fn a_live_fold_by_a_uuid_newtype_id_carries_the_stream_id() {
    let (_schema, store) = payment_store("jx_typed_live", None).await;
    let id = a_payment(&store, vec![raised(100), settled(40)]).await;
    let mut s = store.lightweight_session();
    let p: Payment = ok(s.events().aggregate_stream(id).await).expect("a payment");
    assert_eq!(p.id, id);
    assert_eq!((p.outstanding, p.version, p.settled), (60, 2, false));
    let latest: Payment = ok(s.events().fetch_latest(id).await).expect("a payment");
    assert_eq!(latest, p);
    assert!(ok(s
        .events()
        .aggregate_stream::<Payment>(PaymentId(Uuid::now_v7()))
        .await)
    .is_none());
}

/// An inline aggregate keyed by a uuid newtype is stored under that id, loads by it and
/// is what `fetch_latest` returns.
#[tokio::test]
async fn an_inline_aggregate_is_stored_and_read_by_its_uuid_newtype_id() {
    let (_schema, store) = payment_store("jx_typed_inline", Some(Lifecycle::Inline)).await;
    let id = a_payment(&store, vec![raised(100), settled(100)]).await;
    let mut q = store.query_session();
    let stored: Payment = ok(q.load(&id).await).expect("the inline document");
    assert_eq!(stored.id, id);
    assert!(stored.settled);
    let mut s = store.lightweight_session();
    let latest: Payment = ok(s.events().fetch_latest(id).await).expect("latest");
    assert_eq!(latest, stored);
}

/// `fetch_for_writing` by a uuid newtype id reads the aggregate with its id, an append
/// through it advances the stored aggregate, and `write_to_aggregate` by the same id
/// decides on that state.
#[tokio::test]
async fn writing_by_a_uuid_newtype_id_advances_the_aggregate() {
    let (_schema, store) = payment_store("jx_typed_writing", Some(Lifecycle::Inline)).await;
    let id = a_payment(&store, vec![raised(100)]).await;
    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_writing::<Payment>(id).await);
    assert_eq!(w.version(), 1);
    assert_eq!(w.state().map(|p| (p.id, p.outstanding)), Some((id, 100)));
    ok(w.append([PaymentSettled { cents: 25 }]));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    let p: Payment = ok(s.events().fetch_latest(id).await).expect("latest");
    assert_eq!((p.outstanding, p.version), (75, 2));

    let mut s = store.lightweight_session();
    let version = ok(s
        .events()
        .write_to_aggregate(id, |p: Option<&Payment>| {
            Ok::<_, marten::Error>(p.map(|p| PaymentSettled {
                cents: p.outstanding,
            }))
        })
        .await);
    assert_eq!(version, 3);
    let mut q = store.query_session();
    let stored: Payment = ok(q.load(&id).await).expect("stored");
    assert!(stored.settled && stored.outstanding == 0);
}

/// `fetch_for_exclusive_writing` by a uuid newtype id reads the aggregate with its id
/// under the lock, and its append settles the payment.
#[tokio::test]
async fn exclusive_writing_by_a_uuid_newtype_id() {
    let (_schema, store) = payment_store("jx_typed_exclusive", Some(Lifecycle::Inline)).await;
    let id = a_payment(&store, vec![raised(50)]).await;
    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_exclusive_writing::<Payment>(id).await);
    assert_eq!(w.state().map(|p| p.id), Some(id));
    ok(w.append([PaymentSettled { cents: 50 }]));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    let p: Payment = ok(s.events().fetch_latest(id).await).expect("latest");
    assert!(p.settled);
}

/// `fetch_for_writing` of a uuid newtype id no stream has is empty (no state, version 0),
/// and an append through it starts the stream under that id.
#[tokio::test]
async fn writing_by_an_unknown_uuid_newtype_id_starts_empty() {
    let (_schema, store) = payment_store("jx_typed_unknown", Some(Lifecycle::Inline)).await;
    let id = PaymentId(Uuid::now_v7());
    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_writing::<Payment>(id).await);
    assert!(w.state().is_none());
    assert_eq!(w.version(), 0);
    ok(w.append([PaymentRaised { cents: 10 }]));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    let p: Payment = ok(s.events().fetch_latest(id).await).expect("started");
    assert_eq!((p.id, p.outstanding, p.version), (id, 10, 1));
}

/// An async aggregate keyed by a uuid newtype is stored by the daemon under that id.
#[tokio::test]
async fn an_async_aggregate_is_stored_under_its_uuid_newtype_id() {
    let (_schema, store) = payment_store("jx_typed_async", Some(Lifecycle::Async)).await;
    let id = a_payment(&store, vec![raised(80), settled(30)]).await;
    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    let mut q = store.query_session();
    let stored: Option<Payment> = ok(q.load(&id).await);
    ok(daemon.stop().await);
    let stored = stored.expect("the async document");
    assert_eq!((stored.id, stored.outstanding, stored.version), (id, 50, 2));
}

async fn invoice_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .event::<InvoiceIssued>()
        .event::<InvoicePaid>()
        .projection::<Invoice>(Lifecycle::Inline)
        .build()
        .await);
    (schema, store)
}

/// Starts an invoice stream with `events`, by a typed string key.
async fn an_invoice(store: &DocumentStore, events: Vec<PendingEvent>) -> InvoiceId {
    let key = InvoiceId(format!("invoice/{}", Uuid::now_v7().simple()));
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(&key, events));
    ok(s.save_changes().await);
    key
}

fn issued(customer: &str) -> PendingEvent {
    InvoiceIssued {
        customer: customer.into(),
    }
    .into()
}

/// A string newtype id carries the stream key into the aggregate, live and inline: the
/// fold, `fetch_latest` and the stored document agree, and two keys never collide.
#[tokio::test]
async fn a_string_newtype_id_carries_the_stream_key_live_and_inline() {
    let (_schema, store) = invoice_store("jx_typed_string").await;
    let first = an_invoice(&store, vec![issued("Hilda"), InvoicePaid {}.into()]).await;
    let second = an_invoice(&store, vec![issued("Grace")]).await;
    let mut s = store.lightweight_session();
    let live: Invoice = ok(s.events().aggregate_stream(first.clone()).await).expect("live");
    assert_eq!(live.id, first);
    assert_eq!(
        (live.customer.as_str(), live.paid, live.version),
        ("Hilda", true, 2)
    );
    let latest: Invoice = ok(s.events().fetch_latest(&first).await).expect("latest");
    assert_eq!(latest, live);
    let mut q = store.query_session();
    let stored: Invoice = ok(q.load(&first).await).expect("stored");
    assert_eq!(stored, live);
    let other: Invoice = ok(s.events().fetch_latest(&second).await).expect("second");
    assert_eq!(
        (other.id, other.customer.as_str(), other.paid),
        (second, "Grace", false)
    );
}

/// `fetch_for_writing` by a string newtype id reads the aggregate with its key, and an
/// append through it pays the invoice.
#[tokio::test]
async fn writing_by_a_string_newtype_id_advances_the_aggregate() {
    let (_schema, store) = invoice_store("jx_typed_string_writing").await;
    let key = an_invoice(&store, vec![issued("Ada")]).await;
    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_writing::<Invoice>(&key).await);
    assert_eq!(
        w.state().map(|i| (i.id.clone(), i.customer.clone())),
        Some((key.clone(), "Ada".to_owned()))
    );
    ok(w.append([InvoicePaid {}]));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    let i: Invoice = ok(s.events().fetch_latest(&key).await).expect("latest");
    assert!(i.paid);
    assert_eq!(i.id, key);
}
