//! Scenarios ported from the JasperFx.Events compliance suites (JasperFx/jasperfx,
//! `src/JasperFx.Events.ComplianceTests/Suites/`): the async daemon, rebuilds, dead
//! letters, snapshot lifecycles, multi-stream grouping, slicing on a single-tenanted
//! store, projection status, consistency assertions of empty decisions and event
//! metadata. Each test names the suite and fact it ports; the behaviour is ported, not
//! the code. Every wait on the daemon is bounded.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::subscriptions::{HandlerError, Subscription, SubscriptionBatch, SubscriptionTx};
use marten::RejectionKind;
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

/// `RebuildProjectionAsync` of JasperFx returns once the replay is done: here the reset,
/// then a bounded wait for the running daemon to replay.
async fn rebuilt(store: &DocumentStore, daemon: &Daemon, projection: &str) {
    ok(marten::daemon::rebuild(store, projection).await);
    ok(daemon.wait_for_non_stale(WAIT).await);
}

async fn load<D: marten::PgDocument>(store: &DocumentStore, id: &D::Id) -> Option<D> {
    ok(store.query_session().load::<D>(id).await)
}

// ---------------------------------------------------------------------------------------
// AsyncDaemonCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ItemAdded {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ItemRemoved {
    name: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct ItemTally {
    id: Uuid,
    version: i64,
    added: i64,
    removed: i64,
}

#[marten::apply]
impl ItemTally {
    fn apply(&mut self, _e: &ItemAdded) {
        self.added += 1;
    }
    fn apply(&mut self, _e: &ItemRemoved) {
        self.removed += 1;
    }
}

/// AsyncDaemonCompliance.async_projection_catches_up_and_persists_the_document (and
/// .rebuild_the_projection_from_the_event_stream): the daemon persists the folded document;
/// a rebuild from the stream gives it again.
#[tokio::test]
async fn async_daemon_catches_up_persists_and_rebuilds_the_document() {
    let (_schema, b) = builder("jfx_daemon_items");
    let store = ok(b.projection::<ItemTally>(Lifecycle::Async).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(ItemAdded { name: "one".into() }),
            PendingEvent::new(ItemAdded { name: "two".into() }),
            PendingEvent::new(ItemRemoved { name: "one".into() }),
        ],
    ));
    ok(s.save_changes().await);
    let daemon = caught_up(&store).await;
    let tally = load::<ItemTally>(&store, &id).await.expect("persisted");
    assert_eq!((tally.added, tally.removed, tally.version), (2, 1, 3));
    rebuilt(&store, &daemon, "ItemTally").await;
    let again = load::<ItemTally>(&store, &id).await.expect("rebuilt");
    assert_eq!(again, tally, "a rebuild reproduces the document");
    ok(daemon.stop().await);
}

// ---------------------------------------------------------------------------------------
// RebuildAndCatchUpCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TurbineInstalled {
    site: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TurbineSpun {
    revolutions: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TurbineHalted {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Turbine {
    id: Uuid,
    version: i64,
    site: String,
    total_revolutions: i64,
    spin_count: i64,
    halted: bool,
}

#[marten::apply]
impl Turbine {
    fn create(e: &TurbineInstalled) -> Self {
        Turbine {
            id: Uuid::nil(),
            version: 0,
            site: e.site.clone(),
            total_revolutions: 0,
            spin_count: 0,
            halted: false,
        }
    }
    fn apply(&mut self, e: &TurbineSpun) {
        self.total_revolutions += e.revolutions;
        self.spin_count += 1;
    }
    fn apply(&mut self, _e: &TurbineHalted) {
        self.halted = true;
    }
}

/// A second async projection over the same events.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct TurbineAudit {
    id: Uuid,
    version: i64,
    site: String,
    revisions: i64,
}

#[marten::apply]
impl TurbineAudit {
    fn create(e: &TurbineInstalled) -> Self {
        TurbineAudit {
            id: Uuid::nil(),
            version: 0,
            site: e.site.clone(),
            revisions: 1,
        }
    }
    fn apply(&mut self, _e: &TurbineSpun) {
        self.revisions += 1;
    }
}

async fn turbine_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .projection::<Turbine>(Lifecycle::Async)
        .projection::<TurbineAudit>(Lifecycle::Async)
        .build()
        .await);
    (schema, store)
}

/// A turbine installed at `site` that spun 10 and 15 revolutions.
async fn a_turbine(store: &DocumentStore, site: &str) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(TurbineInstalled { site: site.into() }),
            PendingEvent::new(TurbineSpun { revolutions: 10 }),
            PendingEvent::new(TurbineSpun { revolutions: 15 }),
        ],
    ));
    ok(s.save_changes().await);
    id
}

/// RebuildAndCatchUpCompliance.a_rebuild_reproduces_the_projected_state,
/// .a_rebuild_removes_state_the_replay_cannot_produce,
/// .rebuilding_by_projection_name_agrees_with_rebuilding_by_view_type and
/// .a_rebuild_reproduces_every_stream_not_just_the_last: a rebuild by the projection's
/// name tears down a document no event makes and replays every stream.
#[tokio::test]
async fn rebuild_tears_down_orphans_and_reproduces_every_stream() {
    let (_schema, store) = turbine_store("jfx_rebuild_every").await;
    let sites = ["North Ridge", "South Bank", "East Flats"];
    let mut ids = Vec::new();
    for site in sites {
        ids.push(a_turbine(&store, site).await);
    }
    let daemon = caught_up(&store).await;
    let orphan = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.store(Turbine {
        id: orphan,
        version: 9,
        site: "Nowhere".into(),
        total_revolutions: 999,
        spin_count: 99,
        halted: false,
    }));
    ok(s.save_changes().await);
    assert!(load::<Turbine>(&store, &orphan).await.is_some());
    rebuilt(&store, &daemon, "Turbine").await;
    assert!(
        load::<Turbine>(&store, &orphan).await.is_none(),
        "a rebuild starts from an empty slate"
    );
    for (id, site) in ids.iter().zip(sites) {
        let t = load::<Turbine>(&store, id).await.expect("replayed");
        assert_eq!(
            (
                t.site.as_str(),
                t.total_revolutions,
                t.spin_count,
                t.version
            ),
            (site, 25, 2, 3)
        );
    }
    ok(daemon.stop().await);
}

