//! Daemon traces and the race detector over them. [`TraceHooks`] (the daemon's
//! `DaemonHooks`) writes one JSON line per hook call to a file per process, with the
//! process id and a wall-clock timestamp (comparable across processes on one machine);
//! [`analyze`] reads the files back and reports (a) any two processes inside committed
//! batches of the same projection at once and (b) any event sequence committed twice by a
//! projection. This file owns the line format both ways; it uses only marten's public
//! hook trait and event envelope.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use marten_core::EventEnvelope;
use marten_pg::daemon::DaemonHooks;

/// Hooks that append a trace line per call to `trace-<pid>.jsonl` in a directory.
pub struct TraceHooks {
    file: Mutex<File>,
    pid: u32,
}

impl TraceHooks {
    /// Opens (appends to) this process's trace file in `dir`.
    pub fn new(dir: &Path) -> std::io::Result<TraceHooks> {
        std::fs::create_dir_all(dir)?;
        let pid = std::process::id();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("trace-{pid}.jsonl")))?;
        Ok(TraceHooks {
            file: Mutex::new(file),
            pid,
        })
    }

    fn write(&self, projection: &str, kind: &str, seqs: &[i64]) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let line = serde_json::json!({
            "pid": self.pid,
            "projection": projection,
            "kind": kind,
            "seqs": seqs,
            "ts": ts.to_string(),
        });
        if let Ok(mut f) = self.file.lock() {
            // One write per line, unbuffered: a killed process loses at most its last line.
            let _ = writeln!(f, "{line}");
        }
    }
}

impl DaemonHooks for TraceHooks {
    fn before_catch_up(&self, projection: &str) {
        self.write(projection, "before_catch_up", &[]);
    }
    fn before_batch(&self, projection: &str) {
        self.write(projection, "before_batch", &[]);
    }
    fn before_event(&self, projection: &str, event: &EventEnvelope) {
        self.write(projection, "before_event", &[event.sequence]);
    }
    fn after_event(&self, projection: &str, event: &EventEnvelope) {
        self.write(projection, "after_event", &[event.sequence]);
    }
    /// A trace records sequences only.
    fn reads_event_metadata(&self) -> bool {
        false
    }
    fn before_commit(&self, projection: &str, sequences: &[i64]) {
        self.write(projection, "before_commit", sequences);
    }
    fn after_commit(&self, projection: &str, sequences: &[i64]) {
        self.write(projection, "after_commit", sequences);
    }
    fn batch_rejected(&self, projection: &str) {
        self.write(projection, "batch_rejected", &[]);
    }
    fn after_catch_up(&self, projection: &str) {
        self.write(projection, "after_catch_up", &[]);
    }
}

/// What the traces show.
#[derive(Debug, Default)]
pub struct Report {
    /// Trace lines read.
    pub lines: usize,
    /// Processes seen.
    pub processes: usize,
    /// Batches committed.
    pub batches_committed: usize,
    /// Batches discarded because another runner owned the projection.
    pub batches_rejected: usize,
    /// Events committed (counting repeats).
    pub events_committed: usize,
    /// Pairs of committed batches of one projection, from different processes, whose
    /// working intervals overlap: (projection, pid, pid). A batch works from
    /// `before_batch` until it sends its commit (`before_commit`, or `after_commit` when
    /// that line is missing): a process paused after its commit was acknowledged and
    /// before its `after_commit` hook ran worked on nothing meanwhile (a commit that
    /// lands after another process's shows as events processed twice instead).
    pub overlaps: Vec<(String, u64, u64)>,
    /// Sequences committed more than once: (projection, sequence).
    pub double_processed: Vec<(String, i64)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trace: {} lines from {} processes; {} batches committed ({} events), {} rejected; {} overlaps, {} events processed twice",
            self.lines,
            self.processes,
            self.batches_committed,
            self.events_committed,
            self.batches_rejected,
            self.overlaps.len(),
            self.double_processed.len()
        )
    }
}

struct Line {
    pid: u64,
    projection: String,
    kind: String,
    seqs: Vec<i64>,
    ts: u128,
}

fn parse(line: &str) -> Option<Line> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Line {
        pid: v.get("pid")?.as_u64()?,
        projection: v.get("projection")?.as_str()?.to_owned(),
        kind: v.get("kind")?.as_str()?.to_owned(),
        seqs: v
            .get("seqs")?
            .as_array()?
            .iter()
            .filter_map(serde_json::Value::as_i64)
            .collect(),
        ts: v.get("ts")?.as_str()?.parse().ok()?,
    })
}

