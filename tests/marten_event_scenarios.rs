//! Event-store scenarios carried over from JasperFx.Events' compliance suites
//! (`src/JasperFx.Events.ComplianceTests/Suites`) and Marten's event-sourcing tests
//! (`src/EventSourcingTests`, with its `Bugs` folder): the behaviour of each, mapped onto
//! this crate's API. Each test names the suite test or Marten test it comes from.

mod common;

use std::time::Duration;

use common::{builder, ok};
use marten::prelude::*;
use marten::{EventProjection, ProjectedOps, RejectionKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------
// The account domain (FetchForWritingCompliance's `ComplianceAccount`).

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct AccountOpened {
    owner: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct MoneyDeposited {
    amount: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct MoneyWithdrawn {
    amount: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct AccountClosed {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Account {
    id: Uuid,
    version: i64,
    owner: String,
    balance: i64,
}

#[marten::apply]
impl Account {
    fn create(e: &AccountOpened) -> Self {
        Account {
            id: Uuid::nil(),
            version: 0,
            owner: e.owner.clone(),
            balance: 0,
        }
    }

    fn apply(&mut self, e: &MoneyDeposited) {
        self.balance += e.amount;
    }

    fn apply(&mut self, e: &MoneyWithdrawn) {
        self.balance -= e.amount;
    }

    fn should_delete(&self, _e: &AccountClosed) -> bool {
        true
    }
}

/// A second view of the same account streams (a count of deposits), folded live.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Deposits {
    id: Uuid,
    version: i64,
    count: i64,
}

#[marten::apply]
impl Deposits {
    fn apply(&mut self, _e: &MoneyDeposited) {
        self.count += 1;
    }
}

/// The account aggregate over string-keyed streams (StringStreamIdentityCompliance).
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Ledger {
    id: String,
    version: i64,
    owner: String,
    balance: i64,
}

#[marten::apply]
impl Ledger {
    fn create(e: &AccountOpened) -> Self {
        Ledger {
            id: String::new(),
            version: 0,
            owner: e.owner.clone(),
            balance: 0,
        }
    }

    fn apply(&mut self, e: &MoneyDeposited) {
        self.balance += e.amount;
    }

    fn apply(&mut self, e: &MoneyWithdrawn) {
        self.balance -= e.amount;
    }
}

fn opened(owner: &str) -> AccountOpened {
    AccountOpened {
        owner: owner.into(),
    }
}

fn deposit(amount: i64) -> MoneyDeposited {
    MoneyDeposited { amount }
}

fn withdraw(amount: i64) -> MoneyWithdrawn {
    MoneyWithdrawn { amount }
}

/// A store with `Account` as an inline projection, or without it (folded live).
async fn account_store(label: &str, inline: bool) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let b = if inline {
        b.projection::<Account>(Lifecycle::Inline)
    } else {
        b.event::<AccountOpened>()
            .event::<MoneyDeposited>()
            .event::<MoneyWithdrawn>()
            .event::<AccountClosed>()
    };
    let store = ok(b.build().await);
    (schema, store)
}

/// Opens an account with `events` after the opening, in one save.
async fn open_account(store: &DocumentStore, events: Vec<PendingEvent>) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let mut all = vec![PendingEvent::new(opened("Hilda"))];
    all.extend(events);
    ok(s.events().start_stream(id, all));
    ok(s.save_changes().await);
    id
}

fn version_conflict(err: &marten::Error) -> (i64, Option<i64>) {
    match err.rejections().first().map(|r| &r.kind) {
        Some(RejectionKind::UnexpectedStreamVersion { expected, actual }) => (*expected, *actual),
        _ => panic!("expected an unexpected-version rejection, got {err:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// FetchForWriting / FetchLatest

/// FetchForWritingCompliance `fetch_for_writing_a_stream_that_does_not_exist_yet` and
/// FetchLatestCompliance `fetch_latest_after_fetch_for_writing_and_save_is_not_stale`
/// (Marten `fetch_latest_inline_aggregate` / `fetch_latest_live_aggregate`
/// `from_after_fetch_for_writing_*`), with an inline and a live aggregate: a new stream
/// reads as version 0 without state, appending through the handle starts it, and the same
/// session then reads its own saved appends through `fetch_latest` and a second
/// `fetch_for_writing`.
#[tokio::test]
async fn a_new_stream_fetched_for_writing_then_read_back_in_the_same_session() {
    for inline in [true, false] {
        let label = if inline {
            "mes_ffw_new_inline"
        } else {
            "mes_ffw_new_live"
        };
        let (_schema, store) = account_store(label, inline).await;
        let id = Uuid::now_v7();
        let mut s = store.lightweight_session();

        let mut w = ok(s.events().fetch_for_writing::<Account>(id).await);
        assert!(w.state().is_none(), "{label}");
        assert_eq!(w.version(), 0, "{label}");
        assert_eq!(w.stream(), &StreamId::Uuid(id));
        ok(w.append([PendingEvent::new(opened("Hilda")), deposit(4).into()]));
        ok(s.save_changes().await);

        let latest = ok(s.events().fetch_latest::<Account>(id).await).expect("saved");
        assert_eq!(
            (latest.owner.as_str(), latest.balance),
            ("Hilda", 4),
            "{label}"
        );
        assert_eq!((latest.id, latest.version), (id, 2), "{label}");

        let mut w = ok(s.events().fetch_for_writing::<Account>(id).await);
        assert_eq!(w.version(), 2, "{label}");
        assert_eq!(w.state().map(|a| a.balance), Some(4), "{label}");
        ok(w.append([deposit(6)]));
        ok(s.save_changes().await);

        let latest = ok(s.events().fetch_latest::<Account>(id).await).expect("saved");
        assert_eq!(
            (latest.balance, latest.version),
            (10, 3),
            "{label}: not stale"
        );
        let folded = ok(s.events().aggregate_stream::<Account>(id).await).expect("folded");
        assert_eq!(folded, latest, "{label}: fetch_latest agrees with a fold");
        let stored = ok(store.query_session().load::<Account>(&id).await);
        assert_eq!(
            stored.is_some(),
            inline,
            "{label}: only an inline aggregate is stored"
        );
        if inline {
            assert_eq!(stored, Some(latest), "{label}");
        }
    }
}

/// FetchForWritingCompliance
/// `appending_to_the_handle_advances_current_version_but_not_starting_version`: appends
/// through one handle, in several calls, advance its version by the events appended; the
/// save lands them all (each call asserting the version the one before left), with the
/// inline aggregate folded over all of them.
#[tokio::test]
async fn appends_through_one_handle_advance_its_version() {
    for inline in [true, false] {
        let label = if inline {
            "mes_ffw_steps_inline"
        } else {
            "mes_ffw_steps_live"
        };
        let (_schema, store) = account_store(label, inline).await;
        let id = open_account(&store, vec![deposit(100).into()]).await;
        let mut s = store.lightweight_session();
        let mut w = ok(s.events().fetch_for_writing::<Account>(id).await);
        assert_eq!(w.version(), 2);
        ok(w.append([deposit(25)]));
        assert_eq!(w.version(), 3);
        ok(w.append([withdraw(5), withdraw(10)]));
        assert_eq!(w.version(), 5);
        ok(w.append(Vec::<MoneyDeposited>::new()));
        assert_eq!(w.version(), 5, "appending nothing moves nothing");
        ok(s.save_changes().await);

        let state = ok(s.events().fetch_stream_state(id).await).expect("stream");
        assert_eq!(state.version, 5, "{label}");
        let versions: Vec<i64> = ok(s.events().fetch_stream(id).await)
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, [1, 2, 3, 4, 5], "{label}");
        let account = ok(s.events().fetch_latest::<Account>(id).await).expect("account");
        assert_eq!((account.balance, account.version), (110, 5), "{label}");
        if inline {
            let doc = ok(store.query_session().load::<Account>(&id).await).expect("doc");
            assert_eq!((doc.balance, doc.version), (110, 5), "{label}");
        }
    }
}

/// Marten `fetching_live_aggregates_for_writing.work_correctly_with_multiple_calls`:
/// `fetch_for_writing` twice in one session, for two aggregate types of one stream, with
/// another session appending in between: the second read sees the new version, and an
/// append through it lands. An append through the first, stale handle is rejected with
/// the version it read, and nothing of that save is written.
#[tokio::test]
async fn fetch_for_writing_twice_in_one_session() {
    let (_schema, store) = account_store("mes_ffw_twice", false).await;
    let id = open_account(&store, vec![deposit(1).into(), deposit(2).into()]).await;
    let mut s = store.lightweight_session();
    let first = ok(s.events().fetch_for_writing::<Account>(id).await);
    assert_eq!(first.version(), 3);
    assert_eq!(first.state().map(|a| a.version), Some(3));

    let mut other = store.lightweight_session();
    ok(other.events().append(id, [deposit(3), deposit(4)]));
    ok(other.save_changes().await);

    let mut second = ok(s.events().fetch_for_writing::<Deposits>(id).await);
    assert_eq!(second.version(), 5);
    assert_eq!(second.state().map(|d| (d.count, d.version)), Some((4, 5)));
    ok(second.append([deposit(5)]));
    ok(s.save_changes().await);
    assert_eq!(
        ok(s.events().fetch_stream_state(id).await).map(|st| st.version),
        Some(6)
    );

    // A handle read before another session's append is stale, whatever was read after.
    let mut stale = ok(s.events().fetch_for_writing::<Account>(id).await);
    ok(other.events().append(id, [deposit(6)]));
    ok(other.save_changes().await);
    ok(stale.append([withdraw(1)]));
    let mut fresh = ok(s.events().fetch_for_writing::<Deposits>(id).await);
    assert_eq!(fresh.version(), 7);
    ok(fresh.append([deposit(7)]));
    let err = s
        .save_changes()
        .await
        .expect_err("the first handle is stale");
    assert_eq!(version_conflict(&err), (6, Some(7)));
    let account = ok(s.events().aggregate_stream::<Account>(id).await).expect("account");
    assert_eq!(
        (account.balance, account.version),
        (21, 7),
        "nothing of the failed save"
    );
}

/// Marten `fetch_for_writing_and_projection_metadata_for_inline_projections
/// .fetch_for_writing_without_appending_does_not_block_unrelated_inserts` (#4481): an
/// inline aggregate fetched for writing without an append leaves the save of an
/// unrelated document alone, and the aggregate document unchanged.
#[tokio::test]
async fn fetch_for_writing_without_appending_does_not_block_other_writes() {
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Note {
        id: Uuid,
        text: String,
    }

    let (_schema, b) = builder("mes_ffw_no_append");
    let store = ok(b
        .projection::<Account>(Lifecycle::Inline)
        .document::<Note>()
        .build()
        .await);
    let id = open_account(&store, vec![deposit(10).into()]).await;
    let mut s = store.lightweight_session();
    let w = ok(s.events().fetch_for_writing::<Account>(id).await);
    assert_eq!(w.version(), 2);
    ok(s.store(Note {
        id,
        text: "no new events".into(),
    }));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<Note>(&id).await).map(|n| n.text),
        Some("no new events".into())
    );
    let doc = ok(q.load::<Account>(&id).await).expect("doc");
    assert_eq!((doc.balance, doc.version), (10, 2));
}

/// Marten `fetching_inline_aggregates_for_writing.fetch_for_writing_cache` and
/// StringStreamIdentityCompliance (`fetch_for_writing_a_string_keyed_stream_that_does_not_exist_yet`,
/// `fetch_for_writing_an_existing_string_keyed_stream`,
/// `fetch_for_writing_a_string_key_with_a_stale_expected_version_fails`,
/// `aggregate_a_string_keyed_stream_at_an_earlier_version`, `fetch_latest_by_string_key`):
/// an inline aggregate over string-keyed streams, fetched for writing again in the session
/// that just saved through the first handle, sees that save.
#[tokio::test]
async fn a_string_keyed_inline_aggregate_fetched_for_writing_again_after_its_save() {
    let (_schema, b) = builder("mes_ffw_string");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .projection::<Ledger>(Lifecycle::Inline)
        .build()
        .await);
    let key = format!("ledger-{}", Uuid::now_v7());
    let mut s = store.lightweight_session();

    let mut w = ok(s.events().fetch_for_writing::<Ledger>(key.as_str()).await);
    assert_eq!((w.version(), w.state().is_none()), (0, true));
    assert_eq!(w.stream(), &StreamId::String(key.clone()));
    ok(w.append([opened("foo")]));
    ok(s.save_changes().await);

    let mut w = ok(s.events().fetch_for_writing::<Ledger>(key.as_str()).await);
    assert_eq!(w.state().map(|l| l.owner.as_str()), Some("foo"));
    ok(w.append([deposit(30)]));
    ok(s.save_changes().await);

    let mut w = ok(s.events().fetch_for_writing::<Ledger>(key.as_str()).await);
    assert_eq!(w.version(), 2);
    assert_eq!(
        w.state().map(|l| (l.id.as_str(), l.balance, l.version)),
        Some((key.as_str(), 30, 2))
    );
    ok(w.append([withdraw(5)]));
    ok(s.save_changes().await);

    let err = s
        .events()
        .fetch_for_writing_expected::<Ledger>(key.as_str(), 2)
        .await
        .err()
        .expect("stale");
    assert_eq!(version_conflict(&err), (2, Some(3)));
    let latest = ok(s.events().fetch_latest::<Ledger>(key.as_str()).await).expect("latest");
    assert_eq!((latest.balance, latest.version), (25, 3));
    let earlier = ok(s
        .events()
        .aggregate_stream_with::<Ledger>(key.as_str(), StreamRange::all().up_to_version(2))
        .await)
    .expect("at 2");
    assert_eq!((earlier.balance, earlier.version), (30, 2));
    let doc = ok(store.query_session().load::<Ledger>(&key).await).expect("doc");
    assert_eq!(doc, latest);
    assert!(ok(s.events().fetch_latest::<Ledger>("no-such-key").await).is_none());
}

// ---------------------------------------------------------------------------------------
// Live aggregation

/// LiveAggregationCompliance `aggregate_stream_is_null_once_the_fold_deletes_the_aggregate`
/// and `aggregate_stream_to_last_known_walks_back_past_the_deletion` (the state before the
/// deletion, read up to that version), with an inline and a live aggregate. The stream
/// goes on after the deletion: `fetch_for_writing` reads no state at the stream's real
/// version, an append through it asserts that version, and an opening event creates the
/// aggregate again.
#[tokio::test]
async fn an_aggregate_deleted_by_an_event_reads_as_none_at_the_stream_version() {
    for inline in [true, false] {
        let label = if inline {
            "mes_deleted_inline"
        } else {
            "mes_deleted_live"
        };
        let (_schema, store) = account_store(label, inline).await;
        let id = open_account(&store, vec![deposit(12).into(), AccountClosed {}.into()]).await;
        let mut s = store.lightweight_session();
        assert!(
            ok(s.events().aggregate_stream::<Account>(id).await).is_none(),
            "{label}"
        );
        assert!(
            ok(s.events().fetch_latest::<Account>(id).await).is_none(),
            "{label}"
        );
        assert!(
            ok(store.query_session().load::<Account>(&id).await).is_none(),
            "{label}"
        );
        let before = ok(s
            .events()
            .aggregate_stream_with::<Account>(id, StreamRange::all().up_to_version(2))
            .await)
        .expect("before the deletion");
        assert_eq!((before.balance, before.version), (12, 2), "{label}");

        let mut w = ok(s.events().fetch_for_writing::<Account>(id).await);
        assert!(w.state().is_none(), "{label}");
        assert_eq!(w.version(), 3, "{label}: the stream's version, not 0");
        ok(w.append([PendingEvent::new(opened("Again")), deposit(1).into()]));
        ok(s.save_changes().await);
        let again = ok(s.events().fetch_latest::<Account>(id).await).expect("re-created");
        assert_eq!(
            (again.owner.as_str(), again.balance, again.version),
            ("Again", 1, 5),
            "{label}"
        );
        let stored = ok(store.query_session().load::<Account>(&id).await);
        assert_eq!(stored.is_some(), inline, "{label}");
    }
}

/// LiveAggregationCompliance `aggregate_stream_bounded_by_timestamp` and StreamReadCompliance
/// `fetch_stream_as_of_a_timestamp` / `fetch_stream_within_a_version_window`, for an inline
/// aggregate: a cut-off strictly between two commits folds only the first (from the
/// events, not from the stored document, which is past it), and a version window reads
/// just its versions.
#[tokio::test]
async fn an_inline_aggregate_read_as_of_a_time_or_a_version_window() {
    let (_schema, store) = account_store("mes_as_of_time", true).await;
    let id = open_account(&store, vec![deposit(12).into()]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [deposit(9), deposit(1)]));
    ok(s.save_changes().await);

    let all = ok(s.events().fetch_stream(id).await);
    assert_eq!(all.len(), 4);
    assert!(all[2].timestamp > all[1].timestamp, "two commits");
    let cutoff = all[1].timestamp + (all[2].timestamp - all[1].timestamp) / 2;
    let as_of = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().up_to_time(cutoff))
        .await);
    assert_eq!(as_of.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    let then = ok(s
        .events()
        .aggregate_stream_with::<Account>(id, StreamRange::all().up_to_time(cutoff))
        .await)
    .expect("then");
    assert_eq!((then.balance, then.version), (12, 2));
    let after = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().from_time(cutoff))
        .await);
    assert_eq!(after.iter().map(|e| e.version).collect::<Vec<_>>(), [3, 4]);

    let window = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().from_version(2).up_to_version(3))
        .await);
    assert_eq!(window.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 3]);
    let now = ok(s.events().aggregate_stream::<Account>(id).await).expect("now");
    assert_eq!((now.balance, now.version), (22, 4));
    assert!(ok(s.events().fetch_stream(Uuid::now_v7()).await).is_empty());
}

