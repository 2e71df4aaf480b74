//! Subscriptions across processes: three nodes run an exactly-once subscription (it fills
//! an outbox through its transaction) and an at-least-once one (it appends to a file of
//! its node before its checkpoint moves), and are killed with SIGKILL, most often while a
//! handler sleeps half-way through a batch. Afterwards no event is missing from either,
//! the outbox holds no duplicate, and the file's re-deliveries are only of batches a
//! killed node had not committed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use marten::prelude::*;
use marten_daemon_tests::nodes::Node;
use marten_daemon_tests::{subscription_store, Added, OUTBOX_DDL};
use marten_testing::TestSchema;

/// Events per batch in the nodes (see `src/main.rs`).
const BATCH: usize = 400;

fn spawn(schema: &TestSchema, trace: &Path, name: &str) -> Node {
    let settings = [
        ("NODE_STORE", "subscriptions".to_owned()),
        ("NODE_PAUSE_IN_HANDLER_MS", "60".to_owned()),
    ];
    Node::spawn(
        env!("CARGO_BIN_EXE_daemon-node"),
        schema,
        trace,
        name,
        &settings,
    )
}

async fn owner(client: &tokio_postgres::Client, subscription: &str) -> Option<String> {
    client
        .query_opt(
            "SELECT owner FROM mt_event_progression WHERE name = $1",
            &[&subscription],
        )
        .await
        .expect("owner")
        .and_then(|r| r.get(0))
}

/// One node's delivery log: (first sequence of the batch, sequence) per line, in order.
fn read_log(path: &Path) -> Vec<(i64, i64)> {
    let text = std::fs::read_to_string(path).expect("delivery log");
    text.lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// Checks the delivery logs against every event's sequence: none missing, and every
/// duplicate delivery in the last batch of a killed node. Returns the re-deliveries.
fn check_logs(dir: &Path, killed: &HashSet<String>, all: &[i64], kills: usize) -> usize {
    let mut delivered: HashMap<i64, usize> = HashMap::new();
    // Deliveries in batches that must have committed: every batch of a node but the last
    // one of a killed node.
    let mut committed: HashMap<i64, usize> = HashMap::new();
    for entry in std::fs::read_dir(dir).expect("trace dir") {
        let path: PathBuf = entry.expect("entry").path();
        let Some(node) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("deliveries-"))
            .and_then(|n| n.strip_suffix(".log"))
        else {
            continue;
        };
        let lines = read_log(&path);
        let last_batch = lines.last().map(|(first, _)| *first);
        for (first, seq) in &lines {
            *delivered.entry(*seq).or_default() += 1;
            if !(killed.contains(node) && Some(*first) == last_batch) {
                *committed.entry(*seq).or_default() += 1;
            }
        }
    }
    let missing: Vec<&i64> = all.iter().filter(|s| !delivered.contains_key(s)).collect();
    assert!(missing.is_empty(), "events never delivered: {missing:?}");
    let doubled: Vec<(&i64, &usize)> = committed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "re-delivered outside an uncommitted batch: {doubled:?}"
    );
    let total: usize = delivered.values().sum();
    let redelivered = total - delivered.len();
    assert!(redelivered <= kills * BATCH, "{redelivered} re-deliveries");
    redelivered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_killed_mid_handler_skip_nothing_and_redeliver_only_uncommitted_batches() {
    const STREAMS: usize = 300;
    const PER_STREAM: usize = 40;
    let schema = TestSchema::new("subs_kill9");
    let trace = std::env::temp_dir().join(format!("marten-subs-trace-{}", schema.name()));
    let _ = std::fs::remove_dir_all(&trace);
    std::fs::create_dir_all(&trace).expect("trace dir");
    let store = subscription_store(
        schema.url(),
        schema.name(),
        8,
        trace.join("unused.log"),
        Duration::ZERO,
    )
    .await
    .expect("store");
    let client = schema.raw_client().await;
    client.batch_execute(OUTBOX_DDL).await.expect("outbox");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| spawn(&schema, &trace, &format!("n{i}")))
        .collect();
    let ids: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::now_v7()).collect();
    let writer = {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            for round in 0..PER_STREAM / 10 {
                for chunk in ids.chunks(30) {
                    let mut s = store.lightweight_session();
                    for id in chunk {
                        s.events().append(
                            *id,
                            (0..10).map(|i| Added {
                                n: i + round as i64,
                            }),
                        )?;
                    }
                    s.save_changes().await?;
                    // About 5 s of appends in all: all six kills (one every 0.7 s) land
                    // while events are handed to the handlers.
                    tokio::time::sleep(Duration::from_millis(120)).await;
                }
            }
            Ok::<(), marten::Error>(())
        })
    };
    let mut killed = HashSet::new();
    let mut kills = 0;
    let mut generation = 0;
    while !writer.is_finished() || kills < 6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Kill the owner of each subscription in turn (a random node if it has none).
        let target = if kills % 2 == 0 { "log" } else { "outbox" };
        let holder = owner(&client, target).await;
        let victim = nodes
            .iter()
            .position(|n| Some(&n.name) == holder.as_ref())
            .unwrap_or(kills % nodes.len());
        let _ = nodes[victim].child.kill(); // SIGKILL
        let _ = nodes[victim].child.wait();
        killed.insert(nodes[victim].name.clone());
        generation += 1;
        nodes[victim] = spawn(&schema, &trace, &format!("g{generation}"));
        kills += 1;
    }
    writer.await.expect("writer").expect("appends");
    marten::daemon::wait_for_non_stale(&store, Duration::from_secs(240))
        .await
        .expect("the nodes catch up");
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }

    let all: Vec<i64> = client
        .query("SELECT seq_id FROM mt_events ORDER BY seq_id", &[])
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(all.len(), STREAMS * PER_STREAM);
    // Exactly once: every event in the outbox, none twice.
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT o.sequence), \
             (SELECT count(*) FROM mt_events e WHERE NOT EXISTS \
               (SELECT 1 FROM sub_outbox x WHERE x.sequence = e.seq_id)) \
             FROM sub_outbox o",
            &[],
        )
        .await
        .expect("outbox");
    let (rows, distinct, missing): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (rows, distinct, missing),
        (all.len() as i64, all.len() as i64, 0)
    );
    // At least once: nothing skipped, re-deliveries only of uncommitted batches.
    let redelivered = check_logs(&trace, &killed, &all, kills);
    let report = marten_testing::trace::analyze(&trace).expect("trace");
    println!("{kills} SIGKILLs; {redelivered} at-least-once re-deliveries; {report}");
    assert!(
        redelivered > 0,
        "a kill landed inside the at-least-once handler"
    );
    assert!(report.overlaps.is_empty(), "{report}");
    assert!(report.double_processed.is_empty(), "{report}");
    let _ = std::fs::remove_dir_all(&trace);
}
