//! What the multi-process tests share: daemon node processes (started with the test's
//! schema, trace directory and settings, killed with SIGKILL), their trace directories,
//! the writer that appends to many streams while nodes come and go, the check that
//! every document equals its stream's fold, and the check that the `Ledger` documents
//! hold every event exactly once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use marten::prelude::*;
use marten_testing::TestSchema;
use tokio::task::JoinHandle;

use crate::{ledger_bucket, Added};

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

/// A test that panics before it kills its nodes would leave them running (and polling
/// its schema) after the test binary exits: a node dropped is killed. Killing a node
/// already reaped does nothing.
impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
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

/// What the `Ledger` documents (a bucket's page each) hold against the `Added` events in
/// `mt_events`.
#[derive(Debug, Default)]
pub struct LedgerCheck {
    /// `Added` events stored.
    pub events: usize,
    /// The sum of the documents' counts.
    pub counted: i64,
    /// The sequences the documents list, all together.
    pub listed: usize,
    /// Sequences listed more than once (across all documents), the first 20.
    pub doubled: Vec<i64>,
    /// How many sequences are listed more than once.
    pub doubled_count: usize,
    /// Events no document lists, the first 20.
    pub missing: Vec<i64>,
    /// How many events no document lists.
    pub missing_count: usize,
    /// Sequences listed that are no stored event's, or in another document than the one
    /// of their stream's bucket and their page.
    pub misplaced: usize,
    /// Documents whose count is not the length of their list.
    pub miscounted: Vec<String>,
}

impl LedgerCheck {
    /// Whether every event was applied exactly once, to its document.
    pub fn exact(&self) -> bool {
        self.counted == self.events as i64
            && self.listed == self.events
            && self.doubled_count == 0
            && self.missing_count == 0
            && self.misplaced == 0
            && self.miscounted.is_empty()
    }
}

impl fmt::Display for LedgerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ledger: {} events; documents count {} and list {}; {} listed twice or more {:?}, \
             {} missing {:?}, {} misplaced, miscounted documents {:?}",
            self.events,
            self.counted,
            self.listed,
            self.doubled_count,
            self.doubled,
            self.missing_count,
            self.missing,
            self.misplaced,
            self.miscounted
        )
    }
}

/// Reads every `Added` event and every `Ledger` document (by SQL) and compares them: each
/// event's sequence must be listed once, in the document [`ledger_bucket`] names for it,
/// and each document's count must be the length of its list.
pub async fn ledger_check(schema: &TestSchema) -> LedgerCheck {
    let raw = schema.raw_client().await;
    let events = raw
        .query(
            "SELECT seq_id, stream_id::text FROM mt_events WHERE type = $1",
            &[&<Added as marten::Event>::EVENT_TYPE],
        )
        .await
        .expect("events");
    let mut bucket_of: HashMap<i64, String> = HashMap::with_capacity(events.len());
    for r in &events {
        let (sequence, stream): (i64, String) = (r.get(0), r.get(1));
        let stream = Uuid::parse_str(&stream).expect("a uuid stream id");
        bucket_of.insert(sequence, ledger_bucket(&StreamId::Uuid(stream), sequence));
    }
    let buckets = raw
        .query(
            "SELECT id::text, (data->>'count')::bigint, \
             array(SELECT jsonb_array_elements_text(data->'sequences')::bigint) \
             FROM mt_doc_ledger",
            &[],
        )
        .await
        .expect("ledger documents");
    let mut check = LedgerCheck {
        events: events.len(),
        ..LedgerCheck::default()
    };
    let mut listed: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &buckets {
        let id: String = r.get(0);
        let count: i64 = r.get(1);
        let sequences: Vec<i64> = r.get(2);
        check.counted += count;
        check.listed += sequences.len();
        if count != sequences.len() as i64 {
            check.miscounted.push(id.clone());
        }
        for s in sequences {
            *listed.entry(s).or_default() += 1;
            if bucket_of.get(&s) != Some(&id) {
                check.misplaced += 1;
            }
        }
    }
    for (s, n) in &listed {
        if *n > 1 {
            check.doubled_count += 1;
            if check.doubled.len() < 20 {
                check.doubled.push(*s);
            }
        }
    }
    let mut missing: Vec<i64> = bucket_of
        .keys()
        .filter(|s| !listed.contains_key(s))
        .copied()
        .collect();
    missing.sort_unstable();
    check.missing_count = missing.len();
    missing.truncate(20);
    check.missing = missing;
    check
}
