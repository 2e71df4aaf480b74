//! Query input at its edges: paging arithmetic that overflows, pages past the end, huge
//! skips and takes, stored values of the wrong JSON type, text order on indexed and
//! unindexed fields, and raw SQL whose `$` signs are not all placeholders. None panics,
//! none fails the query for a row's sake, none answers wrongly.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::query::{Filter, RawParam};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Item {
    id: i64,
    name: String,
    /// The same text as `name`, with a column index.
    #[document(index)]
    label: String,
    rank: i64,
    active: bool,
    weight: f64,
}

fn item(id: i64, name: &str) -> Item {
    Item {
        id,
        name: name.into(),
        label: name.into(),
        rank: id,
        active: id % 2 == 0,
        weight: id as f64 / 2.0,
    }
}

async fn seeded(label: &str, names: &[&str]) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Item>().build().await);
    let mut s = store.lightweight_session();
    for (i, n) in names.iter().enumerate() {
        ok(s.store(item(i as i64 + 1, n)));
    }
    ok(s.save_changes().await);
    (schema, store)
}

fn ids(items: &[Item]) -> Vec<i64> {
    items.iter().map(|i| i.id).collect()
}

#[tokio::test]
async fn pages_past_the_end_and_overflowing_paging_are_empty_with_the_total() {
    let (_schema, store) = seeded("edges_paging", &["a", "b", "c", "d", "e"]).await;
    let mut s = store.query_session();
    let page = ok(s
        .query::<Item>()
        .order_by(|f| f.rank.asc())
        .to_page(2, 2)
        .await);
    assert_eq!((ids(&page.items), page.total), (vec![5], 5));
    // Past the last page: no items, the total still right.
    let page = ok(s.query::<Item>().to_page(3, 2).await);
    assert_eq!((page.items.len(), page.total), (0, 5));
    let page = ok(s
        .query::<Item>()
        .filter(|f| f.rank.gt(2))
        .to_page(7, 2)
        .await);
    assert_eq!((page.items.len(), page.total), (0, 3));
    // `page * page_size` overflows usize: past the end, no panic.
    let page = ok(s.query::<Item>().to_page(usize::MAX, 2).await);
    assert_eq!((page.items.len(), page.total), (0, 5));
    let page = ok(s.query::<Item>().to_page(usize::MAX / 2 + 1, 4).await);
    assert_eq!((page.items.len(), page.total), (0, 5));
    // A page as large as can be holds everything.
    let page = ok(s
        .query::<Item>()
        .order_by(|f| f.name.desc())
        .to_page(0, usize::MAX)
        .await);
    assert_eq!((ids(&page.items), page.total), (vec![5, 4, 3, 2, 1], 5));
    // A page of size 0: no items, the total.
    let page = ok(s.query::<Item>().to_page(1, 0).await);
    assert_eq!((page.items.len(), page.total), (0, 5));
    // No match at all.
    let page = ok(s
        .query::<Item>()
        .filter(|f| f.rank.gt(99))
        .to_page(0, 10)
        .await);
    assert_eq!((page.items.len(), page.total), (0, 0));
}

#[tokio::test]
async fn huge_skip_and_take_do_not_fail() {
    let (_schema, store) = seeded("edges_skip", &["a", "b", "c"]).await;
    let mut s = store.query_session();
    let all = ok(s
        .query::<Item>()
        .order_by(|f| f.rank.asc())
        .take(usize::MAX)
        .to_list()
        .await);
    assert_eq!(ids(&all), [1, 2, 3]);
    let none = ok(s.query::<Item>().skip(usize::MAX).to_list().await);
    assert!(none.is_empty());
    let none = ok(s
        .query::<Item>()
        .skip(usize::MAX)
        .take(usize::MAX)
        .to_list()
        .await);
    assert!(none.is_empty());
    let one = ok(s
        .query::<Item>()
        .order_by(|f| f.rank.asc())
        .skip(2)
        .take(usize::MAX)
        .to_list()
        .await);
    assert_eq!(ids(&one), [3]);
}

