//! Core scenarios ported from Marten's own test suite (JasperFx/marten, `src/CoreTests`,
//! its `Bugs/` folder included, and `src/StressTests`): the behaviour each Marten test
//! checks, mapped onto marten-rs's API. Each test names its source. Store and session
//! defaults, versions tracked per document type, request timeouts on slow statements and
//! on saves (nothing written, nothing sent again), saves sent again after a deadlock with
//! their events and documents once, schemas a second store finds nothing to change in,
//! concurrency modes switched on an existing table, stores on separate schemas, event
//! projection operations in queue order, and races: first use of unregistered types from
//! many stores, dirty-tracked increments across tenants.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{builder, builder_on, named_builder, ok};
use marten::prelude::*;
use marten::{
    ApplyError, EventProjection, Lightweight, PatchOptions, ProjectedOps, RejectionKind,
    SchemaDifference, Tenancy,
};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

// ---------------------------------------------------------------------------------------
// Helpers

/// The rows of `sql` on a raw connection of `schema` (its `search_path` is the schema).
async fn raw_rows(
    schema: &TestSchema,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<tokio_postgres::Row> {
    schema
        .raw_client()
        .await
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `count(*)` of `sql`'s rows.
async fn raw_count(schema: &TestSchema, sql: &str) -> i64 {
    raw_rows(schema, &format!("SELECT count(*) FROM ({sql}) AS q"), &[]).await[0].get(0)
}

/// The tables of `schema` whose name starts with `prefix`, sorted.
async fn tables_like(schema: &TestSchema, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}%");
    raw_rows(
        schema,
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name LIKE $2 ORDER BY 1",
        &[&schema.name(), &pattern],
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A config for the schema's server whose connections carry the schema's name as their
/// `application_name` (so the server's views tell this test's connections apart), with
/// extra server `options` (`-c name=value`).
fn named_config(schema: &TestSchema, options: &str) -> tokio_postgres::Config {
    let mut config: tokio_postgres::Config = match schema.url().parse() {
        Ok(c) => c,
        Err(e) => panic!("invalid database url: {e}"),
    };
    config.application_name(schema.name());
    config.options(options);
    config
}

/// Waits (bounded) until a connection named after `schema` waits for a lock.
async fn wait_for_a_lock_wait(schema: &TestSchema) {
    let watcher = schema.raw_client().await;
    let started = Instant::now();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND application_name = $1",
                &[&schema.name()],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing of the store ever waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Store and session defaults

/// Marten's `Account`: optimistic.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Account {
    id: Uuid,
    balance: i64,
}

/// Marten's `Company`, on a table named by hand.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(table = "custom_companies")]
struct Company {
    id: String,
    name: String,
}

/// Marten's `Issue`: an integer id.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Issue {
    id: i64,
    title: String,
}

/// `StoreOptionsTests`: `CannotBuildStoreWithoutConnection`,
/// `DefaultAutoCreateShouldBeCreateOrUpdateWhenProvidingNoConfig`, `single_tenancy_by_default`
/// and `add_document_types`; `DocumentSchemaResolverTests`: `ValidateDefaultSchemaNames`,
/// `ValidateRegisteredDocumentNames` and `ValidateDocumentWithCustomTableNames`;
/// `SessionOptionsTests`: `the_default_concurrency_checks_is_enabled`. A store without a
/// connection is refused before anything is tried; a store given only a connection uses
/// the `public` schema, creates or updates what it needs, is single-tenant with uuid
/// streams; the registered types' tables (`mt_doc_<lower-case name>` or the one named)
/// exist right after `build`; a session checks versions unless told not to.
#[tokio::test]
async fn a_store_and_its_sessions_start_from_martens_defaults() {
    let err = DocumentStore::builder()
        .build()
        .await
        .expect_err("no connection configured");
    assert!(
        matches!(&err, Error::Configuration(m) if m.contains("connection")),
        "{err:?}"
    );

    // Only a connection (and nothing applied, so `public` is left alone).
    let schema = TestSchema::new("mcs_defaults");
    let bare = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .apply_schema_at_build(false)
        .build()
        .await);
    assert_eq!(bare.schema(), "public");
    assert_eq!(bare.auto_create(), AutoCreate::CreateOrUpdate);
    assert!(bare.tenant().is_none());
    assert_eq!(bare.events_tenancy(), Tenancy::Single);
    assert_eq!(bare.stream_identity(), StreamIdentity::Uuid);
    bare.close();

    assert_eq!(<Account as Document>::TABLE_NAME, "mt_doc_account");
    assert_eq!(<Issue as Document>::TABLE_NAME, "mt_doc_issue");
    assert_eq!(<Company as Document>::TABLE_NAME, "custom_companies");
    let (schema, b) = builder("mcs_defaults_registered");
    let store = ok(b
        .document::<Account>()
        .document::<Company>()
        .document::<Issue>()
        .build()
        .await);
    assert_eq!(store.schema(), schema.name());
    let mut made = tables_like(&schema, "mt_doc_").await;
    made.extend(tables_like(&schema, "custom_").await);
    assert_eq!(
        made,
        ["mt_doc_account", "mt_doc_issue", "custom_companies"],
        "the registered tables, before any use"
    );

    assert!(SessionOptions::default().concurrency_checks);
    assert!(!SessionOptions::without_concurrency_checks().concurrency_checks);
    let account = Account {
        id: Uuid::now_v7(),
        balance: 1,
    };
    let mut setup = store.lightweight_session();
    ok(setup.store(account.clone()));
    ok(setup.save_changes().await);
    let mut checked = store.session_with::<Lightweight>(SessionOptions::default());
    let loaded: Account = ok(checked.load(&account.id).await).expect("stored");
    ok(setup.store(Account {
        balance: 2,
        ..account.clone()
    }));
    ok(setup.save_changes().await);
    ok(checked.store(Account {
        balance: 3,
        ..loaded
    }));
    let err = checked.save_changes().await.expect_err("stale by default");
    assert!(
        matches!(
            err.rejections(),
            [r] if matches!(r.kind, RejectionKind::VersionMismatch { .. })
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Versions per type

/// An optimistic type and a numeric one that share ids.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Shop {
    id: Uuid,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Ledger {
    id: Uuid,
    total: i64,
}

/// `VersionTrackerTests` (both: `Marten.Services` and `Marten.Internal`):
/// `null_when_it_does_not_have_it`, `find_version_for_doc_by_type_and_id`,
/// `can_overwrite_version`, `store_and_then_clear` and their revision twins. A session
/// knows no version of an id it never saw; it keeps one version per type and id (two
/// types with the same id do not share one); a later save replaces the version; a
/// committed delete forgets the version of its type only, so the id stored again is not
/// checked against the deleted row, while the other type's write still is.
#[tokio::test]
async fn a_session_tracks_versions_per_document_type_and_id() {
    let (_schema, b) = builder("mcs_versions");
    let store = ok(b.document::<Shop>().document::<Ledger>().build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    assert_eq!(s.version_of::<Shop>(&id), None);
    assert_eq!(s.version_of::<Ledger>(&id), None);

    ok(s.store(Shop {
        id,
        name: "first".into(),
    }));
    ok(s.store(Ledger { id, total: 1 }));
    ok(s.save_changes().await);
    let first = s.version_of::<Shop>(&id).expect("known after the save");
    let stored = ok(s.metadata::<Shop>(&id).await).expect("stored").version;
    assert_eq!(first, stored);
    assert_eq!(s.version_of::<Ledger>(&id), Some(1));

    // A second write of one type replaces its version, and only its.
    ok(s.store(Shop {
        id,
        name: "second".into(),
    }));
    ok(s.save_changes().await);
    let second = s.version_of::<Shop>(&id).expect("known");
    assert_ne!(second, first);
    assert_eq!(
        second,
        ok(s.metadata::<Shop>(&id).await).expect("stored").version
    );
    assert_eq!(s.version_of::<Ledger>(&id), Some(1));

    // A committed delete forgets its type's version only.
    ok(s.delete::<Shop>(&id));
    ok(s.save_changes().await);
    assert_eq!(s.version_of::<Shop>(&id), None);
    assert_eq!(s.version_of::<Ledger>(&id), Some(1));
    // Stored again: no stale version asserted against the deleted row.
    ok(s.store(Shop {
        id,
        name: "again".into(),
    }));
    ok(s.save_changes().await);
    assert!(s.version_of::<Shop>(&id).is_some());

    // The other type's version is still asserted: another session moves it first.
    let mut other = store.lightweight_session();
    ok(other.store(Ledger { id, total: 10 }));
    ok(other.save_changes().await);
    ok(s.store(Ledger { id, total: 2 }));
    let err = s.save_changes().await.expect_err("revision 1 is stale");
    match err.rejections() {
        [r] => {
            assert_eq!(r.document_type, "Ledger");
            assert!(
                matches!(&r.kind, RejectionKind::VersionMismatch { expected, actual }
                    if expected == "1" && actual.as_deref() == Some("2")),
                "{r:?}"
            );
        }
        other => panic!("one rejection expected: {other:?}"),
    }

    // An identity session keeps one copy per type of the same id.
    let mut i = store.identity_session();
    let shop: Shop = ok(i.load(&id).await).expect("shop");
    let ledger: Ledger = ok(i.load(&id).await).expect("ledger");
    assert_eq!((shop.name.as_str(), ledger.total), ("again", 10));
    assert_eq!(i.version_of::<Ledger>(&id), Some(2));
    assert_eq!(
        i.version_of::<Shop>(&id),
        ok(i.metadata::<Shop>(&id).await).map(|m| m.version)
    );
}

// ---------------------------------------------------------------------------------------
// Request timeouts

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Note {
    id: i64,
    text: String,
}

/// `SessionOptionsTests`: `can_choke_on_custom_timeout` (a `pg_sleep(2)` past a one-second
/// command timeout fails). A statement still running on the server past the store's
/// request timeout fails with `Error::Timeout` at the timeout, not when the server
/// finishes; the server stops running it; the store serves the next request.
#[tokio::test]
async fn a_statement_running_past_the_request_timeout_fails_and_is_cancelled_on_the_server() {
    let (schema, b) = named_builder("mcs_slow_statement");
    let store = ok(b
        .request_timeout(Some(Duration::from_millis(300)))
        .document::<Note>()
        .build()
        .await);
    let started = Instant::now();
    let err = store
        .sql_query("SELECT pg_sleep(5)", &[])
        .await
        .expect_err("past the request timeout");
    let waited = started.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // The server was told: the sleep stops running well before its 5 s.
    let watcher = schema.raw_client().await;
    let mut running = i64::MAX;
    for _ in 0..100 {
        running = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
                &[&schema.name()],
            )
            .await
            .expect("activity")
            .get(0);
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(running, 0, "the slow statement still runs on the server");
    assert!(started.elapsed() < Duration::from_secs(4));

    let mut s = store.lightweight_session();
    ok(s.store(Note {
        id: 1,
        text: "after".into(),
    }));
    ok(s.save_changes().await);
    let back: Option<Note> = ok(s.load(&1).await);
    assert_eq!(back.map(|n| n.text).as_deref(), Some("after"));
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StreamStarted {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct SomethingHappened {
    name: String,
}

/// Marten's `Doc` of the #5262 bugs.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Doc {
    id: Uuid,
    name: String,
}

/// The streams of the #5262 bugs: `stream-0` .. `stream-29`.
const STREAMS: usize = 30;

fn stream_keys() -> Vec<String> {
    (0..STREAMS).map(|i| format!("stream-{i}")).collect()
}

/// Starts every stream of `keys` with one event, in one save.
async fn start_streams(store: &DocumentStore, keys: &[String]) {
    let mut setup = store.lightweight_session();
    for key in keys {
        ok(setup
            .events()
            .start_stream(key.as_str(), [StreamStarted { name: key.clone() }]));
    }
    ok(setup.save_changes().await);
}

/// The save of the #5262 bugs: one event appended to each stream and one new document
/// per stream.
fn queue_the_batch<K: marten::Tracking>(s: &mut marten::Session<K>, keys: &[String]) {
    for (i, key) in keys.iter().enumerate() {
        ok(s.events().append(
            key.as_str(),
            [SomethingHappened {
                name: format!("event-{i}"),
            }],
        ));
        ok(s.store(Doc {
            id: Uuid::now_v7(),
            name: format!("doc-{i}"),
        }));
    }
}

/// What the #5262 bugs measure behind marten's back: the events stored, the documents
/// stored, and the streams whose `mt_streams.version` is not their own event count.
async fn measure_5262(schema: &TestSchema) -> (i64, i64, Vec<(String, i64, i64)>) {
    let events = raw_count(schema, "SELECT 1 FROM mt_events").await;
    let docs = raw_count(schema, "SELECT 1 FROM mt_doc_doc").await;
    let mismatched = raw_rows(
        schema,
        "SELECT s.id, s.version, (SELECT count(*) FROM mt_events e WHERE e.stream_id = s.id) \
         FROM mt_streams s ORDER BY s.id",
        &[],
    )
    .await
    .iter()
    .map(|r| {
        (
            r.get::<_, String>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
        )
    })
    .filter(|(_, version, count)| version != count)
    .collect();
    (events, docs, mismatched)
}

/// `Bugs/Bug_5262_partial_commit_on_batch_timeout`:
/// `batch_timeout_rolls_everything_back_and_runs_the_batch_once`. A save appending to 30
/// existing (string-keyed) streams and storing 30 documents runs past the request timeout
/// (one stream's row is held by another transaction): it fails with `Error::Timeout` (its
/// transaction was rolled back, so nothing was written), no stream's version runs ahead
/// of its events, and it is not sent again behind the caller's back - nothing appears
/// after the blocker lets go. Sent again by the caller, it commits once.
#[tokio::test]
async fn a_save_past_the_request_timeout_writes_nothing_and_is_not_sent_again() {
    let schema = TestSchema::new("mcs_5262_timeout");
    let store = ok(DocumentStore::builder()
        .config(named_config(&schema, ""))
        .schema(schema.name())
        .pool_size(4)
        .request_timeout(Some(Duration::from_millis(500)))
        .stream_identity(StreamIdentity::String)
        .document::<Doc>()
        .build()
        .await);
    let keys = stream_keys();
    start_streams(&store, &keys).await;
    assert_eq!(
        measure_5262(&schema).await,
        (STREAMS as i64, 0, vec![]),
        "setup"
    );

    // The last stream (in key order) is held: the save appends to the others first.
    let last = keys.iter().max().expect("keys").clone();
    let blocker = schema.raw_client().await;
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM mt_streams WHERE id = '{last}' FOR UPDATE"
        ))
        .await
        .expect("hold the stream");

    let mut s = store.lightweight_session();
    queue_the_batch(&mut s, &keys);
    let started = Instant::now();
    let err = s
        .save_changes()
        .await
        .expect_err("past the request timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
    assert!(
        matches!(err, Error::Timeout { .. }),
        "a save known to be rolled back is a timeout: {err:?}"
    );
    assert_eq!(s.pending_changes(), 0, "a failed save empties the queue");
    assert_eq!(
        measure_5262(&schema).await,
        (STREAMS as i64, 0, vec![]),
        "nothing of the timed-out save"
    );

    blocker.batch_execute("COMMIT").await.expect("let go");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        measure_5262(&schema).await,
        (STREAMS as i64, 0, vec![]),
        "not sent again once the stream was free"
    );

    queue_the_batch(&mut s, &keys);
    ok(s.save_changes().await);
    assert_eq!(
        measure_5262(&schema).await,
        (2 * STREAMS as i64, STREAMS as i64, vec![]),
        "the caller's own second attempt, once"
    );
}

/// `Bugs/Bug_5262_retry_loses_events`: `a_successful_retry_still_writes_its_events`. A
/// save appending to 30 existing streams and storing 30 documents (and two notes) loses a
/// deadlock on its first attempt; marten sends it again, and the attempt that commits
/// holds everything once: every event (each stream's version is its event count), every
/// document, nothing of the failed attempt twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_sent_again_after_a_deadlock_writes_its_events_and_documents_once() {
    let schema = TestSchema::new("mcs_5262_retry");
    let store = ok(DocumentStore::builder()
        .config(named_config(&schema, "-c deadlock_timeout=500ms"))
        .schema(schema.name())
        .pool_size(4)
        .stream_identity(StreamIdentity::String)
        .document::<Doc>()
        .document::<Note>()
        .build()
        .await);
    let keys = stream_keys();
    start_streams(&store, &keys).await;
    let mut setup = store.lightweight_session();
    for (id, text) in [(1, "a"), (2, "b")] {
        ok(setup.store(Note {
            id,
            text: text.into(),
        }));
    }
    ok(setup.save_changes().await);

    // The other transaction holds note 2 and never loses the deadlock (it checks late).
    let other = schema.raw_client().await;
    other
        .batch_execute(
            "SET deadlock_timeout = '20s'; BEGIN; UPDATE mt_doc_note SET data = data WHERE id = 2",
        )
        .await
        .expect("hold note 2");
    let saver = {
        let (store, keys) = (store.clone(), keys.clone());
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            queue_the_batch(&mut s, &keys);
            // One statement for both notes, in id order: note 1 is written, then the
            // save waits for note 2.
            s.store(Note {
                id: 1,
                text: "a2".into(),
            })?;
            s.store(Note {
                id: 2,
                text: "b2".into(),
            })?;
            s.save_changes().await
        })
    };
    wait_for_a_lock_wait(&schema).await;
    // Closes the cycle: this returns only once the save's first attempt lost the
    // deadlock and let note 1 go.
    other
        .batch_execute("UPDATE mt_doc_note SET data = data WHERE id = 1")
        .await
        .expect("the other transaction won");
    assert_eq!(
        measure_5262(&schema).await,
        (STREAMS as i64, 0, vec![]),
        "nothing of the failed attempt"
    );
    other.batch_execute("COMMIT").await.expect("commit");
    ok(saver.await.expect("task"));

    assert_eq!(
        measure_5262(&schema).await,
        (2 * STREAMS as i64, STREAMS as i64, vec![]),
        "every event and document of the committed attempt, once"
    );
    let per_stream = raw_rows(
        &schema,
        "SELECT stream_id, count(*) FROM mt_events GROUP BY stream_id",
        &[],
    )
    .await;
    assert_eq!(per_stream.len(), STREAMS);
    assert!(per_stream.iter().all(|r| r.get::<_, i64>(1) == 2));
    let notes: Vec<String> = raw_rows(
        &schema,
        "SELECT data->>'text' FROM mt_doc_note ORDER BY id",
        &[],
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(notes, ["a2", "b2"]);
}

// ---------------------------------------------------------------------------------------
// Schema: what a second store finds

/// Indexed fields of every column type out of the box, fields named after PostgreSQL key
/// words (Marten's `Bug1151.Trim`), a unique field, a GIN index, soft deletes and numeric
/// revisions.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(gin)]
#[document(soft_delete)]
#[concurrency(numeric)]
struct Indexed {
    id: Uuid,
    #[document(index)]
    trim: String,
    #[document(index)]
    order: i64,
    #[document(unique)]
    code: String,
    #[document(index)]
    flag: bool,
    #[document(index)]
    ratio: f64,
    #[document(index)]
    small: i32,
    #[document(index)]
    tiny: u8,
    #[document(index)]
    owner: Uuid,
    #[document(index)]
    maybe: Option<i64>,
}

/// A conjoined type with a unique and an indexed field.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(optimistic)]
struct TenantIndexed {
    id: String,
    #[document(unique)]
    email: String,
    #[document(index)]
    day: i32,
}

/// The relations of `schema` (tables, indexes, sequences) with their oids, and every
/// column of its tables with its type: what a rebuild must leave as it found it.
async fn catalog_of(schema: &TestSchema) -> (Vec<(String, i64)>, Vec<(String, String, String)>) {
    let relations = raw_rows(
        schema,
        "SELECT c.relname::text, c.oid::bigint FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 ORDER BY 1",
        &[&schema.name()],
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let columns = raw_rows(
        schema,
        "SELECT table_name::text, column_name::text, data_type::text \
         FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
        &[&schema.name()],
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    (relations, columns)
}

/// `Bugs/Bug_3499_duplicate_indexes_recreated_on_startup`, `Bug_2917_index_on_DateOnly`
/// (both), `Bug_3266_allow_for_decimal_indexes`,
/// `Bug_1151_assert_database_matches_configuration_exception`,
/// `Bug_4224_unique_index_on_mixed_case_table` and the schema check of
/// `Bug_2274_not_equals_canonicalization`. A schema built by one store is what a second
/// store of the same types expects: building it (create-or-update, then create-only)
/// drops, recreates and alters nothing (every table, index and sequence keeps its oid,
/// every column its type), `assert_schema` passes and the patch is empty; both stores
/// then read each other's writes.
#[tokio::test]
async fn a_second_store_finds_nothing_to_change_in_a_schema_the_first_built() {
    let (schema, b) = builder("mcs_second_store");
    let first = ok(b
        .document::<Indexed>()
        .document::<TenantIndexed>()
        .build()
        .await);
    let before = catalog_of(&schema).await;
    assert!(
        before
            .0
            .iter()
            .any(|(n, _)| n == "mt_doc_indexed_uidx_code"),
        "{:?}",
        before.0
    );

    for mode in [AutoCreate::CreateOrUpdate, AutoCreate::CreateOnly] {
        let second = ok(builder_on(&schema)
            .auto_create(mode)
            .document::<Indexed>()
            .document::<TenantIndexed>()
            .build()
            .await);
        assert_eq!(
            catalog_of(&schema).await,
            before,
            "{mode:?}: nothing dropped, recreated or altered"
        );
        ok(second.assert_schema().await);
        let patch = ok(second.schema_patch(PatchOptions::new()).await);
        assert!(patch.is_empty(), "{mode:?}: {patch}");
    }

    let second = ok(builder_on(&schema)
        .document::<Indexed>()
        .document::<TenantIndexed>()
        .build()
        .await);
    let doc = Indexed {
        id: Uuid::now_v7(),
        trim: " padded ".into(),
        order: 3,
        code: "c-1".into(),
        flag: true,
        ratio: 0.25,
        small: -2,
        tiny: 7,
        owner: Uuid::now_v7(),
        maybe: None,
    };
    let mut w = second.lightweight_session();
    ok(w.store(doc.clone()));
    ok(w.save_changes().await);
    let mut r = first.query_session();
    let found = ok(r
        .query::<Indexed>()
        .filter(|f| f.trim.eq(" padded ").and(f.order.eq(3)))
        .to_list()
        .await);
    assert_eq!(found, vec![doc]);
    let mut t = ok(first.lightweight_session_for("t1"));
    ok(t.store(TenantIndexed {
        id: "x".into(),
        email: "x@example.com".into(),
        day: 4,
    }));
    ok(t.save_changes().await);
    let mut q = ok(second.query_session_for("t1"));
    assert_eq!(
        ok(q.query::<TenantIndexed>()
            .filter(|f| f.day.eq(4))
            .count()
            .await),
        1
    );
    assert_eq!(catalog_of(&schema).await.0, before.0);
}

mod guid_versioned {
    use super::*;
    /// Marten's `MigratedDoc` with optimistic concurrency.
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[concurrency(optimistic)]
    #[document(table = "mt_doc_migrated")]
    pub struct Migrated {
        pub id: Uuid,
        pub name: String,
    }
}

mod int_revisioned {
    use super::*;
    /// The same table, switched to numeric revisions.
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[concurrency(numeric)]
    #[document(table = "mt_doc_migrated")]
    pub struct Migrated {
        pub id: Uuid,
        pub name: String,
    }
}

/// `migrate_from_guid_to_int_based_revisions`: `automatic_conversion_of_guid_version_to_integer`.
/// A table made for optimistic (uuid) versions is taken over by the same type switched to
/// numeric revisions: building the second store adds the revision column, the schema then
/// matches (`assert_schema`, an empty patch), the existing rows are at revision 1 and read
/// back, and numeric writes count on from there.
#[tokio::test]
async fn a_type_switched_from_optimistic_to_numeric_keeps_its_rows_and_matches_the_schema() {
    let (schema, b) = builder("mcs_guid_to_int");
    let first = ok(b.document::<guid_versioned::Migrated>().build().await);
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut s = first.lightweight_session();
    for (i, id) in ids.iter().enumerate() {
        ok(s.store(guid_versioned::Migrated {
            id: *id,
            name: format!("doc {i}"),
        }));
    }
    ok(s.save_changes().await);

    let second = ok(builder_on(&schema)
        .document::<int_revisioned::Migrated>()
        .build()
        .await);
    ok(second.assert_schema().await);
    let patch = ok(second.schema_patch(PatchOptions::new()).await);
    assert!(patch.is_empty(), "{patch}");
    let column: String = raw_rows(
        &schema,
        "SELECT data_type::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'mt_doc_migrated' AND column_name = 'mt_revision'",
        &[&schema.name()],
    )
    .await[0]
        .get(0);
    assert_eq!(column, "bigint");

    let mut n = second.lightweight_session();
    let loaded: Vec<int_revisioned::Migrated> = ok(n.load_many(&ids).await);
    assert_eq!(loaded.len(), 3);
    for id in &ids {
        let meta = ok(n.metadata::<int_revisioned::Migrated>(id).await).expect("stored");
        assert_eq!(meta.version, 1, "existing rows start at revision 1");
    }
    assert_eq!(n.version_of::<int_revisioned::Migrated>(&ids[0]), Some(1));
    ok(n.store(int_revisioned::Migrated {
        id: ids[0],
        name: "renamed".into(),
    }));
    ok(n.update_revision(
        int_revisioned::Migrated {
            id: ids[1],
            name: "jumped".into(),
        },
        5,
    ));
    ok(n.save_changes().await);
    let revisions: Vec<i64> = {
        let mut q = second.query_session();
        let mut out = Vec::new();
        for id in &ids {
            out.push(
                ok(q.metadata::<int_revisioned::Migrated>(id).await)
                    .expect("stored")
                    .version,
            );
        }
        out
    };
    assert_eq!(revisions, [2, 5, 1]);
}

/// A numeric type whose revision column a DBA changed.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Narrowed {
    id: Uuid,
    name: String,
}

/// `Bugs/Bug_4614_revision_column_int_for_IRevisioned`:
/// `existing_9x_bigint_column_for_IRevisioned_is_tolerated_not_narrowed` and its
/// `_assert_check` twin. A revision column found in another integer width than the one
/// marten creates is never converted by a later build (a cast could lose values);
/// marten-rs, unlike Marten, reports it: `assert_schema` names the column, the type it
/// expects and the type found.
#[tokio::test]
async fn a_revision_column_of_another_width_is_never_converted_and_is_reported() {
    let (schema, b) = builder("mcs_4614_width");
    let _first = ok(b.document::<Narrowed>().build().await);
    schema
        .raw_client()
        .await
        .batch_execute("ALTER TABLE mt_doc_narrowed ALTER COLUMN mt_revision TYPE integer")
        .await
        .expect("narrow the column");
    let second = ok(builder_on(&schema).document::<Narrowed>().build().await);
    let width: String = raw_rows(
        &schema,
        "SELECT data_type::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'mt_doc_narrowed' AND column_name = 'mt_revision'",
        &[&schema.name()],
    )
    .await[0]
        .get(0);
    assert_eq!(width, "integer", "left as found");
    let err = second.assert_schema().await.expect_err("reported");
    match &err {
        Error::SchemaMismatch { differences } => {
            let table = format!("{}.mt_doc_narrowed", schema.name());
            assert!(
                differences.iter().any(|d| matches!(d,
                    SchemaDifference::ColumnType { table: t, column, expected, found }
                        if *t == table && column == "mt_revision"
                            && expected == "bigint" && found == "integer")),
                "{err}"
            );
        }
        other => panic!("wrong error {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Stores side by side

/// Registered on the first store only.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct PrimaryDoc {
    id: Uuid,
    name: String,
}

/// Registered on the second store only, conjoined (Marten's second store makes every
/// document multi-tenanted).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct AncillaryDoc {
    id: Uuid,
    value: String,
}

/// Registered on both stores.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct SharedDoc {
    id: Uuid,
    store: String,
    round: usize,
}

/// StressTests `using_multiple_document_stores_in_same_host`: `use_the_generated_store`,
/// `use_a_single_tenanted_document_in_multi_tenancy_ancillary_store`;
/// `Bugs/Bug_4187_ancillary_store_isolation` (both tests). Two stores on two schemas of
/// one database: each creates and describes (`schema_sql`) only its own types' tables;
/// writers of both stores race, round after round, on the same ids of a type both
/// register (and on a conjoined type of the second): each schema holds only its own
/// store's rows, each at the round last written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_on_two_schemas_keep_their_own_tables_and_rows_under_racing_writers() {
    const WRITERS: usize = 4;
    const ROUNDS: usize = 10;
    let (schema_a, a) = builder("mcs_store_a");
    let (schema_b, b) = builder("mcs_store_b");
    let store_a = ok(a
        .document::<PrimaryDoc>()
        .document::<SharedDoc>()
        .build()
        .await);
    let store_b = ok(b
        .document::<AncillaryDoc>()
        .document::<SharedDoc>()
        .build()
        .await);
    assert_eq!(
        tables_like(&schema_a, "mt_doc_").await,
        ["mt_doc_primarydoc", "mt_doc_shareddoc"]
    );
    assert_eq!(
        tables_like(&schema_b, "mt_doc_").await,
        ["mt_doc_ancillarydoc", "mt_doc_shareddoc"]
    );
    assert!(store_a.schema_sql().contains("mt_doc_primarydoc"));
    assert!(!store_a.schema_sql().contains("ancillarydoc"));
    assert!(store_b.schema_sql().contains("mt_doc_ancillarydoc"));
    assert!(!store_b.schema_sql().contains("primarydoc"));

    let ids: Vec<Uuid> = (0..WRITERS).map(|_| Uuid::now_v7()).collect();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(2 * WRITERS));
        let mut tasks = Vec::new();
        for (label, store) in [("a", &store_a), ("b", &store_b)] {
            for (w, id) in ids.iter().enumerate() {
                let (store, barrier, id) = (store.clone(), barrier.clone(), *id);
                tasks.push(tokio::spawn(async move {
                    let mut s = match label {
                        "b" => store.lightweight_session_for(format!("t{w}"))?,
                        _ => store.lightweight_session(),
                    };
                    // Warm the connection: the race is about the writes.
                    let _: Option<SharedDoc> = s.load(&id).await?;
                    s.store(SharedDoc {
                        id,
                        store: label.to_owned(),
                        round,
                    })?;
                    match label {
                        "b" => s.store(AncillaryDoc {
                            id,
                            value: format!("{round}"),
                        })?,
                        _ => s.store(PrimaryDoc {
                            id,
                            name: format!("{round}"),
                        })?,
                    };
                    barrier.wait().await;
                    s.save_changes().await
                }));
            }
        }
        for t in tasks {
            ok(t.await.expect("task"));
        }
        for (label, schema) in [("a", &schema_a), ("b", &schema_b)] {
            let rows = raw_rows(
                schema,
                "SELECT data->>'store', (data->>'round')::bigint FROM mt_doc_shareddoc",
                &[],
            )
            .await;
            assert_eq!(rows.len(), WRITERS, "{label} round {round}");
            for r in &rows {
                assert_eq!(
                    (r.get::<_, String>(0), r.get::<_, i64>(1)),
                    (label.to_owned(), round as i64),
                    "schema {label}, round {round}"
                );
            }
        }
    }
    let mut q = store_a.query_session();
    assert_eq!(ok(q.query::<PrimaryDoc>().count().await), WRITERS as i64);
    for (w, id) in ids.iter().enumerate() {
        let mut t = ok(store_b.query_session_for(format!("t{w}")));
        let doc: Option<AncillaryDoc> = ok(t.load(id).await);
        assert_eq!(doc.map(|d| d.value), Some(format!("{}", ROUNDS - 1)));
        let mut other = ok(store_b.query_session_for(format!("t{}", (w + 1) % WRITERS)));
        assert_eq!(ok(other.load::<AncillaryDoc>(id).await), None);
    }
}

