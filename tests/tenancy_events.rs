//! Conjoined tenancy of the event store: two tenants with the same stream ids never see,
//! append to, archive or delete each other's streams through any API; racing tenants on
//! the same stream ids do not conflict; tag boundaries are per tenant; a session without
//! a tenant is refused before anything is written. Single-tenant events record the
//! session's tenant. Each test has a schema of its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::events::{finished, started, task, ProjectStarted, TaskFinished, TaskRecorded};
use common::{builder, builder_on, ok};
use marten::prelude::*;
use marten::{PatchOptions, RejectionKind, SchemaDifference, Tenancy};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

const RED: &str = "red";
const BLUE: &str = "blue";

/// A store with conjoined events on a schema of its own.
async fn conjoined(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .exclusive_lock_timeout(Duration::from_millis(500))
        .event::<ProjectStarted>()
        .event::<TaskRecorded>()
        .event::<TaskFinished>()
        .event::<Seat>()
        .build()
        .await);
    assert_eq!(store.events_tenancy(), Tenancy::Conjoined);
    (schema, store)
}

/// A session of `tenant`.
fn session(store: &DocumentStore, tenant: &str) -> LightweightSession {
    ok(store.lightweight_session_for(tenant))
}

/// Starts `stream` for `tenant` with a `started(tenant)` event and `tasks` tasks.
async fn start(store: &DocumentStore, tenant: &str, stream: Uuid, tasks: usize) {
    let mut s = session(store, tenant);
    let mut events: Vec<PendingEvent> = vec![started(tenant).into()];
    events.extend((0..tasks).map(|i| PendingEvent::from(task(&format!("{tenant}-{i}")))));
    ok(s.events().start_stream(stream, events));
    ok(s.save_changes().await);
}

/// The names of the `ProjectStarted` events and the number of events `tenant` reads.
async fn read(store: &DocumentStore, tenant: &str, stream: Uuid) -> (Vec<String>, usize) {
    let mut s = session(store, tenant);
    let events = ok(s.events().fetch_stream(stream).await);
    for e in &events {
        assert_eq!(
            e.tenant.as_ref().map(TenantId::as_str),
            Some(tenant),
            "{e:?}"
        );
    }
    let names = events
        .iter()
        .filter_map(|e| e.data_as::<ProjectStarted>().map(|p| p.name.clone()))
        .collect();
    (names, events.len())
}

/// The version of `stream` for `tenant` (`None`: no such stream).
async fn version(store: &DocumentStore, tenant: &str, stream: Uuid) -> Option<i64> {
    let mut s = session(store, tenant);
    ok(s.events().fetch_stream_state(stream).await).map(|st| st.version)
}

fn rejection(err: &marten::Error) -> &RejectionKind {
    match err {
        marten::Error::Rejected(r) if r.len() == 1 => &r[0].kind,
        other => panic!("expected one rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn start_stream_is_per_tenant() {
    let (_schema, store) = conjoined("tev_start").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 2).await;
    start(&store, BLUE, stream, 0).await;
    assert_eq!(read(&store, RED, stream).await, (vec![RED.to_owned()], 3));
    assert_eq!(read(&store, BLUE, stream).await, (vec![BLUE.to_owned()], 1));
    // Starting it again is refused within the tenant only.
    let mut s = session(&store, RED);
    ok(s.events()
        .start_stream_of("project", stream, [started("again")]));
    let err = s
        .save_changes()
        .await
        .expect_err("the stream exists for red");
    assert_eq!(rejection(&err), &RejectionKind::StreamExists);
    let green = Uuid::now_v7();
    start(&store, "green", green, 0).await;
    assert_eq!(version(&store, RED, green).await, None);
}

#[tokio::test]
async fn append_is_per_tenant() {
    let (_schema, store) = conjoined("tev_append").await;
    let stream = Uuid::now_v7();
    for (tenant, times) in [(RED, 2), (BLUE, 1)] {
        for i in 0..times {
            let mut s = session(&store, tenant);
            ok(s.events().append(stream, [task(&format!("{tenant} {i}"))]));
            ok(s.save_changes().await);
        }
    }
    assert_eq!(version(&store, RED, stream).await, Some(2));
    assert_eq!(version(&store, BLUE, stream).await, Some(1));
    assert_eq!(read(&store, BLUE, stream).await.1, 1);
    // Several events in one append, and one session appending for its tenant only.
    let mut s = session(&store, BLUE);
    ok(s.events().append(stream, [task("b1"), task("b2")]));
    ok(s.save_changes().await);
    assert_eq!(version(&store, BLUE, stream).await, Some(3));
    assert_eq!(version(&store, RED, stream).await, Some(2));
}

#[tokio::test]
async fn append_expected_is_per_tenant() {
    let (_schema, store) = conjoined("tev_expected").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 1).await;
    // Blue has no such stream: 0 is what it expects.
    let mut s = session(&store, BLUE);
    ok(s.events().append_expected(stream, 0, [started(BLUE)]));
    ok(s.save_changes().await);
    let mut s = session(&store, BLUE);
    ok(s.events().append_expected(stream, 2, [task("blue")]));
    let err = s.save_changes().await.expect_err("blue is at 1");
    assert_eq!(
        rejection(&err),
        &RejectionKind::UnexpectedStreamVersion {
            expected: 2,
            actual: Some(1)
        }
    );
    let mut s = session(&store, RED);
    ok(s.events()
        .append_expected(stream, 2, [task("red"), task("red")]));
    ok(s.save_changes().await);
    assert_eq!(version(&store, RED, stream).await, Some(4));
    assert_eq!(version(&store, BLUE, stream).await, Some(1));
}

