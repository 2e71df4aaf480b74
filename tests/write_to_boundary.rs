//! `session.events().write_to_boundary`: a command that reads a consistency boundary,
//! decides on it, appends what it decided to a new stream asserting the boundary, and
//! saves. The store keeps the state and tag versions each command leaves, so the next
//! command on the boundary decides without reading; a decision made on a kept boundary
//! that another writer moved (a subscription appended, a subscriber's stream archived or
//! deleted, by another store) is made again on a fresh read, never committed. Every
//! subscription records the seats its decision saw taken, so the tests check that each
//! committed decision was made on exactly the boundary before it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{builder, builder_on, counted_builder_on, named_builder, ok};
use marten::prelude::*;
use marten::{RejectionKind, Tenancy};
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CourseId(Uuid);

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[tag(name = "student")]
struct StudentId(Uuid);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CourseOpened {
    #[tag]
    course_id: CourseId,
    seats: u32,
}

/// A subscription and the seats its decision saw taken (`u32::MAX`: appended without a
/// decision).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Subscribed {
    #[tag]
    course_id: CourseId,
    #[tag]
    student_id: StudentId,
    seen: u32,
}

/// A note on a course: carries the course's tag but is not one of the query's types, so
/// no boundary of the tests folds it (its apply would add 100 seats if one did).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {
    #[tag]
    course_id: CourseId,
}

/// The seats of a course and how many are taken.
#[derive(Default, Clone, Debug, PartialEq)]
struct Seats {
    seats: u32,
    taken: u32,
}

#[marten::apply]
impl Seats {
    fn apply_opened(&mut self, e: &CourseOpened) {
        self.seats = e.seats;
    }
    fn apply_subscribed(&mut self, _e: &Subscribed) {
        self.taken += 1;
    }
    fn apply_noted(&mut self, _e: &Noted) {
        self.seats += 100;
    }
}

/// Why a subscription was refused.
#[derive(Debug)]
enum Refusal {
    NoCourse,
    Full,
    Marten(marten::Error),
}

impl From<marten::Error> for Refusal {
    fn from(e: marten::Error) -> Self {
        Refusal::Marten(e)
    }
}

fn query(course: CourseId) -> TagQuery {
    TagQuery::new()
        .tag(course)
        .event_types::<(CourseOpened, Subscribed)>()
}

/// A lightweight session, for `tenant` if there is one.
fn session_of(store: &DocumentStore, tenant: Option<&str>) -> LightweightSession {
    match tenant {
        Some(t) => ok(store.lightweight_session_for(t)),
        None => store.lightweight_session(),
    }
}

/// The decision of a subscription: a seat if one is free.
fn decide(course: CourseId, state: Option<&Seats>) -> Result<Vec<PendingEvent>, Refusal> {
    let seats = state.ok_or(Refusal::NoCourse)?;
    if seats.taken >= seats.seats {
        return Err(Refusal::Full);
    }
    Ok(vec![Subscribed {
        course_id: course,
        student_id: StudentId(Uuid::now_v7()),
        seen: seats.taken,
    }
    .into()])
}

/// A subscription command; `decided` counts the decisions it made.
async fn subscribe_counting(
    store: &DocumentStore,
    tenant: Option<&str>,
    course: CourseId,
    decided: &AtomicUsize,
) -> Result<Option<StreamId>, Refusal> {
    let mut s = session_of(store, tenant);
    s.events()
        .write_to_boundary::<Seats, _, _>(query(course), |state: Option<&Seats>| {
            decided.fetch_add(1, Ordering::Relaxed);
            decide(course, state)
        })
        .await
}

async fn subscribe(
    store: &DocumentStore,
    tenant: Option<&str>,
    course: CourseId,
) -> Result<Option<StreamId>, Refusal> {
    subscribe_counting(store, tenant, course, &AtomicUsize::new(0)).await
}