#[tokio::test]
async fn a_value_of_the_wrong_json_type_matches_nothing_instead_of_failing() {
    let (schema, store) = seeded("edges_types", &["a", "b", "c", "d"]).await;
    // Rows written by hand (or by an older version of the type): a string where a
    // number is expected, a string where a bool is, a number where a string is.
    schema
        .raw_client()
        .await
        .batch_execute(
            "UPDATE mt_doc_item SET data = jsonb_set(data, '{rank}', '\"high\"') WHERE id = 1;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{active}', '\"yes\"') WHERE id = 2;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{name}', '42') WHERE id = 3;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{weight}', '{\"kg\": 1}') WHERE id = 4;",
        )
        .await
        .expect("corrupt rows");
    let mut s = store.query_session();
    let n = ok(s.query::<Item>().filter(|f| f.rank.ge(0)).count().await);
    assert_eq!(n, 3, "rank 'high' is not a number: no match");
    let n = ok(s
        .query::<Item>()
        .filter(|f| f.rank.lt(0).not())
        .count()
        .await);
    assert_eq!(n, 4, "under NOT, still no failure");
    let n = ok(s
        .query::<Item>()
        .filter(|f| f.active.eq(true))
        .count()
        .await);
    assert_eq!(n, 1, "active 'yes' is not a bool");
    let n = ok(s.query::<Item>().filter(|f| f.name.eq("42")).count().await);
    assert_eq!(n, 0, "the number 42 is not the string \"42\"");
    let n = ok(s.query::<Item>().filter(|f| f.weight.gt(0.0)).count().await);
    assert_eq!(n, 3);
    // Sorting on such a field does not fail either: the odd value sorts as missing.
    let sorted = s
        .query::<Item>()
        .filter(|f| f.rank.ge(2))
        .order_by(|f| f.weight.desc())
        .order_by(|f| f.active.asc())
        .to_list()
        .await;
    // Rows 3 and 4 still deserialize into nothing valid: decoding them fails with a
    // typed error, but the query itself ran.
    assert!(
        matches!(sorted, Err(marten::Error::Deserialize { .. })),
        "{sorted:?}"
    );
    // NaN (which serde stores as null) is refused, naming the field, before anything is
    // sent.
    let r = s
        .query::<Item>()
        .filter(|f| f.weight.lt(f64::NAN))
        .count()
        .await;
    assert!(
        matches!(&r, Err(marten::Error::InvalidQuery(m)) if m.contains("`weight`")),
        "{r:?}"
    );
}

/// The sorted ids of the documents `f` matches (selected, so rows that no longer
/// deserialize do not fail the read).
async fn ids_where(s: &mut QuerySession, f: Filter<Item>) -> Vec<i64> {
    let mut found: Vec<i64> = ok(s
        .query::<Item>()
        .where_filter(f)
        .select(|f| f.id)
        .to_list()
        .await);
    found.sort_unstable();
    found
}

