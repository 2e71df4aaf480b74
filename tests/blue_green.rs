//! Blue/green rebuilds: a new version of an async projection is built into its own table
//! while readers go on reading the old one, readers switch atomically once it has caught
//! up, a stopped daemon resumes the build, and the old table stays until dropped.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tally::Added;
use common::{builder, ok};
use marten::daemon::{
    active_projection_version, drop_old_projection_versions, Daemon, DaemonHooks, DaemonOptions,
};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

/// Version 1 of the projection: a count and a total (the shared tally).
mod v1 {
    pub use crate::common::tally::Tally;
}

/// Version 2: the same document type with an extra field (0 in version-1 documents).
mod v2 {
    use super::*;

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    pub struct Tally {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
        #[document(index)] // an index the switch renames with its table
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

/// Appends `per_stream` events to each of `streams` new streams, 5,000 events a save.
async fn seed(store: &DocumentStore, streams: usize, per_stream: i64) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..streams).map(|_| Uuid::now_v7()).collect();
    let chunk = (5_000 / per_stream).max(1) as usize;
    for part in ids.chunks(chunk) {
        let mut s = store.lightweight_session();
        for id in part {
            let events: Vec<Added> = (1..=per_stream).map(|n| Added { n }).collect();
            ok(s.events().start_stream(*id, events));
        }
        ok(s.save_changes().await);
    }
    ids
}

fn fast() -> DaemonOptions {
    DaemonOptions {
        batch_size: 5_000,
        workers: 2,
        poll_interval: Duration::from_millis(20),
        ..DaemonOptions::default()
    }
}

/// Builds version 1 and lets a daemon catch it up.
async fn version_one(
    label: &str,
    streams: usize,
    per_stream: i64,
) -> (marten_testing::TestSchema, Vec<Uuid>) {
    let (schema, b) = builder(label);
    let store = ok(b.projection::<v1::Tally>(Lifecycle::Async).build().await);
    let ids = seed(&store, streams, per_stream).await;
    let daemon = Daemon::start(&store, fast());
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);
    (schema, ids)
}

async fn store_v2(schema: &marten_testing::TestSchema) -> DocumentStore {
    let b = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(8);
    ok(b.projection_versioned::<v2::Tally>(2).build().await)
}

async fn raw(schema: &marten_testing::TestSchema) -> tokio_postgres::Client {
    let (client, conn) = match tokio_postgres::connect(schema.url(), tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => panic!("connect: {e}"),
    };
    tokio::spawn(conn);
    client
}

async fn table_exists(client: &tokio_postgres::Client, schema: &str, table: &str) -> bool {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
            &[&schema, &table],
        )
        .await
        .expect("pg_tables");
    row.get::<_, i64>(0) == 1
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

/// Whether every document of one query is of one version: `Some(2)` all version-2
/// shaped, `Some(1)` all version-1 shaped, `None` a mix.
fn shape(docs: &[v2::Tally]) -> Option<u32> {
    if docs.iter().all(|d| d.doubled == 0) {
        Some(1)
    } else if docs.iter().all(|d| d.doubled == 2 * d.total) {
        Some(2)
    } else {
        None
    }
}

