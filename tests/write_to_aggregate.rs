//! `session.events().write_to_aggregate`: a command that reads an aggregate, decides on
//! it, appends what it decided expecting the version it decided on and saves. The store
//! caches the state each command leaves, so that the next command on the stream decides
//! without reading it; a decision made on a stale entry (another store moved, archived,
//! or deleted and restarted the stream) is made again on a fresh read, never committed.
//! Every deposit records the state its decision saw, so the tests check that each
//! committed decision was made on exactly the state before it (no lost update).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{builder, builder_on, counted_builder_on, named_builder, ok};
use marten::prelude::*;
use marten::{PgDocument, RejectionKind, Session, Tenancy, Tracking};
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Opened {
    owner: String,
}

/// A deposit and the state the decision that made it saw (`seen_version` -1: appended
/// without a decision, by a plain append).
#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Deposited {
    amount: i64,
    seen_version: i64,
    seen_balance: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Withdrawn {
    amount: i64,
    seen_version: i64,
    seen_balance: i64,
}

/// A bank account, folded live.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Account {
    id: Uuid,
    version: i64,
    owner: String,
    balance: i64,
}

#[marten::apply]
impl Account {
    fn create(e: &Opened) -> Self {
        Account {
            owner: e.owner.clone(),
            ..Account::default()
        }
    }

    fn apply_deposited(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }

    fn apply_withdrawn(&mut self, e: &Withdrawn) {
        self.balance -= e.amount;
    }
}

/// The same account with an apply that reads the event's metadata: never decided on
/// from the cache.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct MetaAccount {
    id: Uuid,
    version: i64,
    balance: i64,
    last_event: Option<Uuid>,
}

#[marten::apply]
impl MetaAccount {
    fn create(_e: &Opened) -> Self {
        MetaAccount::default()
    }

    fn apply_deposited(&mut self, e: &Deposited, meta: &EventEnvelope) {
        self.balance += e.amount;
        self.last_event = Some(meta.id);
    }
}

/// The same account projected inline: never decided on from the command cache.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct InlineAccount {
    id: Uuid,
    version: i64,
    balance: i64,
}

#[marten::apply]
impl InlineAccount {
    fn create(_e: &Opened) -> Self {
        InlineAccount::default()
    }

    fn apply_deposited(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}

/// A document queued in the same session as a command.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Note {
    id: Uuid,
    text: String,
}

/// The commands' own error type.
#[derive(Debug)]
enum BankError {
    NoAccount,
    AlreadyOpen,
    Insufficient { balance: i64, wanted: i64 },
    Store(marten::Error),
}

impl From<marten::Error> for BankError {
    fn from(e: marten::Error) -> Self {
        BankError::Store(e)
    }
}

impl BankError {
    /// The one rejection of a store error, if that is what this is.
    fn rejection(&self) -> Option<&RejectionKind> {
        match self {
            BankError::Store(marten::Error::Rejected(r)) if r.len() == 1 => Some(&r[0].kind),
            _ => None,
        }
    }
}

type Decision = Result<Vec<PendingEvent>, BankError>;

/// What a decision saw: `None` (no account) or `(version, balance)`.
type Seen = Option<(i64, i64)>;

fn seen_of<V: HasBalance>(a: Option<&V>) -> Seen {
    a.map(|a| (a.version_of(), a.balance_of()))
}

trait HasBalance {
    fn version_of(&self) -> i64;
    fn balance_of(&self) -> i64;
}

macro_rules! has_balance {
    ($($t:ty),*) => {$(
        impl HasBalance for $t {
            fn version_of(&self) -> i64 {
                self.version
            }
            fn balance_of(&self) -> i64 {
                self.balance
            }
        }
    )*};
}
has_balance!(Account, MetaAccount, InlineAccount);

fn open_decision<V: HasBalance>(a: Option<&V>, owner: &str) -> Decision {
    match a {
        Some(_) => Err(BankError::AlreadyOpen),
        None => Ok(vec![Opened {
            owner: owner.into(),
        }
        .into()]),
    }
}

fn deposit_decision<V: HasBalance>(a: Option<&V>, amount: i64) -> Decision {
    let a = a.ok_or(BankError::NoAccount)?;
    Ok(vec![Deposited {
        amount,
        seen_version: a.version_of(),
        seen_balance: a.balance_of(),
    }
    .into()])
}

fn withdraw_decision<V: HasBalance>(a: Option<&V>, amount: i64) -> Decision {
    let a = a.ok_or(BankError::NoAccount)?;
    if a.balance_of() < amount {
        return Err(BankError::Insufficient {
            balance: a.balance_of(),
            wanted: amount,
        });
    }
    Ok(vec![Withdrawn {
        amount,
        seen_version: a.version_of(),
        seen_balance: a.balance_of(),
    }
    .into()])
}

/// Runs one command of aggregate `A` in `s`: its result and every state `decide` was
/// called with, in order.
async fn command<A, K>(
    s: &mut Session<K>,
    id: Uuid,
    mut decide: impl FnMut(Option<&A>) -> Decision,
) -> (Result<i64, BankError>, Vec<Seen>)
where
    A: Aggregate + PgDocument + HasBalance,
    K: Tracking,
{
    let mut seen = Vec::new();
    let result = s
        .events()
        .write_to_aggregate::<A, _, _>(id, |a: Option<&A>| {
            seen.push(seen_of(a));
            decide(a)
        })
        .await;
    (result, seen)
}

/// A command of `Account` in a lightweight session of its own.
async fn account_command(
    store: &DocumentStore,
    id: Uuid,
    decide: impl FnMut(Option<&Account>) -> Decision,
) -> (Result<i64, BankError>, Vec<Seen>) {
    let mut s = store.lightweight_session();
    command::<Account, _>(&mut s, id, decide).await
}

