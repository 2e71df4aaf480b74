//! Statements of the caller's own against the store's tables, for tools that read what
//! marten keeps (the web console lists streams, a stream's events, dead letters and tags
//! with SQL of its own): [`DocumentStore::sql_query`] and [`DocumentStore::sql_execute`].
//! They run on the store's pool like marten's statements (a bounded wait for a
//! connection, the store's request timeout, a connection dropped mid-request closed, not
//! reused) and are qualified the same way: marten's own tables named without a schema
//! are read from the store's schema.
//!
//! A call is one statement in a transaction of its own, and the pooled connection it ran
//! on must come back as it was taken, for the next request of any session: statements
//! that begin or end a transaction are refused before anything is sent, and a
//! connection a statement may have left session state on (a setting, a session-level
//! advisory lock, a temporary table, a `LISTEN`, a prepared statement or cursor of its
//! own) is closed after it instead of going back to the pool. Both are judged from the
//! statement's words (see [`aftermath`]).
//!
//! May use: the connection layer, the statement scanner and the error mapping.

use marten_core::{Error, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tracing::{debug, warn};

use crate::connection::{timed_out, unanswered, within, Conn, Db};
use crate::error_map::{map_db_error, Failed};
use crate::store::DocumentStore;
use crate::tables::qualify::{quoted_names, words};

/// Statements that begin or end a transaction or a savepoint (`COMMIT PREPARED` and
/// `ROLLBACK PREPARED` aside, and with `PREPARE TRANSACTION`): refused.
const TRANSACTION_CONTROL: &[&str] = &[
    "ABORT",
    "BEGIN",
    "COMMIT",
    "END",
    "RELEASE",
    "ROLLBACK",
    "SAVEPOINT",
    "START",
];

/// Statements that read and write rows and leave nothing on the connection, unless they
/// call a function that does ([`SESSION_WORDS`]).
const DATA: &[&str] = &[
    "DELETE", "EXPLAIN", "INSERT", "MERGE", "SELECT", "SHOW", "TABLE", "UPDATE", "VALUES", "WITH",
];

/// Names that in a data statement may leave session state: the session-level advisory
/// locks, `set_config` (which may set a setting for the session) and the `pg_settings`
/// view (an `UPDATE` of it is a `set_config` for the session), `setseed` (the session's
/// random sequence), dblink's connections. Named plainly or quoted
/// (`"pg_advisory_lock"(1)`).
const SESSION_WORDS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "set_config",
    "pg_settings",
    "setseed",
    "dblink_connect",
    "dblink_connect_u",
];

/// Words of a statement that writes rows (itself or in a `WITH`): a caller's query that
/// names one and loses its answer has an unknown outcome.
const WRITE_WORDS: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE"];

/// Words that after `INTO` make a data statement create a temporary table (`SELECT ...
/// INTO TEMP t`); elsewhere they may be a column's name.
const TEMPORARY: &[&str] = &["temp", "temporary"];

/// Why a transaction-control statement is refused.
const TRANSACTION_REASON: &str = "begins or ends a transaction, which raw SQL cannot: each \
     call is one statement in a transaction of its own on a pooled connection (use a \
     session for several statements in one transaction)";

/// Whether `word` is one of `list`, whatever its case.
fn is(word: &str, list: &[&str]) -> bool {
    list.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// What a caller's statement may leave on its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aftermath {
    /// Nothing that outlives the statement: the connection goes back to the pool.
    Nothing,
    /// Session state: the connection is closed after the statement.
    Session,
}

/// What running `sql` may leave on its connection, judged from its words (outside
/// literals, quoted names and comments): refused ([`Error::InvalidInput`]) when it
/// begins or ends a transaction; [`Aftermath::Nothing`] when it is a data statement
/// (`SELECT`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `WITH`, `VALUES`, `TABLE`, `SHOW`,
/// `EXPLAIN`) naming none of [`SESSION_WORDS`]; [`Aftermath::Session`] otherwise (`SET`,
/// `LISTEN`, `PREPARE`, `DECLARE`, `CREATE TEMP TABLE`, `DO`, `CALL`, `DISCARD`, DDL, ...).
fn aftermath(sql: &str) -> Result<Aftermath> {
    let mut words = words(sql).peekable();
    let Some(first) = words.next() else {
        return Ok(Aftermath::Nothing);
    };
    let second = words.peek().copied().unwrap_or_default();
    let transaction = if first.eq_ignore_ascii_case("PREPARE") {
        second.eq_ignore_ascii_case("TRANSACTION")
    } else if first.eq_ignore_ascii_case("COMMIT") || first.eq_ignore_ascii_case("ROLLBACK") {
        !second.eq_ignore_ascii_case("PREPARED")
    } else {
        is(first, TRANSACTION_CONTROL)
    };
    if transaction {
        let named = match first.eq_ignore_ascii_case("PREPARE") {
            true => format!("{first} {second}"),
            false => first.to_owned(),
        };
        return Err(Error::InvalidInput {
            owner: "raw SQL".to_owned(),
            id: None,
            field: format!("statement {}", named.to_ascii_uppercase()),
            reason: TRANSACTION_REASON,
        });
    }
    if is(first, DATA) && !names_session_state(sql) {
        return Ok(Aftermath::Nothing);
    }
    Ok(Aftermath::Session)
}

