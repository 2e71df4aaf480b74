//! Schema a DBA can review (issue #14): `schema_sql()` creates exactly what the store
//! checks, `schema_patch` finds missing columns, missing indexes and changed index kinds
//! and its SQL fixes them (also `CONCURRENTLY`, outside a transaction), `assert_schema`
//! lists every difference, `build` creates the event and daemon tables up front.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::{PatchOptions, SchemaDifference};
use serde::{Deserialize, Serialize};

mod v1 {
    use super::*;
    #[derive(Document, Serialize, Deserialize, Clone, Debug)]
    #[document(table = "mt_doc_member")]
    pub struct Member {
        pub id: Uuid,
        #[document(index)]
        pub email: String,
        pub age: i64,
    }
}

mod v2 {
    use super::*;
    /// The same table: `email` made unique, `age` indexed, a GIN index, numeric
    /// revisions.
    #[derive(Document, Serialize, Deserialize, Clone, Debug)]
    #[document(table = "mt_doc_member")]
    #[document(gin)]
    #[concurrency(numeric)]
    pub struct Member {
        pub id: Uuid,
        #[document(unique)]
        pub email: String,
        #[document(index)]
        pub age: i64,
    }
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct Invoice {
    id: String,
    #[document(index)]
    amount: i64,
}

/// A store that touches nothing at build, to review the schema.
async fn reviewer(schema: &marten_testing::TestSchema) -> DocumentStore {
    ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .auto_create(AutoCreate::None)
        .apply_schema_at_build(false)
        .document::<v2::Member>()
        .document::<Invoice>()
        .build()
        .await)
}

/// The first column of `sql`'s rows; `$1` is the schema, `$2` is `table`.
async fn names(schema: &marten_testing::TestSchema, sql: &str, table: &str) -> Vec<String> {
    let raw = schema.raw_client().await;
    let rows = raw.query(sql, &[&schema.name(), &table]).await;
    rows.expect("names").iter().map(|r| r.get(0)).collect()
}

async fn index_names(schema: &marten_testing::TestSchema, table: &str) -> Vec<String> {
    let sql = "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY 1";
    names(schema, sql, table).await
}

async fn tables(schema: &marten_testing::TestSchema) -> Vec<String> {
    let sql = "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 AND $2 <> '' ORDER BY 1";
    names(schema, sql, "any").await
}

/// Builds v1's table (with its plain index on `email`) and one row.
async fn create_v1(schema: &marten_testing::TestSchema) {
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .document::<v1::Member>()
        .build()
        .await);
    let mut s = store.lightweight_session();
    ok(s.store(v1::Member {
        id: Uuid::now_v7(),
        email: "a@example.com".into(),
        age: 40,
    }));
    ok(s.save_changes().await);
}

#[tokio::test]
async fn schema_sql_on_an_empty_schema_leaves_no_difference() {
    let schema = marten_testing::TestSchema::new("schema_sql_empty");
    let store = reviewer(&schema).await;
    assert!(tables(&schema).await.is_empty(), "build created nothing");
    let err = store.assert_schema().await.expect_err("nothing exists");
    match &err {
        marten::Error::SchemaMismatch { differences } => {
            assert_eq!(
                differences.first(),
                Some(&SchemaDifference::MissingSchema {
                    schema: schema.name().to_owned()
                })
            );
            for table in [
                "mt_events",
                "mt_event_progression",
                "mt_doc_member",
                "mt_doc_invoice",
            ] {
                let missing = SchemaDifference::MissingTable {
                    table: format!("{}.{table}", schema.name()),
                };
                assert!(differences.contains(&missing), "{table}: {err}");
            }
        }
        other => panic!("wrong error {other}"),
    }
    let sql = store.schema_sql();
    for expected in [
        "CREATE SCHEMA IF NOT EXISTS",
        "CREATE OR REPLACE FUNCTION",
        "CREATE SEQUENCE IF NOT EXISTS",
        "tx_id xid8",
        "mt_dead_letters",
        "mt_tag_versions",
        "CREATE UNIQUE INDEX IF NOT EXISTS mt_doc_member_uidx_email",
        "USING gin (data jsonb_path_ops)",
        "mt_version uuid NOT NULL",
    ] {
        assert!(sql.contains(expected), "{expected} in:\n{sql}");
    }
    let raw = schema.raw_client().await;
    raw.batch_execute(&sql).await.expect("the script runs");
    ok(store.assert_schema().await);
    let patch = ok(store.schema_patch(PatchOptions::new()).await);
    assert!(patch.is_empty(), "{patch}");
    // Idempotent: a second run changes nothing and fails on nothing.
    raw.batch_execute(&sql)
        .await
        .expect("the script runs again");
    ok(store.assert_schema().await);
}

