//! Full-text search (`#[document(full_text)]`): `search` (stemmed words), `phrase_search`
//! and `web_search` over every string value of a document, nested ones included; combined
//! with typed filters, paging and counts; `order_by_rank`; a conjoined type's tenants searching only their
//! own rows; the `_fts` index serving the search; the schema check clean after a second
//! build.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::PatchOptions;
use serde::{Deserialize, Serialize};

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Author {
    name: String,
    bio: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(full_text)]
struct Post {
    id: i64,
    title: String,
    body: String,
    #[query(nested)]
    author: Author,
    stars: i32,
}

/// The `simple` configuration (no stemming, no stop words), in a conjoined table.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(full_text = "simple", tenancy = "conjoined")]
struct Memo {
    id: i64,
    text: String,
}

fn post(id: i64, title: &str, body: &str, author: &str, stars: i32) -> Post {
    Post {
        id,
        title: title.into(),
        body: body.into(),
        author: Author {
            name: author.into(),
            bio: format!("{author} writes about things"),
        },
        stars,
    }
}

fn ids(posts: &[Post]) -> Vec<i64> {
    let mut ids: Vec<i64> = posts.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    ids
}

async fn seeded(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Post>().build().await);
    let mut s = store.lightweight_session();
    for p in [
        post(1, "Morning run", "I run by the river", "Ada", 5),
        post(2, "Brewing coffee", "A guide to pour over", "Grace", 3),
        post(
            3,
            "Running shoes",
            "Shoes for the long run in the hills",
            "Linus",
            4,
        ),
        post(4, "Quiet evening", "Tea and a book", "Ada Lovelace", 2),
        post(5, "River walk", "The run along the quiet river", "Grace", 1),
    ] {
        ok(s.store(p));
    }
    ok(s.save_changes().await);
    (schema, store)
}

#[tokio::test]
async fn search_matches_words_in_any_string_field_nested_ones_included() {
    let (_schema, store) = seeded("fts_fields").await;
    let mut s = store.query_session();
    let found = |q: Vec<Post>| ids(&q);
    // A title, a body, a nested author's name and bio.
    assert_eq!(
        found(ok(s.query::<Post>().search("coffee").to_list().await)),
        [2]
    );
    assert_eq!(
        found(ok(s.query::<Post>().search("book").to_list().await)),
        [4]
    );
    assert_eq!(
        found(ok(s.query::<Post>().search("lovelace").to_list().await)),
        [4]
    );
    assert_eq!(
        found(ok(s.query::<Post>().search("linus writes").to_list().await)),
        [3]
    );
    // Every word must match, in any field.
    assert_eq!(
        found(ok(s.query::<Post>().search("ada tea").to_list().await)),
        [4]
    );
    assert!(ok(s.query::<Post>().search("coffee tea").to_list().await).is_empty());
    assert!(ok(s.query::<Post>().search("volcano").to_list().await).is_empty());
    // Keys are not text: no document matches the name of a field.
    assert!(ok(s.query::<Post>().search("title").to_list().await).is_empty());
    // Stemming: "running" finds "run" and "runs" alike; case does not matter.
    assert_eq!(
        found(ok(s.query::<Post>().search("RUNNING").to_list().await)),
        [1, 3, 5]
    );
    // Text with nothing to search (stop words only) matches nothing, without an error.
    assert!(ok(s.query::<Post>().search("the and").to_list().await).is_empty());
    // A NUL character is refused before anything is sent.
    match s.query::<Post>().search("a\0b").to_list().await {
        Err(Error::InvalidQuery(_)) => {}
        other => panic!("expected InvalidQuery, got {other:?}"),
    }
}

