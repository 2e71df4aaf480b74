//! `save_changes`: one transaction, one round trip, all-or-nothing, every rejection
//! listed; last-writer-wins documents; insert/update preconditions.

mod common;

use common::{builder, counted_builder, ok};
use marten::prelude::*;
use marten::{IdKey, RejectionKind};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Account {
    id: Uuid,
    balance: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Note {
    id: i64,
    text: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
#[document(table = "ledger_entries")]
struct Entry {
    #[document(id)]
    key: i32,
    amount: i64,
}

async fn count(schema: &marten_testing::TestSchema, table: &str) -> i64 {
    schema
        .raw_client()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn off_mode_last_writer_wins() {
    let (_schema, b) = builder("uow_off");
    let store = ok(b.document::<Note>().build().await);
    let mut a = store.lightweight_session();
    let mut c = store.lightweight_session();
    let _: Option<Note> = ok(a.load(&1).await);
    ok(a.store(Note {
        id: 1,
        text: "a".into(),
    }));
    ok(a.save_changes().await);
    let _: Option<Note> = ok(c.load(&1).await);
    ok(c.store(Note {
        id: 1,
        text: "c".into(),
    }));
    ok(c.save_changes().await);
    ok(a.store(Note {
        id: 1,
        text: "a again".into(),
    }));
    ok(a.save_changes().await);
    let n: Note = ok(store.query_session().load(&1).await).expect("note");
    assert_eq!(n.text, "a again");
}

#[tokio::test]
async fn insert_of_existing_and_update_of_missing_are_rejected() {
    let (schema, b) = builder("uow_insert_update");
    let store = ok(b.document::<Note>().document::<Account>().build().await);
    let mut s = store.lightweight_session();
    ok(s.insert(Note {
        id: 1,
        text: "first".into(),
    }));
    ok(s.save_changes().await);

    ok(s.insert(Note {
        id: 1,
        text: "again".into(),
    }));
    let err = s.save_changes().await.expect_err("exists");
    assert_eq!(err.rejections()[0].kind, RejectionKind::AlreadyExists);
    assert_eq!(err.rejections()[0].id, IdKey::I64(1));
    assert!(err.to_string().contains("Note 1 already exists"), "{err}");

    ok(s.update(Note {
        id: 2,
        text: "ghost".into(),
    }));
    let err = s.save_changes().await.expect_err("missing");
    assert_eq!(err.rejections()[0].kind, RejectionKind::NotFound);

    let ghost = Uuid::now_v7();
    ok(s.update(Account {
        id: ghost,
        balance: 1,
    }));
    let err = s.save_changes().await.expect_err("missing");
    assert_eq!(err.rejections()[0].kind, RejectionKind::NotFound);

    ok(s.update(Note {
        id: 1,
        text: "updated".into(),
    }));
    ok(s.save_changes().await);
    let n: Note = ok(store.query_session().load(&1).await).expect("note");
    assert_eq!(n.text, "updated");
    assert_eq!(count(&schema, "mt_doc_note").await, 1);
}

#[tokio::test]
async fn a_batch_with_one_stale_write_leaves_the_database_unchanged() {
    let (schema, b) = builder("uow_mixed");
    let store = ok(b
        .document::<Account>()
        .document::<Note>()
        .document::<Entry>()
        .build()
        .await);
    let mut setup = store.lightweight_session();
    let accounts: Vec<Account> = (0..5)
        .map(|i| Account {
            id: Uuid::now_v7(),
            balance: i,
        })
        .collect();
    for a in &accounts {
        ok(setup.store(a.clone()));
    }
    ok(setup.save_changes().await);
    let before: Vec<String> = schema
        .raw_client()
        .await
        .query(
            "SELECT data::text || mt_version::text FROM mt_doc_account ORDER BY id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut s = store.lightweight_session();
    let loaded: Vec<Account> = ok(s
        .load_many(&accounts.iter().map(|a| a.id).collect::<Vec<_>>())
        .await);
    assert_eq!(loaded.len(), 5);
    // Someone else moves accounts 1 and 3.
    let mut other = store.lightweight_session();
    ok(other.store(Account {
        balance: 100,
        ..accounts[1].clone()
    }));
    ok(other.store(Account {
        balance: 300,
        ..accounts[3].clone()
    }));
    ok(other.save_changes().await);
    let before_other: Vec<String> = schema
        .raw_client()
        .await
        .query(
            "SELECT data::text || mt_version::text FROM mt_doc_account ORDER BY id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_ne!(before, before_other);

    for a in &accounts {
        ok(s.store(Account {
            balance: a.balance + 1000,
            ..a.clone()
        }));
    }
    for i in 0..10 {
        ok(s.store(Note {
            id: i,
            text: "new".into(),
        }));
    }
    ok(s.insert(Entry { key: 1, amount: 5 }));
    ok(s.store(Account {
        id: Uuid::now_v7(),
        balance: 7,
    }));
    let err = s.save_changes().await.expect_err("two stale writes");
    let mut stale: Vec<IdKey> = err.rejections().iter().map(|r| r.id.clone()).collect();
    stale.sort();
    let mut expected = vec![IdKey::Uuid(accounts[1].id), IdKey::Uuid(accounts[3].id)];
    expected.sort();
    assert_eq!(stale, expected, "{err}");
    for r in err.rejections() {
        assert_eq!(r.document_type, "Account");
        assert!(matches!(
            r.kind,
            RejectionKind::VersionMismatch {
                actual: Some(_),
                ..
            }
        ));
    }
    let after: Vec<String> = schema
        .raw_client()
        .await
        .query(
            "SELECT data::text || mt_version::text FROM mt_doc_account ORDER BY id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(after, before_other, "nothing of the batch was written");
    assert_eq!(count(&schema, "mt_doc_note").await, 0);
    assert_eq!(count(&schema, "ledger_entries").await, 0);
    assert_eq!(s.pending_changes(), 0, "a failed save empties the queue");
}

#[tokio::test]
async fn save_changes_is_one_round_trip() {
    let (schema, proxy, b) = counted_builder("uow_round_trip").await;
    let store = ok(b.document::<Account>().document::<Note>().build().await);
    let mut s = store.lightweight_session();
    let accounts: Vec<Account> = (0..100)
        .map(|i| Account {
            id: Uuid::now_v7(),
            balance: i,
        })
        .collect();
    // Warm up: prepare the statements this shape of batch uses.
    for round in 0..2 {
        for a in &accounts {
            ok(s.store(Account {
                balance: a.balance + round,
                ..a.clone()
            }));
        }
        for i in 0..50 {
            ok(s.store(Note {
                id: i,
                text: "x".into(),
            }));
        }
        ok(s.delete::<Note>(&1000));
        ok(s.save_changes().await);
    }
    for round in 2..5 {
        for a in &accounts {
            ok(s.store(Account {
                balance: a.balance + round,
                ..a.clone()
            }));
        }
        for i in 0..50 {
            ok(s.store(Note {
                id: i,
                text: format!("{round}"),
            }));
        }
        ok(s.delete::<Note>(&1000));
        let before = proxy.round_trips();
        ok(s.save_changes().await);
        let trips = proxy.round_trips() - before;
        assert_eq!(
            trips, 1,
            "151 operations in 3 statements + BEGIN/guard/COMMIT: one round trip"
        );
    }
    // A single store is one statement, one round trip.
    ok(s.store(Note {
        id: 1,
        text: "one".into(),
    }));
    ok(s.save_changes().await);
    ok(s.store(Note {
        id: 1,
        text: "two".into(),
    }));
    let before = proxy.round_trips();
    ok(s.save_changes().await);
    assert_eq!(proxy.round_trips() - before, 1);
    assert_eq!(count(&schema, "mt_doc_account").await, 100);
}

/// A statement may write a row once, so a batch splits where an id comes again: for a
/// small batch (its ids scanned) and past the size where the batch keeps a set of them.
#[tokio::test]
async fn a_repeated_id_starts_a_new_batch_in_small_and_large_batches() {
    let (schema, b) = builder("uow_repeat");
    let store = ok(b.document::<Note>().build().await);
    for (size, repeat) in [(3_i64, 1_i64), (16, 15), (17, 16), (40, 30)] {
        let mut s = store.lightweight_session();
        for id in 0..size {
            ok(s.store(Note {
                id,
                text: format!("first {id}"),
            }));
        }
        ok(s.store(Note {
            id: repeat,
            text: "second".into(),
        }));
        ok(s.store(Note {
            id: size,
            text: "after".into(),
        }));
        ok(s.save_changes().await);
        let again: Option<Note> = ok(s.load(&repeat).await);
        assert_eq!(
            again.map(|n| n.text),
            Some("second".to_owned()),
            "size {size}"
        );
        assert_eq!(count(&schema, "mt_doc_note").await, size + 1, "size {size}");
    }
}

/// An operation whose parameters cannot be sent (a raw filter's integer where the server
/// expects text: the client refuses to encode it) is never written; the rest of the save
/// must not commit without it.
#[tokio::test]
async fn an_operation_that_cannot_be_sent_leaves_the_whole_save_unwritten() {
    let (schema, b) = builder("uow_unsendable");
    let store = ok(b.document::<Note>().build().await);
    for queue_first in [true, false] {
        let mut s = store.lightweight_session();
        let stored = Note {
            id: if queue_first { 1 } else { 2 },
            text: "must not land".into(),
        };
        if queue_first {
            ok(s.store(stored.clone()));
        }
        ok(s.delete_where::<Note>(marten::query::Filter::raw(
            "d.data ->> 'text' = $1",
            vec![marten::query::RawParam::Int(5)],
        )));
        if !queue_first {
            ok(s.store(stored.clone()));
        }
        let saved = s.save_changes().await;
        assert!(saved.is_err(), "the save cannot be sent whole: {saved:?}");
        assert_eq!(
            count(&schema, "mt_doc_note").await,
            0,
            "nothing was written"
        );
        // The session's connection is clean: its next save commits.
        ok(s.store(stored.clone()));
        ok(s.save_changes().await);
        assert_eq!(
            ok(store.lightweight_session().load::<Note>(&stored.id).await),
            Some(stored)
        );
        let mut cleanup = store.lightweight_session();
        ok(cleanup.delete_where::<Note>(marten::query::Filter::all()));
        ok(cleanup.save_changes().await);
    }
}
