//! `DocumentStore::health`: a healthy store, lag without a daemon, dead letters counted,
//! schema drift, a database that stops answering.

mod common;

use std::time::Duration;

use common::tally::Added;
use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::{HealthCheck, SchemaDifference};
use marten_testing::fault::Faults;
use marten_testing::{FaultProxy, TestSchema};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Note {
    id: Uuid,
    #[document(index)]
    title: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Poison {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Tally {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
    fn apply_poison(&mut self, _e: &Poison) -> Result<(), String> {
        Err("poisoned".into())
    }
}

async fn store_for(label: &str) -> (TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .document::<Note>()
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    (schema, store)
}

#[tokio::test]
async fn a_fresh_store_is_healthy() {
    let (_schema, store) = store_for("health_fresh").await;
    let health = store.health().await;
    assert!(health.is_healthy(), "{health:#?}");
    assert!(health.connected && health.latency.is_some(), "{health:#?}");
    assert_eq!(health.schema_drift, Some(vec![]));
    let names: Vec<&str> = health.projections.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Tally"]);
    assert_eq!((health.max_lag(), health.dead_letters()), (0, 0));
}

#[tokio::test]
async fn appends_without_a_daemon_show_as_lag() {
    let (_schema, store) = store_for("health_lag").await;
    let mut s = store.lightweight_session();
    ok(s.events()
        .append(Uuid::now_v7(), (1..=5).map(|n| Added { n })));
    ok(s.events().append(Uuid::now_v7(), [Added { n: 1 }]));
    ok(s.save_changes().await);
    let health = store.health().await;
    let tally = &health.projections[0];
    assert_eq!((tally.position, tally.lag), (0, 6), "{health:#?}");
    assert_eq!(health.max_lag(), 6);
    assert!(health.is_healthy(), "lag alone is not judged: {health:#?}");
}

#[tokio::test]
async fn a_dead_letter_is_counted_and_unhealthy() {
    let (_schema, store) = store_for("health_dead").await;
    let mut s = store.lightweight_session();
    let events = [
        PendingEvent::new(Added { n: 1 }),
        PendingEvent::new(Poison {}),
        PendingEvent::new(Added { n: 2 }),
    ];
    ok(s.events().append(Uuid::now_v7(), events));
    ok(s.save_changes().await);
    let options = DaemonOptions {
        retries: 1,
        ..DaemonOptions::default()
    };
    let daemon = Daemon::start(&store, options);
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let health = store.health().await;
    let tally = &health.projections[0];
    assert_eq!((tally.dead_letters, tally.lag), (1, 0), "{health:#?}");
    assert_eq!(health.dead_letters(), 1);
    assert!(!health.is_healthy(), "{health:#?}");
}

#[tokio::test]
async fn a_missing_column_is_drift() {
    let (schema, store) = store_for("health_drift").await;
    schema
        .raw_client()
        .await
        .batch_execute("ALTER TABLE mt_doc_note DROP COLUMN mt_f_title")
        .await
        .expect("drop the column");
    let health = store.health().await;
    assert!(
        health.connected && health.failures.is_empty(),
        "{health:#?}"
    );
    let drift = health.schema_drift.clone().unwrap_or_default();
    let missing = drift.iter().any(|d| {
        matches!(d, SchemaDifference::MissingColumn { table, column, .. }
            if table.ends_with(".mt_doc_note") && column == "mt_f_title")
    });
    assert!(missing, "{drift:#?}");
    assert!(!health.is_healthy());
}

#[tokio::test]
async fn a_database_that_stops_answering_is_reported_not_raised() {
    let schema = TestSchema::new("health_down");
    let proxy = FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url_via_addr(proxy.addr()))
        .schema(schema.name())
        .pool_size(1)
        .pool_wait_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        .projection::<Tally>(Lifecycle::Async)
        .build()
        .await);
    assert!(store.health().await.is_healthy());
    proxy.set_global(Faults::black_hole());
    for c in proxy.connections() {
        c.set(Faults::black_hole());
    }
    let health = tokio::time::timeout(Duration::from_secs(30), store.health())
        .await
        .expect("health is bounded");
    assert!(!health.connected && health.latency.is_none(), "{health:#?}");
    assert_eq!(health.failures.len(), 1, "{health:#?}");
    assert_eq!(health.failures[0].check, HealthCheck::Connection);
    assert_eq!(health.schema_drift, None);
    assert!(!health.is_healthy());
}

#[test]
fn positions_and_statuses_persist_as_json() {
    let position = marten::Position {
        transaction_id: 42,
        sequence: 7,
    };
    let json = serde_json::to_string(&position).expect("serialize");
    assert_eq!(
        serde_json::from_str::<marten::Position>(&json).ok(),
        Some(position)
    );
    let status: marten::ProjectionStatus =
        serde_json::from_str(r#"{"name":"Tally","position":3,"head":5,"owner":null}"#)
            .expect("deserialize");
    assert_eq!((status.name.as_str(), status.lag()), ("Tally", 2));
}
