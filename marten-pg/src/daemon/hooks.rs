//! Catch-up hooks and the trace they can write: one JSON line per hook call, per process,
//! with the process id and a wall-clock timestamp (comparable across processes on one
//! machine). `marten_testing::trace` reads the traces back and checks them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use marten_core::EventEnvelope;

/// Called by the daemon around its work. All methods default to doing nothing.
pub trait DaemonHooks: Send + Sync + 'static {
    /// The runner took ownership of `projection` and starts catching up.
    fn before_catch_up(&self, _projection: &str) {}
    /// A batch starts.
    fn before_batch(&self, _projection: &str) {}
    /// An event is about to be applied.
    fn before_event(&self, _projection: &str, _event: &EventEnvelope) {}
    /// An event was applied (its writes are not committed yet).
    fn after_event(&self, _projection: &str, _event: &EventEnvelope) {}
    /// The batch's writes and progress are about to be committed.
    fn before_commit(&self, _projection: &str, _sequences: &[i64]) {}
    /// The batch committed: these events are processed, exactly once.
    fn after_commit(&self, _projection: &str, _sequences: &[i64]) {}
    /// The batch was discarded: another runner owns the projection now.
    fn batch_rejected(&self, _projection: &str) {}
    /// The runner caught up with the events readable now.
    fn after_catch_up(&self, _projection: &str) {}
}

/// No hooks.
pub struct NoHooks;

impl DaemonHooks for NoHooks {}

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
