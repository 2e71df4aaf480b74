//! Async daemon scenarios carried over from Marten's own daemon tests (JasperFx/marten,
//! `src/DaemonTests`, its `Subscriptions` folder aside: see
//! `tests/marten_subscription_scenarios.rs`): poison events and dead letters, retries,
//! rebuilds that meet poison events, sequence gaps left by rolled-back transactions and
//! appends still in flight, projections that delete documents, progression rows, a
//! daemon stopped mid-backlog and started again, and what `wait_for_non_stale` waits
//! for. Each test names the Marten test it comes from; the behaviour is carried over,
//! mapped onto marten-rs's API (one `PoisonPolicy` for catch-up and rebuilds, a gap-safe
//! global order instead of a high-water mark), not the code. Every wait is bounded.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::tally::{Added, Tally};
use common::{builder, ok};
use marten::daemon::PoisonPolicy;
use marten::daemon::{rebuild, wait_for_non_stale, Daemon, DaemonHooks, DaemonOptions};
use marten::prelude::*;
use marten::{ApplyError, EventProjection, OwnedDocuments, ProjectedOps, Tenancy};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

/// How long any wait on a daemon may take.
const WAIT: Duration = Duration::from_secs(15);

/// Quick polls and no retries unless a test asks for them.
fn options() -> DaemonOptions {
    DaemonOptions {
        poll_interval: Duration::from_millis(20),
        retries: 0,
        ..DaemonOptions::default()
    }
}

