//! What the multi-process tests share: daemon node processes (started with the test's
//! schema, trace directory and settings, killed with SIGKILL), their trace directories,
//! the writer that appends to many streams while nodes come and go, and the check that
//! every document equals its stream's fold.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use marten::prelude::*;
use marten_testing::TestSchema;
use tokio::task::JoinHandle;

use crate::Added;

/// A daemon node process.
pub struct Node {
    /// The node's name (its trace file's and its lock's).
    pub name: String,
    /// The process.
    pub child: Child,
}

impl Node {
    /// Starts the node binary `exe` (`env!("CARGO_BIN_EXE_daemon-node")`) on `schema`,
    /// tracing into `trace`, with the extra `settings` (`NODE_*` variables).
    pub fn spawn(
        exe: &str,
        schema: &TestSchema,
        trace: &Path,
        name: &str,
        settings: &[(&str, String)],
    ) -> Node {
        let mut command = Command::new(exe);
        command
            .env("NODE_URL", schema.url())
            .env("NODE_SCHEMA", schema.name())
            .env("NODE_TRACE_DIR", trace)
            .env("NODE_NAME", name)
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in settings {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn a daemon node");
        Node {
            name: name.to_owned(),
            child,
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An empty trace directory for the nodes of `schema`, named after `kind`.
pub fn trace_dir(schema: &TestSchema, kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("marten-{kind}-trace-{}", schema.name()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Appends `per_stream` `Added` events to each of `ids` in two halves (the first starts
/// the streams), 20 streams per save, on a task of its own.
pub fn write_streams(
    store: DocumentStore,
    ids: Vec<Uuid>,
    per_stream: usize,
) -> JoinHandle<marten::Result<()>> {
    tokio::spawn(async move {
        for half in 0..2 {
            for chunk in ids.chunks(20) {
                let mut s = store.lightweight_session();
                for id in chunk {
                    let events: Vec<Added> = (0..per_stream / 2)
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
        Ok(())
    })
}

/// How many streams' `Counter` documents differ from their events (by SQL): 0 when every
/// document equals its live fold.
pub async fn mismatches(schema: &TestSchema) -> i64 {
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
