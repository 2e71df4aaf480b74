//! Seeding the store by binary `COPY`, straight into its tables: streams of ten events
//! (`mt_streams`, `mt_events`), the tags of every tenth stream (`mt_event_tags`,
//! `mt_tag_versions`), documents (`mt_doc_customer`), and the same rows into the minimal
//! raw tables the storage is compared with. One transaction per batch, so the events of
//! a batch share its transaction id, as the events of one save do.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use postgres_types::{accepts, to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use super::model::{course_id, Customer, OrderPlaced, StudentEnrolled};

/// Events of one stream.
pub const STREAM_LEN: u64 = 10;
/// Events per seeding transaction.
const BATCH_EVENTS: u64 = 100_000;
/// Documents per seeding transaction.
const BATCH_DOCS: u64 = 100_000;

/// The minimal raw schema the storage is compared with.
pub const RAW_DDL: &str = "CREATE TABLE raw_events (stream_id uuid, version bigint, data jsonb, \
     PRIMARY KEY (stream_id, version)); \
     CREATE TABLE raw_docs (id uuid PRIMARY KEY, data jsonb)";

/// What was seeded: the streams (by role) and documents to pick from.
#[derive(Default)]
pub struct Seeded {
    /// Streams read by `fetch_stream` (every stream but the append targets).
    pub read_streams: Vec<Uuid>,
    /// Streams the append measurement appends to (every tenth stream, never read).
    pub append_streams: Vec<Uuid>,
    /// Streams seeded so far (their number decides their role).
    pub streams: u64,
    /// Events seeded so far.
    pub events: u64,
    /// Ids of the seeded documents.
    pub docs: Vec<Uuid>,
}

impl Seeded {
    /// Courses with tagged events so far (two tagged streams each).
    pub fn courses(&self) -> u64 {
        self.streams.div_ceil(10).div_ceil(2)
    }
}

/// A JSON text written as `jsonb` (binary format: version 1, then the text).
#[derive(Debug)]
struct Jsonb<'a>(&'a str);

impl ToSql for Jsonb<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_u8(1);
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    accepts!(JSONB);
    to_sql_checked!();
}

/// One event row of a batch.
struct EventRow {
    seq: i64,
    id: Uuid,
    stream: Uuid,
    version: i64,
    kind: &'static str,
    data: String,
    course: Option<Uuid>,
}

/// The rows of the stream numbered `n`: every tenth stream (n % 10 == 0) is tagged with
/// a course (two streams a course), the next one is an append target.
fn stream_rows(n: u64, stream: Uuid, first_seq: i64, out: &mut Vec<EventRow>) {
    let tagged = n.is_multiple_of(10);
    let course = course_id(n / 20);
    for v in 1..=STREAM_LEN as i64 {
        let (kind, data) = if tagged {
            let e = StudentEnrolled {
                course_id: super::model::CourseId(course),
                student: Uuid::new_v4(),
                name: format!("student {n}-{v}"),
            };
            ("student_enrolled", serde_json::to_string(&e))
        } else {
            let e = OrderPlaced {
                customer: format!("customer-{}", n % 50_000),
                sku: format!("SKU-{:05}", (n * 7 + v as u64) % 20_000),
                cents: (n as i64 * 31 + v * 17) % 100_000,
                express: v % 3 == 0,
                note: "leave at the front door, ring twice".to_owned(),
            };
            ("order_placed", serde_json::to_string(&e))
        };
        out.push(EventRow {
            seq: first_seq + v - 1,
            id: Uuid::now_v7(),
            stream,
            version: v,
            kind,
            data: data.expect("event as JSON"),
            course: tagged.then_some(course),
        });
    }
}

/// Seeds `count` more events (rounded up to whole streams) in batches.
pub async fn events(client: &mut Client, seeded: &mut Seeded, count: u64) {
    let mut left = count;
    while left > 0 {
        let batch = left.min(BATCH_EVENTS).div_ceil(STREAM_LEN) * STREAM_LEN;
        event_batch(client, seeded, batch).await;
        left = left.saturating_sub(batch);
    }
}

async fn event_batch(client: &mut Client, seeded: &mut Seeded, count: u64) {
    let tx = client.transaction().await.expect("begin");
    // Reserves the batch's sequences: the store's appends continue after them.
    let last: i64 = tx
        .query_one(
            "SELECT setval('mt_events_sequence', nextval('mt_events_sequence') + $1 - 1)",
            &[&(count as i64)],
        )
        .await
        .expect("reserve sequences")
        .get(0);
    let mut seq = last - count as i64 + 1;
    let (mut streams, mut rows) = (Vec::new(), Vec::with_capacity(count as usize));
    for _ in 0..count / STREAM_LEN {
        let (n, id) = (seeded.streams, Uuid::now_v7());
        stream_rows(n, id, seq, &mut rows);
        seq += STREAM_LEN as i64;
        streams.push(id);
        match n % 10 {
            1 => seeded.append_streams.push(id),
            _ => seeded.read_streams.push(id),
        }
        seeded.streams += 1;
    }
    copy_streams(&tx, &streams).await;
    copy_events(&tx, &rows).await;
    copy_tags(&tx, &rows).await;
    copy_raw_events(&tx, &rows).await;
    tx.execute(
        "INSERT INTO mt_tag_versions (tag_type, tag_value, version) \
         SELECT tag_type, tag_value, count(*) FROM mt_event_tags WHERE seq_id BETWEEN $1 AND $2 \
         GROUP BY tag_type, tag_value \
         ON CONFLICT (tag_type, tag_value, tenant_id) DO UPDATE \
         SET version = mt_tag_versions.version + excluded.version",
        &[&(last - count as i64 + 1), &last],
    )
    .await
    .expect("tag versions");
    tx.commit().await.expect("commit");
    seeded.events += count;
}