/// RebuildAndCatchUpCompliance.rebuilding_twice_is_idempotent: a second rebuild replaces,
/// it does not accumulate (also two resets in a row before one replay).
#[tokio::test]
async fn rebuilding_twice_is_idempotent() {
    let (_schema, store) = turbine_store("jfx_rebuild_twice").await;
    let id = a_turbine(&store, "North Ridge").await;
    let daemon = caught_up(&store).await;
    rebuilt(&store, &daemon, "Turbine").await;
    rebuilt(&store, &daemon, "Turbine").await;
    ok(marten::daemon::rebuild(&store, "Turbine").await);
    ok(marten::daemon::rebuild(&store, "Turbine").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    let t = load::<Turbine>(&store, &id).await.expect("doc");
    assert_eq!((t.total_revolutions, t.spin_count, t.version), (25, 2, 3));
    ok(daemon.stop().await);
}

/// RebuildAndCatchUpCompliance.a_rebuild_picks_up_events_appended_after_the_first_catch_up.
#[tokio::test]
async fn a_rebuild_picks_up_events_appended_after_the_first_catch_up() {
    let (_schema, store) = turbine_store("jfx_rebuild_later").await;
    let id = a_turbine(&store, "North Ridge").await;
    let daemon = caught_up(&store).await;
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [
            PendingEvent::new(TurbineSpun { revolutions: 5 }),
            PendingEvent::new(TurbineHalted {}),
        ],
    ));
    ok(s.save_changes().await);
    rebuilt(&store, &daemon, "Turbine").await;
    let t = load::<Turbine>(&store, &id).await.expect("doc");
    assert_eq!((t.total_revolutions, t.spin_count, t.halted), (30, 3, true));
    ok(daemon.stop().await);
}

/// RebuildAndCatchUpCompliance.rebuilding_one_projection_leaves_another_alone: the other
/// projection's document and its position are untouched by the reset.
#[tokio::test]
async fn rebuilding_one_projection_leaves_another_alone() {
    let (_schema, store) = turbine_store("jfx_rebuild_other").await;
    let id = a_turbine(&store, "North Ridge").await;
    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    let before = ok(store.projection_status().await);
    ok(marten::daemon::rebuild(&store, "Turbine").await);
    // No daemon runs: the reset alone is observed.
    let after = ok(store.projection_status().await);
    let position = |all: &[marten::ProjectionStatus], name: &str| {
        all.iter()
            .find(|p| p.name == name)
            .map(|p| p.position)
            .expect("reported")
    };
    assert_eq!(position(&after, "Turbine"), 0, "the rebuilt one is reset");
    assert_eq!(
        position(&after, "TurbineAudit"),
        position(&before, "TurbineAudit"),
        "the other keeps its position"
    );
    assert!(position(&before, "TurbineAudit") > 0);
    assert!(load::<Turbine>(&store, &id).await.is_none(), "torn down");
    let audit = load::<TurbineAudit>(&store, &id).await.expect("untouched");
    assert_eq!((audit.site.as_str(), audit.revisions), ("North Ridge", 3));
    let daemon = caught_up(&store).await;
    let audit_after = load::<TurbineAudit>(&store, &id).await.expect("audit");
    assert_eq!(audit_after.revisions, 3, "not replayed onto itself");
    assert!(load::<Turbine>(&store, &id).await.is_some());
    ok(daemon.stop().await);
}

// ---------------------------------------------------------------------------------------
// DeadLetterCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ReactorStarted {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ReactorPulsed {
    output: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ReactorFaulted {
    reason: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Reactor {
    id: Uuid,
    version: i64,
    name: String,
    output: i64,
}

#[marten::apply]
impl Reactor {
    fn create(e: &ReactorStarted) -> Self {
        Reactor {
            id: Uuid::nil(),
            version: 0,
            name: e.name.clone(),
            output: 0,
        }
    }
    fn apply(&mut self, e: &ReactorPulsed) {
        self.output += e.output;
    }
    fn apply(&mut self, e: &ReactorFaulted) -> Result<(), String> {
        Err(format!("Reactor fault: {}", e.reason))
    }
}

async fn reactor_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.projection::<Reactor>(Lifecycle::Async).build().await);
    (schema, store)
}

async fn a_reactor(store: &DocumentStore, name: &str, faulting: bool, pulse: i64) -> Uuid {
    let id = Uuid::now_v7();
    let mut events = vec![
        PendingEvent::new(ReactorStarted { name: name.into() }),
        PendingEvent::new(ReactorPulsed { output: pulse }),
    ];
    if faulting {
        events.push(PendingEvent::new(ReactorFaulted {
            reason: "coolant".into(),
        }));
        events.push(PendingEvent::new(ReactorPulsed { output: 5 }));
    }
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, events));
    ok(s.save_changes().await);
    id
}

/// (projection, seq_id, event_type, stream_id, error) of every dead letter.
async fn dead_letters(schema: &TestSchema) -> Vec<(String, i64, String, String, String)> {
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT projection, seq_id, event_type, stream_id, error FROM mt_dead_letters ORDER BY seq_id",
            &[],
        )
        .await
        .expect("dead letters");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// DeadLetterCompliance.the_shard_survives_a_poison_event_and_keeps_going,
/// .the_skipped_event_is_recorded_as_a_dead_letter and
/// .the_dead_letter_row_identifies_the_projection_and_the_failure.
#[tokio::test]
async fn a_poison_event_is_skipped_and_recorded_with_its_projection_and_failure() {
    let (schema, store) = reactor_store("jfx_dead_letter_row").await;
    let id = a_reactor(&store, "Alpha", true, 10).await;
    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    let reactor = load::<Reactor>(&store, &id).await.expect("projected");
    assert_eq!(
        (reactor.name.as_str(), reactor.output),
        ("Alpha", 15),
        "10 before the fault and 5 after it"
    );
    let faulted = ok(store.lightweight_session().events().fetch_stream(id).await)
        .into_iter()
        .find(|e| e.is::<ReactorFaulted>())
        .expect("the faulted event");
    let letters = dead_letters(&schema).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (projection, seq, event_type, stream, error) = &letters[0];
    assert_eq!(projection, "Reactor");
    assert!(*seq > 0);
    assert_eq!(*seq, faulted.sequence, "enough to find the event again");
    assert_eq!(event_type, ReactorFaulted::EVENT_TYPE);
    assert_eq!(stream, &id.to_string());
    assert!(error.contains("Reactor fault: coolant"), "{error}");
    assert_eq!(store.health().await.dead_letters(), 1);
}

