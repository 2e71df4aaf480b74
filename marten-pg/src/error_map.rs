//! Turns `tokio_postgres` failures into marten's [`Error`], by SQLSTATE and by which
//! statement failed; never by the text of a message.

use marten_core::{DatabaseError, Error};
use tokio_postgres::error::SqlState;

/// What marten was doing when a statement failed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Failed<'a> {
    /// Reading documents of a type.
    Reading(&'static str),
    /// Writing documents of a type to a table.
    Writing {
        document_type: &'static str,
        schema: &'a str,
        table: &'static str,
    },
    /// Running the batch guard.
    Guard { schema: &'a str },
    /// Applying schema changes.
    Migrating(&'a str),
    /// Transaction control (BEGIN / COMMIT / ROLLBACK).
    Transaction,
    /// Anything else.
    Other(&'static str),
}

impl Failed<'_> {
    fn context(&self) -> String {
        match self {
            Failed::Reading(t) => format!("reading {t} documents"),
            Failed::Writing { document_type, .. } => format!("writing {document_type} documents"),
            Failed::Guard { .. } => "checking the batch".to_owned(),
            Failed::Migrating(what) => format!("migrating {what}"),
            Failed::Transaction => "controlling the transaction".to_owned(),
            Failed::Other(what) => (*what).to_owned(),
        }
    }
}

/// Maps a database error raised while doing `what`.
pub(crate) fn map_db_error(err: tokio_postgres::Error, what: Failed<'_>) -> Error {
    let Some(code) = err.code().cloned() else {
        let context = what.context();
        return if err.is_closed() || is_io(&err) {
            Error::Connection(database_error(err, None, context))
        } else {
            Error::Database(database_error(err, None, context))
        };
    };
    if code == SqlState::UNIQUE_VIOLATION
        && err.as_db_error().and_then(|db| db.constraint())
            == Some(crate::tables::events::EVENT_ID_INDEX)
    {
        // The unit of work names the ids (it knows the save's events).
        return Error::DuplicateEvent { ids: Vec::new() };
    }
    if code == SqlState::UNIQUE_VIOLATION {
        if let Failed::Writing {
            document_type,
            table,
            ..
        } = what
        {
            let (field, message) = err.as_db_error().map_or_else(
                || (String::new(), String::new()),
                |db| {
                    let constraint = db.constraint().unwrap_or_default();
                    let field = crate::tables::documents::unique_field(table, constraint)
                        .unwrap_or(constraint);
                    (
                        field.to_owned(),
                        db.detail().unwrap_or_else(|| db.message()).to_owned(),
                    )
                },
            );
            return Error::UniqueViolation {
                document_type,
                field,
                message,
            };
        }
    }
    if code == SqlState::UNDEFINED_TABLE || code == SqlState::UNDEFINED_COLUMN {
        if let Failed::Writing { schema, table, .. } = what {
            return Error::SchemaObjectMissing {
                object: format!("{schema}.{table}"),
            };
        }
    }
    if code == SqlState::UNDEFINED_FUNCTION {
        if let Failed::Guard { schema } = what {
            return Error::SchemaObjectMissing {
                object: format!("{schema}.{}()", crate::tables::functions::GUARD_FUNCTION),
            };
        }
    }
    let source = database_error(err, Some(code.clone()), what.context());
    classify(&code, source)
}

/// The variant of a failure the server reported with `code`, by SQLSTATE (and class).
fn classify(code: &SqlState, source: DatabaseError) -> Error {
    use marten_core::ConflictKind;
    let class = code.code().get(..2).unwrap_or_default();
    if *code == SqlState::T_R_SERIALIZATION_FAILURE {
        Error::Conflict {
            kind: ConflictKind::Serialization,
            source,
        }
    } else if *code == SqlState::T_R_DEADLOCK_DETECTED {
        Error::Conflict {
            kind: ConflictKind::Deadlock,
            source,
        }
    } else if *code == SqlState::QUERY_CANCELED {
        Error::Canceled(source)
    } else if *code == SqlState::LOCK_NOT_AVAILABLE {
        Error::LockNotAvailable(source)
    } else if *code == SqlState::TOO_MANY_CONNECTIONS {
        Error::TooManyConnections(source)
    } else if *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || class == "08"
    {
        Error::Connection(source)
    } else if class == "28" {
        Error::Authentication(source)
    } else {
        Error::Database(source)
    }
}

/// Whether `err` means the connection was lost without an answer from the server (it
/// closed, or reading or writing it failed), as opposed to the server reporting an error.
pub(crate) fn is_lost(err: &tokio_postgres::Error) -> bool {
    err.code().is_none() && (err.is_closed() || is_io(err))
}

fn is_io(err: &tokio_postgres::Error) -> bool {
    std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>())
}

/// A failure without an SQLSTATE (the connection was lost) while doing `context`.
pub(crate) fn lost_error(err: tokio_postgres::Error, context: &str) -> DatabaseError {
    database_error(err, None, context.to_owned())
}

fn database_error(
    err: tokio_postgres::Error,
    code: Option<SqlState>,
    context: String,
) -> DatabaseError {
    DatabaseError {
        code: code.map(|c| c.code().to_owned()),
        context,
        source: Box::new(err),
    }
}

/// The error of a failed read of documents of type `D`.
pub(crate) fn reading_documents<D: marten_core::Document>(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE))
}

/// Maps a pool failure (no connection could be obtained) of a pool of `size` connections
/// after waiting `waited`.
pub(crate) fn map_pool_error(
    err: deadpool_postgres::PoolError,
    size: usize,
    waited: std::time::Duration,
) -> Error {
    use deadpool_postgres::{PoolError, TimeoutType};
    match err {
        PoolError::Backend(e) => map_db_error(e, Failed::Other("connecting")),
        PoolError::Timeout(TimeoutType::Wait) => Error::PoolExhausted {
            size,
            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        },
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => {
            map_db_error(e, Failed::Other("running the after-connect hook"))
        }
        PoolError::Timeout(_) => Error::Timeout {
            what: "a new database connection".to_owned(),
        },
        other => Error::Connection(DatabaseError {
            code: None,
            context: "getting a connection from the pool".to_owned(),
            source: Box::new(other),
        }),
    }
}
