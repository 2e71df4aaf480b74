//! Every page's statement is an index scan: planned at a few thousand rows with
//! sequential scans off and a generic plan forced (the plan a prepared statement keeps
//! whatever its parameters), no plan of a page's statement reads a table of the store
//! with a sequential scan, and each reads through an index.

use marten::prelude::*;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

use super::dead_letters::statement as dead_letters;
use super::events::{statements as stream_events, EventsQuery};
use super::streams::{statement as streams, tag_statement, StreamsQuery};
use super::tags::{list_statement, tag_statements, ListCursor};
use super::Params;
use crate::slots::{page_statement as projections_page, statement as projections};
use crate::tables::Tables;

#[derive(Tag, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[tag(name = "customer")]
struct CustomerTag(String);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "placed")]
struct Placed {
    #[tag]
    customer: CustomerTag,
}

fn ok<T>(r: marten::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

async fn plan(raw: &tokio_postgres::Client, what: &str, sql: &str, p: &Params) {
    let rows = match raw.query(&format!("EXPLAIN {sql}"), &p.refs()).await {
        Ok(r) => r,
        Err(e) => panic!("EXPLAIN {what}: {e}\n{sql}"),
    };
    let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let text = lines.join("\n");
    assert!(
        !text.contains("Seq Scan"),
        "{what} reads a table whole:\n{text}\n{sql}"
    );
    assert!(text.contains("Index"), "{what} uses no index:\n{text}");
}

/// Analyzes the tables of the test's schema (the client's `search_path`) alone: a
/// database-wide `ANALYZE` in two tests at once deadlocked on each other's tables.
async fn analyze_schema(raw: &tokio_postgres::Client) {
    let tables: Vec<String> = raw
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname = current_schema() ORDER BY tablename",
            &[],
        )
        .await
        .expect("the schema's tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    raw.batch_execute(&format!("ANALYZE {}", tables.join(", ")))
        .await
        .expect("analyze the schema's tables");
}

#[tokio::test]
async fn every_pages_statement_is_an_index_scan() {
    let schema = TestSchema::new("console_plans");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .event::<Placed>()
        .build()
        .await);
    let mut s = store.lightweight_session();
    let mut first = None;
    for i in 0..3000 {
        let id = Uuid::now_v7();
        first.get_or_insert(id);
        ok(s.events().append(
            id,
            [Placed {
                customer: CustomerTag(format!("c{}", i % 500)),
            }],
        ));
    }
    ok(s.save_changes().await);
    let raw = schema.raw_client().await;
    let t = Tables::of(&store);
    raw.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {p} (name text PRIMARY KEY, last_tx xid8 NOT NULL DEFAULT '0', \
         last_seq bigint NOT NULL DEFAULT 0, owner_epoch bigint NOT NULL DEFAULT 0, owner text, \
         last_updated timestamptz NOT NULL DEFAULT now(), tenant_id text NOT NULL DEFAULT '*DEFAULT*');
         CREATE TABLE IF NOT EXISTS {d} (id bigserial PRIMARY KEY, projection text NOT NULL, \
         seq_id bigint NOT NULL, event_type text NOT NULL, stream_id text NOT NULL, error text NOT NULL, \
         at timestamptz NOT NULL DEFAULT now(), tenant_id text NOT NULL DEFAULT '*DEFAULT*');
         INSERT INTO {p} (name, last_seq) SELECT 'P' || g, g FROM generate_series(1, 2000) g;
         INSERT INTO {d} (projection, seq_id, event_type, stream_id, error) \
           SELECT 'P' || (g % 7), g, 'placed', 's', 'e' FROM generate_series(1, 3000) g;
         SET enable_seqscan = off;
         SET plan_cache_mode = force_generic_plan;",
        p = t.progression,
        d = t.dead_letters
    ))
    .await
    .expect("seed and plan settings");
    analyze_schema(&raw).await;
    let id = first.expect("a stream").to_string();

    let q = StreamsQuery {
        after: Some(id.clone()),
        ..StreamsQuery::default()
    };
    let (sql, p) = streams(&t, &q).expect("streams");
    plan(&raw, "streams after a cursor", &sql, &p).await;
    let q = StreamsQuery {
        stream_type: Some("x".into()),
        archived: Some("on".into()),
        ..StreamsQuery::default()
    };
    let (sql, p) = streams(&t, &q).expect("streams");
    plan(&raw, "streams of a type", &sql, &p).await;
    let q = StreamsQuery {
        stream_type: Some("x".into()),
        ..StreamsQuery::default()
    };
    let (sql, p) = tag_statement(&t, &q, ("customer", "c7")).expect("streams of a tag");
    plan(&raw, "streams of a tag", &sql, &p).await;
    let q = StreamsQuery {
        after_seq: Some(1500),
        ..StreamsQuery::default()
    };
    let (sql, p) = tag_statement(&t, &q, ("customer", "c7")).expect("streams of a tag");
    plan(&raw, "streams of a tag after a cursor", &sql, &p).await;
    let q = StreamsQuery {
        id: Some(id.clone()),
        ..StreamsQuery::default()
    };
    let (sql, p) = streams(&t, &q).expect("streams");
    plan(&raw, "a stream by id", &sql, &p).await;

    let q = EventsQuery {
        after: Some(1),
        tenant: None,
    };
    let [(stream_sql, sp), (events_sql, ep)] = stream_events(&t, &id, &q).expect("events");
    plan(&raw, "a stream's row", &stream_sql, &sp).await;
    plan(&raw, "a stream's events", &events_sql, &ep).await;

    plan(&raw, "projections", &projections(&t), &Params::default()).await;
    let mut p = Params::default();
    p.push("OrderSummary".to_owned());
    p.push(201i64);
    plan(&raw, "a page of projections", &projections_page(&t), &p).await;
    let (sql, p) = dead_letters(&t, 100);
    plan(&raw, "dead letters", &sql, &p).await;
    tag_lists(&raw, &t).await;
    let [(vsql, vp), (esql, ep)] =
        tag_statements(&t, ("customer", "c7"), None, 10).expect("a tag's statements");
    plan(&raw, "a tag's versions", &vsql, &vp).await;
    plan(&raw, "a tag's events", &esql, &ep).await;
}