/// DeadLetterCompliance.one_faulting_stream_does_not_stop_another_stream_from_projecting.
#[tokio::test]
async fn one_faulting_stream_does_not_stop_another_from_projecting() {
    let (schema, store) = reactor_store("jfx_dead_letter_other").await;
    let faulting = a_reactor(&store, "Alpha", true, 10).await;
    let healthy = a_reactor(&store, "Gamma", false, 42).await;
    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    let h = load::<Reactor>(&store, &healthy).await.expect("healthy");
    assert_eq!((h.name.as_str(), h.output), ("Gamma", 42));
    let letters = dead_letters(&schema).await;
    let streams: Vec<&str> = letters.iter().map(|l| l.3.as_str()).collect();
    assert_eq!(
        streams,
        [faulting.to_string()],
        "only the faulting stream's"
    );
}

/// DeadLetterCompliance.a_stream_with_no_faults_produces_no_dead_letters.
#[tokio::test]
async fn a_stream_with_no_faults_produces_no_dead_letters() {
    let (schema, store) = reactor_store("jfx_dead_letter_none").await;
    let id = a_reactor(&store, "Beta", false, 7).await;
    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    assert!(dead_letters(&schema).await.is_empty());
    assert_eq!(
        load::<Reactor>(&store, &id).await.map(|r| r.output),
        Some(7)
    );
    assert_eq!(store.health().await.dead_letters(), 0);
}

// ---------------------------------------------------------------------------------------
// SnapshotLifecycleCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ParcelShipped {
    destination: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ParcelScanned {
    location: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ParcelDelivered {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Parcel {
    id: Uuid,
    version: i64,
    destination: String,
    scans: Vec<String>,
    delivered: bool,
}

#[marten::apply]
impl Parcel {
    fn create(e: &ParcelShipped) -> Self {
        Parcel {
            id: Uuid::nil(),
            version: 0,
            destination: e.destination.clone(),
            scans: vec![],
            delivered: false,
        }
    }
    fn apply(&mut self, e: &ParcelScanned) {
        self.scans.push(e.location.clone());
    }
    fn apply(&mut self, _e: &ParcelDelivered) {
        self.delivered = true;
    }
}

fn shipped() -> PendingEvent {
    PendingEvent::new(ParcelShipped {
        destination: "Rivendell".into(),
    })
}

fn scanned(at: &str) -> PendingEvent {
    PendingEvent::new(ParcelScanned {
        location: at.into(),
    })
}

fn the_story() -> Vec<PendingEvent> {
    vec![
        shipped(),
        scanned("Bree"),
        scanned("Weathertop"),
        PendingEvent::new(ParcelDelivered {}),
    ]
}

async fn parcel_store(label: &str, lifecycle: Lifecycle) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.projection::<Parcel>(lifecycle).build().await);
    (schema, store)
}

async fn a_parcel(store: &DocumentStore, events: Vec<PendingEvent>) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, events));
    ok(s.save_changes().await);
    id
}

fn assert_the_story(p: Option<Parcel>, id: Uuid) {
    let p = p.expect("a parcel");
    assert_eq!(p.id, id);
    assert_eq!(p.destination, "Rivendell");
    assert_eq!(p.scans, ["Bree", "Weathertop"]);
    assert!(p.delivered);
    assert_eq!(p.version, 4);
}

/// SnapshotLifecycleCompliance.an_inline_snapshot_matches_the_live_fold and
/// .an_inline_snapshot_is_readable_as_soon_as_it_commits.
#[tokio::test]
async fn an_inline_snapshot_is_readable_at_commit_and_matches_the_live_fold() {
    let (_schema, store) = parcel_store("jfx_snapshot_inline", Lifecycle::Inline).await;
    let id = a_parcel(&store, the_story()).await;
    let persisted = load::<Parcel>(&store, &id).await;
    assert_the_story(persisted.clone(), id);
    let live: Option<Parcel> = ok(store
        .lightweight_session()
        .events()
        .aggregate_stream(id)
        .await);
    assert_the_story(live.clone(), id);
    assert_eq!(persisted, live);
}

/// SnapshotLifecycleCompliance.an_async_snapshot_is_not_written_by_the_committing_transaction
/// and .an_async_snapshot_matches_the_live_fold_once_the_daemon_catches_up.
#[tokio::test]
async fn an_async_snapshot_waits_for_the_daemon_then_matches_the_live_fold() {
    let (_schema, store) = parcel_store("jfx_snapshot_async", Lifecycle::Async).await;
    let id = a_parcel(&store, the_story()).await;
    assert!(
        load::<Parcel>(&store, &id).await.is_none(),
        "the committing transaction wrote no async document"
    );
    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    assert_the_story(load::<Parcel>(&store, &id).await, id);
    let live: Option<Parcel> = ok(store
        .lightweight_session()
        .events()
        .aggregate_stream(id)
        .await);
    assert_the_story(live, id);
}

/// SnapshotLifecycleCompliance.both_lifecycles_reach_the_same_state_from_the_same_events.
#[tokio::test]
async fn both_lifecycles_reach_the_same_state_from_the_same_events() {
    let (_s1, inline) = parcel_store("jfx_snapshot_both_inline", Lifecycle::Inline).await;
    let (_s2, asynchronous) = parcel_store("jfx_snapshot_both_async", Lifecycle::Async).await;
    let a = a_parcel(&inline, the_story()).await;
    let b = a_parcel(&asynchronous, the_story()).await;
    let daemon = caught_up(&asynchronous).await;
    ok(daemon.stop().await);
    let from_inline = load::<Parcel>(&inline, &a).await.expect("inline");
    let from_async = load::<Parcel>(&asynchronous, &b).await.expect("async");
    assert_eq!(
        from_async,
        Parcel {
            id: b,
            ..from_inline
        },
        "everything but the identity"
    );
}