async fn open(store: &DocumentStore, id: Uuid) -> i64 {
    let (r, seen) = account_command(store, id, |a| open_decision(a, "ada")).await;
    assert_eq!(seen, [None], "a new stream decides on nothing");
    expect_ok(r)
}

async fn deposit(store: &DocumentStore, id: Uuid, amount: i64) -> (i64, Vec<Seen>) {
    let (r, seen) = account_command(store, id, |a| deposit_decision(a, amount)).await;
    (expect_ok(r), seen)
}

#[track_caller]
fn expect_ok(r: Result<i64, BankError>) -> i64 {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected command error: {e:?}"),
    }
}

/// A deposit appended without a decision (another writer's plain append).
async fn plain_deposit(store: &DocumentStore, id: Uuid, amount: i64) {
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [Deposited {
            amount,
            seen_version: -1,
            seen_balance: 0,
        }],
    ));
    ok(s.save_changes().await);
}

/// Checks the stream: versions 1..=n without gaps, and every decided deposit or
/// withdrawal was decided on the state right before it. Returns the live fold (checked
/// against the events) and the stream's version.
async fn audit(store: &DocumentStore, id: Uuid) -> (Option<Account>, i64) {
    let mut s = store.lightweight_session();
    audit_in(&mut s, id).await
}

async fn audit_in<K: Tracking>(s: &mut Session<K>, id: Uuid) -> (Option<Account>, i64) {
    let events = ok(s.events().fetch_stream(id).await);
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(versions, expected, "event versions without gaps");
    let mut balance = 0;
    for e in &events {
        let (amount, seen_version, seen_balance) = if let Some(d) = e.data_as::<Deposited>() {
            (d.amount, d.seen_version, d.seen_balance)
        } else if let Some(w) = e.data_as::<Withdrawn>() {
            (-w.amount, w.seen_version, w.seen_balance)
        } else {
            continue;
        };
        if seen_version >= 0 {
            assert_eq!(
                (seen_version, seen_balance),
                (e.version - 1, balance),
                "the decision of the event at version {} saw a state that was not the one before it",
                e.version
            );
        }
        balance += amount;
    }
    let folded = ok(s.events().aggregate_stream::<Account>(id).await);
    if let Some(a) = &folded {
        assert_eq!(a.balance, balance);
        assert_eq!(a.version, events.len() as i64);
    }
    (folded, events.len() as i64)
}

async fn balance(store: &DocumentStore, id: Uuid) -> (i64, i64) {
    let (a, version) = audit(store, id).await;
    (a.expect("an account").balance, version)
}