/// Starts a daemon with [`options`] and waits (bounded) until it has caught up.
async fn caught_up(store: &DocumentStore) -> Daemon {
    let daemon = Daemon::start(store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    daemon
}

/// Polls `check` until it holds, for at most [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every dead letter as (projection, sequence, attempts), by projection then sequence.
async fn dead_letters(schema: &TestSchema) -> Vec<(String, i64, i32)> {
    schema
        .raw_client()
        .await
        .query(
            "SELECT projection, seq_id, attempts FROM mt_dead_letters ORDER BY projection, seq_id",
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The sequences of every stored event in the daemon's (gap-safe) global order.
async fn global_order(schema: &TestSchema) -> Vec<i64> {
    schema
        .raw_client()
        .await
        .query("SELECT seq_id FROM mt_events ORDER BY tx_id, seq_id", &[])
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The recorded position (`last_seq`) of progression row `name`, if there is one.
async fn position(schema: &TestSchema, name: &str) -> Option<i64> {
    schema
        .raw_client()
        .await
        .query_opt(
            "SELECT last_seq FROM mt_event_progression WHERE name = $1",
            &[&name],
        )
        .await
        .expect("progression")
        .map(|r| r.get(0))
}

/// Each async projection's (position, head), by name.
async fn status(store: &DocumentStore) -> BTreeMap<String, (i64, i64)> {
    ok(store.projection_status().await)
        .into_iter()
        .map(|s| (s.name, (s.position, s.head)))
        .collect()
}

async fn load<D: marten::PgDocument>(store: &DocumentStore, id: &D::Id) -> Option<D> {
    ok(store.query_session().load::<D>(id).await)
}

// ---------------------------------------------------------------------------------------
// Poison events: skipped, dead-lettered, retried
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct NameEvent {
    name: String,
}

fn is_bad(name: &str) -> bool {
    name.to_lowercase().contains("bad")
}

/// One document per accepted name (Marten's `ErrorRejectingEventProjection`).
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct NamedDocument {
    id: Uuid,
    name: String,
}

struct NamedDocuments;

impl EventProjection for NamedDocuments {
    fn name(&self) -> &'static str {
        "NamedDocuments"
    }
    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<NameEvent>() {
            if is_bad(&e.name) {
                return Err(ApplyError::new(format!("bad name {}", e.name)));
            }
            ops.store(NamedDocument {
                id: event.id,
                name: e.name.clone(),
            });
        }
        Ok(())
    }
    fn owned_documents(&self, owned: &mut OwnedDocuments) {
        owned.document::<NamedDocument>();
    }
}

/// Names grouped by their first letter (Marten's `CollateNames`): a bad name starting
/// with `J` fails.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(numeric)]
struct NamesByLetter {
    id: String,
    names: Vec<String>,
}

fn collate(names: &mut Vec<String>, name: &str) -> Result<(), String> {
    if is_bad(name) && name.starts_with('J') {
        return Err(format!("bad name {name}"));
    }
    names.push(name.to_owned());
    Ok(())
}

#[marten::apply]
impl NamesByLetter {
    fn identity(e: &NameEvent) -> String {
        e.name.chars().take(1).collect()
    }
    fn create(e: &NameEvent) -> Result<Self, String> {
        let mut names = Vec::new();
        collate(&mut names, &e.name)?;
        Ok(NamesByLetter {
            id: String::new(),
            names,
        })
    }
    fn apply(&mut self, e: &NameEvent) -> Result<(), String> {
        collate(&mut self.names, &e.name)
    }
}

const THE_NAMES: [&str; 15] = [
    "Jane", "Jill", "Jack", "JohnBad", "JakeBad", "JillBad", "JohnBad", "Derrick", "Daniel",
    "Donald", "DonBad", "Bob", "Beck", "BadName", "Jeremy",
];

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Marten `when_skipping_events_in_daemon` (`skip_bad_events_in_event_projection`,
/// `skip_bad_events_in_aggregate_projection`, `see_the_dead_letter_events`,
/// `the_shards_should_still_be_running`) and `dead_letter_count_read_tests`
/// (`fetch_and_count_dead_letter_events`): an event projection and a multi-stream
/// projection over one stream of 15 names skip exactly the events their apply rejects
/// (after its retry), each recorded once as a dead letter of its own projection with its
/// sequence; the health check counts them per projection, and both projections keep
/// running: a name appended afterwards is projected by both.
#[tokio::test]
async fn poison_events_are_skipped_and_dead_lettered_per_projection() {
    let (schema, b) = builder("mdaemon_skip_names");
    let store = ok(b
        .event::<NameEvent>()
        .event_projection(NamedDocuments, Lifecycle::Async)
        .multi_stream_projection::<NamesByLetter>(Lifecycle::Async)
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let events: Vec<NameEvent> = THE_NAMES
        .iter()
        .map(|n| NameEvent { name: (*n).into() })
        .collect();
    ok(s.events().start_stream(stream, events));
    ok(s.save_changes().await);

    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            retries: 1,
            ..options()
        },
    );
    ok(daemon.wait_for_non_stale(WAIT).await);

    let named = ok(store
        .query_session()
        .query::<NamedDocument>()
        .to_list()
        .await);
    let good: Vec<String> = THE_NAMES
        .iter()
        .filter(|n| !is_bad(n))
        .map(|n| (*n).to_owned())
        .collect();
    assert_eq!(
        sorted(named.into_iter().map(|d| d.name).collect()),
        sorted(good)
    );
    let j = load::<NamesByLetter>(&store, &"J".to_owned())
        .await
        .expect("J names");
    assert_eq!(sorted(j.names), ["Jack", "Jane", "Jeremy", "Jill"]);
    let d = load::<NamesByLetter>(&store, &"D".to_owned())
        .await
        .expect("D names");
    assert_eq!(sorted(d.names), ["Daniel", "Derrick", "DonBad", "Donald"]);

    // The expected dead letters, from the stored events.
    let stored = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await);
    let name_of = |e: &EventEnvelope| e.data_as::<NameEvent>().expect("a name").name.clone();
    let rejected_docs: Vec<i64> = stored
        .iter()
        .filter(|e| is_bad(&name_of(e)))
        .map(|e| e.sequence)
        .collect();
    let rejected_letters: Vec<i64> = stored
        .iter()
        .filter(|e| is_bad(&name_of(e)) && name_of(e).starts_with('J'))
        .map(|e| e.sequence)
        .collect();
    assert_eq!((rejected_docs.len(), rejected_letters.len()), (6, 4));
    let mut expected: Vec<(String, i64, i32)> = Vec::new();
    expected.extend(
        rejected_docs
            .iter()
            .map(|s| ("NamedDocuments".into(), *s, 2)),
    );
    expected.extend(
        rejected_letters
            .iter()
            .map(|s| ("NamesByLetter".into(), *s, 2)),
    );
    expected.sort();
    assert_eq!(dead_letters(&schema).await, expected);

    let health = store.health().await;
    let counts: BTreeMap<String, i64> = health
        .projections
        .iter()
        .map(|p| (p.name.clone(), p.dead_letters))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([("NamedDocuments".into(), 6), ("NamesByLetter".into(), 4)])
    );

    // Still running: a later name reaches both projections.
    let mut s = store.lightweight_session();
    ok(s.events().append(
        stream,
        [NameEvent {
            name: "Jules".into(),
        }],
    ));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    let j = load::<NamesByLetter>(&store, &"J".to_owned())
        .await
        .expect("J names");
    assert_eq!(sorted(j.names), ["Jack", "Jane", "Jeremy", "Jill", "Jules"]);
    assert_eq!(
        ok(store.query_session().query::<NamedDocument>().count().await),
        10
    );
    assert_eq!(dead_letters(&schema).await.len(), 10, "no new dead letter");
    ok(daemon.stop().await);
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct IssueCountIncremented {
    user: Uuid,
}

/// Failed applies of [`UserIssueCounter`] (only the first two attempts fail).
static COUNTER_ATTEMPTS: AtomicUsize = AtomicUsize::new(0);

fn counter_attempt() -> Result<(), String> {
    if COUNTER_ATTEMPTS.fetch_add(1, Ordering::SeqCst) < 2 {
        return Err("something has gone terribly wrong".into());
    }
    Ok(())
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(numeric)]
struct UserIssueCounter {
    id: Uuid,
    count: i64,
}

#[marten::apply]
impl UserIssueCounter {
    fn identity(e: &IssueCountIncremented) -> Uuid {
        e.user
    }
    fn create(_e: &IssueCountIncremented) -> Result<Self, String> {
        counter_attempt()?;
        Ok(UserIssueCounter {
            id: Uuid::nil(),
            count: 1,
        })
    }
    fn apply(&mut self, _e: &IssueCountIncremented) -> Result<(), String> {
        counter_attempt()?;
        self.count += 1;
        Ok(())
    }
}

/// Marten `Bug_2074_recovering_from_errors.do_not_blow_up`: a multi-stream projection
/// whose apply fails on its first two attempts and then works is retried, not
/// dead-lettered: every one of 300 events is counted once and no dead letter is recorded.
#[tokio::test]
async fn an_apply_failing_twice_then_working_is_retried_and_nothing_is_lost() {
    let (schema, b) = builder("mdaemon_recovering");
    let store = ok(b
        .multi_stream_projection::<UserIssueCounter>(Lifecycle::Async)
        .build()
        .await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            retries: 3,
            ..options()
        },
    );
    let user = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let events: Vec<IssueCountIncremented> =
        (0..300).map(|_| IssueCountIncremented { user }).collect();
    ok(s.events().append(user, events));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    let counter = load::<UserIssueCounter>(&store, &user)
        .await
        .expect("counted");
    assert_eq!(counter.count, 300);
    assert!(
        COUNTER_ATTEMPTS.load(Ordering::SeqCst) >= 302,
        "the two failures happened"
    );
    assert!(dead_letters(&schema).await.is_empty());
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Explodes {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Fragile {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Fragile {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
    fn apply_explodes(&mut self, _e: &Explodes) -> Result<(), String> {
        Err("boom".into())
    }
}

/// Marten `error_handling_defaults.default_policies`: by default the daemon skips an
/// event whose apply keeps failing. marten-rs's defaults: three retries, then a dead
/// letter (four attempts), and the same policy during a rebuild (marten-rs has one
/// policy where Marten has a stricter one for rebuilds).
#[tokio::test]
async fn by_default_a_failing_event_is_retried_three_times_then_dead_lettered() {
    let defaults = DaemonOptions::default();
    assert_eq!(
        (defaults.retries, defaults.poison),
        (3, PoisonPolicy::DeadLetter)
    );
    let (schema, b) = builder("mdaemon_defaults");
    let store = ok(b.projection::<Fragile>(Lifecycle::Async).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(Added { n: 1 }),
            PendingEvent::new(Explodes {}),
            PendingEvent::new(Added { n: 2 }),
        ],
    ));
    ok(s.save_changes().await);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            poll_interval: Duration::from_millis(20),
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(WAIT).await);
    let fragile = load::<Fragile>(&store, &id).await.expect("projected");
    assert_eq!((fragile.total, fragile.version), (3, 3));
    let poison = ok(store.lightweight_session().events().fetch_stream(id).await)[1].sequence;
    assert_eq!(
        dead_letters(&schema).await,
        [("Fragile".to_owned(), poison, 4)]
    );
    ok(rebuild(&store, "Fragile").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(load::<Fragile>(&store, &id).await, Some(fragile));
    assert_eq!(
        dead_letters(&schema).await,
        [("Fragile".to_owned(), poison, 4)],
        "the rebuild cleared the first run's dead letter and met the event again"
    );
}

// ---------------------------------------------------------------------------------------
// Rebuilds meeting events that became poison since the first pass
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Departed {
    from: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Travelled {
    km: i64,
}

/// Marten's `FailingEvent`: its apply fails while its run is listed in [`FAILING_RUNS`].
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Checkpoint {
    run: String,
    at: i64,
}

static FAILING_RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn failing(run: &str) -> bool {
    FAILING_RUNS.lock().expect("runs").iter().any(|r| r == run)
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Journey {
    id: Uuid,
    version: i64,
    from: String,
    km: i64,
    legs: i64,
}

#[marten::apply]
impl Journey {
    fn create(e: &Departed) -> Self {
        Journey {
            from: e.from.clone(),
            ..Journey::default()
        }
    }
    fn apply(&mut self, e: &Travelled) {
        self.km += e.km;
        self.legs += 1;
    }
    fn apply_checkpoint(&mut self, e: &Checkpoint) -> Result<(), String> {
        if failing(&e.run) {
            return Err("you shall not pass".into());
        }
        Ok(())
    }
}

/// Six journeys with checkpoints between their legs (never a stream's last event), each
/// started in a save of its own; returns the streams and how many checkpoints there are.
async fn journeys(store: &DocumentStore, run: &str) -> (Vec<Uuid>, usize) {
    let mut streams = Vec::new();
    let mut checkpoints = 0;
    for i in 0..6i64 {
        let id = Uuid::now_v7();
        let mut events = vec![PendingEvent::new(Departed {
            from: format!("city {i}"),
        })];
        for leg in 0..=i {
            if leg % 2 == 1 {
                events.push(PendingEvent::new(Checkpoint {
                    run: run.to_owned(),
                    at: leg,
                }));
                checkpoints += 1;
            }
            events.push(PendingEvent::new(Travelled { km: 10 * leg + i }));
        }
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(id, events));
        ok(s.save_changes().await);
        streams.push(id);
    }
    (streams, checkpoints)
}

/// Each journey's document and its live fold.
async fn journey_docs_and_folds(
    store: &DocumentStore,
    streams: &[Uuid],
) -> Vec<(Option<Journey>, Option<Journey>)> {
    let mut s = store.lightweight_session();
    let mut out = Vec::new();
    for id in streams {
        let live: Option<Journey> = ok(s.events().aggregate_stream(*id).await);
        out.push((load::<Journey>(store, id).await, live));
    }
    out
}

/// Marten `rebuilds_with_serialization_or_poison_pill_events.rebuild_the_projection_happy_path`
/// and `.rebuild_the_projection_skip_failed_events`: the first pass projects every
/// journey; events whose apply fails by the time of a rebuild are dead-lettered (one
/// each) and the rebuild still gives every other event's state: each document equals its
/// live fold once the failures are lifted.
#[tokio::test]
async fn a_rebuild_dead_letters_events_whose_apply_now_fails_and_rebuilds_the_rest() {
    let (schema, b) = builder("mdaemon_rebuild_apply_fail");
    let store = ok(b.projection::<Journey>(Lifecycle::Async).build().await);
    let run = schema.name().to_owned();
    let (streams, checkpoints) = journeys(&store, &run).await;
    assert!(checkpoints > 0);
    let daemon = caught_up(&store).await;
    for (doc, live) in journey_docs_and_folds(&store, &streams).await {
        assert!(doc.is_some());
        assert_eq!(doc, live, "the happy path");
    }
    assert!(dead_letters(&schema).await.is_empty());

    FAILING_RUNS.lock().expect("runs").push(run.clone());
    ok(rebuild(&store, "Journey").await);
    let waited = daemon.wait_for_non_stale(WAIT).await;
    FAILING_RUNS.lock().expect("runs").retain(|r| *r != run);
    ok(waited);
    ok(daemon.stop().await);

    let letters = dead_letters(&schema).await;
    assert_eq!(letters.len(), checkpoints, "{letters:?}");
    assert!(letters.iter().all(|(p, _, a)| p == "Journey" && *a == 1));
    for (doc, live) in journey_docs_and_folds(&store, &streams).await {
        assert!(doc.is_some());
        assert_eq!(doc, live, "rebuilt without the failing events");
    }
}

/// Marten `rebuilds_with_serialization_or_poison_pill_events.rebuild_the_projection_skip_serialization_failures`:
/// events whose stored body no longer deserializes by the time of a rebuild are
/// dead-lettered once each, under their stored type name, and the rebuild gives every
/// other event's state (the documents of the first pass, as the checkpoints change
/// nothing).
#[tokio::test]
async fn a_rebuild_dead_letters_events_that_no_longer_deserialize_and_rebuilds_the_rest() {
    let (schema, b) = builder("mdaemon_rebuild_serde_fail");
    let store = ok(b.projection::<Journey>(Lifecycle::Async).build().await);
    let (streams, checkpoints) = journeys(&store, "serde").await;
    let daemon = caught_up(&store).await;
    let mut before = Vec::new();
    for (doc, live) in journey_docs_and_folds(&store, &streams).await {
        assert!(doc.is_some());
        assert_eq!(doc, live);
        before.push(doc);
    }
    let corrupted = schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_events SET data = '{\"run\": \"serde\", \"at\": \"not a number\"}' \
             WHERE type = 'checkpoint'",
            &[],
        )
        .await
        .expect("corrupt the checkpoints");
    assert_eq!(usize::try_from(corrupted).ok(), Some(checkpoints));

    ok(rebuild(&store, "Journey").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);

    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT projection, event_type, attempts FROM mt_dead_letters",
            &[],
        )
        .await
        .expect("dead letters");
    assert_eq!(rows.len(), checkpoints);
    for r in &rows {
        let row: (String, String, i32) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(row, ("Journey".to_owned(), "checkpoint".to_owned(), 1));
    }
    for (id, expected) in streams.iter().zip(before) {
        assert_eq!(load::<Journey>(&store, id).await, expected);
    }
}

