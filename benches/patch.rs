//! Patching one field against loading and storing the whole document, in one process and
//! one run: `session.patch::<Doc>(&id).increment(|f| f.n, 1)` and `save_changes` (one
//! statement, one round trip), against `load`, change, `store`, `save_changes` (two round
//! trips, the whole document each way) of the same optimistic documents. Both sides run in
//! alternating blocks within each repetition, so they see the same machine.
//!
//! Run: `cargo bench --bench patch`. `MARTEN_BENCH_REPS=n` sets the repetitions (default
//! 7) and `MARTEN_BENCH_OPS=n` the operations per side and repetition (default 400).
//! Results go to BENCHMARKS.md by hand.

mod common;

use common::{env_number, interleaved, median, quartiles};

use marten::prelude::*;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct Doc {
    id: Uuid,
    name: String,
    n: i64,
    tags: Vec<String>,
    notes: Vec<String>,
}

fn doc(i: usize) -> Doc {
    Doc {
        id: Uuid::now_v7(),
        name: format!("document number {i}"),
        n: 0,
        tags: vec!["alpha".into(), "beta".into()],
        notes: (0..8)
            .map(|k| format!("note {k} of document {i}"))
            .collect(),
    }
}

fn ok<T>(r: marten::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("benchmark failed: {e}"),
    }
}

/// One repetition: (patches per second, load+stores per second).
async fn repetition(
    store: &DocumentStore,
    ids: &[Uuid],
    ops: usize,
    patch_first: bool,
) -> (f64, f64) {
    // Each side on its own half of the documents (the sides' sessions would otherwise
    // reject each other's stale versions).
    let (patched, loaded) = ids.split_at(ids.len() / 2);
    let mut s = store.lightweight_session();
    let mut l = store.lightweight_session();
    interleaved(
        ops,
        patch_first,
        async |i| {
            let id = patched[i % patched.len()];
            ok(s.patch::<Doc>(&id).increment(|f| f.n, 1).queue());
            ok(s.save_changes().await);
        },
        async |i| {
            let id = loaded[i % loaded.len()];
            let mut d = ok(l.load::<Doc>(&id).await).expect("stored");
            d.n += 1;
            ok(l.store(d));
            ok(l.save_changes().await);
        },
    )
    .await
}

fn main() {
    let reps = env_number("MARTEN_BENCH_REPS").unwrap_or(7);
    let ops = env_number("MARTEN_BENCH_OPS").unwrap_or(400);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async {
        let schema = TestSchema::new("bench_patch");
        let store = ok(DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .document::<Doc>()
            .build()
            .await);
        let docs: Vec<Doc> = (0..200).map(doc).collect();
        let ids: Vec<Uuid> = docs.iter().map(|d| d.id).collect();
        ok(store.bulk_insert(docs, BulkMode::InsertOnly).await);
        // Warm up both paths (statements prepared, pool filled).
        repetition(&store, &ids, 50, true).await;
        let (mut patch, mut load_store, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..reps {
            let (p, l) = repetition(&store, &ids, ops, r % 2 == 0).await;
            patch.push(p);
            load_store.push(l);
            ratios.push(p / l);
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        let (q1, q3) = quartiles(&ratios);
        println!("| scenario | ops/s (median) |");
        println!("|---|---|");
        println!("| patch one field + save_changes | {:.0} |", median(&patch));
        println!("| load + store + save_changes | {:.0} |", median(&load_store));
        println!(
            "patch / load+store: median {:.2} (quartiles {q1:.2}..{q3:.2}), {reps} repetitions of {ops}",
            median(&ratios)
        );
    });
}