#[tokio::test]
async fn append_optimistic_and_exclusive_are_per_tenant() {
    let (_schema, store) = conjoined("tev_optimistic").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 1).await;
    let mut s = session(&store, BLUE);
    let err = s
        .events()
        .append_optimistic(stream, [task("blue")])
        .await
        .expect_err("blue has no such stream");
    assert!(matches!(err, marten::Error::StreamNotFound { .. }), "{err}");
    let err = s
        .events()
        .append_exclusive(stream, [task("blue")])
        .await
        .expect_err("blue has no such stream");
    assert!(matches!(err, marten::Error::StreamNotFound { .. }), "{err}");
    drop(s);
    start(&store, BLUE, stream, 0).await;
    // Red holds its stream's lock; blue's stream of the same id is another row.
    let mut red = session(&store, RED);
    ok(red.events().append_exclusive(stream, [task("red")]).await);
    let mut blue = session(&store, BLUE);
    ok(blue.events().append_exclusive(stream, [task("blue")]).await);
    let mut blue2 = session(&store, BLUE);
    ok(blue2
        .events()
        .append_optimistic(stream, [task("blue")])
        .await);
    ok(blue.save_changes().await);
    let err = blue2.save_changes().await.expect_err("blue's stream moved");
    assert!(
        matches!(
            rejection(&err),
            RejectionKind::UnexpectedStreamVersion { .. }
        ),
        "{err}"
    );
    ok(red.save_changes().await);
    assert_eq!(version(&store, RED, stream).await, Some(3));
    assert_eq!(version(&store, BLUE, stream).await, Some(2));
}

#[tokio::test]
async fn fetch_stream_and_its_state_are_per_tenant() {
    let (_schema, store) = conjoined("tev_fetch").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 3).await;
    assert_eq!(version(&store, BLUE, stream).await, None);
    assert_eq!(read(&store, BLUE, stream).await, (vec![], 0));
    let mut s = session(&store, RED);
    let range = StreamRange::all().up_to_version(2);
    let events = ok(s.events().fetch_stream_with(stream, range).await);
    assert_eq!(events.len(), 2);
    let state = ok(s.events().fetch_stream_state(stream).await).expect("red's stream");
    assert_eq!(state.version, 4);
    // The global order of a tenant's session holds that tenant's events only.
    start(&store, BLUE, stream, 0).await;
    let mut s = session(&store, BLUE);
    // Gap-safe: another test's open transaction may hold the page back for a while.
    let mut page = ok(s.events().read_all(Position::START, 100).await);
    for _ in 0..200 {
        if !page.events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = ok(s.events().read_all(Position::START, 100).await);
    }
    assert_eq!(page.events.len(), 1, "{:?}", page.events);
    assert_eq!(
        page.events[0].tenant.as_ref().map(TenantId::as_str),
        Some(BLUE)
    );
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, Aggregate)]
struct Project {
    id: Uuid,
    version: i64,
    name: String,
    tasks: usize,
}

#[marten::apply]
impl Project {
    fn create(e: &ProjectStarted) -> Self {
        Project {
            name: e.name.clone(),
            ..Project::default()
        }
    }

    fn apply_task(&mut self, _e: &TaskRecorded) {
        self.tasks += 1;
    }

    fn apply_finished(&mut self, _e: &TaskFinished) {
        self.tasks -= 1;
    }
}

