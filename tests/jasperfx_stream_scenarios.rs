//! Stream-level scenarios carried over from JasperFx.Events' compliance suites
//! (`src/JasperFx.Events.ComplianceTests/Suites` of JasperFx/jasperfx): FetchForWriting,
//! FetchLatest, LiveAggregation, StreamArchiving, StreamRead, PendingStreamActions, the
//! event side of GuidOptimisticConcurrency and AggregateWriteCache (mapped onto
//! `write_to_aggregate` and the store's aggregate cache). Only the facts that
//! `tests/marten_event_scenarios.rs` and `tests/fetch_for_writing.rs` do not already carry
//! are here; each test names the suite facts it ports. Scenarios about concurrency race
//! sessions released together by a barrier.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{builder, builder_on, ok};
use marten::prelude::*;
use marten::{DocumentStoreBuilder, RejectionKind};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Barrier;

// ---------------------------------------------------------------------------------------
// The vault domain (the suites' `ComplianceAccount` / `CachedLedger`).

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct VaultOpened {
    owner: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Posted {
    amount: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Reversed {
    amount: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Vault {
    id: Uuid,
    version: i64,
    owner: String,
    balance: i64,
}

#[marten::apply]
impl Vault {
    fn create(e: &VaultOpened) -> Self {
        Vault {
            id: Uuid::nil(),
            version: 0,
            owner: e.owner.clone(),
            balance: 0,
        }
    }

    fn apply(&mut self, e: &Posted) {
        self.balance += e.amount;
    }

    fn apply(&mut self, e: &Reversed) {
        self.balance -= e.amount;
    }
}

fn posted(amount: i64) -> Posted {
    Posted { amount }
}

/// A builder for the vault domain: `Vault` projected with `lifecycle`, or only its events
/// registered (folded live), with an aggregate cache of `cache` entries.
fn vault_builder(
    b: DocumentStoreBuilder,
    lifecycle: Lifecycle,
    cache: usize,
) -> DocumentStoreBuilder {
    let b = b
        .event::<VaultOpened>()
        .event::<Posted>()
        .event::<Reversed>()
        .aggregate_cache(cache);
    match lifecycle {
        Lifecycle::Live => b,
        other => b.projection::<Vault>(other),
    }
}

async fn vault_store(
    label: &str,
    lifecycle: Lifecycle,
    cache: usize,
) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(vault_builder(b, lifecycle, cache).build().await);
    (schema, store)
}

/// Another store on `schema` configured as `vault_store`, as another process has it: its
/// own pool and its own cache.
async fn other_vault_store(
    schema: &TestSchema,
    lifecycle: Lifecycle,
    cache: usize,
) -> DocumentStore {
    ok(vault_builder(builder_on(schema), lifecycle, cache)
        .build()
        .await)
}

/// Starts a vault opened by "Hilda" with `amounts` posted, in one save.
async fn open_vault(store: &DocumentStore, amounts: &[i64]) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let mut events = vec![PendingEvent::new(VaultOpened {
        owner: "Hilda".into(),
    })];
    events.extend(amounts.iter().map(|a| PendingEvent::new(posted(*a))));
    ok(s.events().start_stream(id, events));
    ok(s.save_changes().await);
    id
}

/// A plain append of `amount` in a session of its own.
async fn plain_post(store: &DocumentStore, id: Uuid, amount: i64) {
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [posted(amount)]));
    ok(s.save_changes().await);
}

/// The stored inline document: (balance, version).
async fn stored(store: &DocumentStore, id: Uuid) -> Option<(i64, i64)> {
    ok(store.query_session().load::<Vault>(&id).await).map(|v| (v.balance, v.version))
}

async fn stream_version(store: &DocumentStore, id: Uuid) -> Option<i64> {
    let mut s = store.lightweight_session();
    ok(s.events().fetch_stream_state(id).await).map(|st| st.version)
}

/// The fold of the whole stream from its first event (a range bounded by time never
/// starts from a stored document).
async fn folded_from_scratch(store: &DocumentStore, id: Uuid) -> Option<Vault> {
    let far = OffsetDateTime::now_utc() + time::Duration::days(1);
    let mut s = store.lightweight_session();
    ok(s.events()
        .aggregate_stream_with::<Vault>(id, StreamRange::all().up_to_time(far))
        .await)
}

/// A command posting `amount` through `write_to_aggregate` in a session of its own: the
/// stream's version after it and every state (version, balance) the decision saw.
async fn command(store: &DocumentStore, id: Uuid, amount: i64) -> (i64, Vec<Option<(i64, i64)>>) {
    let mut seen = Vec::new();
    let mut s = store.lightweight_session();
    let version = ok(s
        .events()
        .write_to_aggregate::<Vault, _, _>(id, |v: Option<&Vault>| {
            seen.push(v.map(|v| (v.version, v.balance)));
            Ok::<_, marten::Error>(vec![posted(amount)])
        })
        .await);
    (version, seen)
}

