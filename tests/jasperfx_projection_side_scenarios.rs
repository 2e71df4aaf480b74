//! Scenarios ported from five JasperFx.Events compliance suites (JasperFx/jasperfx,
//! `src/JasperFx.Events.ComplianceTests/Suites/`): `ProjectionSideEffectCompliance` and
//! `DocumentCommitListenerCompliance` (onto marten-rs's daemon commit hooks,
//! `DaemonHooks::before_commit` / `after_commit`: marten-rs has no projection side
//! effects, message outbox or session commit listeners), `AggregateToManyCompliance`
//! (onto a live fan-out through a multi-stream projection's own `identities` and the
//! public `marten::aggregate::fold`, compared with the inline and async documents),
//! `EventProjectionRegistrationCompliance` (a document type only an event projection
//! names) and `CompositeProjectionCompliance` (nothing to port: no composites). The
//! behaviour is ported, not the code. Every wait on the daemon is bounded.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{builder, ok, stopped_with};
use marten::daemon::{Daemon, DaemonHooks, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten::{ApplyError, EventProjection, Identities, OwnedDocuments, ProjectedOps};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

/// How long any wait on a daemon may take.
const WAIT: Duration = Duration::from_secs(20);

fn options() -> DaemonOptions {
    DaemonOptions {
        poll_interval: Duration::from_millis(20),
        retries: 0,
        ..DaemonOptions::default()
    }
}

/// Starts a daemon and waits (bounded) until it has caught up.
async fn caught_up(store: &DocumentStore, options: DaemonOptions) -> Daemon {
    let daemon = Daemon::start(store, options);
    ok(daemon.wait_for_non_stale(WAIT).await);
    daemon
}

/// Polls `done` until it holds, failing the test after [`WAIT`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn load<D: marten::PgDocument>(store: &DocumentStore, id: &D::Id) -> Option<D> {
    ok(store.query_session().load::<D>(id).await)
}

/// Every event's sequence, in stream order.
async fn sequences_of(store: &DocumentStore, stream: Uuid) -> Vec<i64> {
    let mut s = store.lightweight_session();
    ok(s.events().fetch_stream(stream).await)
        .iter()
        .map(|e| e.sequence)
        .collect()
}

// ---------------------------------------------------------------------------------------
// ProjectionSideEffectCompliance (commit hooks) and DocumentCommitListenerCompliance,
// on the daemon's commit hooks
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Counted {
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Jammed {}

/// One document per `Counted` event, keyed by its global sequence.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Stamp {
    id: i64,
    n: i64,
}

/// Stamps each `Counted` event; refuses a `Jammed` one.
struct Stamps;

impl EventProjection for Stamps {
    fn name(&self) -> &'static str {
        "Stamps"
    }

    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if let Some(c) = event.data_as::<Counted>() {
            ops.store(Stamp {
                id: event.sequence,
                n: c.n,
            });
        }
        if event.is::<Jammed>() {
            return Err(ApplyError::new("jammed"));
        }
        Ok(())
    }

    fn owned_documents(&self, owned: &mut OwnedDocuments) {
        owned.document::<Stamp>();
    }
}

async fn stamp_store(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .event::<Counted>()
        .event::<Jammed>()
        .document::<Stamp>()
        .event_projection(Stamps, Lifecycle::Async)
        .build()
        .await);
    (schema, store)
}

/// Starts a stream of `n` `Counted` events (1..=n) in one save.
async fn counted_stream(store: &DocumentStore, n: i64) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream(id, (1..=n).map(|n| PendingEvent::new(Counted { n }))));
    ok(s.save_changes().await);
    id
}

#[derive(Clone, Debug, PartialEq)]
enum Hook {
    Batch,
    Before(Vec<i64>),
    After(Vec<i64>),
    CaughtUp,
}

/// Records the hooks the daemon calls, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Hook>>>);

impl Recorder {
    fn log(&self) -> Vec<Hook> {
        self.0.lock().expect("log").clone()
    }

    fn commits(&self) -> Vec<Hook> {
        self.log()
            .into_iter()
            .filter(|h| matches!(h, Hook::Before(_) | Hook::After(_)))
            .collect()
    }

    /// Every sequence the after-commit hook reported, in order.
    fn committed(&self) -> Vec<i64> {
        self.log()
            .into_iter()
            .flat_map(|h| match h {
                Hook::After(s) => s,
                _ => vec![],
            })
            .collect()
    }

