//! The aggregate cache in tenants' sessions: an entry belongs to the tenant whose session
//! saved or read it, so two tenants with the same stream id each append in one round trip
//! and never plan from the other's document; the cache's guards read the tenant's own
//! documents.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::events::*;
use common::{builder, counted_builder_on, named_builder, ok};
use marten::prelude::*;
use marten::Tenancy;
use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[document(tenancy = "conjoined")]
struct TenantBoard {
    id: Uuid,
    version: i64,
    name: String,
    titles: Vec<String>,
}

#[marten::apply]
impl TenantBoard {
    fn create(e: &ProjectStarted) -> Self {
        TenantBoard {
            name: e.name.clone(),
            ..TenantBoard::default()
        }
    }

    fn apply(&mut self, e: &TaskRecorded) {
        self.titles.push(e.title.clone());
    }
}

/// A single aggregate of single-tenant events: one document per stream, whichever
/// tenant's session appends.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct SharedBoard {
    id: Uuid,
    version: i64,
    titles: Vec<String>,
}

#[marten::apply]
impl SharedBoard {
    fn apply(&mut self, e: &TaskRecorded) {
        self.titles.push(e.title.clone());
    }
}

const TENANTS: [&str; 2] = ["acme", "globex"];

/// Starts `tenant`'s stream `id` with a project named `name`.
async fn start(store: &DocumentStore, tenant: &str, id: Uuid, name: &str) {
    let mut s = ok(store.lightweight_session_for(tenant));
    ok(s.events().start_stream(id, [started(name)]));
    ok(s.save_changes().await);
}

/// Appends one task per stream of `ids`, all in one save of `tenant`.
async fn append(store: &DocumentStore, tenant: &str, ids: &[Uuid], title: &str) {
    let mut s = ok(store.lightweight_session_for(tenant));
    for id in ids {
        ok(s.events().append(*id, [task(title)]));
    }
    ok(s.save_changes().await);
}

async fn board(store: &DocumentStore, tenant: &str, id: Uuid) -> TenantBoard {
    let mut s = ok(store.query_session_for(tenant));
    ok(s.load::<TenantBoard>(&id).await).expect("board")
}

/// The titles of `tenant`'s stream `id`, in stream order, and its version.
async fn recorded(store: &DocumentStore, tenant: &str, id: Uuid) -> (Vec<String>, i64) {
    let mut s = ok(store.lightweight_session_for(tenant));
    let events = ok(s.events().fetch_stream(id).await);
    let titles = events
        .iter()
        .filter_map(|e| e.data_as::<TaskRecorded>().map(|t| t.title.clone()))
        .collect();
    (titles, events.last().map_or(0, |e| e.version))
}

/// Renames `tenant`'s stored board behind the projection's back.
async fn rename_by_hand(schema: &TestSchema, tenant: &str, id: Uuid) {
    let changed = schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_doc_tenantboard SET data = jsonb_set(data, '{name}', '\"renamed\"') \
             WHERE tenant_id = $1 AND id = $2",
            &[&tenant, &id],
        )
        .await
        .expect("edit");
    assert_eq!(changed, 1);
}

async fn conjoined_store(b: marten::DocumentStoreBuilder) -> DocumentStore {
    ok(b.events_tenancy(Tenancy::Conjoined)
        .projection::<TenantBoard>(Lifecycle::Inline)
        .build()
        .await)
}

/// Both tenants' streams have one id and move in step, so an entry keyed without the
/// tenant would hand one tenant the other's document at the right version: the cached
/// document's guard would reject it and the save would take three round trips.
#[tokio::test]
async fn tenants_sharing_a_stream_id_each_append_in_one_round_trip() {
    let (schema, _) = builder("cache_tenants_round_trip");
    let (proxy, b) = counted_builder_on(&schema).await;
    let store = conjoined_store(b).await;
    let id = Uuid::now_v7();
    for tenant in TENANTS {
        start(&store, tenant, id, tenant).await;
        // Warm the statements and the tenant's entry.
        append(&store, tenant, &[id], "warm-1").await;
        append(&store, tenant, &[id], "warm-2").await;
    }
    for round in 0..3 {
        for tenant in TENANTS {
            let before = proxy.round_trips();
            append(&store, tenant, &[id], &format!("{tenant}-{round}")).await;
            assert_eq!(
                proxy.round_trips() - before,
                1,
                "{tenant}, round {round}: append and projected write in one flight"
            );
        }
    }
    for tenant in TENANTS {
        let doc = board(&store, tenant, id).await;
        let (titles, version) = recorded(&store, tenant, id).await;
        assert_eq!(doc.name, tenant);
        assert_eq!((doc.titles, doc.version), (titles.clone(), version));
        assert_eq!(titles.len(), 5, "{titles:?}");
        assert!(titles.iter().skip(2).all(|t| t.starts_with(tenant)));
    }
}