// ---------------------------------------------------------------------------------------
// One stream's poison event and its neighbours in the batch
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AmountChanged {
    delta: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct AccountReadModel {
    id: Uuid,
    version: i64,
    opened: bool,
    total: i64,
}

#[marten::apply]
impl AccountReadModel {
    fn create(_e: &AccountOpened) -> Self {
        AccountReadModel {
            opened: true,
            ..AccountReadModel::default()
        }
    }
    fn apply(&mut self, e: &AmountChanged) -> Result<(), String> {
        if !self.opened {
            return Err("update received before creation".into());
        }
        self.total += e.delta;
        Ok(())
    }
}

/// Marten `Bug_4730_double_apply_with_out_of_order_stream` (with the aggregate cache off
/// and on): a stream whose update comes before its creation fails in the same batch as a
/// correctly ordered control stream; the poison event is dead-lettered and the batch
/// planned again, and the control stream's update is applied exactly once.
#[tokio::test]
async fn a_poisoned_stream_does_not_double_apply_its_neighbour_in_the_batch() {
    for cache in [0usize, 1000] {
        let (schema, b) = builder("mdaemon_out_of_order");
        let store = ok(b
            .aggregate_cache(cache)
            .projection::<AccountReadModel>(Lifecycle::Async)
            .build()
            .await);
        let (out_of_order, control) = (Uuid::now_v7(), Uuid::now_v7());
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(
            out_of_order,
            [
                PendingEvent::new(AmountChanged { delta: 12345 }),
                PendingEvent::new(AccountOpened {}),
            ],
        ));
        ok(s.events().start_stream(
            control,
            [
                PendingEvent::new(AccountOpened {}),
                PendingEvent::new(AmountChanged { delta: 12345 }),
            ],
        ));
        ok(s.save_changes().await);
        let daemon = caught_up(&store).await;
        ok(daemon.stop().await);

        let control_doc = load::<AccountReadModel>(&store, &control).await;
        assert_eq!(
            control_doc.map(|a| (a.total, a.version)),
            Some((12345, 2)),
            "cache {cache}"
        );
        let other = load::<AccountReadModel>(&store, &out_of_order).await;
        assert_eq!(
            other.map(|a| (a.opened, a.total, a.version)),
            Some((true, 0, 2)),
            "cache {cache}: the creation after the skipped update"
        );
        let poison = ok(store
            .lightweight_session()
            .events()
            .fetch_stream(out_of_order)
            .await)[0]
            .sequence;
        assert_eq!(
            dead_letters(&schema).await,
            [("AccountReadModel".to_owned(), poison, 1)],
            "cache {cache}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// A write the database refuses
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Labelled {
    label: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct FailsOnSave {
    id: Uuid,
    version: i64,
    label: String,
}

#[marten::apply]
impl FailsOnSave {
    fn create(e: &Labelled) -> Self {
        FailsOnSave {
            label: e.label.clone(),
            ..FailsOnSave::default()
        }
    }
}

/// Marten `wait_for_non_stale_data_error_cases.get_a_good_command_exception` and
/// `Bug_catching_up_command_errors.should_catch_marten_command_exceptions`: a batch whose
/// document write the database refuses (here a CHECK constraint added by hand). Marten
/// retries it and then pauses the projection; here, after the retries, the batch is
/// committed in runs to find the event whose write is refused, and the poison policy
/// (dead letter, by default) takes it: the other event's document commits, the refused
/// one is recorded once with the constraint's name, and the daemon catches up.
#[tokio::test]
async fn a_write_the_database_refuses_meets_the_poison_policy() {
    let (schema, b) = builder("mdaemon_command_error");
    let store = ok(b.projection::<FailsOnSave>(Lifecycle::Async).build().await);
    // The document table, made by a first write, then the constraint.
    let seed = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.store(FailsOnSave {
        id: seed,
        version: 1,
        label: "seed".into(),
    }));
    ok(s.save_changes().await);
    ok(s.delete::<FailsOnSave>(&seed));
    ok(s.save_changes().await);
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "ALTER TABLE mt_doc_failsonsave ADD CONSTRAINT label_required CHECK (data->>'label' <> '')",
    )
    .await
    .expect("constraint");

    let (fine, refused) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        fine,
        [Labelled {
            label: "fine".into(),
        }],
    ));
    ok(s.events().start_stream(
        refused,
        [Labelled {
            label: String::new(),
        }],
    ));
    ok(s.save_changes().await);

    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(
        load::<FailsOnSave>(&store, &fine).await.map(|d| d.label),
        Some("fine".into())
    );
    assert!(load::<FailsOnSave>(&store, &refused).await.is_none());
    assert!(
        position(&schema, "FailsOnSave").await.unwrap_or(0) > 0,
        "moved past it"
    );
    let letters = dead_letters(&schema).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0].0.as_str(), letters[0].2), ("FailsOnSave", 1));
    let error: String = raw
        .query_one("SELECT error FROM mt_dead_letters", &[])
        .await
        .expect("the dead letter")
        .get(0);
    assert!(error.contains("label_required"), "{error}");
}