/// Opens a course of `seats` through a command (so the store keeps its boundary).
async fn open(store: &DocumentStore, tenant: Option<&str>, seats: u32) -> CourseId {
    let course = CourseId(Uuid::now_v7());
    let mut s = session_of(store, tenant);
    let stream = ok(s
        .events()
        .write_to_boundary::<Seats, _, _>(query(course), |state: Option<&Seats>| {
            assert!(state.is_none(), "a new course");
            Ok::<_, marten::Error>([CourseOpened {
                course_id: course,
                seats,
            }])
        })
        .await);
    assert!(stream.is_some());
    course
}

/// A subscription appended without a decision, by `store`.
async fn plain_subscription(store: &DocumentStore, tenant: Option<&str>, course: CourseId) -> Uuid {
    let stream = Uuid::now_v7();
    let mut s = session_of(store, tenant);
    ok(s.events().append(
        stream,
        [Subscribed {
            course_id: course,
            student_id: StudentId(Uuid::now_v7()),
            seen: u32::MAX,
        }],
    ));
    ok(s.save_changes().await);
    stream
}

/// The boundary read afresh: its state, and checks that every subscription a decision
/// made saw exactly the subscriptions before it (in the boundary's order).
async fn audit(store: &DocumentStore, tenant: Option<&str>, course: CourseId) -> Seats {
    read(store, tenant, course, true).await
}

/// The boundary read afresh; `seen`: check what each decision saw (not after archives
/// or deletes, which take earlier subscriptions out).
async fn read(store: &DocumentStore, tenant: Option<&str>, course: CourseId, seen: bool) -> Seats {
    let mut s = session_of(store, tenant);
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Seats>(query(course))
        .await);
    let mut before = 0;
    for e in b.events() {
        if let Some(sub) = e.data_as::<Subscribed>() {
            if seen && sub.seen != u32::MAX {
                assert_eq!(sub.seen, before, "a decision saw {} of {before}", sub.seen);
            }
            before += 1;
        }
    }
    let state = b.state().cloned().expect("the course");
    assert!(state.taken <= state.seats, "{state:?}: overbooked");
    state
}

/// A subscription that must be taken: the stream it went to.
fn seat(r: Result<Option<StreamId>, Refusal>) -> Option<StreamId> {
    match r {
        Ok(stream) => stream,
        Err(e) => panic!("expected a seat, got {e:?}"),
    }
}

fn expect_full(r: Result<Option<StreamId>, Refusal>) {
    match r {
        Err(Refusal::Full) => {}
        other => panic!("expected a full course, got {other:?}"),
    }
}

#[tokio::test]
async fn commands_fill_a_course_and_then_refuse_with_their_own_error() {
    let (_schema, b) = builder("wtb_fill");
    let store = ok(b.build().await);
    let course = open(&store, None, 3).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(seat(subscribe(&store, None, course).await).expect("a stream"));
    }
    streams.dedup();
    assert_eq!(
        streams.len(),
        3,
        "each decision appends to a stream of its own"
    );
    expect_full(subscribe(&store, None, course).await);
    expect_full(subscribe(&store, None, course).await);
    assert_eq!(
        audit(&store, None, course).await,
        Seats { seats: 3, taken: 3 }
    );
    // No course: the decider's error, nothing written.
    let nowhere = CourseId(Uuid::now_v7());
    assert!(matches!(
        subscribe(&store, None, nowhere).await,
        Err(Refusal::NoCourse)
    ));
    // A decision of nothing saves nothing and names no stream; made on the kept state,
    // it is made again on a fresh read (nothing was saved to assert the kept versions).
    let mut s = store.lightweight_session();
    let decided = AtomicUsize::new(0);
    let none = ok(s
        .events()
        .write_to_boundary::<Seats, _, _>(query(course), |_: Option<&Seats>| {
            decided.fetch_add(1, Ordering::Relaxed);
            Ok::<_, marten::Error>(Vec::<PendingEvent>::new())
        })
        .await);
    assert_eq!((none, decided.load(Ordering::Relaxed)), (None, 2));
    // A query without tags is refused before anything is read.
    let mut s = store.lightweight_session();
    let err = s
        .events()
        .write_to_boundary::<Seats, _, _>(TagQuery::new(), |_: Option<&Seats>| {
            Ok::<_, marten::Error>(Vec::<PendingEvent>::new())
        })
        .await
        .expect_err("no tags");
    assert!(matches!(err, marten::Error::Configuration(_)), "{err:?}");
}

