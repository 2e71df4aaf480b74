//! Typed, compile-time checked queries: operators, composition, ordering and paging,
//! serde renames, nested paths, collections, raw SQL, streaming; a property test against
//! Rust's own filter; column indexes.

mod common;

use common::{builder, ok};
use futures_util::StreamExt;
use marten::prelude::*;
use marten::query::{Filter, RawParam};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Address {
    city: String,
    zip: i32,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Line {
    sku: String,
    qty: i32,
}

/// With a GIN index, so every equality of the property test also tests containment.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[document(gin)]
struct CoffeeShop {
    id: Uuid,
    shop_name: String,
    #[serde(rename = "stars")]
    rating: i32,
    tags: Vec<String>,
    nick: Option<String>,
    open: bool,
    score: f64,
    #[query(nested)]
    address: Address,
    lines: Vec<Line>,
}

fn shop(name: &str, rating: i32, city: &str) -> CoffeeShop {
    CoffeeShop {
        id: Uuid::now_v7(),
        shop_name: name.into(),
        rating,
        tags: vec![],
        nick: None,
        open: true,
        score: rating as f64 / 2.0,
        address: Address {
            city: city.into(),
            zip: 1000 + rating,
        },
        lines: vec![],
    }
}

async fn seeded() -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder("queries");
    let store = ok(b.document::<CoffeeShop>().build().await);
    let mut s = store.lightweight_session();
    let mut a = shop("Starbucks", 3, "Seattle");
    a.tags = vec!["chain".into(), "wifi".into()];
    a.lines = vec![Line {
        sku: "A-1".into(),
        qty: 2,
    }];
    let mut b2 = shop("Blue Bottle", 5, "Oakland");
    b2.nick = Some("BB".into());
    b2.lines = vec![
        Line {
            sku: "B-2".into(),
            qty: 1,
        },
        Line {
            sku: "A-1".into(),
            qty: 9,
        },
    ];
    let mut c = shop("Stumptown", 4, "Seaside");
    c.open = false;
    let d = shop("Peet's \"Coffee\"", 2, "Berkeley");
    for x in [a, b2, c, d] {
        ok(s.store(x));
    }
    ok(s.save_changes().await);
    (schema, store)
}

fn names(shops: &[CoffeeShop]) -> Vec<&str> {
    shops.iter().map(|s| s.shop_name.as_str()).collect()
}

