//! Latency under concurrency: p50, p99 and p999 of single saves and single-event appends
//! with eight writers at once, marten against raw tokio-postgres doing the same
//! statement on eight connections of its own, with `synchronous_commit` on and off.
//!
//! Run: `cargo bench --bench latency`. `MARTEN_BENCH_REPS=n` sets the repetitions
//! (default 3; each side runs `MARTEN_BENCH_OPS` operations per writer, default 300, per
//! repetition, the sides alternating which goes first), `MARTEN_BENCH_ONLY=save` selects
//! scenarios. Prints a Markdown table for `BENCHMARKS.md`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_number, wanted};
use marten::prelude::*;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls, Statement};

const WRITERS: usize = 8;

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Doc {
    id: Uuid,
    name: String,
    n: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "ticked")]
struct Ticked {
    n: i64,
}

const UPSERT: &str = "INSERT INTO mt_doc_doc AS d (id, data, mt_last_modified) VALUES ($1, $2, now()) \
     ON CONFLICT (id) DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified";

/// The latencies of one side, in microseconds, sorted.
struct Latencies(Vec<f64>);

impl Latencies {
    fn at(&self, p: f64) -> f64 {
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        self.0[i]
    }
}

/// Runs `op(writer, i)` `ops` times on each of the writers at once; every latency.
async fn timed<F, Fut>(ops: usize, op: F) -> Vec<f64>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::time::sleep(Duration::from_millis(common::SETTLE_MS)).await;
    let op = Arc::new(op);
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (op, barrier) = (op.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut out = Vec::with_capacity(ops);
                for i in 0..ops {
                    let start = Instant::now();
                    op(w, i).await;
                    out.push(start.elapsed().as_secs_f64() * 1e6);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::with_capacity(ops * WRITERS);
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    all
}

async fn raw_client(url: &str, schema: &str) -> Client {
    let mut config: tokio_postgres::Config = url.parse().expect("url");
    let opts = config.get_options().unwrap_or("").to_owned();
    config.options(format!("{opts} -c search_path={schema}"));
    let (client, conn) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// One scenario's rows: (lib, raw) latencies over every repetition.
async fn scenario<L, LF, R, RF>(reps: usize, ops: usize, lib: L, raw: R) -> (Latencies, Latencies)
where
    L: Fn(usize, usize) -> LF + Clone + Send + Sync + 'static,
    LF: std::future::Future<Output = ()> + Send,
    R: Fn(usize, usize) -> RF + Clone + Send + Sync + 'static,
    RF: std::future::Future<Output = ()> + Send,
{
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        if rep % 2 == 0 {
            l.extend(timed(ops, lib.clone()).await);
            r.extend(timed(ops, raw.clone()).await);
        } else {
            r.extend(timed(ops, raw.clone()).await);
            l.extend(timed(ops, lib.clone()).await);
        }
    }
    l.sort_by(f64::total_cmp);
    r.sort_by(f64::total_cmp);
    (Latencies(l), Latencies(r))
}

async fn run(sync: &str, reps: usize, ops: usize) -> Vec<String> {
    let base = marten_testing::database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20synchronous_commit%3D{sync}");
    let schema = TestSchema::new(&format!("bench_latency_{sync}"));
    let store = DocumentStore::builder()
        .connection_string(&url)
        .ssl_mode(marten::SslMode::Disable)
        .schema(schema.name())
        .pool_size(WRITERS + 2)
        .document::<Doc>()
        .event::<Ticked>()
        .build()
        .await
        .expect("store");
    let streams: Arc<Vec<Uuid>> = Arc::new((0..WRITERS * 2).map(|_| Uuid::now_v7()).collect());
    let mut s = store.lightweight_session();
    for id in streams.iter() {
        s.events()
            .start_stream(*id, [Ticked { n: 0 }])
            .expect("start");
    }
    s.save_changes().await.expect("streams");
    drop(s);
    let mut raw: Vec<(Arc<Client>, Statement, Statement)> = Vec::new();
    for _ in 0..WRITERS {
        let c = raw_client(&url, schema.name()).await;
        let (upsert, append) = (
            c.prepare(UPSERT).await.expect("prepare"),
            c.prepare(&common::raw_append_sql("ticked"))
                .await
                .expect("prepare"),
        );
        raw.push((Arc::new(c), upsert, append));
    }
    let raw = Arc::new(raw);
    let mut rows = Vec::new();
    if wanted("save") {
        let lib = {
            let store = store.clone();
            move |_w: usize, i: usize| {
                let store = store.clone();
                async move {
                    let mut s = store.lightweight_session();
                    let n = i as i64;
                    s.store(Doc {
                        id: Uuid::now_v7(),
                        name: format!("doc {n}"),
                        n,
                    })
                    .expect("store");
                    s.save_changes().await.expect("save");
                }
            }
        };
        let raw_op = {
            let raw = raw.clone();
            move |w: usize, i: usize| {
                let raw = raw.clone();
                async move {
                    let (c, upsert, _) = &raw[w];
                    let id = Uuid::now_v7();
                    let data = serde_json::json!({"id": id, "name": format!("doc {i}"), "n": i});
                    c.execute(upsert, &[&id, &data]).await.expect("upsert");
                }
            }
        };
        let (l, r) = scenario(reps, ops, lib, raw_op).await;
        rows.push(row("single save", sync, &l, &r));
    }
    if wanted("append") {
        let lib = {
            let (store, streams) = (store.clone(), streams.clone());
            move |w: usize, i: usize| {
                let (store, streams) = (store.clone(), streams.clone());
                async move {
                    let mut s = store.lightweight_session();
                    s.events()
                        .append(streams[w], [Ticked { n: i as i64 }])
                        .expect("append");
                    s.save_changes().await.expect("save");
                }
            }
        };
        let raw_op = {
            let (raw, streams) = (raw.clone(), streams.clone());
            move |w: usize, i: usize| {
                let (raw, streams) = (raw.clone(), streams.clone());
                async move {
                    let (c, _, append) = &raw[w];
                    let data = serde_json::json!({"n": i});
                    let stream = streams[WRITERS + w];
                    let n = c
                        .execute(append, &[&stream, &Uuid::now_v7(), &data])
                        .await
                        .expect("append");
                    assert_eq!(n, 1);
                }
            }
        };
        let (l, r) = scenario(reps, ops, lib, raw_op).await;
        rows.push(row("append 1 event", sync, &l, &r));
    }
    store.close();
    rows
}

fn row(name: &str, sync: &str, lib: &Latencies, raw: &Latencies) -> String {
    let f = |l: &Latencies| format!("{:.0} / {:.0} / {:.0}", l.at(0.5), l.at(0.99), l.at(0.999));
    format!(
        "| {name}, {WRITERS} writers | {sync} | {} | {} | {:.2} | {:.2} |",
        f(lib),
        f(raw),
        raw.at(0.5) / lib.at(0.5),
        raw.at(0.99) / lib.at(0.99)
    )
}

fn main() {
    let reps = env_number("MARTEN_BENCH_REPS").unwrap_or(3);
    let ops = env_number("MARTEN_BENCH_OPS").unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for sync in ["on", "off"] {
        rows.extend(rt.block_on(run(sync, reps, ops)));
    }
    println!("| scenario | synchronous_commit | marten p50 / p99 / p999 (µs) | raw p50 / p99 / p999 (µs) | p50 ratio (raw/marten) | p99 ratio |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