#[tokio::test]
async fn aggregation_and_fetch_for_writing_are_per_tenant() {
    let (_schema, store) = conjoined("tev_aggregate").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 3).await;
    start(&store, BLUE, stream, 1).await;
    let mut s = session(&store, RED);
    let red = ok(s.events().aggregate_stream::<Project>(stream).await).expect("red");
    assert_eq!((red.name.as_str(), red.tasks, red.version), (RED, 3, 4));
    let mut s = session(&store, BLUE);
    let blue = ok(s.events().fetch_latest::<Project>(stream).await).expect("blue");
    assert_eq!((blue.name.as_str(), blue.tasks, blue.version), (BLUE, 1, 2));
    let mut s = session(&store, "green");
    assert_eq!(
        ok(s.events().aggregate_stream::<Project>(stream).await),
        None
    );
    // fetch_for_writing reads and asserts the tenant's version.
    let mut s = session(&store, BLUE);
    let mut w = ok(s.events().fetch_for_writing::<Project>(stream).await);
    assert_eq!(w.version(), 2);
    ok(w.append([finished("blue-0")]));
    ok(s.save_changes().await);
    let mut s = session(&store, BLUE);
    let blue = ok(s.events().aggregate_stream::<Project>(stream).await).expect("blue");
    assert_eq!((blue.tasks, blue.version), (0, 3));
    assert_eq!(version(&store, RED, stream).await, Some(4));
}

#[tokio::test]
async fn expected_and_exclusive_fetches_for_writing_are_per_tenant() {
    let (_schema, store) = conjoined("tev_fetch_exclusive").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 3).await;
    start(&store, BLUE, stream, 2).await;
    // An expected version is the tenant's; an exclusive fetch locks the tenant's stream
    // only (the store's lock timeout is 500 ms: blue would wait it out if red's lock
    // covered it).
    let mut s = session(&store, RED);
    let err = s
        .events()
        .fetch_for_writing_expected::<Project>(stream, 3)
        .await
        .err()
        .expect("red is at 4");
    assert!(
        matches!(
            rejection(&err),
            RejectionKind::UnexpectedStreamVersion {
                expected: 3,
                actual: Some(4)
            }
        ),
        "{err:?}"
    );
    let mut red = session(&store, RED);
    let mut w = ok(red
        .events()
        .fetch_for_exclusive_writing::<Project>(stream)
        .await);
    assert_eq!(w.version(), 4);
    ok(w.append([task("red-4")]));
    let mut blue = session(&store, BLUE);
    let started = std::time::Instant::now();
    let mut w = ok(blue
        .events()
        .fetch_for_exclusive_writing::<Project>(stream)
        .await);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "not red's lock"
    );
    assert_eq!(w.version(), 3);
    ok(w.append([task("blue-3")]));
    ok(blue.save_changes().await);
    ok(red.save_changes().await);
    assert_eq!(version(&store, RED, stream).await, Some(5));
    assert_eq!(version(&store, BLUE, stream).await, Some(4));
}

/// The events of `stream` for `tenant`, with the given ids, as one save.
async fn append_ids(
    store: &DocumentStore,
    tenant: &str,
    stream: Uuid,
    ids: &[Uuid],
) -> marten::Result<()> {
    let mut s = session(store, tenant);
    let events = ids
        .iter()
        .map(|id| PendingEvent::from(task(&format!("{tenant} {id}"))).with_id(*id));
    ok(s.events().append(stream, events));
    s.save_changes().await
}

/// The ids of `tenant`'s events in `stream`, in order.
async fn event_ids(store: &DocumentStore, tenant: &str, stream: Uuid) -> Vec<Uuid> {
    let mut s = session(store, tenant);
    ok(s.events().fetch_stream(stream).await)
        .iter()
        .map(|e| e.id)
        .collect()
}

#[tokio::test]
async fn event_ids_are_unique_per_tenant() {
    let (_schema, store) = conjoined("tev_event_ids").await;
    let stream = Uuid::now_v7();
    let [x, y, z] = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    // The same event ids in two tenants, in a lone append and in a save of several.
    ok(append_ids(&store, RED, stream, &[x]).await);
    ok(append_ids(&store, BLUE, stream, &[x, y]).await);
    ok(append_ids(&store, BLUE, Uuid::now_v7(), &[z]).await);
    ok(append_ids(&store, RED, stream, &[z]).await);
    assert_eq!(event_ids(&store, RED, stream).await, [x, z]);
    assert_eq!(event_ids(&store, BLUE, stream).await, [x, y]);
    // A tenant's own duplicate is refused and named, without the other tenant's ids:
    // `y` is blue's only, so red learns nothing of it.
    for ids in [vec![y, x], vec![z]] {
        match append_ids(&store, RED, stream, &ids).await {
            Err(marten::Error::DuplicateEvent { ids: found }) => {
                assert_eq!(
                    found,
                    [x, z]
                        .into_iter()
                        .filter(|i| ids.contains(i))
                        .collect::<Vec<_>>()
                )
            }
            other => panic!("expected DuplicateEvent, got {other:?}"),
        }
    }
    assert_eq!(event_ids(&store, RED, stream).await, [x, z]);
    assert_eq!(event_ids(&store, BLUE, stream).await, [x, y]);
    ok(append_ids(&store, RED, stream, &[y]).await);
    assert_eq!(event_ids(&store, RED, stream).await, [x, z, y]);
}