#[tokio::test]
async fn the_conjoined_tag_search_is_an_index_scan() {
    let schema = TestSchema::new("console_plans_conjoined");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .events_tenancy(marten::Tenancy::Conjoined)
        .event::<Placed>()
        .build()
        .await);
    for tenant in ["acme", "globex"] {
        let mut s = ok(store.lightweight_session_for(tenant));
        for i in 0..1500 {
            ok(s.events().append(
                Uuid::now_v7(),
                [Placed {
                    customer: CustomerTag(format!("c{}", i % 500)),
                }],
            ));
        }
        ok(s.save_changes().await);
    }
    let raw = schema.raw_client().await;
    analyze_schema(&raw).await;
    raw.batch_execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan;")
        .await
        .expect("plan settings");
    let t = Tables::of(&store);
    let q = StreamsQuery {
        after_tenant: Some("acme".into()),
        after_seq: Some(100),
        ..StreamsQuery::default()
    };
    let (sql, p) = tag_statement(&t, &q, ("customer", "c7")).expect("streams of a tag");
    plan(&raw, "conjoined streams of a tag", &sql, &p).await;
    tag_lists(&raw, &t).await;
    // A tag's page is one tenant's: its version and its events, through the tenant-led
    // keys; without a tenant it is refused.
    let [(vsql, vp), (esql, ep)] = tag_statements(&t, ("customer", "c7"), Some("acme"), 10)
        .expect("a tenant's tag statements");
    plan(&raw, "a conjoined tag's version", &vsql, &vp).await;
    plan(&raw, "a conjoined tag's events", &esql, &ep).await;
    assert!(
        tag_statements(&t, ("customer", "c7"), None, 10).is_err(),
        "a conjoined tag needs its tenant"
    );
}

/// The list of tags, first page and after a cursor (with its tenant, and without: a
/// single-tenant store's older link), reads the tag versions' primary key in order: a
/// range of the key (`Index Cond`), no sort.
async fn tag_lists(raw: &tokio_postgres::Client, t: &Tables) {
    let tenant = if t.conjoined { "acme" } else { "*DEFAULT*" };
    let mut cursors = vec![
        None,
        Some(ListCursor {
            tag_type: "customer",
            tag_value: "c1",
            tenant: Some(tenant),
        }),
    ];
    if !t.conjoined {
        cursors.push(Some(ListCursor {
            tag_type: "customer",
            tag_value: "c1",
            tenant: None,
        }));
    }
    for cursor in cursors {
        let what = format!("tags after {cursor:?}");
        let (sql, p) = list_statement(t, cursor).expect("the tags' statement");
        plan(raw, &what, &sql, &p).await;
        let text = explain(raw, &sql, &p).await;
        assert!(!text.contains("Sort"), "{what} sorts:\n{text}\n{sql}");
        assert!(
            text.contains("mt_tag_versions_pkey"),
            "{what} does not read the primary key:\n{text}"
        );
        if cursor.is_some() {
            assert!(
                text.contains("Index Cond"),
                "{what} reads the key from its start:\n{text}"
            );
        }
    }
    if t.conjoined {
        let old = ListCursor {
            tag_type: "customer",
            tag_value: "c1",
            tenant: None,
        };
        assert!(list_statement(t, Some(old)).is_err(), "needs the tenant");
    }
}

async fn explain(raw: &tokio_postgres::Client, sql: &str, p: &Params) -> String {
    let rows = raw
        .query(&format!("EXPLAIN {sql}"), &p.refs())
        .await
        .expect("EXPLAIN");
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}