#[tokio::test]
async fn the_issue_examples() {
    let (_schema, store) = seeded().await;
    let mut s = store.query_session();
    let shops = ok(s
        .query::<CoffeeShop>()
        .filter(|f| {
            f.shop_name
                .eq("Starbucks")
                .or(f.address.city.starts_with("Sea"))
        })
        .filter(|f| f.rating.gt(3))
        .order_by(|f| f.shop_name.asc())
        .to_list()
        .await);
    assert_eq!(names(&shops), ["Stumptown"]);
    let n = ok(s
        .query::<CoffeeShop>()
        .filter(|f| f.lines.any(|l| l.sku.eq("A-1")))
        .count()
        .await);
    assert_eq!(n, 2);
    let n = ok(s
        .query::<CoffeeShop>()
        .filter(|f| f.lines.any(|l| l.sku.eq("A-1").and(l.qty.gt(5))))
        .count()
        .await);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn operators_ordering_and_paging() {
    let (_schema, store) = seeded().await;
    let mut s = store.lightweight_session();
    let all = ok(s
        .query::<CoffeeShop>()
        .order_by(|f| f.rating.desc())
        .to_list()
        .await);
    assert_eq!(
        names(&all),
        ["Blue Bottle", "Stumptown", "Starbucks", "Peet's \"Coffee\""]
    );
    let page = ok(s
        .query::<CoffeeShop>()
        .order_by(|f| f.rating.asc())
        .to_page(1, 2)
        .await);
    assert_eq!(
        (page.total, names(&page.items)),
        (4, vec!["Stumptown", "Blue Bottle"])
    );
    let skipped = ok(s
        .query::<CoffeeShop>()
        .order_by(|f| f.shop_name.asc())
        .skip(1)
        .take(2)
        .to_list()
        .await);
    assert_eq!(names(&skipped), ["Peet's \"Coffee\"", "Starbucks"]);
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.nick.is_some())
            .count()
            .await),
        1
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.nick.is_none())
            .count()
            .await),
        3
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.tags.contains("wifi"))
            .count()
            .await),
        1
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.tags.is_empty())
            .count()
            .await),
        3
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.open.eq(false))
            .count()
            .await),
        1
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.score.ge(2.0))
            .count()
            .await),
        2
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.shop_name.ends_with("town"))
            .count()
            .await),
        1
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.shop_name.contains("\"Coffee\""))
            .count()
            .await),
        1
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.shop_name.eq_ignore_case("STARBUCKS"))
            .count()
            .await),
        1
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.address.zip.lt(1004))
            .count()
            .await),
        2
    );
    assert_eq!(
        ok(s.query::<CoffeeShop>()
            .filter(|f| f.rating.gt(3).not())
            .count()
            .await),
        2
    );
    let first = ok(s
        .query::<CoffeeShop>()
        .order_by(|f| f.rating.asc())
        .first()
        .await)
    .expect("one");
    assert_eq!(first.rating, 2);
    let single = ok(s
        .query::<CoffeeShop>()
        .filter(|f| f.rating.eq(5))
        .single()
        .await)
    .expect("one");
    assert_eq!(single.shop_name, "Blue Bottle");
    assert!(matches!(
        s.query::<CoffeeShop>()
            .filter(|f| f.rating.gt(1))
            .single()
            .await,
        Err(marten::Error::NotSingle { .. })
    ));
    assert!(ok(s
        .query::<CoffeeShop>()
        .filter(|f| f.rating.eq(4))
        .exists()
        .await));
    assert!(!ok(s
        .query::<CoffeeShop>()
        .filter(|f| f.rating.eq(40))
        .exists()
        .await));
}

#[tokio::test]
async fn serde_renames_are_the_json_keys() {
    let (schema, store) = seeded().await;
    let mut s = store.query_session();
    let q = s
        .query::<CoffeeShop>()
        .filter(|f| f.shop_name.eq("x").and(f.rating.eq(1)));
    let sql = q.to_sql();
    assert!(
        sql.contains("\"shopName\"") && sql.contains("\"stars\""),
        "{sql}"
    );
    let keys: i64 = schema
        .raw_client()
        .await
        .query_one(
            "SELECT count(*) FROM mt_doc_coffeeshop WHERE data ? 'shopName' AND data ? 'stars'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(keys, 4);
}

#[tokio::test]
async fn raw_sql_and_streaming() {
    let (_schema, store) = seeded().await;
    let mut s = store.query_session();
    let found = ok(s
        .query::<CoffeeShop>()
        .filter(|f| f.open.eq(true))
        .where_sql(
            "(d.data ->> 'stars')::bigint >= $1::bigint AND d.data ->> 'shopName' <> $2::text",
            vec![
                RawParam::Int(3),
                RawParam::Text("'; DROP TABLE x; --".into()),
            ],
        )
        .order_by(|f| f.shop_name.asc())
        .to_list()
        .await);
    assert_eq!(names(&found), ["Blue Bottle", "Starbucks"]);
    let mut stream = ok(s
        .query::<CoffeeShop>()
        .order_by(|f| f.rating.asc())
        .stream()
        .await);
    let mut ratings = Vec::new();
    while let Some(shop) = stream.next().await {
        ratings.push(ok(shop).rating);
    }
    assert_eq!(ratings, [2, 3, 4, 5]);
}

// ---- property test: the database answers what Rust's filter answers ----

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Item {
    id: i64,
    name: String,
    n: i32,
    flag: bool,
    tags: Vec<String>,
    maybe: Option<String>,
    #[query(nested)]
    inner: Address,
    lines: Vec<Line>,
}

#[derive(Debug, Clone)]
enum Spec {
    NameEq(String),
    NameGt(String),
    NameStarts(String),
    NameEnds(String),
    NameContains(String),
    NameIgnoreCase(String),
    NLt(i32),
    NGe(i32),
    NNe(i32),
    Flag(bool),
    TagsContain(String),
    TagsEmpty,
    MaybeNone,
    MaybeSome,
    CityLe(String),
    ZipGt(i32),
    AnyLine(String, i32),
    NameOneOf(Vec<String>),
    NOneOf(Vec<i32>),
    IdOneOf(Vec<i64>),
    MaybeOneOf(Vec<Option<String>>),
    ZipOneOf(Vec<i32>),
    And(Box<Spec>, Box<Spec>),
    Or(Box<Spec>, Box<Spec>),
    Not(Box<Spec>),
}

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "", "a", "ab", "B", "ba", "abc", "Zed", "é", "a_b", "%",
    ])
    .prop_map(str::to_owned)
}

