//! Query behaviours Marten's LINQ tests (`src/LinqTests`, and `Bugs/` there) check,
//! ported to the typed query API: NULL and missing values in comparisons and ordering,
//! nested paths, collections (contains, is_empty, any, n levels deep), string operators
//! with LIKE wildcards, backslashes and quotes, numbers at their edges (beyond 2^53,
//! `u64`, negative zero, floats), enums stored as strings, negated and deeply nested
//! boolean logic, constant filters, soft deletes and tenants under `or`, ordering by
//! several keys with skip / take / pages, selections after paging, and first / single.
//!
//! Every expected answer is computed in the test from the documents it stored, with
//! plain Rust, so a wrong SQL translation shows as a difference.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::query::{Comparable, Filter, ValueKind};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A document with an `i64` id, so expectations are lists of ids.
trait Keyed {
    fn key(&self) -> i64;
}

macro_rules! keyed {
    ($($t:ty),* $(,)?) => {
        $(impl Keyed for $t {
            fn key(&self) -> i64 {
                self.id
            }
        })*
    };
}

/// The sorted ids of the documents `keep` accepts.
fn expected<T: Keyed>(docs: &[T], keep: impl Fn(&T) -> bool) -> Vec<i64> {
    let mut v: Vec<i64> = docs.iter().filter(|d| keep(d)).map(Keyed::key).collect();
    v.sort_unstable();
    v
}

/// The ids of `found`, in their order.
fn keys<T: Keyed>(found: &[T]) -> Vec<i64> {
    found.iter().map(Keyed::key).collect()
}

/// The ids of `found`, sorted.
fn sorted_keys<T: Keyed>(found: &[T]) -> Vec<i64> {
    let mut v = keys(found);
    v.sort_unstable();
    v
}

/// A Rust predicate on documents of type `T`.
type Pred<T> = Box<dyn Fn(&T) -> bool>;

/// A labelled filter and the Rust predicate it must agree with.
type Case<T> = (String, Filter<T>, Pred<T>);

fn case<T>(
    label: impl Into<String>,
    filter: Filter<T>,
    keep: impl Fn(&T) -> bool + 'static,
) -> Case<T> {
    (label.into(), filter, Box::new(keep))
}

