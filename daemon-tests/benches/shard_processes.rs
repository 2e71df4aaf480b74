//! A sharded projection across processes: the catch-up of `Counter` over 9,000 events
//! when each apply waits 1 ms (as on a call to another service), run by one daemon node
//! process on the whole projection, and by three node processes sharing three shards.
//! Timed from the nodes' start until every slot of the projection has reached the last
//! event. `cargo bench -p marten-daemon-tests --bench shard_processes`; the result goes to
//! BENCHMARKS.md by hand.

use std::time::{Duration, Instant};

use marten::prelude::*;
use marten_daemon_tests::nodes::{self, Node};
use marten_daemon_tests::store;
use marten_testing::TestSchema;

const STREAMS: usize = 900;
const PER_STREAM: usize = 10;
const APPLY_SLEEP_MS: u64 = 1;

/// Whether every slot of `Counter` (`slots` of them: the whole projection's row for one,
/// else the shards' `Counter#i/n`) stands at the last event.
async fn caught_up(schema: &TestSchema, slots: i64) -> bool {
    let pattern = if slots == 1 { "Counter" } else { "Counter#%/%" };
    let row = schema
        .raw_client()
        .await
        .query_one(
            "SELECT count(*), coalesce(min(p.last_seq), 0), (SELECT max(seq_id) FROM mt_events) \
             FROM mt_event_progression p WHERE p.name LIKE $1",
            &[&pattern],
        )
        .await
        .expect("progress");
    let (count, least, last): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
    count == slots && Some(least) == last
}

/// Events per second of `processes` nodes over `shards` shards (1: the whole projection).
async fn run(processes: usize, shards: u32) -> f64 {
    let schema = TestSchema::new(&format!("shard_procs_{processes}"));
    let store = store(schema.url(), schema.name(), 8).await.expect("store");
    let ids: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::now_v7()).collect();
    let writer = nodes::write_streams(store.clone(), ids, PER_STREAM);
    writer.await.expect("writer").expect("appends");
    let trace = nodes::trace_dir(&schema, "shard-bench");
    let mut settings = vec![("NODE_APPLY_SLEEP_MS", APPLY_SLEEP_MS.to_string())];
    if shards > 1 {
        settings.push(("NODE_SHARDS", shards.to_string()));
    }
    let started = Instant::now();
    let mut running: Vec<Node> = (0..processes)
        .map(|i| {
            let exe = env!("CARGO_BIN_EXE_daemon-node");
            Node::spawn(exe, &schema, &trace, &format!("p{i}"), &settings)
        })
        .collect();
    let deadline = started + Duration::from_secs(30);
    while !caught_up(&schema, i64::from(shards)).await {
        assert!(Instant::now() < deadline, "the nodes did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = (STREAMS * PER_STREAM) as f64 / started.elapsed().as_secs_f64();
    for n in &mut running {
        n.kill();
    }
    let _ = std::fs::remove_dir_all(&trace);
    rate
}

#[tokio::main]
async fn main() {
    let one = run(1, 1).await;
    let three = run(3, 3).await;
    println!("| setup | events/s | vs 1 process, whole |");
    println!("|---|---|---|");
    println!("| 1 process, whole projection | {one:.0} | 1.00 |");
    println!(
        "| 3 processes, 3 shards | {three:.0} | {:.2} |",
        three / one
    );
}