#[tokio::test]
async fn number_comparisons_match_stored_numbers_only_whatever_else_a_row_holds() {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    let (schema, store) = seeded("edges_numbers", &names).await;
    // rank: 1 -> 1, 2 -> 5, 3 -> 10, 4 -> "5", 5 -> null, 6 -> missing, 7 -> [1],
    // 8 -> 2.5, 9 -> 1e30.
    schema
        .raw_client()
        .await
        .batch_execute(
            "UPDATE mt_doc_item SET data = jsonb_set(data, '{rank}', '5') WHERE id = 2;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{rank}', '10') WHERE id = 3;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{rank}', '\"5\"') WHERE id = 4;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{rank}', 'null') WHERE id = 5;
             UPDATE mt_doc_item SET data = data - 'rank' WHERE id = 6;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{rank}', '[1]') WHERE id = 7;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{rank}', '2.5') WHERE id = 8;
             UPDATE mt_doc_item SET data = jsonb_set(data, '{rank}', '1e30') WHERE id = 9;",
        )
        .await
        .expect("odd rows");
    let mut s = store.query_session();
    let f = Item::fields;
    assert_eq!(ids_where(&mut s, f().rank.lt(6)).await, [1, 2, 8]);
    assert_eq!(ids_where(&mut s, f().rank.le(5)).await, [1, 2, 8]);
    assert_eq!(ids_where(&mut s, f().rank.gt(5)).await, [3, 9]);
    assert_eq!(ids_where(&mut s, f().rank.ge(5)).await, [2, 3, 9]);
    assert_eq!(ids_where(&mut s, f().rank.eq(5)).await, [2]);
    // `<>` matches other numbers only; `NOT` of a comparison matches every other row.
    assert_eq!(ids_where(&mut s, f().rank.ne(5)).await, [1, 3, 8, 9]);
    assert_eq!(
        ids_where(&mut s, f().rank.lt(6).not()).await,
        [3, 4, 5, 6, 7, 9]
    );
    assert_eq!(
        ids_where(&mut s, f().rank.eq(5).not()).await,
        [1, 3, 4, 5, 6, 7, 8, 9]
    );
    // Floats compare as numbers with integers; a float field's comparisons too.
    assert_eq!(ids_where(&mut s, f().weight.le(1.0)).await, [1, 2]);
    assert_eq!(ids_where(&mut s, f().weight.eq(1.5)).await, [3]);
}

#[tokio::test]
async fn indexed_and_unindexed_text_sort_and_compare_alike() {
    let names = ["a", "B", "c", "D", "é", "Z"];
    let (schema, store) = seeded("edges_collation", &names).await;
    // A column made with a linguistic collation, as on a database whose default
    // collation is not "C" (and as every text column was before byte order was set).
    schema
        .raw_client()
        .await
        .batch_execute(
            "ALTER TABLE mt_doc_item DROP COLUMN mt_f_label; \
             ALTER TABLE mt_doc_item ADD COLUMN mt_f_label text COLLATE \"en-x-icu\" \
             GENERATED ALWAYS AS ((data ->> 'label')::text) STORED; \
             CREATE INDEX mt_doc_item_idx_label ON mt_doc_item (mt_f_label)",
        )
        .await
        .expect("a linguistic column");
    let mut rust_order: Vec<&str> = names.to_vec();
    rust_order.sort();
    let mut s = store.query_session();
    let by_name = ok(s.query::<Item>().order_by(|f| f.name.asc()).to_list().await);
    let by_label = ok(s
        .query::<Item>()
        .order_by(|f| f.label.asc())
        .to_list()
        .await);
    let shown = |v: &[Item]| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    assert_eq!(shown(&by_name), rust_order);
    assert_eq!(shown(&by_label), rust_order);
    let gt_name = ok(s.query::<Item>().filter(|f| f.name.gt("B")).count().await);
    let gt_label = ok(s.query::<Item>().filter(|f| f.label.gt("B")).count().await);
    let rust = names.iter().filter(|n| **n > "B").count() as i64;
    assert_eq!((gt_name, gt_label), (rust, rust));

    // A new table's column is byte-ordered itself, so its index serves the comparison.
    let (schema2, b) = builder("edges_collation_new");
    let _store = ok(b.document::<Item>().build().await);
    let collation: Option<String> = schema2
        .raw_client()
        .await
        .query_one(
            "SELECT collation_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'mt_doc_item' AND column_name = 'mt_f_label'",
            &[&schema2.name()],
        )
        .await
        .expect("column")
        .get(0);
    assert_eq!(collation.as_deref(), Some("C"));
}