/// Reads every `trace-*.jsonl` in `dir` and checks them.
pub fn analyze(dir: &Path) -> std::io::Result<Report> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            for l in std::fs::read_to_string(&path)?.lines() {
                // A killed process may leave a torn last line.
                if let Some(parsed) = parse(l) {
                    lines.push(parsed);
                }
            }
        }
    }
    Ok(check(lines))
}

fn check(mut lines: Vec<Line>) -> Report {
    lines.sort_by_key(|l| l.ts);
    let mut report = Report {
        lines: lines.len(),
        ..Report::default()
    };
    let mut pids: Vec<u64> = lines.iter().map(|l| l.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    report.processes = pids.len();
    // Committed batch intervals per projection: (start, end, pid).
    let mut open: HashMap<(String, u64), u128> = HashMap::new();
    let mut sending: HashMap<(String, u64), u128> = HashMap::new();
    let mut intervals: HashMap<String, Vec<(u128, u128, u64)>> = HashMap::new();
    let mut seen: HashMap<(String, i64), usize> = HashMap::new();
    for l in &lines {
        match l.kind.as_str() {
            "before_batch" => {
                open.insert((l.projection.clone(), l.pid), l.ts);
                sending.remove(&(l.projection.clone(), l.pid));
            }
            "before_commit" => {
                sending.insert((l.projection.clone(), l.pid), l.ts);
            }
            "after_commit" => {
                report.batches_committed += 1;
                report.events_committed += l.seqs.len();
                let key = (l.projection.clone(), l.pid);
                let start = open.remove(&key).unwrap_or(l.ts);
                let end = sending.remove(&key).unwrap_or(l.ts);
                intervals
                    .entry(l.projection.clone())
                    .or_default()
                    .push((start, end, l.pid));
                for s in &l.seqs {
                    *seen.entry((l.projection.clone(), *s)).or_default() += 1;
                }
            }
            "batch_rejected" => {
                report.batches_rejected += 1;
                open.remove(&(l.projection.clone(), l.pid));
                sending.remove(&(l.projection.clone(), l.pid));
            }
            _ => {}
        }
    }
    for (projection, list) in &intervals {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.2 != b.2 && a.0 < b.1 && b.0 < a.1 {
                    report.overlaps.push((projection.clone(), a.2, b.2));
                }
            }
        }
    }
    let mut doubles: Vec<(String, i64)> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect();
    doubles.sort();
    report.double_processed = doubles;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pid: u64, kind: &str, seqs: &[i64], ts: u128) -> Line {
        Line {
            pid,
            projection: "P".into(),
            kind: kind.into(),
            seqs: seqs.to_vec(),
            ts,
        }
    }

    #[test]
    fn detects_overlaps_and_double_processing() {
        let report = check(vec![
            line(1, "before_batch", &[], 10),
            line(2, "before_batch", &[], 15),
            line(1, "after_commit", &[1, 2], 20),
            line(2, "after_commit", &[2, 3], 25),
            line(1, "before_batch", &[], 30),
            line(1, "batch_rejected", &[], 35),
        ]);
        assert_eq!(report.overlaps, vec![("P".to_owned(), 1, 2)]);
        assert_eq!(report.double_processed, vec![("P".to_owned(), 2)]);
        assert_eq!(
            (
                report.batches_committed,
                report.batches_rejected,
                report.events_committed
            ),
            (2, 1, 4)
        );
    }

    #[test]
    fn a_pause_between_the_commit_and_its_hook_is_not_an_overlap() {
        let report = check(vec![
            line(1, "before_batch", &[], 10),
            line(1, "before_commit", &[1], 12),
            // Process 1 is paused after its commit, before its hook runs.
            line(2, "before_batch", &[], 20),
            line(2, "before_commit", &[2], 22),
            line(2, "after_commit", &[2], 25),
            line(1, "after_commit", &[1], 40),
        ]);
        assert!(report.overlaps.is_empty(), "{:?}", report.overlaps);
        // Working at once is still caught.
        let report = check(vec![
            line(1, "before_batch", &[], 10),
            line(2, "before_batch", &[], 11),
            line(1, "before_commit", &[1], 12),
            line(2, "before_commit", &[2], 13),
            line(1, "after_commit", &[1], 14),
            line(2, "after_commit", &[2], 15),
        ]);
        assert_eq!(report.overlaps, vec![("P".to_owned(), 1, 2)]);
    }

    #[test]
    fn sequential_batches_are_clean() {
        let report = check(vec![
            line(1, "before_batch", &[], 10),
            line(1, "after_commit", &[1], 20),
            line(2, "before_batch", &[], 21),
            line(2, "after_commit", &[2], 30),
        ]);
        assert!(report.overlaps.is_empty());
        assert!(report.double_processed.is_empty());
    }
}
