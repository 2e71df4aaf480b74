//! Dynamic consistency boundaries (event tags), scenarios carried over from the DCB
//! compliance suite of JasperFx.Events (`DcbTagQueryAndConsistencyCompliance`), from
//! Marten's own DCB tests (`src/EventSourcingTests/Dcb`, `src/TenantPartitionedEventsTests/Dcb`)
//! and from the DCB specification (dcb.events): boundaries over several tags and types,
//! a boundary that found nothing, tags outside a boundary, several tags on one event,
//! value types of tags, fold order, all-or-nothing saves, racing writers on overlapping
//! boundaries and tenants. Each test has a schema of its own.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{builder, ok};
use marten::prelude::*;
use marten::{EventTag, IdKey, RejectionKind, Tenancy};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

// ---- Tags ----

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StudentId(Uuid);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CourseId(Uuid);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SchoolId(Uuid);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[tag(name = "team")]
struct TeamId(Uuid);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LeagueId(Uuid);

#[derive(Tag, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
struct Code(String);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Seat(i32);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Ticket(i64);

// ---- Events ----

/// Carries the student tag only.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StudentEnrolled {
    #[tag]
    student: StudentId,
    name: String,
}

/// Carries the course tag only.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CourseOpened {
    #[tag]
    course: CourseId,
    name: String,
}

/// Carries both the student and the course tag.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AssignmentSubmitted {
    #[tag]
    student: StudentId,
    #[tag]
    course: CourseId,
    name: String,
}

/// Carries a school tag that no boundary of these tests queries.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noticed {
    #[tag]
    school: SchoolId,
    name: String,
}

/// Two courses linked by one event: two tags of one type.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Linked {
    #[tag]
    left: CourseId,
    #[tag]
    right: CourseId,
    name: String,
}

/// Three tags of one type alongside a tag of another type.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MatchPlayed {
    #[tag]
    home: TeamId,
    #[tag]
    away: TeamId,
    #[tag]
    neutral: TeamId,
    #[tag]
    league: LeagueId,
    name: String,
}

/// A tag of every supported value type: newtypes over `String`, `i32`, `i64` and `Uuid`,
/// and plain `i64` and `String` fields tagged under a name.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Labelled {
    #[tag]
    code: Code,
    #[tag]
    seat: Seat,
    #[tag]
    ticket: Ticket,
    #[tag]
    student: StudentId,
    #[tag(name = "serial")]
    serial: i64,
    #[tag(name = "plain_code")]
    plain: String,
    name: String,
}

// ---- Boundary state: the names of the events folded, in the order folded ----

#[derive(Default, Debug)]
struct Log {
    seen: Vec<String>,
}

#[marten::apply]
impl Log {
    fn apply_enrolled(&mut self, e: &StudentEnrolled) {
        self.seen.push(e.name.clone());
    }
    fn apply_opened(&mut self, e: &CourseOpened) {
        self.seen.push(e.name.clone());
    }
    fn apply_submitted(&mut self, e: &AssignmentSubmitted) {
        self.seen.push(e.name.clone());
    }
    fn apply_noticed(&mut self, e: &Noticed) {
        self.seen.push(e.name.clone());
    }
    fn apply_linked(&mut self, e: &Linked) {
        self.seen.push(e.name.clone());
    }
    fn apply_match(&mut self, e: &MatchPlayed) {
        self.seen.push(e.name.clone());
    }
    fn apply_labelled(&mut self, e: &Labelled) {
        self.seen.push(e.name.clone());
    }
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Roster {
    id: String,
    course: Uuid,
}

// ---- Helpers ----

fn student() -> StudentId {
    StudentId(Uuid::now_v7())
}

fn course() -> CourseId {
    CourseId(Uuid::now_v7())
}

fn enrolled(student: StudentId, name: &str) -> StudentEnrolled {
    StudentEnrolled {
        student,
        name: name.into(),
    }
}

fn opened(course: CourseId, name: &str) -> CourseOpened {
    CourseOpened {
        course,
        name: name.into(),
    }
}

fn submitted(student: StudentId, course: CourseId, name: &str) -> AssignmentSubmitted {
    AssignmentSubmitted {
        student,
        course,
        name: name.into(),
    }
}

/// A store with every event type and the roster documents, on a schema of its own.
async fn store(label: &str, pool: usize) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .pool_size(pool)
        .event::<StudentEnrolled>()
        .event::<CourseOpened>()
        .event::<AssignmentSubmitted>()
        .event::<Noticed>()
        .event::<Linked>()
        .event::<MatchPlayed>()
        .event::<Labelled>()
        .document::<Roster>()
        .build()
        .await);
    (schema, store)
}

/// Appends `events` to a new stream of their own and saves.
async fn append_new<E: Event>(store: &DocumentStore, events: impl IntoIterator<Item = E>) {
    let mut s = store.lightweight_session();
    ok(s.events().append(Uuid::now_v7(), events));
    ok(s.save_changes().await);
}

/// What a fresh boundary over `q` sees: the folded names (in order), and the versions.
async fn read(store: &DocumentStore, q: TagQuery) -> (Vec<String>, Vec<(EventTag, i64)>) {
    let mut s = store.lightweight_session();
    let b = ok(s.events().fetch_for_writing_by_tags::<Log>(q).await);
    let seen = b.state().map(|l| l.seen.clone()).unwrap_or_default();
    assert_eq!(seen.len(), b.events().len(), "every event is folded once");
    (seen, b.versions().to_vec())
}