/// Whether the data statement `sql` calls one of [`SESSION_WORDS`] (by a plain or a
/// quoted name; a name written with Unicode escapes counts, as it cannot be read here)
/// or selects `INTO TEMP`.
fn names_session_state(sql: &str) -> bool {
    let mut previous = "";
    for word in words(sql) {
        if is(word, SESSION_WORDS) || (previous.eq_ignore_ascii_case("INTO") && is(word, TEMPORARY))
        {
            return true;
        }
        previous = word;
    }
    quoted_names(sql).any(|name| name.is_none_or(|n| SESSION_WORDS.contains(&n.as_str())))
}

/// Whether `sql` names a statement that writes rows ([`WRITE_WORDS`]): `UPDATE` after
/// `FOR` or `KEY` is a row lock of a read (`FOR UPDATE`, `FOR NO KEY UPDATE`), not one.
fn writes(sql: &str) -> bool {
    let mut previous = "";
    for word in words(sql) {
        let lock = word.eq_ignore_ascii_case("UPDATE") && is(previous, &["FOR", "KEY"]);
        if is(word, WRITE_WORDS) && !lock {
            return true;
        }
        previous = word;
    }
    false
}

impl DocumentStore {
    /// Runs one parameterized statement (`$1..` bound to `params`, never formatted into
    /// the text) on a connection of the store's pool and returns its rows. marten's
    /// tables named without a schema (`mt_events`, `mt_streams`, `mt_event_progression`,
    /// ...) are the store's. Not inside any session's transaction: for reads.
    ///
    /// The statement runs in a transaction of its own (autocommit), and nothing it does
    /// to its connection outlives it:
    /// - a statement that begins or ends a transaction or a savepoint (`BEGIN`, `START
    ///   TRANSACTION`, `COMMIT`, `END`, `ROLLBACK`, `ABORT`, `SAVEPOINT`, `RELEASE`,
    ///   `PREPARE TRANSACTION`) is refused with [`Error::InvalidInput`] naming it, before
    ///   anything is sent (use a session for a transaction);
    /// - after a statement that may leave session state on its connection, that
    ///   connection is closed instead of going back to the pool, which ends the state
    ///   with it: any statement but `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`,
    ///   `WITH`, `VALUES`, `TABLE`, `SHOW` and `EXPLAIN` (so `SET`, `LISTEN`, `PREPARE`,
    ///   `DECLARE`, `CREATE TEMP TABLE`, `DO`, `CALL`, DDL), and those naming a
    ///   session-level advisory lock (`pg_advisory_lock`, `pg_try_advisory_lock` and their
    ///   `_shared` forms), `set_config`, `pg_settings`, `setseed` or `dblink_connect`
    ///   (plainly or quoted, or any `U&"..."` name), or selecting `INTO TEMP`. A
    ///   function of your own that changes its session is not seen: set what every
    ///   connection needs in the builder's `after_connect`.
    ///
    /// A statement that writes (`INSERT`, `UPDATE`, `DELETE` or `MERGE`, in a `WITH`
    /// too; `FOR UPDATE` is a read's row lock) and loses its connection or its answer's deadline after it was sent is
    /// [`Error::OutcomeUnknown`], as [`sql_execute`](Self::sql_execute) is: it may have
    /// committed. Other statements are reads (a lost connection is
    /// [`Error::Connection`], a deadline [`Error::Timeout`]); a function of your own that
    /// writes is not seen: call it with `sql_execute`.
    pub async fn sql_query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let writes = writes(sql);
        self.run_raw(sql, writes, async |client| {
            client
                .query(sql, params)
                .await
                .map_err(|e| map_db_error(e, Failed::Other("running a caller's query")))
        })
        .await
    }

    /// Runs one parameterized statement that writes (its own transaction) and returns
    /// the number of rows it wrote. Statements that begin or end a transaction are
    /// refused, and a connection left with session state is closed, as
    /// [`DocumentStore::sql_query`] describes. A statement whose connection is lost, or
    /// whose answer does not come within the request timeout, is
    /// [`Error::OutcomeUnknown`]: it may have committed (read before running it again).
    pub async fn sql_execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.run_raw(sql, true, async |client| {
            client
                .execute(sql, params)
                .await
                .map_err(|e| map_db_error(e, Failed::Other("running a caller's statement")))
        })
        .await
    }

    /// Runs `f`, a caller's statement `sql`, as one request on a connection of the pool,
    /// after [`aftermath`] allowed it; closes the connection after it when the statement
    /// may have left session state. A statement that `writes` and whose connection or
    /// deadline is lost has an unknown outcome.
    async fn run_raw<T>(
        &self,
        sql: &str,
        writes: bool,
        f: impl AsyncFnOnce(Db<'_>) -> Result<T>,
    ) -> Result<T> {
        let kept = aftermath(sql)? == Aftermath::Nothing;
        let mut conn = Conn::new();
        let req = conn.request(self).await?;
        let Some(result) = within(self, f(req.client())).await else {
            warn!("a request timed out");
            // Unfinished: the guard cancels and closes the connection.
            drop(req);
            return Err(match writes {
                true => unanswered(self, "the answer to a caller's statement"),
                false => timed_out(self),
            });
        };
        let result = match result {
            // Sent (or not: the caller cannot tell which) and never answered.
            Err(Error::Connection(lost)) if writes => Err(Error::OutcomeUnknown(lost)),
            result => result,
        };
        if kept {
            req.settle(&result);
        } else {
            debug!("closing the connection of a statement that may have left session state");
            // Every answer was read; the connection is closed, not given back.
            req.finish_broken();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::{aftermath, Aftermath};
    use marten_core::Error;

    #[test]
    fn statements_that_begin_or_end_a_transaction_are_refused_by_name() {
        for (sql, named) in [
            ("BEGIN", "BEGIN"),
            ("begin isolation level serializable", "BEGIN"),
            ("  /* first */ -- then\n start transaction", "START"),
            ("; COMMIT", "COMMIT"),
            ("commit and chain", "COMMIT"),
            ("END", "END"),
            ("ROLLBACK TO SAVEPOINT a", "ROLLBACK"),
            ("abort", "ABORT"),
            ("SAVEPOINT a", "SAVEPOINT"),
            ("release a", "RELEASE"),
            ("prepare transaction 'x'", "PREPARE TRANSACTION"),
        ] {
            match aftermath(sql) {
                Err(Error::InvalidInput { field, .. }) => {
                    assert_eq!(field, format!("statement {named}"), "{sql}");
                }
                other => panic!("{sql}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn writes_are_told_from_row_locks() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "with x as (delete from t returning *) select * from x",
            "UPDATE t SET a = 1",
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
        ] {
            assert!(super::writes(sql), "{sql}");
        }
        for sql in [
            "SELECT * FROM t FOR UPDATE",
            "select * from t for no key update skip locked",
            "SELECT 'UPDATE' FROM t",
        ] {
            assert!(!super::writes(sql), "{sql}");
        }
    }

    #[test]
    fn data_statements_leave_nothing_unless_they_name_session_state() {
        for sql in [
            "SELECT 1",
            "(SELECT 1)",
            "with x as (select 1) select * from x",
            "INSERT INTO t VALUES ('BEGIN')",
            "UPDATE t SET a = 'pg_advisory_lock(1)'",
            "DELETE FROM t WHERE id = $1 -- set_config",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT temp, temporary FROM readings",
            "SELECT \"temp\" INTO t2 FROM readings",
            "SELECT \"Pg_Advisory_Lock\"(1)",
            "",
            "-- nothing",
        ] {
            assert_eq!(aftermath(sql).ok(), Some(Aftermath::Nothing), "{sql}");
        }
        for sql in [
            "SELECT pg_advisory_lock(1)",
            "select PG_TRY_ADVISORY_LOCK_SHARED($1)",
            "SELECT pg_catalog.set_config('statement_timeout', '1', false)",
            "SELECT * INTO TEMP t FROM x",
            "select * into temporary t from x",
            "SELECT \"pg_advisory_lock\"(42)",
            "SELECT pg_catalog.\"set_config\"('search_path', 'x', false)",
            "SELECT U&\"pg\\0061dvisory_lock\"(42)",
            "SET statement_timeout = 1",
            "LISTEN x",
            "PREPARE p AS SELECT 1",
            "CREATE TEMPORARY TABLE t (a int)",
            "DISCARD ALL",
            "DO $$ BEGIN END $$",
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'synchronous_commit'",
            "SELECT setseed(0.5)",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
        ] {
            assert_eq!(aftermath(sql).ok(), Some(Aftermath::Session), "{sql}");
        }
    }
}
