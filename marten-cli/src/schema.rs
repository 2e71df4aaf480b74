//! `schema dump | patch | assert | apply`: the schema as a DBA reviews it, over the
//! store's [`schema_sql`](DocumentStore::schema_sql),
//! [`schema_patch`](DocumentStore::schema_patch),
//! [`assert_schema`](DocumentStore::assert_schema) and
//! [`apply_schema_patch`](DocumentStore::apply_schema_patch).

use std::path::PathBuf;

use clap::Subcommand;
use marten_pg::{DocumentStore, PatchOptions};

use crate::output::Out;
use crate::CliError;

/// The schema commands. They build the store without applying its schema mode (see
/// [`Command::applies_schema_at_build`](crate::Command::applies_schema_at_build)), so
/// they work on a database that is behind.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
#[non_exhaustive]
pub enum SchemaCommand {
    /// Bring the database to the registered types: print the patch, then run it.
    Apply {
        /// Create and drop indexes CONCURRENTLY, each statement on its own.
        #[arg(long)]
        concurrently: bool,
    },
    /// Write the patch the database needs (nothing when it is up to date).
    Patch {
        /// The file to write; standard output without it.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Create and drop indexes CONCURRENTLY, with no transaction around the script.
        #[arg(long)]
        concurrently: bool,
    },
    /// Fail, listing every difference, unless the database matches the registered types.
    Assert,
    /// Print the complete, idempotent DDL of the store's schema.
    Dump,
}

/// Runs a schema command against `store`, printing on standard output. A reader of the
/// output that goes away (`app schema dump | head -1`) ends the output, not the command:
/// `schema apply` still applies its patch. Another write failure is
/// [`CliError::Output`].
pub async fn schema(store: &DocumentStore, command: &SchemaCommand) -> Result<(), CliError> {
    let mut stdout = Out::stdout();
    match command {
        SchemaCommand::Dump => {
            stdout.text(&store.schema_sql())?;
        }
        SchemaCommand::Assert => {
            store.assert_schema().await?;
            stdout.line(format_args!(
                "schema {} matches the registered types",
                store.schema()
            ))?;
        }
        SchemaCommand::Patch { out, concurrently } => {
            let options = PatchOptions::new().concurrently(*concurrently);
            let patch = store.schema_patch(options).await?;
            match out {
                Some(path) => {
                    std::fs::write(path, patch.to_sql()).map_err(|source| CliError::Write {
                        path: path.clone(),
                        source,
                    })?;
                    stdout.line(format_args!(
                        "{} difference(s) in schema {}; patch written to {}",
                        patch.differences().count(),
                        store.schema(),
                        path.display()
                    ))?;
                }
                None => stdout.text(&patch.to_sql())?,
            }
        }
        SchemaCommand::Apply { concurrently } => {
            let options = PatchOptions::new().concurrently(*concurrently);
            let patch = store.schema_patch(options).await?;
            if patch.is_empty() {
                stdout.line(format_args!("schema {} is up to date", store.schema()))?;
            } else {
                stdout.text(&patch.to_sql())?;
                store.apply_schema_patch(&patch).await?;
                stdout.line(format_args!("schema {} updated", store.schema()))?;
            }
        }
    }
    Ok(())
}
