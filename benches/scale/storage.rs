//! Storage at one level: bytes per event and per document (tables with their indexes and
//! TOAST) against the minimal raw tables seeded with the same rows, and each index's size.

use tokio_postgres::Client;

/// Bytes per row of the store and of the raw schema.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PerRow {
    pub marten: f64,
    pub raw: f64,
    pub rows: i64,
}

/// The storage figures of one level.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Storage {
    pub per_event: PerRow,
    pub per_doc: PerRow,
    /// (index, bytes) of every index of the schema.
    pub indexes: Vec<(String, i64)>,
}

/// The event store's tables: what an event costs is all of them.
const EVENT_TABLES: &str =
    "pg_total_relation_size('mt_events') + pg_total_relation_size('mt_streams') \
     + pg_total_relation_size('mt_event_tags') + pg_total_relation_size('mt_tag_versions')";

async fn one(raw: &Client, sql: &str) -> i64 {
    raw.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Measures the storage of the schema `schema` (the raw client's search path).
pub async fn measure(raw: &Client, schema: &str) -> Storage {
    let events = one(raw, "SELECT count(*) FROM mt_events").await;
    let raw_events = one(raw, "SELECT count(*) FROM raw_events").await;
    let docs = one(raw, "SELECT count(*) FROM mt_doc_customer").await;
    let bytes = one(raw, &format!("SELECT ({EVENT_TABLES})::bigint")).await;
    let raw_bytes = one(raw, "SELECT pg_total_relation_size('raw_events')").await;
    let doc_bytes = one(raw, "SELECT pg_total_relation_size('mt_doc_customer')").await;
    let raw_doc_bytes = one(raw, "SELECT pg_total_relation_size('raw_docs')").await;
    let per = |b: i64, n: i64| if n > 0 { b as f64 / n as f64 } else { 0.0 };
    let indexes = raw
        .query(
            "SELECT indexrelname::text, pg_relation_size(indexrelid) FROM pg_stat_user_indexes \
             WHERE schemaname = $1 ORDER BY relname, indexrelname",
            &[&schema],
        )
        .await
        .expect("index sizes")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Storage {
        per_event: PerRow {
            marten: per(bytes, events),
            raw: per(raw_bytes, raw_events),
            rows: events,
        },
        per_doc: PerRow {
            marten: per(doc_bytes, docs),
            raw: per(raw_doc_bytes, docs),
            rows: docs,
        },
        indexes,
    }
}
