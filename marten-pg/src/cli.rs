//! A command line for a service's store: run the daemon with a progress display, rebuild
//! a projection with a progress bar, show the projections' status, apply the schema.
//!
//! marten cannot know a service's projections, so the binary is the service's own: its
//! `main` builds the store builder and hands it to [`run`] (see `examples/daemon.rs`):
//!
//! ```text
//! cargo run --example daemon -- daemon            # run until Ctrl-C, progress per projection
//! cargo run --example daemon -- rebuild Counter   # reset, replay, progress bar, exit
//! cargo run --example daemon -- status            # positions, lag, oldest open transaction
//! cargo run --example daemon -- schema            # create or update the schema, exit
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use marten_core::{Error, Result};

use crate::connection::Conn;
use crate::daemon::{self, Daemon, DaemonOptions};
use crate::error_map::{map_db_error, Failed};
use crate::store::{DocumentStore, DocumentStoreBuilder};

/// How far an async projection is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The global sequence of the last event it processed.
    pub position: i64,
    /// The highest global sequence in the store.
    pub head: i64,
    /// The node that owns it, if any.
    pub owner: Option<String>,
}

impl ProjectionStatus {
    /// Events not processed yet (approximate: sequences can have gaps).
    pub fn lag(&self) -> i64 {
        (self.head - self.position).max(0)
    }
}

/// The status of every async projection of the store.
pub async fn status(store: &DocumentStore) -> Result<Vec<ProjectionStatus>> {
    let (type_id, migrate) = daemon::progression::schema();
    store.ensure_erased(type_id, migrate).await?;
    crate::events::read::ensure(store).await?;
    let mut conn = Conn::new();
    conn.run(store, async |client| {
        let head_row = client
            .query_one("SELECT coalesce(max(seq_id), 0) FROM mt_events", &[])
            .await
            .map_err(|e| map_db_error(e, Failed::Other("reading the head")))?;
        let head: i64 = head_row.try_get(0).map_err(unusable("mt_events"))?;
        let mut out = Vec::new();
        for p in &store.projections().asynchronous {
            let row = client
                .query_opt(
                    "SELECT last_seq, owner FROM mt_event_progression WHERE name = $1",
                    &[&p.name()],
                )
                .await
                .map_err(|e| map_db_error(e, Failed::Other("reading progress")))?;
            let (position, owner) = match row {
                Some(r) => (
                    r.try_get(0).map_err(unusable(p.name()))?,
                    r.try_get(1).map_err(unusable(p.name()))?,
                ),
                None => (0, None),
            };
            out.push(ProjectionStatus {
                name: p.name().to_owned(),
                position,
                head,
                owner,
            });
        }
        Ok(out)
    })
    .await
}

/// A stored value of the wrong type (a table changed by hand or by another program).
fn unusable(owner: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::CorruptData {
        owner: owner.to_owned(),
        id: None,
        detail: e.to_string(),
    }
}

/// A text progress bar: `name [#####.....] position/head`.
pub fn progress_line(s: &ProjectionStatus, rate: f64) -> String {
    let width = 30usize;
    let done = if s.head == 0 {
        width
    } else {
        ((s.position.min(s.head) as f64 / s.head as f64) * width as f64) as usize
    };
    format!(
        "{:<20} [{}{}] {:>10}/{:<10} lag {:>8}  {:>8.0} ev/s  owner {}",
        s.name,
        "#".repeat(done),
        ".".repeat(width - done),
        s.position,
        s.head,
        s.lag(),
        rate,
        s.owner.as_deref().unwrap_or("-")
    )
}

/// Resets `projection` and replays it with a daemon, calling `progress` about every
/// 200 ms, until it has caught up.
pub async fn rebuild_with_progress(
    store: &DocumentStore,
    projection: &str,
    options: DaemonOptions,
    mut progress: impl FnMut(&ProjectionStatus),
) -> Result<()> {
    daemon::rebuild(store, projection).await?;
    let d = Daemon::start(store, options);
    loop {
        let now = status(store).await?;
        if let Some(s) = now.iter().find(|s| s.name == projection) {
            progress(s);
        }
        match d.wait_for_non_stale(Duration::from_millis(200)).await {
            Ok(()) => break,
            Err(Error::Timeout { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    if let Some(s) = status(store).await?.iter().find(|s| s.name == projection) {
        progress(s);
    }
    d.stop().await
}

/// Runs the command line `args` (without the program name) against the store `builder`
/// builds. Returns the process exit code.
pub async fn run(
    builder: DocumentStoreBuilder,
    args: impl IntoIterator<Item = String>,
) -> ExitCode {
    let args: Vec<String> = args.into_iter().collect();
    let store = match builder.build().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("marten: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("schema") => {
            println!("schema {} is up to date", store.schema());
            Ok(())
        }
        Some("status") => status(&store).await.map(|all| {
            for s in all {
                println!("{}", progress_line(&s, 0.0));
            }
        }),
        Some("rebuild") => match args.get(1) {
            Some(name) => {
                let started = Instant::now();
                let r = rebuild_with_progress(&store, name, DaemonOptions::default(), |s| {
                    let rate = s.position as f64 / started.elapsed().as_secs_f64().max(0.001);
                    print!("\r{}", progress_line(s, rate));
                    let _ = std::io::stdout().flush();
                })
                .await;
                println!();
                r
            }
            None => Err(Error::Configuration(
                "usage: rebuild <projection>".to_owned(),
            )),
        },
        Some("daemon") => run_daemon(&store).await,
        _ => {
            eprintln!("usage: daemon | rebuild <projection> | status | schema");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("marten: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_daemon(store: &DocumentStore) -> Result<()> {
    let d = Daemon::start(store, DaemonOptions::default());
    let mut last: Vec<(i64, Instant)> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {
                let now = status(store).await?;
                let lines: Vec<String> = now
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let rate = match last.get(i) {
                            Some((pos, at)) => (s.position - pos) as f64 / at.elapsed().as_secs_f64().max(0.001),
                            None => 0.0,
                        };
                        progress_line(s, rate)
                    })
                    .collect();
                last = now.iter().map(|s| (s.position, Instant::now())).collect();
                // Redraw the block of lines in place.
                print!("\x1b[{}F\x1b[J", lines.len());
                for l in lines {
                    println!("{l}");
                }
            }
        }
    }
    d.stop().await
}
