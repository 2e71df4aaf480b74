//! marten against the Rust peers doing the same work, in one process and one run, on
//! one server: cqrs-es with postgres-es (commands, aggregate loads), disintegrate on its
//! PostgreSQL backend (DCB decisions) and hand-written sqlx (document upsert and load,
//! event append). Every scenario runs with `synchronous_commit` on, then off, on both
//! sides' connections; each pass creates the schemas it uses and drops them at its end.
//! Prints a Markdown table of ratios marten / peer (median of the repetitions, IQR).
//!
//! Run from `peers/`: `cargo run --release`. `MARTEN_BENCH_QUICK=1` runs a short
//! version, `MARTEN_BENCH_REPS` / `MARTEN_BENCH_OPS` set the repetitions and the
//! operations per side and repetition, `MARTEN_BENCH_ONLY=cqrs-es,sqlx` selects rows by
//! scenario or peer words, `MARTEN_BENCH_SYNC=off` runs one pass only, `DATABASE_URL`
//! names the server (default the local one).

mod cqrs;
mod db;
mod dcb;
mod handwritten;
mod harness;

use harness::{Plan, Row, HEADER};

/// Every selected row with `synchronous_commit` = `sync`, in schemas of its own.
async fn pass(sync: &'static str, plan: Plan) -> Vec<Row> {
    let mut schemas = db::Schemas::new().await;
    let mut rows = cqrs::run(sync, plan, &mut schemas).await;
    rows.extend(dcb::run(sync, plan, &mut schemas).await);
    rows.extend(handwritten::run(sync, plan, &mut schemas).await);
    schemas.drop_all().await;
    rows
}

fn main() {
    let plan = Plan::from_env();
    let passes: Vec<&'static str> = match std::env::var("MARTEN_BENCH_SYNC").as_deref() {
        Ok("on") => vec!["on"],
        Ok("off") => vec!["off"],
        _ => vec!["on", "off"],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    eprintln!(
        "{} repetitions of {} operations per side, sequential, one connection in use per side",
        plan.reps, plan.ops
    );
    let mut rows = Vec::new();
    for sync in passes {
        rows.extend(rt.block_on(pass(sync, plan)));
    }
    println!("{HEADER}");
    for row in &rows {
        println!("{}", row.line());
    }
}