/// The names a fresh boundary over `q` folds, in order.
async fn names(store: &DocumentStore, q: TagQuery) -> Vec<String> {
    read(store, q).await.0
}

/// The (tag type, tag value, expected, actual) of each rejection of `err`, which must be
/// a rejection made of DCB rejections only.
#[track_caller]
fn dcb(err: &marten::Error) -> Vec<(String, String, i64, i64)> {
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
            ) => (tag_type.clone(), value.clone(), *expected, *actual),
            other => panic!("expected only DCB rejections, got {other:?} in {err:?}"),
        })
        .collect()
}

// ---- Reading boundaries ----

/// Source: JasperFx.Events compliance `can_query_events_across_distinct_tag_types_with_or`
/// and `can_aggregate_events_by_tags`; dcb.events specification (an event matches a query
/// when it matches any of its items).
///
/// A boundary over a student and a course matches events carrying either tag only (an OR,
/// not an AND that would need both), reads an event carrying both once, and folds all of
/// them; an event carrying only the course tag moves that boundary.
#[tokio::test]
async fn a_boundary_over_two_tag_types_matches_events_carrying_either_one() {
    let (_schema, store) = store("tagsc_two_types", 8).await;
    let (s1, c1) = (student(), course());
    append_new(&store, [enrolled(s1, "enrolled")]).await;
    append_new(&store, [opened(c1, "opened")]).await;
    append_new(&store, [submitted(s1, c1, "both")]).await;
    // Noise: other students and courses.
    append_new(&store, [enrolled(student(), "other student")]).await;
    append_new(&store, [opened(course(), "other course")]).await;
    append_new(&store, [submitted(student(), course(), "other both")]).await;

    let both = || TagQuery::new().tag(s1).tag(c1);
    let (seen, versions) = read(&store, both()).await;
    assert_eq!(seen, ["enrolled", "opened", "both"]);
    let tags: Vec<&EventTag> = versions.iter().map(|(t, _)| t).collect();
    assert_eq!(tags, [&EventTag::of(&c1), &EventTag::of(&s1)]);
    assert!(versions.iter().all(|(_, v)| *v > 0), "{versions:?}");
    assert_eq!(
        names(&store, TagQuery::new().tag(s1)).await,
        ["enrolled", "both"]
    );
    assert_eq!(
        names(&store, TagQuery::new().tag(c1)).await,
        ["opened", "both"]
    );
    // The same tag given twice is one tag.
    assert_eq!(names(&store, both().tag(s1)).await.len(), 3);

    // An event carrying only one of the boundary's tags moves it.
    let mut s = store.lightweight_session();
    let mut b = ok(s.events().fetch_for_writing_by_tags::<Log>(both()).await);
    ok(b.append([submitted(s1, c1, "late")]));
    append_new(&store, [opened(c1, "reopened")]).await;
    let err = s.save_changes().await.expect_err("the course moved");
    let rejected = dcb(&err);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        (rejected[0].0.as_str(), rejected[0].1.as_str()),
        ("course_id", c1.0.to_string().as_str())
    );
    assert!(rejected[0].3 > rejected[0].2, "{rejected:?}");
    // Read again, the save commits.
    let mut b = ok(s.events().fetch_for_writing_by_tags::<Log>(both()).await);
    ok(b.append([submitted(s1, c1, "late")]));
    ok(s.save_changes().await);
    assert_eq!(
        names(&store, both()).await,
        ["enrolled", "opened", "both", "reopened", "late"]
    );
}

/// Source: JasperFx.Events compliance `can_query_events_by_tag_with_event_type_filter` and
/// `events_exist_with_event_type_filter` (with Marten's `hstore_dcb_tag_tests` twins).
///
/// A boundary limited to some event types reads only those of the tag's events; limited to
/// a type no event of the tag has, it reads nothing and has no state, yet still knows the
/// tag's version, and a save through it commits when nothing moved.
#[tokio::test]
async fn an_event_type_filter_narrows_the_events_not_the_tag() {
    let (_schema, store) = store("tagsc_types", 8).await;
    let (s1, c1) = (student(), course());
    let mut s = store.lightweight_session();
    ok(s.events().append(
        Uuid::now_v7(),
        [
            PendingEvent::new(enrolled(s1, "enrolled")),
            PendingEvent::new(submitted(s1, c1, "hw1")),
        ],
    ));
    ok(s.save_changes().await);

    let q = TagQuery::new()
        .tag(s1)
        .event_types::<(AssignmentSubmitted,)>();
    assert_eq!(names(&store, q).await, ["hw1"]);
    let q = TagQuery::new()
        .tag(s1)
        .event_types::<(StudentEnrolled, AssignmentSubmitted)>();
    assert_eq!(names(&store, q).await, ["enrolled", "hw1"]);
    // The course tag is on the assignment only.
    let q = TagQuery::new().tag(c1).event_types::<(StudentEnrolled,)>();
    assert!(names(&store, q).await.is_empty());

    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(s1).event_types::<(CourseOpened,)>())
        .await);
    assert!(b.state().is_none(), "no matching event, no state");
    assert!(b.events().is_empty());
    assert_eq!(b.versions().len(), 1);
    assert!(
        b.versions()[0].1 > 0,
        "the tag has events: {:?}",
        b.versions()
    );
    ok(b.append([enrolled(s1, "again")]));
    ok(s.save_changes().await);
    assert_eq!(
        names(&store, TagQuery::new().tag(s1)).await,
        ["enrolled", "hw1", "again"]
    );
}

