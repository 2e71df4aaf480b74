//! The raw referent of an append with an inline projection, the same work by hand: lock
//! the stream row and read the aggregate's document, fold the event in Rust, then append
//! (the stream row is known to exist and is locked: bump it), upsert the document and
//! commit. Two flights, as a save with an inline aggregate that reads under lock.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::counter::{Counter, Ticked};

const LOCK: &str =
    "SELECT s.version, d.data FROM mt_streams s LEFT JOIN mt_doc_counter d ON d.id = s.id \
     WHERE s.id = $1 FOR UPDATE OF s";
const APPEND: &str = "WITH s AS (UPDATE mt_streams SET version = version + 1, timestamp = now(), \
     last_tx = greatest(last_tx, pg_current_xact_id()) WHERE id = $1 RETURNING version, last_tx) \
     INSERT INTO mt_events (id, stream_id, version, type, data, tx_id) SELECT $2, $1, s.version, 'ticked', $3, s.last_tx FROM s";
const UPSERT: &str = "INSERT INTO mt_doc_counter AS d (id, data, mt_last_modified) VALUES ($1, $2, now()) \
     ON CONFLICT (id) DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified";

/// The referent's statements, prepared on its connection.
pub struct RawInline {
    lock: Statement,
    append: Statement,
    upsert: Statement,
}

impl RawInline {
    /// Prepares the statements on `raw` (whose search path is the store's schema).
    pub async fn prepare(raw: &Client) -> RawInline {
        let prepare = async |sql: &str| raw.prepare(sql).await.expect("prepare");
        RawInline {
            lock: prepare(LOCK).await,
            append: prepare(APPEND).await,
            upsert: prepare(UPSERT).await,
        }
    }

    /// Appends `event` to `stream` and writes the stream's `Counter` (the stored one, or a
    /// new one) with the event folded in at the new version.
    pub async fn append(&self, raw: &Client, stream: Uuid, event: &Ticked) {
        let lock_params: [&(dyn ToSql + Sync); 1] = [&stream];
        let (begin, row) = tokio::join!(
            raw.batch_execute("BEGIN"),
            raw.query_one(&self.lock, &lock_params)
        );
        begin.expect("begin");
        let row = row.expect("lock");
        let version: i64 = row.get(0);
        let mut doc = match row.get::<_, Option<serde_json::Value>>(1) {
            Some(v) => serde_json::from_value(v).expect("decode"),
            None => Counter {
                id: stream,
                ..Counter::default()
            },
        };
        doc.total += event.n;
        doc.version = version + 1;
        let (event_id, data, doc) = (
            Uuid::now_v7(),
            serde_json::to_value(event).expect("json"),
            serde_json::to_value(&doc).expect("json"),
        );
        let append_params: [&(dyn ToSql + Sync); 3] = [&stream, &event_id, &data];
        let upsert_params: [&(dyn ToSql + Sync); 2] = [&stream, &doc];
        let (a, u, c) = tokio::join!(
            raw.execute(&self.append, &append_params),
            raw.execute(&self.upsert, &upsert_params),
            raw.batch_execute("COMMIT")
        );
        assert_eq!(a.expect("append"), 1);
        u.expect("upsert");
        c.expect("commit");
    }
}