#[tokio::test]
async fn commands_fold_to_the_right_state_and_return_the_stream_versions() {
    let (_schema, b) = builder("wta_sequence");
    let store = ok(b.build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();

    // Nothing decided on a stream that does not exist: version 0, nothing started.
    let (r, seen) = command::<Account, _>(&mut s, id, |_| Ok(vec![])).await;
    assert_eq!((expect_ok(r), seen), (0, vec![None]));
    assert!(ok(s.events().fetch_stream_state(id).await).is_none());
    // A deposit to no account is the decider's error.
    let (r, _) = command::<Account, _>(&mut s, id, |a| deposit_decision(a, 5)).await;
    assert!(matches!(r, Err(BankError::NoAccount)), "{r:?}");

    let (r, seen) = command::<Account, _>(&mut s, id, |a| open_decision(a, "ada")).await;
    assert_eq!((expect_ok(r), seen), (1, vec![None]));
    let mut expected_balance = 0;
    for (i, (amount, withdraw)) in [(100, false), (30, true), (5, false), (75, true)]
        .into_iter()
        .enumerate()
    {
        let version = 1 + i as i64;
        let (r, seen) = command::<Account, _>(&mut s, id, |a| {
            if withdraw {
                withdraw_decision(a, amount)
            } else {
                deposit_decision(a, amount)
            }
        })
        .await;
        assert_eq!(
            (expect_ok(r), seen),
            (version + 1, vec![Some((version, expected_balance))]),
            "command {i}: one decision, on the state before it"
        );
        expected_balance += if withdraw { -amount } else { amount };
    }
    assert_eq!(expected_balance, 0);
    let (r, seen) = command::<Account, _>(&mut s, id, |a| deposit_decision(a, 40)).await;
    assert_eq!((expect_ok(r), seen), (6, vec![Some((5, 0))]));

    // Insufficient funds: the decider's error as is, nothing appended.
    let (r, seen) = command::<Account, _>(&mut s, id, |a| withdraw_decision(a, 1000)).await;
    assert!(
        matches!(
            r,
            Err(BankError::Insufficient {
                balance: 40,
                wanted: 1000
            })
        ),
        "{r:?}"
    );
    // Refused on the cached state, then again on a fresh read: a refusal is never the
    // answer of a stale state.
    assert_eq!(seen, [Some((6, 40)), Some((6, 40))]);
    assert_eq!(audit_in(&mut s, id).await.1, 6, "nothing appended");
    // Opening again is refused by the decider.
    let (r, _) = command::<Account, _>(&mut s, id, |a| open_decision(a, "again")).await;
    assert!(matches!(r, Err(BankError::AlreadyOpen)), "{r:?}");

    // A decider whose error type is marten's own.
    let r = s
        .events()
        .write_to_aggregate::<Account, _, _>(id, |_a: Option<&Account>| {
            Err::<Vec<PendingEvent>, _>(marten::Error::InvalidStreamId {
                stream: StreamId::Uuid(id),
                reason: "decided against",
            })
        })
        .await;
    assert!(
        matches!(
            r,
            Err(marten::Error::InvalidStreamId {
                reason: "decided against",
                ..
            })
        ),
        "{r:?}"
    );
    // A marten::Error decider that commits.
    let r = s
        .events()
        .write_to_aggregate::<Account, _, marten::Error>(id, |a: Option<&Account>| {
            let a = a.expect("the account");
            Ok(vec![Deposited {
                amount: 2,
                seen_version: a.version,
                seen_balance: a.balance,
            }])
        })
        .await;
    assert_eq!(ok(r), 7);

    // The session is still usable after the errors; no events decided: the version.
    let (r, seen) = command::<Account, _>(&mut s, id, |a| deposit_decision(a, 1)).await;
    assert_eq!((expect_ok(r), seen), (8, vec![Some((7, 42))]));
    let (r, seen) = command::<Account, _>(&mut s, id, |_| Ok(vec![])).await;
    assert_eq!((expect_ok(r), seen), (8, vec![Some((8, 43))]));

    // Several events in one decision.
    let (r, _) = command::<Account, _>(&mut s, id, |a| {
        let a = a.expect("the account");
        Ok(vec![
            Deposited {
                amount: 10,
                seen_version: a.version,
                seen_balance: a.balance,
            }
            .into(),
            Withdrawn {
                amount: 3,
                seen_version: a.version + 1,
                seen_balance: a.balance + 10,
            }
            .into(),
        ])
    })
    .await;
    assert_eq!(expect_ok(r), 10);
    drop(s);
    let (account, version) = audit(&store, id).await;
    let account = account.expect("account");
    assert_eq!(
        (account.owner.as_str(), account.balance, version),
        ("ada", 50, 10)
    );
    // A new session of the same store decides on the same state.
    let (v, seen) = deposit(&store, id, 1).await;
    assert_eq!((v, seen), (11, vec![Some((10, 50))]));
}

#[tokio::test]
async fn a_stale_cached_state_is_decided_on_again_after_a_fresh_read() {
    let (schema, b) = builder("wta_stale");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    assert_eq!(deposit(&store, id, 100).await, (2, vec![Some((1, 0))]));
    // Cached at version 2. Another process appends a plain deposit.
    plain_deposit(&other, id, 1000).await;

    let calls = AtomicUsize::new(0);
    let (r, seen) = account_command(&store, id, |a| {
        calls.fetch_add(1, Ordering::SeqCst);
        deposit_decision(a, 5)
    })
    .await;
    assert_eq!(expect_ok(r), 4);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "decided twice");
    assert_eq!(
        seen,
        [Some((2, 100)), Some((3, 1100))],
        "first on the stale cached state, then on the fresh one"
    );
    assert_eq!(balance(&store, id).await, (1105, 4));
    // The retry refreshed the entry: one decision.
    assert_eq!(deposit(&store, id, 1).await, (5, vec![Some((4, 1105))]));

    // The other store's own command (from a fresh read), then this store again.
    assert_eq!(deposit(&other, id, 20).await, (6, vec![Some((5, 1106))]));
    assert_eq!(
        deposit(&store, id, 3).await,
        (7, vec![Some((5, 1106)), Some((6, 1126))])
    );
    // A withdrawal the stale state would allow but the fresh one does not: the decider's
    // error, from the second decision, and nothing appended.
    let mut o = other.lightweight_session();
    ok(o.events().append(
        id,
        [Withdrawn {
            amount: 1129,
            seen_version: -1,
            seen_balance: 0,
        }],
    ));
    ok(o.save_changes().await);
    let (r, seen) = account_command(&store, id, |a| withdraw_decision(a, 1000)).await;
    assert_eq!(seen, [Some((7, 1129)), Some((8, 0))]);
    assert!(
        matches!(
            r,
            Err(BankError::Insufficient {
                balance: 0,
                wanted: 1000
            })
        ),
        "{r:?}"
    );
    assert_eq!(balance(&store, id).await, (0, 8));
}

/// Beyond the stated semantics (a decider's error is returned as is): a decider's error
/// reached on a cached state that another store has since moved is an answer about a
/// state the stream left long ago, and stays so for as long as the entry does. This test
/// asks that such an error be checked against a fresh read before it is returned.
#[tokio::test]
async fn a_deciders_error_on_a_stale_cached_state_is_checked_on_a_fresh_read() {
    let (schema, b) = builder("wta_stale_error");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    // The other store caches the account at version 2, balance 100.
    assert_eq!(deposit(&other, id, 100).await.0, 2);
    // This store moves it to 130.
    assert_eq!(deposit(&store, id, 30).await.0, 3);
    // The other store withdraws 120: its cached 100 says no, the stream says yes.
    let (r, seen) = account_command(&other, id, |a| withdraw_decision(a, 120)).await;
    assert_eq!(
        seen.last(),
        Some(&Some((3, 130))),
        "decisions on {seen:?}, result {r:?}: the error came from the stale entry only"
    );
    assert_eq!(expect_ok(r), 4);
    assert_eq!(balance(&store, id).await, (10, 4));
}

#[tokio::test]
async fn a_stream_deleted_and_restarted_to_the_cached_version_is_decided_on_afresh() {
    let (schema, b) = builder("wta_aba");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    deposit(&store, id, 10).await;
    assert_eq!(deposit(&store, id, 20).await.0, 3);
    // Cached at version 3, balance 30. Another process deletes the stream and starts it
    // again with three other events: version 3, balance 3000.
    let mut o = other.lightweight_session();
    ok(o.events().delete_stream(id));
    ok(o.save_changes().await);
    ok(o.events().start_stream(
        id,
        [
            PendingEvent::from(Opened {
                owner: "bob".into(),
            }),
            PendingEvent::from(Deposited {
                amount: 1000,
                seen_version: -1,
                seen_balance: 0,
            }),
            PendingEvent::from(Deposited {
                amount: 2000,
                seen_version: -1,
                seen_balance: 0,
            }),
        ],
    ));
    ok(o.save_changes().await);
    drop(o);
    assert_eq!(balance(&other, id).await, (3000, 3));

    let (r, seen) = account_command(&store, id, |a| deposit_decision(a, 5)).await;
    assert_eq!(expect_ok(r), 4);
    assert_eq!(
        seen,
        [Some((3, 30)), Some((3, 3000))],
        "the cached state, rejected by the last event's id, then the restarted stream"
    );
    let (account, version) = audit(&store, id).await;
    let account = account.expect("account");
    assert_eq!(
        (account.owner.as_str(), account.balance, version),
        ("bob", 3005, 4)
    );
    assert_eq!(deposit(&store, id, 1).await, (5, vec![Some((4, 3005))]));
}