#[tokio::test]
async fn phrase_and_web_searches_read_their_text_their_own_way() {
    let (_schema, store) = seeded("fts_kinds").await;
    let mut s = store.query_session();
    // The plain search finds both words anywhere, the phrase only next to each other.
    assert_eq!(
        ids(&ok(s.query::<Post>().search("river run").to_list().await)),
        [1, 5]
    );
    assert_eq!(
        ids(&ok(s
            .query::<Post>()
            .phrase_search("run by the river")
            .to_list()
            .await)),
        [1]
    );
    assert!(ok(s.query::<Post>().phrase_search("river run").to_list().await).is_empty());
    // Web syntax: exclusion, `or`, quoted phrases.
    assert_eq!(
        ids(&ok(s
            .query::<Post>()
            .web_search("run -river")
            .to_list()
            .await)),
        [3]
    );
    assert_eq!(
        ids(&ok(s
            .query::<Post>()
            .web_search("coffee or tea")
            .to_list()
            .await)),
        [2, 4]
    );
    assert_eq!(
        ids(&ok(s
            .query::<Post>()
            .web_search("\"long run\"")
            .to_list()
            .await)),
        [3]
    );
    // Any text is valid web search syntax.
    assert!(ok(s.query::<Post>().web_search("\"unclosed -").to_list().await).is_empty());
}

