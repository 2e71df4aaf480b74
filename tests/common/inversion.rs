//! Two saves whose transaction ids are in the opposite order of their appends to one
//! stream: the first save takes its id (it waits on another stream's row, held by a raw
//! transaction), the second appends to the stream and commits, then the first is let go
//! and appends its event to the stream after the second's.
#![allow(dead_code)]

use std::time::Duration;

use marten::prelude::*;

use super::ok;

/// Starts streams `t` and `s` (one event each, `event(0)` and `event(1)`), then: a raw
/// transaction holds `t`'s row; a save appending `event(10)` to `t` and `event(3)` to `s`
/// takes its transaction id and waits on it; a second save appends `second` to `s`
/// (its version 2) and commits; the raw transaction ends and the first save appends
/// version 3 of `s`. Returns `(t, s)`.
pub async fn invert_versions(
    schema: &marten_testing::TestSchema,
    store: &DocumentStore,
    event: impl Fn(i64) -> PendingEvent,
    second: PendingEvent,
) -> (Uuid, Uuid) {
    // `t` below `s`: the first save locks its streams in id order, so it waits on `t`
    // before it touches `s`.
    let (t, s) = {
        let mut ids = [Uuid::now_v7(), Uuid::now_v7()];
        ids.sort();
        (ids[0], ids[1])
    };
    let mut first = store.lightweight_session();
    ok(first.events().append(t, [event(0)]));
    ok(first.events().append(s, [event(1)]));
    ok(first.save_changes().await);
    let holder = schema.raw_client().await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute("SELECT 1 FROM mt_streams WHERE id = $1 FOR UPDATE", &[&t])
        .await
        .expect("hold t");
    let early = {
        let store = store.clone();
        let (to_t, to_s) = (event(10), event(3));
        tokio::spawn(async move {
            let mut b = store.lightweight_session();
            ok(b.events().append(t, [to_t]));
            ok(b.events().append(s, [to_s]));
            b.save_changes().await
        })
    };
    wait_for_a_lock_wait(schema).await;
    let mut a = store.lightweight_session();
    ok(a.events().append(s, [second]));
    ok(a.save_changes().await);
    holder.batch_execute("COMMIT").await.expect("release t");
    ok(early.await.expect("join"));
    (t, s)
}

/// Waits (bounded) until a session of the schema's database waits on a lock.
async fn wait_for_a_lock_wait(schema: &marten_testing::TestSchema) {
    let raw = schema.raw_client().await;
    for _ in 0..500 {
        let waiting: i64 = raw
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database()",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the early save never waited on the held stream row");
}

/// The versions of stream `s` in the order of the stored global order `(tx_id, seq_id)`.
pub async fn versions_in_global_order(schema: &marten_testing::TestSchema, s: Uuid) -> Vec<i64> {
    schema
        .raw_client()
        .await
        .query(
            "SELECT version FROM mt_events WHERE stream_id = $1 ORDER BY tx_id, seq_id",
            &[&s],
        )
        .await
        .expect("order")
        .iter()
        .map(|r| r.get(0))
        .collect()
}