/// Source: JasperFx.Events compliance `fetch_for_writing_with_empty_result_still_enforces_consistency`,
/// `aggregate_by_tags_returns_null_when_no_events` and `query_returns_empty_when_no_matching_tags`.
///
/// A boundary over a tag no event has yet reads nothing, has no state and version 0; when
/// another session appends the first event with that tag before the boundary's save, the
/// save is rejected (expected 0) and writes nothing.
#[tokio::test]
async fn a_boundary_that_found_nothing_is_still_enforced() {
    let (_schema, store) = store("tagsc_empty", 8).await;
    append_new(&store, [enrolled(student(), "someone else")]).await;
    let s1 = student();

    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(s1))
        .await);
    assert!(b.state().is_none());
    assert!(b.events().is_empty());
    assert_eq!(b.versions(), [(EventTag::of(&s1), 0)]);
    ok(b.append([enrolled(s1, "mine")]));

    append_new(&store, [enrolled(s1, "first")]).await;
    let err = s
        .save_changes()
        .await
        .expect_err("the tag got its first event");
    let rejected = dcb(&err);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let (tag_type, value, expected, actual) = &rejected[0];
    assert_eq!(
        (tag_type.as_str(), value.as_str(), *expected),
        ("student_id", s1.0.to_string().as_str(), 0)
    );
    assert!(*actual > 0, "{rejected:?}");
    assert_eq!(names(&store, TagQuery::new().tag(s1)).await, ["first"]);
}

// ---- Tags on events ----

/// Source: JasperFx.Events compliance `fetch_for_writing_by_tags_no_violation_when_unrelated_events_appended`
/// (and Marten's `dcb_quick_append_tests` twin).
///
/// A boundary over one student is not moved by another student's event, even one sharing
/// a course with it, and its own append may carry tags it did not query. Those tags still
/// move: a boundary over the course, read before that save, is rejected by it.
#[tokio::test]
async fn tags_outside_a_boundary_do_not_conflict_with_it_but_still_move() {
    let (_schema, store) = store("tagsc_unrelated", 8).await;
    let (alice, bob, math) = (student(), student(), course());
    append_new(&store, [submitted(alice, math, "alice hw0")]).await;

    let mut by_student = store.lightweight_session();
    let mut student_boundary = ok(by_student
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(alice))
        .await);
    assert_eq!(student_boundary.events().len(), 1);

    // Bob's event shares the course, not the student.
    append_new(&store, [submitted(bob, math, "bob hw0")]).await;

    let mut by_course = store.lightweight_session();
    let mut course_boundary = ok(by_course
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(math))
        .await);
    assert_eq!(course_boundary.events().len(), 2);
    let course_version = course_boundary.versions()[0].1;

    // Alice's save commits: Bob's event carried none of its tags. Its event carries the
    // course tag, which it did not query.
    ok(student_boundary.append([submitted(alice, math, "alice hw1")]));
    ok(by_student.save_changes().await);

    ok(course_boundary.append([opened(math, "closed")]));
    let err = by_course
        .save_changes()
        .await
        .expect_err("Alice's event moved the course");
    let rejected = dcb(&err);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].0, "course_id");
    assert_eq!(rejected[0].2, course_version);
    assert!(rejected[0].3 > course_version, "{rejected:?}");
    assert_eq!(
        names(&store, TagQuery::new().tag(math)).await,
        ["alice hw0", "bob hw0", "alice hw1"]
    );
    assert_eq!(names(&store, TagQuery::new().tag(bob)).await, ["bob hw0"]);
}

/// Source: Marten `Bug_5265_multiple_tags_of_one_type` (three tags of one type beside
/// another type; the same value twice on one event stores one row; several events in one
/// append keep their own tags) and `dcb_multiple_tags_of_one_type_tests` (append and
/// start_stream both store every tag of one type).
///
/// Each of several tags of one type finds the event exactly once, a boundary over all its
/// tags reads it once, a repeated value is one tag row, and each event of one append is
/// found by its own tags only.
#[tokio::test]
async fn several_tags_of_one_type_on_one_event_each_find_it_once() {
    let (schema, store) = store("tagsc_same_type", 8).await;
    let team = || TeamId(Uuid::now_v7());
    let league = LeagueId(Uuid::now_v7());
    let game = |home, away, neutral, name: &str| MatchPlayed {
        home,
        away,
        neutral,
        league,
        name: name.into(),
    };
    let stream = Uuid::now_v7();
    let (a, b, c) = (team(), team(), team());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(stream, [game(a, b, c, "opening")]));
    ok(s.save_changes().await);
    let (d, e, f) = (team(), team(), team());
    ok(s.events().append(stream, [game(d, e, f, "second")]));
    ok(s.save_changes().await);

    for (t, expected) in [
        (a, "opening"),
        (b, "opening"),
        (c, "opening"),
        (d, "second"),
        (e, "second"),
        (f, "second"),
    ] {
        assert_eq!(
            names(&store, TagQuery::new().tag(t)).await,
            [expected],
            "{t:?}"
        );
    }
    assert_eq!(
        names(&store, TagQuery::new().tag(league)).await,
        ["opening", "second"]
    );
    let all = TagQuery::new().tag(d).tag(e).tag(f).tag(league);
    let (seen, versions) = read(&store, all).await;
    assert_eq!(seen, ["opening", "second"], "each event read once");
    assert_eq!(versions.len(), 4);

    // The same team three times over: one tag row, found once.
    let g = team();
    ok(s.events().append(stream, [game(g, g, g, "derby")]));
    ok(s.save_changes().await);
    assert_eq!(names(&store, TagQuery::new().tag(g)).await, ["derby"]);
    let raw = schema.raw_client().await;
    let rows: i64 = raw
        .query_one(
            "SELECT count(*) FROM mt_event_tags WHERE tag_type = 'team' AND tag_value = $1",
            &[&g.0.to_string()],
        )
        .await
        .expect("tag rows")
        .get(0);
    assert_eq!(rows, 1);

    // Two events in one append, each with tags of its own.
    let (h1, a1, n1, h2, a2, n2) = (team(), team(), team(), team(), team(), team());
    ok(s.events().append(
        stream,
        [game(h1, a1, n1, "day one"), game(h2, a2, n2, "day two")],
    ));
    ok(s.save_changes().await);
    for (t, expected) in [
        (h1, "day one"),
        (a1, "day one"),
        (n1, "day one"),
        (h2, "day two"),
        (a2, "day two"),
        (n2, "day two"),
    ] {
        assert_eq!(
            names(&store, TagQuery::new().tag(t)).await,
            [expected],
            "{t:?}"
        );
    }
    assert_eq!(
        names(&store, TagQuery::new().tag(a1).tag(h2)).await,
        ["day one", "day two"]
    );

    // Two tags of one type in one boundary: a save under either moves it.
    let (left, right) = (course(), course());
    append_new(
        &store,
        [Linked {
            left,
            right,
            name: "linked".into(),
        }],
    )
    .await;
    assert_eq!(names(&store, TagQuery::new().tag(right)).await, ["linked"]);
    let mut s = store.lightweight_session();
    let mut boundary = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(left))
        .await);
    ok(boundary.append([opened(left, "left again")]));
    append_new(
        &store,
        [Linked {
            left: course(),
            right: left,
            name: "relinked".into(),
        }],
    )
    .await;
    let err = s
        .save_changes()
        .await
        .expect_err("left moved as a right-hand tag");
    assert_eq!(dcb(&err)[0].1, left.0.to_string());
}