/// Four document types no store registers, one per id kind.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct FirstUseA {
    id: Uuid,
    by: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct FirstUseB {
    id: i64,
    by: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct FirstUseC {
    id: String,
    #[document(unique)]
    by: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct FirstUseD {
    id: i32,
    #[document(index)]
    by: String,
}

/// `Bugs/Bug_3083_concurrent_type_generation`: `concurrent_type_generation` and
/// `concurrent_append_providers`; `Bugs/Bug_4618_secondary_store_proxy_race`:
/// `proxy_factory_is_thread_safe_on_first_build`. On a fresh schema per round, several
/// stores registering nothing race, barrier-synchronised, through the first use of four
/// document types from many sessions at once: every save commits, every document reads
/// back, and each type has exactly one table holding every task's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_use_of_unregistered_types_racing_across_stores_creates_each_table_once() {
    const ROUNDS: usize = 2;
    const STORES: usize = 3;
    const TASKS: usize = 2;
    for round in 0..ROUNDS {
        let schema = TestSchema::new("mcs_first_use");
        let mut stores = Vec::new();
        for _ in 0..STORES {
            stores.push(ok(builder_on(&schema).pool_size(TASKS + 1).build().await));
        }
        assert!(tables_like(&schema, "mt_doc_").await.is_empty());
        let barrier = Arc::new(Barrier::new(STORES * TASKS));
        let mut tasks = Vec::new();
        for (s_i, store) in stores.iter().enumerate() {
            for t in 0..TASKS {
                let (store, barrier) = (store.clone(), barrier.clone());
                let n = s_i * TASKS + t;
                tasks.push(tokio::spawn(async move {
                    let by = format!("store {s_i} task {t}");
                    let a = FirstUseA {
                        id: Uuid::now_v7(),
                        by: by.clone(),
                    };
                    let b = FirstUseB {
                        id: n as i64 + 1,
                        by: by.clone(),
                    };
                    let c = FirstUseC {
                        id: format!("c{n}"),
                        by: by.clone(),
                    };
                    let d = FirstUseD {
                        id: n as i32 + 1,
                        by: by.clone(),
                    };
                    let mut s = store.lightweight_session();
                    s.store(a.clone())?;
                    s.store(b.clone())?;
                    s.store(c.clone())?;
                    s.store(d.clone())?;
                    barrier.wait().await;
                    s.save_changes().await?;
                    let mut q = store.query_session();
                    assert_eq!(q.load::<FirstUseA>(&a.id).await?, Some(a));
                    assert_eq!(q.load::<FirstUseB>(&b.id).await?, Some(b));
                    assert_eq!(q.load::<FirstUseC>(&c.id).await?, Some(c));
                    assert_eq!(q.load::<FirstUseD>(&d.id).await?, Some(d));
                    Ok::<_, Error>(())
                }));
            }
        }
        for t in tasks {
            ok(t.await.expect("task"));
        }
        assert_eq!(
            tables_like(&schema, "mt_doc_").await,
            [
                "mt_doc_firstusea",
                "mt_doc_firstuseb",
                "mt_doc_firstusec",
                "mt_doc_firstused"
            ],
            "round {round}"
        );
        for table in tables_like(&schema, "mt_doc_").await {
            let n = raw_count(&schema, &format!("SELECT 1 FROM {table}")).await;
            assert_eq!(n, (STORES * TASKS) as i64, "round {round}: {table}");
        }
        for store in &stores {
            store.close();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Racing dirty-tracked sessions across tenants

/// A tenant's counter (Marten's `Bug616Account`, per tenant).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(optimistic)]
struct TenantCounter {
    id: String,
    hits: i64,
}

/// The counter every tenant shares.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct GlobalCounter {
    id: String,
    hits: i64,
}

/// StressTests `Bugs/Bug_616_not_possible_to_use_Serializable_transactions`:
/// `conccurent_write_should_throw_an_exception` (two dirty-tracked sessions change one
/// loaded account; the second save must fail), raced across many tenants at once. Each
/// round, three dirty-tracked sessions per tenant of four load their tenant's counter and
/// the shared counter, change both in place and save, barrier-synchronised; a session
/// whose copy went stale is rejected (a version mismatch, nothing written) and the worker
/// loads again. No increment is lost or doubled: after every round each tenant's counter
/// and the shared one equal the number of increments made, and rejections did happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_dirty_tracked_increments_lose_no_update_across_tenants() {
    const TENANTS: usize = 4;
    const WORKERS: usize = 3;
    const ROUNDS: usize = 10;
    let (_schema, b) = builder("mcs_616_tenants");
    let store = ok(b
        .pool_size(TENANTS * WORKERS + 2)
        .document::<TenantCounter>()
        .document::<GlobalCounter>()
        .build()
        .await);
    let counter = "c".to_owned();
    let global = "g".to_owned();
    for t in 0..TENANTS {
        let mut s = ok(store.lightweight_session_for(format!("t{t}")));
        ok(s.store(TenantCounter {
            id: counter.clone(),
            hits: 0,
        }));
        if t == 0 {
            ok(s.store(GlobalCounter {
                id: global.clone(),
                hits: 0,
            }));
        }
        ok(s.save_changes().await);
    }

    let mut rejections = 0usize;
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(TENANTS * WORKERS));
        let mut tasks = Vec::new();
        for t in 0..TENANTS {
            for _ in 0..WORKERS {
                let (store, barrier) = (store.clone(), barrier.clone());
                let (counter, global) = (counter.clone(), global.clone());
                tasks.push(tokio::spawn(async move {
                    let mut rejected = 0usize;
                    for attempt in 0..500 {
                        let mut s = store.dirty_tracked_session_for(format!("t{t}"))?;
                        let mine = s.load::<TenantCounter>(&counter).await?.expect("counter");
                        mine.hits += 1;
                        let shared = s.load::<GlobalCounter>(&global).await?.expect("global");
                        shared.hits += 1;
                        if attempt == 0 {
                            barrier.wait().await;
                        }
                        match s.save_changes().await {
                            Ok(()) => return Ok(rejected),
                            Err(Error::Rejected(r)) => {
                                assert!(!r.is_empty());
                                for one in &r {
                                    assert!(
                                        matches!(one.kind, RejectionKind::VersionMismatch { .. }),
                                        "{one:?}"
                                    );
                                    assert!(
                                        ["TenantCounter", "GlobalCounter"]
                                            .contains(&one.document_type),
                                        "{one:?}"
                                    );
                                }
                                rejected += 1;
                            }
                            Err(other) => return Err(other),
                        }
                    }
                    panic!("an increment never committed");
                }));
            }
        }
        for task in tasks {
            rejections += ok(task.await.expect("task"));
        }
        let done = (round + 1) as i64;
        for t in 0..TENANTS {
            let mut q = ok(store.query_session_for(format!("t{t}")));
            let c: TenantCounter = ok(q.load(&counter).await).expect("counter");
            assert_eq!(c.hits, WORKERS as i64 * done, "tenant t{t}, round {round}");
        }
        let g: GlobalCounter = ok(store.query_session().load(&global).await).expect("global");
        assert_eq!(g.hits, (TENANTS * WORKERS) as i64 * done, "round {round}");
        let revision = ok(store
            .query_session()
            .metadata::<GlobalCounter>(&global)
            .await)
        .expect("stored")
        .version;
        assert_eq!(revision, g.hits + 1, "one revision per committed increment");
    }
    assert!(rejections > 0, "the sessions never actually raced");
}