fn spec() -> impl Strategy<Value = Spec> {
    let leaf = prop_oneof![
        word().prop_map(Spec::NameEq),
        word().prop_map(Spec::NameGt),
        word().prop_map(Spec::NameStarts),
        word().prop_map(Spec::NameEnds),
        word().prop_map(Spec::NameContains),
        word().prop_map(Spec::NameIgnoreCase),
        (-3..4i32).prop_map(Spec::NLt),
        (-3..4i32).prop_map(Spec::NGe),
        (-3..4i32).prop_map(Spec::NNe),
        any::<bool>().prop_map(Spec::Flag),
        word().prop_map(Spec::TagsContain),
        Just(Spec::TagsEmpty),
        Just(Spec::MaybeNone),
        Just(Spec::MaybeSome),
        word().prop_map(Spec::CityLe),
        (0..4i32).prop_map(Spec::ZipGt),
        (word(), 0..3i32).prop_map(|(s, q)| Spec::AnyLine(s, q)),
        prop::collection::vec(word(), 0..4).prop_map(Spec::NameOneOf),
        prop::collection::vec(-3..4i32, 0..4).prop_map(Spec::NOneOf),
        prop::collection::vec(0..30i64, 0..6).prop_map(Spec::IdOneOf),
        prop::collection::vec(prop::option::of(word()), 0..3).prop_map(Spec::MaybeOneOf),
        prop::collection::vec(0..4i32, 0..3).prop_map(Spec::ZipOneOf),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Spec::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Spec::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Spec::Not(Box::new(a))),
        ]
    })
}

fn build(spec: &Spec) -> Filter<Item> {
    let f = Item::fields();
    match spec {
        Spec::NameEq(s) => f.name.eq(s.as_str()),
        Spec::NameGt(s) => f.name.gt(s.as_str()),
        Spec::NameStarts(s) => f.name.starts_with(s.as_str()),
        Spec::NameEnds(s) => f.name.ends_with(s.as_str()),
        Spec::NameContains(s) => f.name.contains(s.as_str()),
        Spec::NameIgnoreCase(s) => f.name.eq_ignore_case(s.as_str()),
        Spec::NLt(n) => f.n.lt(*n),
        Spec::NGe(n) => f.n.ge(*n),
        Spec::NNe(n) => f.n.ne(*n),
        Spec::Flag(b) => f.flag.eq(*b),
        Spec::TagsContain(s) => f.tags.contains(s.as_str()),
        Spec::TagsEmpty => f.tags.is_empty(),
        Spec::MaybeNone => f.maybe.is_none(),
        Spec::MaybeSome => f.maybe.is_some(),
        Spec::CityLe(s) => f.inner.city.le(s.as_str()),
        Spec::ZipGt(n) => f.inner.zip.gt(*n),
        Spec::AnyLine(s, q) => {
            let (s, q) = (s.clone(), *q);
            f.lines.any(move |l| l.sku.eq(s).and(l.qty.ge(q)))
        }
        Spec::NameOneOf(v) => f.name.is_one_of(v.iter().map(String::as_str)),
        Spec::NOneOf(v) => f.n.is_one_of(v.clone()),
        Spec::IdOneOf(v) => f.id.is_one_of(v.clone()),
        Spec::MaybeOneOf(v) => f.maybe.is_one_of(v.clone()),
        Spec::ZipOneOf(v) => f.inner.zip.is_one_of(v.clone()),
        Spec::And(a, b) => build(a).and(build(b)),
        Spec::Or(a, b) => build(a).or(build(b)),
        Spec::Not(a) => build(a).not(),
    }
}