#[tokio::test]
async fn a_conjoined_store_of_global_event_ids_is_updated_to_the_tenants_ids() {
    let (schema, store) = conjoined("tev_event_ids_update").await;
    let stream = Uuid::now_v7();
    let x = Uuid::now_v7();
    ok(append_ids(&store, RED, stream, &[x]).await);
    store.close();
    // The event id index of before: one id in the whole table.
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "DROP INDEX mt_events_id; CREATE UNIQUE INDEX mt_events_id ON mt_events (id)",
    )
    .await
    .expect("the index of before");
    let b = || {
        builder_on(&schema)
            .events_tenancy(Tenancy::Conjoined)
            .event::<TaskRecorded>()
    };
    let review = ok(b().apply_schema_at_build(false).build().await);
    let patch = ok(review.schema_patch(PatchOptions::new()).await);
    let changed: Vec<String> = patch
        .differences()
        .filter(|d| matches!(d, SchemaDifference::IndexChanged { .. }))
        .map(SchemaDifference::object)
        .collect();
    assert_eq!(changed, [format!("{}.mt_events_id", schema.name())]);
    review.close();
    let store = ok(b().build().await);
    ok(store.assert_schema().await);
    ok(append_ids(&store, BLUE, stream, &[x]).await);
    assert_eq!(event_ids(&store, RED, stream).await, [x]);
    assert_eq!(event_ids(&store, BLUE, stream).await, [x]);
}

#[tokio::test]
async fn archive_is_per_tenant() {
    let (_schema, store) = conjoined("tev_archive").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 1).await;
    start(&store, BLUE, stream, 1).await;
    let mut s = session(&store, RED);
    ok(s.events().archive_stream(stream));
    ok(s.save_changes().await);
    assert_eq!(read(&store, RED, stream).await.1, 0);
    assert_eq!(read(&store, BLUE, stream).await.1, 2);
    let mut s = session(&store, RED);
    ok(s.events().append(stream, [task("red")]));
    let err = s
        .save_changes()
        .await
        .expect_err("red's stream is archived");
    assert_eq!(rejection(&err), &RejectionKind::StreamArchived);
    let mut s = session(&store, BLUE);
    ok(s.events().append(stream, [task("blue")]));
    ok(s.save_changes().await);
    let mut s = session(&store, RED);
    let archived = ok(s
        .events()
        .fetch_stream_with(stream, StreamRange::all().including_archived())
        .await);
    assert_eq!(archived.len(), 2);
    assert!(archived.iter().all(|e| e.archived));
    assert_eq!(read(&store, BLUE, stream).await.1, 3);
}

#[tokio::test]
async fn delete_is_per_tenant() {
    let (schema, store) = conjoined("tev_delete").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 1).await;
    start(&store, BLUE, stream, 2).await;
    let mut s = session(&store, BLUE);
    ok(s.events().delete_stream(stream));
    ok(s.save_changes().await);
    assert_eq!(version(&store, BLUE, stream).await, None);
    assert_eq!(read(&store, RED, stream).await.1, 2);
    let raw = schema.raw_client().await;
    let rows = raw
        .query(
            "SELECT tenant_id, count(*) FROM mt_events GROUP BY tenant_id ORDER BY 1",
            &[],
        )
        .await
        .expect("count events");
    let counts: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(counts, [(RED.to_owned(), 2)]);
    // Blue can start its stream again; red's is untouched.
    start(&store, BLUE, stream, 0).await;
    assert_eq!(version(&store, BLUE, stream).await, Some(1));
    assert_eq!(version(&store, RED, stream).await, Some(2));
}