/// Source: Marten `hstore_tag_value_types_tests` (each supported value type round-trips,
/// strings are case-sensitive, extreme integers, one event with a tag of every type found
/// by an OR over all of them and by each alone).
///
/// Tags over `String`, `i32`, `i64` and `Uuid` newtypes and plain `i64`/`String` fields
/// find their event by the exact value and never by a near miss.
#[tokio::test]
async fn tag_values_of_every_supported_type_match_exactly() {
    let (_schema, store) = store("tagsc_value_types", 8).await;
    let uuid = student();
    let event = Labelled {
        code: Code("CaseSensitive".into()),
        seat: Seat(i32::MIN),
        ticket: Ticket(i64::MAX),
        student: uuid,
        serial: -5,
        plain: "Plain Value".into(),
        name: "labelled".into(),
    };
    append_new(&store, [event]).await;
    // A neighbour whose values are the near misses of the first one's.
    append_new(
        &store,
        [Labelled {
            code: Code("casesensitive".into()),
            seat: Seat(-1),
            ticket: Ticket(i64::MAX - 1),
            student: student(),
            serial: 5,
            plain: "plain value".into(),
            name: "neighbour".into(),
        }],
    )
    .await;

    let hits = [
        TagQuery::new().tag(Code("CaseSensitive".into())),
        TagQuery::new().tag(Seat(i32::MIN)),
        TagQuery::new().tag(Ticket(i64::MAX)),
        TagQuery::new().tag(uuid),
        TagQuery::new().tag_named("serial", -5i64),
        TagQuery::new().tag_named("plain_code", "Plain Value"),
    ];
    for q in hits {
        assert_eq!(names(&store, q.clone()).await, ["labelled"], "{q:?}");
    }
    let misses = [
        TagQuery::new().tag(Code("CASESENSITIVE".into())),
        TagQuery::new().tag(Seat(i32::MAX)),
        TagQuery::new().tag(Seat(0)),
        TagQuery::new().tag(Ticket(i64::MIN)),
        TagQuery::new().tag(student()),
        TagQuery::new().tag_named("serial", 6i64),
        TagQuery::new().tag_named("plain_code", "Plain"),
        // A value under another tag type is no match.
        TagQuery::new().tag_named("seat", i64::MAX),
    ];
    for q in misses {
        assert!(names(&store, q.clone()).await.is_empty(), "{q:?}");
    }
    let every = TagQuery::new()
        .tag(Code("CaseSensitive".into()))
        .tag(Seat(i32::MIN))
        .tag(Ticket(i64::MAX))
        .tag(uuid)
        .tag_named("serial", -5i64)
        .tag_named("plain_code", "Plain Value");
    let (seen, versions) = read(&store, every).await;
    assert_eq!(seen, ["labelled"], "one event, read once for six tags");
    assert_eq!(versions.len(), 6);
    assert!(versions.iter().all(|(_, v)| *v > 0), "{versions:?}");
}