fn item() -> impl Strategy<Value = Item> {
    (
        word(),
        -3..4i32,
        any::<bool>(),
        prop::collection::vec(word(), 0..3),
        prop::option::of(word()),
        (word(), 0..4i32),
        prop::collection::vec((word(), 0..3i32), 0..3),
    )
        .prop_map(|(name, n, flag, tags, maybe, (city, zip), lines)| Item {
            id: 0,
            name,
            n,
            flag,
            tags,
            maybe,
            inner: Address { city, zip },
            lines: lines
                .into_iter()
                .map(|(sku, qty)| Line { sku, qty })
                .collect(),
        })
}

/// Aggregates of the matches of a filter, computed by the database or in Rust.
#[derive(Debug)]
struct Aggregates {
    sum_n: Option<i64>,
    avg_n: Option<f64>,
    min_name: Option<String>,
    max_zip: Option<i32>,
    max_id: Option<i64>,
    min_flag: Option<bool>,
    distinct_names: i64,
    distinct_maybe: i64,
}

impl Aggregates {
    async fn of_db(s: &mut LightweightSession, filter: &Filter<Item>) -> Aggregates {
        macro_rules! q {
            ($s:expr) => {
                $s.query::<Item>().where_filter(filter.clone())
            };
        }
        Aggregates {
            sum_n: ok(q!(s).sum(|f| f.n).await),
            avg_n: ok(q!(s).avg(|f| f.n).await),
            min_name: ok(q!(s).min(|f| f.name).await),
            max_zip: ok(q!(s).max(|f| f.inner.zip).await),
            max_id: ok(q!(s).aggregate(|f| f.id.max()).await),
            min_flag: ok(q!(s).min(|f| f.flag).await),
            distinct_names: ok(q!(s).count_distinct(|f| f.name).await),
            distinct_maybe: ok(q!(s).count_distinct(|f| f.maybe).await),
        }
    }

    fn of_rust(docs: Vec<&Item>) -> Aggregates {
        let f = Item::fields();
        let d = || docs.iter().copied();
        Aggregates {
            sum_n: ok(f.n.sum().compute(d())),
            avg_n: ok(f.n.avg().compute(d())),
            min_name: ok(f.name.min().compute(d())),
            max_zip: ok(f.inner.zip.max().compute(d())),
            max_id: ok(f.id.max().compute(d())),
            min_flag: ok(f.flag.min().compute(d())),
            distinct_names: ok(f.name.count_distinct().compute(d())),
            distinct_maybe: ok(f.maybe.count_distinct().compute(d())),
        }
    }

    /// Equal, the means within rounding.
    fn agrees_with(&self, other: &Aggregates) -> bool {
        let close = match (self.avg_n, other.avg_n) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (a, b) => a == b,
        };
        close
            && (
                self.sum_n,
                &self.min_name,
                self.max_zip,
                self.max_id,
                self.min_flag,
            ) == (
                other.sum_n,
                &other.min_name,
                other.max_zip,
                other.max_id,
                other.min_flag,
            )
            && (self.distinct_names, self.distinct_maybe)
                == (other.distinct_names, other.distinct_maybe)
    }
}