fn version_conflict(err: &marten::Error) -> (i64, Option<i64>) {
    match err.rejections().first().map(|r| &r.kind) {
        Some(RejectionKind::UnexpectedStreamVersion { expected, actual }) => (*expected, *actual),
        _ => panic!("expected an unexpected-version rejection, got {err:?}"),
    }
}

/// Writers that each read `id` for writing expecting `expected` (all reads happen before
/// any save), then post their amount and save together, released by a barrier. The
/// results in the order of `amounts`.
async fn race_handles(
    store: &DocumentStore,
    id: Uuid,
    expected: i64,
    amounts: &[i64],
) -> Vec<marten::Result<()>> {
    let barrier = Arc::new(Barrier::new(amounts.len()));
    let racers: Vec<_> = amounts
        .iter()
        .map(|amount| {
            let (store, barrier, amount) = (store.clone(), barrier.clone(), *amount);
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                let read = s
                    .events()
                    .fetch_for_writing_expected::<Vault>(id, expected)
                    .await;
                barrier.wait().await;
                let mut w = read?;
                w.append([posted(amount)])?;
                s.save_changes().await
            })
        })
        .collect();
    let mut results = Vec::new();
    for r in racers {
        results.push(r.await.expect("racer"));
    }
    results
}

/// Exactly one racer won; every loser was rejected at `expected` with the stream one
/// ahead. Returns the winner's index.
#[track_caller]
fn one_winner(results: &[marten::Result<()>], expected: i64) -> usize {
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one winner: {results:?}");
    for r in results {
        if let Err(e) = r {
            assert_eq!(version_conflict(e), (expected, Some(expected + 1)), "{e}");
        }
    }
    winners[0]
}

// ---------------------------------------------------------------------------------------
// FetchForWritingCompliance

/// FetchForWritingCompliance `fetch_for_writing_an_existing_stream_returns_current_state_and_version`,
/// `fetch_for_writing_with_a_matching_expected_version_commits`,
/// `appending_with_a_stale_expected_version_fails`,
/// `append_optimistic_against_an_existing_stream` and
/// `append_exclusive_against_an_existing_stream`, with the inline aggregate: the handle
/// of an existing stream reads its state and version, a matching expected version
/// commits (the document follows), a stale one on a plain append fails and writes
/// nothing, and optimistic and exclusive appends each move the stream by one.
#[tokio::test]
async fn a_handle_reads_state_and_version_and_every_append_kind_asserts_its_own() {
    let (_schema, store) = vault_store("jxs_ffw_kinds", Lifecycle::Inline, 10_000).await;
    let id = open_vault(&store, &[100, 50]).await;
    let mut s = store.lightweight_session();
    let w = ok(s.events().fetch_for_writing::<Vault>(id).await);
    assert_eq!(w.version(), 3);
    assert_eq!(
        w.state().map(|v| (v.owner.as_str(), v.balance, v.version)),
        Some(("Hilda", 150, 3))
    );
    drop(w);

    let mut w = ok(s.events().fetch_for_writing_expected::<Vault>(id, 3).await);
    assert_eq!(w.state().map(|v| v.balance), Some(150));
    ok(w.append([posted(1)]));
    ok(s.save_changes().await);
    assert_eq!(stored(&store, id).await, Some((151, 4)));

    ok(s.events().append_expected(id, 99, [posted(1)]));
    let err = s
        .save_changes()
        .await
        .expect_err("a stale expected version");
    assert_eq!(version_conflict(&err), (99, Some(4)));
    assert_eq!(stored(&store, id).await, Some((151, 4)), "nothing written");
    assert_eq!(stream_version(&store, id).await, Some(4));

    ok(s.events().append_optimistic(id, [posted(7)]).await);
    ok(s.save_changes().await);
    assert_eq!(stream_version(&store, id).await, Some(5));
    ok(s.events().append_exclusive(id, [posted(3)]).await);
    ok(s.save_changes().await);
    assert_eq!(stream_version(&store, id).await, Some(6));
    assert_eq!(stored(&store, id).await, Some((161, 6)));
    assert_eq!(
        folded_from_scratch(&store, id)
            .await
            .map(|v| (v.balance, v.version)),
        Some((161, 6))
    );
}

