//! Blue/green rebuilds with conjoined events: the new version builds per tenant into one
//! build table, readers of every tenant go on reading the old version whole, and the
//! switch happens once every tenant's runner of the new version has caught up; then each
//! tenant reads its own documents of the new version only. One tenant keeps appending
//! throughout, so its runner is still building when the other tenant's switches (its
//! next batch finds the build table renamed and goes on in the active table).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tally::Added;
use common::{builder, ok};
use marten::daemon::{
    active_projection_version, drop_old_projection_versions, Daemon, DaemonHooks, DaemonOptions,
};
use marten::prelude::*;
use marten::Tenancy;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

mod v1 {
    use super::*;

    /// Version 1: a total.
    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    #[document(tenancy = "conjoined")]
    pub struct Wallet {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
    }

    #[marten::apply]
    impl Wallet {
        fn apply(&mut self, e: &Added) {
            self.total += e.n;
        }
    }
}

mod v2 {
    use super::*;

    /// Version 2: the same document type with an extra field (0 in version-1 documents).
    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    #[document(tenancy = "conjoined")]
    pub struct Wallet {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
        #[serde(default)]
        pub doubled: i64,
    }

    #[marten::apply]
    impl Wallet {
        fn apply(&mut self, e: &Added) {
            self.total += e.n;
            self.doubled += 2 * e.n;
        }
    }
}

const PER_STREAM: i64 = 10;

/// Red has few streams (its runner catches up at once), blue many (its runner takes a
/// while): the switch must wait for blue.
const TENANTS: [(&str, usize); 2] = [("red", 20), ("blue", 300)];

fn options() -> DaemonOptions {
    DaemonOptions {
        batch_size: 200,
        poll_interval: Duration::from_millis(20),
        hooks: Arc::new(Slow),
        ..DaemonOptions::default()
    }
}

/// Slows each commit, so that the build takes long enough for readers to read during it.
struct Slow;

impl DaemonHooks for Slow {
    fn after_commit(&self, _projection: &str, _sequences: &[i64]) {
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// Starts `streams` streams of `tenant` with `PER_STREAM` events each.
async fn seed(store: &DocumentStore, tenant: &str, streams: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..streams).map(|_| Uuid::now_v7()).collect();
    let mut s = ok(store.lightweight_session_for(tenant));
    for id in &ids {
        ok(s.events()
            .start_stream(*id, (1..=PER_STREAM).map(|n| Added { n })));
    }
    ok(s.save_changes().await);
    ids
}

/// Version 1 projected for both tenants: each tenant's stream ids.
async fn version_one(label: &str) -> (TestSchema, Vec<Vec<Uuid>>) {
    let (schema, b) = builder(label);
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<v1::Wallet>(Lifecycle::Async)
        .build()
        .await);
    let mut ids = Vec::new();
    for (tenant, streams) in TENANTS {
        ids.push(seed(&store, tenant, streams).await);
    }
    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(60)).await);
    ok(daemon.stop().await);
    (schema, ids)
}

/// Reads `tenant`'s documents until `stop`: never fewer than `ids`, none of another
/// tenant, all of one version, and never version 1 again after version 2. Returns how
/// many reads saw each version.
async fn read_until(
    store: DocumentStore,
    tenant: &'static str,
    ids: Vec<Uuid>,
    stop: Arc<AtomicBool>,
) -> (u32, u32) {
    let own: HashSet<Uuid> = ids.iter().copied().collect();
    let (mut old, mut new) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let mut q = ok(store.query_session_for(tenant));
        let docs = ok(q.query::<v2::Wallet>().to_list().await);
        assert!(
            docs.len() >= ids.len(),
            "{tenant}: a reader saw {} documents of {}",
            docs.len(),
            ids.len()
        );
        assert!(
            docs.iter().all(|d| own.contains(&d.id)),
            "{tenant}: another tenant's"
        );
        if docs.iter().all(|d| d.doubled == 0) {
            assert_eq!(new, 0, "{tenant}: version 1 after version 2");
            old += 1;
        } else if docs.iter().all(|d| d.doubled == 2 * d.total) {
            new += 1;
        } else {
            panic!("{tenant}: one query saw documents of both versions");
        }
    }
    (old, new)
}

/// Appends `Added { n: 1 }` to red's first stream every few milliseconds until `stop`,
/// so that red's runner has work while blue's catches up and the switch happens;
/// returns how many it appended.
async fn keep_appending(store: DocumentStore, stream: Uuid, stop: Arc<AtomicBool>) -> i64 {
    let mut appended = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut s = ok(store.lightweight_session_for("red"));
        ok(s.events().append(stream, [Added { n: 1 }]));
        ok(s.save_changes().await);
        appended += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    appended
}

/// The owner epochs of version 1's slots, by name.
async fn old_epochs(raw: &tokio_postgres::Client, schema: &str) -> Vec<(String, i64)> {
    let sql = format!(
        "SELECT name, owner_epoch FROM {schema}.mt_event_progression \
         WHERE name LIKE 'Wallet@%' ORDER BY name"
    );
    let rows = raw.query(&sql, &[]).await.expect("progression");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_builds_and_readers_switch_once_all_caught_up() {
    let (schema, ids) = version_one("bluegreen_tenants").await;
    let raw = schema.raw_client().await;
    let epochs = old_epochs(&raw, schema.name()).await;
    assert_eq!(epochs.len(), 2, "{epochs:?}");
    let b = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(8)
        .events_tenancy(Tenancy::Conjoined);
    let store = ok(b.projection_versioned::<v2::Wallet>(2).build().await);
    assert_eq!(ok(active_projection_version::<v2::Wallet>(&store).await), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = TENANTS
        .iter()
        .zip(&ids)
        .map(|((tenant, _), ids)| {
            tokio::spawn(read_until(store.clone(), tenant, ids.clone(), stop.clone()))
        })
        .collect();
    let writing = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_appending(store.clone(), ids[0][0], writing.clone()));
    let daemon = Daemon::start(&store, options());
    let started = Instant::now();
    while ok(active_projection_version::<v2::Wallet>(&store).await) != 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "no switch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    writing.store(true, Ordering::Relaxed);
    let appended = writer.await.expect("writer");
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    for ((tenant, _), reader) in TENANTS.iter().zip(readers) {
        let (old, new) = reader.await.expect("reader");
        println!("{tenant}: {old} reads of version 1, {new} of version 2");
        assert!(old > 0 && new > 0, "{tenant}: reads on both sides");
    }
    ok(daemon.stop().await);

    let red_first = ids[0][0];
    for ((tenant, _), ids) in TENANTS.iter().zip(&ids) {
        let mut q = ok(store.query_session_for(*tenant));
        let docs = ok(q.query::<v2::Wallet>().to_list().await);
        let seen: HashSet<Uuid> = docs.iter().map(|d| d.id).collect();
        assert_eq!(
            seen,
            ids.iter().copied().collect(),
            "{tenant}: its own only"
        );
        for d in docs {
            // Red's first stream got the writer's events, projected once each.
            let total = if d.id == red_first { 55 + appended } else { 55 };
            assert_eq!((d.total, d.doubled), (total, 2 * total), "{tenant}");
        }
    }
    let moved = old_epochs(&raw, schema.name()).await;
    for ((name, before), (_, after)) in epochs.iter().zip(&moved) {
        assert!(
            after > before,
            "{name}: the old version's runner was not retired"
        );
    }
    ok(store.assert_schema().await);
    let dropped = ok(drop_old_projection_versions::<v2::Wallet>(&store).await);
    assert_eq!(dropped, vec!["mt_doc_wallet_v1".to_owned()]);
}