#[tokio::test]
async fn a_session_without_a_tenant_is_refused_and_nothing_is_written() {
    let (schema, store) = conjoined("tev_required").await;
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    fn required<T: std::fmt::Debug>(r: marten::Result<T>) {
        match r {
            Err(marten::Error::TenantRequired { owner }) => assert_eq!(owner, "events"),
            other => panic!("expected TenantRequired, got {other:?}"),
        }
    }
    required(s.events().start_stream(stream, [started("x")]));
    required(
        s.events()
            .start_stream_of("project", stream, [started("x")]),
    );
    required(s.events().append(stream, [task("x")]));
    required(s.events().append_expected(stream, 0, [task("x")]));
    required(s.events().append_optimistic(stream, [task("x")]).await);
    required(s.events().append_exclusive(stream, [task("x")]).await);
    required(s.events().archive_stream(stream));
    required(s.events().delete_stream(stream));
    required(s.events().fetch_stream(stream).await);
    required(s.events().fetch_stream_state(stream).await);
    required(s.events().read_all(Position::START, 10).await);
    required(s.events().aggregate_stream::<Project>(stream).await);
    required(
        s.events()
            .fetch_for_writing::<Project>(stream)
            .await
            .map(|_| ()),
    );
    let query = TagQuery::new().tag(SeatId("a1".into()));
    required(
        store
            .lightweight_session()
            .events()
            .fetch_for_writing_by_tags::<Seats>(query)
            .await
            .map(|_| ()),
    );
    ok(s.save_changes().await);
    let raw = schema.raw_client().await;
    for table in [
        "mt_streams",
        "mt_events",
        "mt_event_tags",
        "mt_tag_versions",
    ] {
        let n: i64 = raw
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
    // A tenant-scoped handle of the same store works.
    let tenant_store = ok(store.for_tenant(RED));
    let mut s = tenant_store.lightweight_session();
    ok(s.events().start_stream(stream, [started(RED)]));
    ok(s.save_changes().await);
}

#[derive(Tag, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[tag(name = "seat")]
struct SeatId(String);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Seat {
    #[tag]
    seat: SeatId,
    by: String,
}

#[derive(Default, Debug)]
struct Seats {
    taken: Vec<String>,
}

#[marten::apply]
impl Seats {
    fn apply_seat(&mut self, e: &Seat) {
        self.taken.push(e.by.clone());
    }
}

fn seat(id: &str) -> TagQuery {
    TagQuery::new()
        .tag(SeatId(id.into()))
        .event_types::<(Seat,)>()
}

/// Books seat `id` for `by` through a boundary, unless the boundary shows it taken.
async fn book(
    store: &DocumentStore,
    tenant: &str,
    id: &str,
    by: &str,
    pause: Option<&Barrier>,
) -> marten::Result<bool> {
    let mut s = session(store, tenant);
    let mut b = s
        .events()
        .fetch_for_writing_by_tags::<Seats>(seat(id))
        .await?;
    if b.state().is_some_and(|st| !st.taken.is_empty()) {
        return Ok(false);
    }
    b.append([Seat {
        seat: SeatId(id.into()),
        by: by.into(),
    }])?;
    if let Some(p) = pause {
        p.wait().await;
    }
    s.save_changes().await?;
    Ok(true)
}

/// Boundaries of two (tags bound one by one) and of five seats (bound as arrays) read
/// the session's tenant's events and versions only.
#[tokio::test]
async fn a_boundary_of_several_seats_is_the_tenants_own() {
    let (_schema, store) = conjoined("tev_dcb_many").await;
    for n in [2, 5] {
        let ids: Vec<String> = (0..n).map(|i| format!("{n}-{i}")).collect();
        // Red books every seat, blue only the first.
        for (tenant, booked) in [(RED, &ids[..]), (BLUE, &ids[..1])] {
            for id in booked {
                assert!(ok(book(&store, tenant, id, tenant, None).await));
            }
        }
        for (tenant, seen) in [(RED, n), (BLUE, 1)] {
            let q = ids
                .iter()
                .fold(TagQuery::new(), |q, id| q.tag(SeatId(id.clone())))
                .event_types::<(Seat,)>();
            let mut s = session(&store, tenant);
            let b = ok(s.events().fetch_for_writing_by_tags::<Seats>(q).await);
            assert_eq!(b.events().len(), seen, "{tenant}, {n} seats");
            let taken = b.state().map(|st| st.taken.clone()).unwrap_or_default();
            assert!(taken.iter().all(|by| by == tenant), "{taken:?}");
            let versioned = b.versions().iter().filter(|(_, v)| *v > 0).count();
            assert_eq!(versioned, seen, "{tenant}, {n} seats");
        }
    }
}

#[tokio::test]
async fn tag_boundaries_are_per_tenant() {
    let (schema, store) = conjoined("tev_dcb").await;
    // Both tenants book the same seat, racing: both succeed.
    let pause = Arc::new(Barrier::new(2));
    let (red, blue) = tokio::join!(
        book(&store, RED, "a1", "red", Some(&pause)),
        book(&store, BLUE, "a1", "blue", Some(&pause)),
    );
    assert!(ok(red) && ok(blue));
    // Each tenant's boundary sees its own booking only, at the same tag version.
    let mut versions = Vec::new();
    for tenant in [RED, BLUE] {
        let mut s = session(&store, tenant);
        let b = ok(s
            .events()
            .fetch_for_writing_by_tags::<Seats>(seat("a1"))
            .await);
        assert_eq!(
            b.state().map(|st| st.taken.clone()),
            Some(vec![tenant.to_owned()])
        );
        assert_eq!(b.events().len(), 1);
        versions.push(b.versions()[0].1);
    }
    assert!(
        versions[0] > 0 && versions[0] == versions[1],
        "{versions:?}"
    );
    let booked = versions[0];
    assert!(!ok(book(&store, RED, "a1", "red again", None).await));
    // Two sessions of one tenant on the same boundary: one is rejected.
    let pause = Arc::new(Barrier::new(2));
    let (first, second) = tokio::join!(
        book(&store, "green", "a1", "g1", Some(&pause)),
        book(&store, "green", "a1", "g2", Some(&pause)),
    );
    let outcomes = [first, second];
    let committed = outcomes.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(committed, 1, "{outcomes:?}");
    let rejected = outcomes
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("one rejected");
    assert!(
        matches!(rejection(rejected), RejectionKind::DcbConcurrency { .. }),
        "{rejected}"
    );
    // Many rounds, three tenants with two racing sessions each on one seat: exactly one
    // booking per tenant and round.
    for round in 0..8 {
        let id = format!("r{round}");
        let pause = Arc::new(Barrier::new(6));
        let tenants = ["t1", "t1", "t2", "t2", "t3", "t3"];
        let racers = tenants.map(|t| {
            let (store, pause, id) = (store.clone(), pause.clone(), id.clone());
            tokio::spawn(async move { (t, book(&store, t, &id, t, Some(&pause)).await) })
        });
        let mut booked = std::collections::BTreeMap::new();
        for racer in racers {
            let (tenant, outcome) = racer.await.expect("racer");
            match outcome {
                Ok(true) => *booked.entry(tenant).or_insert(0) += 1,
                Ok(false) => panic!("{tenant} saw the seat taken before booking"),
                Err(e) => assert!(
                    matches!(rejection(&e), RejectionKind::DcbConcurrency { .. }),
                    "{e}"
                ),
            }
        }
        assert_eq!(
            booked.into_iter().collect::<Vec<_>>(),
            [("t1", 1), ("t2", 1), ("t3", 1)],
            "round {round}"
        );
    }
    let raw = schema.raw_client().await;
    let rows = raw
        .query(
            "SELECT tenant_id, version FROM mt_tag_versions WHERE tag_value = 'a1' ORDER BY 1",
            &[],
        )
        .await
        .expect("tag versions");
    let versions: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        versions,
        [
            (BLUE.to_owned(), booked),
            ("green".to_owned(), booked),
            (RED.to_owned(), booked)
        ]
    );
    let (tags, same_tenant): (i64, i64) = raw
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE t.tenant_id = e.tenant_id) \
             FROM mt_event_tags t JOIN mt_events e USING (seq_id)",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("tags");
    assert_eq!((tags, same_tenant), (3 + 8 * 3, 3 + 8 * 3));
}