/// A tenant's document edited by hand is what the next projected write builds on (the
/// guarded write reads the tenant's row: the other tenant's is still exactly the cached
/// document, so a guard reading it would pass and overwrite the edit); the other
/// tenant's document is not touched.
#[tokio::test]
async fn a_tenants_hand_edited_document_is_built_on() {
    let (schema, b) = builder("cache_tenants_hand_edit");
    let store = conjoined_store(b).await;
    let id = Uuid::now_v7();
    for tenant in TENANTS {
        start(&store, tenant, id, "same").await;
        append(&store, tenant, &[id], "a").await;
    }
    rename_by_hand(&schema, "acme", id).await;
    for tenant in TENANTS {
        append(&store, tenant, &[id], "b").await;
    }
    let acme = board(&store, "acme", id).await;
    assert_eq!((acme.name.as_str(), acme.titles.len()), ("renamed", 2));
    let globex = board(&store, "globex", id).await;
    assert_eq!((globex.name.as_str(), globex.titles.len()), ("same", 2));
}

/// Several cached documents in one save of a tenant are checked together against the
/// tenant's rows (the other tenant's are the cached documents exactly); one edited by
/// hand replans the save, which builds on it.
#[tokio::test]
async fn a_tenants_save_of_several_cached_documents_checks_its_own_rows() {
    let (schema, b) = builder("cache_tenants_several");
    let store = conjoined_store(b).await;
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    for tenant in TENANTS {
        for id in ids {
            start(&store, tenant, id, "same").await;
        }
        append(&store, tenant, &ids, "a").await;
    }
    append(&store, "acme", &ids, "b").await;
    rename_by_hand(&schema, "acme", ids[1]).await;
    append(&store, "acme", &ids, "c").await;
    append(&store, "globex", &ids, "b").await;
    let names = |docs: &[TenantBoard]| docs.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    let mut acme = Vec::new();
    let mut globex = Vec::new();
    for id in ids {
        acme.push(board(&store, "acme", id).await);
        globex.push(board(&store, "globex", id).await);
    }
    assert_eq!(names(&acme), ["same", "renamed"]);
    assert_eq!(names(&globex), ["same", "same"]);
    assert!(acme.iter().all(|d| d.titles == ["a", "b", "c"]));
    assert!(globex.iter().all(|d| d.titles == ["a", "b"]));
}

/// Two stores, each with its own cache, and writers of both tenants racing plain appends
/// to the one stream id of each tenant, round after round: every append commits, and each
/// tenant's document holds exactly its tenant's events, in stream order.
#[tokio::test]
async fn racing_tenants_on_one_stream_id_lose_nothing_and_mix_nothing() {
    const PER_TENANT: usize = 4;
    const ROUNDS: usize = 30;
    let (schema, b) = builder("cache_tenants_race");
    let first = conjoined_store(b.pool_size(PER_TENANT + 1)).await;
    let second = conjoined_store(common::builder_on(&schema).pool_size(PER_TENANT + 1)).await;
    let id = Uuid::now_v7();
    for tenant in TENANTS {
        start(&first, tenant, id, tenant).await;
        // Both stores start with each tenant's entry cached.
        append(&second, tenant, &[id], "seed").await;
        append(&first, tenant, &[id], "seed").await;
    }
    let writers = TENANTS.len() * PER_TENANT;
    let barrier = Arc::new(Barrier::new(writers));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = if w % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let tenant = TENANTS[(w / 2) % TENANTS.len()];
            let barrier = barrier.clone();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    barrier.wait().await;
                    let mut s = store.lightweight_session_for(tenant)?;
                    s.events()
                        .append(id, [task(&format!("{tenant}-{w}-{round}"))])?;
                    s.save_changes().await?;
                }
                marten::Result::Ok(())
            })
        })
        .collect();
    for t in tasks {
        ok(t.await.expect("writer"));
    }
    for tenant in TENANTS {
        let (titles, version) = recorded(&first, tenant, id).await;
        assert_eq!(
            titles.len(),
            2 + PER_TENANT * ROUNDS,
            "{tenant}: every append"
        );
        assert!(
            titles.iter().skip(2).all(|t| t.starts_with(tenant)),
            "{tenant}: only its own events"
        );
        let doc = board(&second, tenant, id).await;
        assert_eq!((doc.titles, doc.version), (titles, version), "{tenant}");
    }
}

