//! The async daemon in a service: append events, run the daemon until the projection
//! has caught up, read a projected document, stop the daemon.
//!
//! ```text
//! cargo run --example daemon          # 20000 events
//! cargo run --example daemon -- 100000
//! ```
//!
//! It connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! `examples/cli.rs` runs the same daemon from a command line, with progress bars.

use std::time::Duration;

use marten::daemon::{Daemon, DaemonOptions};
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(v) => v.parse()?,
        None => 20_000,
    };
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let store = DocumentStore::builder()
        .connection_string(url)
        .schema("daemon_example")
        .projection::<Counter>(Lifecycle::Async)
        .build()
        .await?;

    let streams: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let mut session = store.lightweight_session();
    for round in 0..n.div_ceil(1000) as i64 {
        for id in &streams {
            session
                .events()
                .append(*id, (0..10).map(|i| Added { n: i + round }))?;
        }
        session.save_changes().await?;
    }
    println!("appended {} events", n.div_ceil(1000) * 1000);

    let daemon = Daemon::start(&store, DaemonOptions::default());
    daemon.wait_for_non_stale(Duration::from_secs(300)).await?;
    for status in store.projection_status().await? {
        println!(
            "{}: {} of {} events",
            status.name, status.position, status.head
        );
    }
    let first: Option<Counter> = store.query_session().load(&streams[0]).await?;
    println!("stream {}: {:?}", streams[0], first);
    daemon.stop().await?;
    Ok(())
}
