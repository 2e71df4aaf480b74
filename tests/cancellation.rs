//! Every future of the store may be dropped at any await point: afterwards no connection
//! of the store runs a statement, sits in a transaction or holds a lock, the pool's next
//! user commits durably, and a cancelled save is all there or all absent.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::events::*;
use common::{named_builder, ok};
use marten::prelude::*;
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Tally {
    id: Uuid,
    version: i64,
    titles: Vec<String>,
}

#[marten::apply]
impl Tally {
    fn create(_e: &ProjectStarted) -> Self {
        Tally::default()
    }

    fn apply(&mut self, e: &TaskRecorded) {
        self.titles.push(e.title.clone());
    }
}

/// What the pool's next user writes after a cancellation.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Marker {
    id: Uuid,
    k: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Account {
    id: Uuid,
    balance: i64,
}

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LedgerId(Uuid);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Booked {
    #[tag]
    ledger: LedgerId,
    amount: i64,
}

#[derive(Default, Debug)]
struct Balance {
    total: i64,
}

#[marten::apply]
impl Balance {
    fn apply_booked(&mut self, e: &Booked) {
        self.total += e.amount;
    }
}

const WITHIN: Duration = Duration::from_secs(10);

/// After a drop: nothing of the store's runs or is locked, and the pool's next user (one
/// connection: the same slot) commits a document another connection then sees.
async fn check_after_drop(store: &DocumentStore, schema: &TestSchema, k: usize) {
    let raw = schema.raw_client().await;
    assert_clean(&raw, schema.name(), WITHIN).await;
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.store(Marker { id, k: k as i64 }));
    ok(s.save_changes().await);
    drop(s);
    let seen: i64 = raw
        .query_one("SELECT count(*) FROM mt_doc_marker WHERE id = $1", &[&id])
        .await
        .expect("marker count")
        .get(0);
    assert_eq!(
        seen, 1,
        "the write after cancellation {k} was not committed"
    );
    assert_clean(&raw, schema.name(), WITHIN).await;
}

/// The titles of a stream's `TaskRecorded` events grouped by their attempt prefix.
async fn attempts(store: &DocumentStore, stream: Uuid) -> BTreeMap<String, usize> {
    let mut s = store.lightweight_session();
    let mut out = BTreeMap::new();
    for e in ok(s.events().fetch_stream(stream).await) {
        if let Some(t) = e.data_as::<TaskRecorded>() {
            let attempt = t.title.split('-').next().unwrap_or_default().to_owned();
            *out.entry(attempt).or_insert(0) += 1;
        }
    }
    out
}

async fn start_tally(store: &DocumentStore) -> Uuid {
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("tally")]));
    ok(s.save_changes().await);
    id
}

/// The save a test cancels: two events of attempt `k` on `stream`.
fn append_two(store: &DocumentStore, stream: Uuid, k: usize) -> Operation<marten::Result<()>> {
    let store = store.clone();
    Box::pin(async move {
        let mut s = store.lightweight_session();
        s.events()
            .append(stream, [task(&format!("{k}-a")), task(&format!("{k}-b"))])?;
        s.save_changes().await
    })
}

/// Every cancelled save of two events left both or neither; the inline aggregate equals a
/// live fold of the stream.
async fn assert_all_or_nothing(store: &DocumentStore, stream: Uuid) {
    for (attempt, n) in attempts(store, stream).await {
        assert!(n == 0 || n == 2, "attempt {attempt} left {n} of 2 events");
    }
    let mut s = store.lightweight_session();
    let stored: Option<Tally> = ok(s.load(&stream).await);
    let events = ok(s.events().fetch_stream(stream).await);
    let live: Vec<String> = events
        .iter()
        .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
        .collect();
    let stored = stored.expect("the inline aggregate");
    assert_eq!(stored.titles, live);
    assert_eq!(stored.version, events.last().map_or(0, |e| e.version));
}

/// Issue #12 defect 1: a save waiting for a stream's row lock is cancelled. Its
/// connection must not go back to the pool inside a transaction.
#[tokio::test]
async fn save_cancelled_while_waiting_for_a_stream_lock_leaves_nothing_behind() {
    let (schema, b) = named_builder("cancel_lock_wait");
    let store = ok(b
        .pool_size(1)
        .aggregate_cache(0)
        .projection::<Tally>(Lifecycle::Inline)
        .build()
        .await);
    let stream = start_tally(&store).await;
    let holder = schema.raw_client().await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute(
            "SELECT 1 FROM mt_streams WHERE id = $1 FOR UPDATE",
            &[&stream],
        )
        .await
        .expect("lock the stream");

    let waited =
        tokio::time::timeout(Duration::from_millis(300), append_two(&store, stream, 1)).await;
    assert!(waited.is_err(), "the save should still wait for the lock");
    holder.batch_execute("COMMIT").await.expect("release");

    check_after_drop(&store, &schema, 1).await;
    assert_eq!(attempts(&store, stream).await.get("1"), None);
    // The stream is not left locked: a save goes through.
    ok(append_two(&store, stream, 2).await);
    assert_all_or_nothing(&store, stream).await;
}