// ---------------------------------------------------------------------------------------
// Projections that delete documents
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TripStarted {
    day: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Travel {
    km: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TripAborted {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Breakdown {
    critical: bool,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct VacationOver {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Trip {
    id: Uuid,
    version: i64,
    started_on: i64,
    traveled: i64,
}

#[marten::apply]
impl Trip {
    fn create(e: &TripStarted) -> Self {
        Trip {
            started_on: e.day,
            ..Trip::default()
        }
    }
    fn apply(&mut self, e: &Travel) {
        self.traveled += e.km;
    }
    fn should_delete(&self, _e: &TripAborted) -> bool {
        true
    }
    fn should_delete(&self, e: &Breakdown) -> bool {
        e.critical
    }
    fn should_delete(&self, _e: &VacationOver) -> bool {
        self.traveled > 1000
    }
}

/// Marten `build_aggregate_projection.delete_when_delete_event_happens`,
/// `.conditional_deletes_through_lambda_conditions_on_event_only` and
/// `.conditional_deletes_through_lambda_conditions_on_aggregate`: an async aggregate's
/// document is deleted by an abort, by a breakdown only when it is critical, and by the
/// end of a vacation only when the trip went over 1,000 km; every other trip keeps its
/// document, equal to its live fold.
#[tokio::test]
async fn async_aggregates_delete_documents_on_delete_events_and_conditions() {
    let (_schema, b) = builder("mdaemon_trip_deletes");
    let store = ok(b.projection::<Trip>(Lifecycle::Async).build().await);
    let start = |id: Uuid, km: i64| {
        let store = store.clone();
        async move {
            let mut s = store.lightweight_session();
            ok(s.events().start_stream(
                id,
                [
                    PendingEvent::new(TripStarted { day: 3 }),
                    PendingEvent::new(Travel { km }),
                    PendingEvent::new(Travel { km }),
                ],
            ));
            ok(s.save_changes().await);
        }
    };
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let [aborted, kept, minor, critical, short, long] =
        [ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]];
    for (id, km) in [
        (aborted, 10),
        (kept, 20),
        (minor, 30),
        (critical, 40),
        (short, 75),
        (long, 1250),
    ] {
        start(id, km).await;
    }
    let mut s = store.lightweight_session();
    ok(s.events().append(aborted, [TripAborted {}]));
    ok(s.save_changes().await);
    let daemon = caught_up(&store).await;
    assert!(load::<Trip>(&store, &aborted).await.is_none());
    for id in [kept, minor, critical, short, long] {
        assert!(load::<Trip>(&store, &id).await.is_some());
    }

    let mut s = store.lightweight_session();
    ok(s.events().append(minor, [Breakdown { critical: false }]));
    ok(s.events().append(critical, [Breakdown { critical: true }]));
    ok(s.events().append(short, [VacationOver {}]));
    ok(s.events().append(long, [VacationOver {}]));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);

    let present: Vec<bool> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(load::<Trip>(&store, id).await.is_some());
        }
        v
    };
    assert_eq!(present, [false, true, true, false, true, false]);
    let mut s = store.lightweight_session();
    for id in &ids {
        let live: Option<Trip> = ok(s.events().aggregate_stream(*id).await);
        assert_eq!(load::<Trip>(&store, id).await, live, "stream {id}");
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TicketCreated {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TicketDeleted {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Ticket {
    id: Uuid,
    version: i64,
    name: String,
}

#[marten::apply]
impl Ticket {
    fn create(e: &TicketCreated) -> Self {
        Ticket {
            name: e.name.clone(),
            ..Ticket::default()
        }
    }
    fn should_delete(&self, _e: &TicketDeleted) -> bool {
        true
    }
}

/// Marten `Bug_2201_out_of_order_exception_with_hard_deletes.should_complete_projection_when_only_hard_deletes_exist_in_batch`:
/// after 300 tickets are projected, a batch whose only event deletes one completes: the
/// daemon catches up, that ticket's document is gone, the others stay, and the
/// projection's position is the store's head.
#[tokio::test]
async fn a_batch_holding_only_a_delete_completes_and_deletes() {
    let (_schema, b) = builder("mdaemon_only_delete");
    let store = ok(b.projection::<Ticket>(Lifecycle::Async).build().await);
    let daemon = Daemon::start(&store, options());
    let ids: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    for (i, id) in ids.iter().enumerate() {
        ok(s.events().start_stream(
            *id,
            [TicketCreated {
                name: format!("Ticket #{i}"),
            }],
        ));
    }
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(
        ok(store.query_session().query::<Ticket>().count().await),
        300
    );

    let last = ids[299];
    let mut s = store.lightweight_session();
    ok(s.events().append(last, [TicketDeleted {}]));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert!(load::<Ticket>(&store, &last).await.is_none());
    assert_eq!(
        load::<Ticket>(&store, &ids[298]).await.map(|t| t.name),
        Some("Ticket #298".to_owned())
    );
    assert_eq!(
        ok(store.query_session().query::<Ticket>().count().await),
        299
    );
    let (pos, head) = status(&store).await["Ticket"];
    assert_eq!(pos, head);
}

/// [`Ticket`] of conjoined events.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
#[document(tenancy = "conjoined")]
struct TenantTicket {
    id: Uuid,
    version: i64,
    name: String,
}

#[marten::apply]
impl TenantTicket {
    fn create(e: &TicketCreated) -> Self {
        TenantTicket {
            name: e.name.clone(),
            ..TenantTicket::default()
        }
    }
    fn should_delete(&self, _e: &TicketDeleted) -> bool {
        true
    }
}

/// Marten `Bug_2201_out_of_order_exception_with_hard_deletes.should_complete_projection_when_only_hard_deletes_exist_in_batch`
/// in its own setting, conjoined events of a tenant: the batch holding only the delete
/// completes and deletes (as in the single-tenant port above), and the projection then
/// reports the store's head as its position, as it does without tenants.
#[tokio::test]
async fn with_conjoined_events_a_caught_up_projection_reports_the_head() {
    let (schema, b) = builder("mdaemon_only_delete_tenant");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<TenantTicket>(Lifecycle::Async)
        .build()
        .await);
    let tenant = Uuid::now_v7().to_string();
    let daemon = Daemon::start(&store, options());
    let ids: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let mut s = ok(store.lightweight_session_for(tenant.as_str()));
    for (i, id) in ids.iter().enumerate() {
        ok(s.events().start_stream(
            *id,
            [TicketCreated {
                name: format!("Ticket #{i}"),
            }],
        ));
    }
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    let mut s = ok(store.lightweight_session_for(tenant.as_str()));
    ok(s.events().append(ids[99], [TicketDeleted {}]));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    let mut q = ok(store.query_session_for(tenant.as_str()));
    assert!(ok(q.load::<TenantTicket>(&ids[99]).await).is_none());
    assert_eq!(ok(q.query::<TenantTicket>().count().await), 99);

    let (pos, head) = status(&store).await["TenantTicket"];
    assert_eq!(Some(&head), global_order(&schema).await.iter().max());
    assert_eq!(pos, head, "caught up, the projection stands at the head");
    let lag = store.health().await.max_lag();
    assert_eq!(lag, 0, "no lag once caught up");
}

/// The status of a projection of conjoined events has each tenant's, measured against
/// that tenant's events; the projection reports the tenant furthest behind, and health
/// that tenant's lag.
#[tokio::test]
async fn with_conjoined_events_the_status_reports_each_tenant_and_the_furthest_behind() {
    let (_schema, b) = builder("mdaemon_status_tenants");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<TenantTicket>(Lifecycle::Async)
        .build()
        .await);
    let tickets = async |tenant: &str, n: usize| {
        let mut s = ok(store.lightweight_session_for(tenant));
        for i in 0..n {
            ok(s.events().start_stream(
                Uuid::now_v7(),
                [TicketCreated {
                    name: format!("{tenant} #{i}"),
                }],
            ));
        }
        ok(s.save_changes().await);
    };
    tickets("blue", 2).await;
    tickets("red", 2).await;
    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    // Red's events go on without the daemon; blue's head is not the store's.
    tickets("red", 3).await;

    let all = ok(store.projection_status().await);
    assert_eq!(all.len(), 1, "one status per projection: {all:?}");
    let p = &all[0];
    let tenants: Vec<_> = p
        .tenants
        .iter()
        .map(|t| (t.tenant.as_deref(), t.position == t.head, t.lag()))
        .collect();
    assert_eq!(
        tenants,
        [(Some("blue"), true, 0), (Some("red"), false, 3)],
        "{p:?}"
    );
    assert_eq!((p.tenant.as_deref(), p.lag()), (Some("red"), 3), "{p:?}");
    assert_eq!(
        (p.position, p.head),
        (p.tenants[1].position, p.tenants[1].head)
    );
    assert_eq!(store.health().await.max_lag(), 3);
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DeletableCreated {
    id: Uuid,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DeletableRemoved {
    id: Uuid,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Deletable {
    id: Uuid,
    created_by: Uuid,
}

struct DeletableEventProjection;

impl EventProjection for DeletableEventProjection {
    fn name(&self) -> &'static str {
        "DeletableEventProjection"
    }
    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<DeletableCreated>() {
            ops.store(Deletable {
                id: e.id,
                created_by: event.id,
            });
        }
        if let Some(e) = event.data_as::<DeletableRemoved>() {
            ops.delete::<Deletable>(e.id);
        }
        Ok(())
    }
    fn owned_documents(&self, owned: &mut OwnedDocuments) {
        owned.document::<Deletable>();
    }
}

/// Marten `Bug_DeleteWhere_Operations_Should_Respect_Tenancy.ShouldDelete_ForDeleteCondition_AfterRebuild`
/// (marten-rs's projected operations delete by id, not by a condition): with conjoined
/// tenancy, an event projection deletes the documents its tenant's later events remove,
/// leaves another tenant's documents of the same ids alone, and a rebuild of the
/// projection ends in the same state.
#[tokio::test]
async fn an_event_projection_deleting_documents_keeps_them_deleted_after_a_rebuild() {
    let (_schema, b) = builder("mdaemon_delete_rebuild");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .event::<DeletableCreated>()
        .event::<DeletableRemoved>()
        .event_projection(DeletableEventProjection, Lifecycle::Async)
        .document::<Deletable>()
        .build()
        .await);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    for tenant in ["test", "other"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events()
            .start_stream(Uuid::now_v7(), [DeletableCreated { id: a }]));
        ok(s.events()
            .start_stream(Uuid::now_v7(), [DeletableCreated { id: b }]));
        ok(s.save_changes().await);
    }
    let mut s = ok(store.lightweight_session_for("test"));
    ok(s.events()
        .start_stream(Uuid::now_v7(), [DeletableRemoved { id: a }]));
    ok(s.events()
        .start_stream(Uuid::now_v7(), [DeletableRemoved { id: b }]));
    ok(s.save_changes().await);

    let present = |tenant: &'static str| {
        let store = store.clone();
        async move {
            let mut q = ok(store.query_session_for(tenant));
            let docs = ok(q.load_many::<Deletable>(&[a, b]).await);
            docs.len()
        }
    };
    let daemon = caught_up(&store).await;
    assert_eq!((present("test").await, present("other").await), (0, 2));
    ok(rebuild(&store, "DeletableEventProjection").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(
        (present("test").await, present("other").await),
        (0, 2),
        "after the rebuild"
    );
}

// ---------------------------------------------------------------------------------------
// Sequence gaps and appends in flight
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Numbered {
    n: i64,
}

/// Every `Numbered` event's sequence, in the order the daemon folded them (Marten's
/// `Bug4953GapView`).
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(numeric)]
struct SeqView {
    id: String,
    sequences: Vec<i64>,
}

#[marten::apply]
impl SeqView {
    fn identity(_e: &Numbered) -> String {
        "all".into()
    }
    fn create(_e: &Numbered, meta: &EventEnvelope) -> Self {
        SeqView {
            id: String::new(),
            sequences: vec![meta.sequence],
        }
    }
    fn apply(&mut self, _e: &Numbered, meta: &EventEnvelope) {
        self.sequences.push(meta.sequence);
    }
}

async fn seq_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .multi_stream_projection::<SeqView>(Lifecycle::Async)
        .build()
        .await);
    (schema, store)
}

