//! What the daemon does while something keeps failing: it backs off and says why, rather
//! than trying again every poll interval in silence. A blue/green switch whose table a
//! long reader holds probes the table's lock briefly and backs off, so other readers are
//! hardly held up; a slot that cannot be acquired is warned about, and a timed-out wait
//! names why (its own store's failure only: a store of the same schema name on another
//! database has failures of its own; and only while the runner is failing: a runner that
//! finds another node holding the slot forgets its failure); a runner of a superseded
//! version stays idle without claiming its slot again and again; a batch that keeps
//! failing on the database is retried with a doubling backoff, and catches up once the
//! database is mended.
//!
//! This binary's tracing subscriber keeps every warning (its message and fields).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::tally::{Added, Tally};
use common::{builder, builder_on, ok};
use marten::daemon::{active_projection_version, Daemon, DaemonHooks, DaemonOptions};
use marten::prelude::*;
use marten::testing::database_url;
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Every warning logged in this process so far: its message and fields, as text.
fn warnings() -> &'static Mutex<Vec<String>> {
    static WARNINGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let warnings = WARNINGS.get_or_init(Default::default);
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(KeepWarnings);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    });
    warnings
}

/// The warnings so far that mention `needle`.
fn warnings_with(needle: &str) -> Vec<String> {
    let all = match warnings().lock() {
        Ok(all) => all.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    all.into_iter().filter(|w| w.contains(needle)).collect()
}

struct KeepWarnings;

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl<S: Subscriber> Layer<S> for KeepWarnings {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::WARN {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        if let Ok(mut all) = warnings().lock() {
            all.push(text.0);
        }
    }
}

/// Version 2 of the tally: the same document type (`mt_doc_tally`) with an extra field.
mod v2 {
    use super::*;

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    pub struct Tally {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
        pub count: i64,
        #[serde(default)]
        pub doubled: i64,
    }

    #[marten::apply]
    impl Tally {
        fn apply(&mut self, e: &Added) {
            self.total += e.n;
            self.count += 1;
            self.doubled += 2 * e.n;
        }
    }
}

fn fast() -> DaemonOptions {
    DaemonOptions {
        poll_interval: Duration::from_millis(20),
        ..DaemonOptions::default()
    }
}

/// Appends `per_stream` events to each of `streams` new streams.
async fn seed(store: &DocumentStore, streams: usize, per_stream: i64) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..streams).map(|_| Uuid::now_v7()).collect();
    let mut s = store.lightweight_session();
    for id in &ids {
        let events: Vec<Added> = (1..=per_stream).map(|n| Added { n }).collect();
        ok(s.events().start_stream(*id, events));
    }
    ok(s.save_changes().await);
    ids
}

/// A store of version 1 of the tally on a fresh schema, its events projected.
async fn version_one(label: &str) -> (marten_testing::TestSchema, DocumentStore, Vec<Uuid>) {
    let (schema, b) = builder(label);
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let ids = seed(&store, 10, 5).await;
    let daemon = Daemon::start(&store, fast());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    (schema, store, ids)
}

async fn store_v2(schema: &marten_testing::TestSchema) -> DocumentStore {
    ok(builder_on(schema)
        .projection_versioned::<v2::Tally>(2)
        .build()
        .await)
}

