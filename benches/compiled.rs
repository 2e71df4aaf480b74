//! A compiled query against the same query built and rendered on each run, in one process
//! and one run: `session.query_compiled(&q)` (the statement rendered once, then only the
//! parameters collected) against `session.query::<Doc>()` with the same filters, sorts
//! and take, on the same documents. Both sides run in alternating blocks within each
//! repetition, so they see the same machine; both send a prepared statement, so the
//! difference is what building and rendering the query costs in the process.
//!
//! Run: `cargo bench --bench compiled`. `MARTEN_BENCH_REPS=n` sets the repetitions
//! (default 7) and `MARTEN_BENCH_OPS=n` the queries per side and repetition (default 400).
//! Results go to BENCHMARKS.md by hand.

mod common;

use common::{env_number, interleaved, median, quartiles};

use marten::compiled::ToList;
use marten::prelude::*;
use marten::QuerySpec;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Doc {
    id: Uuid,
    name: String,
    city: String,
    n: i64,
    tags: Vec<String>,
}

fn doc(i: usize) -> Doc {
    Doc {
        id: Uuid::now_v7(),
        name: format!("document number {i}"),
        city: ["Seattle", "Oakland", "Lisbon"][i % 3].to_owned(),
        n: i64::try_from(i).unwrap_or(0),
        tags: vec!["alpha".into(), format!("t{}", i % 7)],
    }
}

/// The documents of a city in a range of `n`, with a tag or a name prefix, the first ten.
struct InCity {
    city: &'static str,
    from: i64,
    tag: String,
}

impl CompiledQuery for InCity {
    type Document = Doc;
    type Returns = ToList;

    fn build(&self, q: QuerySpec<Doc>) -> QuerySpec<Doc> {
        q.filter(|f| f.city.eq(self.city))
            .filter(|f| f.n.ge(self.from).and(f.n.lt(self.from + 100)))
            .filter(|f| {
                f.tags
                    .contains(self.tag.clone())
                    .or(f.name.starts_with("document"))
            })
            .order_by(|f| f.n.desc())
            .take(10)
    }
}

fn ok<T>(r: marten::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("benchmark failed: {e}"),
    }
}

fn query(i: usize) -> InCity {
    InCity {
        city: ["Seattle", "Oakland", "Lisbon"][i % 3],
        from: i64::try_from(i % 50).unwrap_or(0),
        tag: format!("t{}", i % 7),
    }
}

/// One repetition: (compiled queries per second, uncompiled queries per second).
async fn repetition(store: &DocumentStore, ops: usize, compiled_first: bool) -> (f64, f64) {
    let mut c = store.query_session();
    let mut u = store.query_session();
    interleaved(
        ops,
        compiled_first,
        async |i| {
            let found = ok(c.query_compiled(&query(i)).await);
            assert_eq!(found.len(), 10);
        },
        async |i| {
            let q = query(i);
            let found = ok(u
                .query::<Doc>()
                .filter(|f| f.city.eq(q.city))
                .filter(|f| f.n.ge(q.from).and(f.n.lt(q.from + 100)))
                .filter(|f| {
                    f.tags
                        .contains(q.tag.clone())
                        .or(f.name.starts_with("document"))
                })
                .order_by(|f| f.n.desc())
                .take(10)
                .to_list()
                .await);
            assert_eq!(found.len(), 10);
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
        let schema = TestSchema::new("bench_compiled");
        let store = ok(DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .document::<Doc>()
            .build()
            .await);
        let docs: Vec<Doc> = (0..300).map(doc).collect();
        ok(store.bulk_insert(docs, BulkMode::InsertOnly).await);
        // Warm up both paths (statements prepared and cached, pool filled).
        repetition(&store, 50, true).await;
        let (mut compiled, mut plain, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..reps {
            let (c, p) = repetition(&store, ops, r % 2 == 0).await;
            compiled.push(c);
            plain.push(p);
            ratios.push(c / p);
        }
        assert_eq!(store.compiled_query_stats().renders, 1);
        ratios.sort_by(|a, b| a.total_cmp(b));
        let (q1, q3) = quartiles(&ratios);
        println!("| scenario | queries/s (median) |");
        println!("|---|---|");
        println!("| compiled query (rendered once) | {:.0} |", median(&compiled));
        println!("| the same query built and rendered each run | {:.0} |", median(&plain));
        println!(
            "compiled / uncompiled: median {:.2} (quartiles {q1:.2}..{q3:.2}), {reps} repetitions of {ops}",
            median(&ratios)
        );
    });
}