#[tokio::test]
async fn documents_only_save_cancelled_at_every_await() {
    let (schema, b) = named_builder("cancel_docs");
    let store = ok(b.pool_size(1).document::<Account>().build().await);
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let make = |k: usize| -> Operation<marten::Result<()>> {
        let (store, ids) = (store.clone(), ids.clone());
        Box::pin(async move {
            let mut s = store.lightweight_session();
            for id in &ids {
                s.store(Account {
                    id: *id,
                    balance: k as i64,
                })?;
            }
            s.save_changes().await
        })
    };
    let run = cancel_at_every_await(200, make, |k| check_after_drop(&store, &schema, k)).await;
    ok(run.output);
    assert!(run.cancelled >= 2, "only {} pending polls", run.cancelled);
    // All three documents carry the last (completed) attempt's balance.
    let mut s = store.lightweight_session();
    let loaded: Vec<Account> = ok(s.load_many(&ids).await);
    let want = (run.cancelled + 1) as i64;
    assert_eq!(loaded.len(), 3);
    assert!(loaded.iter().all(|a| a.balance == want), "{loaded:?}");
}

/// The two one-statement saves (no transaction): one optimistic document, whose row
/// count says whether it was written, and one event without metadata. A lone statement
/// that was sent before the drop may have committed, so the appends are counted, not
/// asserted absent: what must hold is a clean connection and contiguous versions.
#[tokio::test]
async fn lone_saves_cancelled_at_every_await() {
    let (schema, b) = named_builder("cancel_lone");
    let store = ok(b
        .pool_size(1)
        .document::<Account>()
        .event::<TaskRecorded>()
        .build()
        .await);
    let (id, stream) = (Uuid::now_v7(), Uuid::now_v7());
    let make = |k: usize| -> Operation<marten::Result<()>> {
        let store = store.clone();
        Box::pin(async move {
            let mut s = store.lightweight_session();
            s.store(Account {
                id,
                balance: k as i64,
            })?;
            s.save_changes().await?;
            s.events().append(stream, [task(&format!("lone {k}"))])?;
            s.save_changes().await
        })
    };
    let run = cancel_at_every_await(200, make, |k| check_after_drop(&store, &schema, k)).await;
    ok(run.output);
    assert!(run.cancelled >= 2, "only {} pending polls", run.cancelled);
    let mut s = store.lightweight_session();
    let loaded: Option<Account> = ok(s.load(&id).await);
    assert_eq!(loaded.map(|a| a.balance), Some((run.cancelled + 1) as i64));
    let events = ok(s.events().fetch_stream(stream).await);
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(versions, expected);
    let last = events
        .last()
        .and_then(|e| e.data_as::<TaskRecorded>())
        .map(|t| t.title.clone());
    assert_eq!(last, Some(format!("lone {}", run.cancelled + 1)));
}

async fn inline_save_cancelled_at_every_await(label: &str, cache: usize) {
    let (schema, b) = named_builder(label);
    let store = ok(b
        .pool_size(1)
        .aggregate_cache(cache)
        .projection::<Tally>(Lifecycle::Inline)
        .document::<Marker>()
        .build()
        .await);
    let stream = start_tally(&store).await;
    // Warm the cache (when it is on) so the first attempts plan from it.
    let mut s = store.lightweight_session();
    let _: Option<Tally> = ok(s.events().fetch_latest(stream).await);
    drop(s);
    let run = cancel_at_every_await(
        200,
        |k| append_two(&store, stream, k),
        |k| check_after_drop(&store, &schema, k),
    )
    .await;
    ok(run.output);
    assert!(run.cancelled >= 2, "only {} pending polls", run.cancelled);
    assert_all_or_nothing(&store, stream).await;
    let last = (run.cancelled + 1).to_string();
    assert_eq!(attempts(&store, stream).await.get(&last), Some(&2));
}

#[tokio::test]
async fn inline_aggregate_save_cancelled_at_every_await() {
    inline_save_cancelled_at_every_await("cancel_inline", 0).await;
}

#[tokio::test]
async fn cached_inline_aggregate_save_cancelled_at_every_await() {
    inline_save_cancelled_at_every_await("cancel_inline_cached", 10_000).await;
}

#[tokio::test]
async fn exclusive_append_and_save_cancelled_at_every_await() {
    let (schema, b) = named_builder("cancel_exclusive");
    let store = ok(b
        .pool_size(1)
        .projection::<Tally>(Lifecycle::Inline)
        .document::<Marker>()
        .build()
        .await);
    let stream = start_tally(&store).await;
    let make = |k: usize| -> Operation<marten::Result<()>> {
        let store = store.clone();
        Box::pin(async move {
            let mut s = store.lightweight_session();
            s.events()
                .append_exclusive(stream, [task(&format!("{k}-a")), task(&format!("{k}-b"))])
                .await?;
            s.save_changes().await
        })
    };
    let run = cancel_at_every_await(200, make, |k| check_after_drop(&store, &schema, k)).await;
    ok(run.output);
    assert_all_or_nothing(&store, stream).await;
}

