//! A service's own command line around its store: marten's commands (`schema ...`,
//! `projections ...`) next to one of the service's own (`seed`).
//!
//! ```text
//! cargo run --example cli --features cli -- --help
//! cargo run --example cli --features cli -- schema dump
//! cargo run --example cli --features cli -- schema patch --out patch.sql
//! cargo run --example cli --features cli -- schema assert
//! cargo run --example cli --features cli -- schema apply
//! cargo run --example cli --features cli -- seed 20000
//! cargo run --example cli --features cli -- projections status
//! cargo run --example cli --features cli -- projections rebuild Counter [--timeout 60]
//! cargo run --example cli --features cli -- projections daemon   # SIGTERM or Ctrl-C stops it
//! ```
//!
//! It connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and works in the schema `MARTEN_SCHEMA` (default `cli_example`), only after the
//! arguments are parsed: `--help` and `--version` never connect.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Note {
    id: Uuid,
    #[document(index)]
    title: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Added {
    n: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Counter {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Counter {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
}

/// The total of every stream's events: a multi-stream projection with one document
/// (`all`), a second async projection beside `Counter` (`projections rebuild Counter`
/// waits for neither this one nor the events appended after its reset).
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default)]
#[concurrency(numeric)]
struct Totals {
    id: String,
    events: i64,
    total: i64,
}

#[marten::apply]
impl Totals {
    fn identity(_e: &Added) -> String {
        "all".to_owned()
    }

    fn create(e: &Added) -> Self {
        Totals {
            id: String::new(),
            events: 1,
            total: e.n,
        }
    }

    fn apply(&mut self, e: &Added) {
        self.events += 1;
        self.total += e.n;
    }
}

/// The example service's command line.
#[derive(Parser)]
#[command(version, about)]
struct App {
    #[command(subcommand)]
    command: AppCommand,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Append N events (10 per stream) to play with.
    Seed {
        /// How many events.
        #[arg(default_value_t = 1000)]
        n: usize,
    },
    #[command(flatten)]
    Marten(marten::cli::Command),
}

fn builder() -> marten::DocumentStoreBuilder {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = std::env::var("MARTEN_SCHEMA").unwrap_or_else(|_| "cli_example".to_owned());
    DocumentStore::builder()
        .connection_string(url)
        .schema(schema)
        .document::<Note>()
        .projection::<Counter>(Lifecycle::Async)
        .multi_stream_projection::<Totals>(Lifecycle::Async)
}

async fn seed(n: usize) -> marten::Result<()> {
    let store = builder().build().await?;
    let mut session = store.lightweight_session();
    for _ in 0..n.div_ceil(10) {
        session
            .events()
            .append(Uuid::now_v7(), (1..=10).map(|n| Added { n }))?;
    }
    session.save_changes().await?;
    println!("appended {} events", n.div_ceil(10) * 10);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let app = App::parse(); // --help, --version and usage errors exit here
    match app.command {
        AppCommand::Seed { n } => match seed(n).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        AppCommand::Marten(command) => marten::cli::run(builder(), command).await,
    }
}