/// Marten `Bugs/Bug_2528_projections_should_handle_each_event_once` (and
/// `Bug_2666_create_or_apply_but_not_both_should_apply`): an event with both a `create`
/// and an `apply` is created from, not also applied, when it is first; a type with
/// `Default` and a `create` starts from the `create` when the events before are not
/// handled, and from `Default` when they are.
#[tokio::test]
async fn the_first_event_is_created_from_and_not_also_applied() {
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct Increment {}
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct Unrelated {}

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug)]
    struct WithCreate {
        id: Uuid,
        version: i64,
        created: i64,
        applied: i64,
    }
    #[marten::apply]
    impl WithCreate {
        fn create(_e: &Increment) -> Self {
            WithCreate {
                id: Uuid::nil(),
                version: 0,
                created: 1,
                applied: 0,
            }
        }
        fn apply(&mut self, _e: &Increment) {
            self.applied += 1;
        }
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    struct WithBoth {
        id: Uuid,
        version: i64,
        created: i64,
        applied: i64,
    }
    #[marten::apply]
    impl WithBoth {
        fn create(_e: &Increment) -> Self {
            WithBoth {
                created: 1,
                ..WithBoth::default()
            }
        }
        fn apply(&mut self, _e: &Increment) {
            self.applied += 1;
        }
    }

    /// `WithBoth`, also handling `Unrelated` (a no-op).
    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    struct WithBothHandlingUnrelated {
        id: Uuid,
        version: i64,
        created: i64,
        applied: i64,
    }
    #[marten::apply]
    impl WithBothHandlingUnrelated {
        fn create(_e: &Increment) -> Self {
            WithBothHandlingUnrelated {
                created: 1,
                ..Default::default()
            }
        }
        fn apply(&mut self, _e: &Increment) {
            self.applied += 1;
        }
        fn apply_unrelated(&mut self, _e: &Unrelated) {}
    }

    let (_schema, b) = builder("mes_create_once");
    let store = ok(b.build().await);
    let mut s = store.lightweight_session();
    let plain = Uuid::now_v7();
    ok(s.events()
        .append(plain, [Increment {}, Increment {}, Increment {}]));
    let led = Uuid::now_v7();
    ok(s.events().append(
        led,
        [
            PendingEvent::new(Unrelated {}),
            Increment {}.into(),
            Increment {}.into(),
            Increment {}.into(),
        ],
    ));
    ok(s.save_changes().await);

    let a = ok(s.events().aggregate_stream::<WithCreate>(plain).await).expect("created");
    assert_eq!((a.id, a.created, a.applied, a.version), (plain, 1, 2, 3));
    let b = ok(s.events().aggregate_stream::<WithBoth>(plain).await).expect("created");
    assert_eq!((b.id, b.created, b.applied), (plain, 1, 2));
    let c = ok(s.events().aggregate_stream::<WithBoth>(led).await).expect("created");
    assert_eq!((c.created, c.applied, c.version), (1, 2, 4));
    let d = ok(s
        .events()
        .aggregate_stream::<WithBothHandlingUnrelated>(led)
        .await)
    .expect("from default");
    assert_eq!((d.id, d.created, d.applied, d.version), (led, 0, 3, 4));
}