#[test]
fn typed_filters_match_rust_filter_on_random_documents() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_schema, b) = builder("queries_prop");
    let store = rt.block_on(async { ok(b.document::<Item>().build().await) });
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let checked = std::cell::Cell::new(0usize);
    proptest!(config, |(mut docs in prop::collection::vec(item(), 0..25), specs in prop::collection::vec(spec(), 6))| {
        for (i, d) in docs.iter_mut().enumerate() {
            d.id = i as i64;
        }
        let mut aggregates = Vec::new();
        let (db, expected): (Vec<Vec<i64>>, Vec<Vec<i64>>) = rt.block_on(async {
            let mut s = store.lightweight_session();
            let all: Vec<i64> = ok(s.query::<Item>().to_list().await).iter().map(|d| d.id).collect();
            for id in all {
                ok(s.delete::<Item>(&id));
            }
            for d in &docs {
                ok(s.store(d.clone()));
            }
            ok(s.save_changes().await);
            let mut db = Vec::new();
            let mut expected = Vec::new();
            for sp in &specs {
                let filter = build(sp);
                let matching: Vec<&Item> = docs.iter().filter(|d| filter.matches(d)).collect();
                let rust: Vec<i64> = matching.iter().map(|d| d.id).collect();
                let got: Vec<i64> = ok(s.query::<Item>().where_filter(filter.clone()).to_list().await).iter().map(|d| d.id).collect();
                db.push(got);
                expected.push(rust);
                aggregates.push((sp.clone(), Aggregates::of_db(&mut s, &filter).await, Aggregates::of_rust(matching)));
            }
            (db, expected)
        });
        for ((got, want), sp) in db.iter().zip(&expected).zip(&specs) {
            prop_assert_eq!(got, want, "filter {:?}", sp);
        }
        for (sp, got, want) in aggregates.drain(..) {
            prop_assert!(got.agrees_with(&want), "aggregates of {:?}: {:?} in the database, {:?} in Rust", sp, got, want);
        }
        checked.set(checked.get() + specs.len());
    });
    assert!(checked.get() >= 48 * 6, "every case ran");
}

// ---- indexes ----

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[document(gin)]
struct Customer {
    id: Uuid,
    #[document(index)]
    region: String,
    #[document(unique)]
    email: String,
    #[document(index)]
    age: i32,
}

#[tokio::test]
async fn indexed_fields_use_their_column_and_unique_violations_name_the_field() {
    let (schema, b) = builder("queries_index");
    let store = ok(b.document::<Customer>().build().await);
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "INSERT INTO mt_doc_customer (id, data) SELECT gen_random_uuid(), \
         jsonb_build_object('id', gen_random_uuid(), 'region', 'r' || (i % 500), 'email', 'c' || i || '@x', 'age', i % 90) \
         FROM generate_series(1, 12000) AS i; ANALYZE mt_doc_customer",
    )
    .await
    .expect("seed 12,000 rows");
    let mut s = store.lightweight_session();
    let q = s.query::<Customer>().filter(|f| f.region.eq("r42"));
    let sql = q.to_sql();
    assert!(sql.contains("d.mt_f_region"), "{sql}");
    let found = ok(q.to_list().await);
    assert_eq!(found.len(), 24);
    let explain: Vec<String> = raw
        .query(
            &format!("EXPLAIN {}", sql.replace("$1::text::text", "'r42'::text")),
            &[],
        )
        .await
        .expect("explain")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        explain
            .iter()
            .any(|l| l.contains("mt_doc_customer_idx_region")),
        "the indexed query uses the index: {explain:#?}"
    );
    let expected = (1..=12000).filter(|i| i % 90 >= 88).count() as i64;
    assert_eq!(
        ok(s.query::<Customer>().filter(|f| f.age.ge(88)).count().await),
        expected
    );

    ok(s.store(Customer {
        id: Uuid::now_v7(),
        region: "r1".into(),
        email: "c1@x".into(),
        age: 1,
    }));
    let err = s.save_changes().await.expect_err("email taken");
    match &err {
        marten::Error::UniqueViolation {
            document_type,
            field,
            ..
        } => {
            assert_eq!((*document_type, field.as_str()), ("Customer", "email"));
        }
        other => panic!("wrong error {other}"),
    }
    let gin: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'mt_doc_customer_gin'",
            &[],
        )
        .await
        .expect("gin")
        .get(0);
    assert_eq!(gin, 1);
}

