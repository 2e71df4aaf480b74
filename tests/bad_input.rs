//! Bad input: undeserializable rows, hostile ids, empty ids, a connection dropped
//! mid-save. Every case is a typed error and loses nothing already committed.

mod common;

use std::time::Duration;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Page {
    id: String,
    title: String,
    views: u32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Order {
    id: Uuid,
    total: i64,
}

#[tokio::test]
async fn a_row_that_no_longer_deserializes_names_type_id_and_cause() {
    let (schema, b) = builder("bad_json");
    let store = ok(b.document::<Page>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Page {
        id: "home".into(),
        title: "Home".into(),
        views: 1,
    }));
    ok(s.save_changes().await);
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_doc_page SET data = jsonb_set(data, '{views}', '\"many\"') WHERE id = 'home'",
            &[],
        )
        .await
        .expect("corrupt");
    let err = s
        .load::<Page>(&"home".to_owned())
        .await
        .expect_err("bad json");
    match &err {
        marten::Error::Deserialize {
            document_type,
            id,
            source,
        } => {
            assert_eq!(*document_type, "Page");
            assert_eq!(id, "home");
            assert!(source.to_string().contains("invalid type"), "{source}");
        }
        other => panic!("wrong error {other}"),
    }
    assert!(
        err.to_string().contains("Page") && err.to_string().contains("home"),
        "{err}"
    );
}

#[tokio::test]
async fn hostile_ids_round_trip() {
    let (schema, b) = builder("bad_ids");
    let store = ok(b.document::<Page>().build().await);
    let ids = [
        "it's",
        "back\\slash",
        "\"quoted\"",
        "'; DROP TABLE mt_doc_page; --",
        "ünïcødé ✓ 日本",
        "$1",
        "%s %n",
        " leading and trailing ",
        "new\nline",
    ];
    let mut s = store.lightweight_session();
    for (i, id) in ids.iter().enumerate() {
        ok(s.store(Page {
            id: (*id).to_owned(),
            title: format!("t{i}"),
            views: i as u32,
        }));
    }
    ok(s.save_changes().await);
    for (i, id) in ids.iter().enumerate() {
        let page: Page =
            ok(s.load(&(*id).to_owned()).await).unwrap_or_else(|| panic!("{id:?} missing"));
        assert_eq!(page.title, format!("t{i}"));
    }
    let many: Vec<Page> = ok(s
        .load_many(&ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .await);
    assert_eq!(many.len(), ids.len());
    let n: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT count(*) FROM mt_doc_page", &[])
        .await
        .expect("table still there")
        .get(0);
    assert_eq!(n, ids.len() as i64);
}

#[tokio::test]
async fn an_empty_string_id_is_a_clear_error() {
    let (_schema, b) = builder("bad_empty_id");
    let store = ok(b.document::<Page>().build().await);
    let mut s = store.lightweight_session();
    let err = s
        .store(Page {
            id: String::new(),
            title: "x".into(),
            views: 0,
        })
        .expect_err("empty id");
    match &err {
        marten::Error::InvalidId {
            document_type,
            reason,
            ..
        } => {
            assert_eq!(*document_type, "Page");
            assert!(reason.contains("empty"));
        }
        other => panic!("wrong error {other}"),
    }
    assert_eq!(s.pending_changes(), 0);
    let err = s.load::<Page>(&String::new()).await.expect_err("empty id");
    assert!(matches!(err, marten::Error::InvalidId { .. }));
}

#[tokio::test]
async fn a_connection_dropped_mid_save_is_an_error_and_writes_nothing() {
    let (schema, b) = builder("bad_dropped");
    let store = ok(b.document::<Order>().build().await);
    let blocker_id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.store(Order {
        id: blocker_id,
        total: 1,
    }));
    ok(s.save_changes().await);

    // Another connection holds the row lock of one document of the batch, so the save
    // blocks after writing the others.
    let locker = schema.raw_client().await;
    locker.batch_execute("BEGIN").await.expect("begin");
    locker
        .execute(
            "SELECT 1 FROM mt_doc_order WHERE id = $1 FOR UPDATE",
            &[&blocker_id],
        )
        .await
        .expect("lock");

    let fresh: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    let saver = {
        let store = store.clone();
        let fresh = fresh.clone();
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            for id in &fresh {
                s.store(Order { id: *id, total: 5 })?;
            }
            s.store(Order {
                id: blocker_id,
                total: 99,
            })?;
            s.save_changes().await
        })
    };
    // Wait until the saver is blocked on the lock, then kill its backend.
    let killer = schema.raw_client().await;
    let mut killed = 0;
    for _ in 0..100 {
        killed = killer
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'marten' AND wait_event_type = 'Lock' AND datname = current_database() \
                 AND query LIKE '%mt_doc_order%'",
                &[],
            )
            .await
            .expect("terminate")
            .get::<_, i64>(0);
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(killed, 1, "the saver was seen blocked and killed");
    let err = saver.await.expect("task").expect_err("connection dropped");
    assert!(matches!(err, marten::Error::Connection(_)), "{err:?}");
    locker.batch_execute("ROLLBACK").await.expect("rollback");

    let n: i64 = killer
        .query_one(
            "SELECT count(*) FROM mt_doc_order WHERE id = ANY($1)",
            &[&fresh],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "nothing of the killed batch was committed");
    let total: i64 = killer
        .query_one(
            "SELECT (data->>'total')::bigint FROM mt_doc_order WHERE id = $1",
            &[&blocker_id],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(total, 1, "the committed document is intact");

    // The store recovers: the next session gets a healthy connection.
    let mut s = store.lightweight_session();
    ok(s.store(Order {
        id: Uuid::now_v7(),
        total: 3,
    }));
    ok(s.save_changes().await);
}
