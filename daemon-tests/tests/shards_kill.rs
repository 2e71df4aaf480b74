//! A sharded projection across processes: three nodes run `Counter` split into three
//! shards while a writer appends and nodes are killed with SIGKILL at random; a killed
//! node's shards move to the others; afterwards the race detector reads the traces (per
//! shard: no two processes at once, no event committed twice) and every document is
//! compared with the live fold of its stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use marten::prelude::*;
use marten_daemon_tests::{store, Added, Counter};
use marten_testing::TestSchema;

const SHARDS: u32 = 3;

struct Node {
    name: String,
    child: Child,
}

fn spawn(schema: &TestSchema, trace: &Path, name: &str) -> Node {
    let child = Command::new(env!("CARGO_BIN_EXE_daemon-node"))
        .env("NODE_URL", schema.url())
        .env("NODE_SCHEMA", schema.name())
        .env("NODE_TRACE_DIR", trace)
        .env("NODE_NAME", name)
        .env("NODE_SHARDS", SHARDS.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a daemon node");
    Node {
        name: name.to_owned(),
        child,
    }
}

fn kill(node: &mut Node) {
    let _ = node.child.kill(); // SIGKILL
    let _ = node.child.wait();
}

fn trace_dir(schema: &TestSchema) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("marten-shard-trace-{}", schema.name()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
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

/// Streams whose projected document differs from the events (by SQL).
async fn mismatches(schema: &TestSchema) -> i64 {
    schema
        .raw_client()
        .await
        .query_one(
            "SELECT count(*) FROM (SELECT stream_id, sum((data->>'n')::bigint) s, count(*) c, max(version) v \
             FROM mt_events GROUP BY stream_id) e FULL JOIN mt_doc_counter d ON d.id = e.stream_id \
             WHERE d.id IS NULL OR e.stream_id IS NULL OR (d.data->>'total')::bigint <> e.s \
             OR (d.data->>'count')::bigint <> e.c OR (d.data->>'version')::bigint <> e.v",
            &[],
        )
        .await
        .expect("compare")
        .get(0)
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
    kill(&mut dead);
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
    let store = marten::Result::expect(store(schema.url(), schema.name(), 8).await, "store");
    let started = Instant::now();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| spawn(&schema, &trace, &format!("n{i}")))
        .collect();
    let ids: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::now_v7()).collect();
    let writer = {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            for half in 0..2 {
                for chunk in ids.chunks(20) {
                    let mut s = store.lightweight_session();
                    for id in chunk {
                        let events: Vec<Added> = (0..PER_STREAM / 2)
                            .map(|i| Added { n: (i + 1) as i64 })
                            .collect();
                        if half == 0 {
                            s.events().start_stream(*id, events)?;
                        } else {
                            s.events().append(*id, events)?;
                        }
                    }
                    s.save_changes().await?;
                }
            }
            Ok::<(), marten::Error>(())
        })
    };
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
        kill(&mut nodes[victim]);
        nodes[victim] = spawn(&schema, &trace, &format!("{name}'"));
        kills += 1;
    }
    writer.await.expect("writer").expect("appends");
    marten::daemon::wait_for_non_stale(&store, Duration::from_secs(240))
        .await
        .expect("the nodes catch up");
    let caught_up = started.elapsed();
    for n in &mut nodes {
        kill(n);
    }
    assert_eq!(
        mismatches(&schema).await,
        0,
        "every document equals its stream's events"
    );
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
        "{} events, {SHARDS} shards, 3 nodes, {kills} SIGKILLs; a dead owner's shards moved in {moved:.1?}; caught up at {caught_up:.1?}; {report}",
        STREAMS * PER_STREAM
    );
    assert!(report.processes >= 3, "{report}");
    assert!(report.overlaps.is_empty(), "{report}");
    assert!(report.double_processed.is_empty(), "{report}");
    let total = STREAMS * PER_STREAM;
    assert!(
        report.events_committed <= total && report.events_committed + 400 * kills >= total,
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&trace);
}
