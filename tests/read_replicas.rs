//! Read replicas: sessions that ask for it read from a streaming replica (a throwaway
//! primary and its `pg_basebackup` replica, on ports of their own, stopped and removed
//! when the test ends however it ends), writes stay on the primary, read-your-writes and
//! write tokens wait for the replica to replay a save (paused replay proves the wait is
//! real, and ends in `Error::ReplicaBehind`), a dropped wait leaves both pools clean, and
//! the default save path keeps its one round trip.

mod common;

use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::prelude::*;
use marten_testing::cancel::{assert_clean, cancel_at_every_await};
use marten_testing::{CountingProxy, PrivateCluster};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Page {
    id: String,
    revision: i32,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Touched {
    by: String,
}

fn touched(by: &str) -> Touched {
    Touched { by: by.into() }
}

fn page(revision: i32) -> Page {
    Page {
        id: "home".into(),
        revision,
    }
}

/// A primary and its streaming replica; dropped (the replica first), both are stopped
/// and their directories removed.
struct Pair {
    replica: Option<PrivateCluster>,
    primary: Option<PrivateCluster>,
}

impl Pair {
    fn start() -> Pair {
        let primary = match PrivateCluster::start() {
            Ok(c) => c,
            Err(e) => panic!("the primary did not start: {e}"),
        };
        let replica = match primary.start_replica() {
            Ok(c) => c,
            Err(e) => panic!("the replica did not start: {e}"),
        };
        Pair {
            replica: Some(replica),
            primary: Some(primary),
        }
    }

    fn primary(&self) -> &PrivateCluster {
        self.primary.as_ref().expect("primary")
    }

    fn replica(&self) -> &PrivateCluster {
        self.replica.as_ref().expect("replica")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        drop(self.replica.take());
        drop(self.primary.take());
    }
}

/// A plain connection to `url` (outside any store).
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

async fn pause_replay(replica: &tokio_postgres::Client) {
    replica
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");
}

async fn resume_replay(replica: &tokio_postgres::Client) {
    replica
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
}

/// The store's connections on `server` that are not idle (busy, or idle in a
/// transaction), described.
async fn busy(server: &tokio_postgres::Client) -> Vec<String> {
    let rows = server
        .query(
            "SELECT state || ': ' || left(query, 60) FROM pg_stat_activity \
             WHERE application_name = 'marten' AND state <> 'idle'",
            &[],
        )
        .await
        .expect("pg_stat_activity");
    rows.iter().map(|r| r.get(0)).collect()
}

/// A store on the pair's primary with the replica, reads waiting at most `wait`.
async fn store_on(pair: &Pair, wait: Duration, replica_pool: usize) -> DocumentStore {
    ok(DocumentStore::builder()
        .connection_string(pair.primary().url())
        .read_replica(pair.replica().url())
        .read_replica_pool_size(replica_pool)
        .replica_wait_timeout(wait)
        .pool_wait_timeout(Duration::from_secs(3))
        .stream_identity(StreamIdentity::String)
        .schema("replicas")
        .document::<Page>()
        .build()
        .await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sessions_read_the_replica_and_wait_for_writes_when_asked() {
    let pair = Pair::start();
    let store = store_on(&pair, Duration::from_millis(300), 3).await;
    assert!(store.has_read_replica());
    let replica_sql = connect(pair.replica().url()).await;
    let primary_sql = connect(pair.primary().url()).await;

    // A token of the store covers the schema and the first write: a session given it
    // waits until the replica has them, then reads there.
    let mut s = store.lightweight_session();
    ok(s.store(page(1)));
    ok(s.events().start_stream("site", [touched("setup")]));
    ok(s.save_changes().await);
    let token = ok(store.write_token().await);
    let mut after = store.query_session_after(token);
    let started = Instant::now();
    let loaded = loop {
        match after.load::<Page>(&"home".to_owned()).await {
            Err(Error::ReplicaBehind { .. }) if started.elapsed() < Duration::from_secs(10) => {}
            other => break ok(other),
        }
    };
    assert_eq!(loaded, Some(page(1)));
    let text = token.to_string();
    assert_eq!(text.parse::<WriteToken>().ok(), Some(token), "{text}");
    // A session keeps its connections until it is dropped, as on the primary.
    drop(after);

    // With replay paused, a replica session reads what the replica has: the write is on
    // the primary (a replica refuses writes), the replica's read is stale.
    pause_replay(&replica_sql).await;
    let mut w = store.lightweight_session();
    w.read_from_replica();
    ok(w.store(page(2)));
    ok(w.save_changes().await);
    assert_eq!(
        w.write_token(),
        None,
        "nothing recorded without read-your-writes"
    );
    assert_eq!(ok(w.load::<Page>(&"home".into()).await), Some(page(1)));
    assert_eq!(
        ok(w.query::<Page>().to_list().await),
        vec![page(1)],
        "queries read the replica too"
    );
    let mut primary = store.query_session();
    assert_eq!(
        ok(primary.load::<Page>(&"home".into()).await),
        Some(page(2))
    );
    w.read_from_primary();
    assert_eq!(ok(w.load::<Page>(&"home".into()).await), Some(page(2)));
    drop(w);

    // Inside a transaction on the primary (an exclusive append holds the stream's lock
    // until the save), the session reads there: it sees what its transaction sees.
    let mut x = store.lightweight_session();
    x.read_from_replica();
    ok(x.events().append_exclusive("site", [touched("x")]).await);
    assert_eq!(ok(x.load::<Page>(&"home".into()).await), Some(page(2)));
    ok(x.save_changes().await);
    assert_eq!(ok(x.load::<Page>(&"home".into()).await), Some(page(1)));
    drop(x);

    // Read-your-writes with replay paused: the read waits out the timeout and says so.
    let mut ryw = store.lightweight_session();
    ryw.read_from_replica().read_your_writes();
    ok(ryw.store(page(3)));
    ok(ryw.save_changes().await);
    let mine = ryw.write_token().expect("a recorded write token");
    assert!(mine > token);
    let started = Instant::now();
    match ryw.load::<Page>(&"home".into()).await {
        Err(Error::ReplicaBehind {
            position,
            replayed,
            waited_ms,
        }) => {
            assert_eq!(position, mine.to_string());
            let replayed: WriteToken = replayed.expect("replayed").parse().expect("an LSN");
            assert!(replayed < mine, "{replayed} < {mine}");
            assert!((300..10_000).contains(&waited_ms), "waited {waited_ms} ms");
        }
        other => panic!("expected ReplicaBehind, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Another session given the token waits too; one without it reads stale data at once.
    let mut other = store.query_session_after(mine);
    assert!(matches!(
        other.load::<Page>(&"home".into()).await,
        Err(Error::ReplicaBehind { .. })
    ));
    let mut stale = store.query_session_on_replica();
    assert_eq!(ok(stale.load::<Page>(&"home".into()).await), Some(page(1)));
    drop(stale);
    assert!(
        busy(&replica_sql).await.is_empty(),
        "{:?}",
        busy(&replica_sql).await
    );

    // Replay resumed: both reads see the write.
    resume_replay(&replica_sql).await;
    assert_eq!(ok(ryw.load::<Page>(&"home".into()).await), Some(page(3)));
    assert_eq!(ok(other.load::<Page>(&"home".into()).await), Some(page(3)));
    assert!(
        busy(&primary_sql).await.is_empty(),
        "{:?}",
        busy(&primary_sql).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_read_holds_no_connection_and_a_dropped_one_leaves_the_pools_clean() {
    let pair = Pair::start();
    // One replica connection: a waiting read that held it would starve every other.
    let store = store_on(&pair, Duration::from_secs(5), 1).await;
    let replica_sql = connect(pair.replica().url()).await;
    let primary_sql = connect(pair.primary().url()).await;
    let mut s = store.lightweight_session();
    ok(s.store(page(1)));
    ok(s.save_changes().await);
    let token = ok(store.write_token().await);
    let mut first = store.query_session_after(token);
    assert_eq!(ok(first.load::<Page>(&"home".into()).await), Some(page(1)));
    drop(first);

    pause_replay(&replica_sql).await;
    let mut ryw = store.identity_session();
    ryw.read_from_replica().read_your_writes();
    ok(ryw.store(page(2)));
    ok(ryw.save_changes().await);
    // Identity map aside: a fresh session with the same token.
    let mine = ryw.write_token().expect("token");
    let mut waiting = store.query_session_after(mine);
    let home = "home".to_owned();
    // While it waits, the pool's one replica connection serves stale reads at once.
    let stale_reads = async {
        for _ in 0..10 {
            let mut other = store.query_session_on_replica();
            let read = other.load::<Page>(&home);
            let quick = tokio::time::timeout(Duration::from_secs(2), read).await;
            assert_eq!(ok(quick.expect("the replica pool was held")), Some(page(1)));
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
    };
    tokio::select! {
        biased;
        () = stale_reads => {}
        read = waiting.load::<Page>(&home) => panic!("the read did not wait: {read:?}"),
    }

    // Dropped after each of its pending polls in turn (taking a connection, in a check,
    // in a pause), a wait leaves nothing running on either server and the replica pool
    // of one hands out a clean connection; let run, it ends in ReplicaBehind.
    let quick = store_on(&pair, Duration::from_millis(80), 1).await;
    let run = cancel_at_every_await(
        400,
        |_| {
            let store = quick.clone();
            Box::pin(async move {
                let mut q = store.query_session_after(mine);
                q.load::<Page>(&"home".to_owned()).await
            })
        },
        |k| {
            let (store, replica_sql, primary_sql) = (&quick, &replica_sql, &primary_sql);
            async move {
                assert_clean(replica_sql, "marten", Duration::from_secs(2)).await;
                assert_clean(primary_sql, "marten", Duration::from_secs(2)).await;
                let mut other = store.query_session_on_replica();
                let home = "home".to_owned();
                let read = other.load::<Page>(&home);
                let quick = tokio::time::timeout(Duration::from_secs(2), read).await;
                let loaded =
                    quick.unwrap_or_else(|_| panic!("drop {k}: the replica pool was held"));
                assert_eq!(ok(loaded), Some(page(1)), "drop {k}");
            }
        },
    )
    .await;
    assert!(run.cancelled >= 5, "dropped {} times", run.cancelled);
    assert!(
        matches!(run.output, Err(Error::ReplicaBehind { .. })),
        "{:?}",
        run.output
    );
    assert!(
        busy(&replica_sql).await.is_empty(),
        "{:?}",
        busy(&replica_sql).await
    );
    assert!(
        busy(&primary_sql).await.is_empty(),
        "{:?}",
        busy(&primary_sql).await
    );
    resume_replay(&replica_sql).await;
    assert_eq!(
        ok(waiting.load::<Page>(&"home".into()).await),
        Some(page(2))
    );
    drop(waiting);
    let mut later = store.query_session_on_replica();
    assert_eq!(ok(later.load::<Page>(&"home".into()).await), Some(page(2)));
}

/// Recording the position of a save rides in the save's own round trip, and the default
/// save path is unchanged: one round trip either way. No replica is needed for that;
/// without one, replica reads go to the primary. Then, on the same server: several
/// replicas are taken in turn, and a server not in recovery counts as caught up.
#[tokio::test]
async fn write_tokens_add_no_round_trip_and_replicas_take_turns() {
    let (schema, b) = builder("replica_round_trips");
    let proxy = CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let store = ok(b
        .connection_string(schema.url_via(&proxy))
        .pool_size(1)
        .document::<Page>()
        .build()
        .await);
    assert!(!store.has_read_replica());
    for tokens in [false, true] {
        let mut s = store.lightweight_session();
        if tokens {
            s.read_from_replica().read_your_writes();
        }
        // Warm up the statements of both shapes of save, and of a load.
        ok(s.store(page(0)));
        ok(s.store(Page {
            id: "p0".into(),
            revision: 0,
        }));
        ok(s.save_changes().await);
        ok(s.store(page(0)));
        ok(s.save_changes().await);
        ok(s.load::<Page>(&"p0".into()).await);
        for revision in 1..4 {
            ok(s.store(page(revision)));
            ok(s.store(Page {
                id: format!("p{revision}"),
                revision,
            }));
            let before = proxy.round_trips();
            ok(s.save_changes().await);
            assert_eq!(proxy.round_trips() - before, 1, "tokens: {tokens}");
            ok(s.store(page(revision)));
            let before = proxy.round_trips();
            ok(s.save_changes().await);
            assert_eq!(
                proxy.round_trips() - before,
                1,
                "a lone store, tokens: {tokens}"
            );
            assert_eq!(s.write_token().is_some(), tokens);
        }
        // Without a replica, replica reads are the primary's: they see the write at once.
        let before = proxy.round_trips();
        assert_eq!(ok(s.load::<Page>(&"home".into()).await), Some(page(3)));
        assert_eq!(proxy.round_trips() - before, 1, "no wait without a replica");
    }
    let token = ok(store.write_token().await);
    let mut after = store.query_session_after(token);
    assert_eq!(ok(after.load::<Page>(&"home".into()).await), Some(page(3)));
    drop(after);
    sessions_take_the_replicas_in_turn(&schema).await;
    not_in_recovery_is_caught_up(&schema, &proxy).await;
    // A caller's pool cannot be combined with a replica the store would connect to.
    let pool = {
        let config: tokio_postgres::Config = schema.url().parse().expect("config");
        let manager = marten::deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        marten::deadpool_postgres::Pool::builder(manager)
            .build()
            .expect("pool")
    };
    let refused = DocumentStore::builder()
        .pool(pool)
        .read_replica(schema.url())
        .schema(schema.name())
        .build()
        .await;
    assert!(
        matches!(&refused, Err(Error::Configuration(m)) if m.contains("read_replica")),
        "{refused:?}"
    );
}

/// A "replica" that is not in recovery (here the primary itself) has every write: a
/// read that must see the session's save checks once and reads; the next read knows.
async fn not_in_recovery_is_caught_up(schema: &marten_testing::TestSchema, proxy: &CountingProxy) {
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url_via(proxy))
        .read_replica(schema.url_via(proxy))
        .pool_size(1)
        .schema(schema.name())
        .document::<Page>()
        .build()
        .await);
    let mut s = store.lightweight_session();
    s.read_from_replica().read_your_writes();
    for revision in 10..13 {
        ok(s.store(page(revision)));
        ok(s.save_changes().await);
        let before = proxy.round_trips();
        assert_eq!(
            ok(s.load::<Page>(&"home".into()).await),
            Some(page(revision))
        );
        let first = proxy.round_trips() - before;
        let before = proxy.round_trips();
        assert_eq!(
            ok(s.load::<Page>(&"home".into()).await),
            Some(page(revision))
        );
        assert_eq!(proxy.round_trips() - before, 1, "the second read knows");
        if revision > 10 {
            assert_eq!(first, 2, "one check, one read");
        }
    }
}

/// Several replicas (here two proxies in front of one server): sessions take them in
/// turn, and each keeps the one it first read from.
async fn sessions_take_the_replicas_in_turn(schema: &marten_testing::TestSchema) {
    let a = CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let b = CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .read_replica(schema.url_via(&a))
        .read_replica(schema.url_via(&b))
        .schema(schema.name())
        .document::<Page>()
        .build()
        .await);
    let mut sessions: Vec<QuerySession> =
        (0..4).map(|_| store.query_session_on_replica()).collect();
    for s in &mut sessions {
        assert_eq!(ok(s.load::<Page>(&"home".into()).await), Some(page(3)));
    }
    assert_eq!((a.connections(), b.connections()), (2, 2));
    let before = (a.round_trips(), b.round_trips());
    for s in &mut sessions {
        assert_eq!(ok(s.load::<Page>(&"home".into()).await), Some(page(3)));
    }
    assert_eq!(
        (a.connections(), b.connections()),
        (2, 2),
        "each kept its own"
    );
    assert_eq!(
        (a.round_trips() - before.0, b.round_trips() - before.1),
        (2, 2)
    );
}
