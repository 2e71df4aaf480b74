//! The daemon with conjoined events: every tenant's projection runs on its own slot (its
//! own progression row, lock and owner epoch), so tenants with the same stream ids
//! project into their own documents, one tenant's poison event does not hold up another,
//! a rebuild of one tenant leaves the others alone, and tenants that appear later are
//! picked up. Inline projections of conjoined aggregates keep tenants apart too.

mod common;

use std::time::{Duration, Instant};

use common::{builder, ok};
use marten::daemon::{rebuild_tenant, Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten::{EventProjection, ProjectedOps, Tenancy};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Deposited {
    amount: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Poisoned {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct Wallet {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Wallet {
    fn apply(&mut self, e: &Deposited) {
        self.total += e.amount;
    }
    fn apply_poison(&mut self, _e: &Poisoned) -> Result<(), String> {
        Err("poisoned".into())
    }
}

/// An inline aggregate of conjoined events.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct Ledger {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Ledger {
    fn apply(&mut self, e: &Deposited) {
        self.total += e.amount;
    }
}

/// A single-tenant aggregate: refused as a stored projection of conjoined events.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Shared {
    id: Uuid,
    version: i64,
}

#[marten::apply]
impl Shared {
    fn apply(&mut self, _e: &Deposited) {}
}

fn options(poison: PoisonPolicy) -> DaemonOptions {
    DaemonOptions {
        poison,
        retries: 0,
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    }
}

async fn deposit(store: &DocumentStore, tenant: &str, stream: Uuid, amounts: &[i64]) {
    let mut s = ok(store.lightweight_session_for(tenant));
    let events: Vec<Deposited> = amounts.iter().map(|&amount| Deposited { amount }).collect();
    ok(s.events().append(stream, events));
    ok(s.save_changes().await);
}

async fn wallet(store: &DocumentStore, tenant: &str, stream: Uuid) -> Option<i64> {
    let mut q = ok(store.query_session_for(tenant));
    ok(q.load::<Wallet>(&stream).await).map(|w| w.total)
}

/// Waits (at most 20 s) until `tenant`'s wallet shows `total`.
async fn wait_for(store: &DocumentStore, tenant: &str, stream: Uuid, total: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while wallet(store, tenant, stream).await != Some(total) {
        assert!(Instant::now() < deadline, "{tenant} reached {total}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn conjoined_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .projection::<Wallet>(Lifecycle::Async)
        .projection::<Ledger>(Lifecycle::Inline)
        .event::<Poisoned>()
        .build()
        .await);
    (schema, store)
}

#[tokio::test]
async fn each_tenant_projects_its_own_streams_on_its_own_slot() {
    let (schema, store) = conjoined_store("tenancy_daemon_slots").await;
    let stream = Uuid::now_v7();
    deposit(&store, "red", stream, &[1, 2]).await;
    deposit(&store, "blue", stream, &[10, 20]).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::Stop));
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    assert_eq!(wallet(&store, "red", stream).await, Some(3));
    assert_eq!(wallet(&store, "blue", stream).await, Some(30));

    // A tenant whose first stream appears while the daemon runs gets its own runner.
    deposit(&store, "green", stream, &[100]).await;
    wait_for(&store, "green", stream, 100).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);

    // One progression row per tenant, recording its tenant.
    let (client, conn) = ok(tokio_postgres::connect(schema.url(), tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::Configuration(e.to_string())));
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!(
                "SELECT name, tenant_id FROM {}.mt_event_progression ORDER BY name",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("progression");
    let slots: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        slots,
        [
            ("Wallet@blue".to_owned(), "blue".to_owned()),
            ("Wallet@green".to_owned(), "green".to_owned()),
            ("Wallet@red".to_owned(), "red".to_owned()),
        ]
    );
    ok(daemon.stop().await);
}