// ---------------------------------------------------------------------------------------
// Archived streams and stream state

/// StreamArchivingCompliance `an_archived_stream_can_still_be_aggregated_to_its_last_known_state`
/// and `archiving_one_stream_leaves_its_neighbours_alone`, Marten
/// `Bugs/start_stream_with_id_of_previously_archived_stream` (without partitioning: the id
/// stays taken) and `archiving_events.prevent_append_operation_for_archived_stream_*`: a
/// live fold of an archived stream leaves its events out (normal reads do) but folds
/// them with `including_archived`; a write decided through `fetch_for_writing` is
/// refused as archived, `fetch_for_exclusive_writing` refuses it as archived, starting a
/// stream with its id is `StreamArchived` (the id stays taken); nothing moves the stream, and its neighbour is untouched.
#[tokio::test]
async fn an_archived_stream_is_read_whole_only_when_asked_and_never_written() {
    for inline in [true, false] {
        let label = if inline {
            "mes_archived_inline"
        } else {
            "mes_archived_live"
        };
        let (_schema, store) = account_store(label, inline).await;
        let id = open_account(&store, vec![deposit(12).into()]).await;
        let neighbour = open_account(&store, vec![deposit(7).into()]).await;
        let mut s = store.lightweight_session();
        ok(s.events().archive_stream(id));
        ok(s.save_changes().await);

        if !inline {
            assert!(
                ok(s.events().aggregate_stream::<Account>(id).await).is_none(),
                "{label}: archived events are out of a normal read"
            );
        }
        let whole = ok(s
            .events()
            .aggregate_stream_with::<Account>(id, StreamRange::all().including_archived())
            .await)
        .expect("last known state");
        assert_eq!((whole.balance, whole.version), (12, 2), "{label}");

        let mut w = ok(s.events().fetch_for_writing::<Account>(id).await);
        ok(w.append([deposit(1)]));
        let err = s.save_changes().await.expect_err("archived");
        assert_eq!(
            err.rejections()
                .iter()
                .map(|r| r.kind.clone())
                .collect::<Vec<_>>(),
            [RejectionKind::StreamArchived],
            "{label}: {err:?}"
        );
        let err = s
            .events()
            .fetch_for_exclusive_writing::<Account>(id)
            .await
            .err()
            .expect("archived");
        assert_eq!(
            err.rejections().first().map(|r| r.kind.clone()),
            Some(RejectionKind::StreamArchived),
            "{label}: {err:?}"
        );
        ok(s.events().start_stream(id, [opened("Usurper")]));
        let err = s.save_changes().await.expect_err("the id is taken");
        // Taken by a stream that is archived: named as such, as every append to it is.
        assert_eq!(
            err.rejections().first().map(|r| r.kind.clone()),
            Some(RejectionKind::StreamArchived),
            "{label}: {err:?}"
        );

        let state = ok(s.events().fetch_stream_state(id).await).expect("stream");
        assert_eq!((state.version, state.archived), (2, true), "{label}");
        let events = ok(s
            .events()
            .fetch_stream_with(id, StreamRange::all().including_archived())
            .await);
        assert_eq!(events.len(), 2, "{label}: nothing appended");
        assert!(events.iter().all(|e| e.archived));
        let next = ok(s.events().fetch_stream_state(neighbour).await).expect("neighbour");
        assert_eq!((next.version, next.archived), (2, false), "{label}");
        assert_eq!(ok(s.events().fetch_stream(neighbour).await).len(), 2);
        let n = ok(s.events().aggregate_stream::<Account>(neighbour).await).expect("n");
        assert_eq!(n.balance, 7, "{label}");
    }
}