/// The kept state applies only the new events the query matches: a decision that
/// appends a note with the course's tag (not one of the query's types) and one with
/// another course's tag only leaves a state equal to a fresh read's.
#[tokio::test]
async fn the_kept_state_folds_only_the_events_the_query_matches() {
    let (_schema, b) = builder("wtb_matching");
    let store = ok(b.build().await);
    let course = open(&store, None, 5).await;
    let other = open(&store, None, 5).await;
    for round in 0..3 {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut s = store.lightweight_session();
        let kept = seen.clone();
        ok(s.events()
            .write_to_boundary::<Seats, _, _>(query(course), move |state: Option<&Seats>| {
                kept.lock().expect("lock").push(state.cloned());
                Ok::<_, marten::Error>(vec![
                    PendingEvent::new(Noted { course_id: course }),
                    PendingEvent::new(Subscribed {
                        course_id: other,
                        student_id: StudentId(Uuid::now_v7()),
                        seen: u32::MAX,
                    }),
                    PendingEvent::new(Subscribed {
                        course_id: course,
                        student_id: StudentId(Uuid::now_v7()),
                        seen: round,
                    }),
                ])
            })
            .await);
        // Decided once, on the kept state: had the kept versions been wrong, the save
        // would have been rejected and the decision made again.
        let decided_on = seen.lock().expect("lock").clone();
        let expected = Seats {
            seats: 5,
            taken: round,
        };
        assert_eq!(decided_on, vec![Some(expected)], "round {round}");
    }
    assert_eq!(
        audit(&store, None, course).await,
        Seats { seats: 5, taken: 3 }
    );
    assert_eq!(
        audit(&store, None, other).await,
        Seats { seats: 5, taken: 3 }
    );
}

/// Another store's subscription makes the kept boundary stale: the decision made on it
/// is rejected, made again on a fresh read, and the course is never overbooked.
#[tokio::test]
async fn a_stale_kept_boundary_is_decided_on_again_after_a_fresh_read() {
    let (schema, b) = builder("wtb_stale");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let course = open(&store, None, 3).await;
    seat(subscribe(&store, None, course).await);
    plain_subscription(&other, None, course).await;
    let decided = AtomicUsize::new(0);
    seat(subscribe_counting(&store, None, course, &decided).await);
    assert_eq!(decided.load(Ordering::Relaxed), 2, "kept, then fresh");
    assert_eq!(
        audit(&store, None, course).await,
        Seats { seats: 3, taken: 3 }
    );
    // The kept boundary says full; another store's view agrees.
    let decided = AtomicUsize::new(0);
    expect_full(subscribe_counting(&store, None, course, &decided).await);
    expect_full(subscribe(&other, None, course).await);
    // Full on the kept state, free after another store deletes a subscriber's stream:
    // the refusal on the kept state is checked on a fresh read, which takes the seat.
    let course2 = open(&store, None, 1).await;
    let taken = seat(subscribe(&store, None, course2).await).expect("a stream");
    let mut s = other.lightweight_session();
    ok(s.events().delete_stream(taken));
    ok(s.save_changes().await);
    let decided = AtomicUsize::new(0);
    seat(subscribe_counting(&store, None, course2, &decided).await);
    assert_eq!(
        decided.load(Ordering::Relaxed),
        2,
        "refused on the kept state, then taken"
    );
    assert_eq!(
        audit(&store, None, course2).await,
        Seats { seats: 1, taken: 1 }
    );
}

