//! Sharded async projections: catching up a projection whose apply waits on I/O (1 ms of
//! blocking wait per event, a synchronous call to another service), run whole by one
//! daemon, split into 3 shards on one daemon, and split into 3 shards shared by 3 daemons.
//! Each daemon stands for a node: a thread with its own runtime (4 worker threads), store
//! and pool. Each run starts from a rebuild over the same events and is timed from the
//! daemons' start to `wait_for_non_stale`.
//!
//! Run: `cargo bench --bench shards`. `MARTEN_BENCH_REPS=n` sets the repetitions (default
//! 3), `MARTEN_BENCH_EVENTS=n` the events (default 9000, in streams of 10), and
//! `MARTEN_BENCH_WAIT_US=n` the wait per apply (default 1000). Results go to
//! BENCHMARKS.md by hand.

mod common;

use std::time::{Duration, Instant};

use common::{env_number, median};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Added {
    n: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Slow {
    id: Uuid,
    version: i64,
    total: i64,
}

static WAIT_US: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

#[marten::apply]
impl Slow {
    fn apply(&mut self, e: &Added) {
        // Waiting on another service: the thread sleeps, the CPU is free.
        std::thread::sleep(Duration::from_micros(*WAIT_US.get_or_init(|| 1000)));
        self.total += e.n;
    }
}

fn ok<T>(r: marten::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("benchmark failed: {e}"),
    }
}

async fn store_on(schema: &TestSchema) -> DocumentStore {
    ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(6)
        .projection::<Slow>(Lifecycle::Async)
        .build()
        .await)
}

fn options(node: usize, shards: u32) -> DaemonOptions {
    DaemonOptions {
        node: format!("bench-{node}"),
        batch_size: 200,
        workers: 1,
        poll_interval: Duration::from_millis(20),
        ..DaemonOptions::default()
    }
    .with_shards("Slow", shards)
}

/// A daemon node: a thread with a runtime and a store of its own.
struct Node {
    go: tokio::sync::oneshot::Sender<()>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts node `i` (its store ready, its daemon waiting for `go`).
async fn node(schema: &TestSchema, i: usize, shards: u32) -> Node {
    let (url, name) = (schema.url().to_owned(), schema.name().to_owned());
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        rt.block_on(async move {
            let store = ok(DocumentStore::builder()
                .connection_string(url)
                .schema(name)
                .pool_size(6)
                .projection::<Slow>(Lifecycle::Async)
                .build()
                .await);
            let _ = ready_tx.send(());
            let _ = go_rx.await;
            let daemon = Daemon::start(&store, options(i, shards));
            let _ = stop_rx.await;
            ok(daemon.stop().await);
        });
    });
    let _ = ready.await;
    Node { go, stop, thread }
}

/// Events per second of one catch-up over every event by `nodes` daemons running `Slow`
/// in `shards` shards.
async fn catch_up(
    schema: &TestSchema,
    store: &DocumentStore,
    nodes: usize,
    shards: u32,
    events: usize,
) -> f64 {
    ok(marten::daemon::rebuild(store, "Slow").await);
    let mut started_nodes = Vec::new();
    for i in 0..nodes {
        started_nodes.push(node(schema, i, shards).await);
    }
    let started = Instant::now();
    let mut running = Vec::new();
    for n in started_nodes {
        let _ = n.go.send(());
        running.push((n.stop, n.thread));
    }
    ok(marten::daemon::wait_for_non_stale(store, Duration::from_secs(600)).await);
    let rate = events as f64 / started.elapsed().as_secs_f64();
    for (stop, thread) in running {
        let _ = stop.send(());
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    rate
}

fn main() {
    let reps = env_number("MARTEN_BENCH_REPS").unwrap_or(3);
    let events = env_number("MARTEN_BENCH_EVENTS").unwrap_or(9000);
    let wait = env_number("MARTEN_BENCH_WAIT_US").unwrap_or(1000);
    let _ = WAIT_US.set(wait as u64);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async {
        let schema = TestSchema::new("bench_shards");
        let store = store_on(&schema).await;
        let streams: Vec<Uuid> = (0..events.div_ceil(10)).map(|_| Uuid::now_v7()).collect();
        let mut s = store.lightweight_session();
        for id in &streams {
            ok(s.events().start_stream(*id, (0..10).map(|n| Added { n })));
        }
        ok(s.save_changes().await);
        let total = streams.len() * 10;
        let (mut whole, mut one_node, mut three_nodes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            whole.push(catch_up(&schema, &store, 1, 1, total).await);
            one_node.push(catch_up(&schema, &store, 1, 3, total).await);
            three_nodes.push(catch_up(&schema, &store, 3, 3, total).await);
        }
        let (w, o, t) = (median(&whole), median(&one_node), median(&three_nodes));
        println!("| catch-up of {total} events, {wait} us of waiting per apply | events/s (median of {reps}) | vs 1 daemon, whole |");
        println!("|---|---|---|");
        println!("| 1 daemon, whole projection | {w:.0} | 1.00 |");
        println!("| 1 daemon, 3 shards | {o:.0} | {:.2} |", o / w);
        println!("| 3 daemons, 3 shards | {t:.0} | {:.2} |", t / w);
        println!("all runs: whole {whole:.0?}, 1 daemon 3 shards {one_node:.0?}, 3 daemons {three_nodes:.0?}");
    });
}