/// Reads in a loop until `stop`: every query sees at least `floor` documents, all of one
/// version, and never version 1 again after version 2. Returns how many reads saw each.
async fn read_until(
    store: DocumentStore,
    probe: Uuid,
    floor: usize,
    stop: Arc<AtomicBool>,
) -> (u32, u32) {
    let (mut old, mut new) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let mut s = store.query_session();
        let docs = ok(s.query::<v2::Tally>().to_list().await);
        assert!(
            docs.len() >= floor,
            "a reader saw {} documents of {floor}",
            docs.len()
        );
        match shape(&docs) {
            Some(1) => {
                assert_eq!(new, 0, "a reader saw version 1 after version 2");
                old += 1;
            }
            Some(_) => new += 1,
            None => panic!("one query saw documents of both versions"),
        }
        let one = ok(s.load::<v2::Tally>(&probe).await).expect("the probe document");
        assert!(
            new == 0 || one.doubled == 2 * one.total,
            "a load saw version 1 after a query saw version 2"
        );
    }
    (old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_builds_beside_the_old_one_and_readers_switch_atomically() {
    let started = Instant::now();
    let (schema, ids) = version_one("bluegreen_switch", 1_000, 100).await;
    println!(
        "100,000 events appended and projected (v1) in {:?}",
        started.elapsed()
    );
    let store = store_v2(&schema).await;
    let before = ok(store.query_session().query::<v2::Tally>().count().await) as usize;
    assert_eq!(before, 1_000);
    assert_eq!(ok(active_projection_version::<v2::Tally>(&store).await), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_until(store.clone(), ids[0], before, stop.clone()));
    let daemon = Daemon::start(&store, fast());
    wait_for_version(&store, 2, Duration::from_secs(60)).await;
    println!("version 2 active after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (old, new) = reader.await.expect("reader");
    println!("reads: {old} of version 1, {new} of version 2");
    assert!(old > 0, "the reader read during the build");
    assert!(new > 0, "the reader saw the switch");

    let docs = ok(store.query_session().query::<v2::Tally>().to_list().await);
    assert_eq!(docs.len(), 1_000);
    // The switched-in table is the table the schema expects, indexes included.
    ok(store.assert_schema().await);
    let hundred = ok(store
        .query_session()
        .query::<v2::Tally>()
        .filter(|f| f.count.eq(100))
        .count()
        .await);
    assert_eq!(hundred, 1_000);
    assert!(docs
        .iter()
        .all(|d| d.count == 100 && d.total == 5_050 && d.doubled == 10_100));
    // Writes go on into the active table after the switch.
    let mut s = store.lightweight_session();
    ok(s.events().append(ids[1], [Added { n: 1 }]));
    ok(s.save_changes().await);
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    let one = ok(store.query_session().load::<v2::Tally>(&ids[1]).await).expect("doc");
    assert_eq!((one.count, one.doubled), (101, 10_102));
    ok(daemon.stop().await);

    let client = raw(&schema).await;
    assert!(
        table_exists(&client, schema.name(), "mt_doc_tally_v1").await,
        "the old table stays"
    );
    assert!(!table_exists(&client, schema.name(), "mt_doc_tally_v2").await);
    let dropped = ok(drop_old_projection_versions::<v2::Tally>(&store).await);
    assert_eq!(dropped, vec!["mt_doc_tally_v1".to_owned()]);
    assert!(
        !table_exists(&client, schema.name(), "mt_doc_tally_v1").await,
        "dropped"
    );
    assert!(table_exists(&client, schema.name(), "mt_doc_tally").await);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_query_sees_both_versions_at_once() {
    let (schema, ids) = version_one("bluegreen_atomic", 2_000, 5).await;
    let store = store_v2(&schema).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(read_until(store.clone(), ids[i], 2_000, stop.clone())))
        .collect();
    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 1_000,
            ..fast()
        },
    );
    wait_for_version(&store, 2, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = (0, 0);
    for reader in readers {
        let (old, new) = reader.await.expect("reader");
        seen = (seen.0 + old, seen.1 + new);
    }
    ok(daemon.stop().await);
    println!("reads: {} of version 1, {} of version 2", seen.0, seen.1);
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "readers read on both sides of the switch"
    );
}

/// How many documents version 2's build table holds.
async fn build_rows(client: &tokio_postgres::Client, schema: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {schema}.mt_doc_tally_v2");
    client
        .query_one(&sql, &[])
        .await
        .expect("count")
        .get::<_, i64>(0)
}

/// Where version 2's build is.
async fn build_position(client: &tokio_postgres::Client, schema: &str) -> i64 {
    let sql = format!("SELECT last_seq FROM {schema}.mt_event_progression WHERE name = 'Tally:v2'");
    match client.query_opt(&sql, &[]).await.expect("progression") {
        Some(row) => row.get::<_, i64>(0),
        None => 0,
    }
}

/// Slows each commit of the build so that a stop lands mid-build.
struct Slow;

