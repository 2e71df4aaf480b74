//! Timing and reporting, as in the main repository's `benches/common`: both sides of a
//! scenario run in alternating blocks within each repetition (so both see the same
//! machine from moment to moment), each side's blocks timed alone; a row keeps every
//! repetition's figures and reports the median ratio and its interquartile range.

use std::time::{Duration, Instant};

/// Operations per block of [`interleaved`].
pub const BLOCK: usize = 25;

/// The pause before each measurement, in milliseconds: what the previous one left
/// running in the server (the WAL writer flushing an asynchronous-commit backlog,
/// autovacuum) does not land on this one.
pub const SETTLE_MS: u64 = 200;

/// The CPU time (user and system) this process has used so far, and its context switches
/// (voluntary and involuntary: a thread that waits for an answer, a thread woken).
fn usage() -> (Duration, u64) {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let switches = (usage.ru_nvcsw + usage.ru_nivcsw) as u64;
    (tv(usage.ru_utime) + tv(usage.ru_stime), switches)
}

/// One repetition of a scenario: each side's operations per second and the client's
/// CPU time per operation (µs) while that side's blocks ran.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// marten's operations per second.
    pub marten: f64,
    /// The peer's operations per second.
    pub peer: f64,
    /// The client's CPU time per marten operation, µs.
    pub marten_cpu_us: f64,
    /// The client's CPU time per peer operation, µs.
    pub peer_cpu_us: f64,
    /// The client's context switches per marten operation.
    pub marten_switches: f64,
    /// The client's context switches per peer operation.
    pub peer_switches: f64,
}

/// Runs `ops` operations of each side in alternating blocks of [`BLOCK`] (marten, peer,
/// marten, ..., or the peer first), timing each side's blocks only (wall clock, and the
/// process's CPU time: nothing else runs in the process meanwhile).
pub async fn interleaved(
    ops: usize,
    marten_first: bool,
    mut marten: impl AsyncFnMut(usize),
    mut peer: impl AsyncFnMut(usize),
) -> Measured {
    tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
    let mut wall = [Duration::ZERO; 2];
    let mut cpu = [Duration::ZERO; 2];
    let mut switches = [0u64; 2];
    for b in 0..ops.div_ceil(BLOCK) {
        let range = b * BLOCK..((b + 1) * BLOCK).min(ops);
        let marten_turn_first = marten_first == (b % 2 == 0);
        for marten_turn in [marten_turn_first, !marten_turn_first] {
            let (start, (cpu_start, switches_start)) = (Instant::now(), usage());
            for i in range.clone() {
                if marten_turn {
                    marten(i).await;
                } else {
                    peer(i).await;
                }
            }
            let side = usize::from(!marten_turn);
            wall[side] += start.elapsed();
            let (cpu_end, switches_end) = usage();
            cpu[side] += cpu_end.saturating_sub(cpu_start);
            switches[side] += switches_end.saturating_sub(switches_start);
        }
    }
    let per_op_us = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
    Measured {
        marten: ops as f64 / wall[0].as_secs_f64(),
        peer: ops as f64 / wall[1].as_secs_f64(),
        marten_cpu_us: per_op_us(cpu[0]),
        peer_cpu_us: per_op_us(cpu[1]),
        marten_switches: switches[0] as f64 / ops as f64,
        peer_switches: switches[1] as f64 / ops as f64,
    }
}

/// One line of the results table: a scenario, the peer it is measured against and every
/// repetition's operations per second of both sides.
pub struct Row {
    /// What each side does per operation.
    pub scenario: &'static str,
    /// The peer against which marten is measured.
    pub peer: &'static str,
    /// The `synchronous_commit` setting of both sides' connections.
    pub sync: &'static str,
    /// What marten's operations per second are called in the table.
    pub unit: &'static str,
    /// Per repetition: marten's operations per second.
    pub marten: Vec<f64>,
    /// Per repetition: the peer's operations per second.
    pub other: Vec<f64>,
    /// Per repetition: the client's CPU µs per marten operation.
    pub marten_cpu: Vec<f64>,
    /// Per repetition: the client's CPU µs per peer operation.
    pub other_cpu: Vec<f64>,
    /// Per repetition: the client's context switches per marten operation.
    pub marten_switches: Vec<f64>,
    /// Per repetition: the client's context switches per peer operation.
    pub other_switches: Vec<f64>,
}

