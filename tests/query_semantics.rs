//! Query and patch semantics that must agree with Rust: `contains` on a `Vec` whose
//! elements are arrays or structs is element equality (not JSON containment); a NaN or
//! infinite float in a query is refused (not read as `None`); an increment that would
//! take a field out of its type's range is refused, writing nothing; and an equality on
//! a text id is served by the primary key.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::query::{Comparable, Filter, ValueKind};
use marten::Error;
use serde::{Deserialize, Serialize};

/// A struct element of a collection, compared as JSON.
#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Tag {
    name: String,
    aliases: Vec<String>,
}

impl Comparable for Tag {
    const KIND: ValueKind = ValueKind::Json;
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Board {
    id: i64,
    grid: Vec<Vec<i32>>,
    tags: Vec<Tag>,
    slots: Vec<Option<i32>>,
    labels: Vec<String>,
    score: Option<f64>,
    weight: f64,
    weights: Vec<f64>,
}

fn tag(name: &str, aliases: &[&str]) -> Tag {
    Tag {
        name: name.to_owned(),
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
    }
}

fn boards() -> Vec<Board> {
    let board = |id: i64, grid: Vec<Vec<i32>>, tags: Vec<Tag>, slots: Vec<Option<i32>>| Board {
        id,
        grid,
        tags,
        slots,
        labels: vec![format!("l{}", id % 3)],
        score: (id % 2 == 0).then_some(id as f64),
        weight: id as f64 / 2.0,
        weights: vec![id as f64],
    };
    vec![
        board(1, vec![vec![1, 2]], vec![tag("a", &["x"])], vec![Some(1)]),
        board(2, vec![vec![1]], vec![tag("a", &[])], vec![None]),
        board(3, vec![], vec![], vec![]),
        board(
            4,
            vec![vec![], vec![2, 1]],
            vec![tag("b", &["x", "y"])],
            vec![Some(2), None],
        ),
        board(
            5,
            vec![vec![1, 2], vec![3]],
            vec![tag("a", &["x"]), tag("c", &[])],
            vec![Some(1), Some(2)],
        ),
        board(6, vec![vec![2]], vec![tag("ab", &[])], vec![Some(3)]),
    ]
}

/// Stores the boards; the store and the boards.
async fn seeded(label: &str) -> (marten_testing::TestSchema, DocumentStore, Vec<Board>) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Board>().build().await);
    let docs = boards();
    let mut s = store.lightweight_session();
    for d in &docs {
        ok(s.store(d.clone()));
    }
    ok(s.save_changes().await);
    (schema, store, docs)
}

/// The ids the database matches and the ids Rust matches, each sorted.
async fn both(
    store: &DocumentStore,
    docs: &[Board],
    filter: &Filter<Board>,
) -> (Vec<i64>, Vec<i64>) {
    let mut q = store.query_session();
    let mut got: Vec<i64> = ok(q
        .query::<Board>()
        .where_filter(filter.clone())
        .to_list()
        .await)
    .iter()
    .map(|d| d.id)
    .collect();
    got.sort_unstable();
    let want: Vec<i64> = docs
        .iter()
        .filter(|d| filter.matches(d))
        .map(|d| d.id)
        .collect();
    (got, want)
}

/// `contains` on a `Vec` of arrays or structs is "an element equals the value", as in
/// Rust, not JSON containment (`[[1, 2]]` contains `[[1]]` and `[[]]` as JSON); on
/// scalar elements (`None` among them) it stays the containment test; also negated and
/// inside `any`'s siblings.
#[tokio::test]
async fn contains_on_arrays_and_structs_is_element_equality() {
    let (_schema, store, docs) = seeded("qsem_contains").await;
    let f = Board::fields();
    let cases: Vec<Filter<Board>> = vec![
        f.grid.contains(vec![1]),
        f.grid.contains(Vec::<i32>::new()),
        f.grid.contains(vec![1, 2]),
        f.grid.contains(vec![2, 1]),
        f.grid.contains(vec![1]).not(),
        f.tags.contains(tag("a", &[])),
        f.tags.contains(tag("a", &["x"])),
        f.tags.contains(tag("b", &["x"])),
        f.tags.contains(tag("a", &[])).or(f.grid.contains(vec![2])),
        f.slots.contains(None),
        f.slots.contains(Some(1)),
        f.labels.contains("l1"),
    ];
    for filter in &cases {
        let (got, want) = both(&store, &docs, filter).await;
        assert_eq!(got, want, "{filter:?}");
    }
    // The cases the containment test alone got wrong.
    let (got, _) = both(&store, &docs, &f.grid.contains(vec![1])).await;
    assert_eq!(got, vec![2]);
    let (got, _) = both(&store, &docs, &f.grid.contains(Vec::<i32>::new())).await;
    assert_eq!(got, vec![4]);
    let (got, _) = both(&store, &docs, &f.tags.contains(tag("a", &[]))).await;
    assert_eq!(got, vec![2]);
}

