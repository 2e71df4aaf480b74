//! A command line for a service's store, on [`clap`]: review and apply the schema, run
//! the async daemon with a progress display, rebuild a projection, show the projections'
//! status.
//!
//! marten cannot know a service's document types and projections, so the binary is the
//! service's own: it embeds [`Command`] in its own `clap` parser, builds its store
//! builder and hands both to [`run`] (see `examples/cli.rs`):
//!
//! ```no_run
//! use clap::Parser;
//! # use marten_pg::DocumentStore;
//!
//! #[derive(Parser)]
//! #[command(version, about)]
//! struct App {
//!     #[command(subcommand)]
//!     marten: marten_cli::Command,
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let app = App::parse(); // --help and --version exit here, before any connection
//!     let url = std::env::var("DATABASE_URL")
//!         .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
//!     let builder = DocumentStore::builder().connection_string(url);
//!     // .document::<YourDocument>().projection::<YourAggregate>(Lifecycle::Async) ...
//!     marten_cli::run(builder, app.marten).await
//! }
//! ```
//!
//! ```text
//! app schema dump                 # print the complete, idempotent DDL of the store
//! app schema patch --out p.sql    # write what the database lacks (stdout without --out)
//! app schema assert               # fail, listing each difference, unless up to date
//! app schema apply                # run the patch (--concurrently for indexes)
//! app projections status          # position, head, lag, owner per projection
//! app projections rebuild Counter # reset and replay up to the head of the reset
//! app projections rebuild Counter --timeout 600   # ... or fail after 10 minutes
//! app projections daemon          # run until SIGTERM or Ctrl-C, one bar per projection
//! ```
//!
//! Output goes to standard output, one flushed line at a time; a reader that goes away
//! (`app schema dump | head -1`) ends the output, not the command (the daemon goes on
//! without output), and no command panics on it.
//!
//! Uses only marten-pg's public API (the store, its builder, the daemon and
//! [`DocumentStore::projection_status`]); the `marten` facade re-exports it as
//! `marten::cli` behind its `cli` feature.

#![warn(missing_docs)]

mod error;
mod output;
mod progress;
mod projections;
mod schema;
mod signal;

use std::process::ExitCode;

use clap::Subcommand;
use marten_pg::{DocumentStore, DocumentStoreBuilder};

pub use clap;
pub use error::CliError;
pub use marten_pg::ProjectionStatus;
pub use progress::progress_line;
pub use projections::{
    projections, projections_with, rebuild_until, rebuild_with_progress, status,
    ProjectionsCommand, RebuildOutcome, STATUS_ATTEMPTS,
};
pub use schema::{schema, SchemaCommand};

/// marten's commands, to embed in a program's own parser: as its subcommand
/// (`#[command(subcommand)] marten: Command`) or flattened among its own subcommands
/// (`#[command(flatten)] Marten(Command)`).
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Review, check and apply the database schema.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Run the async daemon, rebuild a projection, show the projections' status.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
}

impl Command {
    /// Whether the store should apply its schema mode when it is built for this command:
    /// not for the schema commands, which review and patch a database that may be behind.
    pub fn applies_schema_at_build(&self) -> bool {
        !matches!(self, Command::Schema(_))
    }
}

/// Builds the store `builder` describes (applying its schema mode unless the command is
/// a schema command) and runs `command` against it, printing errors with their causes on
/// stderr. Returns the process exit code: success, or failure when the store cannot be
/// built or the command fails.
pub async fn run(builder: DocumentStoreBuilder, command: Command) -> ExitCode {
    let store = match builder
        .apply_schema_at_build(command.applies_schema_at_build())
        .build()
        .await
    {
        Ok(store) => store,
        Err(e) => return report(&CliError::Store(e)),
    };
    match execute(&store, &command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Runs `command` against a store built already. A store that applied its schema at
/// build has nothing for `schema patch` or `schema apply` to do; [`run`] builds the store
/// for the command.
pub async fn execute(store: &DocumentStore, command: &Command) -> Result<(), CliError> {
    match command {
        Command::Schema(c) => schema(store, c).await,
        Command::Projections(c) => projections(store, c).await,
    }
}

/// Prints `error` and its causes on stderr, one per line (best effort: a closed stderr
/// loses them rather than panicking); returns failure.
fn report(error: &dyn std::error::Error) -> ExitCode {
    output::note(format_args!("error: {error}"));
    let mut source = error.source();
    while let Some(cause) = source {
        output::note(format_args!("  caused by: {cause}"));
        source = cause.source();
    }
    ExitCode::FAILURE
}
