//! The benchmark harness: marten against raw tokio-postgres doing the same SQL work, in
//! one process and one run, reported as ratios (median of paired repetitions) with
//! `synchronous_commit` on (durable) and off (the library's own overhead shows).
//!
//! Scenarios on one connection (single stores, loads, appends, stream starts) run both
//! sides in alternating blocks of [`BLOCK`] operations within each repetition, so the two
//! see the same machine; the rest run each side whole, alternating which goes first.
//!
//! Run: `cargo bench --bench documents` (about eight minutes). `MARTEN_BENCH_QUICK=1` runs
//! a short smoke version; `MARTEN_BENCH_ONLY=append,start` runs only the scenarios whose
//! names contain one of the given words; `MARTEN_BENCH_REPS=n` sets the repetitions
//! (default 11) and `MARTEN_BENCH_SCALE=n` the work per repetition (default 2);
//! `MARTEN_BENCH_POOLER=1` builds the stores with `Pooler::Transaction` (unnamed
//! statements; no pooler in between). Results go
//! to BENCHMARKS.md by hand.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::counter::{tick, Counter, Ticked};
use common::inline::RawInline;
use common::report::Report;
use common::{env_number, interleaved, interleaved_warm, time, wanted, Row};

use marten::prelude::*;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Doc {
    id: Uuid,
    name: String,
    n: i64,
    tags: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct VDoc {
    id: Uuid,
    name: String,
    n: i64,
    tags: Vec<String>,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Tally {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, e: &Ticked) {
        self.total += e.n;
    }
}

/// A fold-heavy aggregate: each apply does about 100 µs of arithmetic, so the
/// daemon's time goes to folding and parallel fold workers can show.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Heavy {
    id: Uuid,
    version: i64,
    hash: u64,
}