    fn push(&self, hook: Hook) {
        self.0.lock().expect("log").push(hook);
    }
}

impl DaemonHooks for Recorder {
    fn before_batch(&self, _projection: &str) {
        self.push(Hook::Batch);
    }
    fn before_commit(&self, _projection: &str, sequences: &[i64]) {
        self.push(Hook::Before(sequences.to_vec()));
    }
    fn after_commit(&self, _projection: &str, sequences: &[i64]) {
        self.push(Hook::After(sequences.to_vec()));
    }
    fn after_catch_up(&self, _projection: &str) {
        self.push(Hook::CaughtUp);
    }
}

/// ProjectionSideEffectCompliance.both_commit_hooks_fire_in_order and
/// .a_session_that_never_publishes_never_asks_the_outbox_for_a_batch, with
/// DocumentCommitListenerCompliance.a_listener_fires_after_a_successful_commit and
/// .each_commit_raises_its_own_callback: an idle daemon reaches no commit hook; each
/// committed batch gets one before/after pair, in that order, naming the same events, and
/// every event is reported committed exactly once.
#[tokio::test]
async fn commit_hooks_bracket_each_batch_once_and_never_fire_when_idle() {
    let (_schema, store) = stamp_store("jfx_side_hooks_order").await;
    let hooks = Recorder::default();
    let daemon = caught_up(
        &store,
        DaemonOptions {
            batch_size: 2,
            ..options()
        }
        .with_hooks(hooks.clone()),
    )
    .await;
    eventually("the idle daemon to report catching up", || {
        hooks.log().contains(&Hook::CaughtUp)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        hooks.commits().is_empty(),
        "nothing to project, no commit hook: {:?}",
        hooks.log()
    );

    let stream = counted_stream(&store, 5).await;
    let expected = sequences_of(&store, stream).await;
    assert_eq!(expected.len(), 5);
    ok(daemon.wait_for_non_stale(WAIT).await);
    eventually("the after-commit hook to report every event", || {
        hooks.committed().len() >= expected.len()
    })
    .await;

    let commits = hooks.commits();
    assert_eq!(commits.len() % 2, 0, "{commits:?}");
    for pair in commits.chunks(2) {
        match pair {
            [Hook::Before(b), Hook::After(a)] => {
                assert_eq!(b, a, "both hooks name the batch's events");
                assert!(!a.is_empty() && a.len() <= 2, "one batch of 2: {a:?}");
            }
            _ => panic!("before then after, per commit: {commits:?}"),
        }
    }
    assert!(
        commits.len() / 2 >= 3,
        "5 events, batches of 2: {commits:?}"
    );
    assert_eq!(hooks.committed(), expected, "each event once, in order");
    let stamps: Vec<Stamp> = ok(store.query_session().load_many(&expected).await);
    assert_eq!(stamps.len(), 5, "what the hooks report committed is stored");
    ok(daemon.stop().await);
}

/// A hook's name, the batch's sequences and how many of its documents were readable.
type Sighting = (&'static str, Vec<i64>, usize);

/// Records, at each commit hook, how many of the batch's documents a session of its own
/// can read.
#[derive(Clone)]
struct Probe {
    store: DocumentStore,
    seen: Arc<Mutex<Vec<Sighting>>>,
}

impl Probe {
    fn visible(&self, sequences: &[i64]) -> usize {
        let store = self.store.clone();
        let ids = sequences.to_vec();
        tokio::task::block_in_place(move || {
            tokio::runtime::Handle::current().block_on(async move {
                let found: Vec<Stamp> = ok(store.query_session().load_many(&ids).await);
                found.len()
            })
        })
    }

    fn record(&self, hook: &'static str, sequences: &[i64]) {
        let n = self.visible(sequences);
        self.seen
            .lock()
            .expect("seen")
            .push((hook, sequences.to_vec(), n));
    }
}

impl DaemonHooks for Probe {
    fn before_commit(&self, _projection: &str, sequences: &[i64]) {
        self.record("before", sequences);
    }
    fn after_commit(&self, _projection: &str, sequences: &[i64]) {
        self.record("after", sequences);
    }
}

/// ProjectionSideEffectCompliance.the_before_hook_runs_inside_the_transaction_and_the_after_hook_outside_it,
/// as far as marten-rs's hooks go: at the before-commit hook no other session can read
/// any of the batch's writes; at the after-commit hook it reads all of them. (marten-rs's
/// before hook runs just before the commit and cannot enlist work in it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_is_invisible_at_before_commit_and_visible_at_after_commit() {
    let (_schema, store) = stamp_store("jfx_side_hooks_visibility").await;
    let stream = counted_stream(&store, 3).await;
    let expected = sequences_of(&store, stream).await;
    let probe = Probe {
        store: store.clone(),
        seen: Arc::default(),
    };
    let daemon = caught_up(
        &store,
        DaemonOptions {
            batch_size: 2,
            ..options()
        }
        .with_hooks(probe.clone()),
    )
    .await;
    let seen = || probe.seen.lock().expect("seen").clone();
    eventually("every batch's after-commit probe", || {
        seen()
            .iter()
            .filter(|(h, _, _)| *h == "after")
            .map(|(_, s, _)| s.len())
            .sum::<usize>()
            >= expected.len()
    })
    .await;
    ok(daemon.stop().await);

    let seen = seen();
    assert!(seen.len() >= 4, "two batches, two hooks each: {seen:?}");
    for pair in seen.chunks(2) {
        let [(before, b, hidden), (after, a, shown)] = pair else {
            panic!("paired hooks: {seen:?}");
        };
        assert_eq!((*before, *after), ("before", "after"), "{seen:?}");
        assert_eq!(b, a);
        assert_eq!(
            *hidden, 0,
            "nothing of batch {b:?} visible before its commit"
        );
        assert_eq!(
            *shown,
            a.len(),
            "all of batch {a:?} visible after its commit"
        );
    }
}

/// ProjectionSideEffectCompliance.a_unit_of_work_that_fails_publishes_nothing and
/// DocumentCommitListenerCompliance.the_listener_fires_if_and_only_if_the_commit_succeeded /
/// .the_listener_does_not_fire_for_work_that_was_never_committed: a batch whose
/// projection fails (poison policy `Stop`) reaches neither commit hook, and none of its
/// writes is stored.
#[tokio::test]
async fn a_failed_batch_reaches_no_commit_hook_and_stores_nothing() {
    let (_schema, store) = stamp_store("jfx_side_hooks_failed").await;
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        stream,
        [
            PendingEvent::new(Counted { n: 1 }),
            PendingEvent::new(Counted { n: 2 }),
            PendingEvent::new(Jammed {}),
        ],
    ));
    ok(s.save_changes().await);
    let sequences = sequences_of(&store, stream).await;

    let hooks = Recorder::default();
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            poison: PoisonPolicy::Stop,
            ..options()
        }
        .with_hooks(hooks.clone()),
    );
    let err = stopped_with(daemon).await;
    assert!(matches!(err, Error::Apply { .. }), "{err}");

    assert!(
        hooks.log().contains(&Hook::Batch),
        "the daemon did try the batch: {:?}",
        hooks.log()
    );
    assert!(
        hooks.commits().is_empty(),
        "no commit hook for a batch that never committed: {:?}",
        hooks.log()
    );
    let stamps: Vec<Stamp> = ok(store.query_session().load_many(&sequences).await);
    assert!(stamps.is_empty(), "nothing of the failed batch stored");
}