/// A cached state ahead of the stream (what restoring an older backup, or rolling the
/// stream back by hand, leaves behind): the cached decision's append expects a version the
/// stream is not at, and the decision is made again on the stream as it is (as JasperFx's
/// aggregate write cache suite asks of a baseline ahead of the stream).
#[tokio::test]
async fn a_cached_state_ahead_of_a_rolled_back_stream_is_decided_on_afresh() {
    let (schema, b) = builder("wta_ahead");
    let store = ok(b.build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    deposit(&store, id, 10).await;
    assert_eq!(deposit(&store, id, 20).await.0, 3);
    // Cached at version 3, balance 30; the stream goes back to version 2, balance 10.
    let raw = schema.raw_client().await;
    let gone = raw
        .execute(
            "DELETE FROM mt_events WHERE stream_id = $1 AND version = 3",
            &[&id],
        )
        .await
        .expect("delete the newest event");
    assert_eq!(gone, 1);
    raw.execute("UPDATE mt_streams SET version = 2 WHERE id = $1", &[&id])
        .await
        .expect("roll the stream back");

    let (r, seen) = account_command(&store, id, |a| deposit_decision(a, 5)).await;
    assert_eq!(expect_ok(r), 3);
    assert_eq!(
        seen,
        [Some((3, 30)), Some((2, 10))],
        "the cached state, rejected by the stream's version, then the stream as it is"
    );
    assert_eq!(balance(&store, id).await, (15, 3));
    assert_eq!(deposit(&store, id, 1).await, (4, vec![Some((3, 15))]));
}

#[tokio::test]
async fn a_command_on_a_stream_archived_elsewhere_is_rejected_and_appends_nothing() {
    let (schema, b) = builder("wta_archived");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    deposit(&store, id, 10).await;
    let mut o = other.lightweight_session();
    ok(o.events().archive_stream(id));
    ok(o.save_changes().await);

    // The decider opens the account when it sees none, so it always decides on events.
    for attempt in 0..2 {
        let (r, seen) = account_command(&store, id, |a| match a {
            None => Ok(vec![
                Opened {
                    owner: "new".into(),
                }
                .into(),
                Deposited {
                    amount: 1,
                    seen_version: 0,
                    seen_balance: 0,
                }
                .into(),
            ]),
            Some(_) => deposit_decision(a, 1),
        })
        .await;
        let kind = match &r {
            Err(e) => e.rejection().cloned(),
            Ok(v) => panic!("attempt {attempt}: committed at version {v} on an archived stream"),
        };
        // Cached (the first attempt) or read afresh (the second: the archived events
        // are not read, so the decider starts the stream), the stream is archived.
        assert_eq!(
            kind.as_ref(),
            Some(&RejectionKind::StreamArchived),
            "attempt {attempt}: got {r:?} (decisions on {seen:?})"
        );
        eprintln!("attempt {attempt}: rejected with {kind:?}, decisions on {seen:?}");
    }
    let mut s = store.lightweight_session();
    let archived = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().including_archived())
        .await);
    assert_eq!(archived.len(), 2, "nothing appended after the archive");
    assert!(archived.iter().all(|e| e.archived));
}