/// A decision of nothing made on a kept boundary (the student is already subscribed) is
/// checked on a fresh read: after another store deleted that subscription, the fresh read
/// subscribes the student again instead of trusting the kept state for ever.
#[tokio::test]
async fn a_decision_of_nothing_on_a_kept_boundary_is_checked_on_a_fresh_read() {
    let (schema, b) = builder("wtb_nothing_stale");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let course = open(&store, None, 5).await;
    let student = StudentId(Uuid::now_v7());
    let enrol = |store: DocumentStore| async move {
        let q = TagQuery::new()
            .tag(course)
            .tag(student)
            .event_types::<(CourseOpened, Subscribed)>();
        let mut s = store.lightweight_session();
        s.events()
            .write_to_boundary::<Enrolment, _, _>(q, |e: Option<&Enrolment>| {
                Ok::<_, marten::Error>(match e {
                    Some(e) if e.enrolled => None,
                    _ => Some(Subscribed {
                        course_id: course,
                        student_id: student,
                        seen: 0,
                    }),
                })
            })
            .await
    };
    let first = ok(enrol(store.clone()).await).expect("subscribed");
    assert_eq!(ok(enrol(store.clone()).await), None, "already subscribed");
    let mut s = other.lightweight_session();
    ok(s.events().delete_stream(first));
    ok(s.save_changes().await);
    assert!(ok(enrol(store.clone()).await).is_some(), "subscribed again");
    assert_eq!(ok(enrol(store.clone()).await), None);
}

/// Whether one student is subscribed (the boundary of the course and the student).
#[derive(Default, Clone, Debug)]
struct Enrolment {
    enrolled: bool,
}

#[marten::apply]
impl Enrolment {
    fn apply_subscribed(&mut self, _e: &Subscribed) {
        self.enrolled = true;
    }
}

/// A subscriber's stream archived by another store frees its seat: the store that kept
/// the full course must see it, through the bumped tag versions.
#[tokio::test]
async fn an_archive_elsewhere_makes_the_kept_boundary_stale() {
    let (schema, b) = builder("wtb_archived");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let course = open(&store, None, 2).await;
    let first = seat(subscribe(&store, None, course).await).expect("a stream");
    seat(subscribe(&store, None, course).await);
    expect_full(subscribe(&store, None, course).await);
    let mut s = other.lightweight_session();
    ok(s.events().archive_stream(first));
    ok(s.save_changes().await);
    seat(subscribe(&store, None, course).await);
    expect_full(subscribe(&store, None, course).await);
    assert_eq!(
        read(&store, None, course, false).await,
        Seats { seats: 2, taken: 2 }
    );
}

/// A decision made on a fresh read that loses the race is the caller's error: the
/// command does not decide again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_decision_that_loses_the_race_is_rejected() {
    let (schema, b) = builder("wtb_fresh_rejected");
    let store = ok(b.aggregate_cache(0).build().await);
    let other = ok(builder_on(&schema).build().await);
    let course = open(&store, None, 5).await;
    let mut s = store.lightweight_session();
    let decided = AtomicUsize::new(0);
    let err = s
        .events()
        .write_to_boundary::<Seats, _, _>(query(course), |state: Option<&Seats>| {
            decided.fetch_add(1, Ordering::Relaxed);
            // Another writer takes a seat between this read and its save.
            let handle = tokio::runtime::Handle::current();
            let other = other.clone();
            std::thread::spawn(move || {
                handle.block_on(async { plain_subscription(&other, None, course).await })
            })
            .join()
            .expect("the other writer");
            decide(course, state)
        })
        .await
        .expect_err("the boundary moved");
    match err {
        Refusal::Marten(marten::Error::Rejected(r)) => {
            assert!(
                matches!(r[0].kind, RejectionKind::DcbConcurrency { .. }),
                "{r:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(decided.load(Ordering::Relaxed), 1);
    assert_eq!(
        audit(&store, None, course).await,
        Seats { seats: 5, taken: 1 }
    );
}

/// 8 subscribers per round racing over two stores that keep boundaries, on a course of
/// 20 seats, each retrying a rejected fresh decision: every seat is taken once, no
/// decision saw anything but the subscriptions before it, and no course is overbooked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commands_over_two_stores_never_overbook() {
    const TASKS: usize = 8;
    const ROUNDS: usize = 4;
    const SEATS: u32 = 20;
    let (schema, b) = builder("wtb_race");
    let a = ok(b.pool_size(TASKS).build().await);
    let b = ok(builder_on(&schema).pool_size(TASKS).build().await);
    let course = open(&a, None, SEATS).await;
    let barrier = Arc::new(Barrier::new(TASKS));
    let decided = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        let (barrier, decided) = (barrier.clone(), decided.clone());
        tasks.push(tokio::spawn(async move {
            let (mut taken, mut full) = (0, 0);
            for _ in 0..ROUNDS {
                barrier.wait().await;
                loop {
                    match subscribe_counting(&store, None, course, &decided).await {
                        Ok(_) => taken += 1,
                        Err(Refusal::Full) => full += 1,
                        Err(Refusal::Marten(marten::Error::Rejected(_))) => continue,
                        Err(e) => panic!("{e:?}"),
                    }
                    break;
                }
            }
            (taken, full)
        }));
    }
    let mut taken = 0;
    for t in tasks {
        taken += t.await.expect("join").0;
    }
    assert_eq!(taken, SEATS as usize, "every seat taken once");
    assert_eq!(
        audit(&a, None, course).await,
        Seats {
            seats: SEATS,
            taken: SEATS
        }
    );
    eprintln!(
        "{} decisions for {} commands",
        decided.load(Ordering::Relaxed),
        TASKS * ROUNDS
    );
}