/// Whether `r` is the refusal of a non-finite query value naming `field`.
fn refused_naming<T: std::fmt::Debug>(r: marten::Result<T>, field: &str) -> bool {
    match r {
        Err(Error::InvalidQuery(m)) => m.contains(&format!("`{field}`")) && m.contains("NaN"),
        other => panic!("expected InvalidQuery naming `{field}`, got {other:?}"),
    }
}

/// A NaN or infinite float in a query is refused with `InvalidQuery` naming the field,
/// before anything is sent: serde writes it as `null`, which the database read as
/// `None` (`score.eq(Some(NaN))` returned every document without a score).
#[tokio::test]
async fn non_finite_floats_in_queries_are_refused_naming_the_field() {
    let (_schema, store, docs) = seeded("qsem_nan").await;
    let f = Board::fields();
    // Rust: no document has a NaN score; the database read it as `None`.
    assert!(!docs.iter().any(|d| f.score.eq(Some(f64::NAN)).matches(d)));
    let mut s = store.query_session();
    let cases: Vec<(&str, Filter<Board>)> = vec![
        ("score", f.score.eq(Some(f64::NAN))),
        ("score", f.score.ne(Some(f64::INFINITY))),
        ("score", f.score.is_one_of([Some(1.0), Some(f64::NAN)])),
        ("weight", f.weight.lt(f64::INFINITY)),
        ("weight", f.weight.ne(f64::NAN)),
        ("weights", f.weights.contains(f64::NEG_INFINITY)),
        (
            "score",
            f.weight.gt(0.0).and(f.score.eq(Some(f64::NAN)).not()),
        ),
    ];
    for (field, filter) in cases {
        let listed = s
            .query::<Board>()
            .where_filter(filter.clone())
            .to_list()
            .await;
        assert!(refused_naming(listed, field), "{filter:?}");
        let counted = s
            .query::<Board>()
            .where_filter(filter.clone())
            .count()
            .await;
        assert!(refused_naming(counted, field), "{filter:?}");
    }
    // Finite values still run.
    let n = ok(s
        .query::<Board>()
        .filter(|f| f.score.eq(Some(2.0)))
        .count()
        .await);
    assert_eq!(n, 1);
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Gauge {
    level: i8,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Meter {
    id: String,
    small: u8,
    count: i64,
    ratio: f32,
    total: f64,
    #[query(nested)]
    gauge: Gauge,
}

fn meter(id: &str, small: u8) -> Meter {
    Meter {
        id: id.to_owned(),
        small,
        count: 0,
        ratio: 1.0,
        total: 1.0,
        gauge: Gauge { level: 0 },
    }
}

/// Whether `r` is the refusal of an increment of `field` of a `Meter`.
#[track_caller]
fn out_of_range<T: std::fmt::Debug>(r: marten::Result<T>, field: &str) {
    match r {
        Err(Error::InvalidInput {
            owner, field: f, ..
        }) if owner == "Meter" && f == field => {}
        other => panic!("expected InvalidInput for Meter.{field}, got {other:?}"),
    }
}

/// An increment that would take a field out of its type's range (`u8` at 255 plus 1, an
/// `i8` below -128, an `f32` or `f64` beyond its largest finite value) fails the save
/// with `InvalidInput` naming the type and the field, and writes nothing: alone, in a
/// save with other writes, and by filter. Increments within range still apply, and an
/// increment by NaN is refused when queued.
#[tokio::test]
async fn increments_out_of_the_field_type_are_refused_and_write_nothing() {
    let (_schema, b) = builder("qsem_increment");
    let store = ok(b.document::<Meter>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(meter("a", 255)));
    ok(s.store(meter("b", 10)));
    ok(s.save_changes().await);

    // Alone (one statement, no transaction).
    drop(s);
    let mut s = store.lightweight_session();
    ok(s.patch::<Meter>(&"a".to_owned())
        .increment(|f| f.small, 1)
        .queue());
    out_of_range(s.save_changes().await, "small");

    // With other writes (a transaction with the batch guard): nothing of it is written.
    drop(s);
    let mut s = store.lightweight_session();
    ok(s.store(meter("c", 1)));
    ok(s.patch::<Meter>(&"b".to_owned())
        .increment(|f| f.count, 5)
        .queue());
    ok(s.patch::<Meter>(&"a".to_owned())
        .increment(|f| f.small, 1)
        .queue());
    out_of_range(s.save_changes().await, "small");

    // By filter: one row out of range refuses them all.
    drop(s);
    let mut s = store.lightweight_session();
    ok(s.patch_where::<Meter>(Meter::fields().small.ge(0))
        .increment(|f| f.small, 1)
        .queue());
    out_of_range(s.save_changes().await, "small");

    // Nested and signed: two increments of one field, the second out of range.
    drop(s);
    let mut s = store.lightweight_session();
    ok(s.patch::<Meter>(&"b".to_owned())
        .increment(|f| f.gauge.level, -127)
        .increment(|f| f.gauge.level, -2)
        .queue());
    out_of_range(s.save_changes().await, "gauge.level");

    // Floats: up to (about) the largest finite value, then refused.
    drop(s);
    let mut s = store.lightweight_session();
    ok(s.patch::<Meter>(&"b".to_owned())
        .increment(|f| f.ratio, f32::MAX)
        .increment(|f| f.total, 1e308)
        .queue());
    ok(s.save_changes().await);
    drop(s);
    let mut s = store.lightweight_session();
    ok(s.patch::<Meter>(&"b".to_owned())
        .increment(|f| f.ratio, f32::MAX)
        .queue());
    out_of_range(s.save_changes().await, "ratio");
    drop(s);
    let mut s = store.lightweight_session();
    ok(s.patch::<Meter>(&"b".to_owned())
        .increment(|f| f.total, 1e308)
        .queue());
    out_of_range(s.save_changes().await, "total");

    drop(s);
    let mut q = store.query_session();
    let a = ok(q.load::<Meter>(&"a".to_owned()).await).expect("a loads");
    assert_eq!(a.small, 255, "nothing was written to a");
    let b = ok(q.load::<Meter>(&"b".to_owned()).await).expect("b loads");
    assert_eq!(
        (b.small, b.count, b.gauge.level),
        (10, 0, 0),
        "nothing else was written to b"
    );
    assert_eq!(b.ratio, f32::MAX);
    assert!(b.total.is_finite() && b.total > 9.9e307, "{}", b.total);
    assert!(
        ok(q.load::<Meter>(&"c".to_owned()).await).is_none(),
        "c was not stored"
    );

    // Within range, increments apply.
    let mut s = store.lightweight_session();
    ok(s.patch::<Meter>(&"b".to_owned())
        .increment(|f| f.small, 245)
        .increment(|f| f.gauge.level, -128)
        .increment(|f| f.count, i64::MAX)
        .queue());
    ok(s.save_changes().await);
    let b = ok(q.load::<Meter>(&"b".to_owned()).await).expect("b loads");
    assert_eq!((b.small, b.gauge.level, b.count), (255, -128, i64::MAX));

    // An increment by NaN is refused when queued.
    drop(s);
    let mut s = store.lightweight_session();
    let refused = s
        .patch::<Meter>(&"b".to_owned())
        .increment(|f| f.total, f64::NAN)
        .queue();
    assert!(
        matches!(refused, Err(Error::InvalidInput { .. })),
        "{refused:?}"
    );
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Keyed {
    id: String,
    n: i64,
}

/// The plan of `sql` (a query's text) run with `params`, by `EXPLAIN EXECUTE` of a
/// prepared statement (its parameter types inferred from the text's casts).
async fn plan(client: &tokio_postgres::Client, sql: &str, params: &str) -> String {
    client
        .batch_execute(&format!("DEALLOCATE ALL; PREPARE q AS {sql}"))
        .await
        .expect("prepare");
    let rows = client
        .simple_query(&format!("EXPLAIN EXECUTE q({params})"))
        .await
        .expect("explain");
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// 20 000 documents with text ids `k1`..`k20000`, inserted by SQL and analyzed.
async fn keyed(
    label: &str,
) -> (
    marten_testing::TestSchema,
    DocumentStore,
    tokio_postgres::Client,
) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Keyed>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Keyed {
        id: "k0".to_owned(),
        n: 0,
    }));
    ok(s.save_changes().await);
    let client = schema.raw_client().await;
    let table = <Keyed as marten::Document>::TABLE_NAME;
    client
        .batch_execute(&format!(
            "INSERT INTO {table} (id, data) SELECT 'k' || g, jsonb_build_object('id', 'k' || g, 'n', g) \
             FROM generate_series(1, 20000) g; ANALYZE {table}"
        ))
        .await
        .expect("seed");
    (schema, store, client)
}

/// An equality (and `ne`) on a text id is served by the primary key: the id column is
/// compared in its own collation (equality is the same in every deterministic collation),
/// not `COLLATE "C"`, which no index of the column has.
#[tokio::test]
async fn an_equality_on_a_text_id_uses_the_primary_key() {
    let (_schema, store, client) = keyed("qsem_id_eq").await;
    let mut s = store.query_session();
    let q = s.query::<Keyed>().filter(|f| f.id.eq("k123"));
    let sql = q.to_sql();
    let explained = plan(&client, &sql, "'k123'").await;
    let table = <Keyed as marten::Document>::TABLE_NAME;
    assert!(
        (explained.contains("Index Scan") || explained.contains("Index Only Scan"))
            && explained.contains(&format!("{table}_pkey")),
        "{sql}\n{explained}"
    );
    let found = ok(q.to_list().await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].n, 123);
    let n = ok(s.query::<Keyed>().filter(|f| f.id.ne("k123")).count().await);
    assert_eq!(n, 20_000);
}

