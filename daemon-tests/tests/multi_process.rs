//! The daemon across processes: several nodes share a projection, are killed with
//! SIGKILL, paused with SIGSTOP past a takeover, and have their lock connection
//! terminated; the race detector reads their traces afterwards and every aggregate is
//! compared with the live fold of its stream. Under SIGKILL the nodes also run `Ledger`,
//! a multi-stream projection with no version guard, whose buckets show any event applied
//! twice (an aggregate skips the events it has folded, so its counts cannot).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use marten::prelude::*;
use marten_daemon_tests::nodes::{self, ledger_check, mismatches, Node};
use marten_daemon_tests::{ledger_store, store, Added, Counter};
use marten_testing::TestSchema;

fn spawn(schema: &TestSchema, trace: &Path, name: &str, pause_ms: u64) -> Node {
    let pause = ("NODE_PAUSE_BEFORE_COMMIT_MS", pause_ms.to_string());
    Node::spawn(
        env!("CARGO_BIN_EXE_daemon-node"),
        schema,
        trace,
        name,
        &[pause],
    )
}

/// A node running `Counter` and `Ledger`.
fn spawn_with_ledger(schema: &TestSchema, trace: &Path, name: &str) -> Node {
    let ledger = ("NODE_LEDGER", "1".to_owned());
    Node::spawn(
        env!("CARGO_BIN_EXE_daemon-node"),
        schema,
        trace,
        name,
        &[ledger],
    )
}

fn signal(node: &Node, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(node.child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {}", node.name);
}

fn trace_dir(schema: &TestSchema) -> PathBuf {
    nodes::trace_dir(schema, "daemon")
}

/// The node holding the projection lock of this test's schema, and its backend pid.
async fn lock_holder(schema: &TestSchema) -> Option<(String, i32)> {
    let prefix = format!("marten-daemon-lock:{}:", schema.name());
    let row = schema
        .raw_client()
        .await
        .query_opt(
            "SELECT substr(application_name, length($1) + 1), pid FROM pg_stat_activity \
             WHERE starts_with(application_name, $1) AND datname = current_database() \
             ORDER BY backend_start DESC LIMIT 1",
            &[&prefix],
        )
        .await
        .expect("holder");
    row.map(|r| (r.get(0), r.get(1)))
}

/// The tests of this file start daemon processes and time takeovers: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn epoch(schema: &TestSchema) -> i64 {
    schema
        .raw_client()
        .await
        .query_opt(
            "SELECT owner_epoch FROM mt_event_progression WHERE name = 'Counter'",
            &[],
        )
        .await
        .expect("epoch")
        .map_or(0, |r| r.get(0))
}

/// The node that last claimed `projection`.
async fn owner(schema: &TestSchema, projection: &str) -> Option<String> {
    schema
        .raw_client()
        .await
        .query_opt(
            "SELECT owner FROM mt_event_progression WHERE name = $1",
            &[&projection],
        )
        .await
        .expect("owner")
        .and_then(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_killed_at_random_project_every_event_exactly_once() {
    const STREAMS: usize = 2_000;
    const PER_STREAM: usize = 50;
    let _serial = SERIAL.lock().await;
    let schema = TestSchema::new("daemon_kill9");
    let trace = trace_dir(&schema);
    let store = marten::Result::expect(ledger_store(schema.url(), schema.name(), 8).await, "store");
    let started = Instant::now();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| spawn_with_ledger(&schema, &trace, &format!("n{i}")))
        .collect();
    let ids: Vec<Uuid> = (0..STREAMS).map(|_| Uuid::now_v7()).collect();

    // Writers keep appending while nodes are killed and restarted.
    let writer = nodes::write_streams(store.clone(), ids.clone(), PER_STREAM);
    let mut kills = 0;
    let mut seed = 7u64;
    while !writer.is_finished() || kills < 4 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Every other kill hits the node running a projection (`Counter`, then `Ledger`),
        // the others a random one.
        let projection = if kills % 4 == 0 { "Counter" } else { "Ledger" };
        let holder = match kills % 2 {
            0 => owner(&schema, projection).await,
            _ => None,
        };
        let random = (seed >> 33) as usize % nodes.len();
        let victim = holder
            .and_then(|h| nodes.iter().position(|n| n.name == h))
            .unwrap_or(random);
        let name = nodes[victim].name.clone();
        let _ = nodes[victim].child.kill(); // SIGKILL
        let _ = nodes[victim].child.wait();
        nodes[victim] = spawn_with_ledger(&schema, &trace, &format!("{name}'"));
        kills += 1;
    }
    writer.await.expect("writer").expect("appends");
    let written = started.elapsed();
    marten::daemon::wait_for_non_stale(&store, Duration::from_secs(240))
        .await
        .expect("the nodes catch up");
    let caught_up = started.elapsed();
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }

    assert_eq!(
        mismatches(&schema).await,
        0,
        "every document equals its stream's events"
    );
    // `Counter` would hide an event applied twice (it skips the versions it has folded):
    // `Ledger` must list every event once, in the document of its stream's bucket.
    let ledger = ledger_check(&schema).await;
    assert_eq!(ledger.events, STREAMS * PER_STREAM, "{ledger}");
    assert!(ledger.exact(), "every event applied exactly once: {ledger}");
    let mut s = store.lightweight_session();
    let mut q = store.query_session();
    for id in &ids {
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
        assert_eq!(live.count, PER_STREAM as i64);
    }
    let report = marten_testing::trace::analyze(&trace).expect("trace");
    assert!(
        report.processes >= 2,
        "the projection moved between processes: {report}"
    );
    println!(
        "{} events in {STREAMS} streams; 3 nodes, {kills} SIGKILLs; written in {:.1?}, caught up at {:.1?}; {report}; {ledger}",
        STREAMS * PER_STREAM,
        written,
        caught_up
    );
    assert!(report.overlaps.is_empty(), "{report}");
    assert!(report.double_processed.is_empty(), "{report}");
    // A node killed between its COMMIT and its trace line leaves that batch out of the
    // trace (allowed: a batch of each projection per kill); the ledger above proves each
    // event was applied exactly once, the trace that no batch ran twice or alongside
    // another.
    let total = 2 * STREAMS * PER_STREAM;
    assert!(
        report.events_committed <= total && report.events_committed + 2 * 400 * kills >= total,
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&trace);
}

