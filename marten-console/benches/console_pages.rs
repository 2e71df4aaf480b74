//! Each console page's answer time over a big store: seeds `MARTEN_CONSOLE_BENCH_EVENTS`
//! events (default 1,000,000; ten per stream, one in ten tagged) straight into the
//! store's tables with server-side `INSERT .. SELECT FROM generate_series` (no client
//! round trip per row), in short transactions of 100,000 events, plus 2,000 progression slots and
//! 2,000 dead letters, then times every page over HTTP (a served console, a fresh
//! connection per request) and prints the median and the worst of 25 requests each.
//!
//! ```text
//! cargo bench -p marten-console --bench console_pages
//! MARTEN_CONSOLE_BENCH_EVENTS=10000000 cargo bench -p marten-console --bench console_pages
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use marten::prelude::*;
use marten_console::{Console, QueryField};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "order_placed")]
struct OrderPlaced {
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Invoice {
    id: i64,
    total: i64,
}

async fn time_get(addr: SocketAddr, path: &str) -> (Duration, usize, u16) {
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (took, raw.len(), status)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: i64 = std::env::var("MARTEN_CONSOLE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let streams = events / 10;
    let schema = TestSchema::new("console_bench");
    let store = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .event::<OrderPlaced>()
        .build()
        .await
        .expect("store");
    let mut s = store.lightweight_session();
    for i in 1..=10_000 {
        s.store(Invoice { id: i, total: i }).expect("invoice");
    }
    s.save_changes().await.expect("invoices");
    let raw = schema.raw_client().await;
    let seed = Instant::now();
    // In chunks of 100,000 events, each its own short transaction: one long seeding
    // transaction would hold back the snapshot horizon every daemon on the server reads
    // below (the gap-safe order), stalling other stores' daemons while it runs.
    const CHUNK: i64 = 100_000;
    let mut from = 1;
    while from <= events {
        let to = (from + CHUNK - 1).min(events);
        let (s_from, s_to) = ((from - 1) / 10 + 1, to / 10);
        raw.batch_execute(&format!(
            "INSERT INTO mt_streams (id, type, version) \
               SELECT md5(g::text)::uuid, 'Order', 10 FROM generate_series({s_from}, {s_to}) g;
             INSERT INTO mt_events (seq_id, id, stream_id, version, type, data) \
               SELECT g, md5('e' || g)::uuid, md5(((g - 1) / 10 + 1)::text)::uuid, (g - 1) % 10 + 1, \
                      'order_placed', jsonb_build_object('n', g) \
               FROM generate_series({from}, {to}) g;
             INSERT INTO mt_event_tags (tag_type, tag_value, seq_id) \
               SELECT 'customer', 'c' || (g % 1000), g FROM generate_series({from}, {to}, 10) g;"
        ))
        .await
        .expect("seed a chunk");
        from = to + 1;
    }
    raw.batch_execute(&format!(
        "SELECT setval('mt_events_sequence', {events});
         INSERT INTO mt_tag_versions (tag_type, tag_value, version) \
           SELECT 'customer', 'c' || g, {events} / 10000 FROM generate_series(0, 999) g;
         INSERT INTO mt_event_progression (name, last_seq, owner) \
           SELECT 'Projection' || g, {events} - g * 100, 'node-' || (g % 3) FROM generate_series(1, 2000) g;
         INSERT INTO mt_dead_letters (projection, seq_id, event_type, stream_id, error) \
           SELECT 'Projection' || (g % 7), g * 17, 'order_placed', md5(g::text), 'boom' \
           FROM generate_series(1, 2000) g;"
    ))
    .await
    .expect("seed");
    raw.batch_execute("VACUUM ANALYZE").await.expect("vacuum");
    println!(
        "seeded {events} events in {streams} streams in {:.1} s",
        seed.elapsed().as_secs_f64()
    );

    let console = Console::builder(&store)
        .document::<Invoice>(|f| vec![QueryField::ordered(f.total)])
        .build();
    let bound = console
        .bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind");
    let addr = bound.local_addr().expect("addr");
    let server = tokio::spawn(bound.serve());

    let mid = raw
        .query_one(
            &format!("SELECT md5(({streams} / 2)::text)::uuid::text"),
            &[],
        )
        .await
        .expect("a stream id")
        .get::<_, String>(0);
    let pages = [
        ("streams, first page", "/streams".to_owned()),
        (
            "streams, a page in the middle",
            format!("/streams?after={mid}"),
        ),
        ("streams by type", "/streams?type=Order".to_owned()),
        (
            "streams by tag",
            "/streams?tag_type=customer&tag_value=c1".to_owned(),
        ),
        ("streams by id", format!("/streams?id={mid}")),
        ("a stream's events", format!("/streams/{mid}")),
        (
            "a stream's events after v5",
            format!("/streams/{mid}?after=5"),
        ),
        (
            "documents, a filtered page",
            "/documents/Invoice?field=total&op=gt&value=5000".to_owned(),
        ),
        ("projections (2,000 slots)", "/projections".to_owned()),
        ("projections.json", "/projections.json".to_owned()),
        (
            "dead letters, a middle page",
            "/dead-letters?after=1000".to_owned(),
        ),
        ("tags", "/tags".to_owned()),
        ("a tag's events", "/tags?type=customer&value=c1".to_owned()),
    ];
    println!("| page | median ms | worst ms | bytes |");
    println!("|---|---|---|---|");
    for (name, path) in &pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..25 {
            let (t, b, status) = time_get(addr, path).await;
            assert_eq!(status, 200, "{path}");
            times.push(t);
            bytes = b;
        }
        times.sort();
        println!(
            "| {name} | {:.1} | {:.1} | {bytes} |",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
    server.abort();
    drop(raw);
}
