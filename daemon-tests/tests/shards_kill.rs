//! A sharded projection across processes: three nodes run `Counter` split into three
//! shards while a writer appends and nodes are killed with SIGKILL at random; a killed
//! node's shards move to the others; afterwards the race detector reads the traces (per
//! shard: no two processes at once, no event committed twice) and every document is
//! compared with the live fold of its stream. The nodes also run `Ledger` in three
//! shards, a multi-stream projection with no version guard: its buckets must list every
//! event exactly once (an aggregate skips the events it has folded, so a batch applied
//! twice would not change `Counter`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use marten::prelude::*;
use marten_daemon_tests::nodes::{self, ledger_check, mismatches, Node};
use marten_daemon_tests::{ledger_store, Counter};
use marten_testing::TestSchema;

const SHARDS: u32 = 3;

fn spawn(schema: &TestSchema, trace: &Path, name: &str) -> Node {
    let shards = ("NODE_SHARDS", SHARDS.to_string());
    let ledger = ("NODE_LEDGER", "1".to_owned());
    Node::spawn(
        env!("CARGO_BIN_EXE_daemon-node"),
        schema,
        trace,
        name,
        &[shards, ledger],
    )
}

fn trace_dir(schema: &TestSchema) -> PathBuf {
    nodes::trace_dir(schema, "shard")
}

/// Each shard's progression row and its owner.
async fn owners(schema: &TestSchema) -> BTreeMap<String, Option<String>> {
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT name, owner FROM mt_event_progression WHERE starts_with(name, 'Counter#') \
             AND name <> 'Counter#shards'",
            &[],
        )
        .await
        .expect("owners");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Kills the node owning a shard and waits until every shard is owned by a living node.
async fn kill_an_owner_and_watch_its_shards_move(
    schema: &TestSchema,
    nodes: &mut Vec<Node>,
) -> Duration {
    let started = Instant::now();
    let victim = loop {
        let owned = owners(schema).await;
        let named = owned
            .values()
            .flatten()
            .find_map(|o| nodes.iter().position(|n| &n.name == o));
        if let (Some(v), SHARDS_USIZE) = (named, owned.len()) {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "every shard is owned: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut dead = nodes.remove(victim);
    dead.kill();
    let cut = Instant::now();
    loop {
        let owned = owners(schema).await;
        let alive = owned.values().all(|o| {
            o.as_ref()
                .is_some_and(|o| nodes.iter().any(|n| &n.name == o))
        });
        if alive {
            return cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(15),
            "{}'s shards moved: {owned:?}",
            dead.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SHARDS_USIZE: usize = SHARDS as usize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_killed_at_random_project_each_shard_exactly_once() {
    const STREAMS: usize = 1_500;
    const PER_STREAM: usize = 40;
    let schema = TestSchema::new("shards_kill9");
    let trace = trace_dir(&schema);
    let store = marten::Result::expect(ledger_store(schema.url(), schema.name(), 8).await, "store");
    let started = Instant::now();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| spawn(&schema, &trace, &format!("n{i}")))
        .collect();
    let ids: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::now_v7()).collect();
    let writer = nodes::write_streams(store.clone(), ids.clone(), PER_STREAM);
    // A shard owner dies: its shards move to the two left, then it comes back.
    let moved = kill_an_owner_and_watch_its_shards_move(&schema, &mut nodes).await;
    nodes.push(spawn(&schema, &trace, "back"));
    let mut kills = 1;
    let mut seed = 11u64;
    while !writer.is_finished() || kills < 5 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let victim = (seed >> 33) as usize % nodes.len();
        let name = nodes[victim].name.clone();
        nodes[victim].kill();
        nodes[victim] = spawn(&schema, &trace, &format!("{name}'"));
        kills += 1;
    }
    writer.await.expect("writer").expect("appends");
    marten::daemon::wait_for_non_stale(&store, Duration::from_secs(240))
        .await
        .expect("the nodes catch up");
    let caught_up = started.elapsed();
    for n in &mut nodes {
        n.kill();
    }
    assert_eq!(
        mismatches(&schema).await,
        0,
        "every document equals its stream's events"
    );
    let ledger = ledger_check(&schema).await;
    assert_eq!(ledger.events, STREAMS * PER_STREAM, "{ledger}");
    assert!(ledger.exact(), "every event applied exactly once: {ledger}");
    let mut s = store.lightweight_session();
    let mut q = store.query_session();
    for id in ids.iter().step_by(7) {
        let live: Counter = s
            .events()
            .aggregate_stream(*id)
            .await
            .expect("live")
            .expect("exists");
        let projected = q
            .load::<Counter>(id)
            .await
            .expect("load")
            .expect("projected");
        assert_eq!(projected, live, "stream {id}");
    }
    let report = marten_testing::trace::analyze(&trace).expect("trace");
    println!(
        "{} events, {SHARDS} shards, 3 nodes, {kills} SIGKILLs; a dead owner's shards moved in {moved:.1?}; caught up at {caught_up:.1?}; {report}; {ledger}",
        STREAMS * PER_STREAM
    );
    assert!(report.processes >= 3, "{report}");
    assert!(report.overlaps.is_empty(), "{report}");
    assert!(report.double_processed.is_empty(), "{report}");
    // Both projections' commits, less those of batches whose node was killed between a
    // COMMIT and its trace line (allowed: a batch of each projection per kill); the
    // ledger above proves each event was applied exactly once.
    let total = 2 * STREAMS * PER_STREAM;
    assert!(
        report.events_committed <= total && report.events_committed + 2 * 400 * kills >= total,
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&trace);
}