#[marten::apply]
impl Heavy {
    fn apply(&mut self, e: &Ticked) {
        let mut h = self.hash ^ e.n as u64;
        for i in 0..100_000u64 {
            h = std::hint::black_box(h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
        self.hash = h;
    }
}

/// When a daemon's work started and ended: its first batch and its last commit, so that
/// start-up and the staleness poll do not count in its rate.
#[derive(Default)]
struct Clock {
    first_batch: std::sync::Mutex<Option<Instant>>,
    last_commit: std::sync::Mutex<Option<Instant>>,
}

#[derive(Clone, Default)]
struct ClockHooks(Arc<Clock>);

impl marten::daemon::DaemonHooks for ClockHooks {
    fn before_batch(&self, _projection: &str) {
        let mut first = self.0.first_batch.lock().expect("clock");
        first.get_or_insert_with(Instant::now);
    }

    fn after_commit(&self, _projection: &str, _sequences: &[i64]) {
        *self.0.last_commit.lock().expect("clock") = Some(Instant::now());
    }

    fn reads_event_metadata(&self) -> bool {
        false
    }
}

impl ClockHooks {
    /// Events per second between the first batch and the last commit.
    fn rate(&self, events: i64) -> f64 {
        let first = self
            .0
            .first_batch
            .lock()
            .expect("clock")
            .expect("a batch ran");
        let last = self
            .0
            .last_commit
            .lock()
            .expect("clock")
            .expect("a batch committed");
        events as f64 / (last - first).as_secs_f64()
    }
}

/// Rebuilds `projection` of `store` from the start with `workers` fold workers; its
/// events per second from the first batch to the last commit.
async fn catch_up_rate(store: &DocumentStore, projection: &str, workers: usize, total: i64) -> f64 {
    marten::daemon::rebuild(store, projection)
        .await
        .expect("reset");
    let clock = ClockHooks::default();
    let daemon = marten::daemon::Daemon::start(
        store,
        marten::daemon::DaemonOptions {
            workers,
            ..Default::default()
        }
        .with_hooks(clock.clone()),
    );
    daemon
        .wait_for_non_stale(std::time::Duration::from_secs(300))
        .await
        .expect("catch up");
    daemon.stop().await.expect("stop");
    clock.rate(total)
}

/// The raw referent of the daemon's catch-up: the same events read in the gap-safe global
/// order, 500 at a time, folded in Rust and written with `unnest` per page; events per
/// second.
async fn raw_catch_up(raw: &Client, total: i64) -> f64 {
    raw.batch_execute("CREATE TABLE IF NOT EXISTS raw_tally (id uuid PRIMARY KEY, data jsonb NOT NULL); TRUNCATE raw_tally")
        .await
        .expect("raw table");
    let upsert = raw
        .prepare("INSERT INTO raw_tally (id, data) SELECT * FROM unnest($1::uuid[], $2::jsonb[]) ON CONFLICT (id) DO UPDATE SET data = excluded.data")
        .await
        .expect("prepare");
    let start = Instant::now();
    let mut state: std::collections::HashMap<Uuid, (i64, i64)> = std::collections::HashMap::new();
    let mut after: (String, i64) = ("0".into(), 0);
    loop {
        let rows = raw
            .query(
                "SELECT e.stream_id, e.version, e.data, e.tx_id::text AS tx_text, e.seq_id FROM mt_events e \
                 WHERE e.tx_id < pg_snapshot_xmin(pg_current_snapshot()) AND (e.tx_id, e.seq_id) > ($1::text::xid8, $2) \
                 ORDER BY e.tx_id, e.seq_id LIMIT 500",
                &[&after.0, &after.1],
            )
            .await
            .expect("raw read");
        if rows.is_empty() {
            break;
        }
        let mut touched = Vec::new();
        for r in &rows {
            let id: Uuid = r.get(0);
            let t: Ticked =
                serde_json::from_value(r.get::<_, serde_json::Value>(2)).expect("decode");
            let e = state.entry(id).or_default();
            e.0 += t.n;
            e.1 = r.get(1);
            touched.push(id);
            after = (r.get(3), r.get(4));
        }
        touched.sort();
        touched.dedup();
        let data: Vec<serde_json::Value> = touched
            .iter()
            .map(|id| serde_json::json!({"id": id, "version": state[id].1, "total": state[id].0}))
            .collect();
        raw.execute(&upsert, &[&touched, &data])
            .await
            .expect("raw write");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Catch-up throughput of the daemon with 1 and 2 fold workers against the raw fold of
/// the same events ([`raw_catch_up`]), `reps` pairs each, the sides' order alternating; and
/// the speed-up of two fold workers over one with a fold-heavy projection (one run).
async fn daemon_catch_up(
    url: &str,
    sync: &str,
    events_total: usize,
    reps: usize,
) -> (Vec<Row>, Vec<(String, f64, f64)>) {
    let schema = TestSchema::new(&format!("bench_daemon_{sync}"));
    let store = DocumentStore::builder()
        .connection_string(url)
        .ssl_mode(marten::SslMode::Disable) // as the raw baseline (NoTls)
        .schema(schema.name())
        .pool_size(8)
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await
        .expect("store");
    let streams: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    for chunk in 0..(events_total / 2000).max(1) {
        for id in &streams {
            let events: Vec<Ticked> = (0..10).map(|i| tick(i + chunk as i64)).collect();
            s.events().append(*id, events).expect("append");
        }
        s.save_changes().await.expect("save");
    }
    let setup = Setup {
        url: url.to_owned(),
        schema,
    };
    let raw = setup.raw().await;
    let total: i64 = raw
        .query_one("SELECT count(*) FROM mt_events", &[])
        .await
        .expect("count")
        .get(0);
    let mut rows = Vec::new();
    for workers in [1usize, 2] {
        let mut row = Row {
            name: format!("daemon catch-up, {workers} worker(s)"),
            lib: Vec::new(),
            raw: Vec::new(),
            unit: "events/s",
        };
        for rep in 0..reps {
            tokio::time::sleep(std::time::Duration::from_millis(common::SETTLE_MS)).await;
            if rep % 2 == 0 {
                row.lib
                    .push(catch_up_rate(&store, "Tally", workers, total).await);
                row.raw.push(raw_catch_up(&raw, total).await);
            } else {
                row.raw.push(raw_catch_up(&raw, total).await);
                row.lib
                    .push(catch_up_rate(&store, "Tally", workers, total).await);
            }
        }
        rows.push(row);
    }
    // The same events, a fold-heavy projection: two fold workers against one.
    let heavy = DocumentStore::builder()
        .connection_string(url)
        .ssl_mode(marten::SslMode::Disable)
        .schema(setup.schema.name())
        .pool_size(8)
        .projection::<Heavy>(Lifecycle::Async)
        .build()
        .await
        .expect("store");
    let one = catch_up_rate(&heavy, "Heavy", 1, total).await;
    let two = catch_up_rate(&heavy, "Heavy", 2, total).await;
    let singles = vec![(
        "daemon catch-up, fold-heavy: 2 workers (vs 1 worker)".to_owned(),
        two,
        one,
    )];
    (rows, singles)
}

fn doc(i: i64) -> Doc {
    Doc {
        id: Uuid::now_v7(),
        name: format!("document number {i}"),
        n: i,
        tags: vec!["alpha".into(), "beta".into()],
    }
}

struct Setup {
    url: String,
    schema: TestSchema,
}

impl Setup {
    async fn raw(&self) -> Client {
        let mut config: tokio_postgres::Config = self.url.parse().expect("url");
        let opts = config.get_options().unwrap_or("").to_owned();
        config.options(format!("{opts} -c search_path={}", self.schema.name()));
        let (client, conn) = config.connect(NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    /// A new store ([`Setup::store`]) and a new raw connection, opened in turn order.
    async fn store_and_raw(&self, inline: bool, lib_first: bool) -> (DocumentStore, Client) {
        if lib_first {
            let store = self.store(inline).await;
            (store, self.raw().await)
        } else {
            let raw = self.raw().await;
            (self.store(inline).await, raw)
        }
    }

    async fn store(&self, inline: bool) -> DocumentStore {
        let mut b = DocumentStore::builder()
            .connection_string(&self.url)
            .ssl_mode(marten::SslMode::Disable) // as the raw baseline (NoTls)
            .schema(self.schema.name())
            .pool_size(16)
            .document::<Doc>()
            .document::<VDoc>()
            .event::<Ticked>();
        if inline {
            b = b.projection::<Counter>(Lifecycle::Inline);
        }
        if std::env::var_os("MARTEN_BENCH_NO_REQUEST_TIMEOUT").is_some() {
            // What the request timeout's timer costs a lone request.
            b = b.request_timeout(None);
        }
        if std::env::var_os("MARTEN_BENCH_POOLER").is_some() {
            // The pooler setting, without a pooler: unnamed statements, parsed each time.
            b = b.pooler(marten::Pooler::Transaction).direct_url(&self.url);
        }
        b.build().await.expect("store")
    }
}

/// What the lone rows (single stores, loads, one writer's appends, live folds) run on in one
/// repetition: a store and a raw connection opened for it, with the raw side's statements.
/// New connections every repetition: one connection (its server process, where the
/// scheduler puts it) can run a few per cent faster than another doing the same work, and
/// a side kept on one for the whole run would carry that into every ratio.
struct Lone {
    store: DocumentStore,
    raw: Client,
    upsert: tokio_postgres::Statement,
    upsert_v: tokio_postgres::Statement,
    load: tokio_postgres::Statement,
    append: tokio_postgres::Statement,
    read_stream: tokio_postgres::Statement,
}

impl Lone {
    /// Opens the store's first connection and the raw one, in turn order (`lib_first`).
    async fn open(setup: &Setup, lib_first: bool) -> Lone {
        let (store, raw) = setup.store_and_raw(false, lib_first).await;
        let prepare = async |sql: &str| raw.prepare(sql).await.expect("prepare");
        Lone {
            upsert: prepare(UPSERT).await,
            upsert_v: prepare(UPSERT_V).await,
            load: prepare(LOAD).await,
            append: prepare(&common::raw_append_sql("ticked")).await,
            read_stream: prepare(READ_STREAM).await,
            store,
            raw,
        }
    }
}

/// The raw side's statements of the lone rows.
const UPSERT: &str = "INSERT INTO mt_doc_doc AS d (id, data, mt_last_modified) VALUES ($1, $2, now()) ON CONFLICT (id) DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified";
const UPSERT_V: &str = "INSERT INTO mt_doc_vdoc AS d (id, data, mt_version, mt_last_modified) VALUES ($1, $2, $3, now()) ON CONFLICT (id) DO UPDATE SET data = excluded.data, mt_version = excluded.mt_version, mt_last_modified = excluded.mt_last_modified";
const LOAD: &str = "SELECT data FROM mt_doc_doc WHERE id = $1";
const READ_STREAM: &str =
    "SELECT data FROM mt_events WHERE stream_id = $1 AND NOT is_archived ORDER BY version";

/// The inline projection row's two sides in one repetition, on connections opened for it
/// (as [`Lone`]'s). Each side appends to streams of its own: a stream the raw side
/// appended to would be stale in the store's aggregate cache, and the library's next
/// append to it would plan again from a locked read, work the raw side never does.
struct Inline {
    store: DocumentStore,
    raw: Client,
    referent: RawInline,
}

impl Inline {
    /// Opens the inline store's first connection and the raw one, in turn order.
    async fn open(setup: &Setup, lib_first: bool) -> Inline {
        let (store, raw) = setup.store_and_raw(true, lib_first).await;
        Inline {
            referent: RawInline::prepare(&raw).await,
            store,
            raw,
        }
    }

    /// The raw side's append of event `i` to `stream`.
    async fn raw_append(&self, stream: Uuid, i: usize) {
        let event = tick(i as i64);
        self.referent.append(&self.raw, stream, &event).await;
    }
}

async fn run(sync: &str, reps: usize, scale: usize) -> Vec<Row> {
    let base = marten_testing::database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20synchronous_commit%3D{sync}");
    let setup = Setup {
        url,
        schema: TestSchema::new(&format!("bench_{sync}")),
    };
    let store = setup.store(false).await;
    let inline_setup = Setup {
        url: setup.url.clone(),
        schema: TestSchema::new(&format!("bench_inline_{sync}")),
    };
    let inline_store = inline_setup.store(true).await;
    let raw = setup.raw().await;
    // Make sure the event tables exist for the raw side too.
    let mut warm = store.lightweight_session();
    warm.events()
        .append(Uuid::now_v7(), [tick(0)])
        .expect("append");
    warm.save_changes().await.expect("warm");
    drop(warm);
    let mut warm = inline_store.lightweight_session();
    warm.events()
        .append(Uuid::now_v7(), [tick(0)])
        .expect("append");
    warm.save_changes().await.expect("warm");
    drop(warm);
    let check: String = raw
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(check, sync, "raw connection setting");

    let upsert_many = raw
        .prepare("INSERT INTO mt_doc_doc AS d (id, data, mt_last_modified) SELECT i.id, i.data, now() FROM unnest($1::uuid[], $2::jsonb[]) AS i(id, data) ON CONFLICT (id) DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified")
        .await
        .expect("prepare");
    // What an append does (the lone append's work, as raw SQL).
    let append_upsert_sql = common::raw_append_sql("ticked");
    let start_sql = "WITH s AS (INSERT INTO mt_streams (id, version, last_tx) VALUES ($1, 10, pg_current_xact_id()) \
         RETURNING version, last_tx) \
         INSERT INTO mt_events (id, stream_id, version, type, data, tx_id) \
         SELECT i.id, $1, i.ord, 'ticked', i.data, s.last_tx FROM s, unnest($2::uuid[], $3::jsonb[]) WITH ORDINALITY AS i(id, data, ord)";
    let start = raw.prepare(start_sql).await.expect("prepare");
    let typed_raw = raw
        .prepare("SELECT data FROM mt_doc_doc WHERE (data ->> 'n')::numeric < $1::text::numeric AND (data ->> 'n')::numeric >= $2::text::numeric ORDER BY (data ->> 'n')::numeric, id")
        .await
        .expect("prepare");
    // Eight raw writers, connected once like the store's pooled connections.
    let mut raw_writers = Vec::new();
    for _ in 0..8 {
        let c = Arc::new(setup.raw().await);
        let stmt = c.prepare(&append_upsert_sql).await.expect("prepare");
        raw_writers.push((c, stmt));
    }
    // Existing documents to load, and streams to append to.
    let mut s = store.lightweight_session();
    let ids: Vec<Uuid> = (0..200).map(|i| s.store(doc(i)).expect("store")).collect();
    s.save_changes().await.expect("seed");
    let streams: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    for id in &streams {
        s.events().start_stream(*id, [tick(1)]).expect("start");
    }
    s.save_changes().await.expect("seed streams");
    let long_stream = Uuid::now_v7();
    let events: Vec<Ticked> = (0..1000).map(tick).collect();
    s.events().start_stream(long_stream, events).expect("start");
    s.save_changes().await.expect("long stream");
    // The inline row's streams: the library's and the raw side's.
    let inline_streams: [Vec<Uuid>; 2] = [0, 1].map(|_| (0..50).map(|_| Uuid::now_v7()).collect());
    let mut si = inline_store.lightweight_session();
    for id in inline_streams.iter().flatten() {
        si.events().start_stream(*id, [tick(1)]).expect("start");
    }
    si.save_changes().await.expect("seed inline");
    // Seeding is over: give its connections back to the pools, so the writers below
    // never wait for one.
    drop((s, si));

    let mut rows = vec![
        Row {
            name: "store 1 doc / tx (off)".into(),
            lib: vec![],
            raw: vec![],
            unit: "docs/s",
        },
        Row {
            name: "store 1 doc / tx (optimistic)".into(),
            lib: vec![],
            raw: vec![],
            unit: "docs/s",
        },
        Row {
            name: "store 100 docs / tx".into(),
            lib: vec![],
            raw: vec![],
            unit: "docs/s",
        },
        Row {
            name: "load by id".into(),
            lib: vec![],
            raw: vec![],
            unit: "loads/s",
        },
        Row {
            name: "append 1 event / tx, 1 writer".into(),
            lib: vec![],
            raw: vec![],
            unit: "events/s",
        },
        Row {
            name: "append 1 event / tx, 8 writers".into(),
            lib: vec![],
            raw: vec![],
            unit: "events/s",
        },
        Row {
            name: "start streams of 10 events".into(),
            lib: vec![],
            raw: vec![],
            unit: "events/s",
        },
        Row {
            name: "append 1 event / tx with an inline projection".into(),
            lib: vec![],
            raw: vec![],
            unit: "events/s",
        },
        Row {
            name: "live aggregation of a 1,000-event stream".into(),
            lib: vec![],
            raw: vec![],
            unit: "events/s",
        },
        Row {
            name: "typed query: filter + order, 20 of 200 docs".into(),
            lib: vec![],
            raw: vec![],
            unit: "queries/s",
        },
    ];
    let single = 300 * scale;
    let batches = 10 * scale;
    let loads = 600 * scale;
    let appends = 300 * scale;
    let per_writer = 60 * scale;
    let starts = if scale == 1 { 100 } else { 1000 };
    let folds = 20 * scale;

    for rep in 0..reps {
        // Alternate which side goes first.
        let lib_first = rep % 2 == 0;
        macro_rules! pair {
            ($row:expr, $lib:expr, $raw:expr) => {{
                if !wanted(&rows[$row].name) {
                } else if lib_first {
                    let l = $lib;
                    let r = $raw;
                    rows[$row].lib.push(l);
                    rows[$row].raw.push(r);
                } else {
                    let r = $raw;
                    let l = $lib;
                    rows[$row].lib.push(l);
                    rows[$row].raw.push(r);
                }
            }};
        }
        let mut session = store.lightweight_session();
        let lone = Lone::open(&setup, lib_first).await;
        let mut lone_session = lone.store.lightweight_session();
        if wanted(&rows[0].name) {
            let (l, r) = interleaved_warm(
                single,
                lib_first,
                async |i| {
                    lone_session.store(doc(i as i64)).expect("store");
                    lone_session.save_changes().await.expect("save");
                },
                async |i| {
                    let d = doc(i as i64);
                    let json = marten_pg_json(&d);
                    lone.raw
                        .execute(&lone.upsert, &[&d.id, &json])
                        .await
                        .expect("raw");
                },
            )
            .await;
            rows[0].lib.push(l);
            rows[0].raw.push(r);
        }
        if wanted(&rows[1].name) {
            let (l, r) = interleaved_warm(
                single,
                lib_first,
                async |i| {
                    let d = doc(i as i64);
                    lone_session
                        .store(VDoc {
                            id: d.id,
                            name: d.name,
                            n: d.n,
                            tags: d.tags,
                        })
                        .expect("store");
                    lone_session.save_changes().await.expect("save");
                },
                async |i| {
                    let d = doc(i as i64);
                    let json = marten_pg_json(&d);
                    lone.raw
                        .execute(&lone.upsert_v, &[&d.id, &json, &Uuid::new_v4()])
                        .await
                        .expect("raw");
                },
            )
            .await;
            rows[1].lib.push(l);
            rows[1].raw.push(r);
        }
        pair!(
            2,
            time(batches * 100, || async {
                for b in 0..batches {
                    for i in 0..100 {
                        session.store(doc((b * 100 + i) as i64)).expect("store");
                    }
                    session.save_changes().await.expect("save");
                }
            })
            .await,
            time(batches * 100, || async {
                for b in 0..batches {
                    let docs: Vec<Doc> = (0..100).map(|i| doc((b * 100 + i) as i64)).collect();
                    let ids: Vec<Uuid> = docs.iter().map(|d| d.id).collect();
                    let jsons: Vec<serde_json::Value> = docs.iter().map(marten_pg_json).collect();
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&ids, &jsons];
                    let (a, b2, c) = tokio::join!(
                        raw.batch_execute("BEGIN"),
                        raw.execute(&upsert_many, &params),
                        raw.batch_execute("COMMIT")
                    );
                    a.and(b2.map(|_| ())).and(c).expect("raw batch");
                }
            })
            .await
        );
        if wanted(&rows[3].name) {
            let (l, r) = interleaved_warm(
                loads,
                lib_first,
                async |i| {
                    let d: Option<Doc> =
                        lone_session.load(&ids[i % ids.len()]).await.expect("load");
                    assert!(d.is_some());
                },
                async |i| {
                    let row = lone
                        .raw
                        .query_one(&lone.load, &[&ids[i % ids.len()]])
                        .await
                        .expect("raw");
                    let v: serde_json::Value = row.get(0);
                    let d: Doc = serde_json::from_value(v).expect("decode");
                    assert_eq!(d.tags.len(), 2);
                },
            )
            .await;
            rows[3].lib.push(l);
            rows[3].raw.push(r);
        }
        if wanted(&rows[4].name) {
            let (l, r) = interleaved_warm(
                appends,
                lib_first,
                async |i| {
                    lone_session
                        .events()
                        .append(streams[i % streams.len()], [tick(i as i64)])
                        .expect("append");
                    lone_session.save_changes().await.expect("save");
                },
                async |i| {
                    let data = serde_json::to_value(tick(i as i64)).expect("json");
                    let n = lone
                        .raw
                        .execute(
                            &lone.append,
                            &[&streams[i % streams.len()], &Uuid::now_v7(), &data],
                        )
                        .await
                        .expect("raw");
                    assert_eq!(n, 1);
                },
            )
            .await;
            rows[4].lib.push(l);
            rows[4].raw.push(r);
        }
        pair!(
            5,
            {
                let store = store.clone();
                let streams = streams.clone();
                time(8 * per_writer, || async move {
                    let tasks: Vec<_> = (0..8)
                        .map(|w| {
                            let store = store.clone();
                            let stream = streams[w];
                            tokio::spawn(async move {
                                let mut s = store.lightweight_session();
                                for i in 0..per_writer {
                                    s.events().append(stream, [tick(i as i64)]).expect("append");
                                    s.save_changes().await.expect("save");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("writer");
                    }
                })
                .await
            },
            {
                let streams = streams.clone();
                let writers = raw_writers.clone();
                time(8 * per_writer, || async move {
                    let tasks: Vec<_> = writers
                        .into_iter()
                        .enumerate()
                        .map(|(w, (c, stmt))| {
                            let stream = streams[w];
                            tokio::spawn(async move {
                                for i in 0..per_writer {
                                    let data = serde_json::to_value(tick(i as i64)).expect("json");
                                    c.execute(&stmt, &[&stream, &Uuid::now_v7(), &data])
                                        .await
                                        .expect("raw");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("writer");
                    }
                })
                .await
            }
        );
        if wanted(&rows[6].name) {
            let (l, r) = interleaved(
                starts,
                lib_first,
                async |_| {
                    let events: Vec<Ticked> = (0..10).map(tick).collect();
                    session
                        .events()
                        .start_stream(Uuid::now_v7(), events)
                        .expect("start");
                    session.save_changes().await.expect("save");
                },
                async |_| {
                    let ids: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
                    let data: Vec<serde_json::Value> = (0..10)
                        .map(|i| serde_json::to_value(tick(i)).expect("json"))
                        .collect();
                    raw.execute(&start, &[&Uuid::now_v7(), &ids, &data])
                        .await
                        .expect("raw");
                },
            )
            .await;
            // Ten events per stream.
            rows[6].lib.push(l * 10.0);
            rows[6].raw.push(r * 10.0);
        }
        if wanted(&rows[7].name) {
            let inline = Inline::open(&inline_setup, lib_first).await;
            let mut session = inline.store.lightweight_session();
            let [lib_streams, raw_streams] = &inline_streams;
            // Untimed, one append to each stream of each side: the library's aggregate
            // cache holds its streams' documents, as it would after its first appends.
            for (i, (l, r)) in lib_streams.iter().zip(raw_streams).enumerate() {
                session
                    .events()
                    .append(*l, [tick(i as i64)])
                    .expect("append");
                session.save_changes().await.expect("save");
                inline.raw_append(*r, i).await;
            }
            let (l, r) = common::interleaved(
                appends,
                lib_first,
                async |i| {
                    let stream = lib_streams[i % lib_streams.len()];
                    session
                        .events()
                        .append(stream, [tick(i as i64)])
                        .expect("append");
                    session.save_changes().await.expect("save");
                },
                async |i| {
                    inline
                        .raw_append(raw_streams[i % raw_streams.len()], i)
                        .await
                },
            )
            .await;
            rows[7].lib.push(l);
            rows[7].raw.push(r);
        }
        if wanted(&rows[8].name) {
            let (l, r) = interleaved_warm(
                folds,
                lib_first,
                async |_| {
                    let c: Counter = lone_session
                        .events()
                        .aggregate_stream(long_stream)
                        .await
                        .expect("fold")
                        .expect("c");
                    assert_eq!(c.version, 1000);
                },
                async |_| {
                    let rows = lone
                        .raw
                        .query(&lone.read_stream, &[&long_stream])
                        .await
                        .expect("raw");
                    let mut total = 0;
                    for r in &rows {
                        let v: serde_json::Value = r.get(0);
                        let t: Ticked = serde_json::from_value(v).expect("decode");
                        total += t.n;
                    }
                    assert!(total > 0);
                },
            )
            .await;
            // Folds of 1,000 events: events per second.
            rows[8].lib.push(l * 1000.0);
            rows[8].raw.push(r * 1000.0);
        }
        let queries = 200 * scale;
        pair!(
            9,
            time(queries, || async {
                for _ in 0..queries {
                    let found = session
                        .query::<Doc>()
                        .filter(|f| f.n.lt(20).and(f.n.ge(0)))
                        .order_by(|f| f.n.asc())
                        .to_list()
                        .await
                        .expect("query");
                    assert!(found.len() >= 20);
                }
            })
            .await,
            time(queries, || async {
                for _ in 0..queries {
                    let rows = raw.query(&typed_raw, &[&"20", &"0"]).await.expect("raw");
                    let docs: Vec<Doc> = rows
                        .iter()
                        .map(|r| {
                            serde_json::from_value(r.get::<_, serde_json::Value>(0))
                                .expect("decode")
                        })
                        .collect();
                    assert!(docs.len() >= 20);
                }
            })
            .await
        );
    }
    rows
}

/// The document as the raw side sends it: serialized by serde, bound as jsonb.
fn marten_pg_json<T: Serialize>(doc: &T) -> serde_json::Value {
    serde_json::to_value(doc).expect("json")
}

fn main() -> std::process::ExitCode {
    let quick = std::env::var("MARTEN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let (reps, scale) = if quick { (5, 1) } else { (11, 2) };
    let reps = env_number("MARTEN_BENCH_REPS").unwrap_or(reps);
    let scale = env_number("MARTEN_BENCH_SCALE").unwrap_or(scale);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| scenario | synchronous_commit | marten | raw tokio-postgres | ratio (median) | IQR |"
    );
    println!("|---|---|---|---|---|---|");
    let base = marten_testing::database_url();
    let mut report = Report::new("documents", quick);
    for sync in common::sync_settings() {
        let rows = rt.block_on(run(sync, reps, scale));
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20synchronous_commit%3D{sync}");
        let (catch_up_rows, catch_up) = if wanted("daemon catch-up") {
            let events = if quick { 10_000 } else { 50_000 * scale };
            let reps = if quick { 1 } else { reps.min(9) };
            rt.block_on(daemon_catch_up(&url, sync, events, reps))
        } else {
            (Vec::new(), Vec::new())
        };
        for (name, lib, raw) in catch_up {
            let e = report.add_single(&name, sync, "events/s", lib, raw);
            let referent = if name.contains("fold-heavy") {
                "1 worker"
            } else {
                "raw fold"
            };
            println!(
                "| {name} | {sync} | {lib:.0} events/s | {raw:.0} ({referent}) | {:.2} | single run |",
                e.ratio
            );
        }
        for row in catch_up_rows
            .into_iter()
            .chain(rows)
            .filter(|r| !r.lib.is_empty())
        {
            let referent = if row.name.contains("inline projection") {
                "raw: lock, fold, append + upsert"
            } else if row.name.contains("catch-up") {
                "raw fold"
            } else {
                "raw"
            };
            let e = report.add(&row, sync);
            println!(
                "| {} | {sync} | {:.0} {} | {:.0} ({referent}) | {:.2} | {:.2}-{:.2} |",
                e.scenario, e.marten, e.unit, e.referent, e.ratio, e.ratio_q1, e.ratio_q3
            );
        }
    }
    report.finish()
}