#[tokio::test]
async fn a_boundary_over_several_appends_locks_the_tenants_tags() {
    let (_schema, store) = conjoined("tev_dcb_lock").await;
    // Two tagged appends in one save take the tag lock (a statement of its own).
    let mut s = session(&store, RED);
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Seats>(seat("b1"))
        .await);
    drop(b);
    for by in ["r1", "r2"] {
        ok(s.events().append(
            Uuid::now_v7(),
            [Seat {
                seat: SeatId("b1".into()),
                by: by.into(),
            }],
        ));
    }
    ok(s.save_changes().await);
    let mut other = session(&store, BLUE);
    let b = ok(other
        .events()
        .fetch_for_writing_by_tags::<Seats>(seat("b1"))
        .await);
    assert_eq!(b.versions()[0].1, 0, "blue's tag is untouched");
    let mut s = session(&store, RED);
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Seats>(seat("b1"))
        .await);
    assert!(b.versions()[0].1 >= 2, "{:?}", b.versions());
    assert_eq!(b.state().map(|st| st.taken.len()), Some(2));
}

#[tokio::test]
async fn racing_tenants_on_the_same_stream_ids_do_not_conflict() {
    const TENANTS: usize = 4;
    const ROUNDS: usize = 15;
    let (schema, store) = conjoined("tev_race").await;
    let streams: Arc<Vec<Uuid>> = Arc::new((0..ROUNDS).map(|_| Uuid::now_v7()).collect());
    let barrier = Arc::new(Barrier::new(TENANTS));
    let mut tasks = Vec::new();
    for t in 0..TENANTS {
        let (store, streams, barrier) = (store.clone(), streams.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let tenant = format!("tenant-{t}");
            // Each session is dropped (its connection returned) before the next wait.
            for stream in streams.iter() {
                barrier.wait().await;
                {
                    let mut s = session(&store, &tenant);
                    ok(s.events().start_stream(*stream, [started(&tenant)]));
                    ok(s.save_changes().await);
                }
                barrier.wait().await;
                {
                    let mut s = session(&store, &tenant);
                    ok(s.events()
                        .append_expected(*stream, 1, [task("a"), task("b")]));
                    ok(s.save_changes().await);
                }
                barrier.wait().await;
                let mut s = session(&store, &tenant);
                ok(s.events().append_optimistic(*stream, [task("c")]).await);
                ok(s.save_changes().await);
            }
            tenant
        }));
    }
    for task in tasks {
        let tenant = task.await.expect("tenant task");
        for stream in streams.iter() {
            let (names, len) = read(&store, &tenant, *stream).await;
            assert_eq!((names, len), (vec![tenant.clone()], 4));
        }
    }
    let raw = schema.raw_client().await;
    let n: i64 = raw
        .query_one("SELECT count(*) FROM mt_streams", &[])
        .await
        .expect("streams")
        .get(0);
    assert_eq!(n, (TENANTS * ROUNDS) as i64);
}