impl Row {
    /// An empty row, counted in operations per second until `unit` says otherwise.
    pub fn new(scenario: &'static str, peer: &'static str, sync: &'static str) -> Self {
        Row {
            scenario,
            peer,
            sync,
            unit: "ops/s",
            marten: Vec::new(),
            other: Vec::new(),
            marten_cpu: Vec::new(),
            other_cpu: Vec::new(),
            marten_switches: Vec::new(),
            other_switches: Vec::new(),
        }
    }

    /// Records one repetition.
    pub fn push(&mut self, m: Measured) {
        self.marten.push(m.marten);
        self.other.push(m.peer);
        self.marten_cpu.push(m.marten_cpu_us);
        self.other_cpu.push(m.peer_cpu_us);
        self.marten_switches.push(m.marten_switches);
        self.other_switches.push(m.peer_switches);
    }

    /// The per-repetition ratios marten / peer, sorted.
    pub fn ratios(&self) -> Vec<f64> {
        let mut r: Vec<f64> = self
            .marten
            .iter()
            .zip(&self.other)
            .map(|(m, p)| m / p)
            .collect();
        r.sort_by(|a, b| a.total_cmp(b));
        r
    }

    /// The Markdown table line.
    pub fn line(&self) -> String {
        let ratios = self.ratios();
        let (q1, q3) = quartiles(&ratios);
        format!(
            "| {} | {} | {} | {:.0} {} | {:.0} | {:.2} | {:.2}-{:.2} | {:.0} / {:.0} | {:.1} / {:.1} |",
            self.scenario,
            self.peer,
            self.sync,
            median(&self.marten),
            self.unit,
            median(&self.other),
            median(&ratios),
            q1,
            q3,
            median(&self.marten_cpu),
            median(&self.other_cpu),
            median(&self.marten_switches),
            median(&self.other_switches)
        )
    }
}

/// The header of the table [`Row::line`] writes.
pub const HEADER: &str = "| scenario | peer | synchronous_commit | marten | peer | ratio marten/peer (median) | IQR | client CPU µs/op marten / peer | client context switches/op marten / peer |\n|---|---|---|---|---|---|---|---|---|";

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The first and third quartiles of the sorted `sorted` (NaN when empty).
pub fn quartiles(sorted: &[f64]) -> (f64, f64) {
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    (q(0.25), q(0.75))
}

/// How much work a run does: repetitions and operations per side per repetition.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Repetitions of every scenario.
    pub reps: usize,
    /// Operations per side and repetition.
    pub ops: usize,
}

impl Plan {
    /// From the environment: `MARTEN_BENCH_QUICK=1` (3 repetitions of 100 operations),
    /// else 11 of 400; `MARTEN_BENCH_REPS` and `MARTEN_BENCH_OPS` override either.
    pub fn from_env() -> Plan {
        let quick = std::env::var("MARTEN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let (reps, ops) = if quick { (3, 100) } else { (11, 400) };
        Plan {
            reps: env_number("MARTEN_BENCH_REPS").unwrap_or(reps),
            ops: env_number("MARTEN_BENCH_OPS").unwrap_or(ops),
        }
    }
}

/// Whether the rows named `name` (a scenario word and the peer, "load cqrs-es") run:
/// `MARTEN_BENCH_ONLY` (a comma-separated list of substrings) selects some; by default
/// all run.
pub fn wanted(name: &str) -> bool {
    match std::env::var("MARTEN_BENCH_ONLY") {
        Ok(only) if !only.is_empty() => only.split(',').any(|part| name.contains(part.trim())),
        _ => true,
    }
}

/// A positive number from the environment variable `name`, if set.
pub fn env_number(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
}