#[tokio::test]
async fn raw_sql_placeholders_are_renumbered_only_where_they_are_placeholders() {
    let (_schema, store) = seeded("edges_raw", &["it's", "b", "$1", "d"]).await;
    let mut s = store.query_session();
    // Each with a typed filter first, so the fragment's `$1` is the query's `$2`.
    let cases: &[(&str, Vec<RawParam>, Vec<i64>)] = &[
        // Comments holding quotes and dollar signs.
        (
            "d.data->>'name' = $1 -- don't touch $2\n",
            vec![RawParam::Text("b".into())],
            vec![2],
        ),
        (
            "/* it's $1 /* nested $9 */ */ d.data->>'name' = $1",
            vec![RawParam::Text("d".into())],
            vec![4],
        ),
        // A dollar-quoted string with a quote and a `$1` in it.
        (
            "d.data->>'name' = $q$it's$q$ AND $1::bigint > 0",
            vec![RawParam::Int(1)],
            vec![1],
        ),
        (
            "d.data->>'name' = $$$1$$ AND $1",
            vec![RawParam::Bool(true)],
            vec![3],
        ),
        // A string literal and an escape string.
        (
            "d.data->>'name' IN ('$1', E'it\\'s') AND $1",
            vec![RawParam::Bool(true)],
            vec![1, 3],
        ),
        // A quoted identifier with a quote and a dollar sign.
        (
            "(SELECT x.\"it's $1\" FROM (SELECT d.data->>'name' AS \"it's $1\") x) = $1",
            vec![RawParam::Text("d".into())],
            vec![4],
        ),
    ];
    for (fragment, params, expected) in cases {
        let found = s
            .query::<Item>()
            .filter(|f| f.rank.ge(1))
            .where_sql(*fragment, params.clone())
            .order_by(|f| f.rank.asc())
            .to_list()
            .await;
        match found {
            Ok(found) => assert_eq!(&ids(&found), expected, "{fragment}"),
            Err(e) => panic!("{fragment}: {e}"),
        }
    }
    // Placeholders that have no parameter, or parameters no placeholder uses: a typed
    // error before anything runs (`$0` and `$2` would otherwise be the typed filter's
    // parameter or the limit's).
    for (fragment, params) in [
        ("d.id = $0", vec![]),
        ("d.id = $2", vec![RawParam::Int(1)]),
        ("d.id = $1", vec![RawParam::Int(1), RawParam::Int(2)]),
        ("d.id = 1 /* unterminated", vec![]),
        ("d.id = $99999999999999999999999", vec![]),
    ] {
        let err = s
            .query::<Item>()
            .filter(|f| f.rank.ge(1))
            .where_sql(fragment, params)
            .take(5)
            .to_list()
            .await
            .expect_err(fragment);
        assert!(
            matches!(err, marten::Error::InvalidQuery(_)),
            "{fragment}: {err}"
        );
        let err = s
            .query::<Item>()
            .where_sql(fragment, vec![])
            .count()
            .await
            .expect_err(fragment);
        assert!(
            matches!(err, marten::Error::InvalidQuery(_)),
            "{fragment}: {err}"
        );
    }
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Oddly {
    id: i64,
    /// A JSON key with quotes, a backslash, a space and a newline.
    #[serde(rename = "a \"b\" 'c' \\d\ne")]
    n: i64,
}

#[tokio::test]
async fn number_comparisons_on_keys_with_quotes_and_backslashes() {
    let (_schema, b) = builder("edges_odd_keys");
    let store = ok(b.document::<Oddly>().build().await);
    let mut s = store.lightweight_session();
    for id in 1..=4 {
        ok(s.store(Oddly { id, n: id * 10 }));
    }
    ok(s.save_changes().await);
    let mut q = store.query_session();
    let mut found: Vec<i64> = ok(q
        .query::<Oddly>()
        .filter(|f| f.n.gt(15).and(f.n.le(30)))
        .to_list()
        .await)
    .iter()
    .map(|d| d.id)
    .collect();
    found.sort_unstable();
    assert_eq!(found, [2, 3]);
}
