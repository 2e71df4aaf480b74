//! `projections daemon | rebuild NAME | status | drop-old-versions NAME`: the async daemon
//! until a stop signal, a rebuild with progress, the status of every async projection, the
//! explicit drop of a projection's superseded versions (blue/green rebuilds).

use std::time::Duration;

use clap::Subcommand;
use marten_core::{Error, Result};
use marten_pg::daemon::{self, Daemon, DaemonOptions};
use marten_pg::{DocumentStore, ProjectionStatus};

use crate::progress::{progress_line, Display};
use crate::signal::Shutdown;
use crate::CliError;

/// How often `projections status` tries its query before it fails (with a doubling pause
/// from 200 ms between tries). The daemon's and the rebuild's displays never fail on a
/// status query: they say so and try again at the next refresh.
pub const STATUS_ATTEMPTS: u32 = 4;

/// How often the daemon's display refreshes.
const REFRESH: Duration = Duration::from_secs(1);

/// The projection commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
#[non_exhaustive]
pub enum ProjectionsCommand {
    /// Run the async daemon until SIGTERM or Ctrl-C, showing each projection's progress.
    Daemon,
    /// Reset a projection and replay every event into it, showing its progress.
    Rebuild {
        /// The projection's name (as `projections status` lists it).
        name: String,
    },
    /// Print each async projection's position, the store's head, its lag and owner.
    Status,
    /// Drop the tables of the versions a newer active version of a projection replaced
    /// (blue/green rebuilds), printing each one dropped.
    DropOldVersions {
        /// The projection's name (as `projections status` lists it).
        name: String,
    },
}

/// The status of every async projection of the store (see
/// [`DocumentStore::projection_status`]).
pub async fn status(store: &DocumentStore) -> Result<Vec<ProjectionStatus>> {
    store.projection_status().await
}

/// Runs a projection command against `store` with the default [`DaemonOptions`].
pub async fn projections(
    store: &DocumentStore,
    command: &ProjectionsCommand,
) -> Result<(), CliError> {
    projections_with(store, command, DaemonOptions::default()).await
}

/// Runs a projection command against `store`; the daemon and the rebuild run with
/// `options` (hooks, poison policy, batch size).
pub async fn projections_with(
    store: &DocumentStore,
    command: &ProjectionsCommand,
    options: DaemonOptions,
) -> Result<(), CliError> {
    match command {
        ProjectionsCommand::Status => {
            for s in status_retried(store).await? {
                println!("{}", progress_line(&s, 0.0));
            }
            Ok(())
        }
        ProjectionsCommand::Rebuild { name } => {
            check_name(store, name).await?;
            let mut display = Display::new();
            let result = rebuild_with_progress(store, name, options, |s| {
                display.update(std::slice::from_ref(s))
            })
            .await;
            display.finish();
            result?;
            println!("{name} rebuilt");
            Ok(())
        }
        ProjectionsCommand::Daemon => run_daemon(store, options).await,
        ProjectionsCommand::DropOldVersions { name } => {
            check_name(store, name).await?;
            for table in daemon::drop_old_projection_versions_named(store, name).await? {
                println!("dropped {table}");
            }
            Ok(())
        }
    }
}

/// The status, tried [`STATUS_ATTEMPTS`] times.
async fn status_retried(store: &DocumentStore) -> Result<Vec<ProjectionStatus>> {
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match status(store).await {
            Ok(all) => return Ok(all),
            Err(e) if attempt < STATUS_ATTEMPTS => {
                eprintln!("status query failed (attempt {attempt} of {STATUS_ATTEMPTS}, retrying in {pause:?}): {e}");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fails with [`CliError::UnknownProjection`] unless `name` is an async projection.
async fn check_name(store: &DocumentStore, name: &str) -> Result<(), CliError> {
    let known: Vec<String> = status_retried(store)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    if known.iter().any(|k| k == name) {
        Ok(())
    } else {
        Err(CliError::UnknownProjection {
            name: name.to_owned(),
            known,
        })
    }
}

/// Resets `projection` and replays it with a daemon, calling `progress` about every
/// 200 ms, until it has caught up. A failed status query skips one call of `progress`.
pub async fn rebuild_with_progress(
    store: &DocumentStore,
    projection: &str,
    options: DaemonOptions,
    mut progress: impl FnMut(&ProjectionStatus),
) -> Result<()> {
    daemon::rebuild(store, projection).await?;
    let d = Daemon::start(store, options);
    loop {
        report(store, projection, &mut progress).await;
        match d.wait_for_non_stale(Duration::from_millis(200)).await {
            Ok(()) => break,
            Err(Error::Timeout { .. }) => continue,
            Err(e) => {
                let _ = d.stop().await;
                return Err(e);
            }
        }
    }
    report(store, projection, &mut progress).await;
    d.stop().await
}

/// Calls `progress` with the status of `projection`, unless the query fails.
async fn report(
    store: &DocumentStore,
    projection: &str,
    progress: &mut impl FnMut(&ProjectionStatus),
) {
    if let Ok(all) = status(store).await {
        if let Some(s) = all.iter().find(|s| s.name == projection) {
            progress(s);
        }
    }
}

/// Runs the daemon until a stop signal, refreshing the display every second; then stops
/// it gracefully (a batch in flight commits or rolls back).
async fn run_daemon(store: &DocumentStore, options: DaemonOptions) -> Result<(), CliError> {
    let mut shutdown = Shutdown::listen()?;
    let names: Vec<String> = status_retried(store)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let d = Daemon::start(store, options);
    println!(
        "daemon running on schema {} ({}); SIGTERM or Ctrl-C stops it",
        store.schema(),
        names.join(", ")
    );
    let mut display = Display::new();
    let mut ticker = tokio::time::interval(REFRESH);
    let signal = loop {
        tokio::select! {
            name = shutdown.received() => break name,
            _ = ticker.tick() => match status(store).await {
                Ok(all) => display.update(&all),
                Err(e) => display.message(&format!("status query failed, retrying: {e}")),
            },
        }
    };
    display.finish();
    println!("{signal}: stopping the daemon");
    d.stop().await?;
    println!("daemon stopped");
    Ok(())
}
