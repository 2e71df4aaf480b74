//! The collecting pass of a spec against its rendering: over random specs (filters on a
//! plain, an indexed and an indexed `Option` field, raw fragments, sorts, paging, the
//! total form, a selection, the full-text rank, the tenant and soft-deleted rows), the
//! parameters collected are those render binds, in order, and two specs with the same
//! shape key render the same text.

use marten_core::query::{Base, Field, Filter, Order, RawParam};
use proptest::prelude::*;

use super::collect::Statement;
use super::deleted::Deleted;
use super::render::Sql;
use super::spec::QuerySpec;
use super::statement::Scoped;
use crate::tables::documents::SearchKind;
use crate::tenant_key::TenantKey;

struct Doc {
    name: String,
    rating: i32,
    nick: Option<String>,
}

fn name() -> Field<Doc, String> {
    Base::root().field("name", None, |d: &Doc| &d.name)
}

fn rating() -> Field<Doc, i32> {
    Base::root().field("rating", Some(("mt_f_rating", "integer")), |d: &Doc| {
        &d.rating
    })
}

fn nick() -> Field<Doc, Option<String>> {
    Base::root().field("nick", Some(("mt_f_nick", "text")), |d: &Doc| &d.nick)
}

/// The shape of a spec, without its values.
#[derive(Debug, Clone)]
struct Shape {
    filters: Vec<u8>,
    orders: Vec<(bool, bool)>,
    take: bool,
    skip: bool,
    with_total: bool,
    selection: bool,
    searches: usize,
    deleted: u8,
    tenant: u8,
    gin: bool,
    count: bool,
}

/// Values, taken in turn (cycled).
#[derive(Debug, Clone)]
struct Values {
    texts: Vec<Option<String>>,
    numbers: Vec<i32>,
    next: usize,
}

impl Values {
    fn text(&mut self) -> Option<String> {
        self.next += 1;
        self.texts[self.next % self.texts.len()].clone()
    }

    fn number(&mut self) -> i32 {
        self.next += 1;
        self.numbers[self.next % self.numbers.len()]
    }

    fn filter(&mut self, kind: u8) -> Filter<Doc> {
        match kind % 7 {
            0 => name().eq(self.text().unwrap_or_default()),
            1 => rating().gt(self.number()),
            2 => nick().eq(self.text()),
            3 => nick().ne(self.text()),
            4 => {
                let n = usize::try_from(self.number().rem_euclid(3)).unwrap_or(0);
                nick().is_one_of((0..n).map(|_| self.text()).collect::<Vec<_>>())
            }
            5 => rating().is_one_of([self.number(), self.number()]),
            _ => Filter::raw(
                "$1 = $2",
                vec![
                    RawParam::Text(self.text().unwrap_or_default()),
                    RawParam::Int(i64::from(self.number())),
                ],
            ),
        }
    }
}

fn order((on_rating, descending): (bool, bool)) -> Order<Doc> {
    match (on_rating, descending) {
        (true, true) => rating().desc(),
        (true, false) => rating().asc(),
        (false, true) => name().desc(),
        (false, false) => name().asc(),
    }
}

/// The spec of `shape` with `values`.
fn build(shape: &Shape, mut values: Values) -> QuerySpec<Doc> {
    let deleted =
        [Deleted::Exclude, Deleted::Include, Deleted::Only][usize::from(shape.deleted % 3)];
    let number = |v: &mut Values| usize::try_from(v.number().rem_euclid(50)).unwrap_or(0);
    QuerySpec {
        filters: shape.filters.iter().map(|k| values.filter(*k)).collect(),
        orders: shape.orders.iter().copied().map(order).collect(),
        take: shape.take.then(|| number(&mut values)),
        skip: shape.skip.then(|| number(&mut values)),
        with_total: shape.with_total,
        shape: shape.selection.then(|| "d.data -> 'name'".to_owned()),
        deleted,
        gin: shape.gin,
        searches: (0..shape.searches)
            .map(|_| (SearchKind::Plain, values.text().unwrap_or_default()))
            .collect(),
        rank: (shape.searches > 0).then_some("english"),
        ..QuerySpec::default()
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        proptest::collection::vec(any::<u8>(), 0..4),
        proptest::collection::vec(any::<(bool, bool)>(), 0..3),
        any::<(bool, bool, bool, bool)>(),
        (0usize..3, any::<u8>(), any::<u8>(), any::<(bool, bool)>()),
    )
        .prop_map(
            |(
                filters,
                orders,
                (take, skip, with_total, selection),
                (searches, deleted, tenant, (gin, count)),
            )| {
                Shape {
                    filters,
                    orders,
                    take,
                    skip,
                    with_total,
                    selection,
                    searches,
                    deleted,
                    tenant,
                    gin,
                    count,
                }
            },
        )
}

fn values() -> impl Strategy<Value = Values> {
    (
        proptest::collection::vec(proptest::option::of("[ab']{0,3}"), 1..5),
        proptest::collection::vec(-3i32..60, 1..5),
    )
        .prop_map(|(texts, numbers)| Values {
            texts,
            numbers,
            next: 0,
        })
}

/// The rendered text and parameters, and the collected parameters and key.
fn run(shape: &Shape, values: Values) -> (String, String, String, Vec<u8>) {
    let kind = if shape.count {
        Statement::Count
    } else {
        Statement::Select
    };
    let spec = build(shape, values);
    let rendered = spec.render_from("t", scoped(shape, &spec), kind);
    let (collected, key) = spec.collect_from(scoped(shape, &spec), kind);
    let debug = |sql: &Sql| format!("{:?}", sql.params);
    (
        rendered.text.clone(),
        debug(&rendered),
        debug(&collected),
        key.into_bytes().to_vec(),
    )
}

/// The rows `shape` scopes to: no tenant, the tenant left unset, or one; the rows of
/// a soft-deleted table its choice keeps.
fn scoped(shape: &Shape, spec: &QuerySpec<Doc>) -> Scoped {
    let tenant = match shape.tenant % 3 {
        0 => None,
        1 => Some(None),
        _ => Some(marten_core::TenantId::new("t1").ok().map(TenantKey)),
    };
    Scoped {
        tenant,
        deleted: spec.deleted.clause(true),
    }
}

proptest! {
    #[test]
    fn a_spec_collects_what_it_renders_and_equal_keys_mean_equal_text(
        a in shape(),
        b in shape(),
        v1 in values(),
        v2 in values(),
        v3 in values(),
    ) {
        let first = run(&a, v1);
        let same_shape = run(&a, v2);
        let other = run(&b, v3);
        for (_, params, collected, _) in [&first, &same_shape, &other] {
            prop_assert_eq!(collected, params);
        }
        for r in [&same_shape, &other] {
            if r.3 == first.3 {
                prop_assert_eq!(&r.0, &first.0);
            }
        }
    }
}
