//! A daemon node: runs the async projections of a store until it is killed.
//!
//! Environment: `NODE_URL`, `NODE_SCHEMA`, `NODE_TRACE_DIR`, `NODE_NAME`, and optionally
//! `NODE_PAUSE_BEFORE_COMMIT_MS` (sleep inside every batch just before it commits, to let
//! tests pause or cut the node in that window) and `NODE_APPLY_SLEEP_MS` (each `Counter`
//! apply waits that long, as on a call to another service). With `NODE_STORE=subscriptions` the node
//! runs the two subscriptions of the domain instead of the projection (its delivery log
//! `deliveries-NODE_NAME.log` in the trace directory), their handlers sleeping
//! `NODE_PAUSE_IN_HANDLER_MS` in every batch. With `NODE_LEDGER=1` the node runs the
//! `Ledger` multi-stream projection beside `Counter`. `NODE_SHARDS` splits the `Counter`
//! projection (and `Ledger`, when it runs) into that many shards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use marten::daemon::{Daemon, DaemonHooks, DaemonOptions};
use marten::EventEnvelope;
use marten_testing::trace::TraceHooks;

struct Pausing {
    trace: TraceHooks,
    pause: Duration,
}

impl DaemonHooks for Pausing {
    fn before_catch_up(&self, p: &str) {
        self.trace.before_catch_up(p);
    }
    fn before_batch(&self, p: &str) {
        self.trace.before_batch(p);
    }
    // `Ledger`'s events are not traced one by one: the race detector reads the batch
    // lines only, and a line per event of a second projection would double the writes.
    fn before_event(&self, p: &str, e: &EventEnvelope) {
        if !p.starts_with("Ledger") {
            self.trace.before_event(p, e);
        }
    }
    fn after_event(&self, p: &str, e: &EventEnvelope) {
        if !p.starts_with("Ledger") {
            self.trace.after_event(p, e);
        }
    }
    fn before_commit(&self, p: &str, seqs: &[i64]) {
        self.trace.before_commit(p, seqs);
        std::thread::sleep(self.pause);
    }
    fn after_commit(&self, p: &str, seqs: &[i64]) {
        self.trace.after_commit(p, seqs);
    }
    fn batch_rejected(&self, p: &str) {
        self.trace.batch_rejected(p);
    }
    fn after_catch_up(&self, p: &str) {
        self.trace.after_catch_up(p);
    }
}

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("daemon-node: {name} is not set");
            std::process::exit(2);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = env("NODE_URL");
    let schema = env("NODE_SCHEMA");
    let trace_dir = PathBuf::from(env("NODE_TRACE_DIR"));
    let node = env("NODE_NAME");
    let pause = std::env::var("NODE_PAUSE_BEFORE_COMMIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    if let Some(ms) = std::env::var("NODE_APPLY_SLEEP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        marten_daemon_tests::APPLY_SLEEP_US.store(ms * 1000, std::sync::atomic::Ordering::Relaxed);
    }
    let ledger = std::env::var("NODE_LEDGER").is_ok_and(|v| v == "1");
    let store = if std::env::var("NODE_STORE").is_ok_and(|s| s == "subscriptions") {
        let in_handler = std::env::var("NODE_PAUSE_IN_HANDLER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let log = trace_dir.join(format!("deliveries-{node}.log"));
        marten_daemon_tests::subscription_store(&url, &schema, 6, log, in_handler).await
    } else if ledger {
        marten_daemon_tests::ledger_store(&url, &schema, 6).await
    } else {
        marten_daemon_tests::store(&url, &schema, 6).await
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            eprintln!("daemon-node {node}: {e}");
            std::process::exit(1);
        }
    };
    let trace = match TraceHooks::new(&trace_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("daemon-node {node}: cannot open the trace: {e}");
            std::process::exit(1);
        }
    };
    let mut options = DaemonOptions {
        node: node.clone(),
        batch_size: 400,
        poll_interval: Duration::from_millis(50),
        hooks: Arc::new(Pausing { trace, pause }),
        ..DaemonOptions::default()
    };
    if let Some(shards) = std::env::var("NODE_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options = options.with_shards("Counter", shards);
        if ledger {
            options = options.with_shards("Ledger", shards);
        }
    }
    let daemon = Daemon::start(&store, options);
    println!("ready {node}");
    let _ = tokio::signal::ctrl_c().await;
    let _ = daemon.stop().await;
}