/// StreamReadCompliance `fetch_stream_state_reports_version_and_timestamps` and
/// `stream_state_carries_the_aggregate_type_when_the_stream_was_typed`,
/// StringStreamIdentityCompliance `stream_state_reports_the_key_and_version`, and Marten
/// `Bugs/Bug_2011_streams_should_be_getting_correct_timestamp`: streams started at
/// different times have different creation times, a later append moves the update time
/// and not the creation time, and a typed start records its type.
#[tokio::test]
async fn stream_state_reports_its_key_type_and_timestamps() {
    let (_schema, b) = builder("mes_stream_state");
    let store = ok(b.stream_identity(StreamIdentity::String).build().await);
    let mut s = store.lightweight_session();
    let keys: Vec<String> = (0..3)
        .map(|i| format!("quest-{i}-{}", Uuid::now_v7()))
        .collect();
    for key in &keys {
        ok(s.events().append(key.as_str(), [opened(key)]));
        ok(s.save_changes().await);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut created = Vec::new();
    for key in &keys {
        let st = ok(s.events().fetch_stream_state(key.as_str()).await).expect("stream");
        assert_eq!(st.id, StreamId::String(key.clone()));
        assert_eq!((st.version, st.archived), (1, false));
        assert!(st.updated >= st.created, "{st:?}");
        assert_eq!(st.aggregate_type, None);
        created.push(st.created);
    }
    assert!(created.windows(2).all(|w| w[0] < w[1]), "{created:?}");

    let first = ok(s.events().fetch_stream_state(keys[0].as_str()).await).expect("stream");
    ok(s.events()
        .append(keys[0].as_str(), [deposit(1), deposit(2)]));
    ok(s.save_changes().await);
    let later = ok(s.events().fetch_stream_state(keys[0].as_str()).await).expect("stream");
    assert_eq!(later.version, 3);
    assert_eq!(later.created, first.created, "the creation time stays");
    assert!(later.updated > first.updated, "{first:?} -> {later:?}");
    let events = ok(s.events().fetch_stream(keys[0].as_str()).await);
    assert!(events[2].timestamp > events[0].timestamp);

    let typed = format!("typed-{}", Uuid::now_v7());
    ok(s.events()
        .start_stream_of("ledger", typed.as_str(), [opened("Hilda")]));
    ok(s.save_changes().await);
    let st = ok(s.events().fetch_stream_state(typed.as_str()).await).expect("stream");
    assert_eq!(st.aggregate_type.as_deref(), Some("ledger"));
    ok(s.events().append(typed.as_str(), [deposit(3)]));
    ok(s.save_changes().await);
    let st = ok(s.events().fetch_stream_state(typed.as_str()).await).expect("stream");
    assert_eq!(
        (st.aggregate_type.as_deref(), st.version),
        (Some("ledger"), 2)
    );
    assert!(ok(s.events().fetch_stream_state("no-such-quest").await).is_none());
}

// ---------------------------------------------------------------------------------------
// Appends within one save

/// Marten `asserting_on_expected_event_version_on_append.should_check_max_event_id_on_append`
/// (and its string-identifier variant): a start, or a plain append creating the stream,
/// followed in the same save by an append expecting the version the first leaves, lands
/// both; expecting another version rejects the whole save.
#[tokio::test]
async fn an_expected_version_append_after_a_start_in_the_same_save() {
    let (_schema, b) = builder("mes_expected_same_save");
    let store = ok(b.projection::<Account>(Lifecycle::Inline).build().await);
    let mut s = store.lightweight_session();
    let id = Uuid::now_v7();
    ok(s.events().start_stream(id, [opened("Rand")]));
    ok(s.events().append_expected(id, 1, [deposit(5)]));
    ok(s.events()
        .append_expected(id, 2, [PendingEvent::new(deposit(6)), withdraw(1).into()]));
    ok(s.save_changes().await);
    let st = ok(s.events().fetch_stream_state(id).await).expect("stream");
    assert_eq!(st.version, 4);
    let doc = ok(store.query_session().load::<Account>(&id).await).expect("doc");
    assert_eq!((doc.balance, doc.version), (10, 4));

    let wrong = Uuid::now_v7();
    ok(s.events().start_stream(wrong, [opened("Mat")]));
    ok(s.events().append_expected(wrong, 2, [deposit(5)]));
    let err = s
        .save_changes()
        .await
        .expect_err("the start leaves version 1");
    // (The actual version is read after the rollback, where the stream does not exist.)
    assert_eq!(version_conflict(&err).0, 2);
    assert!(ok(s.events().fetch_stream_state(wrong).await).is_none());
    assert!(ok(store.query_session().load::<Account>(&wrong).await).is_none());

    let (_schema2, b) = builder("mes_expected_same_save_str");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .projection::<Ledger>(Lifecycle::Inline)
        .build()
        .await);
    let mut s = store.lightweight_session();
    ok(s.events().append("First", [opened("Perrin")]));
    ok(s.events().append_expected("First", 1, [deposit(2)]));
    ok(s.save_changes().await);
    let st = ok(s.events().fetch_stream_state("First").await).expect("stream");
    assert_eq!(st.version, 2);
    let doc = ok(store
        .query_session()
        .load::<Ledger>(&"First".to_owned())
        .await)
    .expect("doc");
    assert_eq!((doc.balance, doc.version), (2, 2));
}