#[tokio::test]
async fn one_tenants_poison_event_does_not_hold_up_another() {
    let (_schema, store) = conjoined_store("tenancy_daemon_poison").await;
    let stream = Uuid::now_v7();
    deposit(&store, "red", stream, &[1]).await;
    deposit(&store, "blue", stream, &[10]).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::Stop));
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    let mut s = ok(store.lightweight_session_for("red"));
    ok(s.events().append(stream, [Poisoned {}]));
    ok(s.save_changes().await);
    for round in 1..=5 {
        deposit(&store, "blue", stream, &[1]).await;
        wait_for(&store, "blue", stream, 10 + round).await;
    }
    assert_eq!(wallet(&store, "red", stream).await, Some(1));
    match daemon.stop().await {
        Err(e) => assert!(e.to_string().contains("poisoned"), "{e}"),
        Ok(()) => panic!("red's runner stopped on its poison event"),
    }
}

#[tokio::test]
async fn dead_letters_carry_the_tenant() {
    let (schema, store) = conjoined_store("tenancy_daemon_dead").await;
    let stream = Uuid::now_v7();
    let mut s = ok(store.lightweight_session_for("red"));
    ok(s.events().append(stream, [Deposited { amount: 1 }]));
    ok(s.events().append(stream, [Poisoned {}]));
    ok(s.save_changes().await);
    deposit(&store, "blue", stream, &[5]).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::DeadLetter));
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    ok(daemon.stop().await);
    assert_eq!(wallet(&store, "red", stream).await, Some(1));
    assert_eq!(wallet(&store, "blue", stream).await, Some(5));
    let (client, conn) = ok(tokio_postgres::connect(schema.url(), tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::Configuration(e.to_string())));
    tokio::spawn(conn);
    let rows = client
        .query(
            &format!(
                "SELECT projection, tenant_id, event_type FROM {}.mt_dead_letters",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("dead letters");
    let letters: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].0.as_str(), letters[0].1.as_str()),
        ("Wallet", "red")
    );
}

#[tokio::test]
async fn a_rebuild_of_one_tenant_leaves_the_others_alone() {
    let (_schema, store) = conjoined_store("tenancy_daemon_rebuild").await;
    let stream = Uuid::now_v7();
    deposit(&store, "red", stream, &[1, 2, 3]).await;
    deposit(&store, "blue", stream, &[10]).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::Stop));
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    // Break blue's document by hand, then rebuild blue alone while the daemon runs.
    let mut s = ok(store.lightweight_session_for("blue"));
    ok(s.store(Wallet {
        id: stream,
        version: 1,
        total: -1,
    }));
    ok(s.save_changes().await);
    let red_before = ok(ok(store.query_session_for("red"))
        .metadata::<Wallet>(&stream)
        .await);
    ok(rebuild_tenant(&store, "Wallet", "blue").await);
    wait_for(&store, "blue", stream, 10).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    let red_after = ok(ok(store.query_session_for("red"))
        .metadata::<Wallet>(&stream)
        .await);
    assert_eq!(
        red_before.map(|m| m.last_modified),
        red_after.map(|m| m.last_modified),
        "red's document was not rewritten"
    );
    assert_eq!(wallet(&store, "red", stream).await, Some(6));
    // The whole projection, every tenant.
    ok(marten::daemon::rebuild(&store, "Wallet").await);
    wait_for(&store, "red", stream, 6).await;
    wait_for(&store, "blue", stream, 10).await;
    ok(daemon.stop().await);
    // A rebuild of one tenant needs conjoined events.
    let (_s2, b) = builder("tenancy_daemon_rebuild_single");
    let single = ok(b.projection::<Shared>(Lifecycle::Async).build().await);
    assert!(matches!(
        rebuild_tenant(&single, "Shared", "blue").await,
        Err(Error::Configuration(_))
    ));
}

/// The live fold of `tenant`'s stream and its projected document are equal.
async fn projected_as_folded(store: &DocumentStore, tenant: &str, stream: Uuid) {
    let mut s = ok(store.lightweight_session_for(tenant));
    let live: Option<Wallet> = ok(s.events().aggregate_stream::<Wallet>(stream).await);
    let projected = ok(s.load::<Wallet>(&stream).await);
    assert_eq!(projected, live, "tenant {tenant}");
}