/// SnapshotLifecycleCompliance.a_snapshot_keeps_up_with_events_appended_after_it_was_created.
#[tokio::test]
async fn an_inline_snapshot_keeps_up_with_later_appends() {
    let (_schema, store) = parcel_store("jfx_snapshot_later", Lifecycle::Inline).await;
    let id = a_parcel(&store, vec![shipped(), scanned("Bree")]).await;
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [scanned("Weathertop"), PendingEvent::new(ParcelDelivered {})],
    ));
    ok(s.save_changes().await);
    assert_the_story(load::<Parcel>(&store, &id).await, id);
}

// ---------------------------------------------------------------------------------------
// MultiStreamProjectionCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct EmployeeHired {
    department: String,
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct EmployeeDeparted {
    department: String,
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DepartmentsAudited {
    departments: Vec<String>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TeamOnboarded {
    department: String,
    members: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct Department {
    id: String,
    head_count: i64,
    names: Vec<String>,
    audit_count: i64,
}

#[marten::apply]
impl Department {
    fn identity(e: &EmployeeHired) -> String {
        e.department.clone()
    }
    fn identity(e: &EmployeeDeparted) -> String {
        e.department.clone()
    }
    fn identities(e: &DepartmentsAudited) -> Vec<String> {
        e.departments.clone()
    }
    fn identity(e: &TeamOnboarded) -> String {
        e.department.clone()
    }
    fn apply(&mut self, e: &EmployeeHired) {
        self.head_count += 1;
        self.names.push(e.name.clone());
    }
    fn apply(&mut self, e: &EmployeeDeparted) {
        self.head_count -= 1;
        self.names.retain(|n| n != &e.name);
    }
    fn apply(&mut self, _e: &DepartmentsAudited) {
        self.audit_count += 1;
    }
    /// No fan-out in marten-rs: the parent's apply applies each child within the
    /// parent's identity.
    fn apply(&mut self, e: &TeamOnboarded) {
        for member in &e.members {
            self.head_count += 1;
            self.names.push(member.clone());
        }
    }
}

fn hired(department: &str, name: &str) -> PendingEvent {
    PendingEvent::new(EmployeeHired {
        department: department.into(),
        name: name.into(),
    })
}

fn departed(department: &str, name: &str) -> PendingEvent {
    PendingEvent::new(EmployeeDeparted {
        department: department.into(),
        name: name.into(),
    })
}

fn onboarded(department: &str, members: &[&str]) -> PendingEvent {
    PendingEvent::new(TeamOnboarded {
        department: department.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    })
}

async fn department_store(label: &str, lifecycle: Lifecycle) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .multi_stream_projection::<Department>(lifecycle)
        .build()
        .await);
    (schema, store)
}

/// Starts a new stream with `events`.
async fn in_a_new_stream(store: &DocumentStore, events: Vec<PendingEvent>) {
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(Uuid::now_v7(), events));
    ok(s.save_changes().await);
}

