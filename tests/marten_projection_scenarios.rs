//! Projection and aggregation scenarios ported from Marten's own test suite
//! (JasperFx/marten, `src/EventSourcingTests/Projections`, `src/EventSourcingTests/Aggregation`
//! and the projection bugs of `src/EventSourcingTests/Bugs`): the behaviour each Marten test
//! checks, mapped onto marten-rs's API. Each test names the Marten test it comes from.
//! Single-stream aggregates (creation, in-place and by-value applies, conditional and
//! unconditional deletion, re-creation after a deletion, versions, metadata, typed ids,
//! hand-written dispatch), multi-stream projections (grouping by ids of other streams,
//! one event fanned out to several documents, ids from event metadata), event projections
//! (documents keyed by event ids, global order), inline, live and async giving the same
//! state, archived streams in the daemon and documents saved with events. Every wait on
//! the daemon is bounded.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::{builder, builder_on, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::{AggregateId, AnyEvent, ApplyError, EventProjection, ProjectedOps, Tenancy};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How long any wait on a daemon may take.
const WAIT: Duration = Duration::from_secs(15);

fn options() -> DaemonOptions {
    DaemonOptions {
        poll_interval: Duration::from_millis(20),
        retries: 0,
        ..DaemonOptions::default()
    }
}

/// Starts a daemon and waits (bounded) until it has caught up.
async fn caught_up(store: &DocumentStore) -> Daemon {
    let daemon = Daemon::start(store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    daemon
}

async fn load<D: marten::PgDocument>(store: &DocumentStore, id: &D::Id) -> Option<D> {
    ok(store.query_session().load::<D>(id).await)
}

/// The uuid of a stream id (the stores of these tests that need it use uuid streams).
fn uuid_of(stream: &StreamId) -> Uuid {
    <Uuid as AggregateId>::from_stream_id(stream).expect("a uuid stream")
}

// ---------------------------------------------------------------------------------------
// The letter events of Marten's aggregation tests (`AEvent` .. `DEvent`, `CreateEvent`)
// and its `MyAggregate`, whose dispatch is Marten's `AllSync` projection: created by
// `CreateEvent` (or from `Default`), `A` and `C` applied in place, `B` and `D` by value.

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AEvent {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct BEvent {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CEvent {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DEvent {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CreateEvent {
    a: i64,
    b: i64,
    c: i64,
    d: i64,
}

/// Marten's `Finished`: deletes the aggregate when its counts add up to more than 10
/// (`SometimesDeletes.ShouldDelete`).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Finished {}

/// Marten's `DeleteYourself`: always deletes the aggregate.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DeleteYourself {}

/// Marten's `RandomNotUsedEvent`: no projection handles it.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct RandomNotUsed {}

fn create(a: i64, b: i64, c: i64, d: i64) -> PendingEvent {
    PendingEvent::new(CreateEvent { a, b, c, d })
}

/// One letter event per character of `text` (Marten's `ToLetterEvents`).
fn letters(text: &str) -> Vec<PendingEvent> {
    text.chars()
        .map(|c| match c {
            'a' => PendingEvent::new(AEvent {}),
            'b' => PendingEvent::new(BEvent {}),
            'c' => PendingEvent::new(CEvent {}),
            'd' => PendingEvent::new(DEvent {}),
            other => panic!("no letter event {other}"),
        })
        .collect()
}

/// `events` after `first`.
fn then(first: PendingEvent, events: Vec<PendingEvent>) -> Vec<PendingEvent> {
    let mut all = vec![first];
    all.extend(events);
    all
}

macro_rules! letter_aggregate {
    ($(#[$meta:meta])* $name:ident, $id:ty) => {
        $(#[$meta])*
        #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        struct $name {
            id: $id,
            version: i64,
            a: i64,
            b: i64,
            c: i64,
            d: i64,
        }

        #[marten::apply]
        impl $name {
            fn create(e: &CreateEvent) -> Self {
                $name {
                    a: e.a,
                    b: e.b,
                    c: e.c,
                    d: e.d,
                    ..Default::default()
                }
            }
            fn apply(&mut self, _e: &AEvent) {
                self.a += 1;
            }
            fn apply(self, _e: &BEvent) -> Self {
                $name {
                    b: self.b + 1,
                    ..self
                }
            }
            fn apply(&mut self, _e: &CEvent) {
                self.c += 1;
            }
            fn apply(self, _e: &DEvent) -> Self {
                $name {
                    d: self.d + 1,
                    ..self
                }
            }
            fn should_delete(&self, _e: &Finished) -> bool {
                self.a + self.b + self.c + self.d > 10
            }
            fn should_delete(&self, _e: &DeleteYourself) -> bool {
                true
            }
        }

        impl $name {
            fn counts(&self) -> (i64, i64, i64, i64) {
                (self.a, self.b, self.c, self.d)
            }
        }
    };
}

letter_aggregate!(
    /// Marten's `MyAggregate` over uuid streams.
    Letters,
    Uuid
);

letter_aggregate!(
    /// Marten's `MyAggregate` over string streams (`SimpleAggregateAsString`).
    KeyedLetters,
    String
);

// ---------------------------------------------------------------------------------------
// Single-stream aggregates

/// Marten `Aggregation/when_doing_inline_per_stream_aggregations_with_Guid_stream_identity`
/// `.explicitly_new_stream` and `.new_stream_but_not_marked_that_way`: two streams in one
/// save, each opened by a creating event and continued by in-place and by-value applies,
/// are each projected inline from their own events only; the same with the streams
/// created by plain appends instead of starts.
#[tokio::test]
async fn inline_aggregates_of_streams_started_or_appended_in_one_save() {
    let (_schema, b) = builder("mps_inline_per_stream");
    let store = ok(b.projection::<Letters>(Lifecycle::Inline).build().await);
    let ids: [Uuid; 4] = std::array::from_fn(|_| Uuid::now_v7());
    let first = || then(create(1, 2, 3, 4), letters("aaa"));
    let second = || then(create(3, 3, 3, 3), letters("abc"));
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(ids[0], first()));
    ok(s.events().start_stream(ids[1], second()));
    ok(s.events().append(ids[2], first()));
    ok(s.events().append(ids[3], second()));
    ok(s.save_changes().await);
    for (i, id) in ids.iter().enumerate() {
        let doc = load::<Letters>(&store, id).await.expect("projected inline");
        let expected = if i % 2 == 0 {
            (4, 2, 3, 4)
        } else {
            (4, 4, 4, 3)
        };
        assert_eq!(doc.counts(), expected, "stream {i}");
        assert_eq!((doc.id, doc.version), (*id, 4), "stream {i}");
    }
}

/// Marten `Aggregation/when_doing_inline_per_stream_aggregations_with_Guid_stream_identity`
/// `.maybe_delete_negative` and `.maybe_delete_positive`: a deleting method that decides on
/// the folded state (more than 10 letters counted) keeps an aggregate that has not reached
/// it, inline and in a live fold, and deletes one that has (including one started from
/// `Default`, with no creating event).
#[tokio::test]
async fn a_conditional_deletion_decides_on_the_folded_state() {
    let (_schema, b) = builder("mps_maybe_delete");
    let store = ok(b.projection::<Letters>(Lifecycle::Inline).build().await);
    let (kept, at_ten, deleted) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    let mut events = then(create(1, 1, 1, 1), letters("aaa"));
    events.push(PendingEvent::new(Finished {}));
    ok(s.events().start_stream(kept, events));
    let mut events = then(create(1, 1, 1, 1), letters("aaaaaa"));
    events.push(PendingEvent::new(Finished {}));
    ok(s.events().start_stream(at_ten, events));
    let mut events = letters(&"a".repeat(18));
    events.push(PendingEvent::new(Finished {}));
    ok(s.events().start_stream(deleted, events));
    ok(s.save_changes().await);

    let doc = load::<Letters>(&store, &kept)
        .await
        .expect("7 letters: kept");
    assert_eq!((doc.counts(), doc.version), ((4, 1, 1, 1), 5));
    let doc = load::<Letters>(&store, &at_ten)
        .await
        .expect("10 letters: kept");
    assert_eq!((doc.counts(), doc.version), ((7, 1, 1, 1), 8));
    assert!(
        load::<Letters>(&store, &deleted).await.is_none(),
        "18 letters: deleted"
    );
    let live: Option<Letters> = ok(s.events().aggregate_stream(deleted).await);
    assert!(live.is_none(), "the live fold agrees");
    let live: Letters = ok(s.events().aggregate_stream(kept).await).expect("kept");
    assert_eq!(live.counts(), (4, 1, 1, 1));
}

/// Marten `Aggregation/when_finding_the_last_good_aggregation.finding_last_aggregate_using_guid`
/// and `.finding_last_aggregate_using_string` (without `AggregateStreamToLastKnown`, which
/// marten-rs does not have: the state before the deletion is read up to its version): a
/// stream ending in a deleting event folds to nothing, up to the version before it to the
/// last state; events appended after the deletion start the aggregate again from
/// `Default` (only the new events counted), live and inline, uuid and string streams.
#[tokio::test]
async fn a_deleted_aggregate_starts_again_from_default_on_later_events() {
    for inline in [true, false] {
        let label = if inline {
            "mps_last_good_inline"
        } else {
            "mps_last_good_live"
        };
        let (_schema, b) = builder(label);
        let b = b.projection::<Letters>(if inline {
            Lifecycle::Inline
        } else {
            Lifecycle::Live
        });
        let store = ok(b.build().await);
        let id = Uuid::now_v7();
        let mut s = store.lightweight_session();
        let mut events = letters("abcd");
        events.push(PendingEvent::new(DeleteYourself {}));
        ok(s.events().start_stream(id, events));
        ok(s.save_changes().await);
        assert!(
            ok(s.events().aggregate_stream::<Letters>(id).await).is_none(),
            "{label}"
        );
        assert!(load::<Letters>(&store, &id).await.is_none(), "{label}");
        let at4: Letters = ok(s
            .events()
            .aggregate_stream_with(id, StreamRange::all().up_to_version(4))
            .await)
        .expect("the last state before the deletion");
        assert_eq!((at4.counts(), at4.version), ((1, 1, 1, 1), 4), "{label}");

        ok(s.events().append(id, letters("dd")));
        ok(s.save_changes().await);
        let again: Letters = ok(s.events().aggregate_stream(id).await).expect("started again");
        assert_eq!(
            (again.id, again.counts(), again.version),
            (id, (0, 0, 0, 2), 7),
            "{label}"
        );
        assert_eq!(
            load::<Letters>(&store, &id).await.is_some(),
            inline,
            "{label}"
        );
        if inline {
            assert_eq!(load::<Letters>(&store, &id).await, Some(again), "{label}");
        }
    }

    let (_schema, b) = builder("mps_last_good_string");
    let store = ok(b.stream_identity(StreamIdentity::String).build().await);
    let key = format!("letters-{}", Uuid::now_v7());
    let mut s = store.lightweight_session();
    let mut events = letters("abcd");
    events.push(PendingEvent::new(DeleteYourself {}));
    ok(s.events().start_stream(key.as_str(), events));
    ok(s.save_changes().await);
    assert!(ok(s
        .events()
        .aggregate_stream::<KeyedLetters>(key.as_str())
        .await)
    .is_none());
    let at4: KeyedLetters = ok(s
        .events()
        .aggregate_stream_with(key.as_str(), StreamRange::all().up_to_version(4))
        .await)
    .expect("before the deletion");
    assert_eq!(
        (at4.id.as_str(), at4.counts()),
        (key.as_str(), (1, 1, 1, 1))
    );
    ok(s.events().append(key.as_str(), letters("dd")));
    ok(s.save_changes().await);
    let again: KeyedLetters = ok(s.events().aggregate_stream(key.as_str()).await).expect("again");
    assert_eq!((again.counts(), again.version), ((0, 0, 0, 2), 7));
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MemberJoined {
    member: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MemberLeft {
    member: String,
}

/// A multi-stream document with `Default` whose only method for `MemberLeft` deletes it.
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct Membership {
    id: String,
    joined: i64,
}

#[marten::apply]
impl Membership {
    fn identity(e: &MemberJoined) -> String {
        e.member.clone()
    }
    fn identity(e: &MemberLeft) -> String {
        e.member.clone()
    }
    fn apply(&mut self, _e: &MemberJoined) {
        self.joined += 1;
    }
    fn should_delete(&self, _e: &MemberLeft) -> bool {
        true
    }
}

/// Marten `Aggregation/when_finding_the_last_good_aggregation` (`SimpleMaybeDeletedAggregate`:
/// a default constructor, and only `ShouldDelete` for `DeleteYourself`) and
/// `Aggregation/when_doing_inline_per_stream_aggregations_with_Guid_stream_identity`
/// (`SometimesDeletes`: only `ShouldDelete` for `Finished`), at the edge Marten's generated
/// dispatch guards: an event whose only method is a deleting one is asked only of an
/// existing aggregate (`if (snapshot != null && ShouldDelete(..)) snapshot = null;`) and
/// never creates one, default constructor or not. So a stream whose first event deletes,
/// or one deleted twice, has no aggregate, live or inline, and a multi-stream document is
/// not created by an event that deletes it.
#[tokio::test]
async fn a_deleting_event_never_creates_the_aggregate() {
    let (_schema, b) = builder("mps_bug_delete_creates");
    let store = ok(b
        .projection::<Letters>(Lifecycle::Inline)
        .multi_stream_projection::<Membership>(Lifecycle::Inline)
        .build()
        .await);
    let (deleted_first, deleted_twice, finished_first) =
        (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(deleted_first, [DeleteYourself {}]));
    let mut twice = letters("a");
    twice.push(PendingEvent::new(DeleteYourself {}));
    twice.push(PendingEvent::new(DeleteYourself {}));
    ok(s.events().start_stream(deleted_twice, twice));
    ok(s.events().start_stream(finished_first, [Finished {}]));
    ok(s.events().start_stream(
        Uuid::now_v7(),
        [
            PendingEvent::new(MemberJoined {
                member: "ann".into(),
            }),
            PendingEvent::new(MemberLeft {
                member: "ghost".into(),
            }),
        ],
    ));
    ok(s.save_changes().await);

    for (label, id) in [
        ("deleted first", deleted_first),
        ("deleted twice", deleted_twice),
        ("finished first", finished_first),
    ] {
        let live: Option<Letters> = ok(s.events().aggregate_stream(id).await);
        assert_eq!(live, None, "{label}: the live fold");
        assert_eq!(
            load::<Letters>(&store, &id).await,
            None,
            "{label}: the inline document"
        );
    }
    assert!(load::<Membership>(&store, &"ann".to_owned())
        .await
        .is_some());
    assert_eq!(
        load::<Membership>(&store, &"ghost".to_owned()).await,
        None,
        "a member who never joined, created by leaving"
    );
}

/// An event of a `Gauge`, applied and checked for deletion.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct GaugeTicked {}

/// An event of a `Gauge`, creating it and checked for deletion.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct GaugeReset {
    to: i64,
}

/// A state with `Default` whose deleting methods share their events with other methods:
/// `GaugeTicked` is applied (and deletes from 2 on), `GaugeReset` creates (and deletes
/// when negative).
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Gauge {
    id: Uuid,
    version: i64,
    n: i64,
}

#[marten::apply]
impl Gauge {
    fn create(e: &GaugeReset) -> Self {
        Gauge {
            n: e.to,
            ..Default::default()
        }
    }
    fn apply(&mut self, _e: &GaugeTicked) {
        self.n += 1;
    }
    fn should_delete(&self, _e: &GaugeTicked) -> bool {
        self.n >= 2
    }
    fn should_delete(&self, e: &GaugeReset) -> bool {
        e.to < 0
    }
}

/// Envelopes of `events` on one stream, at versions 1, 2, ...
fn envelopes(events: Vec<std::sync::Arc<dyn AnyEvent>>) -> Vec<EventEnvelope> {
    let stream = StreamId::Uuid(Uuid::nil());
    events
        .into_iter()
        .zip(1..)
        .map(|(data, version)| {
            let mut e = EventEnvelope::new(version, Uuid::now_v7(), stream.clone(), data);
            e.version = version;
            e
        })
        .collect()
}

macro_rules! events {
    ($($e:expr),* $(,)?) => {
        envelopes(vec![$(std::sync::Arc::new($e) as std::sync::Arc<dyn AnyEvent>),*])
    };
}

/// The fold of `events` from no state, each applied state stamped with its version.
fn folded<A: marten::Aggregate>(events: &[EventEnvelope]) -> Option<A> {
    marten::aggregate::fold(None, events, |s: &mut A, e| s.set_version(e.version))
        .unwrap_or_else(|(e, i)| panic!("fold failed at {i}: {}", e.message))
}

/// The dispatch `#[marten::apply]` generates, without a database (the edge of
/// `a_deleting_event_never_creates_the_aggregate`): an event whose only methods are
/// deleting ones leaves an absent state absent, `Default` or not, and does not stamp a
/// version; a later event that is applied starts the state from `Default` at its version.
/// An event that also has an applying or creating method still makes the state (from
/// `Default` and the apply, or from the create: the deletion is asked only of a state
/// that exists), and deletes it when asked of one. Events the type has no method for
/// are skipped by the fold.
#[test]
fn a_deleting_only_event_leaves_an_absent_state_absent() {
    let none = |events: &[EventEnvelope]| folded::<Letters>(events);
    assert_eq!(none(&events![DeleteYourself {}]), None);
    assert_eq!(none(&events![DeleteYourself {}, DeleteYourself {}]), None);
    assert_eq!(none(&events![Finished {}]), None);
    assert_eq!(none(&events![RandomNotUsed {}, Finished {}]), None);
    assert_eq!(none(&events![RandomNotUsed {}]), None);
    // The dispatch itself, also for an event the type has no method for (the fold skips
    // those; a direct call leaves the absent state absent, as `Apply` promises).
    for e in events![DeleteYourself {}, Finished {}, RandomNotUsed {}] {
        assert_eq!(
            ok_apply(<Letters as marten::Apply>::apply_event(None, &e)),
            None,
            "{}: the dispatch itself",
            e.event_type
        );
    }
    let again = folded::<Letters>(&events![DeleteYourself {}, AEvent {}]).expect("from Default");
    assert_eq!((again.counts(), again.version), ((1, 0, 0, 0), 2));
    let kept = folded::<Letters>(&events![AEvent {}, Finished {}]).expect("not past 10");
    assert_eq!((kept.counts(), kept.version), ((1, 0, 0, 0), 2));

    let gauge = |events: &[EventEnvelope]| folded::<Gauge>(events).map(|g| (g.n, g.version));
    assert_eq!(gauge(&events![GaugeTicked {}]), Some((1, 1)));
    assert_eq!(
        gauge(&events![GaugeTicked {}, GaugeTicked {}]),
        Some((2, 2))
    );
    assert_eq!(
        gauge(&events![GaugeTicked {}, GaugeTicked {}, GaugeTicked {}]),
        None
    );
    assert_eq!(
        gauge(&events![
            GaugeTicked {},
            GaugeTicked {},
            GaugeTicked {},
            GaugeTicked {}
        ]),
        Some((1, 4))
    );
    assert_eq!(gauge(&events![GaugeReset { to: -1 }]), Some((-1, 1)));
    assert_eq!(gauge(&events![GaugeTicked {}, GaugeReset { to: -1 }]), None);
    assert_eq!(
        gauge(&events![GaugeTicked {}, GaugeReset { to: 5 }]),
        Some((1, 2))
    );

    let member = |name: &str| MemberJoined {
        member: name.into(),
    };
    let left = |name: &str| MemberLeft {
        member: name.into(),
    };
    let membership = |events: &[EventEnvelope]| {
        marten::aggregate::fold::<Membership>(None, events, |_, _| {})
            .unwrap_or_else(|(e, i)| panic!("fold failed at {i}: {}", e.message))
    };
    assert_eq!(membership(&events![left("ghost")]), None);
    assert_eq!(membership(&events![member("ann"), left("ann")]), None);
    assert_eq!(
        membership(&events![left("bob"), member("bob")]).map(|m| m.joined),
        Some(1)
    );
}

fn ok_apply<T>(r: Result<T, ApplyError>) -> T {
    r.unwrap_or_else(|e| panic!("apply failed: {}", e.message))
}

/// `a_deleting_event_never_creates_the_aggregate` in every lifecycle, across saves: a
/// stream whose first events only delete has no aggregate (live fold, inline document,
/// daemon document, `fetch_for_writing`'s state at the stream's version), and its next
/// applied event starts the aggregate from `Default` at the stream version (inline,
/// planned from the cache entry of the absent document). A multi-stream document is
/// neither created by an event that deletes it (alone, again in a later batch, or after
/// the event that would have created it in the same batch) nor kept by one.
#[tokio::test]
async fn a_deleting_event_creates_nothing_live_inline_or_async() {
    for lifecycle in [Lifecycle::Live, Lifecycle::Inline, Lifecycle::Async] {
        let label = match lifecycle {
            Lifecycle::Live => "mps_delete_first_live",
            Lifecycle::Inline => "mps_delete_first_inline",
            _ => "mps_delete_first_async",
        };
        let (_schema, b) = builder(label);
        let mut b = b.projection::<Letters>(lifecycle);
        let documents = lifecycle != Lifecycle::Live;
        if documents {
            b = b.multi_stream_projection::<Membership>(lifecycle);
        }
        let store = ok(b.build().await);
        let (first, twice) = (Uuid::now_v7(), Uuid::now_v7());
        let member = |name: &str| {
            PendingEvent::new(MemberJoined {
                member: name.into(),
            })
        };
        let left = |name: &str| {
            PendingEvent::new(MemberLeft {
                member: name.into(),
            })
        };
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(first, [DeleteYourself {}]));
        ok(s.events()
            .start_stream(twice, [DeleteYourself {}, DeleteYourself {}]));
        ok(s.events().start_stream(
            Uuid::now_v7(),
            [
                left("ghost"),
                member("ann"),
                left("ann"),
                left("bob"),
                member("bob"),
            ],
        ));
        ok(s.save_changes().await);
        let daemon = match lifecycle {
            Lifecycle::Async => Some(caught_up(&store).await),
            _ => None,
        };

        for id in [first, twice] {
            let live: Option<Letters> = ok(s.events().aggregate_stream(id).await);
            assert_eq!(live, None, "{label}: the live fold");
            assert_eq!(load::<Letters>(&store, &id).await, None, "{label}");
        }
        let w = ok(s.events().fetch_for_writing::<Letters>(first).await);
        assert_eq!((w.state(), w.version()), (None, 1), "{label}");
        drop(w);
        if documents {
            let joined = |name: &str| {
                let store = &store;
                let name = name.to_owned();
                async move { load::<Membership>(store, &name).await.map(|m| m.joined) }
            };
            assert_eq!(joined("ghost").await, None, "{label}: left without joining");
            assert_eq!(joined("ann").await, None, "{label}: joined and left");
            assert_eq!(joined("bob").await, Some(1), "{label}: left, then joined");
        }

        let mut s = store.lightweight_session();
        ok(s.events().append(first, letters("a")));
        ok(s.events().append(twice, [DeleteYourself {}]));
        ok(s.events()
            .start_stream(Uuid::now_v7(), [left("ghost"), left("bob")]));
        ok(s.save_changes().await);
        if let Some(daemon) = &daemon {
            ok(daemon.wait_for_non_stale(WAIT).await);
        }

        let again: Letters = ok(s.events().aggregate_stream(first).await).expect("applied");
        assert_eq!(
            (again.id, again.counts(), again.version),
            (first, (1, 0, 0, 0), 2),
            "{label}: from Default, at the stream version"
        );
        let stored = load::<Letters>(&store, &first).await;
        assert_eq!(stored, documents.then_some(again), "{label}");
        let live: Option<Letters> = ok(s.events().aggregate_stream(twice).await);
        assert_eq!(live, None, "{label}: deleted three times");
        assert_eq!(load::<Letters>(&store, &twice).await, None, "{label}");
        if documents {
            for name in ["ghost", "bob"] {
                assert_eq!(
                    load::<Membership>(&store, &name.to_owned()).await,
                    None,
                    "{label}: {name}"
                );
            }
        }
        if let Some(daemon) = daemon {
            ok(daemon.stop().await);
        }
    }
}

/// Marten `Aggregation/when_doing_live_aggregations.when_requesting_an_aggregate_for_an_invalid_version`
/// (and `..._with_string_identifiers`), the part marten-rs shares: a live fold up to the
/// stream's last version is the fold of the whole stream, for uuid and string streams.
/// (Marten also reads `null` at a version past the stream's end; marten-rs's
/// `StreamRange::up_to_version` is a filter of the events and folds the whole stream
/// there.)
#[tokio::test]
async fn a_live_fold_up_to_the_last_version_is_the_whole_fold() {
    let (_schema, b) = builder("mps_invalid_version");
    let store = ok(b.build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, letters("abcd")));
    ok(s.save_changes().await);
    let all: Letters = ok(s.events().aggregate_stream(id).await).expect("folded");
    let at4: Letters = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().up_to_version(4))
        .await)
    .expect("at 4");
    let at3: Letters = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().up_to_version(3))
        .await)
    .expect("at 3");
    assert_eq!(at4, all);
    assert_eq!((all.counts(), all.version), ((1, 1, 1, 1), 4));
    assert_eq!((at3.counts(), at3.version), ((1, 1, 1, 0), 3));

    let (_schema, b) = builder("mps_invalid_version_str");
    let store = ok(b.stream_identity(StreamIdentity::String).build().await);
    let key = Uuid::now_v7().to_string();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(key.as_str(), letters("abcd")));
    ok(s.save_changes().await);
    let all: KeyedLetters = ok(s.events().aggregate_stream(key.as_str()).await).expect("folded");
    let at4: KeyedLetters = ok(s
        .events()
        .aggregate_stream_with(key.as_str(), StreamRange::all().up_to_version(4))
        .await)
    .expect("at 4");
    assert_eq!(at4, all);
    assert_eq!((all.id.as_str(), all.version), (key.as_str(), 4));
}

