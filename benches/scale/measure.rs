//! The measurements at one level: throughput of single-event appends, latencies of the
//! reads (p50, p99), the daemon's catch-up over a window of new events.

use std::time::{Duration, Instant};

use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use super::model::{course_id, CourseId, Customer, Enrolment, OrderPlaced, Tally};
use super::seed::{self, Seeded};

/// p50 and p99 of a read, in microseconds, and how many were timed.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub ops: usize,
}

/// How long each measurement runs, at most, and how many operations it times, at most.
pub struct Budget {
    pub time: Duration,
    pub ops: usize,
}

fn latency(mut us: Vec<f64>) -> Latency {
    us.sort_by(f64::total_cmp);
    let at = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize];
    Latency {
        p50: at(0.5),
        p99: at(0.99),
        ops: us.len(),
    }
}

/// Times `op(i)` until the budget is spent (a few untimed operations first).
async fn timed(budget: &Budget, mut op: impl AsyncFnMut(usize)) -> Latency {
    tokio::time::sleep(Duration::from_millis(crate::common::SETTLE_MS)).await;
    for i in 0..20 {
        op(i).await;
    }
    let (start, mut us) = (Instant::now(), Vec::with_capacity(budget.ops));
    while us.len() < budget.ops && start.elapsed() < budget.time {
        let t = Instant::now();
        op(us.len()).await;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    latency(us)
}

/// `fetch_stream` of random seeded ten-event streams.
pub async fn fetch_stream(store: &DocumentStore, seeded: &Seeded, budget: &Budget) -> Latency {
    let mut rng = StdRng::seed_from_u64(1);
    timed(budget, async |_| {
        let id = seeded.read_streams[rng.gen_range(0..seeded.read_streams.len())];
        let mut s = store.lightweight_session();
        let events = s.events().fetch_stream(id).await.expect("fetch_stream");
        assert_eq!(events.len() as u64, seed::STREAM_LEN, "stream {id}");
    })
    .await
}

/// `read_all` pages of 500 from positions spread over the whole store.
pub async fn read_all(store: &DocumentStore, raw: &Client, budget: &Budget) -> Latency {
    let max: i64 = raw
        .query_one("SELECT max(seq_id) FROM mt_events", &[])
        .await
        .expect("max seq")
        .get(0);
    let mut rng = StdRng::seed_from_u64(2);
    let mut positions = Vec::new();
    for _ in 0..64 {
        let row = raw
            .query_one(
                "SELECT tx_id::text::bigint, seq_id FROM mt_events WHERE seq_id >= $1 ORDER BY seq_id LIMIT 1",
                &[&rng.gen_range(1..=(max - 600).max(1))],
            )
            .await
            .expect("a position");
        positions.push(Position {
            transaction_id: row.get::<_, i64>(0) as u64,
            sequence: row.get(1),
        });
    }
    timed(budget, async |i| {
        let mut s = store.lightweight_session();
        let page = s
            .events()
            .read_all(positions[i % positions.len()], 500)
            .await
            .expect("read_all");
        assert!(page.rows > 0, "an empty page");
    })
    .await
}

/// A tag boundary read (`fetch_for_writing_by_tags`) of a random course: 20 events.
pub async fn tag_boundary(store: &DocumentStore, seeded: &Seeded, budget: &Budget) -> Latency {
    let mut rng = StdRng::seed_from_u64(3);
    let courses = seeded.courses();
    timed(budget, async |_| {
        let course = CourseId(course_id(rng.gen_range(0..courses)));
        let mut s = store.lightweight_session();
        let q = TagQuery::new().tag(course);
        let b = s
            .events()
            .fetch_for_writing_by_tags::<Enrolment>(q)
            .await
            .expect("boundary");
        assert!(b.state().is_some_and(|e| e.count > 0), "an empty boundary");
    })
    .await
}

/// `load` by id of random seeded documents.
pub async fn load(store: &DocumentStore, seeded: &Seeded, budget: &Budget) -> Latency {
    let mut rng = StdRng::seed_from_u64(4);
    timed(budget, async |_| {
        let id = seeded.docs[rng.gen_range(0..seeded.docs.len())];
        let mut s = store.query_session();
        let doc = s.load::<Customer>(&id).await.expect("load");
        assert!(doc.is_some(), "document {id}");
    })
    .await
}

/// Single-event appends per second, one writer, to random seeded append targets: marten
/// and raw tokio-postgres doing the same work (the stream row's upsert and the event's
/// insert, one prepared statement) into the same tables, alternating in blocks.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Appends {
    pub marten: f64,
    pub raw: f64,
}