// ---------------------------------------------------------------------------------------
// AggregateToManyCompliance (marten-rs has no `AggregateToMany` operator: a live fan-out
// is the projection type's own `identities` and dispatch, through the public fold)
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Deposited {
    account: Uuid,
    amount: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Frozen {
    account: Uuid,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct Balance {
    id: Uuid,
    amount: i64,
}

#[marten::apply]
impl Balance {
    fn identity(e: &Deposited) -> Uuid {
        e.account
    }
    fn identity(e: &Frozen) -> Uuid {
        e.account
    }
    fn apply(&mut self, e: &Deposited) {
        self.amount += e.amount;
    }
    fn should_delete(&self, _e: &Frozen) -> bool {
        true
    }
}

/// The events of `streams`, in global order, as an ad hoc query would return them.
async fn events_of(store: &DocumentStore, streams: &[Uuid]) -> Vec<EventEnvelope> {
    let mut s = store.lightweight_session();
    let mut events = Vec::new();
    for stream in streams {
        events.extend(ok(s.events().fetch_stream(*stream).await));
    }
    events.sort_by_key(|e| e.sequence);
    events
}

/// One `Balance` per identity the events name, folded live by the type's own dispatch;
/// identities whose fold ends deleted are left out.
fn fan_out(events: &[EventEnvelope]) -> BTreeMap<Uuid, Balance> {
    let mut slices: BTreeMap<Uuid, Vec<EventEnvelope>> = BTreeMap::new();
    for e in events {
        let mut ids = <Balance as Identities>::identities(e);
        ids.sort();
        ids.dedup();
        for id in ids {
            slices.entry(id).or_default().push(e.clone());
        }
    }
    slices
        .into_iter()
        .filter_map(|(id, slice)| {
            let folded = marten::aggregate::fold::<Balance>(None, &slice, |_, _| {})
                .unwrap_or_else(|(e, i)| panic!("fold failed at {i}: {}", e.message));
            folded.map(|mut b| {
                b.id = id;
                (id, b)
            })
        })
        .collect()
}

/// Inline and async stores of `Balance`, each with its own schema, the async one caught up
/// after `write` ran on both.
async fn on_both_lifecycles<F, Fut>(
    label: &str,
    write: F,
) -> Vec<(TestSchema, DocumentStore, Vec<Uuid>)>
where
    F: Fn(DocumentStore) -> Fut,
    Fut: std::future::Future<Output = Vec<Uuid>>,
{
    let mut out = Vec::new();
    for (suffix, lifecycle) in [("inline", Lifecycle::Inline), ("async", Lifecycle::Async)] {
        let (schema, b) = builder(&format!("{label}_{suffix}"));
        let store = ok(b
            .multi_stream_projection::<Balance>(lifecycle)
            .build()
            .await);
        let streams = write(store.clone()).await;
        if lifecycle == Lifecycle::Async {
            let daemon = caught_up(&store, options()).await;
            ok(daemon.stop().await);
        }
        out.push((schema, store, streams));
    }
    out
}

/// AggregateToManyCompliance.fans_a_cross_stream_query_out_to_one_aggregate_per_identity
/// and .empty_query_returns_empty_list: events of two streams fan out to one aggregate
/// per account (not per stream), each stamped with its identity, equal to the documents
/// the inline and async projections persist; events matching no stream fan out to none.
#[tokio::test]
async fn a_cross_stream_fan_out_gives_one_aggregate_per_identity_as_persisted() {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let stores = on_both_lifecycles("jfx_side_to_many", |store| async move {
        let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
        let mut s = store.lightweight_session();
        ok(s.events().append(
            s1,
            [
                PendingEvent::new(Deposited {
                    account: a,
                    amount: 100,
                }),
                PendingEvent::new(Deposited {
                    account: b,
                    amount: 50,
                }),
            ],
        ));
        ok(s.events().append(
            s2,
            [PendingEvent::new(Deposited {
                account: a,
                amount: 25,
            })],
        ));
        ok(s.save_changes().await);
        vec![s1, s2]
    })
    .await;
    for (_schema, store, streams) in &stores {
        let live = fan_out(&events_of(store, streams).await);
        assert_eq!(live.len(), 2, "{live:?}");
        assert_eq!(live.get(&a), Some(&Balance { id: a, amount: 125 }));
        assert_eq!(live.get(&b), Some(&Balance { id: b, amount: 50 }));
        for (id, balance) in &live {
            assert_eq!(load::<Balance>(store, id).await.as_ref(), Some(balance));
        }
        let nothing = events_of(store, &[Uuid::now_v7()]).await;
        assert!(nothing.is_empty() && fan_out(&nothing).is_empty());
    }
}

/// AggregateToManyCompliance.excludes_aggregates_that_should_delete: an identity whose
/// events end in a deletion is absent from the live fan-out and has no document, inline
/// or async, while the other identity of the same stream survives.
#[tokio::test]
async fn an_identity_that_should_delete_is_absent_live_and_persisted() {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let stores = on_both_lifecycles("jfx_side_to_many_del", |store| async move {
        let stream = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().append(
            stream,
            [
                PendingEvent::new(Deposited {
                    account: a,
                    amount: 100,
                }),
                PendingEvent::new(Deposited {
                    account: b,
                    amount: 200,
                }),
                PendingEvent::new(Frozen { account: b }),
            ],
        ));
        ok(s.save_changes().await);
        vec![stream]
    })
    .await;
    for (_schema, store, streams) in &stores {
        let live = fan_out(&events_of(store, streams).await);
        assert_eq!(
            live.into_values().collect::<Vec<_>>(),
            [Balance { id: a, amount: 100 }]
        );
        assert_eq!(
            load::<Balance>(store, &a).await,
            Some(Balance { id: a, amount: 100 })
        );
        assert_eq!(load::<Balance>(store, &b).await, None, "deleted");
        assert_eq!(
            ok(store.query_session().query::<Balance>().count().await),
            1
        );
    }
}

// ---------------------------------------------------------------------------------------
// EventProjectionRegistrationCompliance
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AuditableAction {
    description: String,
}

/// Written only by [`AuditTrail`]; never registered with the store.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct AuditRecord {
    id: Uuid,
    stream_id: Uuid,
    event_type: String,
    sequence: i64,
    timestamp_us: i64,
}