/// FetchForWritingCompliance `two_writers_racing_on_the_same_starting_version_lose_the_second_write`,
/// with the inline aggregate and no cache: in turn (the first saves, then the second is
/// rejected) and racing (handles read at one version, saves released together): one
/// write stands, the others are rejected, and the document holds only the winner's.
#[tokio::test]
async fn writers_at_one_expected_version_lose_all_but_the_first_write() {
    let (_schema, store) = vault_store("jxs_ffw_two_writers", Lifecycle::Inline, 0).await;
    let id = open_vault(&store, &[100]).await;
    let mut first = store.lightweight_session();
    let mut second = store.lightweight_session();
    let mut a = ok(first
        .events()
        .fetch_for_writing_expected::<Vault>(id, 2)
        .await);
    let mut b = ok(second
        .events()
        .fetch_for_writing_expected::<Vault>(id, 2)
        .await);
    ok(a.append([posted(10)]));
    ok(first.save_changes().await);
    ok(b.append([posted(20)]));
    let err = second.save_changes().await.expect_err("the second write");
    assert_eq!(version_conflict(&err), (2, Some(3)));
    assert_eq!(stored(&store, id).await, Some((110, 3)));

    let mut balance = 110;
    for round in 0..4 {
        let version = 3 + round;
        let amounts = [1, 2, 4, 8, 16];
        let results = race_handles(&store, id, version, &amounts).await;
        balance += amounts[one_winner(&results, version)];
        assert_eq!(stored(&store, id).await, Some((balance, version + 1)));
    }
    assert_eq!(
        folded_from_scratch(&store, id)
            .await
            .map(|v| (v.balance, v.version)),
        Some((balance, 7))
    );
}