/// Pauses the holder inside a batch, cuts its lock connection, lets the other node take
/// over, resumes it: the zombie's commit must be rejected by the progress CAS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_resumed_after_a_takeover_has_its_commit_rejected() {
    let _serial = SERIAL.lock().await;
    let schema = TestSchema::new("daemon_sigstop");
    let trace = trace_dir(&schema);
    let store = marten::Result::expect(store(schema.url(), schema.name(), 8).await, "store");
    let ids: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    let writer = {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            for round in 0..200 {
                let mut s = store.lightweight_session();
                for id in &ids {
                    s.events().append(*id, [Added { n: round }])?;
                }
                s.save_changes().await?;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            Ok::<(), marten::Error>(())
        })
    };
    let mut nodes = vec![
        spawn(&schema, &trace, "a", 700),
        spawn(&schema, &trace, "b", 700),
    ];
    let mut rejected = 0;
    let mut attempts = 0;
    let mut takeovers = Vec::new();
    while rejected == 0 && attempts < 8 {
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(900)).await;
        let Some((holder, backend)) = lock_holder(&schema).await else {
            continue;
        };
        let Some(idx) = nodes.iter().position(|n| n.name == holder) else {
            continue;
        };
        signal(&nodes[idx], "STOP");
        // The partition: its lock connection goes away; the lock with it.
        let cut = Instant::now();
        schema
            .raw_client()
            .await
            .execute("SELECT pg_terminate_backend($1)", &[&backend])
            .await
            .expect("terminate");
        let mut took_over = None;
        for _ in 0..100 {
            if owner(&schema, "Counter").await.is_some_and(|o| o != holder) {
                took_over = Some(cut.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took_over = took_over.expect("the other node takes over within 5 s");
        takeovers.push(took_over);
        tokio::time::sleep(Duration::from_millis(800)).await;
        signal(&nodes[idx], "CONT");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rejected = marten_testing::trace::analyze(&trace)
            .expect("trace")
            .batches_rejected;
    }
    writer.await.expect("writer").expect("appends");
    marten::daemon::wait_for_non_stale(&store, Duration::from_secs(120))
        .await
        .expect("caught up");
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
    let report = marten_testing::trace::analyze(&trace).expect("trace");
    println!("{attempts} pause/cut/resume attempts; takeovers after {takeovers:?}; {report}");
    assert!(
        report.batches_rejected > 0,
        "a zombie commit was rejected by the progress CAS: {report}"
    );
    assert!(report.overlaps.is_empty(), "{report}");
    assert!(report.double_processed.is_empty(), "{report}");
    assert_eq!(mismatches(&schema).await, 0);
    let _ = std::fs::remove_dir_all(&trace);
}

/// The holder's lock connection is terminated (no pause): another node takes over within
/// seconds and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_holders_connection_hands_the_projection_over() {
    let _serial = SERIAL.lock().await;
    let schema = TestSchema::new("daemon_terminate");
    let trace = trace_dir(&schema);
    let store = marten::Result::expect(store(schema.url(), schema.name(), 8).await, "store");
    let ids: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let mut nodes = vec![
        spawn(&schema, &trace, "x", 0),
        spawn(&schema, &trace, "y", 0),
    ];
    let mut s = store.lightweight_session();
    for round in 0..20 {
        for id in &ids {
            s.events()
                .append(*id, [Added { n: round }])
                .expect("append");
        }
        s.save_changes().await.expect("save");
    }
    let mut handovers = Vec::new();
    for _ in 0..3 {
        marten::daemon::wait_for_non_stale(&store, Duration::from_secs(60))
            .await
            .expect("caught up");
        let (_holder, backend) = loop {
            if let Some(h) = lock_holder(&schema).await {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let before = epoch(&schema).await;
        schema
            .raw_client()
            .await
            .execute("SELECT pg_terminate_backend($1)", &[&backend])
            .await
            .expect("terminate");
        let cut = Instant::now();
        for id in &ids {
            s.events().append(*id, [Added { n: 1 }]).expect("append");
        }
        s.save_changes().await.expect("save");
        // A node (either) claims the projection again: the epoch moves.
        while epoch(&schema).await == before {
            assert!(
                cut.elapsed() < Duration::from_secs(10),
                "no takeover within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        handovers.push(cut.elapsed());
    }
    marten::daemon::wait_for_non_stale(&store, Duration::from_secs(60))
        .await
        .expect("caught up");
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
    let report = marten_testing::trace::analyze(&trace).expect("trace");
    println!("handovers after {handovers:?}; {report}");
    assert!(report.overlaps.is_empty(), "{report}");
    assert!(report.double_processed.is_empty(), "{report}");
    assert_eq!(mismatches(&schema).await, 0);
    let _ = std::fs::remove_dir_all(&trace);
}