/// A tenant's save planned from its cache entry (a guarded projected write), dropped at
/// every await point: nothing is left running, open or locked, the pool's next user
/// commits, each cancelled save of two events left both or neither, and the tenant's
/// document is its stream folded (the other tenant's untouched).
#[tokio::test]
async fn a_tenants_cached_save_cancelled_at_every_await() {
    const WITHIN: Duration = Duration::from_secs(10);
    let (schema, b) = named_builder("cache_tenants_cancel");
    let store = conjoined_store(b.pool_size(1)).await;
    let id = Uuid::now_v7();
    for tenant in TENANTS {
        start(&store, tenant, id, tenant).await;
        append(&store, tenant, &[id], "warm").await;
    }
    let raw = schema.raw_client().await;
    let app = schema.name();
    let run = cancel_at_every_await(
        200,
        |k| -> Operation<marten::Result<()>> {
            let store = store.clone();
            Box::pin(async move {
                let mut s = store.lightweight_session_for("acme")?;
                s.events()
                    .append(id, [task(&format!("{k}-a")), task(&format!("{k}-b"))])?;
                s.save_changes().await
            })
        },
        |k| {
            let (store, raw) = (store.clone(), &raw);
            async move {
                assert_clean(raw, app, WITHIN).await;
                // The pool's one connection commits the next save.
                append(&store, "globex", &[id], &format!("after-{k}")).await;
                assert_clean(raw, app, WITHIN).await;
            }
        },
    )
    .await;
    ok(run.output);
    assert!(run.cancelled >= 2, "only {} pending polls", run.cancelled);
    let (titles, version) = recorded(&store, "acme", id).await;
    let mut per_attempt = std::collections::BTreeMap::<&str, usize>::new();
    for t in titles.iter().skip(1) {
        *per_attempt
            .entry(t.split('-').next().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(per_attempt.values().all(|n| *n == 2), "{per_attempt:?}");
    let last = (run.cancelled + 1).to_string();
    assert_eq!(per_attempt.get(last.as_str()), Some(&2));
    let acme = board(&store, "acme", id).await;
    assert_eq!((acme.titles, acme.version), (titles, version));
    let (globex_titles, _) = recorded(&store, "globex", id).await;
    assert_eq!(globex_titles.len(), 1 + run.cancelled);
    assert_eq!(board(&store, "globex", id).await.titles, globex_titles);
}

/// Tenants' sessions appending in turn to one stream of single-tenant events with a single
/// aggregate share its one entry (the stream and the document are everyone's): each
/// append is one round trip, where entries kept per tenant would each be stale in turn
/// (rejected, then read under lock: three).
#[tokio::test]
async fn tenants_share_the_entry_of_a_shared_stream_and_document() {
    let (schema, _) = builder("cache_tenants_shared");
    let (proxy, b) = counted_builder_on(&schema).await;
    let store = ok(b.projection::<SharedBoard>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [task("start")]));
    ok(s.save_changes().await);
    drop(s);
    for tenant in TENANTS {
        append(&store, tenant, &[id], "warm").await;
    }
    let mut expected = vec!["start".to_owned(), "warm".into(), "warm".into()];
    for round in 0..3 {
        for tenant in TENANTS {
            let title = format!("{tenant}-{round}");
            let before = proxy.round_trips();
            append(&store, tenant, &[id], &title).await;
            assert_eq!(
                proxy.round_trips() - before,
                1,
                "{tenant}, round {round}: the shared entry is current"
            );
            expected.push(title);
        }
    }
    let mut s = store.query_session();
    let doc = ok(s.load::<SharedBoard>(&id).await).expect("board");
    assert_eq!(doc.titles, expected);
}