/// The aggregate whose version field has another name (Marten's
/// `MyAggregateWithDifferentVersionProperty`, `[Version] SpecialVersion`).
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Revisioned {
    id: Uuid,
    #[aggregate(version)]
    special_version: i64,
    a: i64,
}

#[marten::apply]
impl Revisioned {
    fn apply(&mut self, _e: &AEvent) {
        self.a += 1;
    }
}

/// Marten `Aggregation/setting_version_number_on_aggregate` (`set_on_live_aggregation`,
/// `set_on_inline_single_stream_aggregation`, `set_on_async_single_stream_aggregation` and
/// `set_version_on_aggregate_with_explicit_Version_attribute`): after a stream of three
/// events the aggregate's version is 3 whether it is folded live, projected inline or by
/// the daemon, also in a version field of another name.
#[tokio::test]
async fn the_aggregate_version_is_the_stream_version_in_every_lifecycle() {
    for lifecycle in [Lifecycle::Live, Lifecycle::Inline, Lifecycle::Async] {
        let label = match lifecycle {
            Lifecycle::Live => "mps_version_live",
            Lifecycle::Inline => "mps_version_inline",
            _ => "mps_version_async",
        };
        let (_schema, b) = builder(label);
        let store = ok(b.projection::<Letters>(lifecycle).build().await);
        let id = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(id, letters("abc")));
        ok(s.save_changes().await);
        let aggregate = match lifecycle {
            Lifecycle::Live => ok(s.events().aggregate_stream::<Letters>(id).await),
            Lifecycle::Inline => load::<Letters>(&store, &id).await,
            _ => {
                let daemon = caught_up(&store).await;
                ok(daemon.stop().await);
                load::<Letters>(&store, &id).await
            }
        }
        .expect("an aggregate");
        assert_eq!((aggregate.version, aggregate.a), (3, 1), "{label}");
    }

    let (_schema, b) = builder("mps_version_named");
    let store = ok(b.projection::<Revisioned>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, letters("aaa")));
    ok(s.save_changes().await);
    let doc = load::<Revisioned>(&store, &id).await.expect("projected");
    assert_eq!((doc.special_version, doc.a), (3, 3));
}