/// Marten `Bugs/Bug_2143_append_exclusive_then_append_throws_when_saving_changes`: the
/// exclusive lock taken with no events, then a plain append of two events to the same
/// stream, saves both (version 3), and the lock ends with the save.
#[tokio::test]
async fn an_exclusive_lock_without_events_then_a_plain_append() {
    let (_schema, b) = builder("mes_exclusive_then_append");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_millis(300))
        .event::<AccountOpened>()
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [opened("One")]));
    ok(s.save_changes().await);

    ok(s.events()
        .append_exclusive(id, Vec::<MoneyDeposited>::new())
        .await);
    let mut probe = store.lightweight_session();
    let locked = probe
        .events()
        .append_exclusive(id, [deposit(0)])
        .await
        .expect_err("held");
    assert!(
        matches!(locked, marten::Error::StreamLocked { .. }),
        "{locked:?}"
    );
    probe.discard_changes();
    ok(s.events().append(id, [deposit(2), deposit(3)]));
    ok(s.save_changes().await);
    let st = ok(s.events().fetch_stream_state(id).await).expect("stream");
    assert_eq!(st.version, 3);

    // Released: another session takes the lock and appends.
    let mut next = store.lightweight_session();
    ok(next.events().append_exclusive(id, [deposit(4)]).await);
    ok(next.save_changes().await);
    let account = ok(s.events().aggregate_stream::<Account>(id).await).expect("account");
    assert_eq!(
        (account.owner.as_str(), account.balance, account.version),
        ("One", 9, 4)
    );
}