#[tokio::test]
async fn a_patch_names_each_difference_and_its_sql_fixes_them() {
    let schema = marten_testing::TestSchema::new("schema_sql_patch");
    create_v1(&schema).await;
    let store = reviewer(&schema).await;
    let patch = ok(store.schema_patch(PatchOptions::new()).await);
    let s = schema.name();
    let table = format!("{s}.mt_doc_member");
    let member: Vec<&SchemaDifference> = patch
        .differences()
        .filter(|d| d.object().starts_with(&format!("{s}.mt_doc_member")))
        .collect();
    assert_eq!(
        member,
        [
            &SchemaDifference::MissingColumn {
                table: table.clone(),
                column: "mt_revision".into(),
                expected: "bigint".into(),
            },
            &SchemaDifference::MissingColumn {
                table: table.clone(),
                column: "mt_f_age".into(),
                expected: "bigint".into(),
            },
            &SchemaDifference::IndexChanged {
                table: table.clone(),
                index: format!("{s}.mt_doc_member_uidx_email"),
                expected: "UNIQUE btree (mt_f_email)".into(),
                found_index: format!("{s}.mt_doc_member_idx_email"),
                found: "btree (mt_f_email)".into(),
            },
            &SchemaDifference::MissingIndex {
                table: table.clone(),
                index: format!("{s}.mt_doc_member_idx_age"),
                expected: "btree (mt_f_age)".into(),
            },
            &SchemaDifference::MissingIndex {
                table: table.clone(),
                index: format!("{s}.mt_doc_member_gin"),
                expected: "gin (data jsonb_path_ops)".into(),
            },
        ]
    );
    // The event and daemon tables were created by v1's build, the invoice table not.
    let others: Vec<String> = patch
        .differences()
        .filter(|d| !d.object().starts_with(&format!("{s}.mt_doc_member")))
        .map(SchemaDifference::object)
        .collect();
    assert_eq!(others, [format!("{s}.mt_doc_invoice")]);

    let err = store.assert_schema().await.expect_err("differs");
    match &err {
        marten::Error::SchemaMismatch { differences } => {
            assert_eq!(differences.len(), 6, "{err}");
            let message = err.to_string();
            assert!(
                message.contains("expected UNIQUE btree (mt_f_email), found btree (mt_f_email)"),
                "{message}"
            );
            assert!(
                message.contains("mt_doc_member.mt_revision (bigint) is missing"),
                "{message}"
            );
        }
        other => panic!("wrong error {other}"),
    }

    let sql = patch.to_sql();
    assert!(sql.starts_with("-- marten schema patch"), "{sql}");
    assert!(sql.contains("BEGIN;") && sql.contains("COMMIT;"), "{sql}");
    schema
        .raw_client()
        .await
        .batch_execute(&sql)
        .await
        .expect("the patch runs");
    ok(store.assert_schema().await);
    assert_eq!(
        index_names(&schema, "mt_doc_member").await,
        [
            "mt_doc_member_gin",
            "mt_doc_member_idx_age",
            "mt_doc_member_pkey",
            "mt_doc_member_uidx_email"
        ]
    );
    // The row survived, with revision 1 and its age in the new column.
    let row = schema
        .raw_client()
        .await
        .query_one("SELECT mt_revision, mt_f_age FROM mt_doc_member", &[])
        .await
        .expect("row");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 40));
}

#[tokio::test]
async fn a_concurrent_patch_builds_indexes_outside_a_transaction() {
    let schema = marten_testing::TestSchema::new("schema_sql_concurrent");
    create_v1(&schema).await;
    let store = reviewer(&schema).await;
    let patch = ok(store
        .schema_patch(PatchOptions::new().concurrently(true))
        .await);
    assert!(patch.is_concurrent());
    let sql = patch.to_sql();
    assert!(!sql.contains("BEGIN;"), "{sql}");
    let statements: Vec<&str> = patch.statements().collect();
    for expected in [
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS mt_doc_member_uidx_email",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS mt_doc_member_gin",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS mt_doc_member_idx_age",
        "DROP INDEX CONCURRENTLY IF EXISTS",
    ] {
        assert!(
            statements.iter().any(|s| s.starts_with(expected)),
            "{expected} in {statements:#?}"
        );
    }
    // Inside a transaction they fail; each on its own, they run.
    let raw = schema.raw_client().await;
    let concurrent = statements
        .iter()
        .find(|s| s.contains("CONCURRENTLY"))
        .expect("a concurrent statement");
    let inside = format!("BEGIN; {concurrent}; COMMIT");
    assert!(raw.batch_execute(&inside).await.is_err());
    raw.batch_execute("ROLLBACK").await.expect("rollback");
    for statement in &statements {
        raw.batch_execute(statement).await.expect(statement);
    }
    ok(store.assert_schema().await);
}