// ---------------------------------------------------------------------------------------
// Unit of work: event projection operations in queue order

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ThingCreated {
    name: String,
}

/// Marten's `ThingUsersAssigned`, as the users it removes and the users it adds (a
/// projection here deletes by id, as Marten's deleted the thing's rows by SQL).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ThingUsersAssigned {
    removed: Vec<Uuid>,
    added: Vec<Uuid>,
}

/// A row of Marten's `mt_tbl_bug_3113_users`: one user of one thing.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ThingUser {
    id: String,
    #[document(index)]
    thing: Uuid,
    user: Uuid,
}

/// Marten's `MyProjection1`.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct ThingView1 {
    id: Uuid,
    version: i64,
    name: String,
    users: Vec<Uuid>,
}

#[marten::apply]
impl ThingView1 {
    fn create(e: &ThingCreated) -> Self {
        ThingView1 {
            name: e.name.clone(),
            ..ThingView1::default()
        }
    }
    fn apply(&mut self, e: &ThingUsersAssigned) {
        self.users.retain(|u| !e.removed.contains(u));
        self.users.extend(e.added.iter().copied());
    }
}

/// Marten's `MyProjection2`.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct ThingView2 {
    id: Uuid,
    version: i64,
    users: Vec<Uuid>,
}