#[tokio::test]
async fn searches_combine_with_filters_order_paging_and_counts() {
    let (_schema, store) = seeded("fts_combined").await;
    let mut s = store.query_session();
    let found = ok(s
        .query::<Post>()
        .search("run")
        .filter(|f| f.stars.ge(4))
        .order_by(|f| f.stars.asc())
        .to_list()
        .await);
    assert_eq!(found.iter().map(|p| p.id).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(
        ok(s.query::<Post>()
            .search("run")
            .filter(|f| f.author.name.eq("Grace"))
            .count()
            .await),
        1
    );
    // Two searches both apply.
    assert_eq!(
        ids(&ok(s
            .query::<Post>()
            .search("river")
            .web_search("-quiet")
            .to_list()
            .await)),
        [1]
    );
    let page = ok(s
        .query::<Post>()
        .search("run")
        .order_by(|f| f.stars.desc())
        .to_page(1, 2)
        .await);
    assert_eq!(page.total, 3);
    assert_eq!(page.items.iter().map(|p| p.id).collect::<Vec<_>>(), [5]);
    assert!(ok(s.query::<Post>().search("run").exists().await));
}

#[tokio::test]
async fn order_by_rank_puts_the_most_relevant_matches_first() {
    let (_schema, store) = seeded("fts_rank").await;
    let mut s = store.query_session();
    let order = |posts: Vec<Post>| posts.iter().map(|p| p.id).collect::<Vec<_>>();
    // Post 5 names the river twice (title and body), post 1 once.
    assert_eq!(
        order(ok(s.query::<Post>().search("river").to_list().await)),
        [1, 5]
    );
    assert_eq!(
        order(ok(s
            .query::<Post>()
            .search("river")
            .order_by_rank()
            .to_list()
            .await)),
        [5, 1]
    );
    // With a typed filter, paging (the total in the same statement) and a second search.
    let page = ok(s
        .query::<Post>()
        .order_by_rank()
        .web_search("river or coffee")
        .filter(|f| f.stars.le(4))
        .to_page(0, 1)
        .await);
    assert_eq!((page.total, order(page.items)), (2, vec![5]));
    let sql = s
        .query::<Post>()
        .search("river")
        .order_by_rank()
        .take(3)
        .to_sql();
    assert!(
        sql.contains("ORDER BY ts_rank(to_tsvector('english'::regconfig, d.data), plainto_tsquery('english'::regconfig, $2)) DESC, d.id ASC LIMIT $3"),
        "{sql}"
    );
    // Without a search there is nothing to rank by: the order is the id's.
    assert_eq!(
        order(ok(s
            .query::<Post>()
            .order_by_rank()
            .take(2)
            .to_list()
            .await)),
        [1, 2]
    );
}

#[tokio::test]
async fn a_conjoined_types_tenants_search_only_their_own_documents() {
    let (_schema, b) = builder("fts_tenants");
    let store = ok(b.document::<Memo>().build().await);
    for (tenant, text) in [("red", "apples and pears"), ("blue", "pears and plums")] {
        let mut s = ok(store.lightweight_session_for(tenant));
        ok(s.store(Memo {
            id: 1,
            text: text.into(),
        }));
        ok(s.save_changes().await);
    }
    let mut red = ok(store.query_session_for("red"));
    let mut blue = ok(store.query_session_for("blue"));
    let texts = |m: Vec<Memo>| m.into_iter().map(|m| m.text).collect::<Vec<_>>();
    assert_eq!(
        texts(ok(red.query::<Memo>().search("pears").to_list().await)),
        ["apples and pears"]
    );
    assert_eq!(
        texts(ok(blue.query::<Memo>().search("pears").to_list().await)),
        ["pears and plums"]
    );
    assert!(ok(red.query::<Memo>().search("plums").to_list().await).is_empty());
    assert_eq!(
        ok(blue.query::<Memo>().web_search("plums").count().await),
        1
    );
    // The `simple` configuration does not stem: "pear" is not "pears".
    assert!(ok(red.query::<Memo>().search("pear").to_list().await).is_empty());
    let sql = red.query::<Memo>().search("pears").to_sql();
    assert!(
        sql.contains("d.tenant_id = $1 AND CASE WHEN d.tenant_id = $1 THEN true ELSE false END AND ((to_tsvector('simple'::regconfig, d.data) @@ plainto_tsquery('simple'::regconfig, $2)))"),
        "{sql}"
    );
    let mut none = store.query_session();
    match none.query::<Memo>().search("pears").to_list().await {
        Err(Error::TenantRequired { owner }) => assert_eq!(owner, "Memo"),
        other => panic!("expected TenantRequired, got {other:?}"),
    }
}

#[tokio::test]
async fn the_full_text_index_serves_searches() {
    let (schema, b) = builder("fts_explain");
    let store = ok(b.document::<Post>().build().await);
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "INSERT INTO mt_doc_post (id, data) SELECT i, jsonb_build_object('id', i, \
         'title', 'post ' || i, 'body', CASE WHEN i % 1000 = 0 THEN 'zebras running' \
         ELSE 'plain words number ' || i END, 'author', jsonb_build_object('name', 'n' || i, \
         'bio', 'b'), 'stars', i % 5) FROM generate_series(1, 20000) AS i; ANALYZE mt_doc_post",
    )
    .await
    .expect("seed 20,000 rows");
    let mut s = store.query_session();
    assert_eq!(ok(s.query::<Post>().search("zebra run").count().await), 20);
    for sql in [
        s.query::<Post>().search("zebra").to_sql(),
        s.query::<Post>().phrase_search("zebras running").to_sql(),
        s.query::<Post>().web_search("zebra -horse").to_sql(),
    ] {
        let explain: Vec<String> = raw
            .query(&format!("EXPLAIN {}", sql.replace("$1", "'zebra'")), &[])
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            explain.iter().any(|l| l.contains("mt_doc_post_fts")),
            "the search uses the full-text index: {sql}\n{explain:#?}"
        );
    }
}

#[tokio::test]
async fn a_second_build_finds_the_full_text_index_unchanged() {
    let (schema, b) = builder("fts_schema");
    ok(b.document::<Post>().document::<Memo>().build().await);
    let raw = schema.raw_client().await;
    let defs: Vec<String> = raw
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE '%_fts' ORDER BY 1",
            &[&schema.name()],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(defs.len(), 2, "{defs:#?}");
    assert!(defs[0].contains("USING gin (to_tsvector('simple'::regconfig, data))"));
    assert!(defs[1].contains("USING gin (to_tsvector('english'::regconfig, data))"));
    let again = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .document::<Post>()
        .document::<Memo>()
        .build()
        .await);
    let patch = ok(again.schema_patch(PatchOptions::new()).await);
    assert!(patch.is_empty(), "{patch}");
    ok(again.assert_schema().await);
    // The schema script creates the index too.
    assert!(again
        .schema_sql()
        .contains("CREATE INDEX IF NOT EXISTS mt_doc_post_fts ON"));
}
