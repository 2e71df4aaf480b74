//! Database names: two document types that would share a table (or an index or column
//! name PostgreSQL cuts to the same 63 bytes) are refused with a typed error naming both
//! types, at `build` or at the second type's first use, instead of one reading the
//! other's rows. SQL reserved words as type and field names work, and the two lists of
//! reserved words (the derive's, marten-pg's) are the server's.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

mod a {
    use super::*;
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Order {
        pub id: Uuid,
        pub total: i64,
    }
}

mod b {
    use super::*;
    /// Another `Order`, with a different shape: it cannot read `a::Order`'s rows.
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Order {
        pub id: Uuid,
        pub lines: Vec<String>,
    }
}

#[track_caller]
fn assert_conflict(err: &marten::Error, first: &str, second: &str, name: &str) {
    match err {
        marten::Error::NameConflict {
            first: f,
            second: s,
            name: n,
        } => {
            assert!(f.ends_with(first), "first {f}, expected {first}");
            assert!(s.ends_with(second), "second {s}, expected {second}");
            assert_eq!(n, name);
        }
        other => panic!("wrong error: {other} ({other:?})"),
    }
    let shown = err.to_string();
    assert!(
        shown.contains(first) && shown.contains(second) && shown.contains(name),
        "{shown}"
    );
}

#[tokio::test]
async fn two_types_with_one_table_are_refused_at_build() {
    let (_schema, b) = builder("names_build");
    let err = b
        .document::<a::Order>()
        .document::<b::Order>()
        .build()
        .await
        .expect_err("two types on mt_doc_order");
    assert_conflict(&err, "names::a::Order", "names::b::Order", "mt_doc_order");
}

#[tokio::test]
async fn a_second_type_used_after_build_is_refused_and_reads_nothing() {
    let (_schema, b) = builder("names_first_use");
    let store = ok(b.document::<a::Order>().build().await);
    let mut s = store.lightweight_session();
    let order = a::Order {
        id: Uuid::now_v7(),
        total: 12,
    };
    ok(s.store(order.clone()));
    ok(s.save_changes().await);

    // Loads, queries and saves of the other type all fail the same way.
    let err = s.load::<b::Order>(&order.id).await.expect_err("load");
    assert_conflict(&err, "names::a::Order", "names::b::Order", "mt_doc_order");
    let err = s.query::<b::Order>().to_list().await.expect_err("query");
    assert_conflict(&err, "names::a::Order", "names::b::Order", "mt_doc_order");
    ok(s.store(b::Order {
        id: order.id,
        lines: vec!["x".into()],
    }));
    let err = s.save_changes().await.expect_err("save");
    assert_conflict(&err, "names::a::Order", "names::b::Order", "mt_doc_order");

    // The first type's row is untouched.
    let mut s = store.lightweight_session();
    assert_eq!(ok(s.load::<a::Order>(&order.id).await), Some(order));
}