async fn department(store: &DocumentStore, id: &str) -> Option<Department> {
    load::<Department>(store, &id.to_owned()).await
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// MultiStreamProjectionCompliance.events_from_separate_streams_land_on_one_aggregate.
#[tokio::test]
async fn events_from_separate_streams_land_on_one_aggregate() {
    let (_schema, store) = department_store("jfx_multi_streams", Lifecycle::Inline).await;
    for name in ["Ada", "Grace", "Edsger"] {
        in_a_new_stream(&store, vec![hired("engineering", name)]).await;
    }
    let d = department(&store, "engineering")
        .await
        .expect("one aggregate");
    assert_eq!((d.id.as_str(), d.head_count), ("engineering", 3));
    assert_eq!(sorted(d.names), ["Ada", "Edsger", "Grace"]);
}

/// MultiStreamProjectionCompliance.events_within_one_stream_are_grouped_by_their_identity,
/// .separate_identities_stay_independent and
/// .an_event_can_update_an_aggregate_built_by_an_earlier_commit.
#[tokio::test]
async fn one_streams_events_are_grouped_by_identity_and_later_commits_update_them() {
    let (_schema, store) = department_store("jfx_multi_grouped", Lifecycle::Inline).await;
    in_a_new_stream(
        &store,
        vec![
            hired("sales", "Ada"),
            hired("support", "Grace"),
            hired("sales", "Edsger"),
        ],
    )
    .await;
    assert_eq!(
        department(&store, "sales").await.map(|d| d.head_count),
        Some(2)
    );
    assert_eq!(
        department(&store, "support").await.map(|d| d.head_count),
        Some(1)
    );
    in_a_new_stream(&store, vec![departed("sales", "Ada")]).await;
    let sales = department(&store, "sales").await.expect("sales");
    assert_eq!((sales.head_count, sales.names), (1, vec!["Edsger".into()]));
    let support = department(&store, "support").await.expect("support");
    assert_eq!(
        (support.head_count, support.names),
        (1, vec!["Grace".into()]),
        "independent"
    );
}

/// MultiStreamProjectionCompliance.one_event_reaches_every_identity_it_names and
/// .an_identity_that_no_event_names_has_no_aggregate.
#[tokio::test]
async fn one_event_reaches_every_identity_it_names_and_no_other() {
    let (_schema, store) = department_store("jfx_multi_identities", Lifecycle::Inline).await;
    in_a_new_stream(
        &store,
        vec![hired("finance", "Ada"), hired("legal", "Grace")],
    )
    .await;
    in_a_new_stream(
        &store,
        vec![PendingEvent::new(DepartmentsAudited {
            departments: vec!["finance".into(), "legal".into()],
        })],
    )
    .await;
    for id in ["finance", "legal"] {
        let d = department(&store, id).await.expect("department");
        assert_eq!((d.audit_count, d.head_count), (1, 1), "{id}");
    }
    assert!(department(&store, "never-referenced").await.is_none());
}

/// MultiStreamProjectionCompliance.a_fanned_out_event_applies_each_child_inside_its_parents_identity
/// and .a_fanned_out_child_composes_with_ordinary_events_on_the_same_aggregate (children
/// applied by the parent's apply: marten-rs has no `FanOut`).
#[tokio::test]
async fn child_items_apply_inside_their_parents_identity_and_compose() {
    let (_schema, store) = department_store("jfx_multi_children", Lifecycle::Inline).await;
    in_a_new_stream(
        &store,
        vec![
            onboarded("research", &["Ada", "Grace"]),
            onboarded("design", &["Edsger"]),
        ],
    )
    .await;
    let research = department(&store, "research").await.expect("research");
    assert_eq!(
        (research.head_count, sorted(research.names)),
        (2, vec!["Ada".into(), "Grace".into()])
    );
    let design = department(&store, "design").await.expect("design");
    assert_eq!(
        (design.head_count, design.names),
        (1, vec!["Edsger".into()])
    );

    in_a_new_stream(&store, vec![hired("mixed", "Ada")]).await;
    in_a_new_stream(&store, vec![onboarded("mixed", &["Grace"])]).await;
    in_a_new_stream(&store, vec![departed("mixed", "Ada")]).await;
    let mixed = department(&store, "mixed").await.expect("mixed");
    assert_eq!((mixed.head_count, mixed.names), (1, vec!["Grace".into()]));
}

/// MultiStreamProjectionCompliance.the_async_lifecycle_produces_the_same_aggregate_as_inline
/// and .a_rebuild_reproduces_the_grouping (exactly once).
#[tokio::test]
async fn async_multi_stream_matches_inline_and_rebuilds_exactly_once() {
    let (_s1, inline) = department_store("jfx_multi_inline", Lifecycle::Inline).await;
    let (_s2, store) = department_store("jfx_multi_async", Lifecycle::Async).await;
    for s in [&inline, &store] {
        in_a_new_stream(s, vec![hired("eng", "Ada")]).await;
        in_a_new_stream(s, vec![hired("eng", "Grace"), departed("eng", "Ada")]).await;
        in_a_new_stream(s, vec![hired("left", "Ada"), hired("right", "Grace")]).await;
        in_a_new_stream(s, vec![onboarded("left", &["Edsger"])]).await;
    }
    let daemon = caught_up(&store).await;
    for id in ["eng", "left", "right"] {
        assert_eq!(
            department(&store, id).await,
            department(&inline, id).await,
            "{id}"
        );
    }
    let eng = department(&store, "eng").await.expect("eng");
    assert_eq!((eng.head_count, eng.names), (1, vec!["Grace".into()]));
    rebuilt(&store, &daemon, "Department").await;
    let left = department(&store, "left").await.expect("left");
    assert_eq!(
        (left.head_count, sorted(left.names)),
        (2, vec!["Ada".into(), "Edsger".into()]),
        "replayed from empty, not onto the surviving document"
    );
    assert_eq!(
        department(&store, "right").await.map(|d| d.head_count),
        Some(1)
    );
    ok(daemon.stop().await);
}

// ---------------------------------------------------------------------------------------
// SingleTenantedEventSlicingCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TallyIncremented {
    amount: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct SlicingTally {
    id: Uuid,
    version: i64,
    total: i64,
    event_count: i64,
}

#[marten::apply]
impl SlicingTally {
    fn apply(&mut self, e: &TallyIncremented) {
        self.total += e.amount;
        self.event_count += 1;
    }
}

/// SingleTenantedEventSlicingCompliance.async_projection_folds_one_stream_despite_disagreeing_tenant_ids:
/// on a single-tenanted store, rows of one stream whose `tenant_id`s disagree (written by
/// an inconsistent client: here by hand) still fold into one document.
#[tokio::test]
async fn async_projection_folds_one_stream_despite_disagreeing_tenant_ids() {
    let (schema, b) = builder("jfx_single_tenant_slicing");
    let store = ok(b.projection::<SlicingTally>(Lifecycle::Async).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events()
        .append(id, [1, 2, 4].map(|amount| TallyIncremented { amount })));
    ok(s.save_changes().await);
    let raw = schema.raw_client().await;
    raw.execute(
        "UPDATE mt_events SET tenant_id = 'some-other-tenant' WHERE stream_id = $1 AND version > 1",
        &[&id],
    )
    .await
    .expect("stamp the later events with another tenant");
    let distinct: i64 = raw
        .query_one(
            "SELECT count(DISTINCT tenant_id) FROM mt_events WHERE stream_id = $1",
            &[&id],
        )
        .await
        .expect("tenants")
        .get(0);
    assert_eq!(distinct, 2, "the precondition: disagreeing tenant ids");
    let daemon = Daemon::start(&store, options());
    let waited = daemon.wait_for_non_stale(WAIT).await;
    ok(daemon.stop().await);
    ok(waited);
    let tally = load::<SlicingTally>(&store, &id)
        .await
        .expect("one document");
    assert_eq!(
        (tally.event_count, tally.total),
        (3, 7),
        "every event of the stream folded once"
    );
}

// ---------------------------------------------------------------------------------------
// ProjectionStatusCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct SignalRaised {
    flag: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct SignalLowered {
    flag: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct SignalTally {
    id: Uuid,
    version: i64,
    raised: i64,
    lowered: i64,
}

#[marten::apply]
impl SignalTally {
    fn apply(&mut self, _e: &SignalRaised) {
        self.raised += 1;
    }
    fn apply(&mut self, _e: &SignalLowered) {
        self.lowered += 1;
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct SignalBoard {
    id: Uuid,
    version: i64,
    last: String,
}

#[marten::apply]
impl SignalBoard {
    fn apply(&mut self, e: &SignalRaised) {
        self.last = e.flag.clone();
    }
    fn apply(&mut self, _e: &SignalLowered) {
        self.last.clear();
    }
}

/// A subscription registered only so the inventory can leave it out.
struct SignalWatcher;

impl Subscription for SignalWatcher {
    fn name(&self) -> &'static str {
        "SignalWatcher"
    }

    async fn handle(
        &self,
        _batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

async fn signal_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .projection::<SignalTally>(Lifecycle::Async)
        .projection::<SignalBoard>(Lifecycle::Inline)
        .subscription(SignalWatcher)
        .build()
        .await);
    (schema, store)
}

async fn signals(store: &DocumentStore) {
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        Uuid::now_v7(),
        [
            PendingEvent::new(SignalRaised {
                flag: "Blue Peter".into(),
            }),
            PendingEvent::new(SignalLowered {
                flag: "Blue Peter".into(),
            }),
            PendingEvent::new(SignalRaised {
                flag: "Bravo".into(),
            }),
        ],
    ));
    ok(s.save_changes().await);
}

/// ProjectionStatusCompliance.an_async_projection_is_reported_with_its_shards, and where
/// marten-rs differs on purpose from .subscriptions_are_not_in_the_projection_inventory:
/// the status lists every slot the daemon runs, async projections and subscriptions
/// (each has a progression row and a position; README "Subscriptions"), in registration
/// order, and never an inline projection.
#[tokio::test]
async fn status_inventory_is_the_daemons_slots_never_an_inline_projection() {
    let (_schema, store) = signal_store("jfx_status_inventory").await;
    let status = ok(store.projection_status().await);
    let names: Vec<&str> = status.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["SignalTally", "SignalWatcher"],
        "the async projection and the subscription, not the inline SignalBoard"
    );
}