/// FetchForWritingCompliance `write_to_aggregate_with_the_action_overload`, with an
/// inline and a live aggregate: the decision sees the current state, what it returns is
/// appended and saved, the command returns the new version, and a reader sees the
/// result.
#[tokio::test]
async fn write_to_aggregate_decides_on_the_current_state_and_saves() {
    for lifecycle in [Lifecycle::Inline, Lifecycle::Live] {
        let label = format!("jxs_wta_{lifecycle:?}").to_lowercase();
        let (_schema, store) = vault_store(&label, lifecycle, 10_000).await;
        let id = open_vault(&store, &[100]).await;
        let mut seen = Vec::new();
        let mut s = store.lightweight_session();
        let version = ok(s
            .events()
            .write_to_aggregate::<Vault, _, _>(id, |v: Option<&Vault>| {
                seen.push(v.map(|v| (v.version, v.balance)));
                Ok::<_, marten::Error>(vec![Reversed { amount: 40 }])
            })
            .await);
        assert_eq!(version, 3, "{label}");
        assert_eq!(seen, [Some((2, 100))], "{label}");
        let mut reader = store.lightweight_session();
        let latest = ok(reader.events().fetch_latest::<Vault>(id).await).expect("vault");
        assert_eq!((latest.balance, latest.version), (60, 3), "{label}");
        if lifecycle == Lifecycle::Inline {
            assert_eq!(stored(&store, id).await, Some((60, 3)), "{label}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// FetchLatestCompliance

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct TabOpened {
    customer: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct DrinkOrdered {
    price: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct TabClosed {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Tab {
    id: Uuid,
    version: i64,
    customer: String,
    total: i64,
    closed: bool,
}

#[marten::apply]
impl Tab {
    fn create(e: &TabOpened) -> Self {
        Tab {
            id: Uuid::nil(),
            version: 0,
            customer: e.customer.clone(),
            total: 0,
            closed: false,
        }
    }

    fn apply(&mut self, e: &DrinkOrdered) {
        self.total += e.price;
    }

    fn apply(&mut self, _e: &TabClosed) {
        self.closed = true;
    }
}

fn tab_builder(b: DocumentStoreBuilder, inline: bool) -> DocumentStoreBuilder {
    let b = b
        .event::<TabOpened>()
        .event::<DrinkOrdered>()
        .event::<TabClosed>();
    if inline {
        b.projection::<Tab>(Lifecycle::Inline)
    } else {
        b
    }
}

/// FetchLatestCompliance `fetch_latest_returns_the_current_aggregate`,
/// `fetch_latest_reflects_a_later_append`, `fetch_latest_for_an_unknown_stream_is_null`
/// and `fetch_latest_gives_the_same_answer_with_no_snapshot_registered`: with the tab
/// inline and live, a store that read the tab (and so cached it) reads it again, in the
/// same session, after another store appended to it: the later append is seen, and the
/// answer is the same for both lifecycles.
#[tokio::test]
async fn fetch_latest_sees_a_later_append_by_another_store_whatever_the_lifecycle() {
    let mut answers = Vec::new();
    for inline in [true, false] {
        let label = if inline {
            "jxs_latest_inline"
        } else {
            "jxs_latest_live"
        };
        let (schema, b) = builder(label);
        let store = ok(tab_builder(b, inline).build().await);
        let other = ok(tab_builder(builder_on(&schema), inline).build().await);
        let id = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(
            id,
            [
                PendingEvent::new(TabOpened {
                    customer: "Ada".into(),
                }),
                DrinkOrdered { price: 4 }.into(),
            ],
        ));
        ok(s.save_changes().await);
        let first = ok(s.events().fetch_latest::<Tab>(id).await).expect("tab");
        assert_eq!(
            (first.customer.as_str(), first.total, first.version),
            ("Ada", 4, 2)
        );

        let mut w = other.lightweight_session();
        ok(w.events().append(
            id,
            [
                PendingEvent::new(DrinkOrdered { price: 6 }),
                TabClosed {}.into(),
            ],
        ));
        ok(w.save_changes().await);

        let tab = ok(s.events().fetch_latest::<Tab>(id).await).expect("tab");
        assert_eq!(
            (tab.id, tab.total, tab.closed, tab.version),
            (id, 10, true, 4),
            "{label}: the later append"
        );
        let fresh = ok(store
            .lightweight_session()
            .events()
            .fetch_latest::<Tab>(id)
            .await);
        assert_eq!(
            fresh.as_ref(),
            Some(&tab),
            "{label}: a fresh session agrees"
        );
        assert!(
            ok(s.events().fetch_latest::<Tab>(Uuid::now_v7()).await).is_none(),
            "{label}"
        );
        answers.push((tab.customer, tab.total, tab.closed, tab.version));
    }
    assert_eq!(answers[0], answers[1], "inline and live agree");
}

// ---------------------------------------------------------------------------------------
// LiveAggregationCompliance

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct TrailStarted {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct MilesWalked {
    miles: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Trail {
    id: Uuid,
    version: i64,
    name: String,
    miles: i64,
}

#[marten::apply]
impl Trail {
    fn create(e: &TrailStarted) -> Self {
        Trail {
            id: Uuid::nil(),
            version: 0,
            name: e.name.clone(),
            miles: 0,
        }
    }

    fn apply(&mut self, e: &MilesWalked) {
        self.miles += e.miles;
    }
}

/// LiveAggregationCompliance `aggregate_stream_folds_every_event`,
/// `aggregate_stream_bounded_by_version`, `aggregate_stream_bounded_by_timestamp` (for a
/// type registered nowhere, folded live) and `aggregate_stream_for_an_unknown_stream_is_null`.
#[tokio::test]
async fn a_live_fold_reads_the_whole_stream_or_up_to_a_version_or_a_time() {
    let (_schema, b) = builder("jxs_live_trail");
    let store = ok(b
        .event::<TrailStarted>()
        .event::<MilesWalked>()
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(TrailStarted {
                name: "Pennine Way".into(),
            }),
            MilesWalked { miles: 12 }.into(),
        ],
    ));
    ok(s.save_changes().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    ok(s.events().append(id, [MilesWalked { miles: 9 }]));
    ok(s.save_changes().await);

    let trail = ok(s.events().aggregate_stream::<Trail>(id).await).expect("trail");
    assert_eq!(
        (trail.id, trail.name.as_str(), trail.miles, trail.version),
        (id, "Pennine Way", 21, 3)
    );
    let at_two = ok(s
        .events()
        .aggregate_stream_with::<Trail>(id, StreamRange::all().up_to_version(2))
        .await)
    .expect("at 2");
    assert_eq!((at_two.miles, at_two.version), (12, 2));

    let all = ok(s.events().fetch_stream(id).await);
    assert!(all[2].timestamp > all[1].timestamp, "two commits");
    let cutoff = all[1].timestamp + (all[2].timestamp - all[1].timestamp) / 2;
    let then = ok(s
        .events()
        .aggregate_stream_with::<Trail>(id, StreamRange::all().up_to_time(cutoff))
        .await)
    .expect("then");
    assert_eq!((then.miles, then.version), (12, 2));
    assert!(ok(s.events().aggregate_stream::<Trail>(Uuid::now_v7()).await).is_none());
}

// ---------------------------------------------------------------------------------------
// StreamReadCompliance

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ExpeditionPlanned {
    destination: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct SuppliesLoaded {
    crates: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct CampMade {
    place: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ExpeditionFinished {}

/// StreamReadCompliance `fetch_stream_returns_every_event_in_order`,
/// `fetch_stream_bounded_by_version` and `fetch_stream_from_a_starting_version`: every
/// event in version order with its type, data and stream, sequences ascending in the
/// global order (also across two streams saved alternately), and the version bounds.
#[tokio::test]
async fn a_stream_reads_in_order_with_its_types_and_within_version_bounds() {
    let (_schema, b) = builder("jxs_stream_read");
    let store = ok(b
        .event::<ExpeditionPlanned>()
        .event::<SuppliesLoaded>()
        .event::<CampMade>()
        .event::<ExpeditionFinished>()
        .build()
        .await);
    let (id, other) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(ExpeditionPlanned {
                destination: "The North".into(),
            }),
            SuppliesLoaded { crates: 12 }.into(),
        ],
    ));
    ok(s.save_changes().await);
    ok(s.events()
        .start_stream(other, [SuppliesLoaded { crates: 1 }]));
    ok(s.save_changes().await);
    ok(s.events().append(
        id,
        [
            PendingEvent::new(CampMade {
                place: "Base Camp".into(),
            }),
            ExpeditionFinished {}.into(),
        ],
    ));
    ok(s.save_changes().await);

    let events = ok(s.events().fetch_stream(id).await);
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(events[0].is::<ExpeditionPlanned>());
    assert_eq!(
        events[1].data_as::<SuppliesLoaded>(),
        Some(&SuppliesLoaded { crates: 12 })
    );
    assert!(events[2].is::<CampMade>());
    assert!(events[3].is::<ExpeditionFinished>());
    assert!(events.iter().all(|e| e.stream_id == StreamId::Uuid(id)));
    assert!(events.iter().all(|e| !e.archived));
    assert_eq!(events[0].event_type, "expedition_planned");
    assert!(
        events.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequences ascend"
    );
    let between = ok(s.events().fetch_stream(other).await);
    assert_eq!(between.len(), 1);
    assert!(
        events[1].sequence < between[0].sequence && between[0].sequence < events[2].sequence,
        "the global order follows the saves"
    );

    let first_two = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().up_to_version(2))
        .await);
    assert_eq!(
        first_two.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2]
    );
    let from_three = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().from_version(3))
        .await);
    assert_eq!(
        from_three.iter().map(|e| e.version).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(
        from_three.iter().map(|e| e.id).collect::<Vec<_>>(),
        events[2..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// StreamArchivingCompliance

/// StreamArchivingCompliance `archiving_marks_the_stream_archived_in_its_state` (the
/// version survives), `archiving_is_idempotent`,
/// `events_of_an_archived_stream_report_themselves_as_archived` and
/// `archiving_a_stream_that_does_not_exist_is_not_an_error`, with the archive racing
/// plain appends: every append either landed before the archive (and is archived with
/// the rest) or was rejected as archived; the state's version counts exactly the events
/// stored, contiguous from 1.
#[tokio::test]
async fn archiving_while_writers_append_keeps_every_landed_event_and_no_other() {
    const APPENDERS: usize = 6;
    let (_schema, store) = vault_store("jxs_archive_race", Lifecycle::Live, 10_000).await;
    for round in 0..3 {
        let id = open_vault(&store, &[25, 75]).await;
        let mut s = store.lightweight_session();
        let before = ok(s.events().fetch_stream_state(id).await).expect("stream");
        assert_eq!((before.version, before.archived), (3, false));

        let barrier = Arc::new(Barrier::new(APPENDERS + 1));
        let appenders: Vec<_> = (0..APPENDERS)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    s.events().append(id, [posted(i as i64 + 1)])?;
                    barrier.wait().await;
                    s.save_changes().await
                })
            })
            .collect();
        let archiver = {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                s.events().archive_stream(id)?;
                barrier.wait().await;
                s.save_changes().await
            })
        };
        let mut landed = 0;
        for a in appenders {
            match a.await.expect("appender") {
                Ok(()) => landed += 1,
                Err(e) => assert_eq!(
                    e.rejections()
                        .iter()
                        .map(|r| r.kind.clone())
                        .collect::<Vec<_>>(),
                    [RejectionKind::StreamArchived],
                    "{e}"
                ),
            }
        }
        ok(archiver.await.expect("archiver"));

        let state = ok(s.events().fetch_stream_state(id).await).expect("stream");
        assert!(state.archived);
        assert_eq!(state.version, 3 + landed, "the version counts what landed");
        let whole = ok(s
            .events()
            .fetch_stream_with(id, StreamRange::all().including_archived())
            .await);
        assert_eq!(
            whole.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=state.version).collect::<Vec<_>>()
        );
        let live: Vec<i64> = whole
            .iter()
            .filter(|e| !e.archived)
            .map(|e| e.version)
            .collect();
        let normal: Vec<i64> = ok(s.events().fetch_stream(id).await)
            .iter()
            .filter(|e| !e.archived)
            .map(|e| e.version)
            .collect();
        assert!(
            live.is_empty() && normal.is_empty(),
            "round {round}: the stream is archived at version {}, {landed} racing appends \
             landed, yet events {live:?} are stored unarchived and a normal read returns \
             {normal:?} as live",
            state.version
        );

        ok(s.events().archive_stream(id));
        ok(s.save_changes().await);
        let again = ok(s.events().fetch_stream_state(id).await).expect("stream");
        assert_eq!((again.version, again.archived), (state.version, true));
    }
    let phantom = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().archive_stream(phantom));
    ok(s.save_changes().await);
    assert!(ok(s.events().fetch_stream_state(phantom).await).is_none());
}