#[tokio::test]
async fn several_queries_in_one_round_trip() {
    use marten::QuerySpec;
    let (schema, b) = builder("queries_batch");
    let proxy = marten_testing::CountingProxy::start(&schema.host_port())
        .await
        .expect("proxy");
    let store = ok(b
        .connection_string(schema.url_via(&proxy))
        .document::<CoffeeShop>()
        .document::<Item>()
        .build()
        .await);
    let mut w = store.lightweight_session();
    for (n, r) in [("a", 1), ("b", 2), ("c", 3)] {
        ok(w.store(shop(n, r, "X")));
    }
    ok(w.save_changes().await);
    let mut q = store.query_session();
    for round in 0..2 {
        let mut batch = q.batch();
        let top = batch.list(
            QuerySpec::<CoffeeShop>::new()
                .filter(|f| f.rating.ge(2))
                .order_by(|f| f.rating.desc()),
        );
        let n = batch.count(QuerySpec::<CoffeeShop>::new());
        let none = batch.count(QuerySpec::<Item>::new().filter(|f| f.flag.eq(true)));
        let before = proxy.round_trips();
        let results = ok(batch.execute().await);
        if round == 1 {
            // The first round prepared the statements.
            assert_eq!(
                proxy.round_trips() - before,
                1,
                "three queries, one round trip"
            );
        }
        assert_eq!(names(&ok(results.get(top))), ["c", "b"]);
        assert_eq!(ok(results.get(n)), 3);
        assert_eq!(ok(results.get(none)), 0);
    }
    // A slot taken from another batch's results: its position there holds another
    // query's rows (a count decoded from a list's, or nothing at all). Refused.
    let mut first = q.batch();
    let shops = first.count(QuerySpec::<CoffeeShop>::new());
    let mut second = q.batch();
    let _items = second.list(QuerySpec::<Item>::new());
    let second = ok(second.execute().await);
    match second.get(shops) {
        Err(marten::Error::InvalidQuery(reason)) => {
            assert!(reason.contains("another batch"), "{reason}")
        }
        other => panic!("a slot of another batch: {other:?}"),
    }
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug)]
struct Home {
    city: String,
    zip: i64,
}

/// The plan of `sql` with its parameters replaced by the literals of `literals` (in
/// order, `$1` first), sequential scans turned off on `raw`: whether an index *can*
/// serve the rendered condition, not the planner's cost choice.
async fn plan_without_seqscan(
    raw: &marten::tokio_postgres::Client,
    sql: &str,
    literals: &[&str],
) -> Vec<String> {
    raw.batch_execute("SET enable_seqscan = off")
        .await
        .expect("turn off sequential scans");
    let mut text = sql.to_owned();
    for (i, literal) in literals.iter().enumerate().rev() {
        text = text.replace(&format!("${}::", i + 1), &format!("{literal}::"));
    }
    raw.query(&format!("EXPLAIN {text}"), &[])
        .await
        .expect("explain")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug)]