async fn wait_for_version(store: &DocumentStore, version: u32, within: Duration) {
    let started = Instant::now();
    while ok(active_projection_version::<v2::Tally>(store).await) != version {
        assert!(
            started.elapsed() < within,
            "version {version} not active after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `i64` the one-row, one-column `sql` returns.
async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    match client.query_one(sql, &[]).await {
        Ok(row) => row.get::<_, i64>(0),
        Err(e) => panic!("{sql}: {e}"),
    }
}

async fn execute(client: &tokio_postgres::Client, sql: &str) {
    if let Err(e) = client.batch_execute(sql).await {
        panic!("{sql}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_blocked_by_a_long_reader_hardly_holds_other_readers_up() {
    let (schema, _v1, _ids) = version_one("backoff_switch").await;
    let name = schema.name().to_owned();
    // A long reader: a transaction that read the active table, open for 5 s.
    let holder = schema.raw_client().await;
    execute(&holder, "BEGIN").await;
    scalar(
        &holder,
        &format!("SELECT count(*) FROM {name}.mt_doc_tally"),
    )
    .await;

    let store = store_v2(&schema).await;
    let daemon = Daemon::start(&store, fast());
    // The build catches up (it writes its own table): from then on the switch is due.
    let watcher = schema.raw_client().await;
    let caught_up = format!(
        "SELECT count(*) FROM {name}.mt_event_progression \
         WHERE name = 'Tally:v2' AND last_seq >= (SELECT max(seq_id) FROM {name}.mt_events)"
    );
    let started = Instant::now();
    while scalar(&watcher, &caught_up).await == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no build");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another reader reads the active table all along; it waits only while a switch
    // waits for the table's lock.
    let reader = schema.raw_client().await;
    let count = format!("SELECT count(*) FROM {name}.mt_doc_tally");
    let (mut blocked, mut reads) = (Duration::ZERO, 0);
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(5) {
        let read = Instant::now();
        assert_eq!(scalar(&reader, &count).await, 10);
        let took = read.elapsed();
        if took > Duration::from_millis(5) {
            blocked += took;
        }
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("{reads} reads in 5 s, {blocked:?} of them blocked");
    assert_eq!(
        ok(active_projection_version::<v2::Tally>(&store).await),
        1,
        "the switch waited for the long reader"
    );
    assert!(
        blocked < Duration::from_secs(1),
        "readers were held up for {blocked:?} of 5 s"
    );

    // Once the long reader ends, the switch goes through.
    execute(&holder, "COMMIT").await;
    wait_for_version(&store, 2, Duration::from_secs(10)).await;
    let docs = ok(store.query_session().query::<v2::Tally>().to_list().await);
    assert_eq!(docs.len(), 10);
    assert!(docs.iter().all(|d| d.doubled == 2 * d.total));
    ok(daemon.stop().await);
}

/// Refuses every write of progression row `Tally` of `schema`: no runner can claim it.
fn refuse_claims(schema: &str) -> String {
    format!(
        "CREATE FUNCTION {schema}.refuse_claims() RETURNS trigger LANGUAGE plpgsql AS $$ \
           BEGIN \
             IF NEW.name = 'Tally' THEN RAISE EXCEPTION 'no claims allowed in {schema}'; END IF; \
             RETURN NEW; \
           END $$; \
         CREATE TRIGGER refuse_claims BEFORE INSERT OR UPDATE ON {schema}.mt_event_progression \
           FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_claims()"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_cannot_be_acquired_is_warned_about_and_named_by_the_wait() {
    warnings();
    let (schema, b) = builder("backoff_acquire");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let name = schema.name().to_owned();
    seed(&store, 3, 2).await;
    // The daemon's tables, then a trigger refusing the claim's write.
    let _ = marten::daemon::wait_for_non_stale(&store, Duration::from_millis(1)).await;
    let raw = schema.raw_client().await;
    execute(&raw, &refuse_claims(&name)).await;
    let cause = format!("no claims allowed in {name}");

    let daemon = Daemon::start(&store, fast());
    let err = daemon
        .wait_for_non_stale(Duration::from_secs(3))
        .await
        .expect_err("never acquired");
    let message = err.to_string();
    println!("{message}");
    assert!(
        matches!(err, marten::Error::Timeout { .. }),
        "a timeout: {message}"
    );
    assert!(
        message.contains("Tally cannot be acquired") && message.contains(&cause),
        "the wait names why: {message}"
    );
    let warned = warnings_with(&cause);
    println!("{warned:#?}");
    assert!(!warned.is_empty(), "the failure was warned about");
    assert!(
        warned.len() <= 2,
        "the same failure is warned about once, not every try: {}",
        warned.len()
    );

    // Once the claim may be written, the projection runs.
    execute(
        &raw,
        &format!("DROP TRIGGER refuse_claims ON {name}.mt_event_progression"),
    )
    .await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);
    ok(daemon.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_runner_stays_idle_without_claiming_its_slot_again() {
    let (schema, old, ids) = version_one("backoff_superseded").await;
    let name = schema.name().to_owned();
    let store = store_v2(&schema).await;
    let daemon = Daemon::start(&store, fast());
    wait_for_version(&store, 2, Duration::from_secs(10)).await;
    ok(daemon.stop().await);

    // The old deployment (version 1) runs again for 5 s.
    let raw = schema.raw_client().await;
    let epoch = format!("SELECT owner_epoch FROM {name}.mt_event_progression WHERE name = 'Tally'");
    let before = scalar(&raw, &epoch).await;
    let old_daemon = Daemon::start(&old, fast());
    let mut s = old.lightweight_session();
    ok(s.events().append(ids[0], [Added { n: 1 }]));
    ok(s.save_changes().await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let claims = scalar(&raw, &epoch).await - before;
    ok(old_daemon.stop().await);
    println!("the superseded runner claimed its slot {claims} times in 5 s");
    assert!(
        claims <= 2,
        "a superseded runner claimed its slot {claims} times in 5 s"
    );
    let doc = ok(store.query_session().load::<v2::Tally>(&ids[0]).await).expect("doc");
    assert_eq!((doc.count, doc.doubled), (5, 30), "version 1 wrote nothing");
}

/// Counts the batches the runner starts.
#[derive(Default)]
struct CountBatches(AtomicUsize);

impl DaemonHooks for CountBatches {
    fn before_batch(&self, _projection: &str) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_on_the_database_backs_off_and_catches_up_once_mended() {
    let (schema, b) = builder("backoff_step");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let name = schema.name().to_owned();
    let ids = seed(&store, 3, 2).await;
    let batches = Arc::new(CountBatches::default());
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            hooks: batches.clone(),
            ..fast()
        },
    );
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);

    // The document table broken by hand: every batch fails on the database.
    let raw = schema.raw_client().await;
    execute(
        &raw,
        &format!("ALTER TABLE {name}.mt_doc_tally RENAME COLUMN data TO data_x"),
    )
    .await;
    let mut s = store.lightweight_session();
    ok(s.events().append(ids[0], [Added { n: 10 }]));
    ok(s.save_changes().await);
    let first = Instant::now();
    let start = batches.0.load(Ordering::SeqCst);
    while batches.0.load(Ordering::SeqCst) == start {
        assert!(first.elapsed() < Duration::from_secs(5), "no batch");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = batches.0.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = batches.0.load(Ordering::SeqCst) - start;
    println!("{tries} tries of the failing batch in 3 s");
    // Every 20 ms that would be over 100; doubling from 20 ms, about 7.
    assert!(tries <= 15, "{tries} tries in 3 s: no backoff");
    assert!(tries >= 2, "{tries} tries in 3 s: the batch was retried");

    // Mended, the projection catches up (after at most one backoff's wait).
    execute(
        &raw,
        &format!("ALTER TABLE {name}.mt_doc_tally RENAME COLUMN data_x TO data"),
    )
    .await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);
    let doc = ok(store.query_session().load::<Tally>(&ids[0]).await).expect("doc");
    assert_eq!((doc.count, doc.total), (3, 13));
    ok(daemon.stop().await);
}

/// The message of the timeout of a store-level wait (no daemon of its own) of `store`
/// for its projections, which are behind.
async fn timed_out_wait(store: &DocumentStore, timeout: Duration) -> String {
    let err = marten::daemon::wait_for_non_stale(store, timeout)
        .await
        .expect_err("the projections are behind");
    let message = err.to_string();
    assert!(
        matches!(err, marten::Error::Timeout { .. }),
        "a timeout: {message}"
    );
    assert!(message.contains("Tally"), "Tally is behind: {message}");
    message
}

/// Waits (at most `within`) until a timed-out wait of `store` for its projections says
/// whether Tally cannot be acquired as `named`: the last message.
async fn until_named(store: &DocumentStore, named: bool, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let message = timed_out_wait(store, Duration::from_millis(200)).await;
        if message.contains("Tally cannot be acquired") == named {
            return message;
        }
        assert!(
            started.elapsed() < within,
            "after {within:?} the wait still says (named: {}): {message}",
            !named
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 5 s) until at least `n` warnings mention `needle`: how many do.
async fn until_warned(needle: &str, n: usize) -> usize {
    let started = Instant::now();
    loop {
        let warned = warnings_with(needle).len();
        if warned >= n {
            return warned;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{warned} warnings mention {needle:?}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A database of the test's own on the local server, dropped (`WITH (FORCE)`) on drop,
/// also when the test fails.
struct OtherDatabase {
    name: String,
    server: tokio_postgres::Config,
}

impl OtherDatabase {
    /// Creates a database with a unique name.
    async fn create() -> OtherDatabase {
        let server: tokio_postgres::Config = match database_url().parse() {
            Ok(c) => c,
            Err(e) => panic!("invalid database url: {e}"),
        };
        let name = format!("marten_b_{:016x}", rand::random::<u64>());
        let db = OtherDatabase { name, server };
        let (client, conn) = match db.server.connect(tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(e) => panic!("cannot connect: {e}"),
        };
        tokio::spawn(conn);
        // A database name cannot be a parameter; this one is made here, from hex.
        execute(&client, &format!("CREATE DATABASE {}", db.name)).await;
        db
    }

    /// Its connection string.
    fn url(&self) -> String {
        let host = match self.server.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = self.server.get_ports().first().copied().unwrap_or(5432);
        let user = self.server.get_user().unwrap_or("postgres");
        format!(
            "postgres://{user}@{host}:{port}/{}?sslmode=disable",
            self.name
        )
    }
}

impl Drop for OtherDatabase {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) = server.connect(tokio_postgres::NoTls).await {
                    let handle = tokio::spawn(conn);
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = client.batch_execute(&sql).await;
                    drop(client);
                    let _ = handle.await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_of_one_schema_name_on_two_databases_keep_their_acquire_failures_apart() {
    // Store A: a slot no runner can claim.
    let (schema, b) = builder("backoff_two_dbs");
    let broken = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let name = schema.name().to_owned();
    seed(&broken, 3, 2).await;
    let _ = marten::daemon::wait_for_non_stale(&broken, Duration::from_millis(1)).await;
    let raw = schema.raw_client().await;
    execute(&raw, &refuse_claims(&name)).await;
    let cause = format!("no claims allowed in {name}");

    // Store B: the same schema name on a database of its own, healthy, behind.
    let other = OtherDatabase::create().await;
    let healthy = ok(DocumentStore::builder()
        .connection_string(other.url())
        .schema(&name)
        .pool_size(4)
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    let ids = seed(&healthy, 2, 3).await;

    // A's runner fails once, then waits five minutes before its next try.
    let slow = DaemonOptions {
        poll_interval: Duration::from_secs(60),
        ..DaemonOptions::default()
    };
    let broken_daemon = Daemon::start(&broken, slow);
    let message = until_named(&broken, true, Duration::from_secs(10)).await;
    assert!(message.contains(&cause), "A's failure: {message}");

    // B's wait names no failure: no runner of B's failed.
    let message = timed_out_wait(&healthy, Duration::from_millis(500)).await;
    println!("{message}");
    assert!(
        !message.contains("cannot be acquired"),
        "B's wait names A's failure: {message}"
    );

    // B's daemon acquires its slot, catches up and stops: A's failure stays A's.
    let healthy_daemon = Daemon::start(&healthy, fast());
    ok(healthy_daemon
        .wait_for_non_stale(Duration::from_secs(10))
        .await);
    ok(healthy_daemon.stop().await);
    let doc = ok(healthy.query_session().load::<Tally>(&ids[0]).await).expect("doc");
    assert_eq!((doc.count, doc.total), (3, 6));
    let err = broken_daemon
        .wait_for_non_stale(Duration::from_secs(1))
        .await
        .expect_err("A never acquired");
    let message = err.to_string();
    println!("{message}");
    assert!(
        message.contains("Tally cannot be acquired") && message.contains(&cause),
        "A's wait still names A's failure: {message}"
    );
    ok(broken_daemon.stop().await);
    healthy.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_finds_another_node_holding_its_slot_forgets_its_failure() {
    warnings();
    let (schema, b) = builder("backoff_standby");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let name = schema.name().to_owned();
    let ids = seed(&store, 3, 2).await;
    let _ = marten::daemon::wait_for_non_stale(&store, Duration::from_millis(1)).await;
    let raw = schema.raw_client().await;
    execute(&raw, &refuse_claims(&name)).await;
    let cause = format!("no claims allowed in {name}");

    // The runner fails to claim its slot.
    let daemon = Daemon::start(&store, fast());
    let message = until_named(&store, true, Duration::from_secs(10)).await;
    assert!(message.contains(&cause), "the failure: {message}");
    let warned = until_warned(&cause, 1).await;

    // Another node takes the slot's lock (the key the runners lock, see `ownership`), and
    // the claim could be written now: the runner's next try finds the slot held, and
    // its failure is no longer why the projection is behind.
    let node = schema.raw_client().await;
    let key = format!("marten:daemon:{name}:Tally");
    if let Err(e) = node
        .execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key])
        .await
    {
        panic!("the slot's lock: {e}");
    }
    execute(
        &raw,
        &format!("DROP TRIGGER refuse_claims ON {name}.mt_event_progression"),
    )
    .await;
    let message = until_named(&store, false, Duration::from_secs(15)).await;
    println!("{message}");
    let err = daemon
        .wait_for_non_stale(Duration::from_millis(500))
        .await
        .expect_err("the other node does not run the projection");
    assert!(
        !err.to_string().contains("cannot be acquired"),
        "the daemon's wait names no failure: {err}"
    );

    // The other node goes while the claim is refused again: the runner's next failure is
    // a new one, warned about again at once.
    execute(&raw, &refuse_claims_again(&name)).await;
    drop(node);
    let message = until_named(&store, true, Duration::from_secs(10)).await;
    assert!(message.contains(&cause), "the failure: {message}");
    until_warned(&cause, warned + 1).await;
    println!("{:#?}", warnings_with(&cause));

    // Mended, the projection runs.
    execute(
        &raw,
        &format!("DROP TRIGGER refuse_claims ON {name}.mt_event_progression"),
    )
    .await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);
    let doc = ok(store.query_session().load::<Tally>(&ids[0]).await).expect("doc");
    assert_eq!((doc.count, doc.total), (2, 3));
    ok(daemon.stop().await);
}

/// The trigger of [`refuse_claims`] again, on its function made before.
fn refuse_claims_again(schema: &str) -> String {
    format!(
        "CREATE TRIGGER refuse_claims BEFORE INSERT OR UPDATE ON {schema}.mt_event_progression \
           FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_claims()"
    )
}