// ---------------------------------------------------------------------------------------
// PendingStreamActionsCompliance

/// PendingStreamActionsCompliance, mapped onto what marten-rs exposes of a session's
/// queued work (`pending_changes`, which counts queued events; there is no accessor to the
/// queued stream actions themselves): a fresh session has nothing pending; a start, an
/// append to the started stream and a start of a second stream are pending, in this
/// session only, and nothing reaches the database before the save
/// (`a_session_with_nothing_enlisted_has_no_pending_streams`,
/// `pending_streams_carry_every_event_enlisted_for_a_stream_in_order`,
/// `several_streams_are_all_pending_together`, `appending_to_an_existing_stream_is_pending_too`,
/// `pending_streams_are_reported_per_session`); the save lands them in order and clears
/// them (`committing_clears_the_pending_streams`).
#[tokio::test]
async fn queued_stream_work_is_per_session_until_the_save_clears_it() {
    let (_schema, b) = builder("jxs_pending");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .event::<VaultOpened>()
        .event::<Posted>()
        .build()
        .await);
    let (first, second, existing) = ("kiln-1", "kiln-2", "kiln-old");
    let mut setup = store.lightweight_session();
    ok(setup.events().start_stream(
        existing,
        [VaultOpened {
            owner: "old".into(),
        }],
    ));
    ok(setup.save_changes().await);

    let mut one = store.lightweight_session();
    let mut two = store.lightweight_session();
    assert_eq!(one.pending_changes(), 0);
    ok(one
        .events()
        .start_stream(first, [VaultOpened { owner: "n".into() }]));
    assert_eq!(one.pending_changes(), 1);
    ok(one.events().append(first, [posted(120)]));
    assert_eq!(one.pending_changes(), 2);
    ok(one
        .events()
        .start_stream(second, [VaultOpened { owner: "w".into() }]));
    ok(one.events().append(existing, [posted(90)]));
    assert_eq!(one.pending_changes(), 4);
    ok(two.events().append(second, [posted(1)]));
    assert_eq!((one.pending_changes(), two.pending_changes()), (4, 1));

    let mut reader = store.lightweight_session();
    assert!(ok(reader.events().fetch_stream_state(first).await).is_none());
    assert_eq!(
        ok(reader.events().fetch_stream_state(existing).await).map(|s| s.version),
        Some(1),
        "pending, not committed"
    );

    ok(one.save_changes().await);
    assert_eq!(
        one.pending_changes(),
        0,
        "the save clears what it committed"
    );
    let kiln = ok(reader.events().fetch_stream(first).await);
    assert_eq!(kiln.len(), 2);
    assert!(kiln[0].is::<VaultOpened>() && kiln[1].is::<Posted>());
    assert_eq!(
        ok(reader.events().fetch_stream_state(existing).await).map(|s| s.version),
        Some(2)
    );
    assert_eq!(
        two.pending_changes(),
        1,
        "the other session's work stays its own"
    );
    ok(two.save_changes().await);
    assert_eq!(
        ok(reader.events().fetch_stream_state(second).await).map(|s| s.version),
        Some(2)
    );
}

