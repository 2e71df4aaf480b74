//! [`Db`]: one connection of the store with the store's statements. Every statement of
//! marten on a pooled connection goes through it, so that its text is qualified for the
//! store's schema and sent the way the store sends statements (named and cached, or
//! unnamed behind a pooler).

use std::future::Future;

use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, CopyInSink, Row, RowStream};
use tracing::debug;

use super::statements::{SqlText, Statements, Stmt};
use super::Pooled;

type PgResult<T> = Result<T, tokio_postgres::Error>;
type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// A pooled connection and the store's statements.
#[derive(Clone, Copy)]
pub(crate) struct Db<'a> {
    client: &'a Pooled,
    statements: &'a Statements,
}

/// A statement to send: a text (qualified and prepared or described on the way) or one
/// made ready before.
pub(crate) trait Sendable: Sync {
    /// The text, unless the statement is ready.
    fn source(&self) -> Result<&str, &Stmt>;
}

impl Sendable for str {
    fn source(&self) -> Result<&str, &Stmt> {
        Ok(self)
    }
}

impl Sendable for String {
    fn source(&self) -> Result<&str, &Stmt> {
        Ok(self)
    }
}

impl Sendable for Stmt {
    fn source(&self) -> Result<&str, &Stmt> {
        Err(self)
    }
}

impl<'a> Db<'a> {
    /// `client` with `statements`.
    pub(crate) fn new(client: &'a Pooled, statements: &'a Statements) -> Self {
        Self { client, statements }
    }

    /// The client itself (for what is not a statement: its state, its cancel token).
    pub(crate) fn raw(&self) -> &'a Client {
        self.client
    }

    /// Whether the connection is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// `sql` made ready to send on this connection.
    pub(crate) async fn statement(&self, sql: impl Into<SqlText<'_>>) -> PgResult<Stmt> {
        self.statements.statement(self.client, sql.into()).await
    }

    async fn ready<S: Sendable + ?Sized>(&self, statement: &S) -> PgResult<Stmt> {
        match statement.source() {
            Ok(sql) => self.statement(sql).await,
            Err(ready) => Ok(ready.clone()),
        }
    }

    /// Sends a ready statement; its first poll writes it (for pipelines).
    pub(crate) fn send(
        &self,
        statement: &'a Stmt,
        params: Params<'a>,
    ) -> impl Future<Output = PgResult<Vec<Row>>> + Send + 'a {
        rows(self.client, statement, params)
    }

    /// Runs a statement and returns its rows.
    pub(crate) async fn query<S: Sendable + ?Sized>(
        &self,
        statement: &S,
        params: Params<'_>,
    ) -> PgResult<Vec<Row>> {
        let ready = self.ready(statement).await?;
        rows(self.client, &ready, params).await
    }

    /// Runs a statement that returns exactly one row.
    pub(crate) async fn query_one<S: Sendable + ?Sized>(
        &self,
        statement: &S,
        params: Params<'_>,
    ) -> PgResult<Row> {
        let ready = self.ready(statement).await?;
        let result = match &ready {
            Stmt::Prepared(prepared) => self.client.query_one(prepared, params).await,
            Stmt::Unnamed(text, types) => {
                let typed: Vec<_> = params.iter().copied().zip(types.iter().cloned()).collect();
                self.client.query_typed_one(&text.sql, &typed).await
            }
        };
        refreshing(self.client, &ready, result)
    }

    /// Runs a statement that returns at most one row.
    pub(crate) async fn query_opt<S: Sendable + ?Sized>(
        &self,
        statement: &S,
        params: Params<'_>,
    ) -> PgResult<Option<Row>> {
        let ready = self.ready(statement).await?;
        let result = match &ready {
            Stmt::Prepared(prepared) => self.client.query_opt(prepared, params).await,
            Stmt::Unnamed(text, types) => {
                let typed: Vec<_> = params.iter().copied().zip(types.iter().cloned()).collect();
                self.client.query_typed_opt(&text.sql, &typed).await
            }
        };
        refreshing(self.client, &ready, result)
    }

    /// Runs a statement and returns the number of rows it wrote.
    pub(crate) async fn execute<S: Sendable + ?Sized>(
        &self,
        statement: &S,
        params: Params<'_>,
    ) -> PgResult<u64> {
        let ready = self.ready(statement).await?;
        let result = match &ready {
            Stmt::Prepared(prepared) => self.client.execute(prepared, params).await,
            Stmt::Unnamed(text, types) => {
                let typed: Vec<_> = params.iter().copied().zip(types.iter().cloned()).collect();
                self.client.execute_typed(&text.sql, &typed).await
            }
        };
        refreshing(self.client, &ready, result)
    }

    /// Runs a ready statement, its rows streamed as they arrive.
    pub(crate) async fn query_raw(
        &self,
        statement: &Stmt,
        params: Params<'_>,
    ) -> PgResult<RowStream> {
        let result = match statement {
            Stmt::Prepared(prepared) => {
                self.client
                    .query_raw(prepared, params.iter().copied())
                    .await
            }
            Stmt::Unnamed(text, types) => {
                let typed = params.iter().copied().zip(types.iter().cloned());
                self.client.query_typed_raw(&text.sql, typed).await
            }
        };
        refreshing(self.client, statement, result)
    }

    /// Starts a `COPY ... FROM STDIN`, qualified: the sink takes the data (see
    /// `tokio_postgres::binary_copy`) and its `finish` answers how many rows were copied.
    /// Prepared and cached like other statements, unless the store sends statements
    /// unnamed (then it is parsed on each use).
    pub(crate) async fn copy_in(&self, sql: &str) -> PgResult<CopyInSink<Bytes>> {
        if self.statements.prepared() {
            if let Stmt::Prepared(statement) = self.statement(sql).await? {
                return self.client.copy_in(&statement).await;
            }
        }
        let text = self.statements.text(sql);
        self.client.copy_in(text.sql.as_str()).await
    }

    /// Runs statements without parameters over the simple protocol, qualified.
    pub(crate) async fn batch_execute(&self, sql: &str) -> PgResult<()> {
        self.client
            .batch_execute(&self.statements.simple(sql))
            .await
    }
}

/// `result`, of running `statement` on `client`: a prepared statement PostgreSQL refused
/// to run because the shape of its result changed since it was prepared (`0A000`,
/// "cached plan must not change result type": a table it reads with `*` gained or lost a
/// column) makes the connection forget its prepared statements
/// ([`Pooled::forget_statements`]). The error is returned (the statement did not run;
/// inside a transaction, the transaction is aborted, so it is not run again here), and
/// the next use prepares the statement again.
fn refreshing<T>(client: &Pooled, statement: &Stmt, result: PgResult<T>) -> PgResult<T> {
    if let (Stmt::Prepared(_), Err(e)) = (statement, &result) {
        if e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) {
            debug!(
                error = %e,
                "a prepared statement was refused (its result changed shape?): the \
                 connection prepares its statements again"
            );
            client.forget_statements();
        }
    }
    result
}

/// The rows of `statement` run with `params` on `client` (see [`refreshing`]).
async fn rows(client: &Pooled, statement: &Stmt, params: Params<'_>) -> PgResult<Vec<Row>> {
    match statement {
        Stmt::Prepared(prepared) => {
            let result = client.query(prepared, params).await;
            refreshing(client, statement, result)
        }
        Stmt::Unnamed(text, types) => {
            let typed = params.iter().copied().zip(types.iter().cloned());
            client
                .query_typed_raw(&text.sql, typed)
                .await?
                .try_collect()
                .await
        }
    }
}