/// Source: JasperFx.Events compliance `query_events_ordered_by_sequence` and
/// `events_across_multiple_streams_can_be_queried_by_tag`; dcb.events specification
/// (events are read in the order of their sequence position).
///
/// A boundary over a tag whose events lie in several streams reads them in global
/// sequence order, not grouped by stream, and folds them in that order.
#[tokio::test]
async fn a_boundary_folds_events_of_several_streams_in_sequence_order() {
    let (_schema, store) = store("tagsc_order", 8).await;
    let (s1, c1, c2) = (student(), course(), course());
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().append(a, [submitted(s1, c1, "a1")]));
    ok(s.save_changes().await);
    ok(s.events().append(b, [submitted(s1, c2, "b1")]));
    ok(s.save_changes().await);
    ok(s.events().append(a, [enrolled(s1, "a2")]));
    ok(s.save_changes().await);
    ok(s.events().append(
        b,
        [
            PendingEvent::new(submitted(s1, c2, "b2")),
            PendingEvent::new(enrolled(s1, "b3")),
            PendingEvent::new(submitted(s1, c1, "b4")),
        ],
    ));
    ok(s.save_changes().await);

    let mut r = store.lightweight_session();
    let boundary = ok(r
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(s1))
        .await);
    assert_eq!(
        boundary.state().map(|l| l.seen.clone()),
        Some(
            ["a1", "b1", "a2", "b2", "b3", "b4"]
                .map(String::from)
                .to_vec()
        )
    );
    let sequences: Vec<i64> = boundary.events().iter().map(|e| e.sequence).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "sequence order: {sequences:?}"
    );
    let placed: Vec<(StreamId, i64)> = boundary
        .events()
        .iter()
        .map(|e| (e.stream_id.clone(), e.version))
        .collect();
    assert_eq!(
        placed,
        [
            (StreamId::Uuid(a), 1),
            (StreamId::Uuid(b), 1),
            (StreamId::Uuid(a), 2),
            (StreamId::Uuid(b), 2),
            (StreamId::Uuid(b), 3),
            (StreamId::Uuid(b), 4),
        ]
    );
    // By course: the events of each course only, still in sequence order.
    assert_eq!(names(&store, TagQuery::new().tag(c1)).await, ["a1", "b4"]);
    assert_eq!(names(&store, TagQuery::new().tag(c2)).await, ["b1", "b2"]);
}

/// Source: JasperFx.Events compliance `fetch_for_writing_appends_to_existing_tag_derived_stream_without_collision`
/// and `append_event_with_tag_having_no_aggregate_type_creates_new_stream`.
///
/// A boundary may append to the existing stream named after its tag (the stream goes on,
/// no collision), and a boundary append without a stream starts a new stream each time.
#[tokio::test]
async fn a_boundary_appends_to_an_existing_stream_or_starts_new_ones() {
    let (_schema, store) = store("tagsc_streams", 8).await;
    let s1 = student();
    let own = s1.0;
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(own, [enrolled(s1, "enrolled")]));
    ok(s.save_changes().await);

    let c1 = course();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(s1))
        .await);
    ok(b.append_to(own, [submitted(s1, c1, "hw1")]));
    ok(s.save_changes().await);
    let stream = ok(s.events().fetch_stream(own).await);
    let versions: Vec<i64> = stream.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2]);

    let mut new_streams = BTreeSet::new();
    for name in ["hw2", "hw3"] {
        let mut b = ok(s
            .events()
            .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(s1))
            .await);
        ok(b.append([submitted(s1, c1, name)]));
        ok(s.save_changes().await);
    }
    let mut r = store.lightweight_session();
    let b = ok(r
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(s1))
        .await);
    assert_eq!(
        b.state().map(|l| l.seen.clone()),
        Some(["enrolled", "hw1", "hw2", "hw3"].map(String::from).to_vec())
    );
    for e in &b.events()[2..] {
        assert_eq!(e.version, 1, "a new stream");
        assert_ne!(e.stream_id, StreamId::Uuid(own));
        new_streams.insert(format!("{:?}", e.stream_id));
    }
    assert_eq!(new_streams.len(), 2, "one new stream per append");
}

/// Source: JasperFx.Events compliance `fetch_for_writing_by_tags_throws_on_empty_query`;
/// dcb.events specification (a query has at least one item).
///
/// A boundary needs at least one tag: an empty query, or one of event types only, is a
/// configuration error, and the session is still usable after it.
#[tokio::test]
async fn a_boundary_without_tags_is_refused() {
    let (_schema, store) = store("tagsc_no_tags", 8).await;
    let mut s = store.lightweight_session();
    for q in [
        TagQuery::new(),
        TagQuery::new().event_types::<(StudentEnrolled,)>(),
    ] {
        let err = s
            .events()
            .fetch_for_writing_by_tags::<Log>(q)
            .await
            .err()
            .expect("no tag, no boundary");
        assert!(matches!(err, marten::Error::Configuration(_)), "{err:?}");
    }
    let s1 = student();
    ok(s.events().append(Uuid::now_v7(), [enrolled(s1, "after")]));
    ok(s.save_changes().await);
    assert_eq!(names(&store, TagQuery::new().tag(s1)).await, ["after"]);
}

// ---- Saves: all or nothing ----