// ---------------------------------------------------------------------------------------
// GuidOptimisticConcurrencyCompliance (its pairing, on the event side)

/// GuidOptimisticConcurrencyCompliance's pairing carried to streams:
/// `a_document_loaded_in_one_session_can_be_stored_through_another` (a version read in one
/// session is honoured by an append in a session that never read the stream),
/// `a_stale_instance_is_refused_and_the_winner_stands`,
/// `a_successful_write_moves_the_instances_own_version_on` (a handle's version, and a
/// command's result, are the version to expect next) and
/// `a_type_with_no_version_member_is_unguarded` (a plain append from a stale read lands).
#[tokio::test]
async fn a_version_read_in_one_session_guards_an_append_in_another() {
    let (_schema, store) = vault_store("jxs_cross_session", Lifecycle::Inline, 10_000).await;
    let id = open_vault(&store, &[100]).await;

    let read = ok(store
        .lightweight_session()
        .events()
        .fetch_stream_state(id)
        .await)
    .expect("stream")
    .version;
    let mut writer = store.lightweight_session();
    ok(writer.events().append_expected(id, read, [posted(1)]));
    ok(writer.save_changes().await);
    assert_eq!(stored(&store, id).await, Some((101, 3)));

    let stale_a = stream_version(&store, id).await.expect("a");
    let stale_b = stream_version(&store, id).await.expect("b");
    let mut a = store.lightweight_session();
    ok(a.events().append_expected(id, stale_a, [posted(10)]));
    ok(a.save_changes().await);
    let mut b = store.lightweight_session();
    ok(b.events().append_expected(id, stale_b, [posted(500)]));
    let err = b.save_changes().await.expect_err("stale");
    assert_eq!(version_conflict(&err), (3, Some(4)));
    assert_eq!(
        stored(&store, id).await,
        Some((111, 4)),
        "the winner stands"
    );

    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_writing::<Vault>(id).await);
    ok(w.append([posted(1)]));
    let next = w.version();
    assert_eq!(next, 5, "the handle's version moved on with its append");
    ok(s.save_changes().await);
    let mut other = store.lightweight_session();
    ok(other.events().append_expected(id, next, [posted(1)]));
    ok(other.save_changes().await);
    let (after, _) = command(&store, id, 1).await;
    assert_eq!(after, 7);
    let mut other = store.lightweight_session();
    ok(other.events().append_expected(id, after, [posted(1)]));
    ok(other.save_changes().await);

    let mut plain = store.lightweight_session();
    ok(plain.events().append(id, [posted(1000)]));
    ok(plain.save_changes().await);
    assert_eq!(stored(&store, id).await, Some((1115, 9)));
}