/// One audit record per auditable event, keyed by its stream.
struct AuditTrail;

impl EventProjection for AuditTrail {
    fn name(&self) -> &'static str {
        "AuditTrail"
    }

    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        if event.is::<AuditableAction>() {
            let StreamId::Uuid(stream) = event.stream_id else {
                return Err(ApplyError::new("a uuid stream"));
            };
            let micros = event.timestamp.unix_timestamp_nanos() / 1000;
            ops.store(AuditRecord {
                id: stream,
                stream_id: stream,
                event_type: event.event_type.to_string(),
                sequence: event.sequence,
                timestamp_us: i64::try_from(micros).map_err(ApplyError::new)?,
            });
        }
        Ok(())
    }

    fn owned_documents(&self, owned: &mut OwnedDocuments) {
        owned.document::<AuditRecord>();
    }
}

/// EventProjectionRegistrationCompliance.unregistered_document_type_is_persisted_end_to_end,
/// inline and async: a document type no registration names gets its table on first use
/// and holds what the projection wrote from the stored event (stream, type name,
/// sequence, timestamp); async, a rebuild before the table exists succeeds and a rebuild
/// after reproduces the record once.
#[tokio::test]
async fn an_event_projection_persists_a_document_type_the_store_never_registered() {
    for (suffix, lifecycle) in [("inline", Lifecycle::Inline), ("async", Lifecycle::Async)] {
        let (_schema, b) = builder(&format!("jfx_side_registration_{suffix}"));
        let store = ok(b
            .event::<AuditableAction>()
            .event_projection(AuditTrail, lifecycle)
            .build()
            .await);
        let is_async = lifecycle == Lifecycle::Async;
        if is_async {
            ok(marten::daemon::rebuild(&store, "AuditTrail").await);
        }

        let stream = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(
            stream,
            [PendingEvent::new(AuditableAction {
                description: "created".into(),
            })],
        ));
        ok(s.save_changes().await);
        let daemon = match is_async {
            true => Some(caught_up(&store, options()).await),
            false => None,
        };

        let stored = events_of(&store, &[stream]).await;
        let [event] = stored.as_slice() else {
            panic!("one event: {stored:?}");
        };
        let expected = AuditRecord {
            id: stream,
            stream_id: stream,
            event_type: AuditableAction::EVENT_TYPE.to_owned(),
            sequence: event.sequence,
            timestamp_us: i64::try_from(event.timestamp.unix_timestamp_nanos() / 1000)
                .expect("micros"),
        };
        assert_eq!(
            load::<AuditRecord>(&store, &stream).await.as_ref(),
            Some(&expected),
            "{suffix}"
        );
        assert_eq!(
            ok(store.query_session().query::<AuditRecord>().count().await),
            1,
            "{suffix}"
        );

        if let Some(daemon) = daemon {
            ok(marten::daemon::rebuild(&store, "AuditTrail").await);
            ok(daemon.wait_for_non_stale(WAIT).await);
            assert_eq!(
                load::<AuditRecord>(&store, &stream).await,
                Some(expected),
                "rebuilt"
            );
            assert_eq!(
                ok(store.query_session().query::<AuditRecord>().count().await),
                1
            );
            ok(daemon.stop().await);
        }
    }
}