#[tokio::test]
async fn apply_schema_patch_fixes_what_it_lists() {
    let schema = marten_testing::TestSchema::new("schema_sql_apply");
    create_v1(&schema).await;
    let store = reviewer(&schema).await;
    for options in [PatchOptions::new(), PatchOptions::new().concurrently(true)] {
        let patch = ok(store.schema_patch(options).await);
        ok(store.apply_schema_patch(&patch).await);
        ok(store.assert_schema().await);
        // Drop an index behind the store's back for the second round.
        schema
            .raw_client()
            .await
            .batch_execute("DROP INDEX mt_doc_member_gin")
            .await
            .expect("drop");
    }
}

#[tokio::test]
async fn build_creates_indexes_added_to_a_type_later() {
    let (schema, b) = builder("schema_sql_ensure");
    create_v1(&schema).await;
    assert_eq!(
        index_names(&schema, "mt_doc_member").await,
        ["mt_doc_member_idx_email", "mt_doc_member_pkey"]
    );
    let store = ok(b.document::<v2::Member>().build().await);
    assert_eq!(
        index_names(&schema, "mt_doc_member").await,
        [
            "mt_doc_member_gin",
            "mt_doc_member_idx_age",
            "mt_doc_member_pkey",
            "mt_doc_member_uidx_email"
        ]
    );
    let patch = ok(store.schema_patch(PatchOptions::new()).await);
    assert!(patch.is_empty(), "{patch}");
}

#[tokio::test]
async fn build_creates_the_event_tag_and_daemon_tables_up_front() {
    let (schema, b) = builder("schema_sql_build");
    let store = ok(b.build().await);
    assert_eq!(
        tables(&schema).await,
        [
            "mt_dead_letters",
            "mt_event_progression",
            "mt_event_tags",
            "mt_events",
            "mt_hilo",
            "mt_streams",
            "mt_tag_versions"
        ]
    );
    // Nothing appended yet, and the store's whole schema is there.
    ok(store.assert_schema().await);
}

#[tokio::test]
async fn the_command_line_checks_and_applies_the_patch() {
    use marten::cli::{Command, SchemaCommand};
    let schema = marten_testing::TestSchema::new("schema_sql_cli");
    create_v1(&schema).await;
    let store = reviewer(&schema).await;
    let assert = Command::Schema(SchemaCommand::Assert);
    let err = marten::cli::execute(&store, &assert)
        .await
        .expect_err("behind");
    assert!(
        matches!(
            err,
            marten::cli::CliError::Store(marten::Error::SchemaMismatch { .. })
        ),
        "{err}"
    );
    let patch = SchemaCommand::Patch {
        out: None,
        concurrently: false,
    };
    marten::cli::schema(&store, &patch).await.expect("patch");
    let apply = SchemaCommand::Apply { concurrently: true };
    marten::cli::schema(&store, &apply).await.expect("apply");
    marten::cli::execute(&store, &assert)
        .await
        .expect("up to date");
}

#[tokio::test]
async fn create_only_adds_missing_indexes_and_none_only_reports_them() {
    let schema = marten_testing::TestSchema::new("schema_sql_modes");
    create_v1(&schema).await;
    // v1 again, its index dropped behind the store's back.
    schema
        .raw_client()
        .await
        .batch_execute("DROP INDEX mt_doc_member_idx_email")
        .await
        .expect("drop");
    let store = |mode| {
        DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .auto_create(mode)
            .document::<v1::Member>()
    };
    let none = ok(store(AutoCreate::None).build().await);
    let err = none.assert_schema().await.expect_err("index missing");
    assert!(err.to_string().contains("mt_doc_member_idx_email"), "{err}");
    assert_eq!(
        index_names(&schema, "mt_doc_member").await,
        ["mt_doc_member_pkey"]
    );
    let create_only = ok(store(AutoCreate::CreateOnly).build().await);
    ok(create_only.assert_schema().await);
    assert_eq!(
        index_names(&schema, "mt_doc_member").await,
        ["mt_doc_member_idx_email", "mt_doc_member_pkey"]
    );
}