/// Marten `Bugs/Bug_1754_multiple_event_stream_creations_one_session` and
/// `BulkEventStreamAppendTests`: one save starts many string-keyed streams for two inline
/// aggregate types and appends to the first stream again after the others; every stream
/// gets contiguous versions, the events' sequences follow the order of the session's
/// appends, and each aggregate document is the fold of its own stream.
#[tokio::test]
async fn many_streams_started_and_appended_in_one_save_project_inline() {
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct ImportStarted {
        by: String,
    }
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct ImportFinished {
        count: usize,
    }
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct ItemCreated {
        import: String,
        name: String,
    }
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct ItemRenamed {
        name: String,
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    struct Import {
        id: String,
        version: i64,
        by: String,
        count: usize,
    }
    #[marten::apply]
    impl Import {
        fn apply(&mut self, e: &ImportStarted) {
            self.by = e.by.clone();
        }
        fn apply(&mut self, e: &ImportFinished) {
            self.count = e.count;
        }
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    struct Item {
        id: String,
        version: i64,
        import: String,
        names: Vec<String>,
    }
    #[marten::apply]
    impl Item {
        fn apply(&mut self, e: &ItemCreated) {
            self.import = e.import.clone();
            self.names.push(e.name.clone());
        }
        fn apply(&mut self, e: &ItemRenamed) {
            self.names.push(e.name.clone());
        }
    }

    const ITEMS: usize = 150;
    let (_schema, b) = builder("mes_many_streams");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .projection::<Import>(Lifecycle::Inline)
        .projection::<Item>(Lifecycle::Inline)
        .build()
        .await);
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream("original", [ImportStarted { by: "ann".into() }]));
    let items: Vec<String> = (0..ITEMS).map(|i| format!("item-{i:03}")).collect();
    for (i, key) in items.iter().enumerate() {
        ok(s.events().start_stream(
            key.as_str(),
            [PendingEvent::new(ItemCreated {
                import: "original".into(),
                name: format!("n{i}"),
            })],
        ));
        ok(s.events().append(
            key.as_str(),
            [
                ItemRenamed {
                    name: format!("a{i}"),
                },
                ItemRenamed {
                    name: format!("b{i}"),
                },
            ],
        ));
    }
    ok(s.events()
        .append("original", [ImportFinished { count: ITEMS }]));
    ok(s.save_changes().await);

    let mut q = store.query_session();
    let import = ok(q.load::<Import>(&"original".to_owned()).await).expect("import");
    assert_eq!(
        (import.by.as_str(), import.count, import.version),
        ("ann", ITEMS, 2)
    );
    let docs: Vec<Item> = ok(q.load_many(&items).await);
    assert_eq!(docs.len(), ITEMS);
    for doc in &docs {
        let i: usize = doc.id["item-".len()..].parse().expect("index");
        assert_eq!(doc.version, 3, "{}", doc.id);
        assert_eq!(doc.import, "original");
        assert_eq!(
            doc.names,
            [format!("n{i}"), format!("a{i}"), format!("b{i}")]
        );
    }
    // The global order is the session's: the import's start, each item's three events,
    // then the import's end. (By the events' sequences: `read_all` waits for every
    // transaction open on the server, other tests' too.)
    let mut order = Vec::new();
    for key in items.iter().chain(std::iter::once(&"original".to_owned())) {
        let events = ok(s.events().fetch_stream(key.as_str()).await);
        order.extend(
            events
                .iter()
                .map(|e| (e.sequence, e.stream_id.clone(), e.version)),
        );
    }
    order.sort_by_key(|(sequence, _, _)| *sequence);
    let order: Vec<(StreamId, i64)> = order.into_iter().map(|(_, s, v)| (s, v)).collect();
    let mut want = vec![(StreamId::String("original".into()), 1)];
    for key in &items {
        want.extend((1..=3).map(|v| (StreamId::String(key.clone()), v)));
    }
    want.push((StreamId::String("original".into()), 2));
    assert_eq!(order, want);
}