/// Starts a stream of one `Numbered` event, in a save of its own.
async fn append_numbered(store: &DocumentStore, n: i64) {
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(Uuid::now_v7(), [Numbered { n }]));
    ok(s.save_changes().await);
}

/// Starts a stream of one event on `raw` inside a transaction left open: it draws a
/// sequence number and takes a transaction id, as a save in flight does.
async fn open_append(raw: &marten::tokio_postgres::Client) {
    let id = Uuid::now_v7();
    raw.batch_execute("BEGIN").await.expect("begin");
    raw.execute(
        "INSERT INTO mt_streams (id, version) VALUES ($1, 1)",
        &[&id],
    )
    .await
    .expect("stream");
    raw.execute(
        "INSERT INTO mt_events (id, stream_id, version, type, data) \
         VALUES (gen_random_uuid(), $1, 1, 'numbered', '{\"n\": -1}')",
        &[&id],
    )
    .await
    .expect("event");
}

/// An append that rolls back: its sequence number is never used.
async fn rolled_back_append(raw: &marten::tokio_postgres::Client) {
    open_append(raw).await;
    raw.batch_execute("ROLLBACK").await.expect("rollback");
}

async fn seq_view(store: &DocumentStore) -> Vec<i64> {
    load::<SeqView>(store, &"all".to_owned())
        .await
        .map(|v| v.sequences)
        .unwrap_or_default()
}

/// The number of holes in a sorted list of sequences (and before its first).
fn holes(sequences: &[i64]) -> usize {
    let mut sorted = sequences.to_vec();
    sorted.sort_unstable();
    let mut last = 0;
    let mut holes = 0;
    for s in sorted {
        if s != last + 1 {
            holes += 1;
        }
        last = s;
    }
    holes
}

/// Marten `Bug_5108_dead_gap_span_clears_in_one_cycle.a_field_of_dead_gaps_is_cleared_by_a_single_skip`,
/// `HighWaterDetectorTests` (`starting_from_first_detection_some_gaps_with_nonzero_buffer`,
/// `look_for_safe_harbor_time_if_there_are_gaps_between_highest_assigned_event_and_the_sequence`)
/// and `Bug_4953_outstanding_sequence_gap_skips.safe_zone_detection_skips_a_dead_gap_after_the_threshold_and_records_it`:
/// sequence numbers of rolled-back appends, scattered through the store and as a tail of
/// numbers reserved and never used, hold nothing up. marten-rs has no high-water mark
/// to skip them with: its global order is gap-safe by transaction, so the daemon, both
/// catching up and while running, folds exactly the committed events, in order, and
/// stands at the head.
#[tokio::test]
async fn sequence_gaps_of_rolled_back_appends_hold_nothing_up() {
    let (schema, store) = seq_store("mdaemon_dead_gaps").await;
    let raw = schema.raw_client().await;
    let dead = [6, 8, 11, 12, 17, 24, 25, 31, 36];
    // The first half before the daemon starts (it catches up over them), the second
    // while it runs.
    for i in 0..20 {
        if dead.contains(&i) {
            rolled_back_append(&raw).await;
        }
        append_numbered(&store, i).await;
    }
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 7,
            ..options()
        },
    );
    ok(daemon.wait_for_non_stale(WAIT).await);
    for i in 20..40 {
        if dead.contains(&i) {
            rolled_back_append(&raw).await;
        }
        append_numbered(&store, i).await;
    }
    // A tail of reserved numbers no event will ever use, then more events.
    raw.batch_execute(
        "SELECT setval('mt_events_sequence', (SELECT last_value FROM mt_events_sequence) + 20)",
    )
    .await
    .expect("reserve a dead tail");
    for i in 40..45 {
        append_numbered(&store, i).await;
    }
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);

    let stored = global_order(&schema).await;
    assert_eq!(stored.len(), 45);
    assert!(holes(&stored) >= 8, "the store has gaps: {stored:?}");
    assert_eq!(
        seq_view(&store).await,
        stored,
        "every committed event once, in order"
    );
    let (pos, head) = status(&store).await["SeqView"];
    assert_eq!(pos, head);
}

/// Marten `Bug_4953_outstanding_sequence_gap_skips.rebuild_during_an_inflight_append_waits_instead_of_skipping`:
/// a rebuild started while an append is in flight (its sequence drawn, its transaction
/// open) replays the events before it and waits there, not passing it for the later
/// events that committed; once it commits, it is projected in its place and nothing is
/// skipped.
#[tokio::test]
async fn a_rebuild_during_an_append_in_flight_waits_for_it() {
    let (schema, store) = seq_store("mdaemon_inflight_rebuild").await;
    for i in 0..8 {
        append_numbered(&store, i).await;
    }
    let held = schema.raw_client().await;
    open_append(&held).await;
    for i in 10..13 {
        append_numbered(&store, i).await;
    }
    let before: Vec<i64> = global_order(&schema).await;
    assert_eq!(before.len(), 11, "the held event is not visible yet");

    let daemon = Daemon::start(&store, options());
    eventually("the first catch-up up to the held append", || async {
        seq_view(&store).await == before[..8]
    })
    .await;
    ok(rebuild(&store, "SeqView").await);
    eventually("the rebuild up to the held append", || async {
        seq_view(&store).await == before[..8]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        seq_view(&store).await,
        before[..8],
        "the events after the held append wait for it"
    );
    held.batch_execute("COMMIT").await.expect("commit");
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    let all = global_order(&schema).await;
    assert_eq!(all.len(), 12);
    assert_eq!(seq_view(&store).await, all, "the held event in its place");
    let held_seq = all[8];
    assert!(!before.contains(&held_seq));
}

/// Marten `Bug_4953_idle_advisory_lock_sessions_do_not_block_gap_skips.dead_gap_skips_despite_an_ancient_idle_in_transaction_advisory_lock_session`
/// and `Bug_5091_allocation_fence_at_mark_zero.a_dead_leading_gap_skips_despite_an_idle_advisory_lock_session`:
/// an idle session that opened a transaction before any append and holds an advisory
/// lock in it (it has written nothing) does not hold the daemon back, with a rolled-back
/// append leaving a hole at the very start of the sequence.
#[tokio::test]
async fn an_idle_transaction_holding_an_advisory_lock_does_not_hold_the_daemon() {
    let (schema, store) = seq_store("mdaemon_idle_advisory").await;
    let zombie = schema.raw_client().await;
    zombie
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(4953001)")
        .await
        .expect("an idle listener");
    let raw = schema.raw_client().await;
    rolled_back_append(&raw).await;
    for i in 0..3 {
        append_numbered(&store, i).await;
    }
    let stored = global_order(&schema).await;
    assert_eq!(stored.len(), 3);
    assert!(holes(&stored) >= 1, "a leading hole: {stored:?}");
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert_eq!(seq_view(&store).await, stored);
    // While it is still open, later appends are projected too.
    append_numbered(&store, 3).await;
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(seq_view(&store).await, global_order(&schema).await);
    zombie
        .batch_execute("ROLLBACK")
        .await
        .expect("end the listener");
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CreatedEvent {
    key: String,
    value: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct UpdatedEvent {
    key: String,
    value: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct UnrelatedEvent {
    key: String,
    value: String,
}

/// An inline multi-stream projection that cannot update a key it never saw (Marten's
/// `SyncProjection`); it reads the events' metadata, so a save reserves its sequences
/// before it plans.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(numeric)]
struct SyncDoc {
    id: String,
    value: String,
    sequence: i64,
}

#[marten::apply]
impl SyncDoc {
    fn identity(e: &CreatedEvent) -> String {
        e.key.clone()
    }
    fn identity(e: &UpdatedEvent) -> String {
        e.key.clone()
    }
    fn create(e: &CreatedEvent, meta: &EventEnvelope) -> Self {
        SyncDoc {
            id: String::new(),
            value: e.value.clone(),
            sequence: meta.sequence,
        }
    }
    fn create(_e: &UpdatedEvent) -> Result<Self, String> {
        Err("no document to update".into())
    }
    fn apply(&mut self, e: &UpdatedEvent, meta: &EventEnvelope) {
        self.value = e.value.clone();
        self.sequence = meta.sequence;
    }
}

/// The async projection of Marten's `Bug_2245` (`AsyncProjection`).
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(numeric)]
struct AsyncDoc {
    id: String,
    value: String,
}

#[marten::apply]
impl AsyncDoc {
    fn identity(e: &UnrelatedEvent) -> String {
        e.key.clone()
    }
    fn create(e: &UnrelatedEvent) -> Self {
        AsyncDoc {
            id: String::new(),
            value: e.value.clone(),
        }
    }
}

/// Marten `Bug_2245_async_daemon_getting_stuck.ErrorOnSyncProjection_ShouldNotBreakAsyncProjection`:
/// a save rolled back by its failing inline projection leaves a gap in the sequence
/// (its numbers were drawn before planning); the async daemon is not stuck on it: it is
/// caught up at once, with no new event needed, and projects what comes next.
#[tokio::test]
async fn a_save_rolled_back_by_an_inline_projection_leaves_a_gap_the_daemon_passes() {
    let (schema, b) = builder("mdaemon_inline_rollback");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .multi_stream_projection::<SyncDoc>(Lifecycle::Inline)
        .multi_stream_projection::<AsyncDoc>(Lifecycle::Async)
        .build()
        .await);
    let daemon = Daemon::start(&store, options());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        "one",
        [
            PendingEvent::new(CreatedEvent {
                key: "k1".into(),
                value: "v1".into(),
            }),
            PendingEvent::new(UnrelatedEvent {
                key: "u1".into(),
                value: "w1".into(),
            }),
        ],
    ));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    assert!(load::<AsyncDoc>(&store, &"u1".to_owned()).await.is_some());

    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        "two",
        [
            PendingEvent::new(UnrelatedEvent {
                key: "u2".into(),
                value: "w2".into(),
            }),
            PendingEvent::new(UpdatedEvent {
                key: "never-created".into(),
                value: "x".into(),
            }),
        ],
    ));
    let err = s
        .save_changes()
        .await
        .expect_err("the inline projection fails");
    assert!(matches!(err, marten::Error::Apply { .. }), "{err}");
    let row = schema
        .raw_client()
        .await
        .query_one(
            "SELECT (SELECT last_value FROM mt_events_sequence), (SELECT max(seq_id) FROM mt_events)",
            &[],
        )
        .await
        .expect("sequence");
    let (drawn, stored): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        drawn > stored,
        "the rolled-back save left a gap ({drawn} > {stored})"
    );

    ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
    assert!(load::<AsyncDoc>(&store, &"u2".to_owned()).await.is_none());

    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        "three",
        [UnrelatedEvent {
            key: "u3".into(),
            value: "w3".into(),
        }],
    ));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(
        load::<AsyncDoc>(&store, &"u3".to_owned())
            .await
            .map(|d| d.value),
        Some("w3".to_owned())
    );
}

