//! Scale curves (issue #18): how the cost of marten's operations grows with the data in
//! the store. The store is seeded by binary `COPY` straight into its tables, level after
//! level (cumulative: seed up to a level, measure, seed more), and measured at each
//! level through the public API:
//!
//! - single-event appends per second, one writer, `synchronous_commit=off`, to random
//!   seeded streams (every tenth stream is an append target, never read), alternating in
//!   blocks with raw tokio-postgres doing the same work into the same tables, so the fall
//!   that comes with the data shows apart from the library's; and the same appends to
//!   100 of those streams at every level (a working set of constant size, spread over
//!   the data), so what the data's size costs shows apart from what writing to more
//!   streams costs;
//! - p50 and p99 of `fetch_stream` of a random ten-event stream, of a `read_all` page of
//!   500 from a random position, of a tag boundary read (`fetch_for_writing_by_tags`, 20
//!   tagged events of a random course) and of `load` by id of a random document, each
//!   twice: cold (right after seeding) and warm (the same reads again);
//! - the daemon's catch-up, events per second, over a window of new events seeded after
//!   the level (its progression row set to the level's last event by SQL first);
//! - bytes per event and per document (tables, indexes, TOAST) against a minimal raw
//!   schema seeded with the same rows, and every index's size.
//!
//! Run: `cargo bench --bench scale`. `MARTEN_SCALE_LEVELS` (default `0,1000000,10000000`)
//! sets the levels in seeded events (a probe of 10,000 events and 1,000 documents is
//! always there; documents follow the events up to `MARTEN_SCALE_DOCS`, default
//! 1,000,000); `MARTEN_SCALE_SECS` (default 3) how long each measurement runs,
//! `MARTEN_SCALE_WINDOW` (default 100,000) the daemon's window, `MARTEN_SCALE_APPENDS`
//! (default 3,000) the appends per side. Prints Markdown tables,
//! writes `bench-results/scale.json` (see `common::report`) and one PNG per curve into
//! `MARTEN_SCALE_PLOTS` (default `docs/bench`), named by the largest level
//! (`scale-10m-append.png`). The schema is dropped at the end.
//! `MARTEN_SCALE_REPLOT=<results file>` prints and plots an earlier run without measuring.

mod common;
#[path = "scale/measure.rs"]
mod measure;
#[path = "scale/model.rs"]
mod model;
#[path = "scale/output.rs"]
mod output;
#[path = "scale/plot.rs"]
mod plot;
#[path = "scale/seed.rs"]
mod seed;
#[path = "scale/storage.rs"]
mod storage;

use std::time::{Duration, Instant};

use common::env_number;
use marten::prelude::*;
use marten_testing::TestSchema;
use tokio_postgres::{Client, NoTls};

use measure::{Budget, Latency};
use model::{Customer, OrderPlaced, StudentEnrolled, Tally};
use seed::Seeded;

/// Events seeded before the first level, so that every read has something to read.
const PROBE_EVENTS: u64 = 10_000;
/// Documents seeded before the first level.
const PROBE_DOCS: u64 = 1_000;

/// The figures of one level.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Level {
    /// The level asked for (seeded events beyond the probe).
    pub level: u64,
    /// Events in the store when the reads were measured.
    pub events: u64,
    /// Documents in the store.
    pub documents: u64,
    /// Appends per second, marten and raw, alternating.
    pub append: measure::Appends,
    /// The same, to [`measure::HOT_STREAMS`] streams at every level (absent from the
    /// results of runs before it).
    #[serde(default)]
    pub append_hot: measure::Appends,
    pub daemon_events_per_s: f64,
    /// The reads, the first time they touch their pages (cold: the level was just seeded).
    pub cold: Reads,
    /// The same reads again (the same streams, pages, courses and documents): warm.
    pub warm: Reads,
    pub storage: storage::Storage,
}

/// The latencies of the reads at one level, in one pass.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Reads {
    pub fetch_stream: Latency,
    pub read_all: Latency,
    pub tag_boundary: Latency,
    pub load: Latency,
}

/// One pass of the reads.
async fn reads(store: &DocumentStore, raw: &Client, seeded: &Seeded, budget: &Budget) -> Reads {
    Reads {
        fetch_stream: measure::fetch_stream(store, seeded, budget).await,
        read_all: measure::read_all(store, raw, budget).await,
        tag_boundary: measure::tag_boundary(store, seeded, budget).await,
        load: measure::load(store, seeded, budget).await,
    }
}

fn levels() -> Vec<u64> {
    let spec =
        std::env::var("MARTEN_SCALE_LEVELS").unwrap_or_else(|_| "0,1000000,10000000".to_owned());
    let mut levels: Vec<u64> = spec
        .split(',')
        .map(|l| {
            l.trim()
                .replace('_', "")
                .parse()
                .expect("MARTEN_SCALE_LEVELS: numbers")
        })
        .collect();
    levels.sort_unstable();
    levels
}