/// Source: dcb.events specification (an append with a failing condition persists none of
/// its events, atomically); Marten's `DcbTagVersionAssertion` (a failed tag check fails the
/// whole `SaveChangesAsync` batch, with the documents and appends it carries); the
/// README's "save_changes: one transaction, ... all or nothing".
///
/// A save mixing a boundary append with a document and another tagged append: rejected by
/// the boundary, it writes none of them, not even the other append's tag version; rejected
/// by the document, it writes none of the boundary's events; rejected by both, it names both.
#[tokio::test]
async fn a_save_with_a_boundary_is_all_or_nothing() {
    let (_schema, store) = store("tagsc_atomic", 8).await;
    let (s1, c1) = (student(), course());
    append_new(&store, [opened(c1, "opened")]).await;
    let mut s = store.lightweight_session();
    ok(s.store(Roster {
        id: "taken".into(),
        course: c1.0,
    }));
    ok(s.save_changes().await);

    // 1. The boundary moved: nothing of the save is written.
    let (x, y, other) = (Uuid::now_v7(), Uuid::now_v7(), course());
    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
        .await);
    ok(b.append_to(
        x,
        [
            PendingEvent::new(enrolled(s1, "enrolled")),
            PendingEvent::new(submitted(s1, c1, "hw")),
        ],
    ));
    ok(s.store(Roster {
        id: "new".into(),
        course: c1.0,
    }));
    ok(s.events().append(y, [opened(other, "other course")]));
    append_new(&store, [opened(c1, "racer")]).await;
    let err = s.save_changes().await.expect_err("the course moved");
    assert_eq!(dcb(&err).len(), 1, "{err:?}");
    assert!(ok(s.load::<Roster>(&"new".to_owned()).await).is_none());
    assert!(ok(s.events().fetch_stream(x).await).is_empty());
    assert!(ok(s.events().fetch_stream(y).await).is_empty());
    let (seen, versions) = read(&store, TagQuery::new().tag(other).tag(s1)).await;
    assert!(seen.is_empty(), "{seen:?}");
    assert!(
        versions.iter().all(|(_, v)| *v == 0),
        "tag versions of a rejected save are rolled back: {versions:?}"
    );

    // 2. The document is refused (an insert of an existing id): the boundary's events are
    //    not written and its tag does not move.
    let before = read(&store, TagQuery::new().tag(c1)).await;
    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
        .await);
    ok(b.append_to(x, [submitted(s1, c1, "hw")]));
    ok(s.insert(Roster {
        id: "taken".into(),
        course: c1.0,
    }));
    let err = s.save_changes().await.expect_err("the roster exists");
    assert!(
        matches!(err.rejections(), [r] if r.kind == RejectionKind::AlreadyExists),
        "{err:?}"
    );
    assert!(ok(s.events().fetch_stream(x).await).is_empty());
    assert_eq!(read(&store, TagQuery::new().tag(c1)).await, before);

    // 3. Both refused: the rejection names both.
    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
        .await);
    ok(b.append_to(x, [submitted(s1, c1, "hw")]));
    ok(s.insert(Roster {
        id: "taken".into(),
        course: c1.0,
    }));
    append_new(&store, [opened(c1, "racer 2")]).await;
    let err = s.save_changes().await.expect_err("both refused");
    let kinds: Vec<&RejectionKind> = err.rejections().iter().map(|r| &r.kind).collect();
    assert_eq!(kinds.len(), 2, "{err:?}");
    assert!(kinds.contains(&&RejectionKind::AlreadyExists), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, RejectionKind::DcbConcurrency { .. })),
        "{kinds:?}"
    );
    assert!(ok(s.events().fetch_stream(x).await).is_empty());

    // Read again and retried alone, the save commits whole.
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
        .await);
    ok(b.append_to(x, [submitted(s1, c1, "hw")]));
    ok(s.store(Roster {
        id: "new".into(),
        course: c1.0,
    }));
    ok(s.save_changes().await);
    assert_eq!(ok(s.events().fetch_stream(x).await).len(), 1);
    assert!(ok(s.load::<Roster>(&"new".to_owned()).await).is_some());
}

/// Source: Marten `FetchForWritingByTags` (each boundary a session reads queues its own
/// tag-version assertion for the save); dcb.events specification (the append condition
/// covers every query the decision read).
///
/// One save through two boundaries read one after the other asserts both: a writer moving
/// only the second one's tag rejects the whole save, the first boundary's events included.
#[tokio::test]
async fn a_save_through_two_boundaries_asserts_both() {
    let (_schema, store) = store("tagsc_two_boundaries", 8).await;
    let (s1, c1, c2) = (student(), course(), course());
    append_new(&store, [opened(c1, "c1"), opened(c2, "c2")]).await;
    for moved in [c1, c2] {
        let mut s = store.lightweight_session();
        let mut first = ok(s
            .events()
            .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
            .await);
        ok(first.append([submitted(s1, c1, "first")]));
        let mut second = ok(s
            .events()
            .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c2))
            .await);
        ok(second.append([opened(c2, "second")]));
        append_new(&store, [opened(moved, "racer")]).await;
        let err = s.save_changes().await.expect_err("one boundary moved");
        let rejected = dcb(&err);
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].1, moved.0.to_string());
        assert!(
            names(&store, TagQuery::new().tag(s1)).await.is_empty(),
            "the first boundary's event is not written either"
        );
    }
    let mut s = store.lightweight_session();
    let mut first = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
        .await);
    ok(first.append([submitted(s1, c1, "first")]));
    let mut second = ok(s
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c2))
        .await);
    ok(second.append([opened(c2, "second")]));
    ok(s.save_changes().await);
    assert_eq!(
        names(&store, TagQuery::new().tag(c1)).await,
        ["c1", "racer", "first"]
    );
    assert_eq!(
        names(&store, TagQuery::new().tag(c2)).await,
        ["c2", "racer", "second"]
    );
}

// ---- Racing writers ----