/// What a live fold saw of the metadata (Marten's `UsingMetadata` projection).
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Traced {
    id: Uuid,
    version: i64,
    created_in: Uuid,
    a_event: Option<Uuid>,
    a: i64,
}

#[marten::apply]
impl Traced {
    fn create(_e: &CreateEvent, meta: &EventEnvelope) -> Self {
        Traced {
            id: Uuid::nil(),
            version: 0,
            created_in: uuid_of(&meta.stream_id),
            a_event: None,
            a: 0,
        }
    }
    fn apply(&mut self, _e: &AEvent, meta: &EventEnvelope) {
        self.a_event = Some(meta.id);
        self.a += 1;
    }
}

/// Marten `Aggregation/when_doing_live_aggregations.sync_apply_and_default_create`,
/// `.sync_apply_and_specific_create` and `.using_event_metadata` (and
/// `Bugs/Bug_1679_use_inner_type_for_stream_aggregation`, an aggregate whose applies take
/// the event with its metadata): a live fold starts from `Default` when the first event has
/// no creating method and from the creating method when it has one, then applies every
/// later event, in place or by value; creating and applying methods see the stream id and
/// the event's own id.
#[tokio::test]
async fn a_live_fold_creates_from_default_or_the_create_method_and_sees_metadata() {
    let (_schema, b) = builder("mps_live_create");
    let store = ok(b.build().await);
    let (by_default, by_create, traced) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let a_id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(by_default, letters("bcbccad")));
    ok(s.events()
        .start_stream(by_create, then(create(2, 3, 4, 5), letters("bcbccad"))));
    ok(s.events().start_stream(
        traced,
        [
            create(2, 3, 4, 5),
            PendingEvent::new(AEvent {}).with_id(a_id),
        ],
    ));
    ok(s.save_changes().await);

    let from_default: Letters = ok(s.events().aggregate_stream(by_default).await).expect("folded");
    assert_eq!(from_default.counts(), (1, 2, 3, 1));
    let from_create: Letters = ok(s.events().aggregate_stream(by_create).await).expect("folded");
    assert_eq!(from_create.counts(), (3, 5, 7, 6));
    let seen: Traced = ok(s.events().aggregate_stream(traced).await).expect("folded");
    assert_eq!(
        (seen.id, seen.created_in, seen.a_event, seen.a),
        (traced, traced, Some(a_id), 1)
    );
}

/// Marten `Bugs/Bug_1723_inline_projections_get_cut_off`: two long streams started in one
/// save (121 and 301 events) are projected inline whole, nothing cut off.
#[tokio::test]
async fn long_streams_started_in_one_save_are_projected_whole() {
    let (_schema, b) = builder("mps_big_streams");
    let store = ok(b.projection::<Letters>(Lifecycle::Inline).build().await);
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        first,
        then(create(1, 2, 3, 4), letters(&"abbccc".repeat(20))),
    ));
    ok(s.events().start_stream(
        second,
        then(create(3, 3, 3, 3), letters(&"abc".repeat(100))),
    ));
    ok(s.save_changes().await);
    let doc = load::<Letters>(&store, &first).await.expect("first");
    assert_eq!((doc.counts(), doc.version), ((21, 42, 63, 4), 121));
    let doc = load::<Letters>(&store, &second).await.expect("second");
    assert_eq!((doc.counts(), doc.version), ((103, 103, 103, 3), 301));
}

