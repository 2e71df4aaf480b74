//! The global order is the stored `xid8` order of (transaction id, sequence), also where
//! transaction ids cross a power of ten (as text "10000000" sorts before "9999999"), and
//! a page of it is an index range scan, not a sort of every remaining event.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ok;
use common::tally::Added;
use marten::daemon::{Daemon, DaemonHooks, DaemonOptions};
use marten::prelude::*;
use marten_testing::PrivateCluster;
use serde::{Deserialize, Serialize};

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Tally {
    id: Uuid,
    version: i64,
    count: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, _e: &Added) {
        self.count += 1;
    }
}

/// Records the sequences of every batch the daemon commits.
#[derive(Clone, Default)]
struct Committed(Arc<Mutex<Vec<i64>>>);

impl Committed {
    fn sequences(&self) -> Vec<i64> {
        match self.0.lock() {
            Ok(seen) => seen.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl DaemonHooks for Committed {
    fn after_commit(&self, _projection: &str, sequences: &[i64]) {
        if let Ok(mut seen) = self.0.lock() {
            seen.extend_from_slice(sequences);
        }
    }

    /// Sequences only: the daemon reads its pages lean, as it does without hooks.
    fn reads_event_metadata(&self) -> bool {
        false
    }
}

const STREAMS: usize = 13;
const ROUNDS: usize = 50;
const PAGE: usize = 37;

#[tokio::test]
async fn events_are_read_once_each_in_order_across_ten_million_transaction_ids() {
    let cluster = match PrivateCluster::start_at_xid(9_999_800) {
        Ok(c) => c,
        Err(e) => panic!("this test needs a private cluster: {e}"),
    };
    let store = ok(DocumentStore::builder()
        .connection_string(cluster.url())
        .schema("xid_order")
        .pool_size(8)
        .event::<Added>()
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);

    // One transaction per event, so the transaction ids straddle 10,000,000.
    let streams: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    for round in 0..ROUNDS {
        for id in &streams {
            ok(s.events().append(*id, [Added { n: round as i64 }]));
            ok(s.save_changes().await);
        }
    }
    let total = STREAMS * ROUNDS;

    // Paged reads: every event once, in (transaction id, sequence) order.
    let mut read = Vec::new();
    let mut at = Position::START;
    loop {
        let page = ok(s.events().read_all(at, PAGE).await);
        if page.rows == 0 {
            break;
        }
        read.extend(page.events.iter().map(|e| Position {
            transaction_id: e.transaction_id,
            sequence: e.sequence,
        }));
        at = page.next;
    }
    let (below, above) = straddle(cluster.url()).await;
    assert!(
        below > 0 && above > 0,
        "the events' transaction ids do not straddle 10^7: {below} below, {above} above"
    );
    assert!(
        read.windows(2).all(|w| w[0] < w[1]),
        "pages are not in (transaction id, sequence) order"
    );
    let sequences: HashSet<i64> = read.iter().map(|p| p.sequence).collect();
    assert_eq!(sequences.len(), read.len(), "an event was read twice");
    assert_eq!(
        read.len(),
        total,
        "read_all in pages of {PAGE} returned {} of {total} events",
        read.len()
    );

    // The daemon reads the same order: every event is committed exactly once.
    let committed = Committed::default();
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: PAGE,
            ..DaemonOptions::default()
        }
        .with_hooks(committed.clone()),
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);
    let mut seen = committed.sequences();
    seen.sort_unstable();
    let mut all: Vec<i64> = sequences.into_iter().collect();
    all.sort_unstable();
    assert_eq!(
        seen.len(),
        total,
        "the daemon committed {} events, expected {total}",
        seen.len()
    );
    assert_eq!(seen, all, "the daemon did not see every event exactly once");
    for id in &streams {
        let tally = ok(store.query_session().load::<Tally>(id).await).expect("projected");
        assert_eq!(tally.count, ROUNDS as i64, "stream {id}");
    }
    drop(store);
    drop(cluster);
}

/// How many events were written by transaction ids below 10^7 and how many at or above.
async fn straddle(url: &str) -> (i64, i64) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the private cluster");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE tx_id < '10000000'::xid8), \
             count(*) FILTER (WHERE tx_id >= '10000000'::xid8) FROM xid_order.mt_events",
            &[],
        )
        .await
        .expect("count events by transaction id");
    (row.get(0), row.get(1))
}