/// Source: JasperFx.Events compliance `fetch_for_writing_with_empty_result_still_enforces_consistency`
/// raced as in Marten `Bug_4591_truly_concurrent_dcb_tag_appends_both_commit` (eight
/// racers, each on a stream of its own, exactly one commits).
///
/// Eight sessions read a boundary over a tag no event has yet (version 0), then save at
/// once: exactly one creates the first event, the others are rejected expecting 0 and
/// write nothing. Odd rounds add a second tagged append to each save (the tag lock is then
/// a statement of its own), even rounds save the boundary's append alone (one statement).
#[tokio::test]
async fn racers_on_a_tag_without_events_commit_exactly_one_first_event() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 60;
    let (_schema, store) = store("tagsc_first_race", RACERS + 2).await;
    for round in 0..ROUNDS {
        let s1 = student();
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let side = course();
                    let saved = async {
                        let mut s = store.lightweight_session();
                        let mut b = s
                            .events()
                            .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(s1))
                            .await?;
                        assert!(b.events().is_empty() && b.state().is_none());
                        assert_eq!(b.versions(), [(EventTag::of(&s1), 0)]);
                        b.append([enrolled(s1, &format!("racer {i}"))])?;
                        if round % 2 == 1 {
                            s.events()
                                .append(Uuid::now_v7(), [opened(side, &format!("side {i}"))])?;
                        }
                        barrier.wait().await;
                        s.save_changes().await
                    }
                    .await;
                    (i, side, saved)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            match t.await.expect("racer") {
                (i, _, Ok(())) => winners.push(i),
                (_, side, Err(err)) => {
                    let rejected = dcb(&err);
                    assert_eq!(rejected.len(), 1, "round {round}: {rejected:?}");
                    assert_eq!(rejected[0].2, 0, "round {round}: {rejected:?}");
                    losers.push(side);
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one first event");
        assert_eq!(
            names(&store, TagQuery::new().tag(s1)).await,
            [format!("racer {}", winners[0])],
            "round {round}"
        );
        if round % 2 == 1 {
            let q = losers.iter().fold(TagQuery::new(), |q, side| q.tag(*side));
            assert!(
                names(&store, q).await.is_empty(),
                "round {round}: a rejected racer wrote its other append"
            );
        }
    }
}

/// Source: Marten `Bug_4591_truly_concurrent_dcb_tag_appends_both_commit` (racers sharing a
/// course tag, each with a student tag of its own: exactly one commits, every other fails
/// with the DCB error and nothing else; Marten once let 5 to 7 of 8 through) and
/// JasperFx.Events compliance `fetch_for_writing_by_tags_no_violation_when_unrelated_events_appended`.
///
/// Twelve racers in three groups: each reads a boundary over its group's course and its
/// own student (every other round also three students of its own without events), then saves an assignment with both plus a notice under a school tag every
/// racer writes and none queries. Each round exactly one racer per group commits: the
/// shared school tag never conflicts, the shared course always does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_boundaries_commit_exactly_one_writer_per_shared_tag() {
    const GROUPS: usize = 3;
    const RACERS: usize = 12;
    const ROUNDS: usize = 40;
    let (_schema, store) = store("tagsc_groups", RACERS + 2).await;
    let courses: Vec<CourseId> = (0..GROUPS).map(|_| course()).collect();
    let students: Vec<StudentId> = (0..RACERS).map(|_| student()).collect();
    // Students of each racer's that never get an event.
    let extras: Vec<[StudentId; 3]> = (0..RACERS)
        .map(|_| [student(), student(), student()])
        .collect();
    let school = SchoolId(Uuid::now_v7());
    for course in &courses {
        append_new(&store, [opened(*course, "opened")]).await;
    }
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let (course, student, extra) = (courses[i % GROUPS], students[i], extras[i]);
                tokio::spawn(async move {
                    // Odd rounds: five tags, bound as arrays rather than one by one.
                    let mut q = TagQuery::new().tag(course).tag(student);
                    if round % 2 == 1 {
                        q = extra.iter().fold(q, |q, t| q.tag(*t));
                    }
                    let mut s = store.lightweight_session();
                    let mut b = s.events().fetch_for_writing_by_tags::<Log>(q).await?;
                    b.append([
                        PendingEvent::new(submitted(student, course, &format!("r{round}"))),
                        PendingEvent::new(Noticed {
                            school,
                            name: format!("r{round} s{i}"),
                        }),
                    ])?;
                    barrier.wait().await;
                    s.save_changes().await
                })
            })
            .collect();
        let mut per_group = [0usize; GROUPS];
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.expect("racer") {
                Ok(()) => per_group[i % GROUPS] += 1,
                Err(err) => {
                    let rejected = dcb(&err);
                    let own = courses[i % GROUPS].0.to_string();
                    assert!(
                        rejected.iter().all(|r| r.0 == "course_id" && r.1 == own),
                        "round {round}, racer {i}: only its group's course can move: {rejected:?}"
                    );
                }
            }
        }
        assert_eq!(per_group, [1; GROUPS], "round {round}");
    }
    for course in &courses {
        let seen = names(&store, TagQuery::new().tag(*course)).await;
        assert_eq!(seen.len(), 1 + ROUNDS);
    }
    let notices = names(&store, TagQuery::new().tag(school)).await;
    assert_eq!(notices.len(), GROUPS * ROUNDS);
    let mut per_student = 0;
    for student in &students {
        per_student += names(&store, TagQuery::new().tag(*student)).await.len();
    }
    assert_eq!(per_student, GROUPS * ROUNDS);
}