#[tokio::test]
async fn single_tenant_events_record_the_sessions_tenant() {
    let (schema, b) = builder("tev_single");
    let store = ok(b.event::<TaskRecorded>().event::<Seat>().build().await);
    assert_eq!(store.events_tenancy(), Tenancy::Single);
    let stream = Uuid::now_v7();
    // One global stream: each session appends to it, recording its tenant.
    for tenant in [Some(RED), Some(BLUE), None] {
        let mut s = match tenant {
            Some(t) => session(&store, t),
            None => store.lightweight_session(),
        };
        ok(s.events().append(stream, [task("t")]));
        ok(s.save_changes().await);
    }
    let mut s = store.lightweight_session();
    let events = ok(s.events().fetch_stream(stream).await);
    let tenants: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.tenant.as_ref().map(TenantId::as_str))
        .collect();
    assert_eq!(tenants, [Some(RED), Some(BLUE), None]);
    assert_eq!(events.last().map(|e| e.version), Some(3));
    // A tenant's session reads the global stream too, and tags stay global.
    let mut s = session(&store, BLUE);
    assert_eq!(ok(s.events().fetch_stream(stream).await).len(), 3);
    assert!(ok(book(&store, RED, "s1", "red", None).await));
    assert!(!ok(book(&store, BLUE, "s1", "blue", None).await));
    let raw = schema.raw_client().await;
    // A session without a tenant records the default one (its statement leaves the
    // column to its default; the others bind theirs). The booking appended the fourth.
    let tenants_in = async |sql: &str| -> Vec<String> {
        let rows = raw.query(sql, &[]).await.expect(sql);
        rows.iter().map(|r| r.get(0)).collect()
    };
    let recorded = tenants_in("SELECT tenant_id FROM mt_events ORDER BY seq_id").await;
    assert_eq!(recorded, [RED, BLUE, "*DEFAULT*", RED]);
    let tag_tenants = tenants_in("SELECT DISTINCT tenant_id FROM mt_tag_versions").await;
    assert_eq!(tag_tenants, ["*DEFAULT*"]);
}

#[tokio::test]
async fn an_event_store_without_tenant_columns_gains_them() {
    let (schema, b) = builder("tev_migrate");
    let store = ok(b.event::<TaskRecorded>().build().await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, [task("before")]));
    ok(s.save_changes().await);
    store.close();
    // An event store of before tenancy: no tenant column but on the tag versions.
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "ALTER TABLE mt_streams DROP COLUMN tenant_id; \
         ALTER TABLE mt_events DROP COLUMN tenant_id; \
         ALTER TABLE mt_event_tags DROP COLUMN tenant_id",
    )
    .await
    .expect("an older event store");
    let b = || {
        DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .pool_size(2)
    };
    // The schema patch names the missing columns and adds them.
    let review = ok(b().apply_schema_at_build(false).build().await);
    let patch = ok(review.schema_patch(PatchOptions::new()).await);
    let missing: Vec<String> = patch
        .differences()
        .filter(|d| matches!(d, SchemaDifference::MissingColumn { .. }))
        .map(SchemaDifference::object)
        .collect();
    let expected: Vec<String> = ["mt_streams", "mt_events", "mt_event_tags"]
        .iter()
        .map(|t| format!("{}.{t}.tenant_id", schema.name()))
        .collect();
    assert_eq!(missing, expected);
    assert!(
        patch
            .statements()
            .any(|s| s
                .contains("ADD COLUMN IF NOT EXISTS tenant_id text NOT NULL DEFAULT '*DEFAULT*'")),
        "{:?}",
        patch.statements().collect::<Vec<_>>()
    );
    review.close();
    let store = ok(b().event::<TaskRecorded>().build().await);
    ok(store.assert_schema().await);
    let mut s = ok(store.lightweight_session_for(RED));
    ok(s.events().append(stream, [task("after")]));
    ok(s.save_changes().await);
    let events = ok(s.events().fetch_stream(stream).await);
    let tenants: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.tenant.as_ref().map(TenantId::as_str))
        .collect();
    assert_eq!(tenants, [None, Some(RED)]);
}

#[tokio::test]
async fn stored_aggregate_projections_are_refused_with_conjoined_events() {
    let (_schema, b) = builder("tev_projections");
    let err = b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<Project>(Lifecycle::Inline)
        .build()
        .await
        .expect_err("not supported yet");
    assert!(matches!(err, marten::Error::Configuration(_)), "{err}");
    assert!(err.to_string().contains("conjoined"), "{err}");
    let (_schema, b) = builder("tev_projections_live");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<Project>(Lifecycle::Live)
        .build()
        .await);
    ok(store.assert_schema().await);
}

