//! Dynamic consistency boundaries: tagged events, fetch_for_writing_by_tags, and the
//! side-table version checks, proven by racing real connections.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::{builder, ok};
use marten::prelude::*;
use marten::{EventProjection, ProjectedOps, RejectionKind};
use marten_testing::dcb::fetch_for_writing_by_tags_pausing;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;
use tracing::field::{Field, Visit};
use tracing::Instrument;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The span whose deadlocks [`deadlocks`] counts: a test runs the saves it checks
/// inside it, so that the other tests of this binary (running alongside) do not count.
const COUNTED: &str = "counted_saves";

/// Deadlocks marten met in this process inside a [`COUNTED`] span: a save that loses a
/// deadlock is sent again and logs "lost a deadlock" (as in `stream_lock_order.rs`),
/// so the save's result alone would not show it.
fn deadlocks() -> &'static AtomicUsize {
    static COUNT: OnceLock<AtomicUsize> = OnceLock::new();
    let count = COUNT.get_or_init(|| AtomicUsize::new(0));
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(CountDeadlocks);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    });
    count
}

struct CountDeadlocks;

struct Message(bool);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}").contains("lost a deadlock") {
            self.0 = true;
        }
    }
}

impl<S> Layer<S> for CountDeadlocks
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut m = Message(false);
        event.record(&mut m);
        let counted = || {
            ctx.event_scope(event)
                .is_some_and(|mut spans| spans.any(|span| span.name() == COUNTED))
        };
        if m.0 && counted() {
            deadlocks().fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CourseId(Uuid);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[tag(name = "student")]
struct StudentId(Uuid);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CourseDefined {
    #[tag]
    course_id: CourseId,
    capacity: usize,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StudentSubscribed {
    #[tag]
    course_id: CourseId,
    #[tag]
    student_id: StudentId,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Note {
    #[tag(name = "topic")]
    topic: String,
}

#[derive(Default, Debug)]
struct CourseCapacity {
    capacity: usize,
    count: usize,
}

#[marten::apply]
impl CourseCapacity {
    fn apply_defined(&mut self, e: &CourseDefined) {
        self.capacity = e.capacity;
    }
    fn apply_subscribed(&mut self, _e: &StudentSubscribed) {
        self.count += 1;
    }
}

/// A new student's subscription to `course`.
fn subscribed(course: CourseId) -> StudentSubscribed {
    StudentSubscribed {
        course_id: course,
        student_id: StudentId(Uuid::now_v7()),
    }
}

fn course_query(course: CourseId) -> TagQuery {
    TagQuery::new()
        .tag(course)
        .event_types::<(CourseDefined, StudentSubscribed)>()
}

/// The number of subscriptions the boundary of `course` sees.
async fn count(store: &DocumentStore, course: CourseId) -> Option<usize> {
    let mut s = store.lightweight_session();
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    b.state().map(|c| c.count)
}

async fn define_course(store: &DocumentStore, capacity: usize) -> CourseId {
    let course = CourseId(Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().append(
        Uuid::now_v7(),
        [CourseDefined {
            course_id: course,
            capacity,
        }],
    ));
    ok(s.save_changes().await);
    course
}

#[tokio::test]
async fn tags_are_stored_and_queried_by_tag_and_type() {
    assert_eq!(<CourseId as marten::Tag>::TAG_TYPE, "course_id");
    assert_eq!(<StudentId as marten::Tag>::TAG_TYPE, "student");
    let (schema, b) = builder("dcb_tags");
    let store = ok(b.build().await);
    let course = define_course(&store, 10).await;
    let other = define_course(&store, 3).await;
    let student = StudentId(Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().append(
        Uuid::now_v7(),
        [StudentSubscribed {
            course_id: course,
            student_id: student,
        }],
    ));
    ok(s.events().append(
        Uuid::now_v7(),
        [Note {
            topic: "rust".into(),
        }],
    ));
    ok(s.save_changes().await);

    let mut reader = store.lightweight_session();
    let b = ok(reader
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    assert_eq!(b.events().len(), 2);
    let state = b.state().expect("state");
    assert_eq!((state.capacity, state.count), (10, 1));
    assert_eq!(b.versions(), [(marten::EventTag::of(&course), 2)]);

    // Any of several tags; restricted to a type.
    let mut s2 = store.lightweight_session();
    let b = ok(s2
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(TagQuery::new().tag(student).tag(other))
        .await);
    assert_eq!(b.events().len(), 2);
    let mut s3 = store.lightweight_session();
    let b = ok(s3
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(
            TagQuery::new()
                .tag(student)
                .tag(other)
                .event_types::<(StudentSubscribed,)>(),
        )
        .await);
    assert_eq!(b.events().len(), 1);
    // Plain tags, under their name.
    let mut s4 = store.lightweight_session();
    let b = ok(s4
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(TagQuery::new().tag_named("topic", "rust"))
        .await);
    assert_eq!(b.events().len(), 1);
    assert_eq!(b.versions()[0].1, 1);

    // The tag lookup is an index scan.
    let raw = schema.raw_client().await;
    raw.batch_execute("SET enable_seqscan = off")
        .await
        .expect("set");
    let plan: Vec<String> = raw
        .query(
            "EXPLAIN SELECT seq_id FROM mt_event_tags WHERE tag_type = 'course_id' AND tag_value = 'x'",
            &[],
        )
        .await
        .expect("explain")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("Index")), "{plan:?}");
}

/// Racers read the same boundary, then all save: exactly one commits, every other gets
/// the typed DCB rejection and nothing else.
async fn race(label: &str, racers: usize, rounds: usize, barrier_between_reads: bool) {
    let (_schema, b) = builder(label);
    let store = ok(b.pool_size(racers + 2).build().await);
    let course = define_course(&store, 1_000_000).await;
    for round in 0..rounds {
        let after_versions = Arc::new(Barrier::new(racers));
        let after_fetch = Arc::new(Barrier::new(racers));
        let tasks: Vec<_> = (0..racers)
            .map(|_| {
                let (store, after_versions, after_fetch) =
                    (store.clone(), after_versions.clone(), after_fetch.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let _ = s.events().fetch_stream_state(Uuid::now_v7()).await?;
                    let pause = async move {
                        if barrier_between_reads {
                            after_versions.wait().await;
                        }
                    };
                    let mut boundary = fetch_for_writing_by_tags_pausing::<_, CourseCapacity>(
                        s.events(),
                        course_query(course),
                        pause,
                    )
                    .await?;
                    boundary.append([subscribed(course)])?;
                    after_fetch.wait().await;
                    s.save_changes().await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => wins += 1,
                Err(marten::Error::Rejected(r)) => {
                    assert_eq!(r.len(), 1, "{r:?}");
                    assert!(
                        matches!(r[0].kind, RejectionKind::DcbConcurrency { .. }),
                        "{r:?}"
                    );
                }
                Err(other) => panic!("round {round}: unexpected error {other}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one racer commits");
    }
    assert_eq!(count(&store, course).await, Some(rounds));
}

#[tokio::test]
async fn eight_racers_barrier_after_fetch() {
    race("dcb_race8", 8, 200, false).await;
}

#[tokio::test]
async fn sixteen_racers_barrier_between_versions_and_events() {
    race("dcb_race16", 16, 200, true).await;
}

/// The versions are read before the events: a subscription saved while the read pauses
/// between its two statements is among the boundary's events but not counted in its
/// versions, so the boundary's save is rejected. Read the other way round, the boundary
/// would miss the subscription yet carry its version, and the save would commit over it.
#[tokio::test]
async fn versions_are_captured_before_the_events_are_read() {
    let (_schema, b) = builder("dcb_order");
    let store = ok(b.build().await);
    let course = define_course(&store, 5).await;
    let writer = store.clone();
    let pause = async move {
        // Let the versions' statement, already sent, run before the racer commits.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut other = writer.lightweight_session();
        ok(other.events().append(Uuid::now_v7(), [subscribed(course)]));
        ok(other.save_changes().await);
    };
    let mut s = store.lightweight_session();
    let mut boundary = ok(fetch_for_writing_by_tags_pausing::<_, CourseCapacity>(
        s.events(),
        course_query(course),
        pause,
    )
    .await);
    assert_eq!(
        boundary.versions(),
        [(marten::EventTag::of(&course), 1)],
        "versions captured before the racer's subscription"
    );
    assert_eq!(
        boundary.state().map(|c| c.count),
        Some(1),
        "events read after the racer's subscription"
    );
    ok(boundary.append([subscribed(course)]));
    let err = s
        .save_changes()
        .await
        .expect_err("the boundary moved while it was read");
    assert!(
        matches!(
            err.rejections()[0].kind,
            RejectionKind::DcbConcurrency { .. }
        ),
        "{err}"
    );
    assert_eq!(count(&store, course).await, Some(1));
}

#[tokio::test]
async fn a_plain_tagged_append_between_fetch_and_save_fails_the_boundary() {
    let (_schema, b) = builder("dcb_plain");
    let store = ok(b.build().await);
    let course = define_course(&store, 5).await;
    let mut s = store.lightweight_session();
    let mut boundary = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    ok(boundary.append([subscribed(course)]));
    let mut other = store.lightweight_session();
    ok(other.events().append(Uuid::now_v7(), [subscribed(course)]));
    ok(other.save_changes().await);
    let err = s.save_changes().await.expect_err("boundary moved");
    match &err.rejections()[0].kind {
        RejectionKind::DcbConcurrency {
            tag_type,
            expected,
            actual,
        } => {
            assert_eq!((tag_type.as_str(), *expected, *actual), ("course_id", 1, 2));
        }
        other => panic!("wrong rejection {other:?}"),
    }
    assert_eq!(
        err.rejections()[0].id,
        marten::IdKey::String(course.0.to_string())
    );
    assert_eq!(
        count(&store, course).await,
        Some(1),
        "the rejected save wrote nothing"
    );
}

/// A boundary of `n` plain topics, in the order given.
fn topics_query(topics: &[String]) -> TagQuery {
    topics
        .iter()
        .fold(TagQuery::new(), |q, t| q.tag_named("topic", t.as_str()))
}

/// Up to four tags are bound one by one, more as arrays: both shapes read every tag's
/// events and version, and both are asserted by the save.
#[tokio::test]
async fn boundaries_of_one_to_six_tags_read_and_assert_every_tag() {
    let (_schema, b) = builder("dcb_many_tags");
    let store = ok(b.build().await);
    for n in 1..=6 {
        let topics: Vec<String> = (0..n).map(|i| format!("{n}-{i}")).collect();
        let mut s = store.lightweight_session();
        for topic in topics.iter().chain([&format!("{n}-unrelated")]) {
            ok(s.events().append(
                Uuid::now_v7(),
                [Note {
                    topic: topic.clone(),
                }],
            ));
        }
        ok(s.save_changes().await);

        let mut s = store.lightweight_session();
        let mut boundary = ok(s
            .events()
            .fetch_for_writing_by_tags::<CourseCapacity>(topics_query(&topics))
            .await);
        assert_eq!(boundary.events().len(), n, "{n} tags");
        let versions: Vec<(String, i64)> = boundary
            .versions()
            .iter()
            .map(|(t, v)| (t.value.clone(), *v))
            .collect();
        let expected: Vec<(String, i64)> = topics.iter().map(|t| (t.clone(), 1)).collect();
        assert_eq!(versions, expected, "{n} tags");
        ok(boundary.append([Note {
            topic: topics[0].clone(),
        }]));
        // Another session appends under the boundary's last tag: the save is refused.
        let mut other = store.lightweight_session();
        ok(other.events().append(
            Uuid::now_v7(),
            [Note {
                topic: topics[n - 1].clone(),
            }],
        ));
        ok(other.save_changes().await);
        let err = s.save_changes().await.expect_err("the boundary moved");
        match err.rejections() {
            [r] => match &r.kind {
                RejectionKind::DcbConcurrency {
                    tag_type, expected, ..
                } => assert_eq!((tag_type.as_str(), *expected), ("topic", 1), "{n} tags"),
                other => panic!("wrong rejection {other:?}"),
            },
            other => panic!("{n} tags: {other:?}"),
        }

        // Read again: the last tag moved on, and this time the save commits.
        let mut s = store.lightweight_session();
        let mut boundary = ok(s
            .events()
            .fetch_for_writing_by_tags::<CourseCapacity>(topics_query(&topics))
            .await);
        assert_eq!(boundary.events().len(), n + 1, "{n} tags");
        assert_eq!(boundary.versions()[n - 1].1, 2, "{n} tags");
        ok(boundary.append([Note {
            topic: topics[0].clone(),
        }]));
        ok(s.save_changes().await);
    }
}

/// A boundary's save of one append sends the tag lock in the append's statement
/// (`tracing_spans.rs` shows it is one statement); refused, that statement writes nothing,
/// not even a tag version, and the save still names what was rejected.
#[tokio::test]
async fn a_refused_boundary_save_of_one_append_writes_nothing_and_names_the_stream() {
    let (_schema, b) = builder("dcb_one_statement");
    let store = ok(b.build().await);
    let course = define_course(&store, 5).await;

    let mut s = store.lightweight_session();
    let mut boundary = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    ok(boundary.append([subscribed(course)]));
    ok(s.save_changes().await);
    assert_eq!(count(&store, course).await, Some(1));

    // A stream archived under the boundary: the one statement is refused whole, the second
    // attempt (lock and append apart) names the archived stream.
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(
        stream,
        [Note {
            topic: "archived".into(),
        }],
    ));
    ok(s.save_changes().await);
    ok(s.events().archive_stream(stream));
    ok(s.save_changes().await);
    let before = {
        let mut r = store.lightweight_session();
        let b = ok(r
            .events()
            .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
            .await);
        (b.versions().to_vec(), b.events().len())
    };
    let mut s = store.lightweight_session();
    let mut boundary = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    ok(boundary.append_to(stream, [subscribed(course)]));
    let err = s.save_changes().await.expect_err("archived");
    assert!(
        matches!(err.rejections()[..], [ref r] if r.kind == RejectionKind::StreamArchived),
        "{err}"
    );
    let mut r = store.lightweight_session();
    let after = ok(r
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    assert_eq!(
        (after.versions().to_vec(), after.events().len()),
        before,
        "nothing written"
    );
}

#[tokio::test]
async fn disjoint_boundaries_never_conflict() {
    const RACERS: usize = 8;
    let (_schema, b) = builder("dcb_disjoint");
    let store = ok(b.pool_size(RACERS + 2).build().await);
    let mut courses = Vec::new();
    for _ in 0..RACERS {
        courses.push(define_course(&store, 100).await);
    }
    for _round in 0..30 {
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = courses
            .iter()
            .map(|course| {
                let (store, barrier, course) = (store.clone(), barrier.clone(), *course);
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let mut b = s
                        .events()
                        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
                        .await?;
                    b.append([subscribed(course)])?;
                    barrier.wait().await;
                    s.save_changes().await
                })
            })
            .collect();
        for t in tasks {
            ok(t.await.expect("task"));
        }
    }
}

#[tokio::test]
async fn overlapping_boundaries_in_reversed_order_never_deadlock() {
    deadlocks();
    let (_schema, b) = builder("dcb_reversed");
    let store = ok(b.pool_size(12).build().await);
    let c1 = define_course(&store, 1000).await;
    let c2 = define_course(&store, 1000).await;
    let mut commits = 0;
    for round in 0..60 {
        let barrier = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let (first, second) = if i % 2 == 0 { (c1, c2) } else { (c2, c1) };
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let q = TagQuery::new().tag(first).tag(second);
                    let mut b = s
                        .events()
                        .fetch_for_writing_by_tags::<CourseCapacity>(q)
                        .await?;
                    let student = StudentId(Uuid::now_v7());
                    b.append([
                        PendingEvent::new(StudentSubscribed {
                            course_id: first,
                            student_id: student,
                        }),
                        PendingEvent::new(StudentSubscribed {
                            course_id: second,
                            student_id: student,
                        }),
                    ])?;
                    // A second tagged append in the same save, tags in the other order.
                    s.events().append(
                        Uuid::now_v7(),
                        [StudentSubscribed {
                            course_id: second,
                            student_id: student,
                        }],
                    )?;
                    barrier.wait().await;
                    s.save_changes()
                        .instrument(tracing::info_span!(COUNTED))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => wins += 1,
                Err(marten::Error::Rejected(r)) => {
                    assert!(
                        r.iter()
                            .all(|r| matches!(r.kind, RejectionKind::DcbConcurrency { .. })),
                        "{r:?}"
                    )
                }
                Err(other) => panic!("round {round}: {other} (a deadlock would show here)"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
        commits += wins;
    }
    assert_eq!(commits, 60);
    // A save that lost a deadlock is sent again and may then win or be rejected: only
    // marten's log says it met one.
    assert_eq!(deadlocks().load(Ordering::SeqCst), 0, "deadlocks met");
}

#[tokio::test]
async fn course_capacity_is_never_exceeded_under_sixteen_subscribers() {
    const STUDENTS: usize = 16;
    const CAPACITY: usize = 5;
    let (_schema, b) = builder("dcb_capacity");
    let store = ok(b.pool_size(STUDENTS + 2).build().await);
    let course = define_course(&store, CAPACITY).await;
    let barrier = Arc::new(Barrier::new(STUDENTS));
    let tasks: Vec<_> = (0..STUDENTS)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let student = StudentId(Uuid::now_v7());
                loop {
                    let mut s = store.lightweight_session();
                    let mut b = s
                        .events()
                        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
                        .await?;
                    let state = b.state().map_or((0, 0), |c| (c.capacity, c.count));
                    if state.1 >= state.0 {
                        return marten::Result::Ok(false);
                    }
                    b.append([StudentSubscribed {
                        course_id: course,
                        student_id: student,
                    }])?;
                    match s.save_changes().await {
                        Ok(()) => return Ok(true),
                        Err(marten::Error::Rejected(r))
                            if matches!(r[0].kind, RejectionKind::DcbConcurrency { .. }) =>
                        {
                            continue
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();
    let mut subscribed = 0;
    for t in tasks {
        if ok(t.await.expect("task")) {
            subscribed += 1;
        }
    }
    assert_eq!(subscribed, CAPACITY);
    assert_eq!(
        count(&store, course).await,
        Some(CAPACITY),
        "never above capacity"
    );
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Enrollment {
    id: String,
}

struct Enrollments;

impl EventProjection for Enrollments {
    fn name(&self) -> &'static str {
        "Enrollments"
    }
    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(e) = event.data_as::<StudentSubscribed>() {
            ops.store(Enrollment {
                id: format!("{}:{}", e.course_id.0, e.student_id.0),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn boundaries_share_the_save_with_documents_and_inline_projections() {
    let (_schema, b) = builder("dcb_with_docs");
    let store = ok(b
        .event_projection(Enrollments, Lifecycle::Inline)
        .document::<Enrollment>()
        .build()
        .await);
    let course = define_course(&store, 3).await;
    let student = StudentId(Uuid::now_v7());
    let mut s = store.lightweight_session();
    let mut b = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    ok(b.append([StudentSubscribed {
        course_id: course,
        student_id: student,
    }]));
    ok(s.store(Enrollment {
        id: "manual".into(),
    }));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert!(ok(q
        .load::<Enrollment>(&format!("{}:{}", course.0, student.0))
        .await)
    .is_some());
    assert!(ok(q.load::<Enrollment>(&"manual".to_owned()).await).is_some());
}

/// What takes a stream's events out of every boundary.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Removal {
    Archive,
    Delete,
}

/// A lightweight session, for `tenant` if there is one.
fn session_of(store: &DocumentStore, tenant: Option<&str>) -> LightweightSession {
    match tenant {
        Some(t) => ok(store.lightweight_session_for(t)),
        None => store.lightweight_session(),
    }
}

/// Archives or deletes `stream` in a session of its own.
async fn remove(store: &DocumentStore, tenant: Option<&str>, stream: Uuid, how: Removal) {
    let mut s = session_of(store, tenant);
    match how {
        Removal::Archive => ok(s.events().archive_stream(stream)),
        Removal::Delete => ok(s.events().delete_stream(stream)),
    }
    ok(s.save_changes().await);
}

/// Appends `events` to a new stream, returning it.
async fn append_new(
    store: &DocumentStore,
    tenant: Option<&str>,
    events: Vec<PendingEvent>,
) -> Uuid {
    let stream = Uuid::now_v7();
    let mut s = session_of(store, tenant);
    ok(s.events().append(stream, events));
    ok(s.save_changes().await);
    stream
}

/// The subscriptions a boundary of `course` read by `tenant` sees.
async fn count_for(store: &DocumentStore, tenant: Option<&str>, course: CourseId) -> usize {
    let mut s = session_of(store, tenant);
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    b.state().map_or(0, |c| c.count)
}

/// A decision made on events that an archive or delete then took out of the boundary
/// must not commit: the command bumps the versions of its events' tags, so the save is
/// rejected as if an event had been appended, and a fresh read decides without them. A
/// boundary over other tags is not disturbed. With single-tenant events (sessions with
/// and without a tenant: their tags are everyone's) and conjoined ones, where another
/// tenant's boundary over the same course id is not disturbed either.
#[tokio::test]
async fn archiving_or_deleting_a_stream_between_fetch_and_save_fails_the_boundary() {
    for (conjoined, tenant) in [(false, None), (false, Some("t1")), (true, Some("t1"))] {
        for how in [Removal::Archive, Removal::Delete] {
            let label = format!("dcb_removed_{conjoined}_{}_{how:?}", tenant.is_some());
            let (_schema, b) = builder(&label);
            let b = if conjoined {
                b.events_tenancy(marten::Tenancy::Conjoined)
            } else {
                b
            };
            let store = ok(b.build().await);
            let (course, other) = (CourseId(Uuid::now_v7()), CourseId(Uuid::now_v7()));
            let defined = |course_id| CourseDefined {
                course_id,
                capacity: 1,
            };
            append_new(&store, tenant, vec![defined(course).into()]).await;
            append_new(&store, tenant, vec![defined(other).into()]).await;
            let taken = append_new(&store, tenant, vec![subscribed(course).into()]).await;
            // Conjoined: tenant t2's course of the same id, full too, read before.
            let mut t2 = session_of(&store, Some("t2"));
            let mut elsewhere = None;
            if conjoined {
                append_new(&store, Some("t2"), vec![defined(course).into()]).await;
                append_new(&store, Some("t2"), vec![subscribed(course).into()]).await;
                elsewhere = Some(ok(t2
                    .events()
                    .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
                    .await));
            }
            let mut s = session_of(&store, tenant);
            let mut full = ok(s
                .events()
                .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
                .await);
            assert_eq!(full.state().map(|c| (c.capacity, c.count)), Some((1, 1)));
            let mut t = session_of(&store, tenant);
            let mut unrelated = ok(t
                .events()
                .fetch_for_writing_by_tags::<CourseCapacity>(course_query(other))
                .await);

            remove(&store, tenant, taken, how).await;
            // The course is full as read: a decision that ignored that would append
            // anyway; the boundary must refuse it either way.
            ok(full.append([subscribed(course)]));
            let err = s
                .save_changes()
                .await
                .expect_err("the boundary lost an event");
            match &err.rejections()[0].kind {
                RejectionKind::DcbConcurrency {
                    tag_type,
                    expected,
                    actual,
                } => assert_eq!(
                    (tag_type.as_str(), *expected),
                    ("course_id", 2),
                    "{conjoined} {how:?}: bumped to {actual}"
                ),
                other => panic!("{conjoined} {how:?}: wrong rejection {other:?}"),
            }
            assert_eq!(count_for(&store, tenant, course).await, 0, "{how:?}");

            // Another tenant's boundary over the same course id saves.
            if let Some(mut b) = elsewhere {
                ok(b.append([subscribed(course)]));
                ok(t2.save_changes().await);
                assert_eq!(count_for(&store, Some("t2"), course).await, 2);
            }
            // The subscriptions of the other course are untouched: its boundary saves.
            ok(unrelated.append([subscribed(other)]));
            ok(t.save_changes().await);
            assert_eq!(count_for(&store, tenant, other).await, 1);

            // A fresh read sees the seat free and takes it.
            let mut s = session_of(&store, tenant);
            let mut again = ok(s
                .events()
                .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
                .await);
            assert_eq!(again.state().map(|c| c.count), Some(0));
            ok(again.append([subscribed(course)]));
            ok(s.save_changes().await);
            assert_eq!(count_for(&store, tenant, course).await, 1);
        }
    }
}

/// Archiving a stream again, or a stream whose events carry other tags, or one that does
/// not exist, bumps none of a boundary's tags and fails nothing; a boundary read after an
/// archive saves.
#[tokio::test]
async fn archives_that_remove_nothing_from_a_boundary_do_not_fail_it() {
    let (_schema, b) = builder("dcb_archive_nothing");
    let store = ok(b.build().await);
    let course = define_course(&store, 5).await;
    let taken = append_new(&store, None, vec![subscribed(course).into()]).await;
    remove(&store, None, taken, Removal::Archive).await;
    let noted = append_new(&store, None, vec![Note { topic: "x".into() }.into()]).await;

    let mut s = store.lightweight_session();
    let mut boundary = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    assert_eq!(boundary.state().map(|c| c.count), Some(0));
    remove(&store, None, taken, Removal::Archive).await;
    remove(&store, None, noted, Removal::Archive).await;
    remove(&store, None, Uuid::now_v7(), Removal::Archive).await;
    remove(&store, None, Uuid::now_v7(), Removal::Delete).await;
    ok(boundary.append([subscribed(course)]));
    ok(s.save_changes().await);
    assert_eq!(count_for(&store, None, course).await, 1);
}

/// Two boundaries of one session over the same tag, read on either side of another
/// writer's append: the save asserts the older version, so the decision made on the
/// older read cannot commit.
#[tokio::test]
async fn two_boundaries_of_a_session_over_one_tag_assert_the_older_read() {
    let (_schema, b) = builder("dcb_two_reads");
    let store = ok(b.build().await);
    let course = define_course(&store, 5).await;
    let mut s = store.lightweight_session();
    let mut older = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    ok(older.append([subscribed(course)]));
    drop(older);
    append_new(&store, None, vec![subscribed(course).into()]).await;
    let mut newer = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(course_query(course))
        .await);
    ok(newer.append([subscribed(course)]));
    let err = s.save_changes().await.expect_err("the older read is stale");
    match &err.rejections()[0].kind {
        RejectionKind::DcbConcurrency {
            expected, actual, ..
        } => assert_eq!((*expected, *actual), (1, 2)),
        other => panic!("wrong rejection {other:?}"),
    }
    assert_eq!(count_for(&store, None, course).await, 1);
}

/// How a lone tagged append is refused by its stream (no boundary check of its own).
#[derive(Clone, Copy, Debug, PartialEq)]
enum StreamRefusal {
    /// `append_expected` with a stale version.
    StaleVersion,
    /// `start_stream` of a stream that exists.
    Exists,
    /// An append to an archived stream.
    Archived,
}

/// The versions a boundary over `course` and `student` reads, for `tenant`.
async fn tag_versions(
    store: &DocumentStore,
    tenant: Option<&str>,
    course: CourseId,
    student: StudentId,
) -> Vec<(marten::EventTag, i64)> {
    let mut s = session_of(store, tenant);
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<CourseCapacity>(TagQuery::new().tag(course).tag(student))
        .await);
    b.versions().to_vec()
}

/// A tagged append that is the whole save, with no boundary, refused by its stream (a
/// stale expected version, a start of an existing stream, an archived stream): the save
/// is rejected and commits nothing of itself, not even the bumps of its tags' versions.
/// A boundary read over those tags before the refused save still saves after it.
async fn a_refused_lone_tagged_append_writes_nothing(how: StreamRefusal) {
    for (conjoined, tenant) in [(false, None), (true, Some("t1"))] {
        let label = format!("dcb_lone_refused_{how:?}_{conjoined}").to_lowercase();
        let (_schema, b) = builder(&label);
        let b = if conjoined {
            b.events_tenancy(marten::Tenancy::Conjoined)
        } else {
            b
        };
        let store = ok(b.build().await);
        let (course, student) = (CourseId(Uuid::now_v7()), StudentId(Uuid::now_v7()));
        let taken = || StudentSubscribed {
            course_id: course,
            student_id: student,
        };
        let stream = Uuid::now_v7();
        let mut s = session_of(&store, tenant);
        ok(s.events().start_stream(stream, [taken()]));
        ok(s.save_changes().await);
        if how == StreamRefusal::Archived {
            remove(&store, tenant, stream, Removal::Archive).await;
        }
        let before = tag_versions(&store, tenant, course, student).await;
        assert_eq!(before.len(), 2, "{how:?} {conjoined}: {before:?}");
        assert!(before.iter().all(|(_, v)| *v > 0), "{before:?}");

        // Another writer's boundary over those tags, read before the refused save.
        let mut other = session_of(&store, tenant);
        let mut boundary = ok(other
            .events()
            .fetch_for_writing_by_tags::<CourseCapacity>(TagQuery::new().tag(course))
            .await);

        let mut s = session_of(&store, tenant);
        match how {
            StreamRefusal::StaleVersion => ok(s.events().append_expected(stream, 99, [taken()])),
            StreamRefusal::Exists => ok(s.events().start_stream(stream, [taken()])),
            StreamRefusal::Archived => ok(s.events().append(stream, [taken()])),
        }
        let err = s.save_changes().await.expect_err("refused by the stream");
        let kind = match err.rejections() {
            [r] => r.kind.clone(),
            other => panic!("{how:?} {conjoined}: {other:?} ({err})"),
        };
        match (how, kind) {
            (
                StreamRefusal::StaleVersion,
                RejectionKind::UnexpectedStreamVersion {
                    expected: 99,
                    actual: Some(1),
                },
            )
            | (StreamRefusal::Exists, RejectionKind::StreamExists)
            | (StreamRefusal::Archived, RejectionKind::StreamArchived) => {}
            (how, kind) => panic!("{how:?} {conjoined}: wrong rejection {kind:?}"),
        }
        assert_eq!(
            tag_versions(&store, tenant, course, student).await,
            before,
            "{how:?} {conjoined}: the refused save bumped its tags"
        );
        let mut r = session_of(&store, tenant);
        let state = ok(r.events().fetch_stream_state(stream).await);
        assert_eq!(state.map(|st| st.version), Some(1), "{how:?} {conjoined}");

        // Nothing happened under the other writer's boundary: it saves.
        ok(boundary.append([subscribed(course)]));
        ok(other.save_changes().await);
    }
}

#[tokio::test]
async fn a_lone_tagged_append_at_a_stale_version_bumps_no_tag() {
    a_refused_lone_tagged_append_writes_nothing(StreamRefusal::StaleVersion).await;
}

#[tokio::test]
async fn a_lone_tagged_start_of_an_existing_stream_bumps_no_tag() {
    a_refused_lone_tagged_append_writes_nothing(StreamRefusal::Exists).await;
}

#[tokio::test]
async fn a_lone_tagged_append_to_an_archived_stream_bumps_no_tag() {
    a_refused_lone_tagged_append_writes_nothing(StreamRefusal::Archived).await;
}

/// A tagged append that is the whole save stays one statement in one round trip when it
/// commits: the statement that raises when refused costs the successful save nothing
/// (counted by a proxy, after the first pass prepared the statements).
#[tokio::test]
async fn a_lone_tagged_append_is_one_round_trip() {
    let (_schema, proxy, b) = common::counted_builder("dcb_lone_round_trip").await;
    let store = ok(b.build().await);
    let course = CourseId(Uuid::now_v7());
    for pass in 0..2 {
        let stream = Uuid::now_v7();
        let mut s = store.lightweight_session();
        let mut trips = Vec::new();
        ok(s.events().start_stream(stream, [subscribed(course)]));
        let before = proxy.round_trips();
        ok(s.save_changes().await);
        trips.push(("start", proxy.round_trips() - before));
        ok(s.events()
            .append(stream, [subscribed(course), subscribed(course)]));
        let before = proxy.round_trips();
        ok(s.save_changes().await);
        trips.push(("append", proxy.round_trips() - before));
        ok(s.events().append_expected(stream, 3, [subscribed(course)]));
        let before = proxy.round_trips();
        ok(s.save_changes().await);
        trips.push(("append expected", proxy.round_trips() - before));
        if pass == 1 {
            for (what, n) in &trips {
                assert_eq!(*n, 1, "{what}: {n} round trips");
            }
        }
    }
    assert_eq!(count(&store, course).await, Some(8));
}