async fn raw_client(url: &str, schema: &str) -> Client {
    let mut config: tokio_postgres::Config = url.parse().expect("url");
    let opts = config.get_options().unwrap_or("").to_owned();
    config.options(format!("{opts} -c search_path={schema}"));
    let (client, conn) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// Seeds up to `level` (beyond the probe) and the documents that go with it.
async fn seed_to(raw: &mut Client, seeded: &mut Seeded, level: u64, max_docs: u64) {
    let start = Instant::now();
    let target = PROBE_EVENTS + level;
    if seeded.events < target {
        seed::events(raw, seeded, target - seeded.events).await;
    }
    let docs = level.clamp(PROBE_DOCS, max_docs.max(PROBE_DOCS));
    seed::documents(raw, seeded, docs).await;
    raw.batch_execute("VACUUM ANALYZE mt_events, mt_streams, mt_event_tags, mt_doc_customer")
        .await
        .expect("vacuum");
    // The seeding's dirty pages written out now, not by a checkpoint in the middle of the
    // measurements (a 10-million-event seed leaves gigabytes of them).
    raw.batch_execute("CHECKPOINT").await.expect("checkpoint");
    eprintln!(
        "seeded {} events, {} documents ({:.0} s)",
        seeded.events,
        seeded.docs.len(),
        start.elapsed().as_secs_f64()
    );
}

async fn measure_level(
    store: &DocumentStore,
    raw: &mut Client,
    seeded: &mut Seeded,
    level: u64,
    budget: &Budget,
    window: u64,
    appends: usize,
) -> Level {
    let schema = store.schema().to_owned();
    let cold = reads(store, raw, seeded, budget).await;
    let warm = reads(store, raw, seeded, budget).await;
    let storage = storage::measure(raw, &schema).await;
    let append = measure::append(store, raw, &seeded.append_streams, appends).await;
    let append_hot = measure::append(store, raw, &measure::hot_targets(seeded), appends).await;
    let daemon_events_per_s = measure::daemon(store, raw, seeded, window).await;
    let l = Level {
        level,
        events: storage.per_event.rows as u64,
        documents: storage.per_doc.rows as u64,
        append,
        append_hot,
        daemon_events_per_s,
        cold,
        warm,
        storage,
    };
    eprintln!("{l:?}");
    l
}

async fn run(levels: &[u64]) -> Vec<Level> {
    let base = marten_testing::database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20synchronous_commit%3Doff");
    let schema = TestSchema::new("bench_scale");
    let store = DocumentStore::builder()
        .connection_string(&url)
        .ssl_mode(marten::SslMode::Disable)
        .schema(schema.name())
        .pool_size(4)
        .stream_identity(StreamIdentity::Uuid)
        .event::<OrderPlaced>()
        .event::<StudentEnrolled>()
        .document::<Customer>()
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await
        .expect("store");
    let mut raw = raw_client(&url, schema.name()).await;
    raw.batch_execute(seed::RAW_DDL).await.expect("raw schema");
    let budget = Budget {
        time: Duration::from_secs(env_number("MARTEN_SCALE_SECS").unwrap_or(3) as u64),
        ops: 20_000,
    };
    let window = env_number("MARTEN_SCALE_WINDOW").unwrap_or(100_000) as u64;
    let appends = env_number("MARTEN_SCALE_APPENDS").unwrap_or(3_000);
    let max_docs = env_number("MARTEN_SCALE_DOCS").unwrap_or(1_000_000) as u64;
    let mut seeded = Seeded::default();
    let mut out = Vec::new();
    for (i, &level) in levels.iter().enumerate() {
        seed_to(&mut raw, &mut seeded, level, max_docs).await;
        if i == 0 {
            // The progression row exists from here on; later windows move it by SQL.
            measure::daemon_once(&store).await;
        }
        out.push(
            measure_level(
                &store,
                &mut raw,
                &mut seeded,
                level,
                &budget,
                window,
                appends,
            )
            .await,
        );
    }
    store.close();
    drop(raw);
    out
}

/// Where the plots go: `MARTEN_SCALE_PLOTS`, default `docs/bench`.
fn plots_dir() -> std::path::PathBuf {
    std::env::var_os("MARTEN_SCALE_PLOTS").map_or_else(
        || concat!(env!("CARGO_MANIFEST_DIR"), "/docs/bench").into(),
        std::path::PathBuf::from,
    )
}

fn main() {
    // A run's results again, from its JSON: the tables and plots without measuring.
    if let Some(json) = std::env::var_os("MARTEN_SCALE_REPLOT") {
        let text = std::fs::read_to_string(&json).expect("MARTEN_SCALE_REPLOT: a results file");
        let results: Vec<Level> =
            serde_json::from_str(&text).expect("MARTEN_SCALE_REPLOT: the scale results");
        output::print(&results);
        output::plots(&plots_dir(), &results);
        return;
    }
    let levels = levels();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(run(&levels));
    output::print(&results);
    common::report::write_json("scale", &results);
    output::plots(&plots_dir(), &results);
}