struct Labels {
    names: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[document(gin)]
struct Parcel {
    id: Uuid,
    tags: Vec<String>,
    #[query(nested)]
    labels: Labels,
}

/// `contains` on a document with a GIN index also tests the document's containment of
/// the element under the field's path, which the index serves, and keeps its answers
/// (negated too, nested too).
#[tokio::test]
async fn contains_uses_the_gin_index_and_keeps_its_meaning() {
    let (schema, b) = builder("queries_gin_contains");
    let store = ok(b.document::<Parcel>().build().await);
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "INSERT INTO mt_doc_parcel (id, data) SELECT gen_random_uuid(), \
         jsonb_build_object('id', gen_random_uuid(), \
         'tags', jsonb_build_array('t' || (i % 1000), 'u' || (i % 7)), \
         'labels', jsonb_build_object('names', jsonb_build_array('n' || (i % 500)))) \
         FROM generate_series(1, 20000) AS i; ANALYZE mt_doc_parcel",
    )
    .await
    .expect("seed 20,000 rows");
    let mut s = store.lightweight_session();
    let q = s
        .query::<Parcel>()
        .filter(|f| f.tags.contains("t42".to_owned()));
    let sql = q.to_sql();
    let found = ok(q.to_list().await);
    assert_eq!(found.len(), 20);
    assert!(found.iter().all(|d| d.tags.contains(&"t42".to_owned())));
    let explain =
        plan_without_seqscan(&raw, &sql, &["'{\"tags\":[\"t42\"]}'", "'[\"t42\"]'"]).await;
    assert!(
        explain.iter().any(|l| l.contains("mt_doc_parcel_gin")),
        "contains uses the GIN index: {sql}\n{explain:#?}"
    );
    let expected = |p: &dyn Fn(i64) -> bool| (1..=20000).filter(|i| p(*i)).count() as i64;
    assert_eq!(
        ok(s.query::<Parcel>()
            .filter(|f| f.tags.contains("u3".to_owned()).not())
            .count()
            .await),
        expected(&|i| i % 7 != 3)
    );
    assert_eq!(
        ok(s.query::<Parcel>()
            .filter(|f| f
                .labels
                .names
                .contains("n7".to_owned())
                .and(f.tags.contains("u0".to_owned())))
            .count()
            .await),
        expected(&|i| i % 500 == 7 && i % 7 == 0)
    );
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[document(gin)]
struct Subscriber {
    id: Uuid,
    #[query(nested)]
    address: Home,
    active: bool,
}

#[tokio::test]
async fn equalities_use_the_gin_index_and_keep_their_meaning() {
    let (schema, b) = builder("queries_gin");
    let store = ok(b.document::<Subscriber>().build().await);
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "INSERT INTO mt_doc_subscriber (id, data) SELECT gen_random_uuid(), \
         jsonb_build_object('id', gen_random_uuid(), 'address', \
         jsonb_build_object('city', 'c' || (i % 1000), 'zip', i % 700), 'active', i % 3 = 0) \
         FROM generate_series(1, 20000) AS i; ANALYZE mt_doc_subscriber",
    )
    .await
    .expect("seed 20,000 rows");
    let mut s = store.lightweight_session();
    let q = s.query::<Subscriber>().filter(|f| f.address.city.eq("c42"));
    let sql = q.to_sql();
    assert!(sql.contains("@>"), "{sql}");
    let found = ok(q.to_list().await);
    assert_eq!(found.len(), 20);
    assert!(found.iter().all(|d| d.address.city == "c42"));
    // Whether the index *can* serve the rendered condition, not the planner's cost choice:
    // the containment estimate comes from a jsonb histogram whose entries depend on the
    // random ids, and with an estimate of 101 rows a sequential scan was once cheaper.
    let explain =
        plan_without_seqscan(&raw, &sql, &["'{\"address\":{\"city\":\"c42\"}}'", "'c42'"]).await;
    assert!(
        explain.iter().any(|l| l.contains("mt_doc_subscriber_gin")),
        "the equality uses the GIN index: {explain:#?}"
    );
    // The same answers as the plain equality: numbers, booleans, negation, combinations.
    let expected = |p: &dyn Fn(i64) -> bool| (1..=20000).filter(|i| p(*i)).count() as i64;
    assert_eq!(
        ok(s.query::<Subscriber>()
            .filter(|f| f.address.zip.eq(5))
            .count()
            .await),
        expected(&|i| i % 700 == 5)
    );
    assert_eq!(
        ok(s.query::<Subscriber>()
            .filter(|f| f.active.eq(true).and(f.address.zip.eq(6)))
            .count()
            .await),
        expected(&|i| i % 3 == 0 && i % 700 == 6)
    );
    assert_eq!(
        ok(s.query::<Subscriber>()
            .filter(|f| f.address.city.eq("c7").not())
            .count()
            .await),
        expected(&|i| i % 1000 != 7)
    );
}
