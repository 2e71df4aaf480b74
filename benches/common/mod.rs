//! What the benchmarks share: timing (whole runs and interleaved blocks), the rows of
//! a results table with their ratios, the environment switches (`MARTEN_BENCH_ONLY`,
//! numbers), the append rows' event and aggregate (`counter.rs`) and the raw referents of
//! an append (`inline.rs`: with an inline projection).
#![allow(dead_code)]

pub mod counter;
pub mod inline;
pub mod report;

use std::future::Future;
use std::time::{Duration, Instant};

/// Times `ops` operations of `f`; returns ops per second. Waits a moment first, so that
/// what the previous measurement left running in the server (the WAL writer flushing an
/// asynchronous-commit backlog, autovacuum) does not land on this one.
pub async fn time<F, Fut>(ops: usize, f: F) -> f64
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::time::sleep(std::time::Duration::from_millis(SETTLE_MS)).await;
    let start = Instant::now();
    f().await;
    ops as f64 / start.elapsed().as_secs_f64()
}

/// Operations per block of [`interleaved`].
pub const BLOCK: usize = 25;

/// Runs `ops` operations of each side in alternating blocks of [`BLOCK`] (lib, raw, lib,
/// ..., or raw first), timing each side's blocks only; returns (lib, raw) ops per second.
/// Both sides see the same machine from moment to moment, so the ratio of a latency-bound
/// scenario is not at the mercy of what else the machine does for a second.
pub async fn interleaved(
    ops: usize,
    lib_first: bool,
    mut lib: impl AsyncFnMut(usize),
    mut raw: impl AsyncFnMut(usize),
) -> (f64, f64) {
    tokio::time::sleep(std::time::Duration::from_millis(SETTLE_MS)).await;
    let (mut lib_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
    let blocks = ops.div_ceil(BLOCK);
    for b in 0..blocks {
        let range = b * BLOCK..((b + 1) * BLOCK).min(ops);
        let lib_turn_first = lib_first == (b % 2 == 0);
        for lib_turn in [lib_turn_first, !lib_turn_first] {
            let start = Instant::now();
            for i in range.clone() {
                if lib_turn {
                    lib(i).await;
                } else {
                    raw(i).await;
                }
            }
            if lib_turn {
                lib_time += start.elapsed();
            } else {
                raw_time += start.elapsed();
            }
        }
    }
    (
        ops as f64 / lib_time.as_secs_f64(),
        ops as f64 / raw_time.as_secs_f64(),
    )
}

/// [`interleaved`] after [`WARM`] untimed operations of each side (operations `0..WARM`,
/// in turn order): on new connections, the first operations prepare the statements and
/// (for a new store) make sure of the tables.
pub async fn interleaved_warm(
    ops: usize,
    lib_first: bool,
    mut lib: impl AsyncFnMut(usize),
    mut raw: impl AsyncFnMut(usize),
) -> (f64, f64) {
    for i in 0..WARM {
        if lib_first {
            lib(i).await;
            raw(i).await;
        } else {
            raw(i).await;
            lib(i).await;
        }
    }
    interleaved(ops, lib_first, lib, raw).await
}

/// Untimed operations per side of [`interleaved_warm`].
pub const WARM: usize = 3;

/// The pause before each measurement, in milliseconds.
pub const SETTLE_MS: u64 = 200;

pub struct Row {
    pub name: String,
    pub lib: Vec<f64>,
    pub raw: Vec<f64>,
    pub unit: &'static str,
}

impl Row {
    pub fn ratios(&self) -> Vec<f64> {
        let mut r: Vec<f64> = self.lib.iter().zip(&self.raw).map(|(l, r)| l / r).collect();
        r.sort_by(|a, b| a.total_cmp(b));
        r
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn quartiles(sorted: &[f64]) -> (f64, f64) {
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    (q(0.25), q(0.75))
}

/// `MARTEN_BENCH_ONLY` when it selects scenarios (set and not empty).
pub fn only_filter() -> Option<String> {
    std::env::var("MARTEN_BENCH_ONLY")
        .ok()
        .filter(|only| !only.is_empty())
}

/// Whether the scenario named `name` runs: `MARTEN_BENCH_ONLY` (a comma-separated list of
/// substrings of scenario names) selects some; by default all run.
pub fn wanted(name: &str) -> bool {
    match only_filter() {
        Some(only) => only.split(',').any(|part| name.contains(part.trim())),
        None => true,
    }
}

/// A positive number from the environment variable `name`, if set.
pub fn env_number(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
}

/// The `synchronous_commit` settings to run: `MARTEN_BENCH_SYNC=off` (or `on`) runs one;
/// by default both.
pub fn sync_settings() -> Vec<&'static str> {
    match std::env::var("MARTEN_BENCH_SYNC").as_deref() {
        Ok("on") => vec!["on"],
        Ok("off") => vec!["off"],
        _ => vec!["on", "off"],
    }
}

/// The raw referent of a lone append, as raw SQL over marten's tables: what marten's
/// append does (create the stream row if missing or bump it, unless archived, with the
/// ordering transaction id of its events, then insert the event at the new version with
/// that id) for an event of type `event_type`. `$1` stream id, `$2` event id, `$3` data.
pub fn raw_append_sql(event_type: &str) -> String {
    format!(
        "WITH s AS (INSERT INTO mt_streams AS st (id, version, last_tx) VALUES ($1, 1, pg_current_xact_id()) \
         ON CONFLICT (id) DO UPDATE SET version = st.version + 1, timestamp = now(), \
         last_tx = greatest(st.last_tx, pg_current_xact_id()) \
         WHERE NOT st.is_archived RETURNING st.version, st.last_tx) \
         INSERT INTO mt_events (id, stream_id, version, type, data, tx_id) \
         SELECT $2, $1, s.version, '{event_type}', $3, s.last_tx FROM s"
    )
}