#[tokio::test]
async fn with_no_registration_the_first_type_used_keeps_the_table() {
    let (_schema, b) = builder("names_unregistered");
    let store = ok(b.build().await);
    let mut s = store.lightweight_session();
    let id = Uuid::now_v7();
    ok(s.store(b::Order { id, lines: vec![] }));
    ok(s.save_changes().await);
    let err = s.load::<a::Order>(&id).await.expect_err("taken");
    assert_conflict(&err, "names::b::Order", "names::a::Order", "mt_doc_order");
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct CustomerLoyaltyProgrammeMembershipRenewalReminderNoticeFirst {
    id: Uuid,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct CustomerLoyaltyProgrammeMembershipRenewalReminderNoticeFinal {
    id: Uuid,
}

#[tokio::test]
async fn table_names_postgres_cuts_to_the_same_63_bytes_conflict() {
    let (_schema, b) = builder("names_long");
    let err = b
        .document::<CustomerLoyaltyProgrammeMembershipRenewalReminderNoticeFirst>()
        .document::<CustomerLoyaltyProgrammeMembershipRenewalReminderNoticeFinal>()
        .build()
        .await
        .expect_err("same table after truncation");
    let cut = &"mt_doc_customerloyaltyprogrammemembershiprenewalremindernoticefirst"[..63];
    assert_conflict(
        &err,
        "CustomerLoyaltyProgrammeMembershipRenewalReminderNoticeFirst",
        "CustomerLoyaltyProgrammeMembershipRenewalReminderNoticeFinal",
        cut,
    );
}

/// Two indexed fields whose index names are cut to the same 63 bytes: the second index
/// would silently not be created (`CREATE INDEX IF NOT EXISTS`).
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(table = "loyalty_programme_membership_renewals")]
struct Renewal {
    id: Uuid,
    #[document(index)]
    customer_reference_number_primary: String,
    #[document(index)]
    customer_reference_number_secondary: String,
}

/// A table of its own whose index name is cut to `Renewal`'s first index name.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(table = "loyalty_programme_membership_renewals_idx_customer_reference_nu")]
struct Squatter {
    id: Uuid,
}

#[tokio::test]
async fn index_names_postgres_cuts_to_the_same_63_bytes_conflict() {
    let (_schema, b) = builder("names_index");
    let err = b
        .document::<Renewal>()
        .build()
        .await
        .expect_err("own indexes");
    let cut = "loyalty_programme_membership_renewals_idx_customer_reference_nu";
    assert_eq!(cut.len(), 63);
    assert_conflict(&err, "names::Renewal", "names::Renewal", cut);

    let (_schema, b) = builder("names_index2");
    let err = b
        .document::<Squatter>()
        .document::<Renewal>()
        .build()
        .await
        .expect_err("a table on an index name");
    assert!(matches!(err, marten::Error::NameConflict { .. }), "{err:?}");
}

/// A document on one of marten's own tables.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(table = "mt_events")]
struct Squatting {
    id: Uuid,
}

#[tokio::test]
async fn marten_tables_are_not_for_documents() {
    let (_schema, b) = builder("names_internal");
    let err = b
        .document::<Squatting>()
        .build()
        .await
        .expect_err("mt_events");
    match &err {
        marten::Error::NameConflict { second, name, .. } => {
            assert_eq!((*second, name.as_str()), ("names::Squatting", "mt_events"));
        }
        other => panic!("wrong error {other}"),
    }
}

mod reserved {
    use super::*;
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct User {
        pub id: Uuid,
        #[document(index)]
        pub order: i64,
        #[document(unique)]
        pub select: String,
        pub table: String,
        #[document(index)]
        pub r#type: String,
    }
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Order {
        pub id: i64,
        pub group: String,
    }
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Select {
        pub id: String,
    }
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Table {
        pub id: Uuid,
    }
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Group {
        pub id: i32,
    }
}

#[tokio::test]
async fn reserved_words_as_type_and_field_names_work() {
    use reserved::*;
    let (_schema, b) = builder("names_reserved");
    let store = ok(b
        .document::<User>()
        .document::<Order>()
        .document::<Select>()
        .build()
        .await);
    let mut s = store.lightweight_session();
    let user = User {
        id: Uuid::now_v7(),
        order: 3,
        select: "s".into(),
        table: "t".into(),
        r#type: "admin".into(),
    };
    ok(s.store(user.clone()));
    ok(s.store(Order {
        id: 1,
        group: "g".into(),
    }));
    ok(s.store(Select { id: "x".into() }));
    ok(s.store(Table { id: Uuid::now_v7() }));
    ok(s.store(Group { id: 7 }));
    ok(s.save_changes().await);

    assert_eq!(ok(s.load::<User>(&user.id).await), Some(user.clone()));
    let found = ok(s
        .query::<User>()
        .filter(|f| f.order.ge(3).and(f.r#type.eq("admin")).and(f.table.eq("t")))
        .order_by(|f| f.select.asc())
        .to_list()
        .await);
    assert_eq!(found, vec![user]);
    let page = ok(s
        .query::<Order>()
        .filter(|f| f.group.eq("g"))
        .to_page(0, 10)
        .await);
    assert_eq!(page.total, 1);
    assert_eq!(ok(s.query::<Select>().count().await), 1);
    assert_eq!(ok(s.query::<Table>().count().await), 1);
    assert_eq!(ok(s.load::<Group>(&7).await), Some(Group { id: 7 }));
    ok(s.delete::<Group>(&7));
    ok(s.save_changes().await);
    assert_eq!(ok(s.query::<Group>().count().await), 0);
}

/// The `RESERVED_WORDS` list of one of marten's source files, in order.
fn reserved_words_of(path: &str) -> Vec<String> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => panic!("cannot read {}: {e}", file.display()),
    };
    let Some(start) = text.find("const RESERVED_WORDS: &[&str] = &[") else {
        panic!("no RESERVED_WORDS in {path}");
    };
    let list = &text[start..];
    let end = list.find("];").unwrap_or(list.len());
    list[..end]
        .lines()
        .skip(1)
        .map(|l| l.trim().trim_end_matches(',').trim_matches('"').to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The derive (table names) and marten-pg (schema names) each keep PostgreSQL's reserved
/// words (a proc-macro crate cannot share marten-pg's): the two lists are the same, and
/// they hold every word the server reserves (`pg_get_keywords()` categories `R` and `T`).
#[tokio::test]
async fn both_reserved_word_lists_are_the_servers() {
    let derive = reserved_words_of("marten-derive/src/internals/check.rs");
    let pg = reserved_words_of("marten-pg/src/validate.rs");
    assert_eq!(derive, pg, "the derive's and marten-pg's lists differ");
    let (_schema, b) = builder("reserved_words");
    let store = ok(b.build().await);
    let rows = ok(store
        .sql_query(
            "SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T') ORDER BY word",
            &[],
        )
        .await);
    let server: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let missing: Vec<&String> = server.iter().filter(|w| !pg.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "reserved by the server, not in the lists: {missing:?}"
    );
    assert!(
        server.len() >= 90,
        "only {} reserved words from the server",
        server.len()
    );
    store.close();
}