#[tokio::test]
async fn string_stream_ids_are_per_tenant_too() {
    let (_schema, b) = builder("tev_strings");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .stream_identity(StreamIdentity::String)
        .event::<TaskRecorded>()
        .build()
        .await);
    for (tenant, n) in [(RED, 2), (BLUE, 1)] {
        let mut s = session(&store, tenant);
        ok(s.events()
            .start_stream("order-1", (0..n).map(|_| task(tenant))));
        ok(s.save_changes().await);
    }
    let mut s = session(&store, BLUE);
    ok(s.events().append_expected("order-1", 1, [task(BLUE)]));
    ok(s.save_changes().await);
    for (tenant, n) in [(RED, 2), (BLUE, 2)] {
        let mut s = session(&store, tenant);
        let events = ok(s.events().fetch_stream("order-1").await);
        assert_eq!(events.len(), n, "{tenant}");
        assert!(events.iter().all(|e| e
            .data_as::<TaskRecorded>()
            .is_some_and(|t| t.title == tenant)));
    }
}

#[tokio::test]
async fn event_tables_of_the_other_tenancy_are_refused_at_build() {
    let (schema, b) = builder("tev_switch");
    let single = ok(b.build().await);
    single.close();
    let conjoined = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .events_tenancy(Tenancy::Conjoined)
        .build()
        .await
        .expect_err("single-tenant tables");
    assert!(
        matches!(&conjoined, marten::Error::Configuration(m) if m.contains("not converted")),
        "{conjoined}"
    );
    let (schema, b) = builder("tev_switch_back");
    let store = ok(b.events_tenancy(Tenancy::Conjoined).build().await);
    store.close();
    let single = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .build()
        .await
        .expect_err("conjoined tables");
    assert!(
        matches!(single, marten::Error::Configuration(_)),
        "{single}"
    );
}

#[tokio::test]
async fn the_store_reads_every_tenants_events_in_the_global_order() {
    let (_schema, store) = conjoined("tev_read_all").await;
    let stream = Uuid::now_v7();
    start(&store, RED, stream, 1).await;
    start(&store, BLUE, stream, 0).await;
    // Gap-safe: another test's open transaction may hold the page back for a while.
    let mut page = ok(store.read_all_events(Position::START, 100).await);
    for _ in 0..200 {
        if page.events.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = ok(store.read_all_events(Position::START, 100).await);
    }
    let tenants: Vec<Option<&str>> = page
        .events
        .iter()
        .map(|e| e.tenant.as_ref().map(TenantId::as_str))
        .collect();
    assert_eq!(tenants, [Some(RED), Some(RED), Some(BLUE)]);
    // A tenant's handle reads them all too; its sessions read their own.
    let red = ok(store.for_tenant(RED));
    let all = ok(red.read_all_events(Position::START, 100).await);
    assert_eq!(all.events.len(), 3);
    let mut s = red.lightweight_session();
    assert_eq!(
        ok(s.events().read_all(Position::START, 100).await)
            .events
            .len(),
        2
    );
}

#[tokio::test]
async fn the_store_pages_through_interleaved_tenants_in_the_global_order() {
    let (_schema, store) = conjoined("tev_read_all_pages").await;
    // Five tenants take turns, one save each, so their events interleave in the order.
    let tenants = ["t0", "t1", "t2", "t3", "t4"];
    let mut written = Vec::new();
    for round in 0..6 {
        for (i, tenant) in tenants.iter().enumerate() {
            let stream = Uuid::now_v7();
            start(&store, tenant, stream, (round + i) % 3).await;
            written.push(((round + i) % 3 + 1, *tenant));
        }
    }
    let total: usize = written.iter().map(|(n, _)| n).sum();
    // Gap-safe: another test's open transaction may hold the end of the order back.
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen.clear();
        let mut after = Position::START;
        loop {
            let page = ok(store.read_all_events(after, 4).await);
            if page.rows == 0 {
                break;
            }
            assert!(page.rows <= 4, "a page holds at most its limit");
            seen.extend(
                page.events
                    .iter()
                    .map(|e| (e.sequence, e.tenant.as_ref().map(|t| t.as_str().to_owned()))),
            );
            after = page.next;
        }
        if seen.len() == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.len(), total, "every event of every tenant, once");
    // One writer at a time: the global order is the sequence order.
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "in the global order: {seen:?}"
    );
    // And the tenants interleave as they were written.
    let expected: Vec<&str> = written
        .iter()
        .flat_map(|(n, t)| std::iter::repeat_n(*t, *n))
        .collect();
    let got: Vec<&str> = seen.iter().filter_map(|(_, t)| t.as_deref()).collect();
    assert_eq!(got, expected);
}