/// Untimed appends a side before the timed ones.
const WARM_UP: usize = 20;

/// Streams of the appends with a working set of constant size ([`hot_targets`]).
pub const HOT_STREAMS: usize = 100;

/// [`HOT_STREAMS`] distinct append targets picked at random among all of them (fewer
/// only when there are fewer), so each level writes as many distinct streams, spread
/// over the whole data.
pub fn hot_targets(seeded: &Seeded) -> Vec<Uuid> {
    let mut rng = StdRng::seed_from_u64(7);
    let all = &seeded.append_streams;
    rand::seq::index::sample(&mut rng, all.len(), HOT_STREAMS.min(all.len()))
        .into_iter()
        .map(|i| all[i])
        .collect()
}

/// See [`Appends`]: `ops` appends a side, each to a random one of `targets`.
pub async fn append(store: &DocumentStore, raw: &Client, targets: &[Uuid], ops: usize) -> Appends {
    let statement = raw
        .prepare(&crate::common::raw_append_sql("order_placed"))
        .await
        .expect("prepare");
    let event = || OrderPlaced {
        customer: "customer-appended".to_owned(),
        sku: "SKU-00001".to_owned(),
        cents: 1250,
        express: false,
        note: "leave at the front door, ring twice".to_owned(),
    };
    let (mut lib_rng, mut raw_rng) = (StdRng::seed_from_u64(5), StdRng::seed_from_u64(6));
    let mut lib = async |_| {
        let id = targets[lib_rng.gen_range(0..targets.len())];
        let mut s = store.lightweight_session();
        s.events().append(id, [event()]).expect("append");
        s.save_changes().await.expect("save");
    };
    let mut raw_side = async |_| {
        let id = targets[raw_rng.gen_range(0..targets.len())];
        let data = serde_json::to_value(event()).expect("json");
        let n = raw
            .execute(&statement, &[&id, &Uuid::now_v7(), &data])
            .await
            .expect("raw append");
        assert_eq!(n, 1, "raw append to {id}");
    };
    // Untimed appends of both sides first: the first level measured would otherwise
    // count the connection's and the server's first uses on each side.
    for i in 0..WARM_UP {
        lib(i).await;
        raw_side(i).await;
    }
    let (marten, raw_rate) = crate::common::interleaved(ops, true, &mut lib, &mut raw_side).await;
    Appends {
        marten,
        raw: raw_rate,
    }
}

/// The daemon's catch-up, events per second, over `window` events seeded after the
/// store's base: the projection's progression row is set to the base by SQL first.
pub async fn daemon(
    store: &DocumentStore,
    raw: &mut Client,
    seeded: &mut Seeded,
    window: u64,
) -> f64 {
    let base = raw
        .query_one("SELECT max(tx_id)::text, max(seq_id) FROM mt_events", &[])
        .await
        .expect("base");
    let (tx, seq): (String, i64) = (base.get(0), base.get(1));
    seed::events(raw, seeded, window).await;
    let name = <Tally as Document>::DOCUMENT_TYPE;
    let moved = raw
        .execute(
            "UPDATE mt_event_progression SET last_tx = $2::text::xid8, last_seq = $3 WHERE name = $1",
            &[&name, &tx, &seq],
        )
        .await
        .expect("progression at the base");
    assert_eq!(moved, 1, "the progression row of {name}");
    tokio::time::sleep(Duration::from_millis(crate::common::SETTLE_MS)).await;
    let start = Instant::now();
    let d = Daemon::start(store, DaemonOptions::default());
    d.wait_for_non_stale(Duration::from_secs(600))
        .await
        .expect("caught up");
    let rate = window as f64 / start.elapsed().as_secs_f64();
    d.stop().await.expect("daemon stop");
    rate
}

/// Runs the daemon over the (small) store once, so its progression row exists.
pub async fn daemon_once(store: &DocumentStore) {
    let d = Daemon::start(store, DaemonOptions::default());
    d.wait_for_non_stale(Duration::from_secs(600))
        .await
        .expect("caught up");
    d.stop().await.expect("daemon stop");
}