/// Runs every case of `$cases` as a query of `$t` on session `$s` and compares the ids
/// found with the ids the case's predicate keeps among `$docs`.
macro_rules! check_cases {
    ($s:expr, $t:ty, $docs:expr, $cases:expr) => {{
        let mut wrong = Vec::new();
        for (label, filter, keep) in $cases {
            let found = ok($s.query::<$t>().where_filter(filter).to_list().await);
            let (got, want) = (sorted_keys(&found), expected(&$docs, |d| keep(d)));
            if got != want {
                wrong.push(format!("case `{label}`: found {got:?}, expected {want:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} case(s) differ:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }};
}

/// Stores every document of `$docs` in one lightweight session of `$store`.
macro_rules! seed {
    ($store:expr, $docs:expr) => {{
        let mut s = $store.lightweight_session();
        for d in $docs.iter() {
            ok(s.store(d.clone()));
        }
        ok(s.save_changes().await);
    }};
}

/// Marten's `Colors`, serialized as strings (`EnumStorage.AsString`), queryable as text.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Color {
    Red,
    Blue,
    Green,
    Orange,
    Yellow,
}

impl Comparable for Color {
    const KIND: ValueKind = ValueKind::Text;
}

impl marten::ColumnType for Color {
    const SQL_TYPE: &'static str = "text";
}

// ---------------------------------------------------------------------------------------
// NULLs and Option fields
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Nullable {
    id: i64,
    flag: Option<bool>,
    #[document(index)]
    flag_col: Option<bool>,
    number: Option<i32>,
    #[document(index)]
    number_col: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct InnerTarget {
    number: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Holder {
    id: i64,
    text: String,
    inner: Option<InnerTarget>,
    another: String,
}

keyed!(Nullable, Holder);

/// `Acceptance/nullable_types.cs`: `query_against_nullable_bool_not_true`,
/// `query_against_nullable_bool_not_false`, `query_against_null_1` / `_2` / `_3` / `_6`,
/// `query_against_not_null`; `Acceptance/where_clauses.cs`: `null == x.NullableNumber`,
/// `x.NullableNumber != 3`. A `None` is not equal to a value, so `ne(true)` matches `None`
/// and `false`; `is_none` / `is_some` / `eq(None)` split the documents; the same answers
/// on the `jsonb` value and on an indexed field's NULL-able column.
#[tokio::test]
async fn option_fields_compare_like_rust_options_on_jsonb_and_on_columns() {
    let (_schema, b) = builder("mq_nullable");
    let store = ok(b.document::<Nullable>().build().await);
    let flags = [
        None,
        Some(true),
        Some(false),
        None,
        Some(true),
        Some(false),
        None,
        Some(true),
    ];
    let numbers = [
        Some(3),
        None,
        None,
        Some(3),
        None,
        Some(6),
        Some(7),
        Some(5),
    ];
    let docs: Vec<Nullable> = (0..8)
        .map(|i| Nullable {
            id: i as i64 + 1,
            flag: flags[i],
            flag_col: flags[i],
            number: numbers[i],
            number_col: numbers[i],
        })
        .collect();
    seed!(store, docs);
    let f = Nullable::fields();
    let mut cases: Vec<Case<Nullable>> = Vec::new();
    for (name, flag, number) in [
        ("jsonb", f.flag.clone(), f.number.clone()),
        ("column", f.flag_col.clone(), f.number_col.clone()),
    ] {
        cases.extend([
            case(
                format!("{name}: flag != true"),
                flag.ne(true),
                |d: &Nullable| d.flag != Some(true),
            ),
            case(
                format!("{name}: flag != false"),
                flag.ne(false),
                |d: &Nullable| d.flag != Some(false),
            ),
            case(
                format!("{name}: !(flag == true)"),
                flag.eq(true).not(),
                |d: &Nullable| d.flag != Some(true),
            ),
            case(
                format!("{name}: flag == None"),
                flag.eq(None::<bool>),
                |d: &Nullable| d.flag.is_none(),
            ),
            case(
                format!("{name}: flag != None"),
                flag.ne(None::<bool>),
                |d: &Nullable| d.flag.is_some(),
            ),
            case(
                format!("{name}: flag is_none"),
                flag.is_none(),
                |d: &Nullable| d.flag.is_none(),
            ),
            case(
                format!("{name}: !flag.is_some"),
                flag.is_some().not(),
                |d: &Nullable| d.flag.is_none(),
            ),
            case(
                format!("{name}: number == 3"),
                number.eq(3),
                |d: &Nullable| d.number == Some(3),
            ),
            case(
                format!("{name}: number != 3"),
                number.ne(3),
                |d: &Nullable| d.number != Some(3),
            ),
            case(
                format!("{name}: number is_some"),
                number.is_some(),
                |d: &Nullable| d.number.is_some(),
            ),
            case(
                format!("{name}: number in (None, 6)"),
                number.is_one_of([None, Some(6)]),
                |d: &Nullable| d.number.is_none() || d.number == Some(6),
            ),
            case(
                format!("{name}: !number in (None, 6)"),
                number.is_one_of([None, Some(6)]).not(),
                |d: &Nullable| !(d.number.is_none() || d.number == Some(6)),
            ),
            case(
                format!("{name}: number is_none || number == 7"),
                number.is_none().or(number.eq(7)),
                |d: &Nullable| d.number.is_none() || d.number == Some(7),
            ),
        ]);
    }
    let mut s = store.query_session();
    check_cases!(s, Nullable, docs, cases);
    // The counts of the Marten tests themselves.
    assert_eq!(
        ok(s.query::<Nullable>()
            .filter(|f| f.number.is_none())
            .count()
            .await),
        3
    );
    assert_eq!(
        ok(s.query::<Nullable>()
            .filter(|f| f.flag_col.ne(true))
            .count()
            .await),
        5
    );
}

/// `Bugs/Bug_503_query_on_null_complex_object.cs`:
/// `should_not_blow_up_when_querying_for_null_object`; `Acceptance/where_clauses.cs`:
/// `x.Inner == null`, `x.Inner != null`. A nested object that is `None` (JSON `null`)
/// is told apart from one that is present, combined with another filter.
#[tokio::test]
async fn a_null_nested_object_is_none_and_a_present_one_is_some() {
    let (_schema, b) = builder("mq_null_object");
    let store = ok(b.document::<Holder>().build().await);
    let docs = vec![
        Holder {
            id: 1,
            text: "Something".into(),
            inner: Some(InnerTarget { number: 0 }),
            another: "first".into(),
        },
        Holder {
            id: 2,
            text: "Something".into(),
            inner: None,
            another: "second".into(),
        },
        Holder {
            id: 3,
            text: "Else".into(),
            inner: Some(InnerTarget { number: 1 }),
            another: "third".into(),
        },
    ];
    seed!(store, docs);
    let mut s = store.query_session();
    let found = ok(s
        .query::<Holder>()
        .filter(|f| f.text.eq("Something").and(f.inner.is_some()))
        .to_list()
        .await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].another, "first");
    let f = Holder::fields();
    let cases: Vec<Case<Holder>> = vec![
        case("inner is_none", f.inner.is_none(), |d: &Holder| {
            d.inner.is_none()
        }),
        case("inner is_some", f.inner.is_some(), |d: &Holder| {
            d.inner.is_some()
        }),
        case(
            "!(inner is_none) && text != Something",
            f.inner.is_none().not().and(f.text.ne("Something")),
            |d: &Holder| d.inner.is_some() && d.text != "Something",
        ),
    ];
    check_cases!(s, Holder, docs, cases);
}

// ---------------------------------------------------------------------------------------
// Nested paths
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Deepest {
    long_value: i64,
    label: String,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Middle {
    number: i32,
    #[serde(rename = "txt")]
    text: String,
    flag: bool,
    #[query(nested)]
    deepest: Deepest,
    tags: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Outer {
    id: i64,
    number: i32,
    #[query(nested)]
    inner_part: Middle,
}

keyed!(Outer);

fn outer(id: i64, number: i32, text: &str, long_value: i64, label: &str, tags: &[&str]) -> Outer {
    Outer {
        id,
        number: id as i32,
        inner_part: Middle {
            number,
            text: text.into(),
            flag: id % 2 == 0,
            deepest: Deepest {
                long_value,
                label: label.into(),
            },
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        },
    }
}

/// `Acceptance/deep_searches.cs`: `query_two_deep`, `query_three_deep`,
/// `order_by_2_deep`; `Acceptance/casing_support.cs` / `json_naming_attributes.cs`:
/// nested fields under their serialized names (`rename_all` and `rename` of the nested
/// types). Filters and sorts two and three levels deep, a collection inside a nested
/// object, and negations over nested paths.
#[tokio::test]
async fn two_and_three_levels_deep_filters_and_sorts_use_the_serialized_names() {
    let (_schema, b) = builder("mq_deep");
    let store = ok(b.document::<Outer>().build().await);
    let docs = vec![
        outer(1, 1, "Jeremy", 1, "d", &["a"]),
        outer(2, 2, "Max", 2, "b", &["b", "c"]),
        outer(3, 1, "Declan", 1, "a", &[]),
        outer(4, 2, "Lindsey", 2, "c", &["b"]),
        outer(5, 3, "Russell", 3, "e", &["c"]),
        outer(6, 2, "Max", 1, "f", &["a", "b"]),
    ];
    seed!(store, docs);
    let mut s = store.query_session();

    // order_by_2_deep: Inner.Number == 2 ordered by Inner.String (ties by id).
    let found = ok(s
        .query::<Outer>()
        .filter(|f| f.inner_part.number.eq(2))
        .order_by(|f| f.inner_part.text.asc())
        .to_list()
        .await);
    let mut want: Vec<&Outer> = docs.iter().filter(|d| d.inner_part.number == 2).collect();
    want.sort_by(|a, b| {
        (a.inner_part.text.as_str(), a.id).cmp(&(b.inner_part.text.as_str(), b.id))
    });
    assert_eq!(keys(&found), want.iter().map(|d| d.id).collect::<Vec<_>>());
    let texts: Vec<&str> = found.iter().map(|d| d.inner_part.text.as_str()).collect();
    assert_eq!(texts, ["Lindsey", "Max", "Max"]);

    // query_three_deep: Inner.Inner.Long == 1.
    let found = ok(s
        .query::<Outer>()
        .filter(|f| f.inner_part.deepest.long_value.eq(1))
        .to_list()
        .await);
    assert_eq!(
        sorted_keys(&found),
        expected(&docs, |d| d.inner_part.deepest.long_value == 1)
    );

    // Sorted three deep, descending.
    let found = ok(s
        .query::<Outer>()
        .order_by(|f| f.inner_part.deepest.label.desc())
        .to_list()
        .await);
    let mut want: Vec<&Outer> = docs.iter().collect();
    want.sort_by(|a, b| b.inner_part.deepest.label.cmp(&a.inner_part.deepest.label));
    assert_eq!(keys(&found), want.iter().map(|d| d.id).collect::<Vec<_>>());

    let f = Outer::fields();
    let cases: Vec<Case<Outer>> = vec![
        case(
            "inner.flag == false",
            f.inner_part.flag.eq(false),
            |d: &Outer| !d.inner_part.flag,
        ),
        case(
            "!inner.flag",
            f.inner_part.flag.eq(true).not(),
            |d: &Outer| !d.inner_part.flag,
        ),
        case(
            "inner.tags contains b",
            f.inner_part.tags.contains("b"),
            |d: &Outer| d.inner_part.tags.iter().any(|t| t == "b"),
        ),
        case(
            "inner.tags is_empty",
            f.inner_part.tags.is_empty(),
            |d: &Outer| d.inner_part.tags.is_empty(),
        ),
        case(
            "!(inner.inner.long >= 2) || inner.text starts L",
            f.inner_part
                .deepest
                .long_value
                .ge(2)
                .not()
                .or(f.inner_part.text.starts_with("L")),
            |d: &Outer| d.inner_part.deepest.long_value < 2 || d.inner_part.text.starts_with('L'),
        ),
        case(
            "inner.number > 1 && number <= 4",
            f.inner_part.number.gt(1).and(f.number.le(4)),
            |d: &Outer| d.inner_part.number > 1 && d.number <= 4,
        ),
    ];
    check_cases!(s, Outer, docs, cases);
}

// ---------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Named {
    id: i64,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Person {
    id: i64,
    first_name: String,
    nickname: Option<String>,
    user_name: String,
}

keyed!(Named, Person);

/// `Bugs/Bug_3024_wildcards_in_string_insensitive_comparisons.cs` (both tests),
/// `Bugs/Bug_4169_compiled_query_contains_startswith_endswith_escape.cs` (all three),
/// `Acceptance/string_filtering.cs`:
/// `can_search_string_with_back_slash_case_insensitive_with_StringComparison`. `%`, `_`
/// and `\` are plain characters for `contains`, `starts_with`, `ends_with` and
/// `eq_ignore_case` (no LIKE wildcards or escapes leak through), as are quotes, tabs and
/// non-ASCII letters (case folded in ASCII only, as `eq_ignore_ascii_case`).
#[tokio::test]
async fn string_operators_treat_wildcards_backslashes_and_quotes_literally() {
    let (_schema, b) = builder("mq_strings");
    let store = ok(b.document::<Named>().build().await);
    let names = [
        "100% Complete",
        "100 Complete",
        "100% of target",
        "100 of target",
        "score: 100%",
        "score: 100",
        "MyString",
        "DOMAIN\\TEST_USER",
        "a_b",
        "axb",
        "O'Brien",
        "say \"hi\"",
        "tab\there",
        "",
        "ÉCOLE",
        "école",
        "Ecole",
        "50%_off\\",
    ];
    let docs: Vec<Named> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Named {
            id: i as i64 + 1,
            name: (*n).to_owned(),
        })
        .collect();
    seed!(store, docs);
    let f = Named::fields();
    let mut cases: Vec<Case<Named>> = Vec::new();
    for needle in [
        "100%", "%", "_", "a_b", "\\", "\\T", "'", "\"hi\"", "\t", "", "%_", "_off\\",
    ] {
        let (a, b2, c) = (needle.to_owned(), needle.to_owned(), needle.to_owned());
        cases.push(case(
            format!("contains {needle:?}"),
            f.name.contains(needle),
            move |d: &Named| d.name.contains(a.as_str()),
        ));
        cases.push(case(
            format!("starts_with {needle:?}"),
            f.name.starts_with(needle),
            move |d: &Named| d.name.starts_with(b2.as_str()),
        ));
        let c2 = c.clone();
        cases.push(case(
            format!("ends_with {needle:?}"),
            f.name.ends_with(needle),
            move |d: &Named| d.name.ends_with(c.as_str()),
        ));
        cases.push(case(
            format!("!contains {needle:?}"),
            f.name.contains(needle).not(),
            move |d: &Named| !d.name.contains(c2.as_str()),
        ));
    }
    for value in [
        "%MyString",
        "MyStrin_",
        "mystring",
        "MYSTRING",
        "domain\\test_user",
        "DOMAIN_TEST_USER",
        "ecole",
        "école",
        "ÉCOLE",
        "o'brien",
        "SAY \"HI\"",
        "",
        "%",
    ] {
        let v = value.to_owned();
        cases.push(case(
            format!("eq_ignore_case {value:?}"),
            f.name.eq_ignore_case(value),
            move |d: &Named| d.name.eq_ignore_ascii_case(&v),
        ));
    }
    let mut s = store.query_session();
    check_cases!(s, Named, docs, cases);
    // The Marten assertions, spelled out.
    let ids = |v: Vec<Named>| sorted_keys(&v);
    assert_eq!(
        ids(ok(s
            .query::<Named>()
            .filter(|f| f.name.contains("100%"))
            .to_list()
            .await)),
        [1, 3, 5]
    );
    assert!(ok(s
        .query::<Named>()
        .filter(|f| f
            .name
            .eq_ignore_case("%MyString")
            .or(f.name.eq_ignore_case("MyStrin_")))
        .to_list()
        .await)
    .is_empty());
    let one = ok(s
        .query::<Named>()
        .filter(|f| f.name.eq_ignore_case("domain\\test_user"))
        .single()
        .await);
    assert_eq!(one.map(|d| d.id), Some(8));
}

/// `Acceptance/string_filtering.cs`: `CanQueryByEquals`, `CanQueryByNotEquals`,
/// `CanQueryByContains` / `NotContains` / `StartsWith` / `NotStartsWith` / `EndsWith` /
/// `NotEndsWith` (the case-sensitive rows and `OrdinalIgnoreCase` equality),
/// `CanQueryByIsNullOrEmpty`, `CanQueryByNotIsNullOrEmpty`,
/// `CanMixContainsAndNotContains`, `CanMixNotEndsWithWithNotIsNullOrEmpty`,
/// `can_search_case_insensitive`, `can_search_case_insensitive_with_StringComparison`.
#[tokio::test]
async fn string_filters_their_negations_and_null_or_empty_options() {
    let (_schema, b) = builder("mq_string_filtering");
    let store = ok(b.document::<Person>().build().await);
    let person = |id: i64, first: &str, nick: Option<&str>, user: &str| Person {
        id,
        first_name: first.into(),
        nickname: nick.map(str::to_owned),
        user_name: user.into(),
    };
    let docs = vec![
        person(1, "Beeblebrox", Some(""), "Abc"),
        person(2, "Bee", Some("   "), "DeF"),
        person(3, "Zaphod", Some("Zaph"), "TEST_USER"),
        person(4, "Zap", None, "other"),
    ];
    seed!(store, docs);
    let f = Person::fields();
    let null_or_empty = f.nickname.is_none().or(f.nickname.eq(Some(String::new())));
    let is_null_or_empty = |d: &Person| d.nickname.as_deref().is_none_or(str::is_empty);
    let cases: Vec<Case<Person>> = vec![
        case(
            "eq_ignore_case zap",
            f.first_name.eq_ignore_case("zap"),
            |d: &Person| d.first_name.eq_ignore_ascii_case("zap"),
        ),
        case(
            "!eq_ignore_case zap",
            f.first_name.eq_ignore_case("zap").not(),
            |d: &Person| !d.first_name.eq_ignore_ascii_case("zap"),
        ),
        case("eq Zap", f.first_name.eq("Zap"), |d: &Person| {
            d.first_name == "Zap"
        }),
        case("eq zap", f.first_name.eq("zap"), |d: &Person| {
            d.first_name == "zap"
        }),
        case("ne Zap", f.first_name.ne("Zap"), |d: &Person| {
            d.first_name != "Zap"
        }),
        case("!eq zap", f.first_name.eq("zap").not(), |d: &Person| {
            d.first_name != "zap"
        }),
        case(
            "contains zap",
            f.first_name.contains("zap"),
            |d: &Person| d.first_name.contains("zap"),
        ),
        case(
            "!contains zap",
            f.first_name.contains("zap").not(),
            |d: &Person| !d.first_name.contains("zap"),
        ),
        case(
            "contains Zap",
            f.first_name.contains("Zap"),
            |d: &Person| d.first_name.contains("Zap"),
        ),
        case(
            "starts Zap",
            f.first_name.starts_with("Zap"),
            |d: &Person| d.first_name.starts_with("Zap"),
        ),
        case(
            "!starts zap",
            f.first_name.starts_with("zap").not(),
            |d: &Person| !d.first_name.starts_with("zap"),
        ),
        case("ends hod", f.first_name.ends_with("hod"), |d: &Person| {
            d.first_name.ends_with("hod")
        }),
        case("ends Hod", f.first_name.ends_with("Hod"), |d: &Person| {
            d.first_name.ends_with("Hod")
        }),
        case(
            "!ends Hod",
            f.first_name.ends_with("Hod").not(),
            |d: &Person| !d.first_name.ends_with("Hod"),
        ),
        case(
            "nickname null or empty",
            null_or_empty.clone(),
            is_null_or_empty,
        ),
        case(
            "!nickname null or empty",
            null_or_empty.clone().not(),
            move |d: &Person| !is_null_or_empty(d),
        ),
        case(
            "!contains hod && contains Zap",
            f.first_name
                .contains("hod")
                .not()
                .and(f.first_name.contains("Zap")),
            |d: &Person| !d.first_name.contains("hod") && d.first_name.contains("Zap"),
        ),
        case(
            "!ends hod && !null_or_empty",
            f.first_name
                .ends_with("hod")
                .not()
                .and(null_or_empty.clone().not()),
            move |d: &Person| !d.first_name.ends_with("hod") && !is_null_or_empty(d),
        ),
        case(
            "!ends Hod && !null_or_empty",
            f.first_name.ends_with("Hod").not().and(null_or_empty.not()),
            move |d: &Person| !d.first_name.ends_with("Hod") && !is_null_or_empty(d),
        ),
    ];
    let mut s = store.query_session();
    check_cases!(s, Person, docs, cases);
    // The counts Marten's theories expect.
    let count = |v: Vec<Person>| v.len();
    assert_eq!(
        count(ok(s
            .query::<Person>()
            .filter(|f| f.first_name.eq_ignore_case("zap").not())
            .to_list()
            .await)),
        3
    );
    assert_eq!(
        count(ok(s
            .query::<Person>()
            .filter(|f| f.nickname.is_none().or(f.nickname.eq(Some(String::new()))))
            .to_list()
            .await)),
        2
    );
    for (search, id) in [("abc", 1), ("aBc", 1), ("def", 2), ("test_user", 3)] {
        let one = ok(s
            .query::<Person>()
            .filter(|f| f.user_name.eq_ignore_case(search))
            .single()
            .await);
        assert_eq!(one.map(|p| p.id), Some(id), "{search}");
    }
    assert!(!ok(s
        .query::<Person>()
        .filter(|f| f.user_name.eq_ignore_case("abcd"))
        .exists()
        .await));
}

/// `Operators/string_compare_operator.cs`: `string_compare_works`,
/// `string_compare_to_works`; `Operators/guid_compare_operator.cs`:
/// `guid_compare_to_works`. Relational comparisons of strings and of uuids (a field that
/// is not the id) agree with Rust's order, and so does sorting by them.
#[tokio::test]
async fn strings_and_uuids_compare_and_sort_like_rust() {
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Fruit {
        id: i64,
        name: String,
        other: Uuid,
    }
    keyed!(Fruit);
    let (_schema, b) = builder("mq_compare");
    let store = ok(b.document::<Fruit>().build().await);
    let g = |n: u128| Uuid::from_u128(n);
    let others = [
        g(1),
        g(2),
        g(3),
        Uuid::parse_str("ffffffff-0000-0000-0000-000000000000").expect("uuid"),
        Uuid::parse_str("0a000000-0000-0000-0000-000000000000").expect("uuid"),
        Uuid::parse_str("a0000000-0000-0000-0000-000000000000").expect("uuid"),
    ];
    let fruit_names = ["Apple", "Banana", "Cherry", "Durian", "apple", "Ångström"];
    let docs: Vec<Fruit> = (0..6)
        .map(|i| Fruit {
            id: i as i64 + 1,
            name: fruit_names[i].into(),
            other: others[i],
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    assert_eq!(
        ok(s.query::<Fruit>()
            .filter(|f| f.name.gt("Cherry").and(f.name.lt("E")))
            .count()
            .await),
        1
    );
    let g3 = g(3);
    let f = Fruit::fields();
    let cases: Vec<Case<Fruit>> = vec![
        case("name > Cherry", f.name.gt("Cherry"), |d: &Fruit| {
            d.name.as_str() > "Cherry"
        }),
        case("name > Banana", f.name.gt("Banana"), |d: &Fruit| {
            d.name.as_str() > "Banana"
        }),
        case("name <= apple", f.name.le("apple"), |d: &Fruit| {
            d.name.as_str() <= "apple"
        }),
        case("other < g3", f.other.lt(g3), move |d: &Fruit| d.other < g3),
        case("other >= g3", f.other.ge(g3), move |d: &Fruit| {
            d.other >= g3
        }),
    ];
    check_cases!(s, Fruit, docs, cases);
    let found = ok(s
        .query::<Fruit>()
        .filter(|f| f.other.lt(g3))
        .to_list()
        .await);
    let got: Vec<Uuid> = found.iter().map(|d| d.other).collect();
    assert_eq!(got, [g(1), g(2)]);

    let by_other = ok(s
        .query::<Fruit>()
        .order_by(|f| f.other.desc())
        .to_list()
        .await);
    let mut want = docs.clone();
    want.sort_by_key(|d| std::cmp::Reverse(d.other));
    assert_eq!(keys(&by_other), keys(&want));
    let by_name = ok(s
        .query::<Fruit>()
        .order_by(|f| f.name.asc())
        .to_list()
        .await);
    let mut want = docs.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(keys(&by_name), keys(&want));
}

// ---------------------------------------------------------------------------------------
// Collections
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct DocWithArrays {
    id: i64,
    strings: Vec<String>,
    user_ids: Vec<i32>,
    is_public: bool,
}

keyed!(DocWithArrays);

fn arrays(id: i64, strings: &[&str], user_ids: &[i32], is_public: bool) -> DocWithArrays {
    DocWithArrays {
        id,
        strings: strings.iter().map(|s| (*s).to_owned()).collect(),
        user_ids: user_ids.to_vec(),
        is_public,
    }
}

/// `Bugs/Bug_561_negation_of_query_on_contains.cs`: `negated_contains`,
/// `ExpressionWithNotContainsReturnsCorrectResults`;
/// `Bugs/Bug_2563_sub_collection_queries_and_OR.cs`: `get_distinct_number`. A negated
/// `contains`, a `contains` and a negated one together, and `contains` ORed with a
/// boolean field.
#[tokio::test]
async fn negated_contains_and_contains_ored_with_other_fields() {
    let (_schema, b) = builder("mq_contains");
    let store = ok(b.document::<DocWithArrays>().build().await);
    let docs = vec![
        arrays(1, &["a", "b", "c"], &[1, 2, 3, 4, 5, 6], false),
        arrays(2, &["c", "d", "e"], &[], false),
        arrays(3, &["d", "e", "f"], &[1, 2, 3], true),
        arrays(4, &["g", "h", "i"], &[1, 2, 6], true),
        arrays(5, &[], &[4, 5, 6], false),
        arrays(6, &["c"], &[10], true),
    ];
    seed!(store, docs);
    let mut s = store.query_session();
    let has = |d: &DocWithArrays, x: &str| d.strings.iter().any(|s| s == x);
    let f = DocWithArrays::fields();
    let cases: Vec<Case<DocWithArrays>> = vec![
        case(
            "!strings.contains(c)",
            f.strings.contains("c").not(),
            move |d: &DocWithArrays| !has(d, "c"),
        ),
        case(
            "strings.contains(d) && !strings.contains(c)",
            f.strings.contains("d").and(f.strings.contains("c").not()),
            move |d: &DocWithArrays| has(d, "d") && !has(d, "c"),
        ),
        case(
            "!is_public || user_ids.contains(10)",
            f.is_public.eq(false).or(f.user_ids.contains(10)),
            |d: &DocWithArrays| !d.is_public || d.user_ids.contains(&10),
        ),
        case(
            "is_public || user_ids.contains(5)",
            f.is_public.eq(true).or(f.user_ids.contains(5)),
            |d: &DocWithArrays| d.is_public || d.user_ids.contains(&5),
        ),
        case(
            "!(is_public || user_ids.contains(5))",
            f.is_public.eq(true).or(f.user_ids.contains(5)).not(),
            |d: &DocWithArrays| !(d.is_public || d.user_ids.contains(&5)),
        ),
    ];
    check_cases!(s, DocWithArrays, docs, cases);
    // Marten's own numbers.
    assert_eq!(
        ok(s.query::<DocWithArrays>()
            .filter(|f| f.is_public.eq(false).or(f.user_ids.contains(10)))
            .count()
            .await),
        4
    );
    assert_eq!(
        ok(s.query::<DocWithArrays>()
            .filter(|f| f.strings.contains("d").and(f.strings.contains("c").not()))
            .count()
            .await),
        1
    );
}

/// `Bugs/Bug_4282_is_one_of_against_string_list.cs`:
/// `can_query_string_list_with_is_one_of_against_runtime_list`;
/// `Bugs/Bug_2223_list_contains_any_generates_invalid_sql.cs`;
/// `Bugs/Bug_3003_negation_and_list_of_guids.cs`. "The collection shares an element
/// with a list built at run time" (an OR of `contains`, folded from a constant false),
/// its negation, and the empty list (nothing matches; negated, everything does).
#[tokio::test]
async fn a_collection_overlapping_a_run_time_list_and_its_negation() {
    #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Related {
        id: i64,
        related_ids: Vec<String>,
    }
    keyed!(Related);
    let (_schema, b) = builder("mq_overlap");
    let store = ok(b.document::<Related>().build().await);
    let docs = vec![
        Related {
            id: 1,
            related_ids: vec!["related-1".into(), "related-2".into()],
        },
        Related {
            id: 2,
            related_ids: vec!["related-3".into()],
        },
        Related {
            id: 3,
            related_ids: vec!["related-4".into(), "related-5".into()],
        },
        Related {
            id: 4,
            related_ids: vec![],
        },
    ];
    seed!(store, docs);
    let overlap = |list: &[&str]| {
        let f = Related::fields();
        list.iter().fold(Filter::<Related>::all().not(), |acc, x| {
            acc.or(f.related_ids.contains(*x))
        })
    };
    let mut s = store.query_session();
    for list in [
        &["related-2", "related-4", "unknown-related"][..],
        &["related-3"][..],
        &[][..],
    ] {
        let owned: Vec<String> = list.iter().map(|x| (*x).to_owned()).collect();
        let shares = move |d: &Related| d.related_ids.iter().any(|r| owned.contains(r));
        let found = ok(s
            .query::<Related>()
            .where_filter(overlap(list))
            .to_list()
            .await);
        assert_eq!(sorted_keys(&found), expected(&docs, &shares), "{list:?}");
        let found = ok(s
            .query::<Related>()
            .where_filter(overlap(list).not())
            .to_list()
            .await);
        assert_eq!(
            sorted_keys(&found),
            expected(&docs, |d| !shares(d)),
            "not {list:?}"
        );
    }
    let found = ok(s
        .query::<Related>()
        .where_filter(overlap(&["related-2", "related-4", "unknown-related"]))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), [1, 3]);
}

/// Reads a JSON `null` as an empty list (Marten's `null` collections).
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<i32>, D::Error> {
    Ok(Option::<Vec<i32>>::deserialize(d)?.unwrap_or_default())
}

fn null_children_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Child>, D::Error> {
    Ok(Option::<Vec<Child>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Child {
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Bag {
    id: i64,
    #[serde(default, deserialize_with = "null_as_empty")]
    numbers: Vec<i32>,
    #[serde(default, deserialize_with = "null_children_as_empty")]
    children: Vec<Child>,
}

keyed!(Bag);

/// `Acceptance/child_collection_queries.cs`: `child_collection_is_empty_or_any`
/// (`is_empty_with_value_collection`, `is_empty_with_object_collection`,
/// `is_not_empty_with_value_collection`) and the `IsEmpty()` / `!IsEmpty()` / `Any()` /
/// `!Any()` cases; `Operators/is_empty_operator.cs`: `use_is_empty`. A collection that is
/// missing from the JSON, or JSON `null`, or `[]`, is empty; `not(is_empty)` keeps only
/// the ones with elements; `contains` and `any` never match a missing or `null` one and
/// their negations always do.
#[tokio::test]
async fn missing_null_and_empty_collections_are_all_empty() {
    let (schema, b) = builder("mq_empty");
    let store = ok(b.document::<Bag>().build().await);
    let child = |n: &str| Child { name: n.into() };
    let docs = vec![
        Bag {
            id: 1,
            numbers: vec![],
            children: vec![],
        },
        Bag {
            id: 2,
            numbers: vec![],
            children: vec![],
        },
        Bag {
            id: 3,
            numbers: vec![],
            children: vec![],
        },
        Bag {
            id: 4,
            numbers: vec![1, 2, 3],
            children: vec![child("one"), child("two")],
        },
        Bag {
            id: 5,
            numbers: vec![7],
            children: vec![child("other")],
        },
    ];
    seed!(store, docs);
    // Document 1 loses both keys, document 2 has them as JSON null, 3 keeps `[]`.
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "UPDATE mt_doc_bag SET data = data - 'numbers' - 'children' WHERE id = 1; \
         UPDATE mt_doc_bag SET data = data || '{\"numbers\": null, \"children\": null}'::jsonb WHERE id = 2;",
    )
    .await
    .expect("reshape rows");
    let shapes: Vec<(i64, String)> = raw
        .query(
            "SELECT id, coalesce(jsonb_typeof(data -> 'numbers'), 'missing') FROM mt_doc_bag ORDER BY id",
            &[],
        )
        .await
        .expect("shapes")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        shapes,
        [
            (1, "missing".to_owned()),
            (2, "null".to_owned()),
            (3, "array".to_owned()),
            (4, "array".to_owned()),
            (5, "array".to_owned())
        ]
    );
    let f = Bag::fields();
    let cases: Vec<Case<Bag>> = vec![
        case("numbers is_empty", f.numbers.is_empty(), |d: &Bag| {
            d.numbers.is_empty()
        }),
        case(
            "!numbers is_empty",
            f.numbers.is_empty().not(),
            |d: &Bag| !d.numbers.is_empty(),
        ),
        case("children is_empty", f.children.is_empty(), |d: &Bag| {
            d.children.is_empty()
        }),
        case(
            "!children is_empty",
            f.children.is_empty().not(),
            |d: &Bag| !d.children.is_empty(),
        ),
        case("numbers contains 7", f.numbers.contains(7), |d: &Bag| {
            d.numbers.contains(&7)
        }),
        case(
            "!numbers contains 7",
            f.numbers.contains(7).not(),
            |d: &Bag| !d.numbers.contains(&7),
        ),
        case(
            "children any (always true)",
            f.children.any(|_| Filter::all()),
            |d: &Bag| !d.children.is_empty(),
        ),
        case(
            "!children any (always true)",
            f.children.any(|_| Filter::all()).not(),
            |d: &Bag| d.children.is_empty(),
        ),
        case(
            "children any name starts o",
            f.children.any(|c| c.name.starts_with("o")),
            |d: &Bag| d.children.iter().any(|c| c.name.starts_with('o')),
        ),
        case(
            "!children any name starts o",
            f.children.any(|c| c.name.starts_with("o")).not(),
            |d: &Bag| !d.children.iter().any(|c| c.name.starts_with('o')),
        ),
    ];
    let mut s = store.query_session();
    check_cases!(s, Bag, docs, cases);
    let empties = ok(s
        .query::<Bag>()
        .filter(|f| f.numbers.is_empty())
        .to_list()
        .await);
    assert_eq!(keys(&empties), [1, 2, 3]);
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Bottom {
    name: String,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct MiddleLevel {
    color: Color,
    bottoms: Vec<Bottom>,
    tags: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Top {
    id: i64,
    middles: Vec<MiddleLevel>,
}

keyed!(Top);

fn top(id: i64, middles: &[(Color, &[&str])]) -> Top {
    Top {
        id,
        middles: middles
            .iter()
            .map(|(color, names)| MiddleLevel {
                color: *color,
                bottoms: names
                    .iter()
                    .map(|n| Bottom {
                        name: (*n).to_owned(),
                    })
                    .collect(),
                tags: names.iter().map(|n| n.to_lowercase()).collect(),
            })
            .collect(),
    }
}

/// `ChildCollections/querying_through_n_deep_sub_collections.cs`: `can_query_by_any`,
/// `query_inside_of_child_collections_collection` (and `_2`);
/// `Bugs/Bug_1413_not_inside_of_where_against_child_collection.cs`;
/// `Bugs/Bug_717_permutation_of_Linq_queries.cs` (an enum inside `Any`);
/// `Bugs/Bug_2935_any_contains_in_child_collection.cs` (`contains` inside `any`).
#[tokio::test]
async fn any_through_two_levels_of_child_collections() {
    let (_schema, b) = builder("mq_n_deep");
    let store = ok(b.document::<Top>().build().await);
    use Color::{Blue, Green};
    let docs = vec![
        top(1, &[(Blue, &["Jack", "Bill"])]),
        top(2, &[(Blue, &["Jill"])]),
        top(3, &[(Blue, &["John"])]),
        top(4, &[(Green, &["James", "Bill"])]),
        top(5, &[(Blue, &["Jimmy"])]),
        top(6, &[(Green, &["Jake"])]),
        top(7, &[(Blue, &[])]),
        top(8, &[(Blue, &["hello"]), (Green, &["x"])]),
        top(9, &[]),
    ];
    seed!(store, docs);
    let f = Top::fields();
    let cases: Vec<Case<Top>> = vec![
        case(
            "middles any (bottoms not empty)",
            f.middles.any(|m| m.bottoms.is_empty().not()),
            |d: &Top| d.middles.iter().any(|m| !m.bottoms.is_empty()),
        ),
        case(
            "middles any (green && bottoms any Bill)",
            f.middles
                .any(|m| m.color.eq(Green).and(m.bottoms.any(|b| b.name.eq("Bill")))),
            |d: &Top| {
                d.middles
                    .iter()
                    .any(|m| m.color == Green && m.bottoms.iter().any(|b| b.name == "Bill"))
            },
        ),
        case(
            "middles any (bottoms any starts B)",
            f.middles
                .any(|m| m.bottoms.any(|b| b.name.starts_with("B"))),
            |d: &Top| {
                d.middles
                    .iter()
                    .any(|m| m.bottoms.iter().any(|b| b.name.starts_with('B')))
            },
        ),
        case(
            "middles any (bottoms any hello && color != Blue)",
            f.middles
                .any(|m| m.bottoms.any(|b| b.name.eq("hello")).and(m.color.ne(Blue))),
            |d: &Top| {
                d.middles
                    .iter()
                    .any(|m| m.bottoms.iter().any(|b| b.name == "hello") && m.color != Blue)
            },
        ),
        case(
            "middles any (tags contains bill)",
            f.middles.any(|m| m.tags.contains("bill")),
            |d: &Top| d.middles.iter().any(|m| m.tags.iter().any(|t| t == "bill")),
        ),
        case(
            "!middles any (color == Blue)",
            f.middles.any(|m| m.color.eq(Blue)).not(),
            |d: &Top| !d.middles.iter().any(|m| m.color == Blue),
        ),
        case(
            "middles any (!(bottoms any name ends ll))",
            f.middles
                .any(|m| m.bottoms.any(|b| b.name.ends_with("ll")).not()),
            |d: &Top| {
                d.middles
                    .iter()
                    .any(|m| !m.bottoms.iter().any(|b| b.name.ends_with("ll")))
            },
        ),
    ];
    let mut s = store.query_session();
    check_cases!(s, Top, docs, cases);
    let green_bill = ok(s
        .query::<Top>()
        .filter(|f| {
            f.middles
                .any(|m| m.color.eq(Green).and(m.bottoms.any(|b| b.name.eq("Bill"))))
        })
        .single()
        .await);
    assert_eq!(green_bill.map(|t| t.id), Some(4));
}

// ---------------------------------------------------------------------------------------
// Enums stored as strings
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Painted {
    id: i64,
    number: i32,
    color: Color,
    #[document(index)]
    color_col: Color,
    nullable: Option<Color>,
    colors: Vec<Color>,
}

keyed!(Painted);

/// `Acceptance/enum_usage.cs`: `use_enum_values_..._stored_as_strings`,
/// `..._that_are_duplicated_as_string_storage`, `use_nullable_enum_values_as_part_of_in_query`,
/// `use_nullable_enum_values_as_part_of_notin_query`;
/// `Bugs/Bug_2946_querying_on_value_collection_of_enums_serialized_as_string.cs`:
/// `try_to_query_on_contains_as_string`; `Bugs/Bug_449_IsOneOf_query_with_enum_types.cs`.
/// Enums serialized as their names compare on the `jsonb` value and on a duplicated
/// column alike; an `Option` of one is in a list holding `None`; a list of them contains
/// one.
#[tokio::test]
async fn enums_stored_as_strings_compare_on_jsonb_columns_and_in_collections() {
    let (_schema, b) = builder("mq_enums");
    let store = ok(b.document::<Painted>().build().await);
    use Color::{Blue, Green, Orange, Red, Yellow};
    let colors = [Blue, Red, Green, Blue, Red, Green, Blue];
    let nullables = [
        Some(Green),
        Some(Blue),
        Some(Red),
        Some(Green),
        None,
        None,
        Some(Orange),
    ];
    let lists: [&[Color]; 7] = [
        &[Blue, Green],
        &[Blue, Red],
        &[Orange, Yellow],
        &[],
        &[Yellow],
        &[Blue],
        &[Red, Red],
    ];
    let docs: Vec<Painted> = (0..7)
        .map(|i| Painted {
            id: i as i64 + 1,
            number: i as i32 + 1,
            color: colors[i],
            color_col: colors[i],
            nullable: nullables[i],
            colors: lists[i].to_vec(),
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    for on_column in [false, true] {
        let found = ok(s
            .query::<Painted>()
            .filter(|f| {
                if on_column {
                    f.color_col.eq(Blue)
                } else {
                    f.color.eq(Blue)
                }
            })
            .order_by(|f| f.number.asc())
            .to_list()
            .await);
        let numbers: Vec<i32> = found.iter().map(|d| d.number).collect();
        assert_eq!(numbers, [1, 4, 7], "on column: {on_column}");
    }
    let f = Painted::fields();
    let cases: Vec<Case<Painted>> = vec![
        case("color != Blue", f.color.ne(Blue), |d: &Painted| {
            d.color != Blue
        }),
        case("color_col != Blue", f.color_col.ne(Blue), |d: &Painted| {
            d.color != Blue
        }),
        case(
            "color in (Red, Green)",
            f.color.is_one_of([Red, Green]),
            |d: &Painted| matches!(d.color, Red | Green),
        ),
        case(
            "color_col in (Red, Green)",
            f.color_col.is_one_of([Red, Green]),
            |d: &Painted| matches!(d.color, Red | Green),
        ),
        case(
            "nullable in (None, Green)",
            f.nullable.is_one_of([None, Some(Green)]),
            |d: &Painted| d.nullable.is_none() || d.nullable == Some(Green),
        ),
        case(
            "!nullable in (None, Green)",
            f.nullable.is_one_of([None, Some(Green)]).not(),
            |d: &Painted| !(d.nullable.is_none() || d.nullable == Some(Green)),
        ),
        case("nullable == Blue", f.nullable.eq(Blue), |d: &Painted| {
            d.nullable == Some(Blue)
        }),
        case(
            "colors contains Blue",
            f.colors.contains(Blue),
            |d: &Painted| d.colors.contains(&Blue),
        ),
        case(
            "!colors contains Red",
            f.colors.contains(Red).not(),
            |d: &Painted| !d.colors.contains(&Red),
        ),
    ];
    check_cases!(s, Painted, docs, cases);
    assert_eq!(
        ok(s.query::<Painted>()
            .filter(|f| f.nullable.is_one_of([None, Some(Green)]))
            .count()
            .await),
        4
    );
    let ids: Vec<i64> = ok(s
        .query::<Painted>()
        .filter(|f| f.colors.contains(Blue))
        .order_by(|f| f.id.asc())
        .select(|f| f.id)
        .to_list()
        .await);
    assert_eq!(ids, [1, 2, 6]);
}

// ---------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Big {
    id: i64,
    value: i64,
    #[document(index)]
    value_col: i64,
    unsigned: u64,
    small: u32,
}

keyed!(Big);

const TWO_53: i64 = 1 << 53;

/// `Acceptance/number_filtering.cs`: `can_query_by_BigInteger` (with the largest
/// integers the typed API has: `i64` beyond 2^53, where a double would round, and `u64`
/// beyond `i64::MAX`); `Bugs/Bug_1256_querying_against_a_uint_type.cs`;
/// `Acceptance/where_clauses.cs`: the `x.Long` comparisons; `Acceptance/take_and_skip.cs`
/// (`OrderBy(x => x.Long)`). 2^53 and 2^53 + 1 are different values in every comparison,
/// `is_one_of`, sort and aggregate, on the `jsonb` value and on a `bigint` column.
#[tokio::test]
async fn integers_beyond_two_to_the_53_compare_sort_and_aggregate_exactly() {
    let (_schema, b) = builder("mq_big");
    let store = ok(b.document::<Big>().build().await);
    let values = [
        TWO_53,
        TWO_53 + 1,
        TWO_53 - 1,
        i64::MAX,
        i64::MIN,
        -TWO_53 - 1,
        -TWO_53,
        0,
        -1,
        i64::MAX - 1,
    ];
    let unsigned = [
        u64::MAX,
        u64::MAX - 1,
        1 << 63,
        (1 << 63) - 1,
        (1 << 53) + 1,
        1 << 53,
        0,
        1,
        u64::MAX - 2,
        5,
    ];
    let docs: Vec<Big> = (0..values.len())
        .map(|i| Big {
            id: i as i64 + 1,
            value: values[i],
            value_col: values[i],
            unsigned: unsigned[i],
            small: i as u32 + 1,
        })
        .collect();
    seed!(store, docs);
    let f = Big::fields();
    let mut cases: Vec<Case<Big>> = Vec::new();
    for (name, field) in [("jsonb", f.value.clone()), ("column", f.value_col.clone())] {
        for x in [TWO_53, TWO_53 + 1, -TWO_53 - 1, i64::MAX, i64::MIN] {
            cases.push(case(
                format!("{name} == {x}"),
                field.eq(x),
                move |d: &Big| d.value == x,
            ));
            cases.push(case(
                format!("{name} != {x}"),
                field.ne(x),
                move |d: &Big| d.value != x,
            ));
            cases.push(case(
                format!("{name} > {x}"),
                field.gt(x),
                move |d: &Big| d.value > x,
            ));
            cases.push(case(
                format!("{name} <= {x}"),
                field.le(x),
                move |d: &Big| d.value <= x,
            ));
        }
        cases.push(case(
            format!("{name} in (2^53 + 1, -2^53)"),
            field.is_one_of([TWO_53 + 1, -TWO_53]),
            |d: &Big| d.value == TWO_53 + 1 || d.value == -TWO_53,
        ));
    }
    for x in [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 53) + 1] {
        cases.push(case(
            format!("unsigned == {x}"),
            f.unsigned.eq(x),
            move |d: &Big| d.unsigned == x,
        ));
        cases.push(case(
            format!("unsigned > {x}"),
            f.unsigned.gt(x),
            move |d: &Big| d.unsigned > x,
        ));
        cases.push(case(
            format!("unsigned < {x}"),
            f.unsigned.lt(x),
            move |d: &Big| d.unsigned < x,
        ));
    }
    cases.push(case("small > 3", f.small.gt(3u32), |d: &Big| d.small > 3));
    let mut s = store.query_session();
    check_cases!(s, Big, docs, cases);
    assert_eq!(
        ok(s.query::<Big>().filter(|f| f.small.gt(3u32)).count().await),
        values.len() as i64 - 3
    );

    // Sorts.
    let mut by_value = docs.clone();
    by_value.sort_by_key(|d| d.value);
    for on_column in [false, true] {
        let found = ok(s
            .query::<Big>()
            .order_by(|f| {
                if on_column {
                    f.value_col.asc()
                } else {
                    f.value.asc()
                }
            })
            .to_list()
            .await);
        assert_eq!(keys(&found), keys(&by_value), "on column: {on_column}");
    }
    let mut by_unsigned = docs.clone();
    by_unsigned.sort_by_key(|d| std::cmp::Reverse(d.unsigned));
    let found = ok(s
        .query::<Big>()
        .order_by(|f| f.unsigned.desc())
        .to_list()
        .await);
    assert_eq!(keys(&found), keys(&by_unsigned));

    // Aggregates of the extremes come back exact.
    assert_eq!(ok(s.query::<Big>().max(|f| f.value).await), Some(i64::MAX));
    assert_eq!(
        ok(s.query::<Big>().min(|f| f.value_col).await),
        Some(i64::MIN)
    );
    assert_eq!(
        ok(s.query::<Big>().max(|f| f.unsigned).await),
        Some(u64::MAX)
    );
    assert_eq!(
        ok(s.query::<Big>()
            .filter(|f| f.value.ge(TWO_53 - 1).and(f.value.le(TWO_53 + 1)))
            .sum(|f| f.value)
            .await),
        Some(3 * TWO_53)
    );
    assert_eq!(
        ok(s.query::<Big>()
            .filter(|f| f.value.ge(TWO_53 - 1).and(f.value.le(TWO_53 + 1)))
            .count_distinct(|f| f.value)
            .await),
        3
    );
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Real {
    id: i64,
    x: f64,
    #[document(index)]
    x_col: f64,
}

keyed!(Real);

/// `Acceptance/where_clauses.cs`: the `x.Double` and `x.Decimal` comparisons
/// (`== 10`, `!= 10`, `> 10`, `< 10`, `<= 10`, `>= 10`, `!Equals(10)`);
/// `Acceptance/order_by_clauses.cs` (sorting by a number). Negative numbers, negative
/// zero (equal to zero), values that are not exact in binary (0.1 + 0.2 next to 0.3),
/// very small and very large magnitudes compare and sort as Rust's `f64` does, on the
/// `jsonb` value and on a `double precision` column.
#[tokio::test]
async fn floats_negative_numbers_and_negative_zero_compare_like_f64() {
    let (_schema, b) = builder("mq_floats");
    let store = ok(b.document::<Real>().build().await);
    let values = [
        -10.5,
        -0.0,
        0.0,
        0.1 + 0.2,
        0.3,
        10.0,
        10.25,
        1e-7,
        1e300,
        -1e-300,
        -10.0,
        9.999_999_999_999_998,
    ];
    let docs: Vec<Real> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Real {
            id: i as i64 + 1,
            x: *v,
            x_col: *v,
        })
        .collect();
    seed!(store, docs);
    let f = Real::fields();
    let mut cases: Vec<Case<Real>> = Vec::new();
    for (name, field) in [("jsonb", f.x.clone()), ("column", f.x_col.clone())] {
        for v in [10.0, 0.0, -0.0, 0.3, 0.1 + 0.2, -10.5, 1e-7] {
            cases.push(case(
                format!("{name} == {v}"),
                field.eq(v),
                move |d: &Real| d.x == v,
            ));
            cases.push(case(
                format!("{name} != {v}"),
                field.ne(v),
                move |d: &Real| d.x != v,
            ));
            cases.push(case(
                format!("{name} > {v}"),
                field.gt(v),
                move |d: &Real| d.x > v,
            ));
            cases.push(case(
                format!("{name} < {v}"),
                field.lt(v),
                move |d: &Real| d.x < v,
            ));
            cases.push(case(
                format!("{name} >= {v}"),
                field.ge(v),
                move |d: &Real| d.x >= v,
            ));
            cases.push(case(
                format!("{name} <= {v}"),
                field.le(v),
                move |d: &Real| d.x <= v,
            ));
            cases.push(case(
                format!("!({name} == {v})"),
                field.eq(v).not(),
                move |d: &Real| d.x != v,
            ));
        }
    }
    let mut s = store.query_session();
    check_cases!(s, Real, docs, cases);
    let mut want = docs.clone();
    // -0.0 and 0.0 are equal, so they tie and come by id: Rust's partial order.
    want.sort_by(|a, b| a.x.partial_cmp(&b.x).expect("no NaN").then(a.id.cmp(&b.id)));
    for on_column in [false, true] {
        let found = ok(s
            .query::<Real>()
            .order_by(|f| if on_column { f.x_col.asc() } else { f.x.asc() })
            .to_list()
            .await);
        assert_eq!(keys(&found), keys(&want), "on column: {on_column}");
    }
    assert_eq!(ok(s.query::<Real>().max(|f| f.x).await), Some(1e300));
    assert_eq!(ok(s.query::<Real>().min(|f| f.x_col).await), Some(-10.5));
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Single32 {
    id: i64,
    x: f32,
    #[document(index)]
    x_col: f32,
    xs: Vec<f32>,
}

keyed!(Single32);

/// `Acceptance/number_filtering.cs`: `can_query_by_float` (`Float = 123.45F`,
/// `456.45F`, then `x.Float > 400`), extended to equality, `is_one_of` and `contains` on
/// `f32` values that are not exact in binary: a document's `f32` is stored as serde writes
/// it (`123.45`), and the value a query compares with must be that same number.
#[tokio::test]
async fn f32_values_compare_with_the_number_the_document_stores() {
    let (_schema, b) = builder("mq_f32");
    let store = ok(b.document::<Single32>().build().await);
    let values = [123.45f32, 456.45, 0.1, 400.0, -7.3];
    let docs: Vec<Single32> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Single32 {
            id: i as i64 + 1,
            x: *v,
            x_col: *v,
            xs: vec![*v, 1.0],
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    // Marten's own assertion.
    let found = ok(s
        .query::<Single32>()
        .filter(|f| f.x.gt(400.0f32))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), [2]);
    let f = Single32::fields();
    let mut cases: Vec<Case<Single32>> = Vec::new();
    for (name, field) in [("jsonb", f.x.clone()), ("column", f.x_col.clone())] {
        for v in [123.45f32, 0.1, -7.3, 400.0] {
            cases.push(case(
                format!("{name} == {v}"),
                field.eq(v),
                move |d: &Single32| d.x == v,
            ));
            cases.push(case(
                format!("{name} > {v}"),
                field.gt(v),
                move |d: &Single32| d.x > v,
            ));
            cases.push(case(
                format!("{name} <= {v}"),
                field.le(v),
                move |d: &Single32| d.x <= v,
            ));
            cases.push(case(
                format!("{name} in [{v}]"),
                field.is_one_of([v]),
                move |d: &Single32| d.x == v,
            ));
        }
    }
    for v in [123.45f32, 0.1, -7.3] {
        cases.push(case(
            format!("xs contains {v}"),
            f.xs.contains(v),
            move |d: &Single32| d.xs.contains(&v),
        ));
    }
    check_cases!(s, Single32, docs, cases);
}

// ---------------------------------------------------------------------------------------
// Boolean logic
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Player {
    id: i64,
    name: String,
    level: i32,
    flag: bool,
}

keyed!(Player);

/// `Operators/negation_operator.cs`:
/// `negating_predicate_with_an_and_operator_results_in_a_correct_query`,
/// `negating_predicate_with_an_or_operator_results_in_a_correct_query`;
/// `Acceptance/where_clauses.cs`: `!(x.Number == 1)`, `!(x.Number > 3)`,
/// `!(x.Number < 3)`, `!(x.Number <= 3)`, `!(x.Number >= 3)`, `!(x.Number != 3)`,
/// `!x.Flag`, `!x.Flag == false`, `x.String == "A" || x.Number == 1`; double negation.
#[tokio::test]
async fn negations_of_and_or_and_comparisons() {
    let (_schema, b) = builder("mq_negation");
    let store = ok(b.document::<Player>().build().await);
    let player = |id: i64, name: &str, level: i32, flag: bool| Player {
        id,
        name: name.into(),
        level,
        flag,
    };
    let docs = vec![
        player(1, "Tony", 10, true),
        player(2, "Mark", 20, false),
        player(3, "Steve", 10, false),
        player(4, "Leeroy", 20, true),
        player(5, "Tony", 3, false),
        player(6, "A", 1, true),
    ];
    seed!(store, docs);
    let mut s = store.query_session();
    let found = ok(s
        .query::<Player>()
        .filter(|f| f.name.eq("Tony").and(f.level.eq(10)).not())
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), [2, 3, 4, 5, 6]);
    let found = ok(s
        .query::<Player>()
        .filter(|f| f.name.eq("Tony").or(f.level.eq(10)).not())
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), [2, 4, 6]);
    let f = Player::fields();
    let mut cases: Vec<Case<Player>> = vec![
        case("!flag", f.flag.eq(true).not(), |d: &Player| !d.flag),
        case("!!flag", f.flag.eq(true).not().not(), |d: &Player| d.flag),
        case("!(flag == false)", f.flag.eq(false).not(), |d: &Player| {
            d.flag
        }),
        case(
            "name == A || level == 1",
            f.name.eq("A").or(f.level.eq(1)),
            |d: &Player| d.name == "A" || d.level == 1,
        ),
        case(
            "!(name == Tony) && !(level == 20)",
            f.name.eq("Tony").not().and(f.level.eq(20).not()),
            |d: &Player| d.name != "Tony" && d.level != 20,
        ),
        case(
            "!(!(name == Tony) || level > 5)",
            f.name.eq("Tony").not().or(f.level.gt(5)).not(),
            |d: &Player| !(d.name != "Tony" || d.level > 5),
        ),
    ];
    for n in [1, 3, 10, 20] {
        cases.extend([
            case(
                format!("!(level == {n})"),
                f.level.eq(n).not(),
                move |d: &Player| d.level != n,
            ),
            case(
                format!("!(level > {n})"),
                f.level.gt(n).not(),
                move |d: &Player| d.level <= n,
            ),
            case(
                format!("!(level < {n})"),
                f.level.lt(n).not(),
                move |d: &Player| d.level >= n,
            ),
            case(
                format!("!(level <= {n})"),
                f.level.le(n).not(),
                move |d: &Player| d.level > n,
            ),
            case(
                format!("!(level >= {n})"),
                f.level.ge(n).not(),
                move |d: &Player| d.level < n,
            ),
            case(
                format!("!(level != {n})"),
                f.level.ne(n).not(),
                move |d: &Player| d.level == n,
            ),
        ]);
    }
    check_cases!(s, Player, docs, cases);
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct TrackWarrant {
    id: i64,
    territory_id: Uuid,
    is_active: bool,
    issued_during_shift_id: String,
    authorized_during_shift_id: String,
    voided_during_shift_id: String,
    limits_reported_clear_during_shift_id: String,
}

keyed!(TrackWarrant);

fn warrant(id: i64, territory: Uuid, active: bool, shifts: [&str; 4]) -> TrackWarrant {
    TrackWarrant {
        id,
        territory_id: territory,
        is_active: active,
        issued_during_shift_id: shifts[0].into(),
        authorized_during_shift_id: shifts[1].into(),
        voided_during_shift_id: shifts[2].into(),
        limits_reported_clear_during_shift_id: shifts[3].into(),
    }
}

/// `Bugs/Bug_3035_crazy_nested_boolean_conditions.cs`:
/// `behave_correctly_if_comparing_to_null_string`; `Bugs/Bug_3027_using_string_null_check.cs`
/// and `Bugs/Bug_2937_string_isnullorempty_being_ignored.cs` (a condition on a local value
/// inside the filter, here a constant `Filter::all()` or its negation);
/// `Acceptance/nested_boolean_logic.cs`: `TestModalOrQuery`. An AND of an OR whose
/// second branch is an AND of an OR of four equalities, with the "no current shift"
/// branch a constant false.
#[tokio::test]
async fn nested_and_or_with_constant_branches() {
    let (_schema, b) = builder("mq_nested_bool");
    let store = ok(b.document::<TrackWarrant>().build().await);
    let territory = Uuid::from_u128(0xfeed);
    let other = Uuid::from_u128(0xbeef);
    let docs = vec![
        warrant(1, territory, true, ["a", "a", "a", "a"]),
        warrant(2, territory, false, ["a", "a", "a", "a"]),
        warrant(3, territory, false, ["d", "d", "d", "d"]),
        warrant(4, other, true, ["b", "b", "b", "a"]),
        warrant(5, territory, false, ["d", "d", "d", "a"]),
        warrant(6, territory, false, ["d", "a", "d", "d"]),
    ];
    seed!(store, docs);
    let query = |shift: Option<&str>| {
        let f = TrackWarrant::fields();
        let shift_match = match shift {
            Some(s) => Filter::all().and(
                f.issued_during_shift_id
                    .eq(s)
                    .or(f.authorized_during_shift_id.eq(s))
                    .or(f.voided_during_shift_id.eq(s))
                    .or(f.limits_reported_clear_during_shift_id.eq(s)),
            ),
            None => Filter::all().not(),
        };
        f.territory_id
            .eq(territory)
            .and(f.is_active.eq(true).or(shift_match))
    };
    let rust = |d: &TrackWarrant, shift: Option<&str>| {
        d.territory_id == territory
            && (d.is_active
                || shift.is_some_and(|s| {
                    d.issued_during_shift_id == s
                        || d.authorized_during_shift_id == s
                        || d.voided_during_shift_id == s
                        || d.limits_reported_clear_during_shift_id == s
                }))
    };
    let mut s = store.query_session();
    for shift in [Some("a"), Some("d"), Some("zz"), None] {
        let found = ok(s
            .query::<TrackWarrant>()
            .where_filter(query(shift))
            .to_list()
            .await);
        assert_eq!(
            sorted_keys(&found),
            expected(&docs, |d| rust(d, shift)),
            "{shift:?}"
        );
    }
    let none = ok(s
        .query::<TrackWarrant>()
        .where_filter(query(None))
        .to_list()
        .await);
    assert_eq!(keys(&none), [1]);
    let a = ok(s
        .query::<TrackWarrant>()
        .where_filter(query(Some("a")))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&a), [1, 2, 5, 6]);

    // Bug 3027 / 2937: `str == null || x.SomeText == str` and
    // `string.IsNullOrEmpty(q) || x.String == q`.
    let f = TrackWarrant::fields();
    let optional = |value: Option<&str>| match value {
        None => Filter::all(),
        Some(v) => Filter::all().not().or(f.issued_during_shift_id.eq(v)),
    };
    let found = ok(s
        .query::<TrackWarrant>()
        .where_filter(f.territory_id.eq(territory).and(optional(None)))
        .to_list()
        .await);
    assert_eq!(
        sorted_keys(&found),
        expected(&docs, |d| d.territory_id == territory)
    );
    let found = ok(s
        .query::<TrackWarrant>()
        .where_filter(f.territory_id.eq(territory).and(optional(Some("a"))))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), [1, 2]);
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Leafy {
    id: i64,
    a: i32,
    b: String,
    c: bool,
    tags: Vec<String>,
}

keyed!(Leafy);

/// The filter of level `k` of a deep tree and the same predicate in Rust.
fn tree(k: u32) -> (Filter<Leafy>, Pred<Leafy>) {
    let f = Leafy::fields();
    let (leaf, leaf_rust): (Filter<Leafy>, Pred<Leafy>) = match k % 5 {
        0 => {
            let n = (k % 7) as i32;
            (f.a.ge(n), Box::new(move |d: &Leafy| d.a >= n))
        }
        1 => {
            let p = ["x", "y", "xy", "z"][(k % 4) as usize];
            (
                f.b.starts_with(p),
                Box::new(move |d: &Leafy| d.b.starts_with(p)),
            )
        }
        2 => {
            let v = k.is_multiple_of(2);
            (f.c.eq(v), Box::new(move |d: &Leafy| d.c == v))
        }
        3 => {
            let t = ["red", "green", "blue"][(k % 3) as usize];
            (
                f.tags.contains(t),
                Box::new(move |d: &Leafy| d.tags.iter().any(|x| x == t)),
            )
        }
        _ => {
            let set = [(k % 6) as i32, ((k + 2) % 6) as i32];
            (
                f.a.is_one_of(set),
                Box::new(move |d: &Leafy| set.contains(&d.a)),
            )
        }
    };
    if k == 0 {
        return (leaf, leaf_rust);
    }
    let (inner, inner_rust) = tree(k - 1);
    match k % 4 {
        0 => (
            leaf.or(inner.not()),
            Box::new(move |d: &Leafy| leaf_rust(d) || !inner_rust(d)),
        ),
        1 => (
            leaf.and(inner),
            Box::new(move |d: &Leafy| leaf_rust(d) && inner_rust(d)),
        ),
        2 => (
            leaf.not().or(inner),
            Box::new(move |d: &Leafy| !leaf_rust(d) || inner_rust(d)),
        ),
        _ => (
            // De Morgan: not (not leaf and not inner).
            leaf.not().and(inner.not()).not(),
            Box::new(move |d: &Leafy| leaf_rust(d) || inner_rust(d)),
        ),
    }
}

/// `Bugs/Bug_2934_multiple_nested_conditionals.cs` (`broken_linq_condition_1`,
/// `Bug_3025_broken_linq_condition_2`), `Bugs/Bug_2895_no_stack_overflow_please.cs`,
/// `Bugs/Bug_717_permutation_of_Linq_queries.cs`: permutations of nested conditions.
/// Trees of AND / OR / NOT up to 64 levels deep over numbers, strings, booleans and a
/// collection, and OR chains of 200 equalities, return what the same logic in Rust keeps.
#[tokio::test]
async fn deep_and_or_not_trees_agree_with_rust() {
    let (_schema, b) = builder("mq_deep_trees");
    let store = ok(b.document::<Leafy>().build().await);
    let bs = ["x", "xy", "y", "yz", "z", ""];
    let tag_sets: [&[&str]; 5] = [
        &[],
        &["red"],
        &["green", "blue"],
        &["blue"],
        &["red", "green"],
    ];
    let docs: Vec<Leafy> = (0..40)
        .map(|i| Leafy {
            id: i + 1,
            a: (i % 7) as i32 - 1,
            b: format!("{}{}", bs[(i % 6) as usize], i % 3),
            c: i % 3 == 0,
            tags: tag_sets[(i % 5) as usize]
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let mut non_trivial = 0;
    for depth in [3u32, 8, 17, 31, 64] {
        let (filter, rust) = tree(depth);
        let want = expected(&docs, |d| rust(d));
        if !want.is_empty() && want.len() < docs.len() {
            non_trivial += 1;
        }
        let found = ok(s.query::<Leafy>().where_filter(filter).to_list().await);
        assert_eq!(sorted_keys(&found), want, "depth {depth}");
    }
    assert!(non_trivial >= 3, "the trees should split the documents");
    // A long OR chain, and its negation.
    let f = Leafy::fields();
    let chain = (0..200).fold(Filter::<Leafy>::all().not(), |acc, i| {
        acc.or(f.b.eq(format!("x{}", i % 3)).and(f.a.eq((i % 9) - 1)))
    });
    let rust =
        |d: &Leafy| (0..200).any(|i: i32| d.b == format!("x{}", i % 3) && d.a == (i % 9) - 1);
    let found = ok(s
        .query::<Leafy>()
        .where_filter(chain.clone())
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), expected(&docs, rust));
    assert!(!found.is_empty());
    let found = ok(s.query::<Leafy>().where_filter(chain.not()).to_list().await);
    assert_eq!(sorted_keys(&found), expected(&docs, |d| !rust(d)));
}

// ---------------------------------------------------------------------------------------
// Constant filters, soft deletes and tenants
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
struct SoftItem {
    id: i64,
    number: i32,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
struct TenantTarget {
    id: i64,
    string: String,
}

keyed!(SoftItem, TenantTarget);

/// `Bugs/Bug_using_literal_false_in_where_clause.cs`: `query_soft_deleted_and_false`,
/// `return_correct_results`, `Bug_2980`; `Acceptance/where_clauses.cs`:
/// `false && x.Number == 1`, `true && x.Number == 1`;
/// `Bugs/Bug_854_multiple_or_expressions_softdelete_tenancy_filters_appended_incorrectly.cs`
/// (both tests). A constant false matches nothing, whatever soft-delete mode; an OR of
/// filters never widens the soft-delete condition or the tenant's match.
#[tokio::test]
async fn constant_filters_and_ors_keep_the_soft_delete_and_tenant_conditions() {
    let (_schema, b) = builder("mq_constants");
    let store = ok(b
        .document::<SoftItem>()
        .document::<TenantTarget>()
        .build()
        .await);
    let item = |id: i64, number: i32, name: &str| SoftItem {
        id,
        number,
        name: name.into(),
    };
    let docs = vec![
        item(1, 1, "Jim Bob"),
        item(2, 2, "Joe Bill"),
        item(3, 1, "Jim Beam"),
        item(4, 2, "Gone"),
        item(5, 1, "Gone too"),
        item(6, 3, "Other"),
    ];
    seed!(store, docs);
    let mut w = store.lightweight_session();
    ok(w.delete::<SoftItem>(&4));
    ok(w.delete::<SoftItem>(&5));
    ok(w.save_changes().await);
    let live = |d: &SoftItem| d.id != 4 && d.id != 5;

    let mut s = store.query_session();
    let one_or_two = |f: &SoftItemFields<SoftItem>| f.number.eq(1).or(f.number.eq(2));
    let found = ok(s
        .query::<SoftItem>()
        .filter(|f| one_or_two(&f))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), [1, 2, 3]);
    let found = ok(s
        .query::<SoftItem>()
        .include_deleted()
        .filter(|f| one_or_two(&f))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), [1, 2, 3, 4, 5]);
    let found = ok(s
        .query::<SoftItem>()
        .only_deleted()
        .filter(|f| one_or_two(&f))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), [4, 5]);

    // Constant false.
    let never = || Filter::<SoftItem>::all().not();
    assert!(ok(s.query::<SoftItem>().where_filter(never()).to_list().await).is_empty());
    assert!(ok(s
        .query::<SoftItem>()
        .include_deleted()
        .where_filter(never())
        .to_list()
        .await)
    .is_empty());
    assert!(ok(s
        .query::<SoftItem>()
        .filter(|f| f.name.starts_with("J"))
        .where_filter(never())
        .to_list()
        .await)
    .is_empty());
    assert_eq!(
        ok(s.query::<SoftItem>()
            .where_filter(never().and(SoftItem::fields().number.eq(1)))
            .count()
            .await),
        0
    );
    assert!(!ok(s
        .query::<SoftItem>()
        .where_filter(never())
        .exists()
        .await));
    // Constant true: every live document, and `true && number == 1`.
    let found = ok(s
        .query::<SoftItem>()
        .where_filter(Filter::all())
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), expected(&docs, live));
    let found = ok(s
        .query::<SoftItem>()
        .where_filter(Filter::all().and(SoftItem::fields().number.eq(1)))
        .to_list()
        .await);
    assert_eq!(
        sorted_keys(&found),
        expected(&docs, |d| live(d) && d.number == 1)
    );
    // A constant true ORed in still does not reach deleted rows.
    let found = ok(s
        .query::<SoftItem>()
        .where_filter(SoftItem::fields().number.eq(2).or(Filter::all()))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), expected(&docs, live));

    // Tenants: an OR does not reach another tenant's rows with the same ids.
    let strings_red = ["Red", "Orange", "Blue", "Red", "Green"];
    let strings_blue = ["Orange", "Red", "Red", "Blue", "Blue"];
    for (tenant, strings) in [("red", strings_red), ("blue", strings_blue)] {
        let mut w = ok(store.lightweight_session_for(tenant));
        for (i, st) in strings.iter().enumerate() {
            ok(w.store(TenantTarget {
                id: i as i64 + 1,
                string: (*st).to_owned(),
            }));
        }
        ok(w.save_changes().await);
    }
    for (tenant, strings) in [("red", strings_red), ("blue", strings_blue)] {
        let mut q = ok(store.query_session_for(tenant));
        let found = ok(q
            .query::<TenantTarget>()
            .filter(|f| f.string.eq("Red").or(f.string.eq("Orange")))
            .order_by(|f| f.id.asc())
            .to_list()
            .await);
        let want: Vec<i64> = strings
            .iter()
            .enumerate()
            .filter(|(_, st)| **st == "Red" || **st == "Orange")
            .map(|(i, _)| i as i64 + 1)
            .collect();
        assert_eq!(keys(&found), want, "{tenant}");
        assert!(found.iter().all(|d| d.string == strings[d.id as usize - 1]));
        let n = ok(q
            .query::<TenantTarget>()
            .where_filter(Filter::all().or(TenantTarget::fields().string.eq("Blue")))
            .count()
            .await);
        assert_eq!(n, strings.len() as i64, "{tenant}");
    }
}

// ---------------------------------------------------------------------------------------
// Ordering, paging, selections, first / single
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Row {
    id: i64,
    number: i32,
    #[document(index)]
    number_col: i32,
    name: String,
    #[document(index)]
    name_col: String,
    long: i64,
}

keyed!(Row);

/// `Acceptance/order_by_clauses.cs` (`OrderBy(Number).ThenBy(String)`,
/// `ThenByDescending(String)`, `OrderByDescending(Number).ThenBy(String)` with `Take(10)`,
/// on plain and duplicated fields); `Acceptance/take_and_skip.cs` (all five cases);
/// `Acceptance/statistics_and_paged_list.cs` (`can_return_paged_result`, the totals).
/// Several sort keys with ties (broken by id), skip and take, and every page of a
/// filtered, sorted query joined back into the whole list with the right total.
#[tokio::test]
async fn several_sort_keys_with_skip_take_and_pages() {
    let (_schema, b) = builder("mq_order");
    let store = ok(b.document::<Row>().build().await);
    let names = ["b", "A", "a", "B", "ab", "é"];
    let docs: Vec<Row> = (1..=60i64)
        .map(|i| {
            let number = ((i * 7) % 5) as i32 - 2;
            let name = names[((i * 3) % 6) as usize].to_owned();
            Row {
                id: i,
                number,
                number_col: number,
                name: name.clone(),
                name_col: name,
                long: (i * 37) % 61 - 30,
            }
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let ordered = |cmp: &dyn Fn(&Row, &Row) -> std::cmp::Ordering| {
        let mut v = docs.clone();
        v.sort_by(|a, b| cmp(a, b).then(a.id.cmp(&b.id)));
        keys(&v)
    };
    // number asc, name asc.
    let want = ordered(&|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
    let plain = ok(s
        .query::<Row>()
        .order_by(|f| f.number.asc())
        .order_by(|f| f.name.asc())
        .to_list()
        .await);
    let columns = ok(s
        .query::<Row>()
        .order_by(|f| f.number_col.asc())
        .order_by(|f| f.name_col.asc())
        .to_list()
        .await);
    assert_eq!(keys(&plain), want);
    assert_eq!(keys(&columns), want);
    // number asc, name desc, take 10.
    let want = ordered(&|a, b| a.number.cmp(&b.number).then(b.name.cmp(&a.name)));
    for on_column in [false, true] {
        let found = ok(s
            .query::<Row>()
            .order_by(|f| {
                if on_column {
                    f.number_col.asc()
                } else {
                    f.number.asc()
                }
            })
            .order_by(|f| {
                if on_column {
                    f.name_col.desc()
                } else {
                    f.name.desc()
                }
            })
            .take(10)
            .to_list()
            .await);
        assert_eq!(keys(&found), want[..10], "on column: {on_column}");
    }
    // number desc, name asc, take 10.
    let want = ordered(&|a, b| b.number.cmp(&a.number).then(a.name.cmp(&b.name)));
    let found = ok(s
        .query::<Row>()
        .order_by(|f| f.number.desc())
        .order_by(|f| f.name.asc())
        .take(10)
        .to_list()
        .await);
    assert_eq!(keys(&found), want[..10]);

    // take_and_skip: ordered by Long.
    let by_long = ordered(&|a, b| a.long.cmp(&b.long));
    for (skip, take) in [
        (Some(20), Some(10)),
        (Some(10), Some(20)),
        (None, Some(20)),
        (Some(15), None),
        (Some(0), None),
    ] {
        let mut q = s.query::<Row>().order_by(|f| f.long.asc());
        if let Some(n) = skip {
            q = q.skip(n);
        }
        if let Some(n) = take {
            q = q.take(n);
        }
        let found = ok(q.to_list().await);
        let from = skip.unwrap_or(0);
        let to = take.map_or(by_long.len(), |t| (from + t).min(by_long.len()));
        assert_eq!(
            keys(&found),
            by_long[from..to],
            "skip {skip:?} take {take:?}"
        );
    }

    // Every page of a filtered, sorted query, and its total.
    let want = {
        let mut v: Vec<Row> = docs.iter().filter(|d| d.number > -1).cloned().collect();
        v.sort_by(|a, b| {
            b.name
                .cmp(&a.name)
                .then(a.long.cmp(&b.long))
                .then(a.id.cmp(&b.id))
        });
        keys(&v)
    };
    let mut joined = Vec::new();
    for page in 0..=(want.len() / 7 + 1) {
        let p = ok(s
            .query::<Row>()
            .filter(|f| f.number.gt(-1))
            .order_by(|f| f.name.desc())
            .order_by(|f| f.long.asc())
            .to_page(page, 7)
            .await);
        assert_eq!(p.total, want.len() as i64, "page {page}");
        assert!(p.items.len() <= 7);
        joined.extend(keys(&p.items));
    }
    assert_eq!(joined, want);
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Ranked {
    id: i64,
    /// Left out of the JSON when empty: a missing value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    score: i32,
}

keyed!(Ranked);

/// `Acceptance/order_by_clauses.cs`: `OrderBy(x => x.String).ThenBy(x => x.Id)` and
/// `OrderByDescending(x => x.String).ThenBy(x => x.Id)` compared with LINQ to objects,
/// where a null string sorts before every other value. A field missing from some
/// documents sorts first ascending and last descending (as `""` does in Rust), also as a
/// second key and across pages.
#[tokio::test]
async fn missing_values_sort_first_ascending_and_last_descending() {
    let (schema, b) = builder("mq_missing_order");
    let store = ok(b.document::<Ranked>().build().await);
    let names = ["m", "", "b", "", "z", "a", "", "m"];
    let docs: Vec<Ranked> = (0..names.len())
        .map(|i| Ranked {
            id: i as i64 + 1,
            name: names[i].to_owned(),
            score: (i % 3) as i32,
        })
        .collect();
    seed!(store, docs);
    let missing: i64 = schema
        .raw_client()
        .await
        .query_one(
            "SELECT count(*) FROM mt_doc_ranked WHERE NOT data ? 'name'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(missing, 3, "empty names are left out of the JSON");
    let mut s = store.query_session();
    let ordered = |cmp: &dyn Fn(&Ranked, &Ranked) -> std::cmp::Ordering| {
        let mut v = docs.clone();
        v.sort_by(|a, b| cmp(a, b).then(a.id.cmp(&b.id)));
        keys(&v)
    };
    let asc = ok(s
        .query::<Ranked>()
        .order_by(|f| f.name.asc())
        .to_list()
        .await);
    assert_eq!(keys(&asc), ordered(&|a, b| a.name.cmp(&b.name)));
    assert_eq!(keys(&asc)[..3], [2, 4, 7]);
    let desc = ok(s
        .query::<Ranked>()
        .order_by(|f| f.name.desc())
        .to_list()
        .await);
    assert_eq!(keys(&desc), ordered(&|a, b| b.name.cmp(&a.name)));
    assert_eq!(keys(&desc)[5..], [2, 4, 7]);
    let two_keys = ok(s
        .query::<Ranked>()
        .order_by(|f| f.score.desc())
        .order_by(|f| f.name.asc())
        .to_list()
        .await);
    assert_eq!(
        keys(&two_keys),
        ordered(&|a, b| b.score.cmp(&a.score).then(a.name.cmp(&b.name)))
    );
    let want = ordered(&|a, b| b.name.cmp(&a.name));
    let mut joined = Vec::new();
    for page in 0..3 {
        let p = ok(s
            .query::<Ranked>()
            .order_by(|f| f.name.desc())
            .to_page(page, 3)
            .await);
        assert_eq!(p.total, docs.len() as i64);
        joined.extend(keys(&p.items));
    }
    assert_eq!(joined, want);
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Target {
    id: i64,
    number: i32,
    color: Color,
    another_number: i32,
    flag: bool,
    text: String,
}

keyed!(Target);

/// `Bugs/Bug_504_Take_Skip_before_Select_not_applying_sort_or_where_clause.cs` (both
/// tests) and `Bugs/Bug_260_Take_Skip_with_Select_Tests.cs`: a selection keeps the
/// query's filter, order, skip and take; the page's total counts every match (33 blue
/// documents of 100).
#[tokio::test]
async fn selections_keep_filter_order_skip_and_take_and_pages_count_all_matches() {
    let (_schema, b) = builder("mq_select_paging");
    let store = ok(b.document::<Target>().build().await);
    let docs: Vec<Target> = (0..100)
        .map(|i| Target {
            id: 1000 - i as i64,
            number: i + 1,
            color: if i % 3 == 0 {
                Color::Red
            } else if i % 2 == 0 {
                Color::Blue
            } else {
                Color::Green
            },
            another_number: 0,
            flag: false,
            text: String::new(),
        })
        .collect();
    seed!(store, docs);
    let mut blue: Vec<&Target> = docs.iter().filter(|d| d.color == Color::Blue).collect();
    blue.sort_by_key(|d| d.number);
    assert_eq!(blue.len(), 33);
    let want: Vec<i64> = blue[10..20].iter().map(|d| d.id).collect();
    let mut s = store.query_session();
    let ids: Vec<i64> = ok(s
        .query::<Target>()
        .filter(|f| f.color.eq(Color::Blue))
        .order_by(|f| f.number.asc())
        .skip(10)
        .take(10)
        .select(|f| f.id)
        .to_list()
        .await);
    assert_eq!(ids, want);
    let pairs: Vec<(i64, i32)> = ok(s
        .query::<Target>()
        .filter(|f| f.color.eq(Color::Blue))
        .order_by(|f| f.number.desc())
        .skip(30)
        .take(10)
        .select(|f| (f.id, f.number))
        .to_list()
        .await);
    let want_pairs: Vec<(i64, i32)> = blue
        .iter()
        .rev()
        .skip(30)
        .map(|d| (d.id, d.number))
        .collect();
    assert_eq!(pairs, want_pairs);
    let page = ok(s
        .query::<Target>()
        .filter(|f| f.color.eq(Color::Blue))
        .order_by(|f| f.number.asc())
        .to_page(1, 10)
        .await);
    assert_eq!(page.total, 33);
    assert_eq!(keys(&page.items), want);
}

/// A compiled `Single` of a query that takes one document.
struct TakeOneSingle {
    number: i32,
}

impl CompiledQuery for TakeOneSingle {
    type Document = Target;
    type Returns = marten::compiled::Single;

    fn build(&self, q: marten::QuerySpec<Target>) -> marten::QuerySpec<Target> {
        q.filter(|f| f.number.eq(self.number))
            .order_by(|f| f.another_number.desc())
            .take(1)
    }
}

/// `Operators/first_operator.cs`: `first_hit_with_only_one_document`,
/// `first_or_default_miss`, `first_correct_hit_with_more_than_one_match`,
/// `first_or_default_correct_hit_with_more_than_one_match_async_in_combo_with_order_by`;
/// `Operators/single_operator.cs`: `single_hit_with_only_one_document`,
/// `single_or_default_miss`, `single_hit_with_more_than_one_match`,
/// `single_hit_with_more_than_one_match_and_take_one_should_not_throw`. `first` is the
/// first match in the query's order; `single` of one match is it, of none `None`, of
/// several an error, and after `take(1)` there is only one (also for a selection and a
/// compiled query: `Bugs/Bug_582_and_592_Skip_and_Take_in_compiled_queries.cs`).
#[tokio::test]
async fn first_and_single_follow_the_query_order_and_its_take() {
    let (_schema, b) = builder("mq_first_single");
    let store = ok(b.document::<Target>().build().await);
    let target = |id: i64, number: i32, another: i32, flag: bool, text: &str| Target {
        id,
        number,
        color: Color::Red,
        another_number: another,
        flag,
        text: text.into(),
    };
    let docs = [
        target(1, 1, 10, false, ""),
        target(2, 2, 20, false, "Wrong"),
        target(3, 2, 30, true, "Correct"),
        target(4, 4, 0, false, ""),
        target(5, 3, 0, false, "three"),
    ];
    seed!(store, docs);
    let mut s = store.query_session();
    let first = ok(s.query::<Target>().filter(|f| f.number.eq(3)).first().await);
    assert_eq!(first.map(|t| t.id), Some(5));
    assert!(ok(s
        .query::<Target>()
        .filter(|f| f.number.eq(11))
        .first()
        .await)
    .is_none());
    let first = ok(s
        .query::<Target>()
        .filter(|f| f.number.eq(2))
        .order_by(|f| f.another_number.desc())
        .first()
        .await)
    .expect("a match");
    assert_eq!(first.text, "Correct");
    assert!(first.flag);
    let first = ok(s
        .query::<Target>()
        .filter(|f| f.number.eq(2))
        .order_by(|f| f.another_number.asc())
        .first()
        .await)
    .expect("a match");
    assert_eq!(first.text, "Wrong");
    // first after skip is the next one in order.
    let second = ok(s
        .query::<Target>()
        .order_by(|f| f.number.desc())
        .skip(1)
        .first()
        .await);
    assert_eq!(second.map(|t| t.id), Some(5));

    let one = ok(s
        .query::<Target>()
        .filter(|f| f.number.eq(3))
        .single()
        .await);
    assert_eq!(one.map(|t| t.id), Some(5));
    assert!(ok(s
        .query::<Target>()
        .filter(|f| f.number.eq(11))
        .single()
        .await)
    .is_none());
    assert!(matches!(
        s.query::<Target>()
            .filter(|f| f.number.eq(2))
            .single()
            .await,
        Err(Error::NotSingle { .. })
    ));
    assert!(matches!(
        s.query::<Target>()
            .filter(|f| f.number.eq(2))
            .select(|f| f.id)
            .single()
            .await,
        Err(Error::NotSingle { .. })
    ));
    // Two matches, but the query takes one: that one is the only one (a plain query, a
    // selection and a compiled query).
    let taken = s
        .query::<Target>()
        .filter(|f| f.number.eq(2))
        .order_by(|f| f.another_number.desc())
        .take(1)
        .single()
        .await;
    let taken_id = s
        .query::<Target>()
        .filter(|f| f.number.eq(2))
        .order_by(|f| f.another_number.asc())
        .take(1)
        .select(|f| f.id)
        .single()
        .await;
    let compiled = s.query_compiled(&TakeOneSingle { number: 2 }).await;
    let mut wrong = Vec::new();
    if !matches!(&taken, Ok(Some(t)) if t.id == 3) {
        wrong.push(format!(
            "take(1).single(): expected Ok(Some(id 3)), got {taken:?}"
        ));
    }
    if !matches!(&taken_id, Ok(Some(2))) {
        wrong.push(format!(
            "take(1).select(id).single(): expected Ok(Some(2)), got {taken_id:?}"
        ));
    }
    if !matches!(&compiled, Ok(Some(t)) if t.id == 3) {
        wrong.push(format!(
            "compiled take(1) Single: expected Ok(Some(id 3)), got {compiled:?}"
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
