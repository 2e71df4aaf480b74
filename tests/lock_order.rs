//! Locks taken in different orders: exclusive stream locks, inline locked reads, saves
//! planned from the aggregate cache, tag locks and document writes race on overlapping
//! streams and tags. A save that began its own transaction and lost a deadlock wrote
//! nothing and is sent again; only a session that holds exclusive locks from before sees
//! the deadlock (its locks are gone), as a typed error.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tally::Added;
use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LedgerId(Uuid);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Booked {
    #[tag]
    ledger: LedgerId,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Tally {
    id: Uuid,
    version: i64,
    total: i64,
    booked: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
    fn apply_booked(&mut self, _e: &Booked) {
        self.booked += 1;
    }
}

#[derive(Default, Debug)]
struct Bookings {
    count: i64,
}

#[marten::apply]
impl Bookings {
    fn apply_booked(&mut self, _e: &Booked) {
        self.count += 1;
    }
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Note {
    id: Uuid,
    round: i64,
}

const WRITERS: usize = 8;
const ROUNDS: usize = 12;

/// What one writer may see go wrong: everything else fails the test.
fn allowed(kind: usize, e: &marten::Error) -> bool {
    match e {
        // A boundary whose tag moved meanwhile.
        marten::Error::Rejected(r) => r.iter().all(|r| {
            matches!(
                r.kind,
                marten::RejectionKind::DcbConcurrency { .. }
                    | marten::RejectionKind::UnexpectedStreamVersion { .. }
            )
        }),
        // Exclusive locks taken in opposite orders: one session waits out its timeout or
        // loses the deadlock, and it is told.
        marten::Error::StreamLocked { .. } => kind == 0,
        other => kind == 0 && matches!(other.sqlstate(), Some("40P01")),
    }
}

async fn one_save(
    store: &DocumentStore,
    kind: usize,
    reversed: bool,
    a: Uuid,
    b: Uuid,
    ledger: LedgerId,
    round: i64,
) -> marten::Result<()> {
    let (first, second) = if reversed { (b, a) } else { (a, b) };
    let mut s = store.lightweight_session();
    match kind {
        0 => {
            s.events().append_exclusive(first, [Added { n: 1 }]).await?;
            s.events()
                .append_exclusive(second, [Added { n: 1 }])
                .await?;
        }
        1 => {
            s.events().append(first, [Added { n: 1 }])?;
            s.events().append(second, [Added { n: 1 }])?;
        }
        2 => {
            let mut boundary = s
                .events()
                .fetch_for_writing_by_tags::<Bookings>(TagQuery::new().tag(ledger))
                .await?;
            boundary.append_to(first, [Booked { ledger }])?;
        }
        _ => {
            s.store(Note {
                id: Uuid::now_v7(),
                round,
            })?;
            s.events().append(second, [Added { n: 1 }])?;
            s.events().append(first, [Added { n: 1 }])?;
        }
    }
    s.save_changes().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_lock_orders_never_fail_a_save_that_could_be_sent_again() {
    let (schema, b) = builder("lock_order");
    let cached = ok(b
        .pool_size(WRITERS + 2)
        .exclusive_lock_timeout(Duration::from_secs(2))
        .projection::<Tally>(Lifecycle::Inline)
        .event::<Booked>()
        .document::<Note>()
        .build()
        .await);
    let uncached = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(WRITERS + 2)
        .exclusive_lock_timeout(Duration::from_secs(2))
        .aggregate_cache(0)
        .projection::<Tally>(Lifecycle::Inline)
        .event::<Booked>()
        .document::<Note>()
        .build()
        .await);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let ledger = LedgerId(Uuid::now_v7());
    let mut s = cached.lightweight_session();
    ok(s.events().start_stream(a, [Added { n: 0 }]));
    ok(s.events().start_stream(b, [Added { n: 0 }]));
    ok(s.save_changes().await);
    drop(s);

    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 {
            cached.clone()
        } else {
            uncached.clone()
        };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let kind = (w / 2 + round) % 4;
                let reversed = (w + round) % 2 == 1;
                let saved = tokio::time::timeout(
                    Duration::from_secs(30),
                    one_save(&store, kind, reversed, a, b, ledger, round as i64),
                )
                .await;
                match saved {
                    Err(_) => panic!("writer {w} round {round} (kind {kind}) hung"),
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if allowed(kind, &e) => failures.push(kind),
                    Ok(Err(e)) => panic!("writer {w} round {round} (kind {kind}): {e} ({e:?})"),
                }
            }
            failures
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.expect("writer").len();
    }
    println!("{refused} of {} saves refused as allowed", WRITERS * ROUNDS);

    let mut s = uncached.lightweight_session();
    for id in [a, b] {
        let events = ok(s.events().fetch_stream(id).await);
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        let expected: Vec<i64> = (1..=events.len() as i64).collect();
        assert_eq!(versions, expected, "stream {id} versions");
        let doc: Option<Tally> = ok(s.load(&id).await);
        let live: Option<Tally> = ok(s.events().aggregate_stream(id).await);
        assert_eq!(doc, live, "stream {id}");
    }
}