impl DaemonHooks for Slow {
    fn after_commit(&self, _projection: &str, _sequences: &[i64]) {
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_build_resumes_where_it_was() {
    let (schema, ids) = version_one("bluegreen_resume", 200, 50).await;
    let store = store_v2(&schema).await;
    let client = raw(&schema).await;
    let options = || DaemonOptions {
        batch_size: 100,
        hooks: Arc::new(Slow),
        ..fast()
    };
    let daemon = Daemon::start(&store, options());
    let started = Instant::now();
    while build_position(&client, schema.name()).await < 1_000 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the build did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ok(daemon.stop().await);
    let stopped_at = build_position(&client, schema.name()).await;
    assert!(stopped_at < 10_000, "the build finished before the stop");
    assert_eq!(ok(active_projection_version::<v2::Tally>(&store).await), 1);
    assert!(table_exists(&client, schema.name(), "mt_doc_tally_v2").await);
    // Readers still read version 1, whole.
    let docs = ok(store.query_session().query::<v2::Tally>().to_list().await);
    assert_eq!((docs.len(), shape(&docs)), (200, Some(1)));
    assert!(
        build_rows(&client, schema.name()).await > 0,
        "the build wrote into its own table"
    );
    // A rebuild during the build clears the build's table, not the one readers read.
    ok(marten::daemon::rebuild(&store, "Tally:v2").await);
    assert_eq!(build_rows(&client, schema.name()).await, 0);
    assert_eq!(build_position(&client, schema.name()).await, 0);
    let docs = ok(store.query_session().query::<v2::Tally>().to_list().await);
    assert_eq!((docs.len(), shape(&docs)), (200, Some(1)));

    let daemon = Daemon::start(&store, fast());
    wait_for_version(&store, 2, Duration::from_secs(60)).await;
    ok(daemon.stop().await);
    let docs = ok(store.query_session().query::<v2::Tally>().to_list().await);
    assert_eq!(docs.len(), ids.len());
    // Every event folded exactly once across the stop.
    assert!(docs
        .iter()
        .all(|d| d.count == 50 && d.total == 1_275 && d.doubled == 2_550));
}

#[tokio::test]
async fn a_version_one_runner_stays_idle_once_version_two_is_active() {
    let (schema, ids) = version_one("bluegreen_superseded", 10, 5).await;
    let store = store_v2(&schema).await;
    let daemon = Daemon::start(&store, fast());
    wait_for_version(&store, 2, Duration::from_secs(30)).await;
    ok(daemon.stop().await);
    // An old deployment (version 1) starts again: it must not write into version 2's table.
    let old = ok(builder("unused")
        .1
        .connection_string(schema.url())
        .schema(schema.name())
        .projection::<v1::Tally>(Lifecycle::Async)
        .build()
        .await);
    let old_daemon = Daemon::start(&old, fast());
    let mut s = old.lightweight_session();
    ok(s.events().append(ids[0], [Added { n: 1 }]));
    ok(s.save_changes().await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(old_daemon.stop().await);
    let doc = ok(store.query_session().load::<v2::Tally>(&ids[0]).await).expect("doc");
    assert_eq!((doc.count, doc.doubled), (5, 30), "version 1 wrote nothing");
    // The command line's drop, by projection name.
    let dropped = ok(marten::daemon::drop_old_projection_versions_named(&store, "Tally:v2").await);
    assert_eq!(dropped, vec!["mt_doc_tally_v1".to_owned()]);
    assert!(matches!(
        marten::daemon::drop_old_projection_versions_named(&store, "Nope").await,
        Err(marten::Error::Configuration(_))
    ));
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Assigned {
    to: Vec<String>,
}

/// A multi-stream projection: version 2 also counts tasks twice.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Workload {
    id: String,
    tasks: i64,
    #[serde(default)]
    twice: i64,
}

#[marten::apply]
impl Workload {
    fn identities(e: &Assigned) -> Vec<String> {
        e.to.clone()
    }
    fn create(_e: &Assigned) -> Self {
        Workload {
            id: String::new(),
            tasks: 1,
            twice: 2,
        }
    }
    fn apply(&mut self, _e: &Assigned) {
        self.tasks += 1;
        self.twice += 2;
    }
}

#[tokio::test]
async fn a_multi_stream_projection_switches_versions_too() {
    let (schema, b) = builder("bluegreen_multi");
    let store = ok(b
        .multi_stream_projection::<Workload>(Lifecycle::Async)
        .build()
        .await);
    let mut s = store.lightweight_session();
    for i in 0..30 {
        let to = if i % 3 == 0 {
            vec!["ann".to_owned(), "bob".to_owned()]
        } else {
            vec!["bob".to_owned()]
        };
        ok(s.events().append(Uuid::now_v7(), [Assigned { to }]));
    }
    ok(s.save_changes().await);
    let daemon = Daemon::start(&store, fast());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    // Version 1's documents were written before `twice` existed: simulate by clearing it.
    let client = raw(&schema).await;
    let sql = format!(
        "UPDATE {}.mt_doc_workload SET data = data - 'twice'",
        schema.name()
    );
    client.execute(&sql, &[]).await.expect("strip");

    let b = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name());
    let v2 = ok(b
        .multi_stream_projection_versioned::<Workload>(2)
        .build()
        .await);
    let bob = ok(v2.query_session().load::<Workload>(&"bob".to_owned()).await).expect("bob");
    assert_eq!(
        (bob.tasks, bob.twice),
        (30, 0),
        "version 1 until the switch"
    );
    let daemon = Daemon::start(&v2, fast());
    let started = Instant::now();
    while ok(active_projection_version::<Workload>(&v2).await) != 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "no switch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ok(daemon.stop().await);
    let mut q = v2.query_session();
    let bob = ok(q.load::<Workload>(&"bob".to_owned()).await).expect("bob");
    let ann = ok(q.load::<Workload>(&"ann".to_owned()).await).expect("ann");
    assert_eq!(
        (bob.tasks, bob.twice, ann.tasks, ann.twice),
        (30, 60, 10, 20)
    );
    assert!(table_exists(&client, schema.name(), "mt_doc_workload_v1").await);
}

/// A runner (here a rebuild) that finds its target while a switch is in flight waits for
/// the switch and then targets the switched table: it never takes the build table the
/// switch renamed for its own, nor makes a new, empty one of that name behind it that
/// its batches would write into while readers read the switched table.
#[tokio::test]
async fn a_target_found_during_a_switch_sees_the_switch() {
    let (schema, _ids) = version_one("bluegreen_target_race", 10, 5).await;
    let store = store_v2(&schema).await;
    // The build table, as a build's first acquire makes it.
    ok(marten::daemon::rebuild(&store, "Tally:v2").await);
    let client = raw(&schema).await;
    assert!(table_exists(&client, schema.name(), "mt_doc_tally_v2").await);
    // A switch in flight: the active table locked and renamed away, the build table
    // renamed in, version 2 recorded; not committed yet.
    let s = schema.name();
    client
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {s}.mt_doc_tally IN ACCESS EXCLUSIVE MODE; \
             ALTER TABLE {s}.mt_doc_tally RENAME TO mt_doc_tally_v1; \
             ALTER TABLE {s}.mt_doc_tally_v2 RENAME TO mt_doc_tally; \
             INSERT INTO {s}.mt_projection_versions (doc_table, active) \
             VALUES ('mt_doc_tally', 2) ON CONFLICT (doc_table) DO UPDATE SET active = 2"
        ))
        .await
        .expect("the switch");
    let rebuilding = tokio::spawn({
        let store = store.clone();
        async move { marten::daemon::rebuild(&store, "Tally:v2").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.batch_execute("COMMIT").await.expect("commit");
    let rebuilt = rebuilding.await.expect("the rebuild's task");
    assert!(rebuilt.is_ok(), "a rebuild during a switch: {rebuilt:?}");
    assert!(
        !table_exists(&client, s, "mt_doc_tally_v2").await,
        "a build table made behind the switch"
    );
    assert_eq!(ok(active_projection_version::<v2::Tally>(&store).await), 2);
}

/// A runner of the active version (here a plain version-1 projection) finds its target
/// without the schema's migration lock or any DDL: a migration holding that lock on
/// another node does not hold up projecting.
#[tokio::test]
async fn an_active_versions_runner_needs_no_migration_lock() {
    let (schema, b) = builder("bluegreen_no_lock");
    let store = ok(b.projection::<v1::Tally>(Lifecycle::Async).build().await);
    let ids = seed(&store, 3, 4).await;
    let client = raw(&schema).await;
    client
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('marten:schema:' || $1::text, 0))",
            &[&schema.name()],
        )
        .await
        .expect("the migration lock");
    let daemon = Daemon::start(&store, fast());
    let caught_up = daemon.wait_for_non_stale(Duration::from_secs(10)).await;
    ok(daemon.stop().await);
    assert!(
        caught_up.is_ok(),
        "held up by the migration lock: {caught_up:?}"
    );
    let docs = ok(store.query_session().query::<v1::Tally>().to_list().await);
    assert_eq!(docs.len(), ids.len());
}