// ---------------------------------------------------------------------------------------
// Multi-stream and event projections

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct EmployeeHired {
    name: String,
    department: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct EmployeeDeparted {
    name: String,
    department: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DepartmentsAudited {
    departments: Vec<String>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct DepartmentClosed {
    department: String,
}

/// ComplianceDepartment of MultiStreamProjectionCompliance, with a deletion.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Department {
    id: String,
    staff: Vec<String>,
    audits: i64,
}

#[marten::apply]
impl Department {
    fn identity(e: &EmployeeHired) -> String {
        e.department.clone()
    }
    fn identity_departed(e: &EmployeeDeparted) -> String {
        e.department.clone()
    }
    fn identities(e: &DepartmentsAudited) -> Vec<String> {
        e.departments.clone()
    }
    fn identity_closed(e: &DepartmentClosed) -> String {
        e.department.clone()
    }

    fn create(e: &EmployeeHired) -> Self {
        Department {
            id: String::new(),
            staff: vec![e.name.clone()],
            audits: 0,
        }
    }
    fn apply(&mut self, e: &EmployeeHired) {
        self.staff.push(e.name.clone());
    }
    fn apply(&mut self, e: &EmployeeDeparted) {
        self.staff.retain(|n| *n != e.name);
    }
    fn apply(&mut self, _e: &DepartmentsAudited) {
        self.audits += 1;
    }
    fn should_delete(&self, _e: &DepartmentClosed) -> bool {
        true
    }
}

fn hired(name: &str, department: &str) -> EmployeeHired {
    EmployeeHired {
        name: name.into(),
        department: department.into(),
    }
}

async fn department(store: &DocumentStore, id: &str) -> Option<Department> {
    ok(store
        .query_session()
        .load::<Department>(&id.to_owned())
        .await)
}

/// MultiStreamProjectionCompliance `events_within_one_stream_are_grouped_by_their_identity`,
/// `events_from_separate_streams_land_on_one_aggregate`,
/// `separate_identities_stay_independent`, `one_event_reaches_every_identity_it_names`,
/// `an_event_can_update_an_aggregate_built_by_an_earlier_commit` and
/// `an_identity_that_no_event_names_has_no_aggregate`, with deletion by an event: one
/// stream feeds several documents, one event several documents (an audit of a department
/// that does not exist creates nothing), an event deletes a document, a document created
/// and deleted within one save is never written, and one hired again after its deletion
/// starts afresh.
#[tokio::test]
async fn multi_stream_documents_are_grouped_updated_and_deleted_by_events() {
    let (_schema, b) = builder("mes_multi_stream");
    let store = ok(b
        .multi_stream_projection::<Department>(Lifecycle::Inline)
        .build()
        .await);
    let (hr, ops) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream(hr, [hired("ann", "sales"), hired("bob", "it")]));
    ok(s.events().start_stream(ops, [hired("cy", "sales")]));
    ok(s.save_changes().await);
    assert_eq!(
        department(&store, "sales").await.map(|d| d.staff),
        Some(vec!["ann".to_owned(), "cy".to_owned()])
    );
    assert_eq!(
        department(&store, "it").await.map(|d| d.staff),
        Some(vec!["bob".to_owned()])
    );
    assert!(department(&store, "legal").await.is_none());

    ok(s.events().append(
        ops,
        [DepartmentsAudited {
            departments: vec!["sales".into(), "it".into(), "ghost".into()],
        }],
    ));
    ok(s.events().append(
        hr,
        [EmployeeDeparted {
            name: "ann".into(),
            department: "sales".into(),
        }],
    ));
    ok(s.save_changes().await);
    let sales = department(&store, "sales").await.expect("sales");
    assert_eq!(
        (sales.staff.clone(), sales.audits),
        (vec!["cy".to_owned()], 1)
    );
    assert_eq!(department(&store, "it").await.map(|d| d.audits), Some(1));
    assert!(
        department(&store, "ghost").await.is_none(),
        "an audit creates no department"
    );

    // Deleted by an event; created and closed within one save: never written.
    ok(s.events().append(
        hr,
        [
            PendingEvent::new(DepartmentClosed {
                department: "it".into(),
            }),
            hired("dee", "temp").into(),
            DepartmentClosed {
                department: "temp".into(),
            }
            .into(),
            DepartmentClosed {
                department: "never-was".into(),
            }
            .into(),
        ],
    ));
    ok(s.save_changes().await);
    assert!(department(&store, "it").await.is_none());
    assert!(department(&store, "temp").await.is_none());
    assert!(department(&store, "sales").await.is_some());

    // Hired again after the deletion: a new document.
    ok(s.events().append(ops, [hired("eve", "it")]));
    ok(s.save_changes().await);
    let it = department(&store, "it").await.expect("it again");
    assert_eq!((it.staff, it.audits), (vec!["eve".to_owned()], 0));
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct UserCreated {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct UserRenamed {
    name: String,
    to: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct UserDeleted {
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct User {
    id: String,
    display: String,
    stream: String,
}

struct Users;

impl EventProjection for Users {
    fn name(&self) -> &'static str {
        "Users"
    }

    fn uses_metadata(&self) -> bool {
        false
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(e) = event.data_as::<UserCreated>() {
            ops.store(User {
                id: e.name.clone(),
                display: e.name.clone(),
                stream: event.stream_id.to_string(),
            });
        }
        if let Some(e) = event.data_as::<UserRenamed>() {
            ops.store(User {
                id: e.name.clone(),
                display: e.to.clone(),
                stream: event.stream_id.to_string(),
            });
        }
        if let Some(e) = event.data_as::<UserDeleted>() {
            ops.delete::<User>(e.name.clone());
        }
        Ok(())
    }
}

/// Marten `Projections/EventProjectionTests.use_simple_synchronous_project_methods` (and
/// `use_event_metadata_with_string_stream_identity`): an event projection stores a
/// document per created user and deletes one on a later event; within one save a
/// document stored twice keeps the last, and one stored, deleted and stored again
/// exists, while one stored then deleted does not. The stream key reaches the
/// projection with string stream ids.
#[tokio::test]
async fn an_event_projection_creates_and_deletes_documents_in_event_order() {
    let (_schema, b) = builder("mes_event_projection");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .event_projection(Users, Lifecycle::Inline)
        .build()
        .await);
    let user = |name: &str| {
        let store = store.clone();
        let name = name.to_owned();
        async move { ok(store.query_session().load::<User>(&name).await) }
    };
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        "users-1",
        [
            UserCreated { name: "one".into() },
            UserCreated { name: "two".into() },
        ],
    ));
    ok(s.save_changes().await);
    assert_eq!(
        user("one").await.map(|u| u.stream),
        Some("\"users-1\"".into())
    );
    assert!(user("two").await.is_some());

    ok(s.events()
        .append("users-1", [UserDeleted { name: "one".into() }]));
    ok(s.save_changes().await);
    assert!(user("one").await.is_none());
    assert!(user("two").await.is_some());

    ok(s.events().append(
        "users-2",
        [
            PendingEvent::new(UserCreated {
                name: "three".into(),
            }),
            UserRenamed {
                name: "three".into(),
                to: "Three".into(),
            }
            .into(),
            UserCreated {
                name: "four".into(),
            }
            .into(),
            UserDeleted {
                name: "four".into(),
            }
            .into(),
            UserCreated {
                name: "five".into(),
            }
            .into(),
            UserDeleted {
                name: "five".into(),
            }
            .into(),
            UserCreated {
                name: "five".into(),
            }
            .into(),
        ],
    ));
    ok(s.save_changes().await);
    assert_eq!(user("three").await.map(|u| u.display), Some("Three".into()));
    assert!(user("four").await.is_none());
    assert_eq!(user("five").await.map(|u| u.display), Some("five".into()));
    assert!(user("two").await.is_some());
}

// ---------------------------------------------------------------------------------------
// Querying events

/// Marten `archiving_events.query_by_a_specific_event_filters_out_archived_events_by_default`
/// and `querying_event_data_with_linq` (events of one type across streams): a query by
/// event type reads every live stream's events of that type in the global order, leaves
/// archived and deleted streams' events out, and narrows to one string-keyed stream.
#[tokio::test]
async fn querying_one_event_type_across_streams_skips_archived_and_deleted_ones() {
    #[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug)]
    struct Scored {
        player: String,
        points: i64,
    }
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    struct Fouled {
        player: String,
    }

    let (_schema, b) = builder("mes_query_types");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .event::<Scored>()
        .build()
        .await);
    let games = ["game-a", "game-b", "game-c", "game-d"];
    let mut s = store.lightweight_session();
    for round in 0..3i64 {
        for (g, game) in games.iter().enumerate() {
            ok(s.events().append(
                *game,
                [
                    PendingEvent::new(Scored {
                        player: format!("p{g}"),
                        points: round * 10 + g as i64,
                    }),
                    Fouled {
                        player: format!("p{g}"),
                    }
                    .into(),
                ],
            ));
        }
        ok(s.save_changes().await);
    }
    let points = |events: &[EventEnvelope]| -> Vec<i64> {
        events
            .iter()
            .map(|e| e.data_as::<Scored>().map_or(-1, |x| x.points))
            .collect()
    };
    let all = ok(s.events().query::<Scored>().to_list().await);
    assert_eq!(points(&all), [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]);
    assert!(all.iter().all(|e| e.event_type == "scored"));

    ok(s.events().archive_stream("game-b"));
    ok(s.events().delete_stream("game-c"));
    ok(s.save_changes().await);
    let live = ok(s.events().query::<Scored>().to_list().await);
    assert_eq!(points(&live), [0, 3, 10, 13, 20, 23]);
    assert_eq!(ok(s.events().query::<Scored>().count().await), 6);
    assert_eq!(
        ok(s.events().query::<Scored>().stream("game-b").count().await),
        0,
        "an archived stream's events are left out"
    );
    let one = ok(s
        .events()
        .query::<Scored>()
        .stream("game-d")
        .filter(|f| f.points.ge(10))
        .to_list()
        .await);
    assert_eq!(points(&one), [13, 23]);
    assert!(one
        .iter()
        .all(|e| e.stream_id == StreamId::String("game-d".into())));
}