#[marten::apply]
impl ThingView2 {
    fn create(_e: &ThingCreated) -> Self {
        ThingView2::default()
    }
    fn apply(&mut self, e: &ThingUsersAssigned) {
        self.users.retain(|u| !e.removed.contains(u));
        self.users.extend(e.added.iter().copied());
    }
}

/// Marten's `MyTableProjection`: per assignment, deletes the removed users' rows, then
/// stores the added ones.
struct ThingUsersTable;

impl EventProjection for ThingUsersTable {
    fn name(&self) -> &'static str {
        "ThingUsersTable"
    }

    fn apply(&self, event: &EventEnvelope, ops: &mut ProjectedOps) -> Result<(), ApplyError> {
        let (Some(e), StreamId::Uuid(thing)) =
            (event.data_as::<ThingUsersAssigned>(), &event.stream_id)
        else {
            return Ok(());
        };
        for user in &e.removed {
            ops.delete::<ThingUser>(format!("{thing}/{user}"));
        }
        for user in &e.added {
            ops.store(ThingUser {
                id: format!("{thing}/{user}"),
                thing: *thing,
                user: *user,
            });
        }
        Ok(())
    }

    fn uses_metadata(&self) -> bool {
        false
    }
}

/// The users the table projection holds for `thing`.
async fn table_users(store: &DocumentStore, thing: Uuid) -> BTreeSet<Uuid> {
    ok(store
        .query_session()
        .query::<ThingUser>()
        .filter(|f| f.thing.eq(thing))
        .to_list()
        .await)
    .into_iter()
    .map(|u| u.user)
    .collect()
}