/// ProjectionStatusCompliance.reading_the_statuses_does_not_start_a_daemon,
/// .the_event_store_sequence_is_the_head_of_the_store_not_the_daemons_progress and
/// .no_error_is_latched_when_nothing_has_failed (no daemon has run).
#[tokio::test]
async fn status_without_a_daemon_reports_the_head_and_no_progress() {
    let (_schema, store) = signal_store("jfx_status_idle").await;
    signals(&store).await;
    let first = ok(store.projection_status().await);
    let second = ok(store.projection_status().await);
    assert_eq!(first, second, "reading the status changed nothing");
    let tally = second
        .iter()
        .find(|p| p.name == "SignalTally")
        .expect("reported");
    assert!(tally.head >= 3, "the head of the store: {tally:?}");
    assert_eq!((tally.position, tally.lag() >= 3), (0, true), "{tally:?}");
    assert_eq!(tally.owner, None, "no daemon owns it");
    let health = store.health().await;
    assert!(health.failures.is_empty(), "{health:#?}");
    assert_eq!(health.dead_letters(), 0);
}

/// ProjectionStatusCompliance.a_reachable_running_daemon_reports_the_real_shard_state:
/// progress and an owner come from the running daemon.
#[tokio::test]
async fn status_with_a_running_daemon_reports_its_progress_and_owner() {
    let (_schema, store) = signal_store("jfx_status_running").await;
    signals(&store).await;
    let daemon = caught_up(&store).await;
    let status = ok(store.projection_status().await);
    ok(daemon.stop().await);
    let tally = status
        .iter()
        .find(|p| p.name == "SignalTally")
        .expect("reported");
    assert!(tally.position > 0, "{tally:?}");
    assert!(tally.head >= tally.position, "{tally:?}");
    assert_eq!(tally.lag(), 0, "{tally:?}");
    assert!(
        tally.owner.is_some(),
        "owned by the running daemon: {tally:?}"
    );
}

// ---------------------------------------------------------------------------------------
// AlwaysEnforceConsistencyCompliance (marten-rs: `write_to_aggregate` saves a decision to
// append nothing as an assertion of the version it was made on; `fetch_for_writing`
// asserts only what it appends)
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ManifestOpened {
    destination: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ManifestItemAdded {
    count: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Manifest {
    id: Uuid,
    version: i64,
    destination: String,
    parcels: i64,
}

#[marten::apply]
impl Manifest {
    fn create(e: &ManifestOpened) -> Self {
        Manifest {
            id: Uuid::nil(),
            version: 0,
            destination: e.destination.clone(),
            parcels: 0,
        }
    }
    fn apply(&mut self, e: &ManifestItemAdded) {
        self.parcels += e.count;
    }
}

/// The string-keyed twin (stream identity is per store).
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ManifestByKey {
    id: String,
    version: i64,
    destination: String,
    parcels: i64,
}

#[marten::apply]
impl ManifestByKey {
    fn create(e: &ManifestOpened) -> Self {
        ManifestByKey {
            id: String::new(),
            version: 0,
            destination: e.destination.clone(),
            parcels: 0,
        }
    }
    fn apply(&mut self, e: &ManifestItemAdded) {
        self.parcels += e.count;
    }
}

async fn manifest_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.projection::<Manifest>(Lifecycle::Inline).build().await);
    (schema, store)
}

async fn keyed_manifest_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .projection::<ManifestByKey>(Lifecycle::Inline)
        .build()
        .await);
    (schema, store)
}

/// A manifest opened with one item of 2 parcels (version 2).
async fn a_manifest(store: &DocumentStore, stream: StreamId) {
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        stream,
        [
            PendingEvent::new(ManifestOpened {
                destination: "Bree".into(),
            }),
            PendingEvent::new(ManifestItemAdded { count: 2 }),
        ],
    ));
    ok(s.save_changes().await);
}

/// Appends from another session: what makes a version read earlier stale.
async fn sneak_in_an_event(store: &DocumentStore, stream: StreamId) {
    let mut other = store.lightweight_session();
    ok(other
        .events()
        .append(stream, [ManifestItemAdded { count: 1 }]));
    ok(other.save_changes().await);
}

/// Sneaks an event in from inside a (synchronous) decision, once.
fn sneak_in_once(store: &DocumentStore, stream: StreamId, done: &AtomicBool) {
    if done.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(sneak_in_an_event(store, stream))
    });
}

async fn stream_version(store: &DocumentStore, stream: StreamId) -> Option<i64> {
    ok(store
        .lightweight_session()
        .events()
        .fetch_stream_state(stream)
        .await)
    .map(|s| s.version)
}

fn assert_version_rejected(err: &marten::Error, expected: i64, actual: i64) {
    let kinds: Vec<&RejectionKind> = err.rejections().iter().map(|r| &r.kind).collect();
    assert_eq!(
        kinds,
        [&RejectionKind::UnexpectedStreamVersion {
            expected,
            actual: Some(actual)
        }],
        "{err}"
    );
}