#[tokio::test]
async fn a_command_on_a_kept_boundary_is_one_round_trip() {
    let (schema, b) = builder("wtb_round_trips");
    let other = ok(b.build().await);
    let (proxy, b) = counted_builder_on(&schema).await;
    let store = ok(b.build().await);
    let (uncached_proxy, b) = counted_builder_on(&schema).await;
    let uncached = ok(b.aggregate_cache(0).build().await);
    let course = open(&store, None, 100).await;
    // Warm every statement of every path: kept, stale then fresh, uncached.
    seat(subscribe(&store, None, course).await);
    plain_subscription(&other, None, course).await;
    seat(subscribe(&store, None, course).await);
    seat(subscribe(&uncached, None, course).await);
    seat(subscribe(&uncached, None, course).await);
    seat(subscribe(&store, None, course).await);

    for round in 0..3 {
        let before = proxy.round_trips();
        seat(subscribe(&store, None, course).await);
        assert_eq!(
            proxy.round_trips() - before,
            1,
            "round {round}: one round trip"
        );
    }
    for round in 0..2 {
        let before = uncached_proxy.round_trips();
        seat(subscribe(&uncached, None, course).await);
        let trips = uncached_proxy.round_trips() - before;
        assert_eq!(
            trips, 2,
            "round {round}: without the cache, read then write"
        );
    }
    // A stale boundary: rejected, explained (the separate statements of a second
    // attempt, then the versions read after the rollback), read, written.
    plain_subscription(&other, None, course).await;
    let before = proxy.round_trips();
    seat(subscribe(&store, None, course).await);
    let stale = proxy.round_trips() - before;
    eprintln!("stale kept boundary: {stale} round trips");
    assert!((3..=5).contains(&stale), "{stale}");
    let before = proxy.round_trips();
    seat(subscribe(&store, None, course).await);
    assert_eq!(
        proxy.round_trips() - before,
        1,
        "the retry kept the boundary"
    );
    audit(&store, None, course).await;
}

/// A session with something else queued, or one that tracks changes, decides on a fresh
/// read (and saves what it queued in the command's transaction).
#[tokio::test]
async fn sessions_with_other_work_decide_on_a_fresh_read() {
    let (schema, b) = builder("wtb_not_alone");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let course = open(&store, None, 10).await;
    seat(subscribe(&store, None, course).await);
    // The kept boundary goes stale; a command that must read never decides on it.
    plain_subscription(&other, None, course).await;
    let decided = AtomicUsize::new(0);
    let mut s = store.lightweight_session();
    let noted = Uuid::now_v7();
    ok(s.events().append(noted, [Noted { course_id: course }]));
    let r = s
        .events()
        .write_to_boundary::<Seats, _, _>(query(course), |state: Option<&Seats>| {
            decided.fetch_add(1, Ordering::Relaxed);
            decide(course, state)
        })
        .await;
    seat(r);
    assert_eq!(
        decided.load(Ordering::Relaxed),
        1,
        "decided once, on a fresh read"
    );
    let mut s = store.lightweight_session();
    let state = ok(s.events().fetch_stream_state(noted).await);
    assert!(
        state.is_some(),
        "the queued append was saved with the command"
    );
    let decided = AtomicUsize::new(0);
    plain_subscription(&other, None, course).await;
    let mut s = store.dirty_tracked_session();
    let r = s
        .events()
        .write_to_boundary::<Seats, _, _>(query(course), |state: Option<&Seats>| {
            decided.fetch_add(1, Ordering::Relaxed);
            decide(course, state)
        })
        .await;
    seat(r);
    assert_eq!(
        decided.load(Ordering::Relaxed),
        1,
        "a dirty-tracked session reads"
    );
    assert_eq!(
        audit(&store, None, course).await,
        Seats {
            seats: 10,
            taken: 5
        }
    );
}