/// Rebuilds of one tenant while that tenant and another keep appending: both end with
/// every event applied once (each document equals its stream's live fold).
#[tokio::test]
async fn rebuilds_of_one_tenant_under_appends_of_both_lose_nothing() {
    let (_schema, store) = conjoined_store("tenancy_daemon_rebuild_live").await;
    let stream = Uuid::now_v7();
    deposit(&store, "red", stream, &[1]).await;
    deposit(&store, "blue", stream, &(1..=50).collect::<Vec<_>>()).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::Stop));
    ok(daemon.wait_for_non_stale(Duration::from_secs(20)).await);
    let writer = |tenant: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 1..=30 {
                deposit(&store, tenant, stream, &[n]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let writers = vec![writer("red"), writer("blue")];
    for _ in 0..3 {
        ok(rebuild_tenant(&store, "Wallet", "blue").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    marten_testing::tasks::join_handles(writers, Duration::from_secs(60)).await;
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    projected_as_folded(&store, "red", stream).await;
    projected_as_folded(&store, "blue", stream).await;
    assert_eq!(
        wallet(&store, "red", stream).await,
        Some(1 + (1..=30).sum::<i64>())
    );
    assert_eq!(
        wallet(&store, "blue", stream).await,
        Some((1..=50).sum::<i64>() + (1..=30).sum::<i64>())
    );
    ok(daemon.stop().await);
}

/// Two daemons (two nodes) race for every tenant's slot while events keep coming: each
/// tenant's document ends equal to the live fold of its stream (no event lost, none
/// applied twice).
#[tokio::test]
async fn racing_daemons_apply_each_tenants_events_exactly_once() {
    let (_schema, store) = conjoined_store("tenancy_daemon_race").await;
    let stream = Uuid::now_v7();
    let tenants = ["t0", "t1", "t2", "t3"];
    for t in tenants {
        deposit(&store, t, stream, &[1]).await;
    }
    let a = Daemon::start(&store, options(PoisonPolicy::Stop));
    let b = Daemon::start(
        &store,
        DaemonOptions {
            node: "other-node".into(),
            ..options(PoisonPolicy::Stop)
        },
    );
    let mut writers = Vec::new();
    for (i, t) in tenants.into_iter().enumerate() {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..20 {
                deposit(&store, t, stream, &[i as i64 + n]).await;
            }
        }));
    }
    marten_testing::tasks::join_handles(writers, Duration::from_secs(120)).await;
    ok(a.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(b.wait_for_non_stale(Duration::from_secs(30)).await);
    for t in tenants {
        projected_as_folded(&store, t, stream).await;
    }
    ok(a.stop().await);
    ok(b.stop().await);
}

#[tokio::test]
async fn inline_conjoined_aggregates_keep_tenants_with_the_same_stream_apart() {
    let (_schema, store) = conjoined_store("tenancy_daemon_inline").await;
    let stream = Uuid::now_v7();
    for (tenant, amounts) in [("red", [1, 2]), ("blue", [10, 20])] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events()
            .start_stream(stream, [Deposited { amount: amounts[0] }]));
        ok(s.save_changes().await);
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events()
            .append(stream, [Deposited { amount: amounts[1] }]));
        ok(s.save_changes().await);
    }
    for (tenant, total) in [("red", 3), ("blue", 30)] {
        let mut q = ok(store.query_session_for(tenant));
        let ledger = ok(q.load::<Ledger>(&stream).await).expect("projected inline");
        assert_eq!((ledger.total, ledger.version), (total, 2), "{tenant}");
    }
}

