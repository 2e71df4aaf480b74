//! Behind PgBouncer in transaction mode (a real one, started by the test): saves, loads, a
//! typed query, event appends and a tag boundary work with `Pooler::Transaction`. The
//! bouncer keeps two server connections and hands them out round robin, and those
//! connections never have the test's schema on their `search_path`: every statement must
//! be schema-qualified and unnamed to pass.

mod common;

use common::ok;
use marten::prelude::*;
use marten::{Pooler, RejectionKind};
use marten_testing::{PgBouncer, TestSchema};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
#[document(table = "bouncer_shops")]
struct Shop {
    id: Uuid,
    name: String,
    rating: i32,
}

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CourseId(Uuid);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Enrolled {
    #[tag]
    course_id: CourseId,
}

#[derive(Default, Debug)]
struct Count {
    n: usize,
}

#[marten::apply]
impl Count {
    fn apply(&mut self, _e: &Enrolled) {
        self.n += 1;
    }
}

async fn store_behind(bouncer: &PgBouncer, schema: &TestSchema) -> DocumentStore {
    ok(DocumentStore::builder()
        .connection_string(bouncer.url())
        .pooler(Pooler::Transaction)
        .direct_url(schema.url())
        .schema(schema.name())
        .pool_size(4)
        .document::<Shop>()
        .build()
        .await)
}

async fn raw_client(bouncer: &PgBouncer) -> tokio_postgres::Client {
    match tokio_postgres::connect(&bouncer.url(), tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) => panic!("connecting through pgbouncer: {e}"),
    }
}

/// The bouncer really moves one client's transactions between server connections (two
/// overlapping transactions first make it open both of its server connections).
async fn server_pids_seen_by_one_client(bouncer: &PgBouncer) -> Vec<String> {
    let (client, other) = (raw_client(bouncer).await, raw_client(bouncer).await);
    let hold = "BEGIN; SELECT pg_sleep(0.3); COMMIT";
    let (a, b) = tokio::join!(client.simple_query(hold), other.simple_query(hold));
    if let Err(e) = a.and(b) {
        panic!("opening the bouncer's server connections: {e}");
    }
    let mut pids = std::collections::HashSet::new();
    for _ in 0..10 {
        match client.simple_query("SELECT pg_backend_pid()").await {
            Ok(messages) => pids.extend(messages.into_iter().filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })),
            Err(e) => panic!("asking the backend pid: {e}"),
        }
    }
    pids.into_iter().collect()
}

#[tokio::test]
async fn documents_queries_events_and_tags_through_pgbouncer() {
    let bouncer = PgBouncer::start(2);
    let schema = TestSchema::new("pgbouncer");
    let store = store_behind(&bouncer, &schema).await;
    let pids = server_pids_seen_by_one_client(&bouncer).await;
    assert!(
        pids.len() > 1,
        "one client's statements all ran on server {pids:?}"
    );

    // Saves and loads, several statements per session.
    let mut s = store.lightweight_session();
    let ids: Vec<Uuid> = (0..5)
        .map(|i| {
            ok(s.store(Shop {
                id: Uuid::now_v7(),
                name: format!("shop {i}"),
                rating: i,
            }))
        })
        .collect();
    ok(s.save_changes().await);
    for (i, id) in ids.iter().enumerate() {
        let shop: Shop = ok(s.load(id).await).expect("stored");
        assert_eq!(shop.rating, i as i32);
    }
    let meta = ok(s.metadata::<Shop>(&ids[0]).await).expect("stored");
    assert_eq!(meta.version, 1);

    // A numeric version conflict is still seen and rolled back.
    let mut stale = store.lightweight_session();
    let mut old: Shop = ok(stale.load(&ids[0]).await).expect("stored");
    let mut fresh: Shop = ok(s.load(&ids[0]).await).expect("stored");
    fresh.name = "renamed".into();
    ok(s.store(fresh));
    ok(s.save_changes().await);
    old.name = "stale".into();
    ok(stale.store(old));
    assert!(matches!(
        stale.save_changes().await,
        Err(Error::Rejected(_))
    ));

    // A typed query.
    let found = ok(s
        .query::<Shop>()
        .filter(|f| f.rating.gt(1))
        .order_by(|f| f.rating.desc())
        .to_list()
        .await);
    assert_eq!(
        found.iter().map(|s| s.rating).collect::<Vec<_>>(),
        [4, 3, 2]
    );

    // Event appends and reads.
    let stream = Uuid::now_v7();
    let course = CourseId(Uuid::now_v7());
    ok(s.events()
        .start_stream(stream, [Enrolled { course_id: course }]));
    ok(s.save_changes().await);
    ok(s.events()
        .append_expected(stream, 1, [Enrolled { course_id: course }]));
    ok(s.save_changes().await);
    assert_eq!(ok(s.events().fetch_stream(stream).await).len(), 2);

    // A tag boundary: read, append through it, and a stale boundary is refused.
    let query = || TagQuery::new().tag(course);
    let mut a = store.lightweight_session();
    let mut b = store.lightweight_session();
    let mut first = ok(a.events().fetch_for_writing_by_tags::<Count>(query()).await);
    let mut second = ok(b.events().fetch_for_writing_by_tags::<Count>(query()).await);
    assert_eq!(first.state().map(|c| c.n), Some(2));
    ok(first.append([Enrolled { course_id: course }]));
    ok(a.save_changes().await);
    ok(second.append([Enrolled { course_id: course }]));
    match b.save_changes().await {
        Err(Error::Rejected(r)) => {
            assert!(
                matches!(r[0].kind, RejectionKind::DcbConcurrency { .. }),
                "{r:?}"
            )
        }
        other => panic!("expected a DCB conflict, got {other:?}"),
    }
    drop((stale, a, b)); // the pool has four connections
    let mut c = store.lightweight_session();
    let now = ok(c.events().fetch_for_writing_by_tags::<Count>(query()).await);
    assert_eq!(now.state().map(|c| c.n), Some(3));

    // Text that ends in a line comment is described and bound like any other, on every
    // use (a comment used to swallow the look at its parameter types, which then read
    // as none for good).
    for _ in 0..3 {
        let rows = ok(store
            .sql_query("SELECT $1::int AS x -- the answer", &[&7i32])
            .await);
        assert_eq!(rows[0].get::<_, i32>("x"), 7);
        let by_name = ok(c
            .query::<Shop>()
            .where_sql("d.data ->> 'name' = $1 -- by name", ("renamed".to_owned(),))
            .to_list()
            .await);
        assert_eq!(by_name.len(), 1);
    }
}