/// AlwaysEnforceConsistencyCompliance.with_the_flag_off_an_empty_unit_of_work_does_not_check_the_version
/// (and .the_default_is_off): a stream fetched for writing and left alone saves however
/// far the stream has moved.
#[tokio::test]
async fn without_enforcement_an_empty_unit_of_work_does_not_check_the_version() {
    let (_schema, store) = manifest_store("jfx_consistency_off").await;
    let id = Uuid::now_v7();
    a_manifest(&store, id.into()).await;
    let mut s = store.lightweight_session();
    let w = ok(s.events().fetch_for_writing::<Manifest>(id).await);
    assert_eq!(w.version(), 2);
    drop(w);
    sneak_in_an_event(&store, id.into()).await;
    ok(s.save_changes().await);
    assert_eq!(stream_version(&store, id.into()).await, Some(3));
}

/// AlwaysEnforceConsistencyCompliance.with_the_flag_on_and_no_drift_an_empty_unit_of_work_still_commits.
#[tokio::test]
async fn an_enforced_empty_decision_without_drift_commits() {
    let (_schema, store) = manifest_store("jfx_consistency_no_drift").await;
    let id = Uuid::now_v7();
    a_manifest(&store, id.into()).await;
    let mut s = store.lightweight_session();
    let version = s
        .events()
        .write_to_aggregate(id, |m: Option<&Manifest>| {
            assert_eq!(m.map(|m| m.parcels), Some(2));
            Ok::<_, marten::Error>(Vec::<ManifestItemAdded>::new())
        })
        .await;
    assert_eq!(ok(version), 2);
    assert_eq!(stream_version(&store, id.into()).await, Some(2));
}

/// AlwaysEnforceConsistencyCompliance.with_the_flag_on_an_empty_unit_of_work_fails_on_version_drift:
/// nothing is appended, so only the assertion can fail the save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforced_empty_decision_fails_on_version_drift() {
    let (_schema, store) = manifest_store("jfx_consistency_drift").await;
    let id = Uuid::now_v7();
    a_manifest(&store, id.into()).await;
    let done = AtomicBool::new(false);
    let mut s = store.lightweight_session();
    let result = s
        .events()
        .write_to_aggregate(id, |_m: Option<&Manifest>| {
            sneak_in_once(&store, id.into(), &done);
            Ok::<_, marten::Error>(Vec::<ManifestItemAdded>::new())
        })
        .await;
    let err = result.expect_err("the stream moved after the decision's read");
    assert_version_rejected(&err, 2, 3);
}

/// AlwaysEnforceConsistencyCompliance.with_the_flag_on_and_events_present_the_write_still_lands
/// and .with_the_flag_on_and_events_present_the_version_is_still_checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforced_decision_with_events_lands_and_is_still_version_checked() {
    let (_schema, store) = manifest_store("jfx_consistency_events").await;
    let id = Uuid::now_v7();
    a_manifest(&store, id.into()).await;
    let mut s = store.lightweight_session();
    let version = s
        .events()
        .write_to_aggregate(id, |_m: Option<&Manifest>| {
            Ok::<_, marten::Error>(vec![ManifestItemAdded { count: 3 }])
        })
        .await;
    assert_eq!(ok(version), 3);
    assert_eq!(
        load::<Manifest>(&store, &id).await.map(|m| m.parcels),
        Some(5)
    );

    let done = AtomicBool::new(false);
    let result = s
        .events()
        .write_to_aggregate(id, |_m: Option<&Manifest>| {
            sneak_in_once(&store, id.into(), &done);
            Ok::<_, marten::Error>(vec![ManifestItemAdded { count: 3 }])
        })
        .await;
    let err = result.expect_err("the stream moved");
    assert_version_rejected(&err, 3, 4);
    assert_eq!(
        load::<Manifest>(&store, &id).await.map(|m| m.parcels),
        Some(6),
        "the decision's event was not written"
    );
}

/// AlwaysEnforceConsistencyCompliance.with_the_flag_on_a_never_created_stream_commits.
#[tokio::test]
async fn an_enforced_empty_decision_on_a_never_created_stream_commits() {
    let (_schema, store) = manifest_store("jfx_consistency_new").await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let version = s
        .events()
        .write_to_aggregate(id, |m: Option<&Manifest>| {
            assert!(m.is_none());
            Ok::<_, marten::Error>(Vec::<ManifestItemAdded>::new())
        })
        .await;
    assert_eq!(ok(version), 0);
    assert_eq!(stream_version(&store, id.into()).await, None);
}

/// AlwaysEnforceConsistencyCompliance.with_the_flag_on_and_no_drift_a_string_identified_stream_commits
/// and .with_the_flag_on_a_string_identified_stream_fails_on_version_drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforced_empty_decision_on_a_string_stream_commits_or_fails_on_drift() {
    let (_schema, store) = keyed_manifest_store("jfx_consistency_string").await;
    let key = format!("shipment/{}", Uuid::now_v7().simple());
    a_manifest(&store, key.clone().into()).await;
    let mut s = store.lightweight_session();
    let version = s
        .events()
        .write_to_aggregate(key.clone(), |_m: Option<&ManifestByKey>| {
            Ok::<_, marten::Error>(Vec::<ManifestItemAdded>::new())
        })
        .await;
    assert_eq!(ok(version), 2);

    let done = AtomicBool::new(false);
    let result = s
        .events()
        .write_to_aggregate(key.clone(), |_m: Option<&ManifestByKey>| {
            sneak_in_once(&store, key.clone().into(), &done);
            Ok::<_, marten::Error>(Vec::<ManifestItemAdded>::new())
        })
        .await;
    let err = result.expect_err("the stream moved");
    assert_version_rejected(&err, 2, 3);
}

