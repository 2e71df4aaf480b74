//! Statements of the caller's own against the store's tables, for tools that read what
//! marten keeps (the web console lists streams, a stream's events, dead letters and tags
//! with SQL of its own): [`DocumentStore::sql_query`] and [`DocumentStore::sql_execute`].
//! They run on the store's pool like marten's statements (a bounded wait for a
//! connection, the store's request timeout, a connection dropped mid-request closed, not
//! reused) and are qualified the same way: marten's own tables named without a schema
//! are read from the store's schema.
//!
//! May use: the connection layer and the error mapping.

use marten_core::Result;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::connection::Conn;
use crate::error_map::{map_db_error, Failed};
use crate::store::DocumentStore;

impl DocumentStore {
    /// Runs one parameterized statement (`$1..` bound to `params`, never formatted into
    /// the text) on a connection of the store's pool and returns its rows. marten's
    /// tables named without a schema (`mt_events`, `mt_streams`, `mt_event_progression`,
    /// ...) are the store's. Not inside any session's transaction: for reads.
    pub async fn sql_query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut conn = Conn::new();
        conn.run(self, async |client| {
            client
                .query(sql, params)
                .await
                .map_err(|e| map_db_error(e, Failed::Other("running a caller's query")))
        })
        .await
    }

    /// Runs one parameterized statement that writes (its own transaction) and returns
    /// the number of rows it wrote. See [`DocumentStore::sql_query`].
    pub async fn sql_execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let mut conn = Conn::new();
        conn.run(self, async |client| {
            client
                .execute(sql, params)
                .await
                .map_err(|e| map_db_error(e, Failed::Other("running a caller's statement")))
        })
        .await
    }
}