#[tokio::test]
async fn exclusive_fetch_for_writing_and_save_cancelled_at_every_await() {
    let (schema, b) = named_builder("cancel_exclusive_fetch");
    let store = ok(b
        .pool_size(1)
        .projection::<Tally>(Lifecycle::Inline)
        .document::<Marker>()
        .build()
        .await);
    let stream = start_tally(&store).await;
    let make = |k: usize| -> Operation<marten::Result<()>> {
        let store = store.clone();
        Box::pin(async move {
            let mut s = store.lightweight_session();
            let mut w = s
                .events()
                .fetch_for_exclusive_writing::<Tally>(stream)
                .await?;
            w.append([task(&format!("{k}-a")), task(&format!("{k}-b"))])?;
            s.save_changes().await
        })
    };
    let run = cancel_at_every_await(200, make, |k| check_after_drop(&store, &schema, k)).await;
    ok(run.output);
    assert!(run.cancelled >= 2, "only {} pending polls", run.cancelled);
    assert_all_or_nothing(&store, stream).await;
}

#[tokio::test]
async fn tag_boundary_save_cancelled_at_every_await() {
    let (schema, b) = named_builder("cancel_tags");
    let store = ok(b.pool_size(1).document::<Marker>().build().await);
    let ledger = LedgerId(Uuid::now_v7());
    let make = |k: usize| -> Operation<marten::Result<()>> {
        let store = store.clone();
        Box::pin(async move {
            let mut s = store.lightweight_session();
            let mut b = s
                .events()
                .fetch_for_writing_by_tags::<Balance>(TagQuery::new().tag(ledger))
                .await?;
            b.append_to(
                Uuid::now_v7(),
                [
                    Booked {
                        ledger,
                        amount: k as i64,
                    },
                    Booked {
                        ledger,
                        amount: k as i64,
                    },
                ],
            )?;
            s.save_changes().await
        })
    };
    let run = cancel_at_every_await(200, make, |k| check_after_drop(&store, &schema, k)).await;
    ok(run.output);
    // Every booking came in pairs: the total is even per attempt, and the tag's version
    // counts exactly the events stored.
    let mut s = store.lightweight_session();
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<Balance>(TagQuery::new().tag(ledger))
        .await);
    let mut per_amount: BTreeMap<i64, usize> = BTreeMap::new();
    for e in b.events() {
        if let Some(booked) = e.data_as::<Booked>() {
            *per_amount.entry(booked.amount).or_insert(0) += 1;
        }
    }
    assert!(per_amount.values().all(|n| *n == 2), "{per_amount:?}");
    assert_eq!(b.versions()[0].1, b.events().len() as i64);
}

#[tokio::test]
async fn reads_and_queries_cancelled_at_every_await() {
    let (schema, b) = named_builder("cancel_reads");
    let store = ok(b
        .pool_size(1)
        .projection::<Tally>(Lifecycle::Inline)
        .document::<Account>()
        .document::<Marker>()
        .build()
        .await);
    let stream = start_tally(&store).await;
    ok(append_two(&store, stream, 0).await);
    let mut s = store.lightweight_session();
    for i in 0..20 {
        ok(s.store(Account {
            id: Uuid::now_v7(),
            balance: i,
        }));
    }
    ok(s.save_changes().await);
    drop(s);

    let make = |_k: usize| -> Operation<marten::Result<usize>> {
        let store = store.clone();
        Box::pin(async move {
            let mut s = store.lightweight_session();
            let w = s.events().fetch_for_writing::<Tally>(stream).await?;
            let titles = w.state().map_or(0, |t| t.titles.len());
            // Its rows depend on transactions of other tests (the gap-safe order waits for
            // them), so only that it answers counts here.
            let page = s.events().read_all(Position::START, 3).await?;
            assert!(page.rows <= 3);
            drop(s);
            let mut q = store.query_session();
            let rich = q
                .query::<Account>()
                .filter(|f| f.balance.gt(9))
                .to_list()
                .await?;
            let n = q.query::<Account>().count().await?;
            let mut batch = q.batch();
            let all = batch.list(marten::QuerySpec::<Account>::new());
            let results = batch.execute().await?;
            let firsts = results.get(all)?;
            let sum = q.query::<Account>().sum(|f| f.balance).await?.unwrap_or(0);
            let selected = q
                .query::<Account>()
                .filter(|f| f.balance.is_one_of([1, 2, 3]))
                .select(|f| (f.id, f.balance))
                .to_list()
                .await?;
            Ok(titles + rich.len() + n as usize + firsts.len() + sum as usize + selected.len())
        })
    };
    let run = cancel_at_every_await(300, make, |k| check_after_drop(&store, &schema, k)).await;
    let total = ok(run.output);
    assert_eq!(total, 2 + 10 + 20 + 20 + 190 + 3);
    assert!(run.cancelled >= 5, "only {} pending polls", run.cancelled);
}
