//! The domain the daemon nodes project, and the subscriptions they run, shared by the
//! node binary and the tests.

pub mod nodes;

use std::sync::atomic::{AtomicU64, Ordering};

use marten::prelude::*;
use marten::subscriptions::{
    EventFilter, HandlerError, Subscription, SubscriptionBatch, SubscriptionTx,
};
use marten::DocumentStoreBuilder;
use serde::{Deserialize, Serialize};

/// An event adding to a counter.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
pub struct Added {
    /// How much.
    pub n: i64,
}

/// The aggregate the daemon keeps: the sum and count of a stream's `Added` events.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Counter {
    /// The stream id.
    pub id: Uuid,
    /// The stream version of the last applied event.
    pub version: i64,
    /// The sum.
    pub total: i64,
    /// The count.
    pub count: i64,
}

/// How long each `Counter` apply waits, in microseconds (0: not at all): a node started
/// with `NODE_APPLY_SLEEP_MS` stands for a projection whose apply calls another service.
pub static APPLY_SLEEP_US: AtomicU64 = AtomicU64::new(0);

#[marten::apply]
impl Counter {
    fn apply(&mut self, e: &Added) {
        let sleep = APPLY_SLEEP_US.load(Ordering::Relaxed);
        if sleep > 0 {
            std::thread::sleep(std::time::Duration::from_micros(sleep));
        }
        self.total += e.n;
        self.count += 1;
    }
}

/// How many buckets `Ledger` spreads the streams over.
pub const LEDGER_BUCKETS: u64 = 16;

/// How many global sequences one `Ledger` document of a bucket covers: a bucket's list
/// is paged so that a batch rewrites short documents, not ones that grow with the run.
pub const LEDGER_PAGE: i64 = 5_000;

/// The id of the `Ledger` document an event goes to: `bBB-PPP`, its stream's bucket (a
/// hash of the stream id: FNV-1a over its bytes, not leaning on which bits of a v7 id are
/// random) and the page of its sequence.
pub fn ledger_bucket(stream: &StreamId, sequence: i64) -> String {
    let bytes: &[u8] = match stream {
        StreamId::Uuid(u) => u.as_bytes(),
        StreamId::String(s) => s.as_bytes(),
    };
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "b{:02}-{:03}",
        hash % LEDGER_BUCKETS,
        sequence / LEDGER_PAGE
    )
}

/// A multi-stream projection with no version guard: every `Added` event is counted in
/// the document of its stream's bucket and its sequence's page ([`ledger_bucket`]) and
/// its sequence pushed onto the document's list. `Counter`
/// skips the events at or below the version it has folded, so a batch applied twice
/// leaves it unchanged; here it adds to `count` and repeats sequences, which
/// [`nodes::ledger_check`] reports.
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[concurrency(numeric)]
pub struct Ledger {
    /// The bucket and page ([`ledger_bucket`]).
    pub id: String,
    /// The events applied.
    pub count: i64,
    /// Their global sequences, in the order applied.
    pub sequences: Vec<i64>,
}

#[marten::apply]
impl Ledger {
    fn identity(_e: &Added, meta: &EventEnvelope) -> String {
        ledger_bucket(&meta.stream_id, meta.sequence)
    }
    fn create(_e: &Added, meta: &EventEnvelope) -> Self {
        Ledger {
            id: String::new(),
            count: 1,
            sequences: vec![meta.sequence],
        }
    }
    fn apply(&mut self, _e: &Added, meta: &EventEnvelope) {
        self.count += 1;
        self.sequences.push(meta.sequence);
    }
}

fn builder(url: &str, schema: &str, pool: usize) -> DocumentStoreBuilder {
    DocumentStore::builder()
        .connection_string(url)
        .schema(schema)
        .pool_size(pool)
        .event::<Added>()
        .projection::<Counter>(Lifecycle::Async)
}

/// A store on `schema` with `Counter` as an async projection.
pub async fn store(url: &str, schema: &str, pool: usize) -> marten::Result<DocumentStore> {
    builder(url, schema, pool).build().await
}

/// A store on `schema` with `Counter` and `Ledger` as async projections (a node runs
/// both with `NODE_LEDGER=1`).
pub async fn ledger_store(url: &str, schema: &str, pool: usize) -> marten::Result<DocumentStore> {
    builder(url, schema, pool)
        .multi_stream_projection::<Ledger>(Lifecycle::Async)
        .build()
        .await
}

/// The table the exactly-once subscription fills (no unique key: a duplicate would show).
pub const OUTBOX_DDL: &str =
    "CREATE TABLE IF NOT EXISTS sub_outbox (delivery_id text NOT NULL, sequence bigint NOT NULL)";

/// Fills `sub_outbox` through the transaction that advances its checkpoint (exactly once),
/// sleeping `pause` inside the handler so a test can kill the node there.
pub struct OutboxSubscription {
    /// How long each batch's handler sleeps after queueing its writes.
    pub pause: std::time::Duration,
}

impl Subscription for OutboxSubscription {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event::<Added>()
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        for (id, e) in batch.deliveries() {
            tx.execute("INSERT INTO sub_outbox (delivery_id, sequence) VALUES ($1, $2)")
                .bind(id.to_string())
                .bind(e.sequence);
        }
        tokio::time::sleep(self.pause).await;
        Ok(())
    }
}

/// Acts outside any transaction (at least once): appends a line `first_sequence sequence`
/// per event to a file of its node before the checkpoint moves, sleeping `pause` half-way
/// through the batch so a test can kill the node with part of a batch delivered.
pub struct LogSubscription {
    /// The node's delivery log.
    pub log: std::path::PathBuf,
    /// How long the handler sleeps half-way through each batch.
    pub pause: std::time::Duration,
}

impl LogSubscription {
    fn write(&self, first: i64, events: &[EventEnvelope]) -> Result<(), HandlerError> {
        use std::io::Write;
        let mut lines = String::new();
        for e in events {
            lines.push_str(&format!("{first} {}\n", e.sequence));
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .map_err(|e| HandlerError::new(format!("cannot write the delivery log: {e}")))
    }
}

impl Subscription for LogSubscription {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        let events = batch.events();
        let first = events.first().map_or(0, |e| e.sequence);
        let (a, b) = events.split_at(events.len() / 2);
        self.write(first, a)?;
        tokio::time::sleep(self.pause).await;
        self.write(first, b)
    }
}

/// A store on `schema` with the two subscriptions (and no projection); `log` is this
/// node's delivery log of the at-least-once one.
pub async fn subscription_store(
    url: &str,
    schema: &str,
    pool: usize,
    log: std::path::PathBuf,
    pause: std::time::Duration,
) -> marten::Result<DocumentStore> {
    DocumentStore::builder()
        .connection_string(url)
        .schema(schema)
        .pool_size(pool)
        .event::<Added>()
        .subscription(OutboxSubscription { pause })
        .subscription(LogSubscription { log, pause })
        .build()
        .await
}
