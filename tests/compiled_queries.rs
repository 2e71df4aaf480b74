//! Compiled queries (`CompiledQuery`, `session.query_compiled`): results equal the same
//! query run uncompiled, for every return kind and several values; a second run of a
//! type in a shape it ran in is not rendered again, a new shape (an optional filter, an
//! include of the deleted rows, a paging, `None` on an indexed field) is; tenant sessions
//! stay scoped; and a property test over random values checks the cached statement with
//! the collected parameters returns exactly what a fresh rendering returns.

mod common;

use common::{builder, ok};
use marten::compiled::{Count, Exists, First, Single, ToList, ToPage};
use marten::prelude::*;
use marten::QuerySpec;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(gin, soft_delete)]
struct Shop {
    id: Uuid,
    name: String,
    city: String,
    rating: i32,
    #[document(index)]
    nick: Option<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct Purchase {
    id: Uuid,
    customer: String,
    total: i64,
}

/// The shops of a city, the best first, optionally above a rating, optionally the
/// deleted ones too, optionally a page.
#[derive(Debug, Clone)]
struct ShopsInCity {
    city: String,
    min_rating: Option<i32>,
    include_deleted: bool,
    page: Option<(usize, usize)>,
}

impl CompiledQuery for ShopsInCity {
    type Document = Shop;
    type Returns = ToList;

    fn build(&self, query: QuerySpec<Shop>) -> QuerySpec<Shop> {
        let mut q = query
            .filter(|f| f.city.eq(self.city.as_str()))
            .order_by(|f| f.rating.desc())
            .order_by(|f| f.name.asc());
        if let Some(min) = self.min_rating {
            q = q.filter(|f| f.rating.ge(min));
        }
        if self.include_deleted {
            q = q.include_deleted();
        }
        if let Some((skip, take)) = self.page {
            q = q.skip(skip).take(take);
        }
        q
    }
}

/// The best shop of a city.
struct BestInCity(String);

impl CompiledQuery for BestInCity {
    type Document = Shop;
    type Returns = First;

    fn build(&self, query: QuerySpec<Shop>) -> QuerySpec<Shop> {
        query
            .filter(|f| f.city.eq(self.0.as_str()))
            .order_by(|f| f.rating.desc())
    }
}

/// How many shops are rated at least this.
struct RatedAtLeast(i32);

impl CompiledQuery for RatedAtLeast {
    type Document = Shop;
    type Returns = Count;