/// Tenants of a conjoined store keep boundaries of their own: the same course id in two
/// tenants is two courses, and one tenant's subscriptions never make the other's stale.
#[tokio::test]
async fn conjoined_tenants_keep_boundaries_of_their_own() {
    let (_schema, b) = builder("wtb_tenants");
    let store = ok(b.events_tenancy(Tenancy::Conjoined).build().await);
    let course = CourseId(Uuid::now_v7());
    for (tenant, seats) in [("t1", 2), ("t2", 3)] {
        let mut s = session_of(&store, Some(tenant));
        ok(s.events()
            .write_to_boundary::<Seats, _, _>(query(course), |state: Option<&Seats>| {
                assert!(state.is_none(), "{tenant}: a new course");
                Ok::<_, marten::Error>([CourseOpened {
                    course_id: course,
                    seats,
                }])
            })
            .await);
    }
    for round in 0..3 {
        for tenant in ["t1", "t2"] {
            let decided = AtomicUsize::new(0);
            let r = subscribe_counting(&store, Some(tenant), course, &decided).await;
            let decisions = decided.load(Ordering::Relaxed);
            if tenant == "t1" && round == 2 {
                // Full on the kept boundary: checked on a fresh read, full there too.
                expect_full(r);
                assert_eq!(decisions, 2, "{tenant}");
            } else {
                seat(r);
                assert_eq!(decisions, 1, "{tenant} round {round}: decided once");
            }
        }
    }
    assert_eq!(
        audit(&store, Some("t1"), course).await,
        Seats { seats: 2, taken: 2 }
    );
    assert_eq!(
        audit(&store, Some("t2"), course).await,
        Seats { seats: 3, taken: 3 }
    );
    // A session without a tenant is refused before anything is read.
    let mut s = store.lightweight_session();
    let err = s
        .events()
        .write_to_boundary::<Seats, _, _>(query(course), |state: Option<&Seats>| {
            decide(course, state)
        })
        .await
        .expect_err("no tenant");
    assert!(
        matches!(err, Refusal::Marten(marten::Error::TenantRequired { .. })),
        "{err:?}"
    );
}

/// After a drop: nothing of the store runs or holds a lock, and a command in a new
/// session decides on the boundary as committed.
async fn check_after_drop(store: &DocumentStore, schema: &TestSchema, course: CourseId) {
    let raw = schema.raw_client().await;
    assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
    let before = audit(store, None, course).await;
    seat(subscribe(store, None, course).await);
    let after = audit(store, None, course).await;
    assert_eq!(after.taken, before.taken + 1);
    assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
}

async fn commands_cancelled_at_every_await(label: &str, cache: usize) {
    let (schema, b) = named_builder(label);
    let store = ok(b.pool_size(1).aggregate_cache(cache).build().await);
    let course = open(&store, None, 10_000).await;
    seat(subscribe(&store, None, course).await);
    let make = |_k: usize| -> Operation<Result<Option<StreamId>, Refusal>> {
        let store = store.clone();
        Box::pin(async move { subscribe(&store, None, course).await })
    };
    let run =
        cancel_at_every_await(200, make, |_k| check_after_drop(&store, &schema, course)).await;
    assert!(run.output.is_ok(), "{:?}", run.output);
    assert!(run.cancelled >= 1, "only {} pending polls", run.cancelled);
    // Once more through the kept boundary (or a fresh read), on the right state.
    seat(subscribe(&store, None, course).await);
    audit(&store, None, course).await;
}