#[tokio::test]
async fn racing_commands_over_two_caching_stores_lose_no_update() {
    const TASKS: usize = 8;
    const ROUNDS: usize = 25;
    let (schema, b) = builder("wta_race");
    let first = ok(b.pool_size(TASKS).build().await);
    let second = ok(builder_on(&schema).pool_size(TASKS).build().await);
    let id = Uuid::now_v7();
    open(&first, id).await;
    // Both stores have the stream cached.
    deposit(&first, id, 0).await;
    deposit(&second, id, 0).await;
    let base = 3;

    let barrier = Arc::new(Barrier::new(TASKS));
    let retries = Arc::new(AtomicUsize::new(0));
    let redecided = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = if t % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let (barrier, retries, redecided) =
                (barrier.clone(), retries.clone(), redecided.clone());
            tokio::spawn(async move {
                let mut s = store.lightweight_session();
                for _ in 0..ROUNDS {
                    barrier.wait().await;
                    loop {
                        let (r, seen) =
                            command::<Account, _>(&mut s, id, |a| deposit_decision(a, 1)).await;
                        if seen.len() > 1 {
                            redecided.fetch_add(1, Ordering::Relaxed);
                        }
                        match r {
                            Ok(_) => break,
                            Err(e) if e.rejection().is_some() => {
                                retries.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await.expect("task") {
            panic!("a racer failed: {e:?}");
        }
    }
    eprintln!(
        "racing: {} rejected commands retried, {} commands decided twice",
        retries.load(Ordering::Relaxed),
        redecided.load(Ordering::Relaxed)
    );
    let (balance, version) = balance(&first, id).await;
    assert_eq!(balance, (TASKS * ROUNDS) as i64);
    assert_eq!(version, (TASKS * ROUNDS) as i64 + base);
    assert!(
        redecided.load(Ordering::Relaxed) > 0,
        "some decisions on cached states were overtaken and made again"
    );
}

#[tokio::test]
async fn a_command_on_a_cached_state_is_one_round_trip() {
    let (schema, b) = builder("wta_round_trips");
    let other = ok(b.build().await);
    let (proxy, b) = counted_builder_on(&schema).await;
    let store = ok(b.build().await);
    let (uncached_proxy, b) = counted_builder_on(&schema).await;
    let uncached = ok(b.aggregate_cache(0).build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    // Warm every statement of every path: cached, stale then fresh, uncached, fetched.
    deposit(&store, id, 1).await;
    plain_deposit(&other, id, 1).await;
    deposit(&store, id, 1).await;
    deposit(&uncached, id, 1).await;
    deposit(&uncached, id, 1).await;
    deposit(&store, id, 1).await;
    let fetched = |store: DocumentStore| async move {
        let mut s = store.lightweight_session();
        let mut w = ok(s.events().fetch_for_writing::<Account>(id).await);
        let a = w.state().cloned().expect("account");
        ok(w.append([Deposited {
            amount: 1,
            seen_version: a.version,
            seen_balance: a.balance,
        }]));
        ok(s.save_changes().await);
    };
    fetched(store.clone()).await;
    deposit(&store, id, 1).await;

    for round in 0..3 {
        let before = proxy.round_trips();
        let (_, seen) = deposit(&store, id, 1).await;
        let cached = proxy.round_trips() - before;
        assert_eq!(seen.len(), 1);
        let before = proxy.round_trips();
        fetched(store.clone()).await;
        let by_fetch = proxy.round_trips() - before;
        // The fetch's save left the cache behind: one command brings it up to date.
        deposit(&store, id, 1).await;
        eprintln!("round {round}: cached command {cached}, fetch + append + save {by_fetch}");
        assert_eq!(cached, 1, "a command on a cached state: one round trip");
        assert!(cached < by_fetch, "{cached} vs {by_fetch}");
    }
    for round in 0..2 {
        let before = uncached_proxy.round_trips();
        let (_, seen) = deposit(&uncached, id, 1).await;
        let trips = uncached_proxy.round_trips() - before;
        assert_eq!(seen.len(), 1);
        assert_eq!(
            trips, 2,
            "round {round}: without the cache, read then write"
        );
    }
    // A stale entry: rejected, explained, read, written; then one again.
    plain_deposit(&other, id, 1).await;
    let before = proxy.round_trips();
    let (_, seen) = deposit(&store, id, 1).await;
    let stale = proxy.round_trips() - before;
    assert_eq!(seen.len(), 2);
    eprintln!("stale cached command: {stale} round trips");
    // The rejected save, its explanation after the rollback, the read, the save.
    assert_eq!(stale, 4, "{stale}");
    let before = proxy.round_trips();
    deposit(&store, id, 1).await;
    assert_eq!(
        proxy.round_trips() - before,
        1,
        "the retry refreshed the entry"
    );
    audit(&store, id).await;
}

/// Makes `store`'s cached state of `id` stale: another store deposits 1000.
async fn go_stale(store: &DocumentStore, other: &DocumentStore, id: Uuid) -> (i64, i64) {
    open(store, id).await;
    deposit(store, id, 10).await;
    deposit(store, id, 10).await;
    plain_deposit(other, id, 1000).await;
    (4, 1020)
}

#[tokio::test]
async fn a_command_saves_what_else_the_session_queued_atomically_and_decides_on_a_fresh_read() {
    let (schema, b) = builder("wta_queued");
    let store = ok(b.document::<Note>().build().await);
    let other = ok(builder_on(&schema).document::<Note>().build().await);
    let id = Uuid::now_v7();
    let fresh = go_stale(&store, &other, id).await;

    let note = Note {
        id: Uuid::now_v7(),
        text: "with the deposit".into(),
    };
    let mut s = store.lightweight_session();
    ok(s.store(note.clone()));
    let (r, seen) = command::<Account, _>(&mut s, id, |a| deposit_decision(a, 5)).await;
    assert_eq!(expect_ok(r), 5);
    assert_eq!(
        seen,
        [Some(fresh)],
        "with something else queued, one decision on a fresh read"
    );
    drop(s);
    let loaded: Option<Note> = ok(store.query_session().load(&note.id).await);
    assert_eq!(loaded.as_ref(), Some(&note));
    assert_eq!(balance(&store, id).await, (1025, 5));

    // A queued insert of an existing id fails the save: the events are not appended.
    let mut s = store.lightweight_session();
    ok(s.insert(Note {
        id: note.id,
        text: "duplicate".into(),
    }));
    let (r, seen) = command::<Account, _>(&mut s, id, |a| deposit_decision(a, 7)).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    match r {
        Err(BankError::Store(marten::Error::Rejected(r))) => {
            let kinds: Vec<&RejectionKind> = r.iter().map(|r| &r.kind).collect();
            assert_eq!(kinds, [&RejectionKind::AlreadyExists]);
        }
        other => panic!("expected the insert's rejection, got {other:?}"),
    }
    drop(s);
    assert_eq!(
        balance(&store, id).await,
        (1025, 5),
        "nothing of the failed save"
    );
    let loaded: Option<Note> = ok(store.query_session().load(&note.id).await);
    assert_eq!(loaded.map(|n| n.text), Some("with the deposit".into()));

    // A decider's error with a document queued: nothing saved.
    let mut s = store.lightweight_session();
    let lost = Note {
        id: Uuid::now_v7(),
        text: "not saved".into(),
    };
    ok(s.store(lost.clone()));
    let (r, _) = command::<Account, _>(&mut s, id, |a| withdraw_decision(a, 1_000_000)).await;
    assert!(matches!(r, Err(BankError::Insufficient { .. })), "{r:?}");
    let loaded: Option<Note> = ok(store.query_session().load(&lost.id).await);
    assert_eq!(loaded, None, "a decider's error saves nothing");
    assert_eq!(balance(&store, id).await, (1025, 5));
}

#[tokio::test]
async fn a_dirty_tracked_session_decides_on_a_fresh_read() {
    let (schema, b) = builder("wta_dirty");
    let store = ok(b.document::<Note>().build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    let fresh = go_stale(&store, &other, id).await;
    let mut s = store.dirty_tracked_session();
    let (r, seen) = command::<Account, _>(&mut s, id, |a| deposit_decision(a, 5)).await;
    assert_eq!((expect_ok(r), seen), (5, vec![Some(fresh)]));
    assert_eq!(balance(&store, id).await, (1025, 5));

    // A changed loaded document is saved with the command.
    let note = Note {
        id: Uuid::now_v7(),
        text: "before".into(),
    };
    let mut w = store.lightweight_session();
    ok(w.store(note.clone()));
    ok(w.save_changes().await);
    let mut s = store.dirty_tracked_session();
    let loaded = ok(s.load::<Note>(&note.id).await).expect("loaded");
    loaded.text = "changed".into();
    let (r, _) = command::<Account, _>(&mut s, id, |a| deposit_decision(a, 1)).await;
    assert_eq!(expect_ok(r), 6);
    let loaded: Option<Note> = ok(store.query_session().load(&note.id).await);
    assert_eq!(loaded.map(|n| n.text), Some("changed".into()));
}

#[tokio::test]
async fn a_session_holding_an_exclusive_lock_decides_on_a_fresh_read() {
    let (schema, b) = builder("wta_locked");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_secs(2))
        .build()
        .await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    let fresh = go_stale(&store, &other, id).await;
    let locked = Uuid::now_v7();
    open(&store, locked).await;

    let mut s = store.lightweight_session();
    let w = ok(s
        .events()
        .fetch_for_exclusive_writing::<Account>(locked)
        .await);
    assert_eq!(w.version(), 1);
    drop(w);
    let (r, seen) = command::<Account, _>(&mut s, id, |a| deposit_decision(a, 5)).await;
    assert_eq!((expect_ok(r), seen), (5, vec![Some(fresh)]));
    drop(s);
    assert_eq!(balance(&store, id).await, (1025, 5));
    // The lock was released with the save.
    assert_eq!(deposit(&other, locked, 1).await.0, 2);
}

#[tokio::test]
async fn an_aggregate_reading_event_metadata_decides_on_a_fresh_read() {
    let (schema, b) = builder("wta_meta");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let (r, _) = command::<MetaAccount, _>(&mut s, id, |a| open_decision(a, "m")).await;
    assert_eq!(expect_ok(r), 1);
    for v in 1..3 {
        let (r, seen) = command::<MetaAccount, _>(&mut s, id, |a| deposit_decision(a, 10)).await;
        assert_eq!((expect_ok(r), seen.len()), (v + 1, 1));
    }
    plain_deposit(&other, id, 1000).await;
    let (r, seen) = command::<MetaAccount, _>(&mut s, id, |a| deposit_decision(a, 5)).await;
    assert_eq!((expect_ok(r), seen), (5, vec![Some((4, 1020))]));
    let events = ok(s.events().fetch_stream(id).await);
    let m = ok(s.events().aggregate_stream::<MetaAccount>(id).await).expect("meta");
    assert_eq!(m.last_event, events.last().map(|e| e.id));
    assert_eq!(m.balance, 1025);
}

#[tokio::test]
async fn an_inline_aggregate_decides_on_a_fresh_read() {
    let (schema, b) = builder("wta_inline");
    let store = ok(b
        .projection::<InlineAccount>(Lifecycle::Inline)
        .build()
        .await);
    let other = ok(builder_on(&schema)
        .projection::<InlineAccount>(Lifecycle::Inline)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let (r, _) = command::<InlineAccount, _>(&mut s, id, |a| open_decision(a, "i")).await;
    assert_eq!(expect_ok(r), 1);
    for v in 1..3 {
        let (r, seen) = command::<InlineAccount, _>(&mut s, id, |a| deposit_decision(a, 10)).await;
        assert_eq!((expect_ok(r), seen.len()), (v + 1, 1));
    }
    plain_deposit(&other, id, 1000).await;
    let (r, seen) = command::<InlineAccount, _>(&mut s, id, |a| deposit_decision(a, 5)).await;
    assert_eq!((expect_ok(r), seen), (5, vec![Some((4, 1020))]));
    let doc: Option<InlineAccount> = ok(store.query_session().load(&id).await);
    assert_eq!(doc.map(|d| (d.version, d.balance)), Some((5, 1025)));
}

#[tokio::test]
async fn without_the_cache_every_command_decides_once_on_a_fresh_read() {
    let (schema, b) = builder("wta_cache_off");
    let store = ok(b.aggregate_cache(0).build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    assert_eq!(open(&store, id).await, 1);
    let mut expected = (1, 0);
    for i in 0..6i64 {
        if i % 2 == 1 {
            plain_deposit(&other, id, 1000).await;
            expected = (expected.0 + 1, expected.1 + 1000);
        }
        let (v, seen) = deposit(&store, id, i).await;
        assert_eq!(seen, [Some(expected)], "command {i}");
        expected = (expected.0 + 1, expected.1 + i);
        assert_eq!(v, expected.0);
    }
    assert_eq!(balance(&store, id).await, (expected.1, expected.0));
    // A decider's error appends nothing.
    let (r, seen) = account_command(&store, id, |a| withdraw_decision(a, 1_000_000)).await;
    assert!(matches!(r, Err(BankError::Insufficient { .. })), "{r:?}");
    assert_eq!(seen.len(), 1);
    assert_eq!(balance(&store, id).await, (expected.1, expected.0));
    // A restarted stream is read as it is.
    let mut o = other.lightweight_session();
    ok(o.events().delete_stream(id));
    ok(o.save_changes().await);
    drop(o);
    assert_eq!(open(&store, id).await, 1);
    assert_eq!(deposit(&store, id, 2).await, (2, vec![Some((1, 0))]));
}

#[tokio::test]
async fn conjoined_tenants_decide_on_their_own_streams() {
    const RED: &str = "red";
    const BLUE: &str = "blue";
    let (schema, b) = builder("wta_tenants");
    let store = ok(b.events_tenancy(Tenancy::Conjoined).build().await);
    let other = ok(builder_on(&schema)
        .events_tenancy(Tenancy::Conjoined)
        .build()
        .await);
    let id = Uuid::now_v7();
    let tenant_command = |store: &DocumentStore, tenant: &str, amount: i64| {
        let mut s = ok(store.lightweight_session_for(tenant));
        async move {
            let (r, seen) = command::<Account, _>(&mut s, id, |a| match a {
                None => open_decision(a, "t"),
                Some(_) => deposit_decision(a, amount),
            })
            .await;
            (expect_ok(r), seen)
        }
    };
    // Red opens and deposits tens, blue opens and deposits thousands, interleaved, each
    // deciding once on its own state (cached, both at the same versions).
    assert_eq!(tenant_command(&store, RED, 0).await, (1, vec![None]));
    assert_eq!(tenant_command(&store, BLUE, 0).await, (1, vec![None]));
    let (mut red, mut blue) = (0, 0);
    for v in 1..5 {
        assert_eq!(
            tenant_command(&store, RED, 10).await,
            (v + 1, vec![Some((v, red))]),
            "red {v}"
        );
        red += 10;
        assert_eq!(
            tenant_command(&store, BLUE, 1000).await,
            (v + 1, vec![Some((v, blue))]),
            "blue {v}"
        );
        blue += 1000;
    }
    // Blue moves on in another store: red's entry in the first store stays right, blue's
    // is stale and decided on again.
    assert_eq!(
        tenant_command(&other, BLUE, 1000).await,
        (6, vec![Some((5, blue))])
    );
    blue += 1000;
    assert_eq!(
        tenant_command(&store, RED, 10).await,
        (6, vec![Some((5, red))])
    );
    red += 10;
    assert_eq!(
        tenant_command(&store, BLUE, 1).await,
        (7, vec![Some((5, blue - 1000)), Some((6, blue))])
    );
    blue += 1;
    // Red deleted and started again in the other store, up to red's cached version.
    let mut o = ok(other.lightweight_session_for(RED));
    ok(o.events().delete_stream(id));
    ok(o.save_changes().await);
    let mut restart: Vec<PendingEvent> = vec![Opened { owner: "r2".into() }.into()];
    restart.extend((0..5).map(|_| {
        PendingEvent::from(Deposited {
            amount: 7,
            seen_version: -1,
            seen_balance: 0,
        })
    }));
    ok(o.events().start_stream(id, restart));
    ok(o.save_changes().await);
    drop(o);
    assert_eq!(
        tenant_command(&store, RED, 1).await,
        (7, vec![Some((6, red)), Some((6, 35))])
    );
    assert_eq!(
        tenant_command(&store, BLUE, 1).await,
        (8, vec![Some((7, blue))])
    );
    for (tenant, want) in [(RED, (36, 7)), (BLUE, (blue + 1, 8))] {
        let mut s = ok(store.lightweight_session_for(tenant));
        let (a, version) = audit_in(&mut s, id).await;
        assert_eq!(
            (a.expect("account").balance, version),
            want,
            "tenant {tenant}"
        );
    }
}

/// After a drop: nothing of the store runs or holds a lock, and a command in a new
/// session decides on the stream's state as committed.
async fn check_after_drop(store: &DocumentStore, schema: &TestSchema, id: Uuid, k: usize) {
    let raw = schema.raw_client().await;
    assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
    let (before, version) = balance(store, id).await;
    let (v, seen) = deposit(store, id, 1000).await;
    assert_eq!(v, version + 1, "after cancellation {k}");
    assert_eq!(
        seen.last(),
        Some(&Some((version, before))),
        "after cancellation {k}: the committed decision saw the stream as it was"
    );
    assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
}

async fn commands_cancelled_at_every_await(label: &str, cache: usize) {
    let (schema, b) = named_builder(label);
    let store = ok(b.pool_size(1).aggregate_cache(cache).build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    deposit(&store, id, 1).await;
    let make = |k: usize| -> Operation<Result<i64, BankError>> {
        let store = store.clone();
        Box::pin(async move {
            let mut s = store.lightweight_session();
            s.events()
                .write_to_aggregate::<Account, _, _>(id, |a: Option<&Account>| {
                    deposit_decision(a, k as i64)
                })
                .await
        })
    };
    let run = cancel_at_every_await(200, make, |k| check_after_drop(&store, &schema, id, k)).await;
    let last = expect_ok(run.output);
    assert!(run.cancelled >= 1, "only {} pending polls", run.cancelled);
    let (b, version) = balance(&store, id).await;
    assert_eq!(version, last);
    // Each cancelled attempt k committed or not; the check after it added 1000.
    let committed = b - 1 - 1000 * run.cancelled as i64 - (run.cancelled as i64 + 1);
    eprintln!(
        "{label}: {} cancellations, balance {b}, version {version}",
        run.cancelled
    );
    assert!(
        (0..=(run.cancelled * (run.cancelled + 1) / 2) as i64).contains(&committed),
        "balance {b} is not 1 + 1000 per check + the final deposit + a subset of the cancelled ones"
    );
    // Once more through the cache (or a fresh read), on the right state.
    let (v, seen) = deposit(&store, id, 1).await;
    assert_eq!(
        (v, seen.last().cloned()),
        (version + 1, Some(Some((version, b))))
    );
}

#[tokio::test]
async fn cached_commands_cancelled_at_every_await() {
    commands_cancelled_at_every_await("wta_cancel_cached", 10_000).await;
}

#[tokio::test]
async fn uncached_commands_cancelled_at_every_await() {
    commands_cancelled_at_every_await("wta_cancel_uncached", 0).await;
}

/// A command dropped on a timer mid-flight, many times, with a plain append of another
/// store between: the next command still decides on the committed state.
#[tokio::test]
async fn commands_dropped_by_timeouts_leave_a_cache_that_decides_right() {
    let (schema, b) = named_builder("wta_cancel_timeouts");
    let store = ok(b.pool_size(2).build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    deposit(&store, id, 1).await;
    let raw = schema.raw_client().await;
    let mut timed_out = 0;
    for i in 0..40u64 {
        let limit = Duration::from_micros(50 + 97 * i);
        let mut s = store.lightweight_session();
        let fut = s
            .events()
            .write_to_aggregate::<Account, _, _>(id, |a: Option<&Account>| deposit_decision(a, 1));
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => {
                expect_ok(r);
            }
            Err(_) => timed_out += 1,
        }
        drop(s);
        if i % 5 == 0 {
            plain_deposit(&other, id, 0).await;
        }
        assert_clean(&raw, schema.name(), Duration::from_secs(10)).await;
        let (before, version) = balance(&store, id).await;
        let (v, seen) = deposit(&store, id, 1).await;
        assert_eq!(v, version + 1, "round {i}");
        assert_eq!(seen.last(), Some(&Some((version, before))), "round {i}");
    }
    eprintln!("{timed_out} of 40 commands timed out");
    assert!(timed_out > 0, "no command was cut short");
    audit(&store, id).await;
}

/// A decider that refuses to act on no account (the usual kind) on a stream archived by
/// another store: the command is rejected (the brief: "returns an error (Rejected)"),
/// rather than answered as if the account had never existed.
#[tokio::test]
async fn a_deposit_to_a_stream_archived_elsewhere_is_rejected_as_archived() {
    let (schema, b) = builder("wta_archived_deposit");
    let store = ok(b.build().await);
    let other = ok(builder_on(&schema).build().await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    deposit(&store, id, 10).await;
    let mut o = other.lightweight_session();
    ok(o.events().archive_stream(id));
    ok(o.save_changes().await);
    let (r, seen) = account_command(&store, id, |a| deposit_decision(a, 1)).await;
    let mut s = store.lightweight_session();
    let all = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().including_archived())
        .await);
    assert_eq!(all.len(), 2, "nothing appended after the archive");
    assert_eq!(
        r.as_ref().err().and_then(BankError::rejection),
        Some(&RejectionKind::StreamArchived),
        "decisions on {seen:?}, result {r:?}"
    );
}

/// `write_exclusively_to_aggregate`: 8 sessions racing on one account under the stream's
/// lock each decide once, on the state before them, and none is rejected: every deposit
/// lands, the versions run without a gap.
#[tokio::test]
async fn exclusive_commands_racing_on_one_account_are_each_decided_once_and_never_rejected() {
    const TASKS: usize = 8;
    const ROUNDS: usize = 10;
    let (_schema, b) = builder("wta_exclusive_race");
    let store = ok(b
        .pool_size(TASKS + 2)
        .exclusive_lock_timeout(Duration::from_secs(30))
        .build()
        .await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    let barrier = Arc::new(Barrier::new(TASKS));
    let decisions = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, barrier, decisions) = (store.clone(), barrier.clone(), decisions.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                barrier.wait().await;
                let mut s = store.lightweight_session();
                let r = s
                    .events()
                    .write_exclusively_to_aggregate(id, |a: Option<&Account>| {
                        decisions.fetch_add(1, Ordering::Relaxed);
                        deposit_decision(a, 1)
                    })
                    .await;
                expect_ok(r);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(decisions.load(Ordering::Relaxed), TASKS * ROUNDS);
    // `audit` checks that each deposit saw exactly the state before it.
    assert_eq!(
        balance(&store, id).await,
        ((TASKS * ROUNDS) as i64, (TASKS * ROUNDS) as i64 + 1)
    );
}

/// An exclusive command whose decision refuses releases the stream's lock at once (the
/// session that ran it is still open), and nothing is appended.
#[tokio::test]
async fn a_refused_exclusive_command_releases_the_lock() {
    let (_schema, b) = builder("wta_exclusive_refused");
    let store = ok(b
        .exclusive_lock_timeout(Duration::from_millis(300))
        .build()
        .await);
    let id = Uuid::now_v7();
    open(&store, id).await;
    deposit(&store, id, 10).await;
    let mut held = store.lightweight_session();
    let r = held
        .events()
        .write_exclusively_to_aggregate(id, |a: Option<&Account>| withdraw_decision(a, 50))
        .await;
    assert!(
        matches!(
            r,
            Err(BankError::Insufficient {
                balance: 10,
                wanted: 50
            })
        ),
        "{r:?}"
    );
    let mut other = store.lightweight_session();
    let r = other
        .events()
        .write_exclusively_to_aggregate(id, |a: Option<&Account>| withdraw_decision(a, 4))
        .await;
    assert_eq!(expect_ok(r), 3, "the lock was released: no StreamLocked");
    drop(held);
    assert_eq!(balance(&store, id).await, (6, 3));
}