/// AlwaysEnforceConsistencyCompliance.the_flag_is_scoped_to_the_stream_that_set_it: a
/// stream read for writing in the same unit of work, without an assertion, is not
/// dragged into the enforced one's check.
#[tokio::test]
async fn enforcement_is_scoped_to_the_stream_that_asked_for_it() {
    let (_schema, store) = manifest_store("jfx_consistency_scoped").await;
    let (enforced, relaxed) = (Uuid::now_v7(), Uuid::now_v7());
    a_manifest(&store, enforced.into()).await;
    a_manifest(&store, relaxed.into()).await;
    let mut s = store.lightweight_session();
    let w = ok(s.events().fetch_for_writing::<Manifest>(relaxed).await);
    assert_eq!(w.version(), 2);
    drop(w);
    sneak_in_an_event(&store, relaxed.into()).await;
    let version = s
        .events()
        .write_to_aggregate(enforced, |_m: Option<&Manifest>| {
            Ok::<_, marten::Error>(Vec::<ManifestItemAdded>::new())
        })
        .await;
    assert_eq!(ok(version), 2);
}

// ---------------------------------------------------------------------------------------
// EventMetadataCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ShipmentBooked {
    reference: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ShipmentDispatched {
    when: String,
}

fn booked(reference: &str) -> PendingEvent {
    PendingEvent::new(ShipmentBooked {
        reference: reference.into(),
    })
}

/// EventMetadataCompliance.the_envelope_is_fully_populated_after_a_round_trip and
/// .event_type_name_matches_the_registry.
#[tokio::test]
async fn the_envelope_is_fully_populated_after_a_round_trip() {
    let (_schema, b) = builder("jfx_meta_envelope");
    let store = ok(b.build().await);
    let id = Uuid::now_v7();
    let before = OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            booked("SHP-1"),
            PendingEvent::new(ShipmentDispatched { when: "now".into() }),
        ],
    ));
    ok(s.save_changes().await);
    let events = ok(s.events().fetch_stream(id).await);
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_ne!(e.id, Uuid::nil());
    assert_eq!(e.stream_id, StreamId::from(id));
    assert_eq!(e.version, 1);
    assert!(e.sequence > 0);
    assert_eq!(
        e.data_as::<ShipmentBooked>().map(|b| b.reference.as_str()),
        Some("SHP-1")
    );
    assert_eq!(e.event_type, ShipmentBooked::EVENT_TYPE);
    assert_eq!(e.stored_type, ShipmentBooked::EVENT_TYPE);
    assert!(!e.archived);
    assert!(e.timestamp > before, "server-assigned and recent");
    assert_eq!(events[1].event_type, ShipmentDispatched::EVENT_TYPE);
    assert_ne!(events[0].event_type, events[1].event_type);
    assert_ne!(events[0].id, events[1].id);
}

/// EventMetadataCompliance.version_is_per_stream_and_one_based and
/// .sequence_is_store_global_and_monotonic_across_streams.
#[tokio::test]
async fn versions_are_per_stream_and_sequences_store_global() {
    let (_schema, b) = builder("jfx_meta_order");
    let store = ok(b.event::<ShipmentBooked>().build().await);
    let (first, second, third) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream(first, [booked("A-1"), booked("A-2")]));
    ok(s.events().start_stream(second, [booked("B-1")]));
    ok(s.save_changes().await);
    ok(s.events().start_stream(third, [booked("C-1")]));
    ok(s.save_changes().await);
    let a = ok(s.events().fetch_stream(first).await);
    let b = ok(s.events().fetch_stream(second).await);
    let c = ok(s.events().fetch_stream(third).await);
    assert_eq!(a.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(b[0].version, 1, "restarts at 1 for another stream");
    assert_eq!(c[0].version, 1);
    assert!(a[1].sequence > a[0].sequence);
    assert!(c[0].sequence > b[0].sequence && c[0].sequence > a[1].sequence);
}

/// EventMetadataCompliance.timestamps_advance_with_the_stream.
#[tokio::test]
async fn timestamps_advance_with_the_stream() {
    let (_schema, b) = builder("jfx_meta_time");
    let store = ok(b.build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [booked("SHP-1")]));
    ok(s.save_changes().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    ok(s.events()
        .append(id, [ShipmentDispatched { when: "now".into() }]));
    ok(s.save_changes().await);
    let events = ok(s.events().fetch_stream(id).await);
    assert!(events[1].timestamp > events[0].timestamp);
    let mut by_time: Vec<_> = events.iter().map(|e| (e.timestamp, e.sequence)).collect();
    by_time.sort();
    let mut by_sequence: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    by_sequence.sort();
    assert_eq!(
        by_time.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        by_sequence
    );
}

/// EventMetadataCompliance.headers_survive_the_round_trip and
/// .an_event_without_headers_reports_no_header_rather_than_throwing.
#[tokio::test]
async fn headers_survive_the_round_trip_and_their_absence_is_no_error() {
    let (_schema, b) = builder("jfx_meta_headers");
    let store = ok(b.build().await);
    let (with, without) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        with,
        [booked("SHP-1")
            .with_header("origin", "compliance")
            .with_header("attempt", 3)],
    ));
    ok(s.events().start_stream(without, [booked("SHP-2")]));
    ok(s.save_changes().await);
    let stored = ok(s.events().fetch_stream(with).await);
    let headers = stored[0].headers.as_ref().expect("headers");
    assert_eq!(headers["origin"], serde_json::json!("compliance"));
    assert_eq!(headers["attempt"].to_string(), "3");
    let bare = ok(s.events().fetch_stream(without).await);
    let missing = bare[0].headers.as_ref().and_then(|h| h.get("nope"));
    assert!(missing.is_none());
}

/// EventMetadataCompliance.events_carry_the_default_tenant_in_a_single_tenant_store: the
/// row records the default tenant; marten-rs's envelope reports it as `None` ("appended
/// without one") by design.
#[tokio::test]
async fn events_carry_the_default_tenant_in_a_single_tenant_store() {
    let (schema, b) = builder("jfx_meta_tenant");
    let store = ok(b.build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [booked("SHP-1")]));
    ok(s.save_changes().await);
    let tenant: String = schema
        .raw_client()
        .await
        .query_one(
            "SELECT tenant_id FROM mt_events WHERE stream_id = $1",
            &[&id],
        )
        .await
        .expect("tenant")
        .get(0);
    assert_eq!(tenant, "*DEFAULT*");
    let stored = ok(s.events().fetch_stream(id).await);
    assert_eq!(stored[0].tenant, None, "the default tenant reads as none");
}