#[tokio::test]
async fn a_pooler_needs_a_direct_url() {
    let schema = TestSchema::new("pgbouncer_direct");
    let refused = DocumentStore::builder()
        .connection_string(schema.url())
        .pooler(Pooler::Transaction)
        .schema(schema.name())
        .build()
        .await;
    assert!(
        matches!(&refused, Err(Error::Configuration(m)) if m.contains("direct_url")),
        "{:?}",
        refused.err()
    );
}

/// Behind a pooler, a statement's parameter types are asked for in one simple query
/// (`PREPARE` of the text, a look, `DEALLOCATE`), which runs every statement the server
/// finds in the text. Text the server splits in two is refused with a typed error and
/// none of it runs, however its literals, names and comments hide the `;` from a scan
/// that reads them differently than the server does (a backslash in a plain literal
/// escapes nothing; an `E'...'` literal continues after a line break; `$` continues a
/// name; comments nest; a carriage return ends a line comment).
#[tokio::test]
async fn text_of_two_statements_is_refused_before_any_of_it_runs_behind_pgbouncer() {
    let bouncer = PgBouncer::start(2);
    let schema = TestSchema::new("pgbouncer_split");
    let store = store_behind(&bouncer, &schema).await;
    let direct = schema.raw_client().await;
    let canary = format!("{}.canary", schema.name());
    if let Err(e) = direct
        .batch_execute(&format!(
            "CREATE TABLE {canary} (id int); INSERT INTO {canary} VALUES (1)"
        ))
        .await
    {
        panic!("creating {canary}: {e}");
    }
    let delete = format!("DELETE FROM {canary}");
    for sql in [
        format!("SELECT 'a\\'; {delete}; --'"),
        format!("SELECT E'a'\n'\\''; {delete}; --'"),
        format!("SELECT 1 AS a$x$; {delete}; SELECT 2 AS b$x$"),
        format!("SELECT 1 /* /* */ ' */; {delete}; --'"),
        format!("SELECT 1 -- note\r; {delete}"),
    ] {
        let result = store.sql_query(&sql, &[]).await;
        let rows = match direct
            .query_one(&format!("SELECT count(*) FROM {canary}"), &[])
            .await
        {
            Ok(row) => row.get::<_, i64>(0),
            Err(e) => panic!("counting {canary}: {e}"),
        };
        assert_eq!(rows, 1, "the DELETE in {sql:?} ran");
        match result {
            Err(e @ Error::Database(_)) => assert_eq!(e.sqlstate(), Some("42601"), "{sql:?}: {e}"),
            other => panic!("{sql:?}: expected a syntax error, got {other:?}"),
        }
    }
    // The store goes on working through the bouncer.
    let rows = ok(store.sql_query("SELECT 'a\\' AS x", &[]).await);
    assert_eq!(rows[0].get::<_, String>("x"), "a\\");
    store.close();
}