// ---------------------------------------------------------------------------------------
// AggregateWriteCacheCompliance, on `write_to_aggregate` and the aggregate cache

/// AggregateWriteCacheCompliance `a_cache_hit_returns_the_state_a_cold_fetch_would_have`,
/// `a_cached_baseline_still_sees_events_appended_by_someone_else` (by another session of
/// the same store and by another store) and `two_streams_of_the_same_type_get_their_own_entries`,
/// for a live aggregate: a caching store decides on what a store without a cache reads,
/// and the decision that is saved is always made on the stream as it is.
#[tokio::test]
async fn a_cached_command_decides_on_what_a_cold_read_sees() {
    let (schema, store) = vault_store("jxs_cache_cold", Lifecycle::Live, 10_000).await;
    let cold = other_vault_store(&schema, Lifecycle::Live, 0).await;
    let other = other_vault_store(&schema, Lifecycle::Live, 10_000).await;
    let first = open_vault(&store, &[100]).await;
    let second = open_vault(&store, &[7]).await;
    assert_eq!(command(&store, first, 10).await, (3, vec![Some((2, 100))]));
    assert_eq!(command(&store, second, 1).await, (3, vec![Some((2, 7))]));

    // Warm: the cached store and a cold one decide on the same state.
    let (v, warm) = command(&store, second, 0).await;
    let (_, cold_seen) = command(&cold, second, 0).await;
    assert_eq!((v, warm), (4, vec![Some((3, 8))]), "its own entry");
    assert_eq!(cold_seen, [Some((4, 8))]);
    let (_, warm) = command(&store, first, 0).await;
    assert_eq!(warm, [Some((3, 110))]);

    // Someone else appends: by another session of this store, then by another store.
    plain_post(&store, first, 25).await;
    let (v, seen) = command(&store, first, 1).await;
    assert_eq!(v, 6);
    assert_eq!(seen.last(), Some(&Some((5, 135))), "{seen:?}");
    plain_post(&other, first, 5).await;
    let (v, seen) = command(&store, first, 1).await;
    assert_eq!(v, 8);
    assert_eq!(seen.last(), Some(&Some((7, 141))), "{seen:?}");
    let (_, cold_seen) = command(&cold, first, 0).await;
    assert_eq!(cold_seen, [Some((8, 142))]);
    let (_, warm) = command(&store, first, 0).await;
    assert_eq!(warm.last(), Some(&Some((9, 142))));
    assert_eq!(
        folded_from_scratch(&store, first)
            .await
            .map(|v| (v.balance, v.version)),
        Some((142, 10))
    );
}

