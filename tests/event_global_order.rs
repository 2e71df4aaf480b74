//! Gap-safe global order: a reader never passes an event whose transaction may still
//! commit before it.

mod common;

use std::collections::HashSet;

use common::events::*;
use common::inversion::{invert_versions, versions_in_global_order};
use common::{builder, ok};
use marten::prelude::*;

/// Reads everything currently readable from `from`, page by page.
async fn drain(store: &DocumentStore, from: Position) -> (Vec<marten::EventEnvelope>, Position) {
    let mut s = store.lightweight_session();
    let mut all = Vec::new();
    let mut at = from;
    loop {
        let page = ok(s.events().read_all(at, 3).await);
        at = page.next;
        if page.rows == 0 {
            break;
        }
        all.extend(page.events);
    }
    (all, at)
}

async fn hold_open_append(client: &tokio_postgres::Client, stream: Uuid) -> i64 {
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .execute(
            "INSERT INTO mt_streams (id, version) VALUES ($1, 1)",
            &[&stream],
        )
        .await
        .expect("stream");
    client
        .query_one(
            "INSERT INTO mt_events (id, stream_id, version, type, data) \
             VALUES (gen_random_uuid(), $1, 1, 'project_started', '{\"name\": \"slow\"}') RETURNING seq_id",
            &[&stream],
        )
        .await
        .expect("event")
        .get(0)
}

async fn scenario(commit: bool) {
    let (schema, b) = builder(if commit {
        "order_commit"
    } else {
        "order_rollback"
    });
    let store = ok(b
        .event::<ProjectStarted>()
        .event::<TaskRecorded>()
        .build()
        .await);
    let mut s = store.lightweight_session();
    let early = Uuid::now_v7();
    ok(s.events()
        .start_stream(early, [started("early"), started("early 2")]));
    ok(s.save_changes().await);
    let (before, cursor) = drain(&store, Position::START).await;
    assert_eq!(before.len(), 2);

    // A transaction appends (taking a low sequence) and stays open...
    let slow = schema.raw_client().await;
    let slow_stream = Uuid::now_v7();
    let slow_seq = hold_open_append(&slow, slow_stream).await;
    // ...while later appends commit with higher sequences.
    let mut later = Vec::new();
    for i in 0..5 {
        let id = Uuid::now_v7();
        ok(s.events()
            .start_stream(id, [started(&format!("later {i}")), started("x")]));
        ok(s.save_changes().await);
        later.push(id);
    }
    let (held, cursor_held) = drain(&store, cursor).await;
    assert!(
        held.is_empty(),
        "the reader stops at the gap: got {:?}",
        held.iter().map(|e| e.sequence).collect::<Vec<_>>()
    );
    assert_eq!(cursor_held, cursor, "the cursor does not move past the gap");
    let age = ok(s.events().oldest_open_transaction().await).expect("an open writer");
    assert!(age.as_secs() < 600);

    if commit {
        slow.batch_execute("COMMIT").await.expect("commit");
    } else {
        slow.batch_execute("ROLLBACK").await.expect("rollback");
    }
    let expected_count = 10 + usize::from(commit);
    // Other tests' open writers (anywhere in the cluster) hold the reader back too; wait
    // for them rather than fail.
    let mut after = Vec::new();
    for _ in 0..300 {
        after = drain(&store, cursor).await.0;
        if after.len() >= expected_count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let seqs: Vec<i64> = after.iter().map(|e| e.sequence).collect();
    assert_eq!(after.len(), expected_count, "{seqs:?}");
    assert_eq!(after.iter().any(|e| e.sequence == slow_seq), commit);
    let unique: HashSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "no event twice");
    // In (transaction, sequence) order: the slow transaction's event comes first.
    let keys: Vec<(u64, i64)> = after
        .iter()
        .map(|e| (e.transaction_id, e.sequence))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    if commit {
        assert_eq!(after[0].sequence, slow_seq);
        assert!(after[1..].iter().all(|e| e.sequence > slow_seq));
    }
    let streams: HashSet<StreamId> = after.iter().map(|e| e.stream_id.clone()).collect();
    assert!(later
        .iter()
        .all(|id| streams.contains(&StreamId::Uuid(*id))));
}

/// One test, so the two scenarios' open transactions do not hold each other's reader
/// (the snapshot horizon is cluster-wide).
#[tokio::test]
async fn the_reader_waits_at_a_gap_until_the_open_transaction_ends() {
    scenario(true).await;
    scenario(false).await;
}

/// A save that took its transaction id before another save appended to a stream and
/// committed, and then appended to that stream itself (it waited on another stream's
/// row), records the other's later id on that event: each stream's events come in
/// version order in the global order, for every reader; its other events keep its own
/// id. Without `last_tx` the stored order was versions 1, 3, 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streams_events_come_in_version_order_whatever_order_the_transactions_took_ids() {
    let (schema, b) = builder("order_stream_versions");
    let store = ok(b.event::<ProjectStarted>().build().await);
    let started_n = |n: i64| PendingEvent::new(started(&n.to_string()));
    let (t, s) = invert_versions(&schema, &store, started_n, started_n(2)).await;
    assert_eq!(versions_in_global_order(&schema, s).await, [1, 2, 3]);
    // Other tests' open writers (anywhere in the cluster) hold the reader back: wait.
    let mut all = Vec::new();
    for _ in 0..300 {
        all = drain(&store, Position::START).await.0;
        if all.len() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let of = |id: Uuid| -> Vec<&marten::EventEnvelope> {
        all.iter()
            .filter(|e| e.stream_id == StreamId::Uuid(id))
            .collect()
    };
    let versions: Vec<i64> = of(s).iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        [1, 2, 3],
        "read_all in each stream's version order"
    );
    let (s2, s3, t2) = (of(s)[1], of(s)[2], of(t)[1]);
    assert_eq!(
        s3.transaction_id, s2.transaction_id,
        "version 3 records version 2's later transaction id"
    );
    assert!(
        t2.transaction_id < s3.transaction_id,
        "its own id on the other stream"
    );
    let fetched = ok(store.lightweight_session().events().fetch_stream(s).await);
    assert_eq!(fetched[2].transaction_id, s3.transaction_id);
}

/// A streams table made before `last_tx` existed gets the column when the store is built
/// (its rows at 0), and appends to its old streams record their own ids.
#[tokio::test]
async fn a_streams_table_from_before_last_tx_gets_it() {
    let (schema, b) = builder("order_last_tx_upgrade");
    let store = ok(b.event::<ProjectStarted>().build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("old")]));
    ok(s.save_changes().await);
    drop(store);
    let raw = schema.raw_client().await;
    raw.batch_execute("ALTER TABLE mt_streams DROP COLUMN last_tx")
        .await
        .expect("an old table");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .event::<ProjectStarted>()
        .build()
        .await);
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [started("new")]));
    ok(s.save_changes().await);
    let events = ok(s.events().fetch_stream(id).await);
    assert_eq!(events.len(), 2);
    assert!(events[0].transaction_id < events[1].transaction_id);
    let last: String = raw
        .query_one("SELECT last_tx::text FROM mt_streams WHERE id = $1", &[&id])
        .await
        .expect("last_tx")
        .get(0);
    assert_eq!(last, events[1].transaction_id.to_string());
}
