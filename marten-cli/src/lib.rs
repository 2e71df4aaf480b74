//! A command line for a service's store: run the daemon with a progress display, rebuild
//! a projection with a progress bar, show the projections' status, apply the schema.
//!
//! marten cannot know a service's projections, so the binary is the service's own: its
//! `main` builds the store builder and hands it to [`run`] (see `examples/daemon.rs`):
//!
//! ```text
//! cargo run --example daemon -- daemon            # run until Ctrl-C, progress per projection
//! cargo run --example daemon -- rebuild Counter   # reset, replay, progress bar, exit
//! cargo run --example daemon -- status            # positions, lag, owners
//! cargo run --example daemon -- schema            # create or update the schema, exit
//! cargo run --example daemon -- schema sql        # print the whole schema script
//! cargo run --example daemon -- schema diff       # print the patch the database needs
//! cargo run --example daemon -- schema check      # fail, listing each difference, unless up to date
//! cargo run --example daemon -- schema apply      # run the patch (add --concurrently for indexes)
//! ```
//!
//! `schema sql`, `diff`, `check` and `apply` build the store without applying its
//! schema mode, so they work on a database that is behind.
//!
//! Uses only marten-pg's public API (the store, its builder, the daemon and
//! [`DocumentStore::projection_status`]); the `marten` facade re-exports it as
//! `marten::cli`.

#![warn(missing_docs)]

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use marten_core::{Error, Result};
use marten_pg::daemon::{self, Daemon, DaemonOptions};
use marten_pg::{DocumentStore, DocumentStoreBuilder, PatchOptions};

pub use marten_pg::ProjectionStatus;

/// The status of every async projection of the store (see
/// [`DocumentStore::projection_status`]).
pub async fn status(store: &DocumentStore) -> Result<Vec<ProjectionStatus>> {
    store.projection_status().await
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
    let reviewing = args.first().is_some_and(|a| a == "schema") && args.len() > 1;
    let store = match builder.apply_schema_at_build(!reviewing).build().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("marten: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("schema") => schema_command(&store, &args[1..]).await,
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
            eprintln!("usage: daemon | rebuild <projection> | status | schema [sql | diff | check | apply] [--concurrently]");
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

/// `schema [sql | diff | check | apply] [--concurrently]`: with no argument the store's
/// build has applied its schema mode; the others review or patch the schema.
pub async fn schema_command(store: &DocumentStore, args: &[String]) -> Result<()> {
    let options = PatchOptions::new().concurrently(args.iter().any(|a| a == "--concurrently"));
    match args.first().map(String::as_str) {
        None => {
            println!("schema {} is up to date", store.schema());
            Ok(())
        }
        Some("sql") => {
            print!("{}", store.schema_sql());
            Ok(())
        }
        Some("diff") => {
            print!("{}", store.schema_patch(options).await?);
            Ok(())
        }
        Some("check") => {
            store.assert_schema().await?;
            println!("schema {} matches the registered types", store.schema());
            Ok(())
        }
        Some("apply") => {
            let patch = store.schema_patch(options).await?;
            print!("{patch}");
            store.apply_schema_patch(&patch).await
        }
        Some(other) => Err(Error::Configuration(format!(
            "unknown schema command {other:?}: use sql, diff, check or apply"
        ))),
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
