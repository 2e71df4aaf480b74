//! Sharded async projections in one process: daemons of separate stores (own pools) run
//! one projection split into shards while writers race at a barrier; every document
//! equals its live fold, each event is committed exactly once by the shard of its stream
//! (or of its documents, for a multi-stream projection), a stopped daemon's shards move
//! to the others, a rebuild resets every shard, and a shard count changes only when the
//! old shards stand at one position, after which runners of the old count cannot commit.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ok;
use common::tally::{Added, Tally};
use marten::daemon::{shard_of, Daemon, DaemonHooks, DaemonOptions};
use marten::prelude::*;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Assigned {
    to: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
struct Workload {
    id: String,
    tasks: i64,
}

#[marten::apply]
impl Workload {
    fn identities(e: &Assigned) -> Vec<String> {
        e.to.clone()
    }
    fn create(_e: &Assigned) -> Self {
        Workload {
            id: String::new(),
            tasks: 1,
        }
    }
    fn apply(&mut self, _e: &Assigned) {
        self.tasks += 1;
    }
}

/// What the hooks of every daemon of a test saw: (node, hook name, kind, sequences).
type Log = Arc<Mutex<Vec<(usize, String, &'static str, Vec<i64>)>>>;

/// Records commits and rejections per node; holds every commit while `hold` is set.
struct Recorder {
    node: usize,
    log: Log,
    hold: Arc<AtomicBool>,
}

impl Recorder {
    fn push(&self, p: &str, kind: &'static str, seqs: &[i64]) {
        if let Ok(mut log) = self.log.lock() {
            log.push((self.node, p.to_owned(), kind, seqs.to_vec()));
        }
    }
}

impl DaemonHooks for Recorder {
    fn before_catch_up(&self, p: &str) {
        self.push(p, "running", &[]);
    }
    fn before_event(&self, p: &str, e: &EventEnvelope) {
        self.push(p, "event", &[e.sequence]);
    }
    fn before_commit(&self, p: &str, _seqs: &[i64]) {
        if !p.starts_with("Tally") {
            return;
        }
        // The hook is synchronous: the runtime's other tasks move off this thread.
        tokio::task::block_in_place(|| {
            let until = Instant::now() + Duration::from_secs(30);
            while self.hold.load(Ordering::Acquire) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
    fn after_commit(&self, p: &str, seqs: &[i64]) {
        self.push(p, "commit", seqs);
    }
    fn batch_rejected(&self, p: &str) {
        self.push(p, "rejected", &[]);
    }
}

async fn store_on(schema: &TestSchema, pool: usize) -> DocumentStore {
    ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(pool)
        .projection::<Tally>(Lifecycle::Async)
        .multi_stream_projection::<Workload>(Lifecycle::Async)
        .build()
        .await)
}

fn options(
    node: usize,
    log: &Log,
    hold: &Arc<AtomicBool>,
    shards: &[(&str, u32)],
) -> DaemonOptions {
    let mut o = DaemonOptions {
        batch_size: 40,
        poll_interval: Duration::from_millis(20),
        node: format!("node-{node}"),
        ..DaemonOptions::default()
    }
    .with_hooks(Recorder {
        node,
        log: log.clone(),
        hold: hold.clone(),
    });
    for (name, count) in shards {
        o = o.with_shards(*name, *count);
    }
    o
}

async fn append_round(store: &DocumentStore, streams: &[Uuid], round: i64) {
    let mut s = store.lightweight_session();
    for id in streams {
        ok(s.events().append(*id, [Added { n: round + 1 }]));
    }
    ok(s.save_changes().await);
}

async fn assert_equals_live(store: &DocumentStore, streams: &[Uuid]) {
    let mut s = store.lightweight_session();
    let mut q = store.query_session();
    for id in streams {
        let doc = ok(q.load::<Tally>(id).await).expect("projected");
        let live: Tally = ok(s.events().aggregate_stream(*id).await).expect("live");
        assert_eq!(doc, live, "stream {id}");
    }
}

/// Every event's sequence and stream.
async fn event_streams(schema: &TestSchema) -> HashMap<i64, Uuid> {
    let rows = schema
        .raw_client()
        .await
        .query("SELECT seq_id, stream_id FROM mt_events", &[])
        .await
        .expect("events");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The shard index in a hook name `Name#i/n`.
fn shard_index(label: &str) -> Option<u32> {
    let (_, rest) = label.split_once('#')?;
    rest.split_once('/')?.0.parse().ok()
}

/// Committed sequences by hook name, and how many times each was committed.
fn commits(log: &Log, prefix: &str) -> BTreeMap<String, HashMap<i64, usize>> {
    let mut out: BTreeMap<String, HashMap<i64, usize>> = BTreeMap::new();
    for (_, label, kind, seqs) in log.lock().expect("log").iter() {
        if *kind == "commit" && label.starts_with(prefix) {
            for s in seqs {
                *out.entry(label.clone()).or_default().entry(*s).or_default() += 1;
            }
        }
    }
    out
}

async fn row_names(schema: &TestSchema, prefix: &str) -> Vec<(String, i64)> {
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT name, last_seq FROM mt_event_progression WHERE starts_with(name, $1) ORDER BY name",
            &[&prefix],
        )
        .await
        .expect("progression");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_share_a_sharded_projection_and_commit_each_event_once() {
    const WRITERS: usize = 4;
    const ROUNDS: i64 = 25;
    let schema = TestSchema::new("shards_race");
    let log = Log::default();
    let hold = Arc::new(AtomicBool::new(false));
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(store_on(&schema, 6).await);
    }
    let daemons: Vec<Daemon> = (0..3)
        .map(|i| Daemon::start(&stores[i], options(i, &log, &hold, &[("Tally", 3)])))
        .collect();
    let streams: Vec<Vec<Uuid>> = (0..WRITERS)
        .map(|_| (0..8).map(|_| Uuid::now_v7()).collect())
        .collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let writers: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(w, mine)| {
            let (store, mine, barrier) = (stores[w % 3].clone(), mine.clone(), barrier.clone());
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    barrier.wait().await;
                    append_round(&store, &mine, round).await;
                }
            })
        })
        .collect();
    marten_testing::tasks::join_handles(writers, Duration::from_secs(180)).await;
    ok(daemons[0].wait_for_non_stale(Duration::from_secs(90)).await);
    for d in daemons {
        ok(d.stop().await);
    }
    let all: Vec<Uuid> = streams.concat();
    assert_equals_live(&stores[0], &all).await;

    let by_seq = event_streams(&schema).await;
    let committed = commits(&log, "Tally");
    let mut seen = BTreeSet::new();
    for (label, seqs) in &committed {
        let index = shard_index(label).expect("a shard's hook name");
        for (seq, times) in seqs {
            assert_eq!(*times, 1, "{label} committed event {seq} {times} times");
            let stream = by_seq[seq];
            assert_eq!(
                shard_of(&StreamId::Uuid(stream).key(), 3),
                index,
                "{label} projected event {seq} of another shard's stream"
            );
            assert!(seen.insert(*seq), "event {seq} committed by two shards");
        }
    }
    assert_eq!(
        seen.len(),
        by_seq.len(),
        "every event was committed by a shard"
    );
    assert_eq!(committed.len(), 3, "{:?}", committed.keys());
    let nodes: BTreeSet<usize> = log
        .lock()
        .expect("log")
        .iter()
        .filter(|(_, l, k, _)| *k == "commit" && l.starts_with("Tally"))
        .map(|(n, ..)| *n)
        .collect();
    assert!(
        nodes.len() >= 2,
        "the shards were spread over the nodes: {nodes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_daemons_shards_move_to_the_other() {
    let schema = TestSchema::new("shards_move");
    let log = Log::default();
    let hold = Arc::new(AtomicBool::new(false));
    let (a, b) = (store_on(&schema, 6).await, store_on(&schema, 6).await);
    let streams: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let first = Daemon::start(&a, options(0, &log, &hold, &[("Tally", 4)]));
    let second = Daemon::start(&b, options(1, &log, &hold, &[("Tally", 4)]));
    for round in 0..5 {
        append_round(&a, &streams, round).await;
    }
    ok(first.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(first.stop().await);
    log.lock().expect("log").clear();
    for round in 5..10 {
        append_round(&a, &streams, round).await;
    }
    ok(second.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(second.stop().await);
    assert_equals_live(&a, &streams).await;
    let after = commits(&log, "Tally");
    assert_eq!(after.len(), 4, "node 1 ran every shard: {:?}", after.keys());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_stream_projection_is_sharded_by_document_id() {
    let schema = TestSchema::new("shards_multi");
    let log = Log::default();
    let hold = Arc::new(AtomicBool::new(false));
    let (a, b) = (store_on(&schema, 6).await, store_on(&schema, 6).await);
    let names: Vec<String> = (0..12).map(|i| format!("worker-{i}")).collect();
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut assigned: HashMap<i64, Vec<String>> = HashMap::new();
    let shards = [("Workload", 3)];
    let daemons = [
        Daemon::start(&a, options(0, &log, &hold, &shards)),
        Daemon::start(&b, options(1, &log, &hold, &shards)),
    ];
    for round in 0..10usize {
        let mut s = a.lightweight_session();
        for i in 0..6usize {
            let to: Vec<String> = (0..3)
                .map(|k| names[(round + i * 5 + k * 7) % 12].clone())
                .collect();
            for n in &to {
                *expected.entry(n.clone()).or_default() += 1;
            }
            ok(s.events().append(Uuid::now_v7(), [Assigned { to }]));
        }
        ok(s.save_changes().await);
    }
    ok(daemons[0].wait_for_non_stale(Duration::from_secs(60)).await);
    for d in daemons {
        ok(d.stop().await);
    }
    let mut q = a.query_session();
    for (name, tasks) in &expected {
        let doc = ok(q.load::<Workload>(name).await).expect("projected");
        assert_eq!(doc.tasks, *tasks, "{name}");
    }
    let rows = schema
        .raw_client()
        .await
        .query("SELECT seq_id, data FROM mt_events", &[])
        .await
        .expect("events");
    for r in &rows {
        let data: serde_json::Value = r.get(1);
        let to: Vec<String> = serde_json::from_value(data["to"].clone()).expect("to");
        assigned.insert(r.get(0), to);
    }
    let committed = commits(&log, "Workload");
    assert_eq!(committed.len(), 3, "{:?}", committed.keys());
    for (label, seqs) in &committed {
        let index = shard_index(label).expect("a shard's hook name");
        for (seq, times) in seqs {
            assert_eq!(*times, 1, "{label} committed event {seq} {times} times");
            let mine = assigned[seq]
                .iter()
                .any(|n| shard_of(&marten::IdKey::String(n.clone()), 3) == index);
            assert!(
                mine,
                "{label} got event {seq}, which slices to no document of it"
            );
        }
    }
    // An event reaches every shard one of its documents is in, and no other.
    for (seq, to) in &assigned {
        let want: BTreeSet<u32> = to
            .iter()
            .map(|n| shard_of(&marten::IdKey::String(n.clone()), 3))
            .collect();
        let got: BTreeSet<u32> = committed
            .iter()
            .filter(|(_, s)| s.contains_key(seq))
            .filter_map(|(l, _)| shard_index(l))
            .collect();
        assert_eq!(got, want, "event {seq} to {to:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_resets_every_shard_together() {
    let schema = TestSchema::new("shards_rebuild");
    let log = Log::default();
    let hold = Arc::new(AtomicBool::new(false));
    let store = store_on(&schema, 8).await;
    let streams: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for round in 0..5 {
        append_round(&store, &streams, round).await;
    }
    let daemon = Daemon::start(&store, options(0, &log, &hold, &[("Tally", 3)]));
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    log.lock().expect("log").clear();
    ok(marten::daemon::rebuild(&store, "Tally").await);
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    let status = ok(store.projection_status().await);
    let tally = status.iter().find(|s| s.name == "Tally").expect("status");
    assert_eq!(
        (tally.lag(), tally.owner.as_deref()),
        (0, Some("node-0")),
        "{tally:?}"
    );
    ok(daemon.stop().await);
    assert_equals_live(&store, &streams).await;
    let replayed: usize = commits(&log, "Tally").values().map(HashMap::len).sum();
    assert_eq!(
        replayed, 100,
        "every event was replayed once after the rebuild"
    );
    let rows = row_names(&schema, "Tally").await;
    let head = rows
        .iter()
        .filter(|(n, _)| n.contains('/'))
        .map(|(_, s)| *s)
        .collect::<BTreeSet<_>>();
    assert_eq!(head.len(), 1, "every shard stands at the head: {rows:?}");
}

/// Runs `Tally` with `shards` until it has caught up with `rounds` more appends.
async fn run_with(
    store: &DocumentStore,
    streams: &[Uuid],
    shards: u32,
    rounds: std::ops::Range<i64>,
) {
    let (log, hold) = (Log::default(), Arc::new(AtomicBool::new(false)));
    let daemon = Daemon::start(store, options(0, &log, &hold, &[("Tally", shards)]));
    for round in rounds {
        append_round(store, streams, round).await;
    }
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);
    assert_equals_live(store, streams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_changes_when_every_old_shard_stands_at_one_position() {
    let schema = TestSchema::new("shards_rebalance");
    let store = store_on(&schema, 8).await;
    let streams: Vec<Uuid> = (0..24).map(|_| Uuid::now_v7()).collect();
    // Whole, then 3 shards, then 2, then whole again: each change starts where the old
    // slots stood, so no event is applied twice (the counts would show it) or skipped.
    run_with(&store, &streams, 1, 0..3).await;
    // Unsharded, nothing changes: one row, under the projection's name.
    let names: Vec<String> = row_names(&schema, "Tally")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["Tally"]);
    run_with(&store, &streams, 3, 3..6).await;
    assert_eq!(row_names(&schema, "Tally#shards").await[0].1, 3);
    run_with(&store, &streams, 2, 6..9).await;
    assert_eq!(row_names(&schema, "Tally#shards").await[0].1, 2);
    run_with(&store, &streams, 1, 9..12).await;
    assert_eq!(row_names(&schema, "Tally#shards").await[0].1, 1);
    let tally = ok(store.query_session().load::<Tally>(&streams[0]).await).expect("doc");
    assert_eq!(tally.count, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_change_over_shards_at_different_positions_is_refused_until_a_rebuild() {
    let schema = TestSchema::new("shards_refused");
    let store = store_on(&schema, 8).await;
    let streams: Vec<Uuid> = (0..12).map(|_| Uuid::now_v7()).collect();
    run_with(&store, &streams, 3, 0..3).await;
    // Shard 1 of 3 lags behind the others (as when its node stopped mid-way).
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_event_progression SET last_tx = '0', last_seq = 0 WHERE name = 'Tally#1/3'",
            &[],
        )
        .await
        .expect("lag");
    let (log, hold) = (Log::default(), Arc::new(AtomicBool::new(false)));
    let daemon = Daemon::start(&store, options(0, &log, &hold, &[("Tally", 2)]));
    let waited = daemon.wait_for_non_stale(Duration::from_secs(30)).await;
    assert!(
        matches!(&waited, Err(Error::ProjectionStopped { message, .. }) if message.contains("3 shard(s)") && message.contains("rebuild")),
        "{waited:?}"
    );
    match daemon.stop().await {
        Err(Error::ShardCountChanged {
            projection,
            recorded: 3,
            configured: 2,
            reason,
        }) => {
            assert_eq!(projection, "Tally");
            assert!(
                reason.contains("drain") && reason.contains("rebuild"),
                "{reason}"
            );
        }
        other => panic!("expected ShardCountChanged, got {other:?}"),
    }
    assert_eq!(
        row_names(&schema, "Tally#shards").await[0].1,
        3,
        "the count stays"
    );
    ok(marten::daemon::rebuild(&store, "Tally").await);
    run_with(&store, &streams, 2, 3..4).await;
    assert_eq!(row_names(&schema, "Tally#shards").await[0].1, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runners_of_the_old_count_cannot_commit_after_a_change() {
    let schema = TestSchema::new("shards_old_count");
    let (a, b) = (store_on(&schema, 8).await, store_on(&schema, 8).await);
    let streams: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for round in 0..4 {
        append_round(&a, &streams, round).await;
    }
    let log = Log::default();
    let hold = Arc::new(AtomicBool::new(true));
    // The old deployment: 3 shards, each runner held just before its first commit.
    let old = Daemon::start(&a, options(0, &log, &hold, &[("Tally", 3)]));
    // Every old runner has claimed its shard: one that had not yet would meet the new
    // count as a deployment starting late and set its own count again.
    let started = Instant::now();
    loop {
        let running: std::collections::HashSet<String> = log
            .lock()
            .expect("log")
            .iter()
            .filter(|(n, l, k, _)| *n == 0 && *k == "running" && l.starts_with("Tally#"))
            .map(|(_, l, _, _)| l.clone())
            .collect();
        if running.len() == 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the old shards start: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new deployment: 2 shards; the old ones all stand at the start.
    let free = Arc::new(AtomicBool::new(false));
    let new = Daemon::start(&b, options(1, &log, &free, &[("Tally", 2)]));
    ok(new.wait_for_non_stale(Duration::from_secs(60)).await);
    hold.store(false, Ordering::Release);
    let started = Instant::now();
    loop {
        let rejected = log
            .lock()
            .expect("log")
            .iter()
            .filter(|(n, l, k, _)| *n == 0 && *k == "rejected" && l.starts_with("Tally"))
            .count();
        if rejected >= 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the old runners' commits are rejected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = old.stop().await;
    assert!(
        matches!(
            stopped,
            Err(Error::ShardCountChanged {
                recorded: 2,
                configured: 3,
                ..
            })
        ),
        "{stopped:?}"
    );
    ok(new.stop().await);
    let old_commits = log
        .lock()
        .expect("log")
        .iter()
        .filter(|(n, l, k, _)| *n == 0 && *k == "commit" && l.starts_with("Tally"))
        .count();
    assert_eq!(old_commits, 0, "no runner of the old count committed");
    assert_equals_live(&a, &streams).await;
}

#[tokio::test]
async fn shard_settings_the_daemon_cannot_follow_are_errors() {
    let schema = TestSchema::new("shards_refused_settings");
    let store = store_on(&schema, 4).await;
    let too_many = marten::daemon::MAX_SHARDS + 1;
    for (name, count, why) in [
        ("Nope", 3, "no async projection"),
        ("Tally", 0, "0 shards"),
        ("Tally", too_many, "at most 1024"),
    ] {
        let daemon = Daemon::start(&store, DaemonOptions::default().with_shards(name, count));
        let waited = daemon.wait_for_non_stale(Duration::from_secs(10)).await;
        assert!(
            matches!(&waited, Err(Error::ProjectionStopped { .. })),
            "{waited:?}"
        );
        match daemon.stop().await {
            Err(Error::Configuration(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}

/// A count change takes the projection's rebuild lock first: a rebuild of a projection
/// never sharded reads no count row (it locks none) and resets only the whole slot, so a
/// change committed between its read and its reset would start the new shards at the old
/// position while the rebuild deleted the documents (events never projected again). A
/// raw transaction stands in for the rebuild in flight: it holds the rebuild lock, then
/// resets the whole slot and deletes the documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_count_change_waits_for_a_rebuild_in_flight() {
    let schema = TestSchema::new("shards_rebuild_race");
    let store = store_on(&schema, 8).await;
    let streams: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    run_with(&store, &streams, 1, 0..2).await;
    let rebuild = schema.raw_client().await;
    rebuild.batch_execute("BEGIN").await.expect("begin");
    let key = format!("marten:rebuild:{}:Tally", schema.name());
    rebuild
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&key],
        )
        .await
        .expect("rebuild lock");
    let (log, hold) = (Log::default(), Arc::new(AtomicBool::new(false)));
    let daemon = Daemon::start(&store, options(0, &log, &hold, &[("Tally", 3)]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        row_names(&schema, "Tally#").await,
        [],
        "the count changed while a rebuild was in flight"
    );
    let table = <Tally as marten::Document>::TABLE_NAME;
    rebuild
        .batch_execute(&format!(
            "UPDATE mt_event_progression SET last_tx = '0', last_seq = 0 WHERE name = 'Tally'; \
             DELETE FROM {table}; COMMIT"
        ))
        .await
        .expect("reset");
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);
    assert_eq!(row_names(&schema, "Tally#shards").await[0].1, 3);
    assert_equals_live(&store, &streams).await;
}

/// A count row edited by hand to a count the daemon never records (billions of slots)
/// is corrupt data naming the projection: the runners stop, building no slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_count_out_of_range_is_corrupt_data() {
    let schema = TestSchema::new("shards_corrupt_count");
    let store = store_on(&schema, 4).await;
    let streams: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    run_with(&store, &streams, 3, 0..1).await;
    for corrupt in [3_000_000_000_i64, 0, -1] {
        schema
            .raw_client()
            .await
            .execute(
                "UPDATE mt_event_progression SET last_seq = $1 WHERE name = 'Tally#shards'",
                &[&corrupt],
            )
            .await
            .expect("corrupt");
        for shards in [2, 3] {
            let (log, hold) = (Log::default(), Arc::new(AtomicBool::new(false)));
            let daemon = Daemon::start(&store, options(0, &log, &hold, &[("Tally", shards)]));
            let waited = daemon.wait_for_non_stale(Duration::from_secs(30)).await;
            assert!(
                matches!(
                    &waited,
                    Err(Error::ProjectionStopped { .. } | Error::CorruptData { .. })
                ),
                "{corrupt} with {shards}: {waited:?}"
            );
            match daemon.stop().await {
                Err(Error::CorruptData { owner, detail, .. }) => {
                    assert_eq!(owner, "projection Tally");
                    assert!(detail.contains(&corrupt.to_string()), "{detail}");
                }
                other => panic!("{corrupt} with {shards}: expected CorruptData, got {other:?}"),
            }
        }
        let status = store.projection_status().await;
        assert!(
            matches!(&status, Err(Error::CorruptData { .. })),
            "{corrupt}: {status:?}"
        );
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct Wallet {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Wallet {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
}

/// Runs `Wallet` in `shards` shards over conjoined events until caught up.
async fn run_wallets(store: &DocumentStore, shards: u32) {
    let (log, hold) = (Log::default(), Arc::new(AtomicBool::new(false)));
    let daemon = Daemon::start(store, options(0, &log, &hold, &[("Wallet", shards)]));
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_runs_its_own_shards_and_a_count_change_moves_them_all() {
    let schema = TestSchema::new("shards_tenants");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(8)
        .events_tenancy(marten::Tenancy::Conjoined)
        .projection::<Wallet>(Lifecycle::Async)
        .build()
        .await);
    let streams: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
    let deposit = async |rounds: std::ops::Range<i64>| {
        for tenant in ["red", "blue"] {
            let mut s = ok(store.lightweight_session_for(tenant));
            for round in rounds.clone() {
                for id in &streams {
                    let n = if tenant == "red" {
                        round + 1
                    } else {
                        100 * (round + 1)
                    };
                    ok(s.events().append(*id, [Added { n }]));
                }
            }
            ok(s.save_changes().await);
        }
    };
    let check = async |rounds: i64| {
        for (tenant, unit) in [("red", 1), ("blue", 100)] {
            let mut q = ok(store.query_session_for(tenant));
            for id in &streams {
                let w = ok(q.load::<Wallet>(id).await).expect("projected");
                assert_eq!(w.total, unit * rounds * (rounds + 1) / 2, "{tenant} {id}");
            }
        }
    };
    deposit(0..3).await;
    run_wallets(&store, 2).await;
    check(3).await;
    let names: Vec<String> = row_names(&schema, "Wallet#")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "Wallet#0/2@blue",
            "Wallet#0/2@red",
            "Wallet#1/2@blue",
            "Wallet#1/2@red",
            "Wallet#shards"
        ]
    );
    deposit(3..5).await;
    run_wallets(&store, 3).await;
    check(5).await;
    let threes = row_names(&schema, "Wallet#")
        .await
        .into_iter()
        .filter(|(n, _)| n.contains("/3@"))
        .count();
    assert_eq!(threes, 6, "three shards per tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_version_builds_beside_the_old_one_and_switches_once_every_shard_caught_up() {
    let schema = TestSchema::new("shards_blue_green");
    let v1 = store_on(&schema, 6).await;
    let streams: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    run_with(&v1, &streams, 1, 0..4).await;
    let v2 = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(8)
        .projection_versioned::<Tally>(2)
        .build()
        .await);
    let (log, hold) = (Log::default(), Arc::new(AtomicBool::new(false)));
    let daemon = Daemon::start(&v2, options(0, &log, &hold, &[("Tally:v2", 3)]));
    let started = Instant::now();
    while ok(marten::daemon::active_projection_version::<Tally>(&v2).await) != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "version 2 switched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for round in 4..6 {
        append_round(&v2, &streams, round).await;
    }
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);
    assert_equals_live(&v2, &streams).await;
    let labels: BTreeSet<String> = commits(&log, "Tally:v2").into_keys().collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
}

/// A name given to the card of that name by a stream.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Named {
    name: String,
    by: String,
}

/// A document keyed by a name, not by a stream: the streams naming it write it.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct NameCard {
    id: String,
    by: String,
}

/// An event projection whose documents are not keyed by the stream: the card of each name,
/// as the last event naming it says.
struct Cards;

impl marten::EventProjection for Cards {
    fn name(&self) -> &'static str {
        "Cards"
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut marten::ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(n) = event.data_as::<Named>() {
            ops.store(NameCard {
                id: n.name.clone(),
                by: n.by.clone(),
            });
        }
        Ok(())
    }
}

/// Holds the commit of a batch of `projection` (or of one of its shards) that holds
/// sequence `first` but not `second` until a batch holding `second` has committed (10 s
/// at most): the race of two slots that run at once, made deterministic, with the later
/// event's slot committing first.
#[derive(Default)]
struct LaterCommitsFirst {
    projection: &'static str,
    /// The sequences (first, second), once known.
    order: Mutex<Option<(i64, i64)>>,
    /// Whether a batch holding `second` has committed.
    second: Mutex<bool>,
    committed: std::sync::Condvar,
}

impl LaterCommitsFirst {
    fn order(&self) -> Option<(i64, i64)> {
        *self.order.lock().expect("order")
    }
}

impl DaemonHooks for LaterCommitsFirst {
    fn before_commit(&self, p: &str, seqs: &[i64]) {
        let Some((first, second)) = self.order() else {
            return;
        };
        if !p.starts_with(self.projection) {
            return;
        }
        if seqs.contains(&first) && !seqs.contains(&second) {
            tokio::task::block_in_place(|| {
                let done = self.second.lock().expect("gate");
                let waited =
                    self.committed
                        .wait_timeout_while(done, Duration::from_secs(10), |done| !*done);
                drop(waited);
            });
        }
    }

    fn after_commit(&self, _p: &str, seqs: &[i64]) {
        if self
            .order()
            .is_some_and(|(_, second)| seqs.contains(&second))
        {
            *self.second.lock().expect("gate") = true;
            self.committed.notify_all();
        }
    }
}

/// Two streams, in different shards of 2.
fn streams_in_two_shards() -> (Uuid, Uuid) {
    let first = Uuid::now_v7();
    let shard = |id: Uuid| shard_of(&StreamId::Uuid(id).key(), 2);
    loop {
        let second = Uuid::now_v7();
        if shard(second) != shard(first) {
            return (first, second);
        }
    }
}

/// A sharded event projection may write one document from the streams of two shards, and
/// each shard commits on its own: the document would end as the shard that commits last
/// wrote it, not as the later event says (with the later event's shard committing first,
/// the earlier event's write would win). The daemon refuses to shard an event projection
/// (it cannot tell how its documents are keyed): `Daemon::start` leaves it out and
/// reports a configuration error naming it, and run whole it projects the events in their
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sharded_event_projection_is_refused_since_its_shards_would_race_on_a_document() {
    let schema = TestSchema::new("shards_event_projection");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(8)
        .event::<Named>()
        .document::<NameCard>()
        .event_projection(Cards, Lifecycle::Async)
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let (first, second) = streams_in_two_shards();
    for (stream, by) in [(first, "first"), (second, "second")] {
        let mut s = store.lightweight_session();
        let named = Named {
            name: "ada".into(),
            by: by.into(),
        };
        ok(s.events().append(stream, [named]));
        ok(s.events().append(stream, [Added { n: 1 }]));
        ok(s.save_changes().await);
    }
    let mut seqs: Vec<i64> = event_streams(&schema).await.into_keys().collect();
    seqs.sort_unstable();
    let gate = Arc::new(LaterCommitsFirst {
        projection: "Cards",
        ..LaterCommitsFirst::default()
    });
    // The Named events: the first of each save.
    *gate.order.lock().expect("order") = Some((seqs[0], seqs[2]));
    let card = || async {
        let mut q = store.query_session();
        ok(q.load::<NameCard>(&"ada".to_owned()).await).map(|c| c.by)
    };

    let options = DaemonOptions {
        poll_interval: Duration::from_millis(20),
        hooks: gate.clone(),
        ..DaemonOptions::default()
    }
    .with_shards("Cards", 2)
    .with_shards("Tally", 2);
    let daemon = Daemon::start(&store, options);
    match daemon.wait_for_non_stale(Duration::from_secs(20)).await {
        Err(Error::ProjectionStopped { message, .. }) => {
            assert!(message.contains("Cards"), "{message}");
        }
        other => panic!(
            "the sharded event projection ran ({other:?}): card by {:?}, where the events' \
             order says by \"second\"",
            card().await
        ),
    }
    // The aggregate beside it is sharded and runs.
    let started = Instant::now();
    for stream in [first, second] {
        loop {
            let mut q = store.query_session();
            if ok(q.load::<Tally>(&stream).await).is_some_and(|t| t.total == 1) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{stream} projected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    match daemon.stop().await {
        Err(Error::Configuration(m)) => {
            for named in ["Cards", "event projection", "whole", "multi-stream"] {
                assert!(m.contains(named), "{named} in {m}");
            }
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert_eq!(card().await, None, "the refused projection wrote nothing");

    // Run whole, the later event's write wins.
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            poll_interval: Duration::from_millis(20),
            hooks: gate,
            ..DaemonOptions::default()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    assert_eq!(card().await.as_deref(), Some("second"));
}