/// The rows of the plan of `EXPLAIN EXECUTE`, one string.
async fn plan(client: &tokio_postgres::Client, mode: &str, execute: &str) -> String {
    client
        .batch_execute(&format!("SET plan_cache_mode = {mode}"))
        .await
        .expect("plan_cache_mode");
    client
        .query(&format!("EXPLAIN {execute}"), &[])
        .await
        .expect("explain")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_page_of_the_global_order_is_an_index_range_scan_without_a_sort() {
    let (schema, b) = common::builder("xid_order_plan");
    let store = ok(b.event::<Added>().build().await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, [Added { n: 0 }]));
    ok(s.save_changes().await);

    // 20,000 events in 40 transactions, then fresh statistics.
    let raw = schema.raw_client().await;
    for batch in 0..40i64 {
        let from = 2 + batch * 500;
        raw.execute(
            "INSERT INTO mt_events (id, stream_id, version, type, data) \
             SELECT gen_random_uuid(), $1, v, 'added', '{\"n\": 1}' FROM generate_series($2::bigint, $3::bigint) v",
            &[&stream, &from, &(from + 499)],
        )
        .await
        .expect("insert events");
    }
    raw.batch_execute("ANALYZE mt_events")
        .await
        .expect("analyze");

    // The statement read_all and the daemon run, as the library prepares it.
    let sql = &marten_pg::events::table::EventSql::get(StreamIdentity::Uuid).read_all;
    raw.batch_execute(&format!("PREPARE read_page AS {sql}"))
        .await
        .expect("prepare the paged read");
    let middle: String = raw
        .query_one(
            "SELECT tx_id::text FROM mt_events ORDER BY seq_id OFFSET 10000 LIMIT 1",
            &[],
        )
        .await
        .expect("a middle transaction id")
        .get(0);
    for mode in ["force_custom_plan", "force_generic_plan"] {
        for (tx, seq) in [("0", 0i64), (middle.as_str(), 0)] {
            let plan = plan(
                &raw,
                mode,
                &format!("EXECUTE read_page('{tx}', {seq}, {PAGE}, false)"),
            )
            .await;
            println!("{mode}, after ({tx}, {seq}):\n{plan}");
            assert!(
                plan.contains("Index Scan using mt_events_tx_seq"),
                "{mode}, after ({tx}, {seq}): not a range scan of (tx_id, seq_id):\n{plan}"
            );
            assert!(
                !plan.contains("Sort"),
                "{mode}, after ({tx}, {seq}): the plan sorts:\n{plan}"
            );
            assert!(
                plan.starts_with("Limit"),
                "{mode}, after ({tx}, {seq}): no LIMIT on top:\n{plan}"
            );
        }
    }
}

/// A prepared transaction (two-phase commit) that wrote holds gap-safe readers back until
/// it is committed or rolled back, though no session runs it: `read_all` waits at it and
/// `oldest_open_transaction` reports it (it is in `pg_prepared_xacts`, not in
/// `pg_stat_activity`).
#[tokio::test]
async fn a_prepared_transaction_holds_readers_back_and_is_reported() {
    let cluster = match PrivateCluster::start() {
        Ok(c) => c,
        Err(e) => panic!("this test needs a private cluster: {e}"),
    };
    cluster
        .append_config("max_prepared_transactions = 4\n")
        .expect("allow prepared transactions");
    cluster
        .restart()
        .expect("restart with prepared transactions");
    let store = ok(DocumentStore::builder()
        .connection_string(cluster.url())
        .schema("xid_prepared")
        .pool_size(4)
        .event::<Added>()
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, [Added { n: 1 }]));
    ok(s.save_changes().await);
    assert_eq!(ok(s.events().oldest_open_transaction().await), None);

    let connect = || async {
        let (client, conn) = tokio_postgres::connect(cluster.url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    };
    let preparer = connect().await;
    preparer
        .batch_execute(
            "CREATE TABLE public.prepared_probe (n int); \
             BEGIN; INSERT INTO public.prepared_probe VALUES (1); \
             PREPARE TRANSACTION 'mt_prepared_probe'",
        )
        .await
        .expect("prepare a writing transaction");
    drop(preparer);

    ok(s.events().append(stream, [Added { n: 2 }]));
    ok(s.save_changes().await);
    let page = ok(s.events().read_all(Position::START, 10).await);
    assert_eq!(
        page.events.len(),
        1,
        "the event after the prepared one waits"
    );
    assert!(
        ok(s.events().oldest_open_transaction().await).is_some(),
        "the prepared transaction is reported"
    );

    connect()
        .await
        .batch_execute("COMMIT PREPARED 'mt_prepared_probe'")
        .await
        .expect("commit the prepared transaction");
    let page = ok(s.events().read_all(Position::START, 10).await);
    assert_eq!(page.events.len(), 2);
    assert_eq!(ok(s.events().oldest_open_transaction().await), None);
}
