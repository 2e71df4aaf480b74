//! Bulk insert with binary `COPY` against the two ways one could do without it, at
//! 10,000 documents, in one process and one run:
//!
//! - `store.bulk_insert(docs, BulkMode::InsertOnly)` (default batches of 10,000, one
//!   transaction), and `BulkMode::Overwrite` (through the staging table) for reference;
//! - a session's batched writes: `session.store(doc)` 10,000 times and one
//!   `save_changes` (one statement over `unnest` arrays);
//! - raw tokio-postgres: one binary `COPY` of the same rows (`id`, the document as
//!   `jsonb` serialized with serde from the same structs, a fresh `mt_version`) into the
//!   same table, autocommitted.
//!
//! Each side starts from an empty table (truncated before it, untimed) and serializes
//! the documents itself; the sides alternate their order between repetitions. The
//! goals (issue #17): bulk insert at least 1.5 times the session's batch, and at least
//! 0.9 of the raw `COPY`.
//!
//! Run: `cargo bench --bench bulk`. `MARTEN_BENCH_REPS=n` sets the repetitions
//! (default 7), `MARTEN_BENCH_DOCS=n` the documents (default 10,000),
//! `MARTEN_BENCH_BATCH=n` the bulk insert's batch size (default 10,000, the library's). Results go to
//! BENCHMARKS.md by hand.

mod common;

use std::time::Instant;

use marten::prelude::*;
use marten::BulkOptions;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::{Client, NoTls};

use common::{env_number, median, quartiles, SETTLE_MS};

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct Doc {
    id: Uuid,
    name: String,
    n: i64,
    tags: Vec<String>,
}

fn docs(count: usize) -> Vec<Doc> {
    (0..count)
        .map(|i| Doc {
            id: Uuid::now_v7(),
            name: format!("document number {i}"),
            n: i as i64,
            tags: vec!["alpha".into(), "beta".into()],
        })
        .collect()
}

/// The sides measured, in rows per second.
#[derive(Default)]
struct Rates {
    bulk: Vec<f64>,
    bulk_overwrite: Vec<f64>,
    session: Vec<f64>,
    raw: Vec<f64>,
}