async fn writer(
    tx: &Transaction<'_>,
    sql: &str,
    types: &[Type],
) -> std::pin::Pin<Box<BinaryCopyInWriter>> {
    let sink = tx.copy_in(sql).await.expect("copy");
    Box::pin(BinaryCopyInWriter::new(sink, types))
}

async fn copy_streams(tx: &Transaction<'_>, streams: &[Uuid]) {
    let sql = "COPY mt_streams (id, version) FROM STDIN (FORMAT binary)";
    let mut w = writer(tx, sql, &[Type::UUID, Type::INT8]).await;
    for id in streams {
        let v = STREAM_LEN as i64;
        w.as_mut().write(&[id, &v]).await.expect("stream row");
    }
    w.as_mut().finish().await.expect("streams");
}

async fn copy_events(tx: &Transaction<'_>, rows: &[EventRow]) {
    let sql =
        "COPY mt_events (seq_id, id, stream_id, version, type, data) FROM STDIN (FORMAT binary)";
    let types = [
        Type::INT8,
        Type::UUID,
        Type::UUID,
        Type::INT8,
        Type::TEXT,
        Type::JSONB,
    ];
    let mut w = writer(tx, sql, &types).await;
    for r in rows {
        let data = Jsonb(&r.data);
        let row: [&(dyn ToSql + Sync); 6] = [&r.seq, &r.id, &r.stream, &r.version, &r.kind, &data];
        w.as_mut().write(&row).await.expect("event row");
    }
    w.as_mut().finish().await.expect("events");
}

async fn copy_tags(tx: &Transaction<'_>, rows: &[EventRow]) {
    let sql = "COPY mt_event_tags (tag_type, tag_value, seq_id) FROM STDIN (FORMAT binary)";
    let mut w = writer(tx, sql, &[Type::TEXT, Type::TEXT, Type::INT8]).await;
    for r in rows {
        if let Some(course) = r.course {
            let value = course.to_string();
            w.as_mut()
                .write(&[&"course_id", &value, &r.seq])
                .await
                .expect("tag row");
        }
    }
    w.as_mut().finish().await.expect("tags");
}

async fn copy_raw_events(tx: &Transaction<'_>, rows: &[EventRow]) {
    let sql = "COPY raw_events (stream_id, version, data) FROM STDIN (FORMAT binary)";
    let mut w = writer(tx, sql, &[Type::UUID, Type::INT8, Type::JSONB]).await;
    for r in rows {
        let data = Jsonb(&r.data);
        w.as_mut()
            .write(&[&r.stream, &r.version, &data])
            .await
            .expect("raw event row");
    }
    w.as_mut().finish().await.expect("raw events");
}

/// Seeds documents until there are `target`, into the store's table and the raw one.
pub async fn documents(client: &mut Client, seeded: &mut Seeded, target: u64) {
    while (seeded.docs.len() as u64) < target {
        let count = (target - seeded.docs.len() as u64).min(BATCH_DOCS);
        let docs: Vec<(Uuid, String)> = (0..count)
            .map(|i| {
                let n = seeded.docs.len() as u64 + i;
                let c = Customer::numbered(n);
                (c.id, serde_json::to_string(&c).expect("document as JSON"))
            })
            .collect();
        let tx = client.transaction().await.expect("begin");
        let sql = "COPY mt_doc_customer (id, data, mt_version) FROM STDIN (FORMAT binary)";
        let mut w = writer(&tx, sql, &[Type::UUID, Type::JSONB, Type::UUID]).await;
        for (id, data) in &docs {
            let (data, version) = (Jsonb(data), Uuid::new_v4());
            w.as_mut()
                .write(&[id, &data, &version])
                .await
                .expect("doc row");
        }
        w.as_mut().finish().await.expect("docs");
        let sql = "COPY raw_docs (id, data) FROM STDIN (FORMAT binary)";
        let mut w = writer(&tx, sql, &[Type::UUID, Type::JSONB]).await;
        for (id, data) in &docs {
            w.as_mut()
                .write(&[id, &Jsonb(data)])
                .await
                .expect("raw doc row");
        }
        w.as_mut().finish().await.expect("raw docs");
        tx.commit().await.expect("commit");
        seeded.docs.extend(docs.into_iter().map(|(id, _)| id));
    }
}