/// The fold of a whole stream from its first event, never from a stored document or
/// snapshot (a range bounded by time is folded from the start).
async fn folded_from_scratch(s: &mut LightweightSession, id: Uuid) -> Option<Account> {
    let far = OffsetDateTime::now_utc() + time::Duration::days(1);
    ok(s.events()
        .aggregate_stream_with::<Account>(id, StreamRange::all().up_to_time(far))
        .await)
}

/// Marten `fetching_inline_aggregates_for_writing.decider_pattern_snapshot_matches_event_rebuild_4509`
/// and FetchForWritingCompliance `fetch_for_exclusive_writing_returns_the_same_state_and_commits`:
/// appends through a `fetch_for_writing` handle mixed in one save with plain appends to
/// the same stream and to another, and a deletion and re-creation through a handle, leave
/// inline documents equal to a fold of the events from scratch, with the aggregate cache
/// on and off.
#[tokio::test]
async fn inline_documents_equal_a_fold_from_scratch_after_mixed_appends() {
    for cache in [0usize, 1_000] {
        let label = format!("mes_mixed_appends_{cache}");
        let (_schema, b) = builder(&label);
        let store = ok(b
            .projection::<Account>(Lifecycle::Inline)
            .aggregate_cache(cache)
            .build()
            .await);
        let id = open_account(&store, vec![deposit(1).into()]).await;
        let other = open_account(&store, vec![deposit(2).into()]).await;
        let mut s = store.lightweight_session();
        let mut w = ok(s.events().fetch_for_writing::<Account>(id).await);
        ok(w.append([deposit(10)]));
        ok(s.events().append(other, [deposit(20)]));
        ok(s.events().append(id, [deposit(100)]));
        ok(s.save_changes().await);

        let mut w = ok(s
            .events()
            .fetch_for_exclusive_writing::<Account>(other)
            .await);
        assert_eq!(w.state().map(|a| a.balance), Some(22), "{label}");
        ok(w.append([
            PendingEvent::new(AccountClosed {}),
            opened("Reopened").into(),
            deposit(3).into(),
        ]));
        ok(s.events().append(other, [withdraw(1)]));
        ok(s.save_changes().await);

        for (stream, balance, version) in [(id, 111, 4), (other, 2, 7)] {
            let doc = ok(store.query_session().load::<Account>(&stream).await).expect("doc");
            assert_eq!((doc.balance, doc.version), (balance, version), "{label}");
            let scratch = folded_from_scratch(&mut s, stream).await.expect("folded");
            assert_eq!(doc, scratch, "{label}: the stored document is the fold");
            let st = ok(s.events().fetch_stream_state(stream).await).expect("stream");
            assert_eq!(st.version, version, "{label}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Streams started without events

/// Marten refuses to start a stream without events (`EmptyEventStreamException`); so does
/// marten-rs, at the call: `start_stream`, `start_stream_of` and `append_expected(id, 0,
/// ..)` with no events are `Error::InvalidInput` naming the stream, nothing is queued
/// (the session's other work saves), and no stream row exists afterwards. A stream that
/// existed at version 0 without events read as missing to `fetch_for_writing` and to
/// inline projections (an append through a handle was refused as `StreamExists`, a plain
/// append with an inline aggregate planned again until `ProjectionConflict`). A handle
/// of a new stream appending nothing queues nothing either.
#[tokio::test]
async fn a_stream_cannot_be_started_without_events() {
    for inline in [true, false] {
        let label = if inline {
            "mes_empty_start_inline"
        } else {
            "mes_empty_start_live"
        };
        let (schema, store) = account_store(label, inline).await;
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let mut s = store.lightweight_session();
        let refused = [
            s.events().start_stream(ids[0], Vec::<AccountOpened>::new()),
            s.events()
                .start_stream_of("account", ids[1], Vec::<AccountOpened>::new()),
            s.events()
                .append_expected(ids[2], 0, Vec::<AccountOpened>::new()),
        ];
        for (id, r) in ids.iter().zip(refused) {
            match r {
                Err(marten::Error::InvalidInput {
                    owner,
                    id: Some(named),
                    field,
                    ..
                }) => {
                    assert_eq!((owner.as_str(), field.as_str()), ("stream", "events"));
                    assert_eq!(named, id.to_string());
                }
                other => panic!("{label}: an empty start was not refused: {other:?}"),
            }
        }
        let mut w = ok(s.events().fetch_for_writing::<Account>(ids[3]).await);
        ok(w.append(Vec::<AccountOpened>::new()));
        // The session's other work saves.
        let other = Uuid::now_v7();
        ok(s.events().start_stream(other, [opened("B")]));
        ok(s.save_changes().await);
        let rows: i64 = schema
            .raw_client()
            .await
            .query_one("SELECT count(*) FROM mt_streams", &[])
            .await
            .expect("streams")
            .get(0);
        assert_eq!(rows, 1, "{label}: only the stream with an event exists");
        for id in &ids {
            assert!(
                ok(s.events().fetch_stream_state(*id).await).is_none(),
                "{label}"
            );
        }
    }
}