async fn raw_client(url: &str, schema: &str) -> Client {
    let mut config: tokio_postgres::Config = url.parse().expect("url");
    let opts = config.get_options().unwrap_or("").to_owned();
    config.options(format!("{opts} -c search_path={schema}"));
    let (client, conn) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// One binary `COPY` of the documents, as a program without marten would write it.
async fn raw_copy(client: &Client, docs: &[Doc]) -> u64 {
    let sink = client
        .copy_in("COPY mt_doc_doc (id, data, mt_version) FROM STDIN (FORMAT binary)")
        .await
        .expect("copy");
    let writer = BinaryCopyInWriter::new(sink, &[Type::UUID, Type::JSONB, Type::UUID]);
    let mut writer = std::pin::pin!(writer);
    for doc in docs {
        let version = Uuid::new_v4();
        writer
            .as_mut()
            .write(&[&doc.id, &Json(doc), &version])
            .await
            .expect("row");
    }
    writer.finish().await.expect("finish")
}

/// Rows per second of `f`, after the settling pause and an emptied table.
async fn timed(raw: &Client, rows: usize, f: impl AsyncFnOnce()) -> f64 {
    raw.batch_execute("TRUNCATE mt_doc_doc")
        .await
        .expect("truncate");
    tokio::time::sleep(std::time::Duration::from_millis(SETTLE_MS)).await;
    let start = Instant::now();
    f().await;
    rows as f64 / start.elapsed().as_secs_f64()
}

async fn run(reps: usize, count: usize, batch: usize) -> Rates {
    let url = marten_testing::database_url();
    let schema = TestSchema::new("bench_bulk");
    let store = DocumentStore::builder()
        .connection_string(&url)
        .ssl_mode(marten::SslMode::Disable) // as the raw baseline (NoTls)
        .schema(schema.name())
        .pool_size(4)
        .document::<Doc>()
        .build()
        .await
        .expect("store");
    let raw = raw_client(&url, schema.name()).await;
    // Warm up every side once (statements prepared, caches filled).
    let warm = docs(count);
    let _ = timed(&raw, count, async || {
        store
            .bulk_insert(warm.clone(), BulkMode::InsertOnly)
            .await
            .expect("bulk");
    })
    .await;
    let _ = timed(&raw, count, async || {
        raw_copy(&raw, &warm).await;
    })
    .await;

    let mut rates = Rates::default();
    for rep in 0..reps {
        let docs = docs(count);
        let mut order = [0, 1, 2, 3];
        order.rotate_left(rep % 4);
        for side in order {
            // The library's sides take the documents by value: the copy is made untimed.
            let input = docs.clone();
            match side {
                0 => rates.bulk.push(
                    timed(&raw, count, async || {
                        let n = store
                            .bulk_insert_with(
                                input,
                                BulkOptions::new(BulkMode::InsertOnly).batch_size(batch),
                            )
                            .await
                            .expect("bulk");
                        assert_eq!(n as usize, count);
                    })
                    .await,
                ),
                1 => rates.bulk_overwrite.push(
                    timed(&raw, count, async || {
                        let n = store
                            .bulk_insert_with(
                                input,
                                BulkOptions::new(BulkMode::Overwrite).batch_size(batch),
                            )
                            .await
                            .expect("bulk");
                        assert_eq!(n as usize, count);
                    })
                    .await,
                ),
                2 => rates.session.push(
                    timed(&raw, count, async || {
                        let mut s = store.lightweight_session();
                        for doc in input {
                            s.store(doc).expect("store");
                        }
                        s.save_changes().await.expect("save");
                    })
                    .await,
                ),
                _ => rates.raw.push(
                    timed(&raw, count, async || {
                        assert_eq!(raw_copy(&raw, &docs).await as usize, count);
                    })
                    .await,
                ),
            }
        }
    }
    rates
}

fn ratio_line(name: &str, lib: &[f64], base: &[f64], goal: &str) {
    let mut ratios: Vec<f64> = lib.iter().zip(base).map(|(l, b)| l / b).collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    let (q1, q3) = quartiles(&ratios);
    println!(
        "| {name} | {:.2} | {q1:.2}-{q3:.2} | {goal} |",
        median(&ratios)
    );
}

fn main() {
    let reps = env_number("MARTEN_BENCH_REPS").unwrap_or(7);
    let count = env_number("MARTEN_BENCH_DOCS").unwrap_or(10_000);
    let batch = env_number("MARTEN_BENCH_BATCH").unwrap_or(BulkOptions::DEFAULT_BATCH_SIZE);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rates = rt.block_on(run(reps, count, batch));
    println!("{count} documents, batches of {batch}, {reps} repetitions (rows per second, median)");
    println!();
    println!("| side | rows/s |");
    println!("|---|---|");
    for (name, r) in [
        ("bulk_insert, InsertOnly", &rates.bulk),
        (
            "bulk_insert, Overwrite (staging table)",
            &rates.bulk_overwrite,
        ),
        ("session: store x N + save_changes (unnest)", &rates.session),
        ("raw tokio-postgres binary COPY", &rates.raw),
    ] {
        println!("| {name} | {:.0} |", median(r));
    }
    println!();
    println!("| ratio | median | IQR | goal |");
    println!("|---|---|---|---|");
    ratio_line(
        "bulk_insert InsertOnly / session batch",
        &rates.bulk,
        &rates.session,
        ">= 1.5",
    );
    ratio_line(
        "bulk_insert InsertOnly / raw COPY",
        &rates.bulk,
        &rates.raw,
        ">= 0.9",
    );
    ratio_line(
        "bulk_insert Overwrite / session batch",
        &rates.bulk_overwrite,
        &rates.session,
        "-",
    );
    ratio_line(
        "bulk_insert Overwrite / raw COPY",
        &rates.bulk_overwrite,
        &rates.raw,
        "-",
    );
}