// ---------------------------------------------------------------------------------------
// The quest party (Marten's `QuestParty`, `QuestMonsters`).

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
struct MonsterSlayed {
    name: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct QuestParty {
    id: Uuid,
    version: i64,
    name: String,
    members: Vec<String>,
}

#[marten::apply]
impl QuestParty {
    fn create(e: &QuestStarted) -> Self {
        QuestParty {
            id: Uuid::nil(),
            version: 0,
            name: e.name.clone(),
            members: vec![],
        }
    }
    fn apply(&mut self, e: &MembersJoined) {
        self.members.extend(e.members.iter().cloned());
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct QuestMonsters {
    id: Uuid,
    version: i64,
    monsters: Vec<String>,
}

#[marten::apply]
impl QuestMonsters {
    fn apply(&mut self, e: &MonsterSlayed) {
        self.monsters.push(e.name.clone());
    }
}

fn quest_started(name: &str) -> PendingEvent {
    PendingEvent::new(QuestStarted { name: name.into() })
}

fn joined(day: i32, location: &str, members: &[&str]) -> PendingEvent {
    PendingEvent::new(MembersJoined {
        day,
        location: location.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    })
}

fn slayed(name: &str) -> PendingEvent {
    PendingEvent::new(MonsterSlayed { name: name.into() })
}

/// Marten `Projections/inline_aggregation_by_stream_with_multiples.run_multiple_aggregates_sync`
/// (single tenancy) and `Aggregation/using_event_filtering_within_inline_aggregations`
/// (`single_stream_projection_running_inline_only_applies_to_matching_events`,
/// `completely_ignore_event_that_does_not_apply_with_conventional_apply`): three inline
/// aggregates over the same saves; each stream gets a document of exactly the types that
/// handle one of its events (two types from one stream), and an event no type handles,
/// first or last, changes nothing.
#[tokio::test]
async fn inline_aggregates_only_project_the_streams_whose_events_they_handle() {
    let (_schema, b) = builder("mps_filtering");
    let store = ok(b
        .projection::<QuestParty>(Lifecycle::Inline)
        .projection::<QuestMonsters>(Lifecycle::Inline)
        .projection::<Letters>(Lifecycle::Inline)
        .build()
        .await);
    let ids: [Uuid; 5] = std::array::from_fn(|_| Uuid::now_v7());
    let [lettered, quest, multiples, unused_first, unused_last] = ids;
    let members = ["Mat", "Perrin", "Egwene"];
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(lettered, letters("ab")));
    ok(s.events().start_stream(
        quest,
        [quest_started("Eye"), joined(1, "Emond's Field", &members)],
    ));
    ok(s.events().start_stream(
        multiples,
        [
            quest_started("Find the Orb"),
            joined(2, "Faldor's Farm", &["Garion", "Polgara", "Belgarath"]),
            slayed("Troll"),
            slayed("Dragon"),
            joined(5, "Sendaria", &["Silk", "Barak"]),
        ],
    ));
    ok(s.save_changes().await);
    ok(s.events().start_stream(
        unused_first,
        [
            PendingEvent::new(RandomNotUsed {}),
            quest_started("Eye"),
            joined(1, "Emond's Field", &members),
        ],
    ));
    ok(s.events().start_stream(
        unused_last,
        [
            quest_started("Eye"),
            joined(1, "Emond's Field", &members),
            PendingEvent::new(RandomNotUsed {}),
        ],
    ));
    ok(s.save_changes().await);

    assert!(load::<QuestParty>(&store, &lettered).await.is_none());
    assert!(load::<Letters>(&store, &lettered).await.is_some());
    assert!(load::<Letters>(&store, &quest).await.is_none());
    assert!(load::<QuestMonsters>(&store, &quest).await.is_none());
    assert_eq!(
        load::<QuestParty>(&store, &quest).await.map(|p| p.members),
        Some(members.map(String::from).to_vec())
    );
    let monsters = load::<QuestMonsters>(&store, &multiples)
        .await
        .expect("monsters");
    assert_eq!(monsters.monsters, ["Troll", "Dragon"]);
    let party = load::<QuestParty>(&store, &multiples).await.expect("party");
    assert_eq!(
        party.members,
        ["Garion", "Polgara", "Belgarath", "Silk", "Barak"]
    );
    let first = load::<QuestParty>(&store, &unused_first)
        .await
        .expect("created after the unused event");
    assert_eq!((first.members.len(), first.version), (3, 3));
    let last = load::<QuestParty>(&store, &unused_last)
        .await
        .expect("not undone by the unused event");
    assert_eq!(
        (last.members.len(), last.version),
        (3, 3),
        "the version of the stream as the save left it"
    );
}

// ---------------------------------------------------------------------------------------
// Bug 3310: conjoined, string-keyed inline aggregates over many saves.

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct LoadTestEvent {
    value: Uuid,
    count: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct LoadTestUnrelatedEvent {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct LoadTestTotal {
    id: String,
    version: i64,
    last_value: Uuid,
    sum: i64,
}

#[marten::apply]
impl LoadTestTotal {
    fn apply(self, e: &LoadTestEvent) -> Self {
        LoadTestTotal {
            last_value: e.value,
            sum: self.sum + e.count,
            ..self
        }
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct LoadTestUnrelated {
    id: String,
    version: i64,
    count: i64,
}

#[marten::apply]
impl LoadTestUnrelated {
    fn apply(self, _e: &LoadTestUnrelatedEvent) -> Self {
        LoadTestUnrelated {
            count: self.count + 1,
            ..self
        }
    }
}

fn load_test(count: i64) -> LoadTestEvent {
    LoadTestEvent {
        value: Uuid::now_v7(),
        count,
    }
}

fn sum_1_to(n: i64) -> i64 {
    n * (n + 1) / 2
}

async fn load_for<D: marten::PgDocument>(
    store: &DocumentStore,
    tenant: &str,
    id: &D::Id,
) -> Option<D> {
    ok(ok(store.query_session_for(tenant)).load::<D>(id).await)
}

/// Marten `Bugs/Bug_3310_inline_projections_with_quick_append`
/// (`start_and_append_events_to_same_stream`, `update_1_stream_with_many_events` and
/// `update_many_streams_with_1_event`, with and without an expected version): on
/// conjoined, string-keyed streams with two inline aggregates (one handling only an
/// event the other ignores), a tenant's saves, several per session and in sessions of
/// their own, keep each document's version at its stream's version and its sum exact;
/// another tenant sees none of it.
#[tokio::test]
async fn inline_versions_stay_exact_over_many_saves_of_conjoined_string_streams() {
    const TENANT: &str = "tenant-1";
    const ITERATIONS: i64 = 3;
    const N: i64 = 10;
    let (_schema, b) = builder("mps_bug_3310");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .stream_identity(StreamIdentity::String)
        .projection::<LoadTestTotal>(Lifecycle::Inline)
        .projection::<LoadTestUnrelated>(Lifecycle::Inline)
        .build()
        .await);
    let key = || Uuid::now_v7().to_string();
    let mut s = ok(store.lightweight_session_for(TENANT));

    // Preload: a stream both types handle.
    let preload = key();
    ok(s.events().start_stream(
        preload.as_str(),
        [
            PendingEvent::new(load_test(0)),
            PendingEvent::new(LoadTestUnrelatedEvent {}),
        ],
    ));
    ok(s.save_changes().await);
    assert_eq!(
        load_for::<LoadTestUnrelated>(&store, TENANT, &preload)
            .await
            .map(|d| (d.count, d.version)),
        Some((1, 2))
    );
    assert_eq!(
        load_for::<LoadTestTotal>(&store, TENANT, &preload)
            .await
            .map(|d| d.version),
        Some(2),
        "a save with an event it handles leaves it at the stream's version"
    );

    // One stream, started then appended to in the same session.
    let same = key();
    ok(s.events()
        .start_stream(same.as_str(), (1..=3).map(load_test)));
    ok(s.save_changes().await);
    ok(s.events().append(same.as_str(), (4..=5).map(load_test)));
    ok(s.save_changes().await);
    let doc = load_for::<LoadTestTotal>(&store, TENANT, &same)
        .await
        .expect("same");
    assert_eq!((doc.version, doc.sum), (5, 15));

    // One stream, many events per save.
    for expected_version in [true, false] {
        let stream = key();
        let mut count = 1;
        ok(s.events().start_stream(stream.as_str(), [load_test(count)]));
        ok(s.save_changes().await);
        for _ in 0..ITERATIONS {
            let events: Vec<_> = (count + 1..=count + N).map(load_test).collect();
            if expected_version {
                ok(s.events().append_expected(stream.as_str(), count, events));
                ok(s.save_changes().await);
            } else {
                // A session of its own for each save.
                let mut other = ok(store.lightweight_session_for(TENANT));
                ok(other.events().append(stream.as_str(), events));
                ok(other.save_changes().await);
            }
            count += N;
        }
        let doc = load_for::<LoadTestTotal>(&store, TENANT, &stream)
            .await
            .expect("projected");
        assert_eq!(
            (doc.version, doc.sum),
            (count, sum_1_to(count)),
            "expected version: {expected_version}"
        );
        let last = ok(s.events().fetch_stream(stream.as_str()).await)
            .last()
            .and_then(|e| e.data_as::<LoadTestEvent>().map(|l| l.value));
        assert_eq!(Some(doc.last_value), last);
    }

    // Many streams, one event each per save.
    for expected_version in [true, false] {
        let keys: Vec<String> = (0..N).map(|_| key()).collect();
        for k in &keys {
            ok(s.events().start_stream(k.as_str(), [load_test(0)]));
        }
        ok(s.save_changes().await);
        for iteration in 1..=ITERATIONS {
            for k in &keys {
                if expected_version {
                    ok(s.events()
                        .append_expected(k.as_str(), iteration, [load_test(iteration)]));
                } else {
                    ok(s.events().append(k.as_str(), [load_test(iteration)]));
                }
            }
            ok(s.save_changes().await);
        }
        for k in &keys {
            let doc = load_for::<LoadTestTotal>(&store, TENANT, k)
                .await
                .expect("projected");
            assert_eq!(
                (doc.version, doc.sum),
                (ITERATIONS + 1, sum_1_to(ITERATIONS)),
                "expected version: {expected_version}"
            );
        }
    }
    assert!(load_for::<LoadTestTotal>(&store, "tenant-2", &same)
        .await
        .is_none());
}

/// Marten `Bugs/Bug_1781_inline_projection_foreign_key_constraint_failure` (marten-rs has no
/// foreign keys between documents; the behaviour kept is the saves'): two inline aggregate
/// types on string streams, created in one save and deleted by events in another, whichever
/// order the streams are appended to.
#[tokio::test]
async fn two_aggregate_types_created_together_are_deleted_together() {
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct DataImportStarted {
        by_user: Uuid,
    }
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct DeleteImport {}
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct CreateDataItem {
        import_id: String,
        name: String,
    }
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct DeleteDataItem {}

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    struct DataImport {
        id: String,
        version: i64,
        started_by: Uuid,
    }
    #[marten::apply]
    impl DataImport {
        fn apply(&mut self, e: &DataImportStarted) {
            self.started_by = e.by_user;
        }
        fn should_delete(&self, _e: &DeleteImport) -> bool {
            true
        }
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    struct DataItem {
        id: String,
        version: i64,
        import_id: String,
        name: String,
    }
    #[marten::apply]
    impl DataItem {
        fn apply(&mut self, e: &CreateDataItem) {
            self.import_id = e.import_id.clone();
            self.name = e.name.clone();
        }
        fn should_delete(&self, _e: &DeleteDataItem) -> bool {
            true
        }
    }

    for items_first in [true, false] {
        let (_schema, b) = builder(if items_first {
            "mps_bug_1781_a"
        } else {
            "mps_bug_1781_b"
        });
        let store = ok(b
            .stream_identity(StreamIdentity::String)
            .projection::<DataItem>(Lifecycle::Inline)
            .projection::<DataImport>(Lifecycle::Inline)
            .build()
            .await);
        let user = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events()
            .start_stream("original", [DataImportStarted { by_user: user }]));
        ok(s.events().start_stream(
            "other",
            [CreateDataItem {
                import_id: "original".into(),
                name: "Data item".into(),
            }],
        ));
        ok(s.save_changes().await);
        let import = load::<DataImport>(&store, &"original".to_owned()).await;
        assert_eq!(import.map(|i| i.started_by), Some(user));
        let item = load::<DataItem>(&store, &"other".to_owned()).await;
        assert_eq!(item.map(|i| i.import_id), Some("original".to_owned()));

        if items_first {
            ok(s.events().append("other", [DeleteDataItem {}]));
            ok(s.events().append("original", [DeleteImport {}]));
        } else {
            ok(s.events().append("original", [DeleteImport {}]));
            ok(s.events().append("other", [DeleteDataItem {}]));
        }
        ok(s.save_changes().await);
        assert!(load::<DataImport>(&store, &"original".to_owned())
            .await
            .is_none());
        assert!(load::<DataItem>(&store, &"other".to_owned())
            .await
            .is_none());
    }
}

// ---------------------------------------------------------------------------------------
// Metadata applied by the last event, in every lifecycle

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ItemStarted {
    description: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ItemWorked {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ItemFinished {}

/// Marten's `Item` with `ItemProjection.ApplyMetadata`: the last event's header and
/// timestamp (in microseconds) stamp the aggregate.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Item {
    id: Uuid,
    version: i64,
    description: String,
    started: bool,
    completed: bool,
    last_modified_by: String,
    last_modified: i64,
}

impl Item {
    fn stamp(&mut self, meta: &EventEnvelope) {
        self.last_modified = (meta.timestamp.unix_timestamp_nanos() / 1000) as i64;
        self.last_modified_by = meta
            .headers
            .as_ref()
            .and_then(|h| h.get("last-modified-by"))
            .and_then(|v| v.as_str())
            .unwrap_or("System")
            .to_owned();
    }
}

#[marten::apply]
impl Item {
    fn apply(&mut self, e: &ItemStarted, meta: &EventEnvelope) {
        self.started = true;
        self.description = e.description.clone();
        self.stamp(meta);
    }
    fn apply(&mut self, _e: &ItemWorked, meta: &EventEnvelope) {
        self.stamp(meta);
    }
    fn apply(&mut self, _e: &ItemFinished, meta: &EventEnvelope) {
        self.completed = true;
        self.stamp(meta);
    }
}

/// Marten `Aggregation/using_apply_metadata` (`apply_metadata`, `use_with_fetch_latest`,
/// `use_with_fetch_for_writing` and `use_with_fetch_for_writing_for_specific_version`, each
/// live, inline and async): a header set on the session reaches every event it appends,
/// and an aggregate stamped from each event's metadata reads the last event's header and
/// timestamp at version 4 through `fetch_latest`, `fetch_for_writing` and
/// `fetch_for_writing_expected`; inline and async, the stored document says the same.
#[tokio::test]
async fn metadata_stamped_by_the_last_event_reads_the_same_in_every_lifecycle() {
    for lifecycle in [Lifecycle::Live, Lifecycle::Inline, Lifecycle::Async] {
        let label = match lifecycle {
            Lifecycle::Live => "mps_meta_live",
            Lifecycle::Inline => "mps_meta_inline",
            _ => "mps_meta_async",
        };
        let (_schema, b) = builder(label);
        let store = ok(b.projection::<Item>(lifecycle).build().await);
        let id = Uuid::now_v7();
        let mut s = store.lightweight_session();
        s.set_header("last-modified-by", "Glenn Frey");
        ok(s.events().start_stream(
            id,
            [ItemStarted {
                description: "Blue item".into(),
            }],
        ));
        ok(s.save_changes().await);
        ok(s.events().append(
            id,
            [
                PendingEvent::new(ItemWorked {}),
                PendingEvent::new(ItemWorked {}),
                PendingEvent::new(ItemFinished {}),
            ],
        ));
        ok(s.save_changes().await);
        let last = ok(s.events().fetch_stream(id).await)
            .last()
            .map(|e| (e.timestamp.unix_timestamp_nanos() / 1000) as i64)
            .expect("events");

        let mut reader = store.lightweight_session();
        let latest: Item = ok(reader.events().fetch_latest(id).await).expect("latest");
        assert_eq!(
            (latest.last_modified_by.as_str(), latest.version),
            ("Glenn Frey", 4),
            "{label}"
        );
        assert_eq!(latest.last_modified, last, "{label}: the last event's time");
        assert!(latest.started && latest.completed, "{label}");
        let w = ok(reader.events().fetch_for_writing::<Item>(id).await);
        assert_eq!((w.version(), w.state()), (4, Some(&latest)), "{label}");
        let w = ok(reader
            .events()
            .fetch_for_writing_expected::<Item>(id, 4)
            .await);
        assert_eq!(w.state(), Some(&latest), "{label}");

        let stored = match lifecycle {
            Lifecycle::Live => None,
            Lifecycle::Inline => load::<Item>(&store, &id).await,
            _ => {
                let daemon = caught_up(&store).await;
                ok(daemon.stop().await);
                load::<Item>(&store, &id).await
            }
        };
        match lifecycle {
            Lifecycle::Live => assert!(load::<Item>(&store, &id).await.is_none(), "{label}"),
            _ => assert_eq!(stored, Some(latest), "{label}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Strong-typed ids (Marten's `Payment`)

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentCreated {
    at: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentVerified {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct PaymentCanceled {}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum PaymentState {
    Created,
    Verified,
    Canceled,
}

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PaymentId(Uuid);

#[derive(DocumentId, Clone, Debug, PartialEq, Eq, Hash)]
struct PaymentKey(String);

macro_rules! payment {
    ($name:ident, $id:ty) => {
        #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
        struct $name {
            id: $id,
            version: i64,
            created_at: i64,
            state: PaymentState,
        }

        #[marten::apply]
        impl $name {
            /// The id from the event's stream, as Marten's `Payment.Create` takes it.
            fn create(e: &PaymentCreated, meta: &EventEnvelope) -> Self {
                $name {
                    id: <$id as AggregateId>::from_stream_id(&meta.stream_id)
                        .expect("the stream's id type"),
                    version: 0,
                    created_at: e.at,
                    state: PaymentState::Created,
                }
            }
            fn apply(&mut self, _e: &PaymentVerified) {
                self.state = PaymentState::Verified;
            }
            fn apply(&mut self, _e: &PaymentCanceled) {
                self.state = PaymentState::Canceled;
            }
        }
    };
}

payment!(Payment, PaymentId);
payment!(KeyedPayment, PaymentKey);

fn payment_opened() -> [PendingEvent; 2] {
    [
        PendingEvent::new(PaymentCreated { at: 1 }),
        PendingEvent::new(PaymentVerified {}),
    ]
}

/// Marten `Aggregation/using_guid_based_strong_typed_id_for_aggregate_identity`
/// (`can_utilize_strong_typed_id_in_aggregate_stream`, `use_fetch_for_writing` live, inline
/// and async, `can_utilize_strong_typed_id_in_with_inline_aggregations` and
/// `can_utilize_strong_typed_id_with_async_aggregation`): an aggregate whose id is a uuid
/// newtype reads its stream's id in every lifecycle; the daemon projects it and, on a
/// later append, updates the document it made.
#[tokio::test]
async fn a_uuid_newtype_aggregate_in_every_lifecycle() {
    for lifecycle in [Lifecycle::Live, Lifecycle::Inline, Lifecycle::Async] {
        let label = match lifecycle {
            Lifecycle::Live => "mps_payment_live",
            Lifecycle::Inline => "mps_payment_inline",
            _ => "mps_payment_async",
        };
        let (_schema, b) = builder(label);
        let store = ok(b.projection::<Payment>(lifecycle).build().await);
        let id = PaymentId(Uuid::now_v7());
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(id, payment_opened()));
        ok(s.save_changes().await);

        let live: Payment = ok(s.events().aggregate_stream(id).await).expect("folded");
        assert_eq!(
            (live.id, live.state),
            (id, PaymentState::Verified),
            "{label}"
        );
        let w = ok(s.events().fetch_for_writing::<Payment>(id).await);
        assert_eq!(w.state().map(|p| p.id), Some(id), "{label}");
        assert_eq!(w.version(), 2, "{label}");
        match lifecycle {
            Lifecycle::Live => assert!(load::<Payment>(&store, &id).await.is_none()),
            Lifecycle::Inline => assert_eq!(load::<Payment>(&store, &id).await, Some(live)),
            _ => {
                let daemon = caught_up(&store).await;
                assert_eq!(
                    load::<Payment>(&store, &id).await.map(|p| p.state),
                    Some(PaymentState::Verified)
                );
                ok(s.events().append(id, [PaymentCanceled {}]));
                ok(s.save_changes().await);
                ok(daemon.wait_for_non_stale(WAIT).await);
                ok(daemon.stop().await);
                let doc = load::<Payment>(&store, &id).await.expect("async document");
                assert_eq!(
                    (doc.id, doc.state, doc.version),
                    (id, PaymentState::Canceled, 3)
                );
            }
        }
    }
}

/// Marten `Aggregation/using_string_based_strong_typed_id_for_aggregate_identity`
/// (`can_utilize_strong_typed_id_in_aggregate_stream`, `use_fetch_for_writing` async and
/// `can_utilize_strong_typed_id_with_async_aggregation`): the same with a string newtype
/// on string streams, projected by the daemon.
#[tokio::test]
async fn a_string_newtype_aggregate_projected_by_the_daemon() {
    let (_schema, b) = builder("mps_payment_key_async");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .projection::<KeyedPayment>(Lifecycle::Async)
        .build()
        .await);
    let key = PaymentKey(Uuid::now_v7().to_string());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(&key, payment_opened()));
    ok(s.save_changes().await);
    let live: KeyedPayment = ok(s.events().aggregate_stream(key.clone()).await).expect("folded");
    assert_eq!(live.id, key);
    let w = ok(s
        .events()
        .fetch_for_writing::<KeyedPayment>(key.clone())
        .await);
    assert_eq!(w.state().map(|p| p.id.clone()), Some(key.clone()));

    let daemon = caught_up(&store).await;
    assert_eq!(
        load::<KeyedPayment>(&store, &key).await.map(|p| p.state),
        Some(PaymentState::Verified)
    );
    ok(s.events().append(&key, [PaymentCanceled {}]));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(
        load::<KeyedPayment>(&store, &key).await.map(|p| p.state),
        Some(PaymentState::Canceled)
    );
}

// ---------------------------------------------------------------------------------------
// Hand-written dispatch (Marten's explicit `Evolve` code)

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CustomEvent {
    number: i32,
    letter: char,
}

/// Marten's `CustomAggregate`: a multi-stream document keyed by an integer.
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct CustomAggregate {
    id: i32,
    a: i64,
    b: i64,
    c: i64,
    d: i64,
}

/// Marten's `MyCustomProjection.Evolve`, written by hand instead of by `#[marten::apply]`.
impl marten::Apply for CustomAggregate {
    const USES_METADATA: bool = false;

    fn apply_event(state: Option<Self>, event: &EventEnvelope) -> Result<Option<Self>, ApplyError> {
        let mut doc = state.unwrap_or_default();
        if let Some(e) = event.data_as::<CustomEvent>() {
            match e.letter {
                'a' => doc.a += 1,
                'b' => doc.b += 1,
                'c' => doc.c += 1,
                'd' => doc.d += 1,
                other => return Err(ApplyError::new(format!("no letter {other}"))),
            }
        }
        Ok(Some(doc))
    }

    fn handles(event: &dyn AnyEvent) -> bool {
        event.as_any().is::<CustomEvent>()
    }
}

impl marten::Identities for CustomAggregate {
    fn identities(event: &EventEnvelope) -> Vec<i32> {
        event
            .data_as::<CustomEvent>()
            .map(|e| vec![e.number])
            .unwrap_or_default()
    }
}

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
struct CustomGuidId(Uuid);

/// Marten's `MyCustomGuidAggregate` with `MyCustomGuidProjection.Evolve`.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct CustomGuidAggregate {
    id: CustomGuidId,
    version: i64,
    a: i64,
    b: i64,
    c: i64,
    d: i64,
}

/// Hand-written, with the default `USES_METADATA` (`true`).
impl marten::Apply for CustomGuidAggregate {
    fn apply_event(state: Option<Self>, event: &EventEnvelope) -> Result<Option<Self>, ApplyError> {
        let mut doc = state.unwrap_or_default();
        if event.is::<AEvent>() {
            doc.a += 1;
        } else if event.is::<BEvent>() {
            doc.b += 1;
        } else if event.is::<CEvent>() {
            doc.c += 1;
        } else if event.is::<DEvent>() {
            doc.d += 1;
        }
        Ok(Some(doc))
    }

    fn handles(event: &dyn AnyEvent) -> bool {
        let any = event.as_any();
        any.is::<AEvent>() || any.is::<BEvent>() || any.is::<CEvent>() || any.is::<DEvent>()
    }
}

/// Marten `Aggregation/explicit_code_for_aggregation_logic` (`custom_projection_end_to_end`
/// `.use_inline_synchronous` / `.use_inline_asynchronous` and
/// `.use_strong_typed_guid_based_identifier`): dispatch written by hand (`Apply` and
/// `Identities` implemented without the macro) projects inline like generated dispatch: a
/// multi-stream document per integer id across eleven single-event streams of one save,
/// and a single-stream aggregate with a uuid newtype id.
#[tokio::test]
async fn hand_written_dispatch_projects_inline() {
    let (_schema, b) = builder("mps_explicit_code");
    let store = ok(b
        .event::<CustomEvent>()
        .multi_stream_projection::<CustomAggregate>(Lifecycle::Inline)
        .projection::<CustomGuidAggregate>(Lifecycle::Inline)
        .build()
        .await);
    let mut s = store.lightweight_session();
    for (number, letter) in [
        (1, 'a'),
        (1, 'a'),
        (1, 'b'),
        (1, 'c'),
        (1, 'd'),
        (2, 'a'),
        (2, 'a'),
        (3, 'b'),
        (3, 'd'),
        (1, 'a'),
        (1, 'a'),
    ] {
        ok(s.events()
            .append(Uuid::now_v7(), [CustomEvent { number, letter }]));
    }
    ok(s.save_changes().await);
    let expected = [(1, (4, 1, 1, 1)), (2, (2, 0, 0, 0)), (3, (0, 1, 0, 1))];
    for (id, (a, b, c, d)) in expected {
        assert_eq!(
            load::<CustomAggregate>(&store, &id).await,
            Some(CustomAggregate { id, a, b, c, d }),
            "{id}"
        );
    }
    assert!(load::<CustomAggregate>(&store, &4).await.is_none());

    let stream = CustomGuidId(Uuid::now_v7());
    ok(s.events().start_stream(stream, letters("abb")));
    ok(s.save_changes().await);
    let doc = load::<CustomGuidAggregate>(&store, &stream)
        .await
        .expect("projected");
    assert_eq!(
        (doc.id, doc.version, doc.a, doc.b, doc.c),
        (stream, 3, 1, 2, 0)
    );
    let live: CustomGuidAggregate = ok(s.events().aggregate_stream(stream).await).expect("live");
    assert_eq!(live, doc);
}

// ---------------------------------------------------------------------------------------
// Versioned events of the same short name

mod v1 {
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "v1.customer_created")]
    pub struct CustomerCreated {
        pub name: String,
    }

    /// Under its default name, `customer_renamed`.
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct CustomerRenamed {
        pub name: String,
    }
}

mod v2 {
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "v2.customer_created")]
    pub struct CustomerCreated {
        pub name: String,
        pub email: String,
    }

    /// Under the same default name as `v1::CustomerRenamed`.
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct CustomerRenamed {
        pub name: String,
        pub email: String,
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct VersionedCustomer {
    id: Uuid,
    version: i64,
    name: String,
    email: String,
    v1_applied: i64,
    v2_applied: i64,
}

#[marten::apply]
impl VersionedCustomer {
    fn apply(&mut self, e: &v1::CustomerCreated) {
        self.name = e.name.clone();
        self.v1_applied += 1;
    }
    fn apply(&mut self, e: &v2::CustomerCreated) {
        self.name = e.name.clone();
        self.email = e.email.clone();
        self.v2_applied += 1;
    }
    fn apply(&mut self, e: &v1::CustomerRenamed) {
        self.name = e.name.clone();
    }
}

/// Marten `Bugs/Bug_4178_nested_versioned_events_dispatch_to_wrong_projection_apply_overload`
/// (`classic_naming_dispatches_v1_and_v2_to_separate_apply_overloads`,
/// `classic_naming_raw_event_types_round_trip_correctly`): two versions of an event with
/// the same type name in different modules, stored under names of their own, read back as
/// their own types and dispatch each to its own apply method, exactly once, live and
/// inline. Two types left with the same stored name are not confused either: appending the
/// second is refused, and nothing is stored.
#[tokio::test]
async fn versioned_events_of_one_type_name_dispatch_to_their_own_methods() {
    let (_schema, b) = builder("mps_bug_4178");
    let store = ok(b
        .projection::<VersionedCustomer>(Lifecycle::Inline)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(v1::CustomerCreated {
                name: "Alice".into(),
            }),
            PendingEvent::new(v2::CustomerCreated {
                name: "Alice Updated".into(),
                email: "alice@example.com".into(),
            }),
        ],
    ));
    ok(s.save_changes().await);
    let events = ok(store.lightweight_session().events().fetch_stream(id).await);
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_ref())
            .collect::<Vec<_>>(),
        ["v1.customer_created", "v2.customer_created"]
    );
    assert_eq!(
        events[0]
            .data_as::<v1::CustomerCreated>()
            .map(|e| e.name.as_str()),
        Some("Alice")
    );
    assert_eq!(
        events[1]
            .data_as::<v2::CustomerCreated>()
            .map(|e| e.email.as_str()),
        Some("alice@example.com")
    );
    let expected =
        |c: &VersionedCustomer| (c.v1_applied, c.v2_applied, c.name.clone(), c.email.clone());
    let wanted = (
        1,
        1,
        "Alice Updated".to_owned(),
        "alice@example.com".to_owned(),
    );
    let live: VersionedCustomer = ok(s.events().aggregate_stream(id).await).expect("live");
    assert_eq!(expected(&live), wanted);
    let doc = load::<VersionedCustomer>(&store, &id)
        .await
        .expect("inline");
    assert_eq!(expected(&doc), wanted);

    // The same stored name for two types: the second is refused, nothing stored.
    let clash = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let appended = s.events().append(
        clash,
        [v2::CustomerRenamed {
            name: "Bob".into(),
            email: "bob@example.com".into(),
        }],
    );
    let saved = match appended {
        Ok(()) => s.save_changes().await,
        Err(e) => Err(e),
    };
    assert!(
        matches!(saved, Err(marten::Error::Configuration(_))),
        "{saved:?}"
    );
    let mut s = store.lightweight_session();
    assert!(ok(s.events().fetch_stream_state(clash).await).is_none());
}

// ---------------------------------------------------------------------------------------
// Multi-stream projections

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct UserGroupCreated {
    group_id: Uuid,
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct UserRegistered {
    user_id: Uuid,
    email: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct SingleUserAssignedToGroup {
    group_id: Uuid,
    user_id: Uuid,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MultipleUsersAssignedToGroup {
    group_id: Uuid,
    user_ids: Vec<Uuid>,
}

/// Marten's `UserGroupsAssignment`, fed by the user streams and the group streams.
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct UserGroupsAssignment {
    id: Uuid,
    groups: Vec<Uuid>,
}

#[marten::apply]
impl UserGroupsAssignment {
    fn identity(e: &UserRegistered) -> Uuid {
        e.user_id
    }
    fn identity(e: &SingleUserAssignedToGroup) -> Uuid {
        e.user_id
    }
    fn identities(e: &MultipleUsersAssignedToGroup) -> Vec<Uuid> {
        e.user_ids.clone()
    }
    fn apply(&mut self, _e: &UserRegistered) {}
    fn apply(&mut self, e: &SingleUserAssignedToGroup) {
        self.groups.push(e.group_id);
    }
    fn apply(&mut self, e: &MultipleUsersAssignedToGroup) {
        self.groups.push(e.group_id);
    }
}

/// Marten `Projections/MultiStreamProjections/simple_multi_stream_projection`,
/// `simple_multi_stream_projection_with_one_to_many` and `CustomGroupers/custom_slicer`
/// (`multi_stream_projections_should_work`), inline and async: groups and users each have
/// a stream; events of the group streams assign users to a group one at a time or several
/// at once, and each user's document (a uuid id) collects its group; a registered user
/// never assigned has no group, and a group gets no document.
#[tokio::test]
async fn users_collect_the_groups_assigned_in_other_streams() {
    for lifecycle in [Lifecycle::Inline, Lifecycle::Async] {
        let label = if lifecycle == Lifecycle::Inline {
            "mps_user_groups_inline"
        } else {
            "mps_user_groups_async"
        };
        let (_schema, b) = builder(label);
        let store = ok(b
            .multi_stream_projection::<UserGroupsAssignment>(lifecycle)
            .build()
            .await);
        let (regular, admin) = (Uuid::now_v7(), Uuid::now_v7());
        let mut s = store.lightweight_session();
        for (group, name) in [(regular, "Regular Users"), (admin, "Admin Users")] {
            ok(s.events().append(
                group,
                [UserGroupCreated {
                    group_id: group,
                    name: name.into(),
                }],
            ));
        }
        ok(s.save_changes().await);
        let users: [Uuid; 5] = std::array::from_fn(|_| Uuid::now_v7());
        let [anna, john, maggie, alan, bob] = users;
        for (user, email) in users.iter().zip(["anna", "john", "maggie", "alan", "bob"]) {
            ok(s.events().append(
                *user,
                [UserRegistered {
                    user_id: *user,
                    email: email.into(),
                }],
            ));
        }
        ok(s.save_changes().await);
        ok(s.events().append(
            admin,
            [
                SingleUserAssignedToGroup {
                    group_id: admin,
                    user_id: anna,
                },
                SingleUserAssignedToGroup {
                    group_id: admin,
                    user_id: maggie,
                },
            ],
        ));
        ok(s.events().append(
            regular,
            [MultipleUsersAssignedToGroup {
                group_id: regular,
                user_ids: vec![john, alan],
            }],
        ));
        ok(s.save_changes().await);

        let daemon = if lifecycle == Lifecycle::Async {
            Some(caught_up(&store).await)
        } else {
            None
        };
        for (user, group) in [
            (anna, admin),
            (maggie, admin),
            (john, regular),
            (alan, regular),
        ] {
            let doc = load::<UserGroupsAssignment>(&store, &user)
                .await
                .expect("assigned");
            assert_eq!((doc.id, doc.groups), (user, vec![group]), "{label}");
        }
        assert_eq!(
            load::<UserGroupsAssignment>(&store, &bob)
                .await
                .map(|d| d.groups),
            Some(vec![]),
            "{label}"
        );
        assert!(load::<UserGroupsAssignment>(&store, &admin).await.is_none());
        if let Some(daemon) = daemon {
            ok(daemon.stop().await);
        }
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CustomerCreated {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CustomerDeleted {}

/// Marten's `CustomerInsightsResponse`: new customers per day of the events' timestamps.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct CustomerInsights {
    id: String,
    new_customers: i64,
}

fn day_of(meta: &EventEnvelope) -> String {
    meta.timestamp.date().to_string()
}

#[marten::apply]
impl CustomerInsights {
    fn identity(_e: &CustomerCreated, meta: &EventEnvelope) -> String {
        day_of(meta)
    }
    fn identity(_e: &CustomerDeleted, meta: &EventEnvelope) -> String {
        day_of(meta)
    }
    fn create(_e: &CustomerCreated) -> Self {
        CustomerInsights {
            id: String::new(),
            new_customers: 1,
        }
    }
    fn apply(self, _e: &CustomerCreated) -> Self {
        CustomerInsights {
            new_customers: self.new_customers + 1,
            ..self
        }
    }
    fn apply(self, _e: &CustomerDeleted) -> Self {
        CustomerInsights {
            new_customers: self.new_customers - 1,
            ..self
        }
    }
}

/// Marten `Bugs/Bug_2883_ievent_not_working_as_identity_source_in_multistream_projections`
/// (`CanUseIEventAsSourceForIdentity`): a multi-stream projection whose document id comes
/// from the event's metadata (the day of its timestamp) counts ten customers created in
/// ten streams into one document per day, then five deleted in five more streams. (The
/// expected days are read from the stored events, so a run across midnight still holds.)
#[tokio::test]
async fn a_multi_stream_document_keyed_by_the_events_timestamp() {
    let (_schema, b) = builder("mps_bug_2883");
    let store = ok(b
        .multi_stream_projection::<CustomerInsights>(Lifecycle::Inline)
        .build()
        .await);
    let mut streams = Vec::new();
    let mut s = store.lightweight_session();
    for _ in 0..10 {
        let id = Uuid::now_v7();
        ok(s.events().start_stream(id, [CustomerCreated {}]));
        streams.push(id);
    }
    ok(s.save_changes().await);
    for _ in 0..5 {
        let id = Uuid::now_v7();
        ok(s.events().start_stream(id, [CustomerDeleted {}]));
        streams.push(id);
    }
    ok(s.save_changes().await);

    let mut expected: std::collections::BTreeMap<String, i64> = Default::default();
    for id in &streams {
        for e in ok(s.events().fetch_stream(*id).await) {
            *expected.entry(day_of(&e)).or_default() +=
                if e.is::<CustomerCreated>() { 1 } else { -1 };
        }
    }
    let docs = ok(store
        .query_session()
        .query::<CustomerInsights>()
        .to_list()
        .await);
    let found: std::collections::BTreeMap<String, i64> =
        docs.into_iter().map(|d| (d.id, d.new_customers)).collect();
    assert_eq!(found, expected);
    assert_eq!(found.values().sum::<i64>(), 5);
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DepositRecorded {
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct WithdrawalRecorded {
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct FeeCharged {
    cents: i64,
    reason: String,
}

/// Marten's `MonthlyAccountActivity`: one document per account and calendar month of the
/// events' timestamps, `"{account}:{yyyy-MM}"`.
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct MonthlyAccountActivity {
    id: String,
    account: Uuid,
    year: i32,
    month: u8,
    transactions: i64,
    deposits: i64,
    withdrawals: i64,
    fees: i64,
}

fn month_key(meta: &EventEnvelope) -> String {
    let t = meta.timestamp;
    format!(
        "{}:{:04}-{:02}",
        uuid_of(&meta.stream_id),
        t.year(),
        u8::from(t.month())
    )
}

impl MonthlyAccountActivity {
    fn started(meta: &EventEnvelope) -> Self {
        MonthlyAccountActivity {
            account: uuid_of(&meta.stream_id),
            year: meta.timestamp.year(),
            month: u8::from(meta.timestamp.month()),
            transactions: 1,
            ..Default::default()
        }
    }
}

#[marten::apply]
impl MonthlyAccountActivity {
    fn identity(_e: &DepositRecorded, meta: &EventEnvelope) -> String {
        month_key(meta)
    }
    fn identity(_e: &WithdrawalRecorded, meta: &EventEnvelope) -> String {
        month_key(meta)
    }
    fn identity(_e: &FeeCharged, meta: &EventEnvelope) -> String {
        month_key(meta)
    }
    fn create(e: &DepositRecorded, meta: &EventEnvelope) -> Self {
        MonthlyAccountActivity {
            deposits: e.cents,
            ..Self::started(meta)
        }
    }
    fn create(e: &WithdrawalRecorded, meta: &EventEnvelope) -> Self {
        MonthlyAccountActivity {
            withdrawals: e.cents,
            ..Self::started(meta)
        }
    }
    fn create(e: &FeeCharged, meta: &EventEnvelope) -> Self {
        MonthlyAccountActivity {
            fees: e.cents,
            ..Self::started(meta)
        }
    }
    fn apply(&mut self, e: &DepositRecorded) {
        self.transactions += 1;
        self.deposits += e.cents;
    }
    fn apply(&mut self, e: &WithdrawalRecorded) {
        self.transactions += 1;
        self.withdrawals += e.cents;
    }
    fn apply(&mut self, e: &FeeCharged) {
        self.transactions += 1;
        self.fees += e.cents;
    }
}

/// 10:00 UTC on the given day.
fn at(year: i32, month: time::Month, day: u8) -> OffsetDateTime {
    time::Date::from_calendar_date(year, month, day)
        .and_then(|d| d.with_hms(10, 0, 0))
        .expect("a valid date")
        .assume_utc()
}

/// Sets the stored timestamps of `stream`'s events `from..=to` to `at`, as Marten's
/// `AtTimestamp` would have written them (marten-rs stamps events with the server's time).
async fn backdate(schema: &TestSchema, stream: Uuid, from: i64, to: i64, at: OffsetDateTime) {
    let n = schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_events SET timestamp = $2 WHERE stream_id = $1 AND version BETWEEN $3 AND $4",
            &[&stream, &at, &from, &to],
        )
        .await
        .expect("backdate");
    assert_eq!(n, (to - from + 1) as u64, "events backdated");
}

/// Marten `Projections/MultiStreamProjections/monthly_account_activity_projection`
/// (`events_across_months_produce_separate_documents`,
/// `multiple_accounts_same_month_are_separate`), run by the daemon with the events'
/// timestamps set by hand (marten-rs has no `AtTimestamp`): one document per account and
/// month, keyed from the stream id and the event time, each counting only its month's
/// transactions; the opening event, which it does not handle, is in none.
#[tokio::test]
async fn monthly_documents_are_keyed_by_account_and_event_month() {
    let (schema, b) = builder("mps_monthly");
    let store = ok(b
        .multi_stream_projection::<MonthlyAccountActivity>(Lifecycle::Async)
        .build()
        .await);
    let (checking, savings) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        checking,
        [
            PendingEvent::new(AccountOpened {
                name: "Checking".into(),
            }),
            PendingEvent::new(DepositRecorded { cents: 100_000 }),
            PendingEvent::new(WithdrawalRecorded { cents: 20_000 }),
            PendingEvent::new(FeeCharged {
                cents: 500,
                reason: "Monthly fee".into(),
            }),
        ],
    ));
    ok(s.save_changes().await);
    ok(s.events().append(
        checking,
        [
            DepositRecorded { cents: 200_000 },
            DepositRecorded { cents: 50_000 },
        ],
    ));
    ok(s.events().start_stream(
        savings,
        [
            PendingEvent::new(AccountOpened {
                name: "Savings".into(),
            }),
            PendingEvent::new(DepositRecorded { cents: 7_000 }),
        ],
    ));
    ok(s.save_changes().await);
    let jan = at(2026, time::Month::January, 15);
    let feb = at(2026, time::Month::February, 3);
    backdate(&schema, checking, 1, 4, jan).await;
    backdate(&schema, checking, 5, 6, feb).await;
    backdate(&schema, savings, 1, 2, jan).await;

    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    let activity = |account: Uuid, month: &str| {
        let store = store.clone();
        let id = format!("{account}:{month}");
        async move { load::<MonthlyAccountActivity>(&store, &id).await }
    };
    let january = activity(checking, "2026-01").await.expect("january");
    assert_eq!(
        (january.account, january.year, january.month),
        (checking, 2026, 1)
    );
    assert_eq!(
        (
            january.transactions,
            january.deposits,
            january.withdrawals,
            january.fees
        ),
        (3, 100_000, 20_000, 500)
    );
    let february = activity(checking, "2026-02").await.expect("february");
    assert_eq!(
        (february.month, february.transactions, february.deposits),
        (2, 2, 250_000)
    );
    assert_eq!((february.withdrawals, february.fees), (0, 0));
    let other = activity(savings, "2026-01")
        .await
        .expect("the other account");
    assert_eq!((other.transactions, other.deposits), (1, 7_000));
    let all = ok(store
        .query_session()
        .query::<MonthlyAccountActivity>()
        .count()
        .await);
    assert_eq!(all, 3);
}

// ---------------------------------------------------------------------------------------
// Event projections

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DummyEventForOrdering {
    order: i64,
}

/// Marten's `OrderingTracker`: per event, its stream, its global sequence and the order in
/// which the projection saw it.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct OrderingTracker {
    id: Uuid,
    stream: Uuid,
    sequence: i64,
    appended: i64,
    seen: i64,
}

struct OrderingProjection {
    counter: AtomicI64,
}

impl EventProjection for OrderingProjection {
    fn name(&self) -> &'static str {
        "TestOrderingEventProjection"
    }

    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<DummyEventForOrdering>() {
            ops.store(OrderingTracker {
                id: event.id,
                stream: uuid_of(&event.stream_id),
                sequence: event.sequence,
                appended: e.order,
                seen: self.counter.fetch_add(1, Ordering::SeqCst) + 1,
            });
        }
        Ok(())
    }
}

/// Marten `Projections/EventProjections/EventProjectionOrderingTests.ShouldRespectGlobalOrdering`:
/// an event projection run by the daemon, and rebuilt, sees the events of two streams
/// appended alternately in their global order: sorted by sequence, the documents are in
/// the order the projection saw them, which is the order they were appended in.
#[tokio::test]
async fn an_async_event_projection_sees_events_in_their_global_order() {
    let (_schema, b) = builder("mps_event_ordering");
    let store = ok(b
        .event_projection(
            OrderingProjection {
                counter: AtomicI64::new(0),
            },
            Lifecycle::Async,
        )
        .build()
        .await);
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    for (stream, order) in [
        (first, 1),
        (second, 2),
        (first, 3),
        (second, 4),
        (second, 5),
    ] {
        let mut s = store.lightweight_session();
        ok(s.events().append(stream, [DummyEventForOrdering { order }]));
        ok(s.save_changes().await);
    }
    let daemon = caught_up(&store).await;
    ok(marten::daemon::rebuild(&store, "TestOrderingEventProjection").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);

    let mut docs = ok(store
        .query_session()
        .query::<OrderingTracker>()
        .to_list()
        .await);
    assert_eq!(docs.len(), 5);
    docs.sort_by_key(|d| d.sequence);
    assert_eq!(
        docs.iter().map(|d| d.appended).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(
        docs.windows(2).all(|w| w[0].seen < w[1].seen),
        "seen in sequence order: {docs:?}"
    );
    assert_eq!(
        docs.iter().map(|d| d.stream).collect::<Vec<_>>(),
        [first, second, first, second, second]
    );
    assert!(docs[0].seen > 5, "the rebuild saw them again");
}

/// Marten's `MonsterDefeated`: one document per `MonsterSlayed` event, keyed by the
/// event's id.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct MonsterDefeated {
    id: Uuid,
    monster: String,
}

/// The same, per tenant.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct TenantMonsterDefeated {
    id: Uuid,
    monster: String,
}

/// Marten's `MonsterDefeatedTransform`; `tenanted` writes the conjoined type. It reads
/// only the event's id, so it says it takes no other metadata.
struct MonsterDefeatedTransform {
    tenanted: bool,
}

impl EventProjection for MonsterDefeatedTransform {
    fn name(&self) -> &'static str {
        "MonsterDefeatedTransform"
    }

    fn uses_metadata(&self) -> bool {
        false
    }

    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<MonsterSlayed>() {
            if self.tenanted {
                ops.store(TenantMonsterDefeated {
                    id: event.id,
                    monster: e.name.clone(),
                });
            } else {
                ops.store(MonsterDefeated {
                    id: event.id,
                    monster: e.name.clone(),
                });
            }
        }
        Ok(())
    }
}

fn the_quest() -> Vec<PendingEvent> {
    vec![
        quest_started("Find the Orb"),
        joined(2, "Faldor's Farm", &["Garion", "Polgara", "Belgarath"]),
        slayed("Troll"),
        slayed("Dragon"),
        joined(5, "Sendaria", &["Silk", "Barak"]),
    ]
}

/// Marten `Projections/inline_transformation_of_events.sync_projection_of_events` (single
/// and conjoined tenancy) and `.sync_projection_of_events_with_direct_configuration`: an
/// inline event projection turns each `MonsterSlayed` event into a document keyed by the
/// event's id (the id stored with the event), in the save that appends it; with conjoined
/// events, in the appending tenant's documents only.
#[tokio::test]
async fn an_inline_event_projection_keys_documents_by_the_event_id() {
    for tenanted in [false, true] {
        let label = if tenanted {
            "mps_monster_conjoined"
        } else {
            "mps_monster_single"
        };
        let (_schema, b) = builder(label);
        let b = if tenanted {
            b.events_tenancy(Tenancy::Conjoined)
        } else {
            b
        };
        let store = ok(b
            .event::<QuestStarted>()
            .event::<MembersJoined>()
            .event::<MonsterSlayed>()
            .event_projection(MonsterDefeatedTransform { tenanted }, Lifecycle::Inline)
            .build()
            .await);
        let id = Uuid::now_v7();
        let mut s = if tenanted {
            ok(store.lightweight_session_for("green"))
        } else {
            store.lightweight_session()
        };
        ok(s.events().start_stream(id, the_quest()));
        ok(s.save_changes().await);
        let slain: Vec<(Uuid, String)> = ok(s.events().fetch_stream(id).await)
            .iter()
            .filter_map(|e| e.data_as::<MonsterSlayed>().map(|m| (e.id, m.name.clone())))
            .collect();
        assert_eq!(slain.len(), 2, "{label}: precondition");
        for (event, monster) in &slain {
            let found = if tenanted {
                load_for::<TenantMonsterDefeated>(&store, "green", event)
                    .await
                    .map(|d| d.monster)
            } else {
                load::<MonsterDefeated>(&store, event)
                    .await
                    .map(|d| d.monster)
            };
            assert_eq!(found.as_ref(), Some(monster), "{label}");
            if tenanted {
                assert!(
                    load_for::<TenantMonsterDefeated>(&store, "blue", event)
                        .await
                        .is_none(),
                    "{label}: another tenant's"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The same events, live, inline and async (Marten's `Invoice` of `testing_projections`)

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct InvoiceCreated {
    description: String,
    cents: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct InvoiceApproved {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct InvoicePaid {}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum InvoiceStatus {
    Created,
    Approved,
    Paid,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Invoice {
    id: Uuid,
    version: i64,
    description: String,
    cents: i64,
    status: InvoiceStatus,
}

#[marten::apply]
impl Invoice {
    fn create(e: &InvoiceCreated) -> Self {
        Invoice {
            id: Uuid::nil(),
            version: 0,
            description: e.description.clone(),
            cents: e.cents,
            status: InvoiceStatus::Created,
        }
    }
    fn apply(&mut self, _e: &InvoiceApproved) {
        self.status = InvoiceStatus::Approved;
    }
    fn apply(&mut self, _e: &InvoicePaid) {
        self.status = InvoiceStatus::Paid;
    }
}

/// Starts an invoice and, in a second save, approves and pays it (appended separately).
async fn an_invoice(store: &DocumentStore) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [InvoiceCreated {
            description: "Blue Shoes".into(),
            cents: 11_224,
        }],
    ));
    ok(s.save_changes().await);
    ok(s.events().append(id, [InvoiceApproved {}]));
    ok(s.events().append(id, [InvoicePaid {}]));
    ok(s.save_changes().await);
    id
}

/// Marten `Projections/testing_projections` (`test_live_aggregation`,
/// `test_inline_aggregation`, `test_async_aggregation` and
/// `test_async_aggregation_with_wait_for`): the same events give the same invoice folded
/// live, projected inline and projected by the daemon, both by a rebuild before any
/// daemon ran and by a running daemon waited on.
#[tokio::test]
async fn live_inline_and_async_give_the_same_invoice() {
    let (_s1, b) = builder("mps_invoice_live");
    let live_store = ok(b.build().await);
    let id = an_invoice(&live_store).await;
    let live: Invoice = ok(live_store
        .lightweight_session()
        .events()
        .aggregate_stream(id)
        .await)
    .expect("live");
    assert_eq!(
        (live.description.as_str(), live.status, live.version),
        ("Blue Shoes", InvoiceStatus::Paid, 3)
    );
    let same = |i: &Invoice| (i.description.clone(), i.cents, i.status, i.version);

    let (_s2, b) = builder("mps_invoice_inline");
    let inline_store = ok(b.projection::<Invoice>(Lifecycle::Inline).build().await);
    let id = an_invoice(&inline_store).await;
    let inline = load::<Invoice>(&inline_store, &id).await.expect("inline");
    assert_eq!(same(&inline), same(&live));

    let (_s3, b) = builder("mps_invoice_async");
    let async_store = ok(b.projection::<Invoice>(Lifecycle::Async).build().await);
    let id = an_invoice(&async_store).await;
    assert!(
        load::<Invoice>(&async_store, &id).await.is_none(),
        "no daemon yet"
    );
    ok(marten::daemon::rebuild(&async_store, "Invoice").await);
    let daemon = caught_up(&async_store).await;
    let rebuilt = load::<Invoice>(&async_store, &id).await.expect("rebuilt");
    assert_eq!(same(&rebuilt), same(&live));
    let later = an_invoice(&async_store).await;
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    let waited = load::<Invoice>(&async_store, &later)
        .await
        .expect("waited for");
    assert_eq!(same(&waited), same(&live));
}

// ---------------------------------------------------------------------------------------
// Switching lifecycles, documents saved with events, archived streams

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ProductRegistered {
    name: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Product {
    id: Uuid,
    version: i64,
    name: String,
}

#[marten::apply]
impl Product {
    fn create(e: &ProductRegistered) -> Self {
        Product {
            id: Uuid::nil(),
            version: 0,
            name: e.name.clone(),
        }
    }
}

/// Marten `Bugs/Bug_4268_projection_async_to_inline_migration`
/// (`switching_projection_from_async_to_inline_does_not_break_migration`): on conjoined
/// events, a store that projected an aggregate async, then a store on the same schema that
/// projects it inline (new code, same database): the second builds over the first's
/// tables and a tenant's new stream is projected inline at once, in that tenant's
/// documents.
#[tokio::test]
async fn an_aggregate_switched_from_async_to_inline_keeps_working() {
    let (schema, b) = builder("mps_bug_4268");
    let async_store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<Product>(Lifecycle::Async)
        .build()
        .await);
    let socks = Uuid::now_v7();
    let mut s = ok(async_store.lightweight_session_for("tenant-a"));
    ok(s.events().start_stream(
        socks,
        [ProductRegistered {
            name: "Socks".into(),
        }],
    ));
    ok(s.save_changes().await);
    assert!(load_for::<Product>(&async_store, "tenant-a", &socks)
        .await
        .is_none());

    let inline_store = ok(builder_on(&schema)
        .events_tenancy(Tenancy::Conjoined)
        .projection::<Product>(Lifecycle::Inline)
        .build()
        .await);
    let hats = Uuid::now_v7();
    let mut s = ok(inline_store.lightweight_session_for("tenant-a"));
    ok(s.events().start_stream(
        hats,
        [ProductRegistered {
            name: "Hats".into(),
        }],
    ));
    ok(s.save_changes().await);
    let doc = load_for::<Product>(&inline_store, "tenant-a", &hats)
        .await
        .expect("projected inline");
    assert_eq!((doc.id, doc.name.as_str(), doc.version), (hats, "Hats", 1));
    assert!(load_for::<Product>(&inline_store, "tenant-b", &hats)
        .await
        .is_none());
    let socks_live: Product = ok(s.events().aggregate_stream(socks).await).expect("live");
    assert_eq!(socks_live.name, "Socks");
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Start {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Increment {}

/// Marten's `StartAndStopAggregate2`, grouped by the events' stream.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct StartAndStop {
    id: Uuid,
    count: i64,
}

#[marten::apply]
impl StartAndStop {
    fn identity(_e: &Start, meta: &EventEnvelope) -> Uuid {
        uuid_of(&meta.stream_id)
    }
    fn identity(_e: &Increment, meta: &EventEnvelope) -> Uuid {
        uuid_of(&meta.stream_id)
    }
    fn create(_e: &Start) -> Self {
        StartAndStop {
            id: Uuid::nil(),
            count: 0,
        }
    }
    fn apply(&mut self, _e: &Increment) {
        self.count += 1;
    }
}

/// Marten's `Document1`, stored in the same save as the events.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Document1 {
    id: Uuid,
}

/// Marten `Bugs/Bug_3661_await_custom_projection_slicing`
/// (`fetching_multiple_items_from_slicers_in_async_custom_projection`, without the grouper's
/// session reads marten-rs's identities cannot make) and `Projections/stream_aggregation`
/// (`create_with_static_create_method`, a document stored next to the stream): one save
/// stores plain documents and starts two streams; both land, and the daemon projects each
/// stream's events (grouped by the stream id from the metadata) into its own document.
#[tokio::test]
async fn events_saved_with_documents_are_projected_by_the_daemon() {
    let (_schema, b) = builder("mps_bug_3661");
    let store = ok(b
        .multi_stream_projection::<StartAndStop>(Lifecycle::Async)
        .build()
        .await);
    let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    for id in [one, two] {
        ok(s.store(Document1 { id }));
        ok(s.events().start_stream(
            id,
            [
                PendingEvent::new(Start {}),
                PendingEvent::new(Increment {}),
                PendingEvent::new(Increment {}),
            ],
        ));
    }
    ok(s.save_changes().await);
    assert!(load::<Document1>(&store, &one).await.is_some());
    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    for id in [one, two] {
        assert_eq!(
            load::<StartAndStop>(&store, &id).await,
            Some(StartAndStop { id, count: 2 })
        );
        assert!(load::<Document1>(&store, &id).await.is_some());
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Tallied {
    category: String,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct CategoryTotal {
    id: String,
    total: i64,
    events: i64,
}

#[marten::apply]
impl CategoryTotal {
    fn identity(e: &Tallied) -> String {
        e.category.clone()
    }
    fn apply(&mut self, e: &Tallied) {
        self.total += e.n;
        self.events += 1;
    }
}

/// Marten `Bugs/Bug_4745_async_daemon_fetch_filters_archived_streams` (the daemon's event
/// fetch leaves archived streams out unless asked to include them; here through what the
/// projection builds): a multi-stream projection run by the daemon counts every stream;
/// after two streams are archived, a rebuild leaves their events out (a category fed only
/// by archived streams has no document), and the events stay readable with
/// `including_archived`.
#[tokio::test]
async fn a_rebuild_leaves_archived_streams_out_of_a_multi_stream_projection() {
    let (_schema, b) = builder("mps_bug_4745");
    let store = ok(b
        .multi_stream_projection::<CategoryTotal>(Lifecycle::Async)
        .build()
        .await);
    let streams: [Uuid; 3] = std::array::from_fn(|_| Uuid::now_v7());
    let mut s = store.lightweight_session();
    for (stream, category, n) in [
        (streams[0], "x", 1),
        (streams[1], "x", 10),
        (streams[2], "y", 100),
    ] {
        ok(s.events().start_stream(
            stream,
            [Tallied {
                category: category.into(),
                n,
            }],
        ));
    }
    ok(s.save_changes().await);
    let daemon = caught_up(&store).await;
    let total = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move {
            load::<CategoryTotal>(&store, &id)
                .await
                .map(|d| (d.total, d.events))
        }
    };
    assert_eq!(total("x").await, Some((11, 2)));
    assert_eq!(total("y").await, Some((100, 1)));

    ok(s.events().archive_stream(streams[1]));
    ok(s.events().archive_stream(streams[2]));
    ok(s.save_changes().await);
    ok(marten::daemon::rebuild(&store, "CategoryTotal").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(total("x").await, Some((1, 1)));
    assert_eq!(total("y").await, None);
    let archived = ok(s
        .events()
        .fetch_stream_with(streams[2], StreamRange::all().including_archived())
        .await);
    assert_eq!(archived.len(), 1);
    assert!(archived[0].archived);
}