fn users(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::now_v7()).collect()
}

/// StressTests `Bugs/Bug_3113_do_not_reorder_sql_operations`:
/// `does_not_reorder_sql_commands_randomly_single_document_projections` and
/// `..._multiple_document_projections`. An inline event projection's deletes and stores
/// run in the order it queued them, next to one or two inline aggregates in the same
/// save: after assigning 2 and 20 users to two things, each thing holds exactly its
/// users; a reassignment that deletes rows and stores some of them again (in one event,
/// and across two events of one save) leaves exactly the users last assigned, in the
/// table and in each aggregate.
#[tokio::test]
async fn event_projection_operations_run_in_the_order_they_were_queued() {
    for two_views in [false, true] {
        let (_schema, b) = builder("mcs_3113");
        let b = b
            .projection::<ThingView1>(Lifecycle::Inline)
            .event_projection(ThingUsersTable, Lifecycle::Inline);
        let b = match two_views {
            true => b.projection::<ThingView2>(Lifecycle::Inline),
            false => b,
        };
        let store = ok(b.build().await);
        let views = |store: DocumentStore, thing: Uuid| async move {
            let mut q = store.query_session();
            let one: ThingView1 = ok(q.load(&thing).await).expect("view 1");
            let two: Option<ThingView2> = ok(q.load(&thing).await);
            let set = |v: &[Uuid]| v.iter().copied().collect::<BTreeSet<Uuid>>();
            (set(&one.users), two.map(|t| set(&t.users)))
        };

        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(
            first,
            [ThingCreated {
                name: "First".into(),
            }],
        ));
        ok(s.events().start_stream(
            second,
            [ThingCreated {
                name: "Second".into(),
            }],
        ));
        ok(s.save_changes().await);

        let first_users = users(2);
        let second_users = users(20);
        ok(s.events().append(
            first,
            [ThingUsersAssigned {
                removed: vec![],
                added: first_users.clone(),
            }],
        ));
        ok(s.events().append(
            second,
            [ThingUsersAssigned {
                removed: vec![],
                added: second_users.clone(),
            }],
        ));
        ok(s.save_changes().await);
        let expected: BTreeMap<Uuid, BTreeSet<Uuid>> = [
            (first, first_users.iter().copied().collect()),
            (second, second_users.iter().copied().collect()),
        ]
        .into();
        for (thing, want) in &expected {
            assert_eq!(&table_users(&store, *thing).await, want, "{two_views}");
            let (one, two) = views(store.clone(), *thing).await;
            assert_eq!(&one, want);
            assert_eq!(two.as_ref().map_or(want, |t| t), want);
        }

        // Second: every row deleted, half of them stored again, five new ones.
        let mut kept: Vec<Uuid> = second_users[..10].to_vec();
        kept.extend(users(5));
        ok(s.events().append(
            second,
            [ThingUsersAssigned {
                removed: second_users.clone(),
                added: kept.clone(),
            }],
        ));
        // First: two events, the second storing again a row the first deleted and
        // deleting the one it stored.
        let third = Uuid::now_v7();
        ok(s.events().append(
            first,
            [
                ThingUsersAssigned {
                    removed: first_users.clone(),
                    added: vec![third],
                },
                ThingUsersAssigned {
                    removed: vec![third],
                    added: vec![first_users[0], third],
                },
            ],
        ));
        ok(s.save_changes().await);
        let expected: BTreeMap<Uuid, BTreeSet<Uuid>> = [
            (first, [first_users[0], third].into_iter().collect()),
            (second, kept.iter().copied().collect()),
        ]
        .into();
        for (thing, want) in &expected {
            assert_eq!(
                &table_users(&store, *thing).await,
                want,
                "two views: {two_views}"
            );
            let (one, two) = views(store.clone(), *thing).await;
            assert_eq!(&one, want);
            assert_eq!(two.as_ref().map_or(want, |t| t), want);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Foo {
    bar_baz: String,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct FooBar {
    baz: String,
}

/// Marten's `Bug_2603` document: two nested members whose JSON paths are alike
/// (`foo.barBaz` and `fooBar.baz`), conjoined.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[document(tenancy = "conjoined")]
struct SimilarNames {
    id: Uuid,
    #[query(nested)]
    foo: Foo,
    #[query(nested)]
    foo_bar: FooBar,
}

/// `Bugs/Bug_2603_similar_named_props`: `where_clause_with_similar_names_should_still_be_different`.
/// An `or` of conditions on two nested paths whose names are alike, in a conjoined
/// tenant's query, tests each path where it lies: both documents match, and each leg
/// alone matches its own document only.
#[tokio::test]
async fn an_or_over_similarly_named_nested_paths_tests_each_path() {
    let (_schema, b) = builder("mcs_2603");
    let store = ok(b.document::<SimilarNames>().build().await);
    let one = SimilarNames {
        id: Uuid::now_v7(),
        foo: Foo {
            bar_baz: "aaa".into(),
        },
        foo_bar: FooBar { baz: "bbb".into() },
    };
    let two = SimilarNames {
        id: Uuid::now_v7(),
        foo: Foo {
            bar_baz: "ccc".into(),
        },
        foo_bar: FooBar { baz: "ddd".into() },
    };
    let mut s = ok(store.lightweight_session_for("tenant"));
    ok(s.store(one.clone()));
    ok(s.store(two.clone()));
    ok(s.save_changes().await);

    let query = s
        .query::<SimilarNames>()
        .filter(|f| f.foo.bar_baz.eq("aaa").or(f.foo_bar.baz.eq("ddd")));
    let sql = query.to_sql();
    assert!(
        sql.contains(r#"'{"foo","barBaz"}'"#) && sql.contains(r#"'{"fooBar","baz"}'"#),
        "each leg names its own path: {sql}"
    );
    let mut found: Vec<Uuid> = ok(query.to_list().await).iter().map(|d| d.id).collect();
    found.sort();
    let mut want = vec![one.id, two.id];
    want.sort();
    assert_eq!(found, want);
    let left = ok(s
        .query::<SimilarNames>()
        .filter(|f| f.foo.bar_baz.eq("ddd"))
        .count()
        .await);
    let right = ok(s
        .query::<SimilarNames>()
        .filter(|f| f.foo_bar.baz.eq("ddd"))
        .to_list()
        .await);
    assert_eq!((left, right), (0, vec![two]));
    let mut elsewhere = ok(store.query_session_for("other"));
    assert_eq!(
        ok(elsewhere
            .query::<SimilarNames>()
            .filter(|f| f.foo.bar_baz.eq("aaa").or(f.foo_bar.baz.eq("ddd")))
            .count()
            .await),
        0
    );
}

/// Marten's `AppointmentScheduling` of bug 3430: fields whose names make identifiers past
/// PostgreSQL's 63 bytes (here the generated columns `mt_f_<field>`; the table is named
/// short so that nothing else is cut).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(table = "appointments")]
struct AppointmentScheduling {
    id: Uuid,
    #[document(index)]
    supercalifragilisticexpialidocious_really_long_field_name_one: String,
    #[document(unique)]
    supercalifragilisticexpialidocious_other_long_field_name_two: String,
}

/// `Bugs/Bug_3430_warn_when_indexes_are_too_big` (identifiers past 63 bytes) meeting
/// `Bugs/Bug_3499_duplicate_indexes_recreated_on_startup` (an index recreated on every
/// start). PostgreSQL cuts the generated column of a long field name to 63 bytes; marten
/// names the column uncut in its statements (which PostgreSQL cuts the same way), so
/// writes and queries work. The schema it built must then be what it expects: no
/// difference for `assert_schema` or a patch, and a second store's build recreates
/// nothing. (The index comparison used to compare the key columns as PostgreSQL stores
/// them, cut, with the uncut names, so both indexes were `IndexChanged` for ever and
/// every create-or-update build dropped and recreated them.)
#[tokio::test]
async fn an_index_on_a_column_postgres_cuts_to_63_bytes_is_not_recreated_on_every_build() {
    let (schema, b) = builder("mcs_3430_3499");
    let store = ok(b.document::<AppointmentScheduling>().build().await);
    let doc = AppointmentScheduling {
        id: Uuid::now_v7(),
        supercalifragilisticexpialidocious_really_long_field_name_one: "a".into(),
        supercalifragilisticexpialidocious_other_long_field_name_two: "b".into(),
    };
    let mut s = store.lightweight_session();
    ok(s.store(doc.clone()));
    ok(s.save_changes().await);
    let found = ok(store
        .query_session()
        .query::<AppointmentScheduling>()
        .filter(|f| {
            f.supercalifragilisticexpialidocious_really_long_field_name_one
                .eq("a")
        })
        .to_list()
        .await);
    assert_eq!(found, vec![doc]);

    let before = catalog_of(&schema).await;
    ok(store.assert_schema().await);
    let patch = ok(store.schema_patch(PatchOptions::new()).await);
    assert!(patch.is_empty(), "{patch}");
    let _second = ok(builder_on(&schema)
        .document::<AppointmentScheduling>()
        .build()
        .await);
    assert_eq!(
        catalog_of(&schema).await.0,
        before.0,
        "a second build recreated indexes"
    );
}