/// Marten `catching_up_mode_for_projections_and_subscriptions.all_shards_advanced_to_the_high_water_mark`
/// (its projection half; the documents and the subscription are checked in
/// `tests/marten_subscription_scenarios.rs`): once caught up, every projection stands at
/// the head, the last event of the global order (Marten's high-water mark, where the
/// order is by sequence), with no lag, also when two writers committed in an order other
/// than that of their sequences. Here a writer holding a stream under
/// `fetch_for_exclusive_writing` (its transaction id taken by the lock) appends after
/// another writer's save committed: its event has the higher sequence but comes first in
/// the global order, so the head is not the highest sequence.
#[tokio::test]
async fn once_caught_up_every_projection_reports_the_head_whatever_the_commit_order() {
    let (schema, b) = builder("mdaemon_head_after_inversion");
    let store = ok(b
        .projection::<Tally>(Lifecycle::Async)
        .projection::<Fragile>(Lifecycle::Async)
        .build()
        .await);
    let (locked, other) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(locked, [Added { n: 1 }]));
    ok(s.events().start_stream(other, [Added { n: 2 }]));
    ok(s.save_changes().await);

    let mut a = store.lightweight_session();
    let mut w = ok(a
        .events()
        .fetch_for_exclusive_writing::<Tally>(locked)
        .await);
    let mut b = store.lightweight_session();
    ok(b.events().append(other, [Added { n: 20 }]));
    ok(b.save_changes().await);
    ok(w.append([Added { n: 10 }]));
    ok(a.save_changes().await);

    let order = global_order(&schema).await;
    let mut by_sequence = order.clone();
    by_sequence.sort_unstable();
    assert_ne!(
        order, by_sequence,
        "the global order is not the sequence order"
    );

    let daemon = caught_up(&store).await;
    ok(daemon.stop().await);
    for id in [locked, other] {
        let live: Option<Tally> = ok(store
            .lightweight_session()
            .events()
            .aggregate_stream(id)
            .await);
        assert_eq!(load::<Tally>(&store, &id).await, live, "caught up");
    }
    // The head is the last event of the order the daemon reads, not the highest sequence.
    let head = *order.last().expect("events");
    assert_ne!(Some(&head), by_sequence.last());
    for (name, (pos, reported_head)) in status(&store).await {
        assert_eq!(reported_head, head, "{name}");
        assert_eq!(pos, head, "{name} stands at the head once caught up");
    }
    for p in store.health().await.projections {
        assert_eq!(p.lag, 0, "{} lag once caught up", p.name);
    }
}