/// Source: dcb.events specification (an append fails exactly when an event matching its
/// condition was appended after the read) and Marten `Bug_4591_truly_concurrent_dcb_tag_appends_both_commit`
/// (truly concurrent racers, no error but the DCB one).
///
/// Eight racers on a ring of eight course tags, racer i reading courses i and i+1 and
/// linking them: boundaries overlap with their neighbours only. Each round the racers
/// that commit share no tag, and every rejected racer has a neighbour that committed
/// (nobody is rejected by a save that did not commit): a maximal set, 3 or 4 of 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ring_of_overlapping_boundaries_commits_a_maximal_disjoint_set() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 50;
    let (_schema, store) = store("tagsc_ring", RACERS + 2).await;
    let ring: Vec<CourseId> = (0..RACERS).map(|_| course()).collect();
    let mut total = 0;
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let (left, right) = (ring[i], ring[(i + 1) % RACERS]);
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let mut b = s
                        .events()
                        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(left).tag(right))
                        .await?;
                    b.append([Linked {
                        left,
                        right,
                        name: format!("r{round} link{i}"),
                    }])?;
                    barrier.wait().await;
                    s.save_changes().await
                })
            })
            .collect();
        let mut committed = [false; RACERS];
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.expect("racer") {
                Ok(()) => committed[i] = true,
                Err(err) => {
                    let mine = [ring[i].0.to_string(), ring[(i + 1) % RACERS].0.to_string()];
                    for r in dcb(&err) {
                        assert!(mine.contains(&r.1), "round {round}, racer {i}: {r:?}");
                    }
                }
            }
        }
        for i in 0..RACERS {
            let (prev, next) = ((i + RACERS - 1) % RACERS, (i + 1) % RACERS);
            if committed[i] {
                assert!(
                    !committed[next],
                    "round {round}: neighbours {i} and {next} both committed: {committed:?}"
                );
            } else {
                assert!(
                    committed[prev] || committed[next],
                    "round {round}: racer {i} rejected with no neighbour committed: {committed:?}"
                );
            }
        }
        let wins = committed.iter().filter(|c| **c).count();
        assert!((3..=4).contains(&wins), "round {round}: {committed:?}");
        total += wins;
    }
    // Every committed link is read by both its courses, and nothing else was written.
    let mut links = 0;
    for course in &ring {
        links += names(&store, TagQuery::new().tag(*course)).await.len();
    }
    assert_eq!(links, 2 * total);
}

// ---- Tenancy ----

/// Source: Marten `conjoined_tenancy_dcb_tag_tests` (`dcb_concurrency_check_is_isolated_by_tenant`,
/// `fetch_for_writing_by_tags_is_isolated_by_tenant`) and `dcb_concurrency_replay_under_partitioning`
/// (eight racers of one tenant on a seeded course tag: exactly one commits).
///
/// With conjoined events, another tenant's event under the same tag neither shows in a
/// boundary nor moves it; racers of two tenants on the same tag value commit exactly one
/// writer per tenant each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_racing_on_one_tag_each_commit_exactly_one_writer() {
    const PER_TENANT: usize = 6;
    const ROUNDS: usize = 30;
    const TENANTS: [&str; 2] = ["acme", "globex"];
    let (_schema, b) = builder("tagsc_tenants");
    let store = ok(b
        .pool_size(2 * PER_TENANT + 2)
        .events_tenancy(Tenancy::Conjoined)
        .event::<StudentEnrolled>()
        .event::<CourseOpened>()
        .event::<AssignmentSubmitted>()
        .build()
        .await);
    let session = |tenant: &str| ok(store.lightweight_session_for(tenant));
    let c1 = course();
    let mut seed = session("acme");
    ok(seed
        .events()
        .append(Uuid::now_v7(), [opened(c1, "acme seed")]));
    ok(seed.save_changes().await);

    // globex sees nothing of acme's tag; acme's boundary is not moved by globex's event.
    let mut acme = session("acme");
    let mut boundary = ok(acme
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
        .await);
    assert_eq!(boundary.events().len(), 1);
    let mut globex = session("globex");
    let other = ok(globex
        .events()
        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
        .await);
    assert!(other.events().is_empty() && other.state().is_none());
    assert_eq!(other.versions()[0].1, 0);
    ok(globex
        .events()
        .append(Uuid::now_v7(), [opened(c1, "globex seed")]));
    ok(globex.save_changes().await);
    ok(boundary.append([submitted(student(), c1, "acme first")]));
    ok(acme.save_changes().await);
    // Sessions hold their connection: return them before the racers take theirs.
    drop((seed, acme, globex));

    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(2 * PER_TENANT));
        let mut tasks = Vec::new();
        for tenant in TENANTS {
            for i in 0..PER_TENANT {
                let (store, barrier) = (store.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    let mut s = store.lightweight_session_for(tenant)?;
                    let mut b = s
                        .events()
                        .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
                        .await?;
                    b.append([submitted(student(), c1, &format!("{tenant} r{round} {i}"))])?;
                    barrier.wait().await;
                    s.save_changes().await.map(|()| tenant)
                }));
            }
        }
        let mut wins = std::collections::BTreeMap::new();
        for t in tasks {
            match t.await.expect("racer") {
                Ok(tenant) => *wins.entry(tenant).or_insert(0) += 1,
                Err(err) => assert_eq!(dcb(&err).len(), 1, "round {round}"),
            }
        }
        assert_eq!(
            wins.into_iter().collect::<Vec<_>>(),
            [("acme", 1), ("globex", 1)],
            "round {round}"
        );
    }
    for (tenant, expected) in [("acme", 2 + ROUNDS), ("globex", 1 + ROUNDS)] {
        let mut s = session(tenant);
        let b = ok(s
            .events()
            .fetch_for_writing_by_tags::<Log>(TagQuery::new().tag(c1))
            .await);
        let seen = b.state().map(|l| l.seen.clone()).unwrap_or_default();
        assert_eq!(seen.len(), expected, "{tenant}");
        assert!(
            seen.iter().all(|n| n.starts_with(tenant)),
            "{tenant}: {seen:?}"
        );
    }
}