    fn build(&self, query: QuerySpec<Shop>) -> QuerySpec<Shop> {
        query.filter(|f| f.rating.ge(self.0))
    }
}

/// The shop of a name, if exactly one.
struct Named(&'static str);

impl CompiledQuery for Named {
    type Document = Shop;
    type Returns = Single;

    fn build(&self, query: QuerySpec<Shop>) -> QuerySpec<Shop> {
        query.filter(|f| f.name.eq(self.0))
    }
}

/// Whether a shop has this nick (`None`: a shop without one), on an indexed field.
struct Nicked(Option<&'static str>);

impl CompiledQuery for Nicked {
    type Document = Shop;
    type Returns = Exists;

    fn build(&self, query: QuerySpec<Shop>) -> QuerySpec<Shop> {
        query.filter(|f| f.nick.eq(self.0.map(str::to_owned)))
    }
}

/// A page of the shops of a city, by name, and how many there are.
struct CityPage {
    city: &'static str,
    page: usize,
}

impl CompiledQuery for CityPage {
    type Document = Shop;
    type Returns = ToPage;

    fn build(&self, query: QuerySpec<Shop>) -> QuerySpec<Shop> {
        query
            .filter(|f| f.city.eq(self.city))
            .order_by(|f| f.name.asc())
            .skip(self.page * 2)
            .take(2)
    }
}

/// A customer's purchases (a conjoined type: the session's tenant's only).
struct PurchasesOf(&'static str);

impl CompiledQuery for PurchasesOf {
    type Document = Purchase;
    type Returns = ToList;

    fn build(&self, query: QuerySpec<Purchase>) -> QuerySpec<Purchase> {
        query
            .filter(|f| f.customer.eq(self.0))
            .order_by(|f| f.total.asc())
    }
}

const CITIES: [&str; 3] = ["Seattle", "Oakland", "Lisbon"];

fn shop(i: usize) -> Shop {
    Shop {
        id: Uuid::now_v7(),
        name: format!("shop {i:02}"),
        city: CITIES[i % 3].to_owned(),
        rating: i32::try_from(i % 5).unwrap_or(0),
        nick: i.is_multiple_of(4).then(|| format!("n{}", i % 8)),
    }
}

/// A store with 18 shops, 2 of them deleted.
async fn seeded(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Shop>().document::<Purchase>().build().await);
    let mut s = store.lightweight_session();
    let shops: Vec<Shop> = (0..18).map(shop).collect();
    for x in &shops {
        ok(s.store(x.clone()));
    }
    ok(s.save_changes().await);
    for x in &shops[..2] {
        ok(s.delete::<Shop>(&x.id));
    }
    ok(s.save_changes().await);
    (schema, store)
}

fn names(shops: &[Shop]) -> Vec<&str> {
    shops.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test]
async fn compiled_results_equal_the_same_queries_run_uncompiled() {
    let (_schema, store) = seeded("compiled_equal").await;
    let mut s = store.query_session();
    for city in CITIES {
        let q = ShopsInCity {
            city: city.to_owned(),
            min_rating: None,
            include_deleted: false,
            page: None,
        };
        let compiled = ok(s.query_compiled(&q).await);
        let plain = ok(s
            .query::<Shop>()
            .filter(|f| f.city.eq(city))
            .order_by(|f| f.rating.desc())
            .order_by(|f| f.name.asc())
            .to_list()
            .await);
        assert!(!plain.is_empty());
        assert_eq!(names(&compiled), names(&plain), "{city}");
        let best = ok(s.query_compiled(&BestInCity(city.to_owned())).await);
        let plain_best = ok(s
            .query::<Shop>()
            .filter(|f| f.city.eq(city))
            .order_by(|f| f.rating.desc())
            .first()
            .await);
        assert_eq!(best, plain_best, "{city}");
    }
    assert_eq!(
        ok(s.query_compiled(&BestInCity("Nowhere".into())).await),
        None
    );
    for rating in 0..6 {
        let n = ok(s.query_compiled(&RatedAtLeast(rating)).await);
        let plain = ok(s
            .query::<Shop>()
            .filter(|f| f.rating.ge(rating))
            .count()
            .await);
        assert_eq!(n, plain, "rating {rating}");
    }
    for (city, page) in [
        ("Seattle", 0),
        ("Oakland", 2),
        ("Lisbon", 9),
        ("Nowhere", 0),
    ] {
        let compiled = ok(s.query_compiled(&CityPage { city, page }).await);
        let plain = ok(s
            .query::<Shop>()
            .filter(|f| f.city.eq(city))
            .order_by(|f| f.name.asc())
            .to_page(page, 2)
            .await);
        assert_eq!(compiled.total, plain.total, "{city}");
        assert_eq!(
            names(&compiled.items),
            names(&plain.items),
            "{city} page {page}"
        );
    }
    let single = ok(s.query_compiled(&Named("shop 07")).await);
    assert_eq!(single.map(|x| x.name), Some("shop 07".to_owned()));
    assert_eq!(ok(s.query_compiled(&Named("none")).await), None);
    assert!(ok(s.query_compiled(&Nicked(Some("n4"))).await));
    assert!(!ok(s.query_compiled(&Nicked(Some("n3"))).await));
    assert!(ok(s.query_compiled(&Nicked(None)).await));
}

#[tokio::test]
async fn a_second_run_reuses_the_statement_and_a_new_shape_renders_its_own() {
    let (_schema, store) = seeded("compiled_cache").await;
    let mut s = store.lightweight_session();
    let renders = || store.compiled_query_stats().renders;
    let q = |city: &str, min_rating, include_deleted, page| ShopsInCity {
        city: city.to_owned(),
        min_rating,
        include_deleted,
        page,
    };
    assert_eq!(renders(), 0);
    let all = ok(s.query_compiled(&q("Seattle", None, false, None)).await);
    assert_eq!(renders(), 1);
    for city in CITIES {
        let again = ok(s.query_compiled(&q(city, None, false, None)).await);
        assert!(again.iter().all(|x| x.city == city));
    }
    assert_eq!(renders(), 1, "runs in the same shape are not rendered");
    // An optional filter, the deleted rows, a page: each a shape of its own, each right.
    let rated = ok(s.query_compiled(&q("Seattle", Some(3), false, None)).await);
    assert_eq!(renders(), 2);
    let expected: Vec<&str> = all
        .iter()
        .filter(|x| x.rating >= 3)
        .map(|x| x.name.as_str())
        .collect();
    assert_eq!(names(&rated), expected);
    let with_deleted = ok(s.query_compiled(&q("Seattle", None, true, None)).await);
    assert_eq!(renders(), 3);
    assert_eq!(with_deleted.len(), all.len() + 1, "shop 00 is deleted");
    let page = ok(s
        .query_compiled(&q("Seattle", None, false, Some((1, 2))))
        .await);
    assert_eq!(names(&page), names(&all[1..3]));
    // The shapes are cached: running them again with other values renders nothing.
    let before = renders();
    let rated = ok(s.query_compiled(&q("Oakland", Some(4), false, None)).await);
    assert!(rated.iter().all(|x| x.rating >= 4 && x.city == "Oakland"));
    let page = ok(s
        .query_compiled(&q("Oakland", None, false, Some((0, 1))))
        .await);
    assert_eq!(page.len(), 1);
    assert_eq!(
        ok(s.query_compiled(&q("Seattle", None, false, None)).await),
        all
    );
    assert_eq!(renders(), before);
    // `None` and `Some` on an indexed field render differently (`IS NULL`): two shapes.
    assert!(ok(s.query_compiled(&Nicked(None)).await));
    assert!(ok(s.query_compiled(&Nicked(Some("n0"))).await));
    assert!(!ok(s.query_compiled(&Nicked(Some("zz"))).await));
    assert_eq!(renders(), before + 2);
    assert_eq!(store.compiled_query_stats().cached, 6);
}

#[tokio::test]
async fn tenant_sessions_stay_scoped_and_share_the_statement() {
    let (_schema, store) = seeded("compiled_tenants").await;
    for (tenant, totals) in [("a", [5i64, 1]), ("b", [7, 3])] {
        let mut s = ok(store.for_tenant(tenant)).lightweight_session();
        for total in totals {
            ok(s.store(Purchase {
                id: Uuid::now_v7(),
                customer: "ann".into(),
                total,
            }));
        }
        ok(s.save_changes().await);
    }
    let totals = |ps: Vec<Purchase>| ps.into_iter().map(|p| p.total).collect::<Vec<_>>();
    let mut a = ok(store.for_tenant("a")).query_session();
    let mut b = ok(store.for_tenant("b")).identity_session();
    assert_eq!(
        totals(ok(a.query_compiled(&PurchasesOf("ann")).await)),
        [1, 5]
    );
    assert_eq!(
        totals(ok(b.query_compiled(&PurchasesOf("ann")).await)),
        [3, 7]
    );
    assert_eq!(
        totals(ok(a.query_compiled(&PurchasesOf("bob")).await)),
        Vec::<i64>::new()
    );
    assert_eq!(store.compiled_query_stats().renders, 1);
    // Without a tenant, a conjoined type cannot be queried.
    let mut none = store.query_session();
    match none.query_compiled(&PurchasesOf("ann")).await {
        Err(Error::TenantRequired { .. }) => {}
        other => panic!("expected TenantRequired, got {other:?}"),
    }
}

/// Random values of [`ShopsInCity`], each run compiled (from the cache after the first
/// run of its shape) and rendered afresh through a batch of the same spec.
#[test]
fn the_cached_statement_returns_what_a_fresh_rendering_returns() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_schema, store) = rt.block_on(seeded("compiled_prop"));
    let config = ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let query = (
        proptest::sample::select(vec!["Seattle", "Oakland", "Lisbon", "Nowhere"]),
        proptest::option::of(-1i32..6),
        any::<bool>(),
        proptest::option::of((0usize..8, 0usize..8)),
    )
        .prop_map(|(city, min_rating, include_deleted, page)| ShopsInCity {
            city: city.to_owned(),
            min_rating,
            include_deleted,
            page,
        });
    proptest!(config, |(queries in proptest::collection::vec(query, 1..6))| {
        let (compiled, fresh) = rt.block_on(async {
            let mut s = store.query_session();
            let mut compiled = Vec::new();
            let mut fresh = Vec::new();
            for q in &queries {
                compiled.push(ok(s.query_compiled(q).await));
                let mut batch = s.batch();
                let item = batch.list(q.build(QuerySpec::new()));
                let results = ok(batch.execute().await);
                fresh.push(ok(results.get(item)));
            }
            (compiled, fresh)
        });
        for ((c, f), q) in compiled.iter().zip(&fresh).zip(&queries) {
            prop_assert_eq!(c, f, "{:?}", q);
        }
    });
    // 2 x 2 x 2 shapes at most, whatever the values.
    assert!(store.compiled_query_stats().renders <= 8);
}
