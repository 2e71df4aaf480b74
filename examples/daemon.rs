//! A service's own command line around its store: the async daemon with a live progress
//! display, rebuilds with a progress bar, status, schema.
//!
//! ```text
//! cargo run --example daemon -- seed 20000   # append some events to play with
//! cargo run --example daemon -- status
//! cargo run --example daemon -- rebuild Counter
//! cargo run --example daemon -- daemon       # Ctrl-C to stop
//! ```

use std::process::ExitCode;

use marten::prelude::*;
use serde::{Deserialize, Serialize};

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

fn builder(url: String) -> marten::DocumentStoreBuilder {
    DocumentStore::builder()
        .connection_string(url)
        .schema("daemon_example")
        .projection::<Counter>(Lifecycle::Async)
}

#[tokio::main]
async fn main() -> ExitCode {
    let url = match marten_testing::try_database_url() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("seed") {
        let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let store = match builder(url).build().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let streams: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
        let mut s = store.lightweight_session();
        for round in 0..n.div_ceil(1000) {
            for id in &streams {
                let events: Vec<Added> = (0..10)
                    .map(|i| Added {
                        n: i + round as i64,
                    })
                    .collect();
                if let Err(e) = s.events().append(*id, events) {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
            if let Err(e) = s.save_changes().await {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        println!("appended {} events", n.div_ceil(1000) * 1000);
        return ExitCode::SUCCESS;
    }
    marten::cli::run(builder(url), args).await
}