#[tokio::test]
async fn kept_commands_cancelled_at_every_await() {
    commands_cancelled_at_every_await("wtb_cancel_kept", 10_000).await;
}

#[tokio::test]
async fn uncached_commands_cancelled_at_every_await() {
    commands_cancelled_at_every_await("wtb_cancel_uncached", 0).await;
}

/// A command dropped on a timer mid-flight, many times, with another store's plain
/// subscription between: the next command still decides on the committed boundary.
#[tokio::test]
async fn commands_dropped_by_timeouts_leave_a_cache_that_decides_right() {
    let (schema, b) = named_builder("wtb_cancel_timeouts");
    let store = ok(b.pool_size(2).build().await);
    let other = ok(builder_on(&schema).build().await);
    let course = open(&store, None, 10_000).await;
    seat(subscribe(&store, None, course).await);
    let raw = schema.raw_client().await;
    let mut timed_out = 0;
    for i in 0..40u64 {
        let limit = Duration::from_micros(50 + 97 * i);
        match tokio::time::timeout(limit, subscribe(&store, None, course)).await {
            Ok(r) => {
                assert!(r.is_ok(), "{r:?}");
            }
            Err(_) => timed_out += 1,
        }
        if i % 5 == 0 {
            plain_subscription(&other, None, course).await;
        }
        assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
        let before = audit(&store, None, course).await;
        seat(subscribe(&store, None, course).await);
        assert_eq!(
            audit(&store, None, course).await.taken,
            before.taken + 1,
            "round {i}"
        );
    }
    eprintln!("{timed_out} of 40 commands timed out");
    assert!(timed_out > 0, "no command was cut short");
}

/// The document an inline projection writes for each subscription's stream.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Seat {
    id: Uuid,
    version: i64,
    seen: u32,
}

#[marten::apply]
impl Seat {
    fn create(e: &Subscribed) -> Self {
        Seat {
            seen: e.seen,
            ..Seat::default()
        }
    }
}

/// With an inline projection of the subscriptions, a command's save carries the
/// projected write too (the tag lock then goes ahead as a statement of its own): the
/// kept boundary's versions are still those the save left, so every command after the
/// first decides once, on the kept state, and each subscription's document is written.
#[tokio::test]
async fn a_kept_boundary_stays_exact_when_the_save_carries_inline_projections() {
    let (_schema, b) = builder("wtb_inline");
    let store = ok(b.projection::<Seat>(Lifecycle::Inline).build().await);
    let course = open(&store, None, 10).await;
    for round in 0..5 {
        let decided = AtomicUsize::new(0);
        let stream = seat(subscribe_counting(&store, None, course, &decided).await);
        assert_eq!(decided.load(Ordering::Relaxed), 1, "round {round}");
        let Some(StreamId::Uuid(id)) = stream else {
            panic!("a uuid stream: {stream:?}");
        };
        let doc = ok(store.query_session().load::<Seat>(&id).await).expect("projected");
        assert_eq!((doc.seen, doc.version), (round, 1));
    }
    assert_eq!(
        audit(&store, None, course).await,
        Seats {
            seats: 10,
            taken: 5
        }
    );
}

/// A tag version the save could not raise (at the top of `bigint`) fails the command with
/// the database's error; the command's own arithmetic on the versions it keeps does not
/// overflow first (a panic in a debug build).
#[tokio::test]
async fn a_tag_version_at_the_top_of_bigint_fails_the_command_without_a_panic() {
    let (schema, b) = builder("wtb_version_max");
    let store = ok(b.build().await);
    let course = open(&store, None, 5).await;
    let moved = schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_tag_versions SET version = 9223372036854775806 WHERE tag_value = $1",
            &[&course.0.to_string()],
        )
        .await
        .expect("raise the version");
    assert_eq!(moved, 1);
    let r = subscribe(&store, None, course).await;
    assert!(matches!(r, Err(Refusal::Marten(_))), "{r:?}");
    assert_eq!(read(&store, None, course, true).await.taken, 0);
}