/// Ranges and sorts on a text id keep Rust's byte order whatever the column's collation.
#[tokio::test]
async fn ranges_and_sorts_on_a_text_id_keep_rust_order() {
    let (_schema, b) = builder("qsem_id_order");
    let store = ok(b.document::<Keyed>().build().await);
    let ids = ["b", "B", "a", "A", "é", "e", "Z", "_", "a b", "ab"];
    let mut s = store.lightweight_session();
    for (n, id) in ids.iter().enumerate() {
        ok(s.store(Keyed {
            id: (*id).to_owned(),
            n: n as i64,
        }));
    }
    ok(s.save_changes().await);
    let mut want: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    let mut q = store.query_session();
    let got: Vec<String> = ok(q.query::<Keyed>().order_by(|f| f.id.asc()).to_list().await)
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got, want);
    let above: Vec<String> = ok(q
        .query::<Keyed>()
        .filter(|f| f.id.gt("a"))
        .order_by(|f| f.id.asc())
        .to_list()
        .await)
    .into_iter()
    .map(|d| d.id)
    .collect();
    let want_above: Vec<String> = want
        .iter()
        .filter(|id| id.as_str() > "a")
        .cloned()
        .collect();
    assert_eq!(above, want_above);
}

/// `exists` answers whether a document matches without decoding it: a match whose stored
/// JSON no longer deserializes still exists (as the compiled `Exists` says), while
/// `first` reports the bad document.
#[tokio::test]
async fn exists_does_not_decode_the_match() {
    let (schema, b) = builder("qsem_exists");
    let store = ok(b.document::<Keyed>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Keyed {
        id: "bad".to_owned(),
        n: 1,
    }));
    ok(s.save_changes().await);
    let table = <Keyed as marten::Document>::TABLE_NAME;
    schema
        .raw_client()
        .await
        .batch_execute(&format!(
            "UPDATE {table} SET data = jsonb_set(data, '{{n}}', '\"not a number\"')"
        ))
        .await
        .expect("corrupt the document");
    let mut q = store.query_session();
    let exists = ok(q
        .query::<Keyed>()
        .filter(|f| f.id.eq("bad".to_owned()))
        .exists()
        .await);
    assert!(exists);
    let none = ok(q
        .query::<Keyed>()
        .filter(|f| f.id.eq("other".to_owned()))
        .exists()
        .await);
    assert!(!none);
    let first = q
        .query::<Keyed>()
        .filter(|f| f.id.eq("bad".to_owned()))
        .first()
        .await;
    assert!(matches!(first, Err(Error::Deserialize { .. })), "{first:?}");
}