// ---------------------------------------------------------------------------------------
// Rebuilds
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MtA {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MtB {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MtC {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MtD {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct UsesAEventOnly {
    id: Uuid,
    version: i64,
    count: i64,
}

#[marten::apply]
impl UsesAEventOnly {
    fn apply(&mut self, _e: &MtA) {
        self.count += 1;
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct OtherAggregate {
    id: Uuid,
    version: i64,
    count: i64,
}

#[marten::apply]
impl OtherAggregate {
    fn apply(&mut self, _e: &MtA) {
        self.count += 1;
    }
    fn apply(&mut self, _e: &MtB) {
        self.count += 1;
    }
    fn apply(&mut self, _e: &MtC) {
        self.count += 1;
    }
}

/// Marten `Bug_2597_rebuilding_a_projection_with_no_matching_events_but_other_non_matching_events`
/// (`do_not_blow_up`, `Bug_2519_actually_finish_the_rebuild`): rebuilding an async
/// aggregate whose event type no stream holds, in a store full of other events (which an
/// inline aggregate handles), finishes: the daemon catches up to the head, the async
/// aggregate has no document and the inline one's are untouched.
#[tokio::test]
async fn rebuilding_a_projection_none_of_whose_events_exist_finishes() {
    let (schema, b) = builder("mdaemon_rebuild_no_match");
    let store = ok(b
        .projection::<UsesAEventOnly>(Lifecycle::Async)
        .projection::<OtherAggregate>(Lifecycle::Inline)
        .event::<MtD>()
        .build()
        .await);
    let streams: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    for id in &streams {
        ok(s.events().append(
            *id,
            [
                PendingEvent::new(MtB {}),
                PendingEvent::new(MtC {}),
                PendingEvent::new(MtD {}),
            ],
        ));
    }
    ok(s.save_changes().await);
    let daemon = Daemon::start(&store, options());
    ok(rebuild(&store, "UsesAEventOnly").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(
        ok(store
            .query_session()
            .query::<UsesAEventOnly>()
            .count()
            .await),
        0
    );
    for id in &streams {
        let other = load::<OtherAggregate>(&store, id).await.expect("inline");
        assert_eq!((other.count, other.version), (2, 3));
    }
    let (pos, head) = status(&store).await["UsesAEventOnly"];
    assert_eq!(pos, head);
    assert_eq!(Some(&head), global_order(&schema).await.iter().max());
}

/// Marten `rebuilding_an_inline_projection.do_not_leave_behind_progressions`: marten-rs
/// rebuilds only async projections; asked to rebuild an inline one, it refuses with a
/// configuration error, and leaves no progression row of that projection behind.
#[tokio::test]
async fn rebuilding_an_inline_projection_is_refused_and_leaves_no_progression() {
    let (schema, b) = builder("mdaemon_rebuild_inline");
    let store = ok(b.projection::<Tally>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [Added { n: 1 }, Added { n: 2 }]));
    ok(s.save_changes().await);
    let err = rebuild(&store, "Tally").await.expect_err("not async");
    assert!(matches!(err, marten::Error::Configuration(_)), "{err}");
    let raw = schema.raw_client().await;
    let table: Option<String> = raw
        .query_one("SELECT to_regclass('mt_event_progression')::text", &[])
        .await
        .expect("regclass")
        .get(0);
    if table.is_some() {
        let rows: i64 = raw
            .query_one(
                "SELECT count(*) FROM mt_event_progression WHERE name LIKE 'Tally%'",
                &[],
            )
            .await
            .expect("progression")
            .get(0);
        assert_eq!(rows, 0);
    }
    assert_eq!(load::<Tally>(&store, &id).await.map(|t| t.total), Some(3));
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct RandomCreated {
    value: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct RandomUpdated {
    value: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct RandomProjection {
    id: Uuid,
    version: i64,
    value: String,
    updates: i64,
}

#[marten::apply]
impl RandomProjection {
    fn create(e: &RandomCreated) -> Self {
        RandomProjection {
            value: e.value.clone(),
            ..RandomProjection::default()
        }
    }
    fn apply(self, e: &RandomUpdated) -> Self {
        RandomProjection {
            value: e.value.clone(),
            updates: self.updates + 1,
            ..self
        }
    }
}

/// Marten `Bug_sequential_rebuilds_throws_internally.rebuild_throw_reproduction`: a
/// stream of 1,001 events rebuilt twice in a row, each time by a daemon started for it
/// and stopped afterwards: each rebuild ends without error, with the document folding
/// every event exactly once.
#[tokio::test]
async fn sequential_rebuilds_each_replay_every_event_once() {
    let (_schema, b) = builder("mdaemon_sequential_rebuilds");
    let store = ok(b
        .projection::<RandomProjection>(Lifecycle::Async)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [RandomCreated {
            value: "created".into(),
        }],
    ));
    ok(s.save_changes().await);
    let updates: Vec<RandomUpdated> = (0..1000)
        .map(|i| RandomUpdated {
            value: format!("event-value-{i}"),
        })
        .collect();
    ok(s.events().append(id, updates));
    ok(s.save_changes().await);
    for round in 0..2 {
        let daemon = Daemon::start(&store, options());
        ok(rebuild(&store, "RandomProjection").await);
        ok(daemon.wait_for_non_stale(WAIT).await);
        ok(daemon.stop().await);
        let doc = load::<RandomProjection>(&store, &id)
            .await
            .expect("rebuilt");
        assert_eq!(
            (doc.value.as_str(), doc.updates, doc.version),
            ("event-value-999", 1000, 1001),
            "round {round}"
        );
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct IssueOpened {
    id: Uuid,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Noted {
    text: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Issue {
    id: Uuid,
}

/// Marten's `IssueAggregateProjection`: one document per opened issue, nothing for
/// anything else.
struct Issues;

impl EventProjection for Issues {
    fn name(&self) -> &'static str {
        "Issues"
    }
    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(e) = event.data_as::<IssueOpened>() {
            ops.store(Issue { id: e.id });
        }
        Ok(())
    }
    fn uses_metadata(&self) -> bool {
        false
    }
    fn owned_documents(&self, owned: &mut OwnedDocuments) {
        owned.document::<Issue>();
    }
}

/// Marten `Bug_1995_empty_batch_update_failure.should_be_able_to_apply_an_update_batch_with_no_changes`:
/// rebuilding an event projection over 499 streams, whose first batch writes 499
/// documents and whose last batch writes none (events it ignores), completes: every
/// document is there and the projection stands at the head.
#[tokio::test]
async fn a_rebuild_with_a_full_batch_and_a_batch_writing_nothing_completes() {
    let (schema, b) = builder("mdaemon_empty_batch");
    let store = ok(b
        .event::<IssueOpened>()
        .event::<Noted>()
        .event_projection(Issues, Lifecycle::Async)
        .document::<Issue>()
        .build()
        .await);
    let mut s = store.lightweight_session();
    for _ in 0..499 {
        let id = Uuid::now_v7();
        ok(s.events().start_stream(id, [IssueOpened { id }]));
    }
    ok(s.save_changes().await);
    let noted = Uuid::now_v7();
    let notes: Vec<Noted> = (0..20)
        .map(|i| Noted {
            text: format!("note {i}"),
        })
        .collect();
    ok(s.events().start_stream(noted, notes));
    ok(s.save_changes().await);
    let daemon = caught_up(&store).await;
    ok(rebuild(&store, "Issues").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(
        ok(store.query_session().query::<Issue>().count().await),
        499
    );
    let (pos, head) = status(&store).await["Issues"];
    assert_eq!(pos, head);
    assert_eq!(global_order(&schema).await.len(), 519);
}

// ---------------------------------------------------------------------------------------
// Multi-stream documents across batches, commands and async aggregates
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct UserCreated {
    user: Uuid,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct IssueCreated {
    user: Uuid,
    issue: Uuid,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(numeric)]
struct UserIssues {
    id: Uuid,
    issues: Vec<Uuid>,
}

#[marten::apply]
impl UserIssues {
    fn identity(e: &UserCreated) -> Uuid {
        e.user
    }
    fn identity(e: &IssueCreated) -> Uuid {
        e.user
    }
    fn create(_e: &UserCreated) -> Self {
        UserIssues {
            id: Uuid::nil(),
            issues: Vec::new(),
        }
    }
    fn apply(&mut self, e: &IssueCreated) {
        self.issues.push(e.issue);
    }
}

/// Marten `multi_stream_projections.better_is_new_logic`: a multi-stream document made
/// in one batch and updated by events of three later batches, one each, keeps every
/// update (each batch starts from the stored document, not from a new one).
#[tokio::test]
async fn a_multi_stream_document_keeps_what_earlier_batches_folded() {
    let (_schema, b) = builder("mdaemon_is_new");
    let store = ok(b
        .multi_stream_projection::<UserIssues>(Lifecycle::Async)
        .build()
        .await);
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    for user in &users {
        ok(s.events().append(*user, [UserCreated { user: *user }]));
    }
    ok(s.save_changes().await);
    let daemon = caught_up(&store).await;
    let mut issues = Vec::new();
    for _ in 0..3 {
        let issue = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().append(
            issue,
            [IssueCreated {
                user: users[0],
                issue,
            }],
        ));
        ok(s.save_changes().await);
        ok(daemon.wait_for_non_stale(WAIT).await);
        issues.push(issue);
    }
    ok(daemon.stop().await);
    assert_eq!(
        load::<UserIssues>(&store, &users[0])
            .await
            .map(|u| u.issues),
        Some(issues)
    );
    for user in &users[1..] {
        assert_eq!(
            load::<UserIssues>(&store, user)
                .await
                .map(|u| u.issues.len()),
            Some(0)
        );
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct IncidentLogged {
    customer: Uuid,
    description: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct IncidentCategorised {
    category: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct IncidentClosed {}

/// The live aggregate commands decide on.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Incident {
    id: Uuid,
    version: i64,
    closed: bool,
}

#[marten::apply]
impl Incident {
    fn create(_e: &IncidentLogged) -> Self {
        Incident::default()
    }
    fn apply(&mut self, _e: &IncidentClosed) {
        self.closed = true;
    }
}

/// The async details document of the same streams, counting what it applied.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct IncidentDetails {
    id: Uuid,
    version: i64,
    customer: Uuid,
    category: Option<String>,
    applied: i64,
}

#[marten::apply]
impl IncidentDetails {
    fn create(e: &IncidentLogged) -> Self {
        IncidentDetails {
            customer: e.customer,
            applied: 1,
            ..IncidentDetails::default()
        }
    }
    fn apply(&mut self, e: &IncidentCategorised) {
        self.category = Some(e.category.clone());
        self.applied += 1;
    }
}

/// Marten `Bug_3059_double_application.work_correctly`: a stream started by one session
/// and moved on by a command (`write_to_aggregate` on a live aggregate) in another is
/// folded by an async aggregate of a second type with each event applied once.
#[tokio::test]
async fn an_async_aggregate_of_a_command_written_stream_folds_each_event_once() {
    let (_schema, b) = builder("mdaemon_double_application");
    let store = ok(b
        .projection::<Incident>(Lifecycle::Live)
        .projection::<IncidentDetails>(Lifecycle::Async)
        .event::<IncidentCategorised>()
        .build()
        .await);
    let daemon = Daemon::start(&store, options());
    let (id, customer) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [IncidentLogged {
            customer,
            description: "General Solo".into(),
        }],
    ));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    let version = ok(s
        .events()
        .write_to_aggregate(id, |incident: Option<&Incident>| match incident {
            Some(i) if !i.closed => Ok(vec![IncidentCategorised {
                category: "Database".into(),
            }]),
            _ => Err(marten::Error::Configuration("no open incident".into())),
        })
        .await);
    assert_eq!(version, 2);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    let details = load::<IncidentDetails>(&store, &id).await.expect("details");
    assert_eq!(
        (
            details.category.as_deref(),
            details.applied,
            details.version,
            details.customer
        ),
        (Some("Database"), 2, 2, customer)
    );
}

// ---------------------------------------------------------------------------------------
// Progression: resuming, leftover rows, last update
// ---------------------------------------------------------------------------------------

/// Records the sequences each commit carried; optionally holds the runner (blocking its
/// thread) after its first commit until released.
struct Recorder {
    committed: Mutex<Vec<i64>>,
    pause_after_first: AtomicBool,
    first_done: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Recorder {
    fn new(pause: bool) -> (Arc<Recorder>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (done_tx, done_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let recorder = Arc::new(Recorder {
            committed: Mutex::new(Vec::new()),
            pause_after_first: AtomicBool::new(pause),
            first_done: Mutex::new(done_tx),
            release: Mutex::new(release_rx),
        });
        (recorder, done_rx, release_tx)
    }

    fn committed(&self) -> Vec<i64> {
        self.committed.lock().expect("committed").clone()
    }
}

/// The hooks of a daemon, sharing a [`Recorder`].
struct Hooks(Arc<Recorder>);

impl DaemonHooks for Hooks {
    fn after_commit(&self, _projection: &str, sequences: &[i64]) {
        self.0
            .committed
            .lock()
            .expect("committed")
            .extend_from_slice(sequences);
        if self.0.pause_after_first.swap(false, Ordering::SeqCst) {
            let _ = self.0.first_done.lock().expect("done").send(());
            let _ = self.0.release.lock().expect("release").recv_timeout(WAIT);
        }
    }
    fn reads_event_metadata(&self) -> bool {
        false
    }
}

/// Marten `basic_functionality.start_stop_and_restart_a_new_daemon` and
/// `pausing_and_resuming_the_daemon.stop_and_resume_from_the_host_extensions`: a daemon
/// stopped right after its first batch of a backlog commits, and a new daemon started
/// after more appends: the new one resumes from the recorded progression (its first
/// batch starts after the first daemon's last event), each event is committed once by
/// one of them, and every document equals its live fold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_stopped_mid_backlog_is_resumed_from_its_progression() {
    let (schema, b) = builder("mdaemon_resume");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let streams: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    for round in 0..5i64 {
        let mut s = store.lightweight_session();
        for id in &streams {
            ok(s.events().append(*id, [Added { n: round + 1 }]));
        }
        ok(s.save_changes().await);
    }
    let batch = DaemonOptions {
        batch_size: 5,
        ..options()
    };
    let (first, first_done, release) = Recorder::new(true);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            hooks: Arc::new(Hooks(first.clone())),
            ..batch.clone()
        },
    );
    let done = tokio::task::spawn_blocking(move || first_done.recv_timeout(WAIT))
        .await
        .expect("join");
    assert!(done.is_ok(), "the first batch committed");
    // Stopping signals the runner at once; it sees the signal when its hook returns.
    drop(daemon);
    release.send(()).expect("release");
    let order = global_order(&schema).await;
    assert_eq!(order.len(), 40);
    let committed_first = first.committed();
    assert_eq!(committed_first, order[..5], "one batch, then the stop");

    // More events while no daemon runs.
    let mut s = store.lightweight_session();
    for id in &streams[..4] {
        ok(s.events().append(*id, [Added { n: 100 }]));
    }
    ok(s.save_changes().await);
    let order = global_order(&schema).await;

    let (second, _, _) = Recorder::new(false);
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            hooks: Arc::new(Hooks(second.clone())),
            ..batch
        },
    );
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(
        first.committed(),
        committed_first,
        "the first daemon stopped"
    );
    assert_eq!(
        second.committed(),
        order[5..],
        "resumed after the first's last event"
    );
    let mut s = store.lightweight_session();
    for id in &streams {
        let live: Option<Tally> = ok(s.events().aggregate_stream(*id).await);
        assert_eq!(load::<Tally>(&store, id).await, live, "stream {id}");
    }
}

/// Marten `Bug_5161_wait_ignores_non_shard_progression_rows.lagging_non_shard_rows_do_not_hold_the_wait_open`:
/// rows of `mt_event_progression` that are no projection of the store (bookkeeping, a
/// projection no longer registered, a shard of one) stand far behind the head, yet
/// waiting for the daemon returns at once once every real projection has caught up:
/// through the store-wide wait and through a daemon started afterwards.
#[tokio::test]
async fn progression_rows_of_no_registered_projection_do_not_hold_the_wait() {
    let (schema, b) = builder("mdaemon_leftover_rows");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let mut s = store.lightweight_session();
    for i in 0..5 {
        ok(s.events().start_stream(Uuid::now_v7(), [Added { n: i }]));
    }
    ok(s.save_changes().await);
    let daemon = caught_up(&store).await;
    ok(wait_for_non_stale(&store, WAIT).await);
    ok(daemon.stop().await);

    schema
        .raw_client()
        .await
        .batch_execute(
            "INSERT INTO mt_event_progression (name, last_seq) VALUES \
             ('HighWaterAllocationFence', 1), ('SomeRetiredProjection', 1), \
             ('SomeRetiredProjection#0/2', 0)",
        )
        .await
        .expect("leftover rows");
    let started = Instant::now();
    ok(wait_for_non_stale(&store, Duration::from_secs(10)).await);
    let daemon = Daemon::start(&store, options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);
    ok(daemon.stop().await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "returned promptly: {:?}",
        started.elapsed()
    );
    assert_eq!(
        status(&store).await.keys().cloned().collect::<Vec<_>>(),
        ["Tally"]
    );
}

/// Marten `Bug_4981_projection_progress_last_updated_advances.last_updated_advances_as_a_projection_shard_processes_more_events`:
/// the progression row's last update moves forward with each batch the projection
/// commits, so a moving projection never looks stalled.
#[tokio::test]
async fn a_projections_last_update_advances_as_it_processes_more_events() {
    let (schema, b) = builder("mdaemon_last_updated");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let append_50 = || async {
        let mut s = store.lightweight_session();
        for i in 0..50 {
            ok(s.events().append(Uuid::now_v7(), [Added { n: i }]));
        }
        ok(s.save_changes().await);
    };
    let progress = || async {
        let row = schema
            .raw_client()
            .await
            .query_one(
                "SELECT last_updated, last_seq FROM mt_event_progression WHERE name = 'Tally'",
                &[],
            )
            .await
            .expect("progression");
        let at: time::OffsetDateTime = row.get(0);
        let seq: i64 = row.get(1);
        (at, seq)
    };
    let daemon = Daemon::start(&store, options());
    append_50().await;
    ok(daemon.wait_for_non_stale(WAIT).await);
    let (first_at, first_seq) = progress().await;
    assert_eq!(first_seq, 50);
    append_50().await;
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    let (second_at, second_seq) = progress().await;
    assert_eq!(second_seq, 100);
    assert!(
        second_at > first_at,
        "last update {second_at} after {first_at}"
    );
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CarNamed {
    value: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TruckNamed {
    value: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct CarView {
    id: Uuid,
    version: i64,
    name: String,
}

#[marten::apply]
impl CarView {
    fn apply(&mut self, e: &CarNamed) {
        self.name = e.value.clone();
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct TruckView {
    id: Uuid,
    version: i64,
    name: String,
}

#[marten::apply]
impl TruckView {
    fn apply(&mut self, e: &TruckNamed) {
        self.name = e.value.clone();
    }
}

/// Marten `build_aggregate_multiple_projections.bug_repro`: two async aggregates whose
/// streams are written in four interleaved transactions each end at their stream's
/// latest state, each progressing on its own to the head.
#[tokio::test]
async fn two_async_aggregates_over_interleaved_transactions_each_reach_the_latest() {
    let (schema, b) = builder("mdaemon_car_truck");
    let store = ok(b
        .projection::<CarView>(Lifecycle::Async)
        .projection::<TruckView>(Lifecycle::Async)
        .build()
        .await);
    let daemon = Daemon::start(&store, options());
    let (car, truck) = (Uuid::now_v7(), Uuid::now_v7());
    let writes = [
        (car, Some("car-name-1"), None),
        (truck, None, Some("truck-name-1")),
        (truck, None, Some("truck-name-2")),
        (car, Some("car-name-2"), None),
    ];
    for (id, car_name, truck_name) in writes {
        let mut s = store.lightweight_session();
        if let Some(v) = car_name {
            ok(s.events().append(id, [CarNamed { value: v.into() }]));
        }
        if let Some(v) = truck_name {
            ok(s.events().append(id, [TruckNamed { value: v.into() }]));
        }
        ok(s.save_changes().await);
    }
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    assert_eq!(
        load::<CarView>(&store, &car)
            .await
            .map(|c| (c.name, c.version)),
        Some(("car-name-2".to_owned(), 2))
    );
    assert_eq!(
        load::<TruckView>(&store, &truck)
            .await
            .map(|t| (t.name, t.version)),
        Some(("truck-name-2".to_owned(), 2))
    );
    let last = *global_order(&schema).await.last().expect("events");
    for (name, (pos, head)) in status(&store).await {
        assert_eq!((pos, head), (last, last), "{name}");
    }
}

/// Marten `build_aggregate_multiple_projections.rebuild_with_gaps_in_sequence_from_initial_position_before_high_water_is_started`
/// (and `..._after_high_water_is_started`): a stream of 1,000 events from which 20 rows
/// were deleted by hand in four runs (holes in the sequence and in the stream's
/// versions) is rebuilt to the end: the projection reaches the store's last event and
/// the document holds the last event's value.
#[tokio::test]
async fn a_rebuild_over_events_deleted_by_hand_reaches_the_last_event() {
    let (schema, b) = builder("mdaemon_rebuild_deleted_rows");
    let store = ok(b.projection::<CarView>(Lifecycle::Async).build().await);
    let car = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let events: Vec<CarNamed> = (0..1000)
        .map(|i| CarNamed {
            value: format!("car-name-{i}"),
        })
        .collect();
    ok(s.events().start_stream(car, events));
    ok(s.save_changes().await);
    let first = global_order(&schema).await[0];
    let gone: Vec<i64> = [25, 35, 45, 70]
        .iter()
        .flat_map(|start| (0..5).map(move |k| first - 1 + start + k))
        .collect();
    let deleted = schema
        .raw_client()
        .await
        .execute("DELETE FROM mt_events WHERE seq_id = ANY($1)", &[&gone])
        .await
        .expect("delete rows");
    assert_eq!(deleted, 20);

    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 100,
            ..options()
        },
    );
    ok(rebuild(&store, "CarView").await);
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
    let view = load::<CarView>(&store, &car).await.expect("rebuilt");
    assert_eq!((view.name.as_str(), view.version), ("car-name-999", 1000));
    let (pos, head) = status(&store).await["CarView"];
    assert_eq!(pos, head);
}