/// AggregateWriteCacheCompliance `an_evicted_entry_falls_back_to_a_correct_uncached_fetch`:
/// with room for one entry, warming a second stream evicts the first; the next command on
/// the first reads the stream (one decision, on the state another store left).
#[tokio::test]
async fn an_evicted_entry_is_decided_on_from_a_fresh_read() {
    let (schema, store) = vault_store("jxs_cache_evict", Lifecycle::Live, 1).await;
    let other = other_vault_store(&schema, Lifecycle::Live, 0).await;
    let x = open_vault(&store, &[100]).await;
    let y = open_vault(&store, &[1]).await;
    command(&store, x, 10).await;
    command(&store, y, 1).await;
    plain_post(&other, x, 25).await;
    let (v, seen) = command(&store, x, 5).await;
    assert_eq!((v, seen), (5, vec![Some((4, 135))]), "no stale decision");
    // The entry is back: another store's append now makes the next decision a stale one.
    plain_post(&other, x, 1).await;
    let (v, seen) = command(&store, x, 0).await;
    assert_eq!(v, 7);
    assert_eq!(seen, [Some((5, 140)), Some((6, 141))], "cached, then read");
}

/// AggregateWriteCacheCompliance `a_cached_baseline_cannot_suppress_a_concurrency_exception`,
/// `a_stale_expected_version_still_fails_against_a_warm_cache` and
/// `a_failed_commit_leaves_no_poisoned_entry_behind`, for the inline aggregate and the
/// store's cache of it: handles read at one version off a warm cache race their saves and
/// all but one are rejected; a stale expected version fails at the fetch and on a plain
/// append; after the losers, the next reads and a plain append planned from the cache
/// build on the winner's state, never a loser's.
#[tokio::test]
async fn a_warm_cache_never_suppresses_a_version_conflict_nor_keeps_a_losers_state() {
    let (_schema, store) = vault_store("jxs_cache_conflict", Lifecycle::Inline, 10_000).await;
    let id = open_vault(&store, &[100]).await;
    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_writing::<Vault>(id).await);
    ok(w.append([posted(10)]));
    ok(s.save_changes().await);
    assert_eq!(stored(&store, id).await, Some((110, 3)));

    let err = s
        .events()
        .fetch_for_writing_expected::<Vault>(id, 99)
        .await
        .err()
        .expect("stale at the fetch");
    assert_eq!(version_conflict(&err), (99, Some(3)));
    ok(s.events().append_expected(id, 99, [posted(1)]));
    let err = s.save_changes().await.expect_err("stale at the save");
    assert_eq!(version_conflict(&err), (99, Some(3)));

    let mut balance = 110;
    for round in 0..3 {
        let version = 3 + round;
        let amounts = [1, 500, 700, 900];
        let results = race_handles(&store, id, version, &amounts).await;
        balance += amounts[one_winner(&results, version)];
        let mut s = store.lightweight_session();
        let w = ok(s.events().fetch_for_writing::<Vault>(id).await);
        assert_eq!(
            (w.version(), w.state().map(|v| v.balance)),
            (version + 1, Some(balance)),
            "round {round}: the winner's state"
        );
    }
    plain_post(&store, id, 1).await;
    balance += 1;
    assert_eq!(stored(&store, id).await, Some((balance, 7)));
    let scratch = folded_from_scratch(&store, id).await.expect("vault");
    assert_eq!((scratch.balance, scratch.version), (balance, 7));
    let latest = ok(store
        .lightweight_session()
        .events()
        .fetch_latest::<Vault>(id)
        .await);
    assert_eq!(latest, Some(scratch));
}

/// AggregateWriteCacheCompliance `an_async_snapshotted_aggregate_is_cached_too`,
/// `an_async_cached_baseline_folds_the_delta_after_it` and
/// `an_async_cached_baseline_cannot_suppress_a_concurrency_exception`: `Vault` projected
/// by the daemon, which never runs here (its document never exists): commands are decided
/// on the cached state (a stale one shows as a first decision on it), the events other
/// writers appended after it are folded, and racing handles leave one winner.
#[tokio::test]
async fn an_async_aggregate_is_cached_folds_the_delta_and_keeps_conflicts() {
    let (schema, store) = vault_store("jxs_cache_async", Lifecycle::Async, 10_000).await;
    let other = other_vault_store(&schema, Lifecycle::Async, 10_000).await;
    let id = open_vault(&store, &[100]).await;
    assert_eq!(command(&store, id, 10).await, (3, vec![Some((2, 100))]));
    plain_post(&other, id, 25).await;
    plain_post(&other, id, 5).await;
    let (v, seen) = command(&store, id, 0).await;
    assert_eq!(v, 6);
    assert_eq!(
        seen,
        [Some((3, 110)), Some((5, 140))],
        "the cached state, then the delta folded"
    );
    assert!(stored(&store, id).await.is_none(), "the daemon never ran");

    let results = race_handles(&store, id, 6, &[1, 2, 3]).await;
    let won = [1, 2, 3][one_winner(&results, 6)];
    let (v, seen) = command(&store, id, 0).await;
    assert_eq!(v, 8);
    assert_eq!(seen.last(), Some(&Some((7, 140 + won))), "{seen:?}");
}