#[tokio::test]
async fn an_async_conjoined_projection_of_single_tenant_events_is_refused() {
    let (_schema, b) = builder("tenancy_daemon_refused_async");
    match b.projection::<Wallet>(Lifecycle::Async).build().await {
        Err(Error::Configuration(m)) => assert!(m.contains("Wallet"), "{m}"),
        other => panic!(
            "expected a configuration error, got {:?}",
            other.map(|_| ())
        ),
    }
    // Inline over single-tenant events is refused too: each tenant's document would fold
    // only its own appends to a shared stream.
    let (_schema, b) = builder("tenancy_daemon_inline_single");
    match b.projection::<Wallet>(Lifecycle::Inline).build().await {
        Err(Error::Configuration(m)) => assert!(m.contains("Wallet"), "{m}"),
        other => panic!(
            "expected a configuration error, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test]
async fn a_single_tenant_stored_projection_of_conjoined_events_is_refused() {
    for lifecycle in [Lifecycle::Inline, Lifecycle::Async] {
        let (_schema, b) = builder("tenancy_daemon_refused");
        let built = b
            .events_tenancy(Tenancy::Conjoined)
            .projection::<Shared>(lifecycle)
            .build()
            .await;
        match built {
            Err(Error::Configuration(m)) => assert!(m.contains("Shared"), "{m}"),
            other => panic!(
                "expected a configuration error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

/// A conjoined document written by an event projection.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[document(tenancy = "conjoined")]
struct Receipt {
    id: Uuid,
    amount: i64,
}

struct Receipts;

impl EventProjection for Receipts {
    fn name(&self) -> &'static str {
        "Receipts"
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(d) = event.data_as::<Deposited>() {
            ops.store(Receipt {
                id: event.id,
                amount: d.amount,
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_event_projection_writing_conjoined_documents_from_single_tenant_events_is_refused_by_name(
) {
    let (schema, b) = builder("tenancy_daemon_receipts");
    let store = ok(b
        .event::<Deposited>()
        .document::<Receipt>()
        .event_projection(Receipts, Lifecycle::Async)
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(stream, [Deposited { amount: 3 }]));
    ok(s.save_changes().await);
    let daemon = Daemon::start(&store, options(PoisonPolicy::DeadLetter));
    let raw = schema.raw_client().await;
    // The batch fails before anything is sent, naming the type; the poison policy
    // dead-letters the event instead of retrying a database error for ever.
    let mut letters = Vec::new();
    for _ in 0..200 {
        letters = raw
            .query("SELECT projection, error FROM mt_dead_letters", &[])
            .await
            .expect("dead letters")
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(daemon.stop().await);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, "Receipts");
    assert!(
        letters[0].1.contains("Receipt") && letters[0].1.contains("tenant"),
        "{letters:?}"
    );
    let rows: i64 = raw
        .query_one("SELECT count(*) FROM mt_doc_receipt", &[])
        .await
        .map_or(0, |r| r.get(0));
    assert_eq!(rows, 0, "nothing written");
}

/// Two tenants whose slots' lock keys share a 32-bit hash both get a runner: the lock
/// key is a 64-bit hash of the slot's name. With the 32-bit one, a pair like this (about
/// one in 2^33 pairs of slots; among 50,000 tenants' slots, likely) shared one advisory
/// lock, and one of the two tenants' projections never ran.
#[tokio::test]
async fn tenants_whose_slot_names_share_a_32_bit_hash_both_run() {
    let (schema, store) = conjoined_store("tenancy_daemon_hash").await;
    let (client, conn) = ok(tokio_postgres::connect(schema.url(), tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::Configuration(e.to_string())));
    tokio::spawn(conn);
    // 300,000 candidate names hold about ten such pairs; the first is taken.
    let pair = client
        .query_one(
            "SELECT min(t), max(t) FROM ( \
                 SELECT 't' || i AS t, \
                        hashtext('marten:daemon:' || $1::text || ':Wallet@t' || i) AS h \
                 FROM generate_series(1, 300000) i) c \
             GROUP BY h HAVING count(*) > 1 LIMIT 1",
            &[&schema.name()],
        )
        .await
        .expect("a pair of names whose lock keys collide in 32 bits");
    let (a, b): (String, String) = (pair.get(0), pair.get(1));
    let stream = Uuid::now_v7();
    deposit(&store, &a, stream, &[1, 2]).await;
    deposit(&store, &b, stream, &[10, 20]).await;
    let daemon = Daemon::start(&store, options(PoisonPolicy::Stop));
    ok(daemon.wait_for_non_stale(Duration::from_secs(10)).await);
    assert_eq!(wallet(&store, &a, stream).await, Some(3), "tenant {a}");
    assert_eq!(wallet(&store, &b, stream).await, Some(30), "tenant {b}");
    ok(daemon.stop().await);
}

/// A name listed in a directory shared by every tenant.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Listed {
    name: String,
}

/// A single-tenant document (every tenant shares it): the tenant that listed the name
/// last.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Listing {
    id: String,
    by: String,
}

/// The listing of `event`, if it lists a name.
fn listing_of(event: &EventEnvelope) -> Option<Listing> {
    let listed = event.data_as::<Listed>()?;
    Some(Listing {
        id: listed.name.clone(),
        by: event.tenant.as_ref().map(ToString::to_string)?,
    })
}

/// An event projection writing the shared `Listing` from every tenant's events, owning it
/// (so the store knows it writes the type).
struct Directory;

impl EventProjection for Directory {
    fn name(&self) -> &'static str {
        "Directory"
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(listing) = listing_of(event) {
            ops.store(listing);
        }
        Ok(())
    }

    fn owned_documents(&self, owned: &mut marten::OwnedDocuments) {
        owned.document::<Listing>();
    }
}

/// [`Directory`] without the declaration: the store learns that it writes `Listing` only
/// when it does.
struct Roster;

impl EventProjection for Roster {
    fn name(&self) -> &'static str {
        "Roster"
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(listing) = listing_of(event) {
            ops.store(listing);
        }
        Ok(())
    }
}

/// Holds the commit of a batch of `projection` that holds sequence `first` but not
/// `second` until a batch holding `second` has committed (10 s at most): the race of two
/// tenants' runners, which run at once, made deterministic, with the later event's runner
/// committing first.
struct LaterCommitsFirst {
    projection: &'static str,
    first: i64,
    second: i64,
    /// Whether a batch holding `second` has committed.
    done: std::sync::Mutex<bool>,
    committed: std::sync::Condvar,
}

impl marten::daemon::DaemonHooks for LaterCommitsFirst {
    fn before_commit(&self, p: &str, seqs: &[i64]) {
        if p == self.projection && seqs.contains(&self.first) && !seqs.contains(&self.second) {
            tokio::task::block_in_place(|| {
                let done = self.done.lock().expect("gate");
                let waited =
                    self.committed
                        .wait_timeout_while(done, Duration::from_secs(10), |done| !*done);
                drop(waited);
            });
        }
    }

    fn after_commit(&self, _p: &str, seqs: &[i64]) {
        if seqs.contains(&self.second) {
            *self.done.lock().expect("gate") = true;
            self.committed.notify_all();
        }
    }
}

/// A conjoined store with `Wallet` and an async event projection `p` of the shared
/// `Listing`; red lists "ada", then blue does, each also depositing 5 into its wallet of
/// the stream returned. The daemon's options hold red's commit of `p` until blue's has
/// committed.
async fn listed_by_two_tenants(
    label: &str,
    p: impl EventProjection,
    poison: PoisonPolicy,
) -> (
    marten_testing::TestSchema,
    DocumentStore,
    DaemonOptions,
    Uuid,
) {
    let name = p.name();
    let (schema, b) = builder(label);
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .event::<Listed>()
        .document::<Listing>()
        .projection::<Wallet>(Lifecycle::Async)
        .event_projection(p, Lifecycle::Async)
        .build()
        .await);
    let stream = Uuid::now_v7();
    for tenant in ["red", "blue"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.events().append(stream, [Listed { name: "ada".into() }]));
        ok(s.save_changes().await);
        deposit(&store, tenant, stream, &[5]).await;
    }
    let raw = schema.raw_client().await;
    let seqs: Vec<i64> = raw
        .query(
            "SELECT seq_id FROM mt_events WHERE data ? 'name' ORDER BY seq_id",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let [first, second] = seqs[..] else {
        panic!("two Listed events: {seqs:?}")
    };
    let gate = LaterCommitsFirst {
        projection: name,
        first,
        second,
        done: std::sync::Mutex::new(false),
        committed: std::sync::Condvar::new(),
    };
    let options = DaemonOptions {
        hooks: std::sync::Arc::new(gate),
        ..options(poison)
    };
    (schema, store, options, stream)
}

/// Who the shared listing of "ada" says listed it last.
async fn listed_by(store: &DocumentStore) -> Option<String> {
    let mut q = ok(store.query_session_for("red"));
    ok(q.load::<Listing>(&"ada".to_owned()).await).map(|l| l.by)
}

/// With conjoined events each tenant's runner of an event projection commits on its own:
/// a document every tenant shares, written from two tenants' events, would end as the
/// runner that commits last wrote it, not as the later event says (here red's earlier
/// write would win). A projection that declares such a type (`owned_documents`) is
/// refused when the daemon starts, naming it and the type; the other projections run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_projection_owning_a_shared_type_is_refused_with_conjoined_events() {
    let (_schema, store, options, stream) =
        listed_by_two_tenants("tenancy_daemon_directory", Directory, PoisonPolicy::Stop).await;
    let daemon = Daemon::start(&store, options);
    match daemon.wait_for_non_stale(Duration::from_secs(20)).await {
        Err(Error::ProjectionStopped { message, .. }) => {
            assert!(message.contains("Directory"), "{message}");
        }
        other => panic!(
            "the per-tenant runners ran ({other:?}): listing by {:?}, where the events' \
             order says by blue",
            listed_by(&store).await
        ),
    }
    wait_for(&store, "red", stream, 5).await;
    wait_for(&store, "blue", stream, 5).await;
    match daemon.stop().await {
        Err(Error::Configuration(m)) => {
            for named in ["Directory", "Listing", "conjoined", "tenant"] {
                assert!(m.contains(named), "{named} in {m}");
            }
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert_eq!(listed_by(&store).await, None, "nothing written");
}

/// The same projection without the declaration: its first write of the shared type from a
/// tenant's runner is refused, as that event's failure (the poison policy meets it; here
/// it stops the projection), naming the type; nothing of it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_projection_writing_a_shared_type_per_tenant_is_refused_at_the_write() {
    let (_schema, store, options, _) =
        listed_by_two_tenants("tenancy_daemon_roster", Roster, PoisonPolicy::Stop).await;
    let daemon = Daemon::start(&store, options);
    match daemon.wait_for_non_stale(Duration::from_secs(20)).await {
        Err(Error::ProjectionStopped { message, .. }) => {
            assert!(message.contains("Listing"), "{message}");
        }
        other => panic!(
            "the per-tenant runners ran ({other:?}): listing by {:?}, where the events' \
             order says by blue",
            listed_by(&store).await
        ),
    }
    match daemon.stop().await {
        Err(Error::Apply {
            projection,
            message,
            ..
        }) => {
            assert_eq!(projection, "Roster");
            for named in ["Roster", "Listing", "conjoined", "tenant"] {
                assert!(message.contains(named), "{named} in {message}");
            }
        }
        other => panic!("expected the event's failure, got {other:?}"),
    }
    assert_eq!(listed_by(&store).await, None, "nothing written");
}

/// A multi-stream projection runs per tenant with conjoined events too, so its document
/// type must be conjoined: a single-tenant one is refused when the store is built (two
/// tenants' runners would fold into one document).
#[tokio::test]
async fn a_multi_stream_projection_of_a_shared_type_is_refused_with_conjoined_events() {
    let (_schema, b) = builder("tenancy_daemon_shared_multi");
    let built = b
        .events_tenancy(Tenancy::Conjoined)
        .multi_stream_projection::<Tags>(Lifecycle::Async)
        .build()
        .await;
    match built {
        Err(Error::Configuration(m)) => {
            for named in ["Tags", "conjoined"] {
                assert!(m.contains(named), "{named} in {m}");
            }
        }
        other => panic!(
            "expected a configuration error, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// A single-tenant multi-stream document: one per name listed.
#[derive(Document, Serialize, Deserialize, Clone, Debug, Default)]
#[concurrency(numeric)]
struct Tags {
    id: String,
    count: i64,
}

#[marten::apply]
impl Tags {
    fn identities(e: &Listed) -> Vec<String> {
        vec![e.name.clone()]
    }
    fn create(_e: &Listed) -> Self {
        Tags {
            id: String::new(),
            count: 1,
        }
    }
    fn apply(&mut self, _e: &Listed) {
        self.count += 1;
    }
}
