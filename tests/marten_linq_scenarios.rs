//! More behaviours of Marten's LINQ tests (JasperFx/marten, `src/LinqTests`: `Acceptance/`,
//! `Operators/`, `Includes/`, `Compiled/`, `SoftDeletes/` and `Bugs/`), ported to the typed
//! query API; `tests/marten_query_scenarios.rs` holds the first part (NULLs, nested paths,
//! collections, string operators, numbers at their edges, boolean trees). This part:
//! timestamps compared and sorted in time order (a UTC text newtype, and instants written
//! with offsets through `where_sql`), enums stored as integers, booleans, uuids on
//! columns, `is_one_of` with empty and negated lists, ordering by several keys of several
//! kinds with values missing from indexed columns, repeated `take` / `skip`, includes
//! under filters, orders and paging, selections of deep and optional fields, aggregates
//! over empty sets and indexed columns, soft-deleted rows mixed with live ones, compiled
//! queries re-run with new values, and deep nesting.
//!
//! Every expected answer is computed in the test from the documents it stored, with plain
//! Rust, so a wrong SQL translation shows as a difference. Each test's doc comment names
//! the Marten tests it carries over.

mod common;

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

use common::{builder, ok};
use futures_util::StreamExt;
use marten::compiled::{Count, Exists, First, Single, ToList};
use marten::prelude::*;
use marten::query::{Comparable, Filter, Orderable, ValueKind};
use marten::time::format_description::well_known::Rfc3339;
use marten::time::{OffsetDateTime, UtcOffset};
use marten::QuerySpec;
use proptest::prelude::{Just, ProptestConfig, Strategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// The ids of the documents `keep` accepts, sorted by `cmp` and then by id (the tie
/// breaker every query adds).
fn ordered<T: Keyed>(
    docs: &[T],
    keep: impl Fn(&T) -> bool,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Vec<i64> {
    let mut v: Vec<&T> = docs.iter().filter(|d| keep(d)).collect();
    v.sort_by(|a, b| cmp(a, b).then(a.key().cmp(&b.key())));
    v.into_iter().map(Keyed::key).collect()
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

/// Runs every case of `$cases` as a list and as a count of `$t` on session `$s`, and
/// compares them with the ids the case's predicate keeps among `$docs`.
macro_rules! check_cases {
    ($s:expr, $t:ty, $docs:expr, $cases:expr) => {{
        let mut wrong = Vec::new();
        for (label, filter, keep) in $cases {
            let found = ok($s
                .query::<$t>()
                .where_filter(filter.clone())
                .to_list()
                .await);
            let counted = ok($s.query::<$t>().where_filter(filter).count().await);
            let (got, want) = (sorted_keys(&found), expected(&$docs, |d| keep(d)));
            if got != want {
                wrong.push(format!("case `{label}`: found {got:?}, expected {want:?}"));
            }
            if counted != want.len() as i64 {
                wrong.push(format!(
                    "case `{label}`: counted {counted}, expected {}",
                    want.len()
                ));
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
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Color {
    Red,
    Blue,
    Green,
    Yellow,
}

impl Comparable for Color {
    const KIND: ValueKind = ValueKind::Text;
}

const COLORS: [Color; 4] = [Color::Red, Color::Blue, Color::Green, Color::Yellow];

// ---------------------------------------------------------------------------------------
// Dates and timestamps
// ---------------------------------------------------------------------------------------

/// An instant written as UTC text with six fraction digits (`2024-03-10T12:00:00.123456Z`),
/// so the text's byte order is the time order: queryable and sortable as text, and as a
/// duplicated `text` column (PostgreSQL's cast to `timestamptz` is not immutable, so a
/// generated column cannot hold one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(OffsetDateTime);

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0.to_offset(UtcOffset::UTC);
        s.serialize_str(&format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        ))
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map(Stamp)
            .map_err(serde::de::Error::custom)
    }
}

impl Comparable for Stamp {
    const KIND: ValueKind = ValueKind::Text;
}

impl Orderable for Stamp {}

impl marten::ColumnType for Stamp {
    const SQL_TYPE: &'static str = "text";
}

/// 2024-03-10T12:00:00.123456Z, in microseconds since the epoch.
const NOW_MICROS: i64 = 1_710_072_000_123_456;

/// `NOW_MICROS` moved by `minutes`, shown at a UTC offset of `offset_hours`.
fn instant(minutes: i64, offset_hours: i8) -> OffsetDateTime {
    let nanos = i128::from(NOW_MICROS + minutes * 60_000_000) * 1000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("in range");
    t.to_offset(UtcOffset::from_hms(offset_hours, 0, 0).expect("offset"))
}

fn stamp(minutes: i64, offset_hours: i8) -> Stamp {
    Stamp(instant(minutes, offset_hours))
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Visit {
    id: i64,
    number: i32,
    at: Stamp,
    #[document(index)]
    at_col: Stamp,
    ended: Option<Stamp>,
}

keyed!(Visit);

/// `Acceptance/date_type_usage.cs`: `query`, `can_index_against_datetime_offset`;
/// `Bugs/Bug_2198_querying_against_UTC_DateTime_with_Npgsql.cs`:
/// `can_index_against_datetime_offset`; `Bugs/Bug_432_querying_with_UTC_times_with_offset.cs`:
/// `can_issue_queries_against_DateTime` (and `_as_duplicated_column`,
/// `_the_datetime_offset`, `_the_datetime_offset_as_duplicate_field`);
/// `Acceptance/where_clauses.cs`: the `x.Date` comparisons with `today`. Instants made at
/// several UTC offsets compare (`>`, `>=`, `<`, `<=`, `==`, `!=`), sort and aggregate
/// (`min` / `max`) in time order, on the `jsonb` value and on a duplicated column.
#[tokio::test]
async fn utc_timestamps_compare_sort_and_aggregate_in_time_order() {
    let (_schema, b) = builder("ml_dates");
    let store = ok(b.document::<Visit>().build().await);
    // Marten's five (+30 min, +1 day, +1 h, -2 h, -3 h), then "now" itself twice (one
    // written at +02:00), Bug_432's +5 / -5 minutes, a year later, a month earlier, +1 min.
    let minutes = [30, 1440, 60, -120, -180, 0, 5, -5, 0, 525_600, -43_200, 1];
    let offsets = [0, 2, -5, 9, -11, 0, 14, -12, 2, 1, -3, 5];
    let docs: Vec<Visit> = minutes
        .iter()
        .zip(offsets)
        .enumerate()
        .map(|(i, (&m, o))| {
            let at = stamp(m, o);
            Visit {
                id: i as i64 + 1,
                number: i as i32 + 1,
                at,
                at_col: at,
                ended: (i % 3 == 0).then(|| stamp(m + 90, 0)),
            }
        })
        .collect();
    seed!(store, docs);
    let now = stamp(0, 0);
    let hour_later = stamp(60, -7);
    let mut s = store.query_session();
    let f = Visit::fields();
    type Get = fn(&Visit) -> Stamp;
    let mut cases: Vec<Case<Visit>> = Vec::new();
    for (name, field, get) in [
        ("jsonb", f.at.clone(), (|v: &Visit| v.at) as Get),
        ("column", f.at_col.clone(), |v: &Visit| v.at_col),
    ] {
        cases.extend([
            case(format!("{name}: > now"), field.gt(now), move |v| {
                get(v) > now
            }),
            case(format!("{name}: >= now"), field.ge(now), move |v| {
                get(v) >= now
            }),
            case(format!("{name}: < now"), field.lt(now), move |v| {
                get(v) < now
            }),
            case(format!("{name}: <= now"), field.le(now), move |v| {
                get(v) <= now
            }),
            case(format!("{name}: == now"), field.eq(now), move |v| {
                get(v) == now
            }),
            case(format!("{name}: != now"), field.ne(now), move |v| {
                get(v) != now
            }),
            case(
                format!("{name}: now < x < now + 1 h"),
                field.gt(now).and(field.lt(hour_later)),
                move |v| get(v) > now && get(v) < hour_later,
            ),
            case(
                format!("{name}: !(x > now)"),
                field.gt(now).not(),
                move |v| get(v) <= now,
            ),
        ]);
    }
    cases.extend([
        case("ended is none", f.ended.is_none(), |v| v.ended.is_none()),
        case("ended is some", f.ended.is_some(), |v| v.ended.is_some()),
        case(
            "ended == Some(now + 90 min)",
            f.ended.eq(Some(stamp(90, 0))),
            |v| v.ended == Some(stamp(90, 0)),
        ),
    ]);
    check_cases!(s, Visit, docs, cases);
    // Two documents hold "now", one written at +02:00.
    assert_eq!(expected(&docs, |v| v.at == now), [6, 9]);
    // Bug_432: `now >= x.DateTimeField` over now, now + 5 min, now - 5 min.
    let bug_432 = ok(s
        .query::<Visit>()
        .filter(|f| f.id.is_one_of([6, 7, 8]))
        .filter(|f| f.at_col.le(now))
        .count()
        .await);
    assert_eq!(bug_432, 2);

    // Sorting by time, both ways, on the value and on the column.
    for desc in [false, true] {
        let want = ordered(
            &docs,
            |_| true,
            |a, b| {
                let c = a.at.cmp(&b.at);
                if desc {
                    c.reverse()
                } else {
                    c
                }
            },
        );
        for on_column in [false, true] {
            let found = ok(s
                .query::<Visit>()
                .order_by(|f| match (on_column, desc) {
                    (false, false) => f.at.asc(),
                    (false, true) => f.at.desc(),
                    (true, false) => f.at_col.asc(),
                    (true, true) => f.at_col.desc(),
                })
                .to_list()
                .await);
            assert_eq!(keys(&found), want, "desc {desc}, column {on_column}");
        }
    }
    // date_type_usage: Marten's five documents after now, by date: 1, 3, 2.
    let numbers: Vec<i32> = ok(s
        .query::<Visit>()
        .filter(|f| f.number.le(5).and(f.at_col.gt(now)))
        .order_by(|f| f.at_col.asc())
        .select(|f| f.number)
        .to_list()
        .await);
    assert_eq!(numbers, [1, 3, 2]);

    // Aggregates.
    let earliest = docs.iter().map(|v| v.at).min();
    let latest = docs.iter().map(|v| v.at).max();
    assert_eq!(ok(s.query::<Visit>().min(|f| f.at).await), earliest);
    assert_eq!(ok(s.query::<Visit>().max(|f| f.at_col).await), latest);
    let latest_past = docs.iter().map(|v| v.at).filter(|a| *a < now).max();
    assert_eq!(
        ok(s.query::<Visit>()
            .filter(|f| f.at.lt(now))
            .max(|f| f.at_col)
            .await),
        latest_past
    );
}

/// `Bugs/Bug_479_select_datetime_fields.cs`: `select_date_time_as_utc`,
/// `select_date_time_offset`; `Bugs/Bug_3117_select_directly_to_DateTime.cs`;
/// `Acceptance/date_type_usage.cs`: `can_select_DateTimeOffset_and_will_return_localtime`.
/// A selected timestamp (alone, in a tuple, in a struct, and an optional one) reads back
/// as the instant stored, to the microsecond.
#[tokio::test]
async fn selected_timestamps_read_back_the_stored_instants() {
    let (_schema, b) = builder("ml_date_select");
    let store = ok(b.document::<Visit>().build().await);
    let docs: Vec<Visit> = (0..6)
        .map(|i| Visit {
            id: i + 1,
            number: i as i32,
            at: stamp(i * 1000 - 2500, (i as i8) * 3 - 7),
            at_col: stamp(-i, 0),
            ended: (i % 2 == 1).then(|| stamp(i * 7, 4)),
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let one: Option<Stamp> = ok(s
        .query::<Visit>()
        .filter(|f| f.id.eq(4))
        .select(|f| f.at)
        .single()
        .await);
    assert_eq!(one, Some(docs[3].at));
    let latest: Option<Stamp> = ok(s
        .query::<Visit>()
        .order_by(|f| f.at.desc())
        .select(|f| f.at)
        .first()
        .await);
    assert_eq!(latest, docs.iter().map(|v| v.at).max());
    let pairs: Vec<(i64, Option<Stamp>)> = ok(s
        .query::<Visit>()
        .order_by(|f| f.id.asc())
        .select(|f| (f.id, f.ended))
        .to_list()
        .await);
    let want: Vec<(i64, Option<Stamp>)> = docs.iter().map(|v| (v.id, v.ended)).collect();
    assert_eq!(pairs, want);
    #[derive(Deserialize, Debug, PartialEq)]
    struct Dates {
        at: Stamp,
        at_col: Stamp,
    }
    let structs: Vec<Dates> = ok(s
        .query::<Visit>()
        .filter(|f| f.ended.is_some())
        .order_by(|f| f.at_col.asc())
        .select_into::<Dates, _>(|f| (f.at, f.at_col))
        .to_list()
        .await);
    let mut want: Vec<&Visit> = docs.iter().filter(|v| v.ended.is_some()).collect();
    want.sort_by_key(|v| v.at_col);
    let want: Vec<Dates> = want
        .iter()
        .map(|v| Dates {
            at: v.at,
            at_col: v.at_col,
        })
        .collect();
    assert_eq!(structs, want);
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Reading {
    id: i64,
    // Written as RFC 3339 text by `with`, so no typed path (query values would be written
    // by `OffsetDateTime`'s own `Serialize`): compared through `where_sql` below.
    #[serde(with = "marten::time::serde::rfc3339")]
    #[query(skip)]
    at: OffsetDateTime,
    value: i32,
}

keyed!(Reading);

/// `Acceptance/against_date_time_offset.cs`:
/// `query_against_date_time_offset_that_is_not_universal_time`;
/// `Bugs/Bug_432_querying_with_UTC_times_with_offset.cs`:
/// `can_issue_queries_against_the_datetime_offset`. Instants written with their own UTC
/// offsets (RFC 3339 text whose byte order is not their time order) compare as instants
/// through `where_sql` with a timestamp parameter given at yet another offset, combined
/// with typed filters, counts and pages; a loaded document keeps its offset.
#[tokio::test]
async fn instants_written_at_several_offsets_compare_as_instants_through_where_sql() {
    let (_schema, b) = builder("ml_offsets");
    let store = ok(b.document::<Reading>().build().await);
    let at = |minutes: i64, h: i8, m: i8| {
        instant(minutes, 0).to_offset(UtcOffset::from_hms(h, m, 0).expect("offset"))
    };
    let docs = vec![
        Reading {
            id: 1,
            at: at(0, 14, 0),
            value: 1,
        },
        Reading {
            id: 2,
            at: at(-30, -8, 0),
            value: 2,
        },
        Reading {
            id: 3,
            at: at(30, 5, 30),
            value: 3,
        },
        Reading {
            id: 4,
            at: at(1, 0, 0),
            value: 4,
        },
        Reading {
            id: 5,
            at: at(-1, -3, 0),
            value: 5,
        },
        Reading {
            id: 6,
            at: at(600, -11, 0),
            value: 6,
        },
        Reading {
            id: 7,
            at: at(-600, 12, 0),
            value: 7,
        },
        Reading {
            id: 8,
            at: at(0, -9, -30),
            value: 8,
        },
    ];
    // The test has teeth: the stored text sorts differently from the instants.
    let text_order = ordered(
        &docs,
        |_| true,
        |a, b| {
            let (x, y) = (a.at.format(&Rfc3339), b.at.format(&Rfc3339));
            x.expect("format").cmp(&y.expect("format"))
        },
    );
    let time_order = ordered(&docs, |_| true, |a, b| a.at.cmp(&b.at));
    assert_ne!(text_order, time_order);
    seed!(store, docs);
    let mut s = store.query_session();
    let cut = at(0, 9, 0);
    let sql_le = "(d.data ->> 'at')::timestamptz <= $1";
    let found = ok(s
        .query::<Reading>()
        .where_sql(sql_le, (cut,))
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found), expected(&docs, |r| r.at <= cut));
    assert_eq!(sorted_keys(&found), [1, 2, 5, 7, 8]);
    let later = ok(s
        .query::<Reading>()
        .where_sql("(d.data ->> 'at')::timestamptz > $1", (cut,))
        .count()
        .await);
    assert_eq!(later, docs.iter().filter(|r| r.at > cut).count() as i64);
    let (from, to) = (at(-60, -2, 0), at(60, 3, 0));
    let window = ok(s
        .query::<Reading>()
        .where_sql(
            "(d.data ->> 'at')::timestamptz > $1 AND (d.data ->> 'at')::timestamptz < $2",
            (from, to),
        )
        .filter(|f| f.value.ne(4))
        .order_by(|f| f.value.desc())
        .to_page(0, 3)
        .await);
    let want = ordered(
        &docs,
        |r| r.at > from && r.at < to && r.value != 4,
        |a, b| b.value.cmp(&a.value),
    );
    assert_eq!(window.total, want.len() as i64);
    assert_eq!(keys(&window.items), want[..3]);
    // A loaded document keeps the offset it was written with.
    let loaded: Reading = ok(s.load(&3).await).expect("stored");
    assert_eq!(loaded.at, docs[2].at);
    assert_eq!(loaded.at.offset(), docs[2].at.offset());
}

// ---------------------------------------------------------------------------------------
// Enums stored as integers
// ---------------------------------------------------------------------------------------

/// An enum serialized as an integer code (Marten's `EnumStorage.AsInteger`), declared in
/// the order of its codes so that Rust's order is the codes' order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Critical,
    ];

    fn code(self) -> i32 {
        match self {
            Priority::Low => 1,
            Priority::Medium => 5,
            Priority::High => 10,
            Priority::Critical => 20,
        }
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(self.code())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = i32::deserialize(d)?;
        Priority::ALL
            .into_iter()
            .find(|p| p.code() == code)
            .ok_or_else(|| serde::de::Error::custom(format!("no priority {code}")))
    }
}

impl Comparable for Priority {
    const KIND: ValueKind = ValueKind::Number;
}

impl Orderable for Priority {}

impl marten::ColumnType for Priority {
    const SQL_TYPE: &'static str = "integer";
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Owner {
    name: String,
    level: Priority,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Ticket {
    id: i64,
    number: i32,
    priority: Priority,
    #[document(index)]
    priority_col: Priority,
    maybe: Option<Priority>,
    history: Vec<Priority>,
    #[query(nested)]
    owner: Owner,
}

keyed!(Ticket);

/// `Acceptance/enum_usage.cs` with `EnumStorage.AsInteger`
/// (`use_enum_values_with_jil_that_are_not_duplicated`,
/// `use_enum_values_with_newtonsoft_that_are_duplicated`,
/// `use_nullable_enum_values_as_part_of_in_query`, `..._notin_query`);
/// `Bugs/Bug_1951_querying_against_nested_enum.cs`; `Operators/aggregate_functions.cs`:
/// `get_sum_of_integers_with_where_with_nullable_enum(AsInteger)`;
/// `Operators/distinct_operator.cs`: `get_distinct_enums`, `get_distinct_nullable_enums`.
/// An enum stored as its integer code compares, is matched in lists, sorts and aggregates
/// by the code, on the `jsonb` value, a duplicated `integer` column, an `Option`, a list
/// and a nested object.
#[tokio::test]
async fn enums_stored_as_integers_compare_sort_and_aggregate_by_their_codes() {
    let (schema, b) = builder("ml_enum_int");
    let store = ok(b.document::<Ticket>().build().await);
    let p = |i: i64| Priority::ALL[(i % 4) as usize];
    let docs: Vec<Ticket> = (1..=16i64)
        .map(|i| Ticket {
            id: i,
            number: (i * 5 % 7) as i32,
            priority: p(i * 3),
            priority_col: p(i * 3),
            maybe: (i % 3 != 0).then(|| p(i)),
            history: (0..(i % 4)).map(|k| p(i + k)).collect(),
            owner: Owner {
                name: format!("o{}", i % 5),
                level: p(i / 3),
            },
        })
        .collect();
    seed!(store, docs);
    let raw = schema.raw_client().await;
    let numbers: i64 = raw
        .query_one(
            "SELECT count(*) FROM mt_doc_ticket WHERE jsonb_typeof(data -> 'priority') = 'number' \
             AND jsonb_typeof(data -> 'owner' -> 'level') = 'number'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(numbers, 16, "stored as numbers");
    let mut s = store.query_session();
    let f = Ticket::fields();
    type Get = fn(&Ticket) -> Priority;
    let mut cases: Vec<Case<Ticket>> = Vec::new();
    for (name, field, get) in [
        (
            "jsonb",
            f.priority.clone(),
            (|t: &Ticket| t.priority) as Get,
        ),
        ("column", f.priority_col.clone(), |t: &Ticket| {
            t.priority_col
        }),
    ] {
        cases.extend([
            case(
                format!("{name}: == High"),
                field.eq(Priority::High),
                move |t| get(t) == Priority::High,
            ),
            case(
                format!("{name}: != High"),
                field.ne(Priority::High),
                move |t| get(t) != Priority::High,
            ),
            case(
                format!("{name}: > Medium"),
                field.gt(Priority::Medium),
                move |t| get(t) > Priority::Medium,
            ),
            case(
                format!("{name}: <= Medium"),
                field.le(Priority::Medium),
                move |t| get(t) <= Priority::Medium,
            ),
            case(
                format!("{name}: in [Low, Critical]"),
                field.is_one_of([Priority::Low, Priority::Critical]),
                move |t| matches!(get(t), Priority::Low | Priority::Critical),
            ),
            case(
                format!("{name}: not in [Low, Critical]"),
                field.is_one_of([Priority::Low, Priority::Critical]).not(),
                move |t| !matches!(get(t), Priority::Low | Priority::Critical),
            ),
        ]);
    }
    cases.extend([
        case("maybe == Some(Low)", f.maybe.eq(Some(Priority::Low)), |t| {
            t.maybe == Some(Priority::Low)
        }),
        case("maybe == None", f.maybe.eq(None), |t| t.maybe.is_none()),
        case(
            "maybe in [High, None]",
            f.maybe.is_one_of([Some(Priority::High), None]),
            |t| matches!(t.maybe, None | Some(Priority::High)),
        ),
        case(
            "maybe not in [High, None]",
            f.maybe.is_one_of([Some(Priority::High), None]).not(),
            |t| !matches!(t.maybe, None | Some(Priority::High)),
        ),
        case(
            "history contains Critical",
            f.history.contains(Priority::Critical),
            |t| t.history.contains(&Priority::Critical),
        ),
        case(
            "history does not contain Low",
            f.history.contains(Priority::Low).not(),
            |t| !t.history.contains(&Priority::Low),
        ),
        case(
            "owner.level == Critical",
            f.owner.level.eq(Priority::Critical),
            |t| t.owner.level == Priority::Critical,
        ),
        case(
            "owner.level >= High and priority < High",
            f.owner
                .level
                .ge(Priority::High)
                .and(f.priority.lt(Priority::High)),
            |t| t.owner.level >= Priority::High && t.priority < Priority::High,
        ),
    ]);
    check_cases!(s, Ticket, docs, cases);

    // Sorted by the codes.
    let found = ok(s
        .query::<Ticket>()
        .order_by(|f| f.priority.desc())
        .order_by(|f| f.number.asc())
        .to_list()
        .await);
    let want = ordered(
        &docs,
        |_| true,
        |a, b| b.priority.cmp(&a.priority).then(a.number.cmp(&b.number)),
    );
    assert_eq!(keys(&found), want);
    let found = ok(s
        .query::<Ticket>()
        .order_by(|f| f.owner.level.asc())
        .order_by(|f| f.priority_col.desc())
        .to_list()
        .await);
    let want = ordered(
        &docs,
        |_| true,
        |a, b| {
            a.owner
                .level
                .cmp(&b.owner.level)
                .then(b.priority_col.cmp(&a.priority_col))
        },
    );
    assert_eq!(keys(&found), want);

    // Aggregates by the codes.
    assert_eq!(
        ok(s.query::<Ticket>().max(|f| f.priority).await),
        docs.iter().map(|t| t.priority).max()
    );
    assert_eq!(
        ok(s.query::<Ticket>()
            .filter(|f| f.number.gt(2))
            .min(|f| f.priority_col)
            .await),
        docs.iter()
            .filter(|t| t.number > 2)
            .map(|t| t.priority_col)
            .min()
    );
    let distinct: HashSet<Priority> = docs.iter().map(|t| t.priority).collect();
    assert_eq!(
        ok(s.query::<Ticket>().count_distinct(|f| f.priority).await),
        distinct.len() as i64
    );
    // distinct_operator counts `null` as one more value; `count_distinct` counts values.
    let distinct_some: HashSet<Priority> = docs.iter().filter_map(|t| t.maybe).collect();
    assert_eq!(
        ok(s.query::<Ticket>().count_distinct(|f| f.maybe).await),
        distinct_some.len() as i64
    );
    // aggregate_functions: the sum of the numbers where the nullable enum is set.
    let want: i64 = docs
        .iter()
        .filter(|t| t.maybe.is_some())
        .map(|t| i64::from(t.number))
        .sum();
    assert_eq!(
        ok(s.query::<Ticket>()
            .filter(|f| f.maybe.is_some())
            .sum(|f| f.number)
            .await),
        Some(want)
    );
}

// ---------------------------------------------------------------------------------------
// Booleans
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct InnerFlag {
    flag: bool,
    label: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(gin)]
struct Switch {
    id: i64,
    number: i32,
    flag: bool,
    #[document(index)]
    flag_col: bool,
    #[query(nested)]
    inner: InnerFlag,
    /// Left out of the JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maybe: Option<bool>,
}

keyed!(Switch);

/// `Acceptance/where_clauses.cs`: `x.Flag`, `x.Flag == true`, `!x.Flag`, `x.Flag == false`,
/// `x.Flag.Equals(true)`, `!x.Flag.Equals(true)`, `x.Flag.Equals(false)`,
/// `!x.Flag.Equals(false)`, `x.Inner.Flag`, `!x.Inner.Flag`, `x.Inner.Flag == true` /
/// `false`; `Bugs/Bug_337_certain_boolean_searches_are_not_using_searchable_field.cs`
/// (`Flag == false` and `!Flag` on a duplicated field, with a GIN index);
/// `Bugs/Bug_2850_missed_field_reducing.cs` (`include || !x.Flag` with a local `include`);
/// `Acceptance/chained_where_clauses.cs`. Booleans on `jsonb`, a duplicated column and a
/// nested object: equalities, negations, order (`false < true`), lists, sorting and
/// `min` / `max`, also over sets where every value is the same or none is.
#[tokio::test]
async fn booleans_filter_sort_and_aggregate_on_jsonb_columns_and_nested_fields() {
    let (_schema, b) = builder("ml_bools");
    let store = ok(b.document::<Switch>().build().await);
    let docs: Vec<Switch> = (1..=20i64)
        .map(|i| Switch {
            id: i,
            number: (i * 7 % 9) as i32,
            flag: i % 3 == 0,
            flag_col: i % 4 != 0,
            inner: InnerFlag {
                flag: i % 2 == 0,
                label: format!("l{}", i % 3),
            },
            maybe: [None, Some(true), Some(false)][(i % 3) as usize],
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let f = Switch::fields();
    type Get = fn(&Switch) -> bool;
    let mut cases: Vec<Case<Switch>> = Vec::new();
    for (name, field, get) in [
        ("jsonb", f.flag.clone(), (|w: &Switch| w.flag) as Get),
        ("column", f.flag_col.clone(), |w: &Switch| w.flag_col),
        ("nested", f.inner.flag.clone(), |w: &Switch| w.inner.flag),
    ] {
        cases.extend([
            case(format!("{name}: == true"), field.eq(true), get),
            case(format!("{name}: == false"), field.eq(false), move |w| {
                !get(w)
            }),
            case(format!("{name}: != true"), field.ne(true), move |w| !get(w)),
            case(format!("{name}: != false"), field.ne(false), move |w| {
                get(w)
            }),
            case(
                format!("{name}: !(== true)"),
                field.eq(true).not(),
                move |w| !get(w),
            ),
            case(format!("{name}: !(== false)"), field.eq(false).not(), get),
            case(format!("{name}: > false"), field.gt(false), get),
            case(format!("{name}: < true"), field.lt(true), move |w| !get(w)),
            case(format!("{name}: >= false"), field.ge(false), |_| true),
            case(format!("{name}: <= false"), field.le(false), move |w| {
                !get(w)
            }),
            case(format!("{name}: in [true]"), field.is_one_of([true]), get),
            case(
                format!("{name}: in [false, true]"),
                field.is_one_of([false, true]),
                |_| true,
            ),
            case(
                format!("{name}: in []"),
                field.is_one_of(Vec::<bool>::new()),
                |_| false,
            ),
            case(
                format!("{name}: not in []"),
                field.is_one_of(Vec::<bool>::new()).not(),
                |_| true,
            ),
        ]);
    }
    // An optional flag missing from the JSON when `None` (the GIN containment test is for
    // the equalities with a value): missing is `None`, as in Rust (more in
    // `an_option_missing_from_the_json_is_none_for_eq_ne_and_is_one_of`).
    cases.extend([
        case("maybe == Some(true)", f.maybe.eq(Some(true)), |w| {
            w.maybe == Some(true)
        }),
        case("maybe == Some(false)", f.maybe.eq(Some(false)), |w| {
            w.maybe == Some(false)
        }),
        case("maybe != None", f.maybe.ne(None), |w| w.maybe.is_some()),
        case("maybe is none", f.maybe.is_none(), |w| w.maybe.is_none()),
        case(
            "maybe in [Some(false), Some(true)]",
            f.maybe.is_one_of([Some(false), Some(true)]),
            |w| w.maybe.is_some(),
        ),
        case("maybe == None", f.maybe.eq(None), |w| w.maybe.is_none()),
        case("maybe != Some(true)", f.maybe.ne(Some(true)), |w| {
            w.maybe != Some(true)
        }),
        case(
            "maybe in [Some(true), None]",
            f.maybe.is_one_of([Some(true), None]),
            |w| w.maybe != Some(false),
        ),
        case(
            "!(maybe in [Some(true), None])",
            f.maybe.is_one_of([Some(true), None]).not(),
            |w| w.maybe == Some(false),
        ),
    ]);
    // Bug_2850: `include || !x.Flag`, the local `include` a constant filter.
    for include in [true, false] {
        let constant: Filter<Switch> = if include {
            Filter::all()
        } else {
            Filter::all().not()
        };
        cases.push(case(
            format!("{include} || !flag"),
            constant.or(f.flag.eq(true).not()),
            move |w| include || !w.flag,
        ));
    }
    check_cases!(s, Switch, docs, cases);
    // Chained filters AND together.
    let chained = ok(s
        .query::<Switch>()
        .filter(|f| f.flag_col.eq(true))
        .filter(|f| f.inner.flag.eq(false))
        .filter(|f| f.number.gt(3))
        .to_list()
        .await);
    assert_eq!(
        sorted_keys(&chained),
        expected(&docs, |w| w.flag_col && !w.inner.flag && w.number > 3)
    );

    // Sorting: false before true.
    let found = ok(s
        .query::<Switch>()
        .order_by(|f| f.flag.desc())
        .order_by(|f| f.number.asc())
        .to_list()
        .await);
    assert_eq!(
        keys(&found),
        ordered(
            &docs,
            |_| true,
            |a, b| b.flag.cmp(&a.flag).then(a.number.cmp(&b.number))
        )
    );
    let found = ok(s
        .query::<Switch>()
        .order_by(|f| f.flag_col.asc())
        .order_by(|f| f.inner.flag.desc())
        .order_by(|f| f.number.desc())
        .to_list()
        .await);
    assert_eq!(
        keys(&found),
        ordered(
            &docs,
            |_| true,
            |a, b| a
                .flag_col
                .cmp(&b.flag_col)
                .then(b.inner.flag.cmp(&a.inner.flag))
                .then(b.number.cmp(&a.number))
        )
    );

    // min / max of booleans: over mixed, all-true, all-false and empty sets.
    assert_eq!(ok(s.query::<Switch>().min(|f| f.flag).await), Some(false));
    assert_eq!(
        ok(s.query::<Switch>().max(|f| f.flag_col).await),
        Some(true)
    );
    assert_eq!(
        ok(s.query::<Switch>()
            .filter(|f| f.flag.eq(true))
            .min(|f| f.flag)
            .await),
        Some(true)
    );
    assert_eq!(
        ok(s.query::<Switch>()
            .filter(|f| f.flag_col.eq(false))
            .max(|f| f.flag_col)
            .await),
        Some(false)
    );
    assert_eq!(
        ok(s.query::<Switch>()
            .filter(|f| f.number.gt(100))
            .max(|f| f.inner.flag)
            .await),
        None
    );
    assert_eq!(
        ok(s.query::<Switch>().count_distinct(|f| f.flag_col).await),
        2
    );
    assert_eq!(
        ok(s.query::<Switch>()
            .filter(|f| f.flag.eq(true))
            .count_distinct(|f| f.flag)
            .await),
        1
    );
}

// ---------------------------------------------------------------------------------------
// Uuids
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Person {
    id: Uuid,
    name: String,
    other: Uuid,
    #[document(index)]
    other_col: Uuid,
    #[document(index)]
    child: Option<Uuid>,
    group: Option<Uuid>,
}

/// A uuid from a number, its bytes spread so that neither the first nor the last ones
/// alone decide its order.
fn spread_uuid(n: u64) -> Uuid {
    let x = u128::from(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5_5A5A);
    Uuid::from_u128((x << 64) | x.rotate_left(17) | u128::from(n))
}

fn people() -> Vec<Person> {
    (0..24u64)
        .map(|i| {
            let id = spread_uuid(1000 + i);
            let other = if i % 11 == 3 { id } else { spread_uuid(i % 9) };
            Person {
                id,
                name: format!("p{i}"),
                other,
                other_col: other,
                child: (i % 4 != 0).then(|| spread_uuid(500 + i)),
                group: (i % 3 != 0).then(|| spread_uuid(300 + i % 2)),
            }
        })
        .collect()
}

/// The ids (uuids) of `docs` that `keep` accepts, sorted.
fn person_ids(docs: &[Person], keep: impl Fn(&Person) -> bool) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = docs.iter().filter(|p| keep(p)).map(|p| p.id).collect();
    v.sort_unstable();
    v
}

/// `Operators/guid_compare_operator.cs` (on a duplicated `uuid` column and the `uuid`
/// primary key); `Operators/is_one_of_operator.cs`: `can_query_against_guids` and the
/// negated forms; `Bugs/Bug_3151_using_duplicated_fields_in_linq_queries.cs`:
/// `filtering_by_null_ids_works`, `filtering_by_non_null_ids_using_value_fails_regression_from_641`;
/// `Operators/count_operator.cs`: `count_matching_properties_within_type` and
/// `_notequals` (`x.Id == x.OtherGuid`, through `where_sql`). Uuids compare, sort and
/// match lists alike on `jsonb`, a `uuid` column, an optional `uuid` column and the id.
#[tokio::test]
async fn uuids_compare_sort_and_match_lists_on_jsonb_columns_and_the_id() {
    let (_schema, b) = builder("ml_uuids");
    let store = ok(b.document::<Person>().build().await);
    let docs = people();
    seed!(store, docs);
    let mut s = store.query_session();
    let pivot = docs[5].other;
    let pivot_id = docs[9].id;
    let f = Person::fields();
    let mut wrong = Vec::new();
    let mut check = |label: &str, found: Vec<Person>, want: Vec<Uuid>| {
        let mut got: Vec<Uuid> = found.iter().map(|p| p.id).collect();
        got.sort_unstable();
        if got != want {
            wrong.push(format!("{label}: found {got:?}, expected {want:?}"));
        }
    };
    type Get = fn(&Person) -> Uuid;
    let fields = [
        ("jsonb", f.other.clone(), (|p: &Person| p.other) as Get),
        ("column", f.other_col.clone(), |p: &Person| p.other_col),
    ];
    for (name, field, get) in fields {
        let filters: Vec<(&str, Filter<Person>, Pred<Person>)> = vec![
            ("==", field.eq(pivot), Box::new(move |p| get(p) == pivot)),
            ("!=", field.ne(pivot), Box::new(move |p| get(p) != pivot)),
            (">", field.gt(pivot), Box::new(move |p| get(p) > pivot)),
            (">=", field.ge(pivot), Box::new(move |p| get(p) >= pivot)),
            ("<", field.lt(pivot), Box::new(move |p| get(p) < pivot)),
            ("<=", field.le(pivot), Box::new(move |p| get(p) <= pivot)),
            (
                "in two",
                field.is_one_of([pivot, docs[0].other]),
                Box::new({
                    let first = docs[0].other;
                    move |p| get(p) == pivot || get(p) == first
                }),
            ),
            (
                "not in two",
                field.is_one_of([pivot, docs[0].other]).not(),
                Box::new({
                    let first = docs[0].other;
                    move |p| get(p) != pivot && get(p) != first
                }),
            ),
            (
                "in []",
                field.is_one_of(Vec::<Uuid>::new()),
                Box::new(|_| false),
            ),
        ];
        for (label, filter, keep) in filters {
            let found = ok(s.query::<Person>().where_filter(filter).to_list().await);
            check(&format!("{name} {label}"), found, person_ids(&docs, keep));
        }
    }
    // The id column.
    let found = ok(s
        .query::<Person>()
        .filter(|f| f.id.gt(pivot_id))
        .to_list()
        .await);
    check("id >", found, person_ids(&docs, |p| p.id > pivot_id));
    let some = [docs[1].id, docs[2].id, Uuid::nil()];
    let found = ok(s
        .query::<Person>()
        .filter(|f| f.id.is_one_of(some).not())
        .to_list()
        .await);
    check(
        "id not in",
        found,
        person_ids(&docs, |p| !some.contains(&p.id)),
    );
    // Bug_3151: an optional duplicated uuid in a list of `Some` values, and with `None`.
    let child = docs[1].child;
    let found = ok(s
        .query::<Person>()
        .filter(|f| f.child.is_one_of([child]))
        .to_list()
        .await);
    check("child in [Some]", found, vec![docs[1].id]);
    let found = ok(s
        .query::<Person>()
        .filter(|f| f.child.is_one_of([child, None]))
        .to_list()
        .await);
    check(
        "child in [Some, None]",
        found,
        person_ids(&docs, |p| p.child.is_none() || p.child == child),
    );
    let found = ok(s
        .query::<Person>()
        .filter(|f| f.child.is_one_of([child, None]).not())
        .to_list()
        .await);
    check(
        "child not in [Some, None]",
        found,
        person_ids(&docs, |p| p.child.is_some() && p.child != child),
    );
    let group = docs[1].group;
    let found = ok(s
        .query::<Person>()
        .filter(|f| f.group.is_one_of([group, None]))
        .to_list()
        .await);
    check(
        "group in [Some, None]",
        found,
        person_ids(&docs, |p| p.group.is_none() || p.group == group),
    );
    let found = ok(s
        .query::<Person>()
        .filter(|f| f.group.ne(group))
        .to_list()
        .await);
    check(
        "group != Some",
        found,
        person_ids(&docs, |p| p.group != group),
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Sorting by uuids: the value, the column and the id agree with Rust's order.
    let by = |key: fn(&Person) -> Uuid, desc: bool| {
        let mut v: Vec<&Person> = docs.iter().collect();
        v.sort_by(|a, b| {
            let c = key(a).cmp(&key(b));
            (if desc { c.reverse() } else { c }).then(a.id.cmp(&b.id))
        });
        v.iter().map(|p| p.id).collect::<Vec<Uuid>>()
    };
    let ids = |found: Vec<Person>| found.iter().map(|p| p.id).collect::<Vec<Uuid>>();
    let found = ok(s
        .query::<Person>()
        .order_by(|f| f.other.asc())
        .to_list()
        .await);
    assert_eq!(ids(found), by(|p| p.other, false));
    let found = ok(s
        .query::<Person>()
        .order_by(|f| f.other_col.desc())
        .to_list()
        .await);
    assert_eq!(ids(found), by(|p| p.other_col, true));
    let found = ok(s
        .query::<Person>()
        .order_by(|f| f.id.desc())
        .to_list()
        .await);
    assert_eq!(ids(found), by(|p| p.id, true));
    // min / max on the jsonb value (compared as text, which is the uuids' order).
    assert_eq!(
        ok(s.query::<Person>().min(|f| f.other).await),
        docs.iter().map(|p| p.other).min()
    );
    assert_eq!(
        ok(s.query::<Person>().max(|f| f.other).await),
        docs.iter().map(|p| p.other).max()
    );

    // count_operator: a document whose `other` is its own id, through where_sql.
    let same = docs.iter().filter(|p| p.other == p.id).count() as i64;
    assert_eq!(same, 2);
    let counted = ok(s
        .query::<Person>()
        .where_sql("d.id = (d.data ->> 'other')::uuid", ())
        .count()
        .await);
    assert_eq!(counted, same);
    let counted = ok(s
        .query::<Person>()
        .where_sql("d.id <> (d.data ->> 'other')::uuid", ())
        .count()
        .await);
    assert_eq!(counted, docs.len() as i64 - same);
}

/// `Operators/aggregate_functions.cs` (`MaxAsync` / `MinAsync`) on uuids, with
/// `Operators/guid_compare_operator.cs`'s order: `min` and `max` exist for `Uuid` fields
/// (an `Orderable` type), and on the `jsonb` value they answer (the test above); on a
/// duplicated `uuid` column and on the `uuid` primary key (PostgreSQL has no `min` /
/// `max` of `uuid`) they answer the same, in `Uuid`'s order, and `None` over no match.
#[tokio::test]
async fn min_and_max_of_uuid_columns_and_the_uuid_id() {
    let (_schema, b) = builder("ml_uuid_min_max");
    let store = ok(b.document::<Person>().build().await);
    let docs = people();
    seed!(store, docs);
    let mut s = store.query_session();
    let mut wrong = Vec::new();
    let want_max = docs.iter().map(|p| p.other_col).max();
    match s.query::<Person>().max(|f| f.other_col).await {
        Ok(v) if v == want_max => {}
        other => wrong.push(format!(
            "max(other_col): expected Ok({want_max:?}), got {other:?}"
        )),
    }
    let want_min = docs.iter().map(|p| p.id).min();
    match s.query::<Person>().min(|f| f.id).await {
        Ok(v) if v == want_min => {}
        other => wrong.push(format!("min(id): expected Ok({want_min:?}), got {other:?}")),
    }
    let want_max_id = docs.iter().map(|p| p.id).max();
    match s.query::<Person>().aggregate(|f| f.id.max()).await {
        Ok(v) if v == want_max_id => {}
        other => wrong.push(format!(
            "aggregate(id.max()): expected Ok({want_max_id:?}), got {other:?}"
        )),
    }
    let none = s.query::<Person>().filter(|f| f.name.eq("nobody"));
    match none.max(|f| f.other_col).await {
        Ok(None) => {}
        other => wrong.push(format!("max(other_col) of no match: got {other:?}")),
    }
    let min_col = docs.iter().map(|p| p.other_col).min();
    match s.query::<Person>().aggregate(|f| f.other_col.min()).await {
        Ok(v) if v == min_col => {}
        other => wrong.push(format!(
            "aggregate(other_col.min()): expected Ok({min_col:?}), got {other:?}"
        )),
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------
// is_one_of: lists from anywhere, empty lists, negations
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct SomeChild {
    id: String,
    rank: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Something {
    id: String,
    message: String,
    number: i32,
    #[document(index)]
    code: String,
    #[query(nested)]
    child: SomeChild,
}

/// A list that is the same for the whole program (Bug_2936's static list).
static CONSTANT_LIST: [&str; 2] = ["stuff", "m3"];

/// `Operators/is_one_of_operator.cs`: `can_query_against_integers`, `..._strings` and the
/// negated forms (`!x.Number.IsOneOf(..)`), with arrays and lists;
/// `Bugs/Bug_2383_contains_in_where_clause.cs`: `can_query_through`,
/// `can_query_through_deeper` (text ids, and a nested field named `id`);
/// `Bugs/Bug_2896_count_plus_HashSet.cs` (a `HashSet` as the list, counted);
/// `Bugs/Bug_2936_static_list.cs` (a static list). `is_one_of` on the id, `jsonb` text and
/// numbers, a duplicated column and nested fields: an empty list matches nothing and its
/// negation everything, duplicates and values nobody holds change nothing.
#[tokio::test]
async fn is_one_of_with_empty_duplicate_and_negated_lists() {
    let (_schema, b) = builder("ml_one_of");
    let store = ok(b.document::<Something>().build().await);
    let docs: Vec<Something> = (1..=15i64)
        .map(|i| Something {
            id: i.to_string(),
            message: format!("m{}", i % 4),
            number: (i * 3 % 7) as i32,
            code: format!("c{}", i % 5),
            child: SomeChild {
                id: (i + 1).to_string(),
                rank: i % 6,
            },
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let found = ok(s
        .query::<Something>()
        .filter(|f| f.id.is_one_of(["4"]))
        .to_list()
        .await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].message, "m0");
    let found = ok(s
        .query::<Something>()
        .filter(|f| f.child.id.is_one_of(["3"]))
        .to_list()
        .await);
    assert_eq!(
        found.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["2"]
    );

    let f = Something::fields();
    let set: HashSet<String> = ["3", "7", "11", "99"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let numbers = vec![1, 5, 5, 42];
    let none = Vec::<String>::new();
    let s_ids = |keep: &dyn Fn(&Something) -> bool| {
        let mut v: Vec<String> = docs
            .iter()
            .filter(|d| keep(d))
            .map(|d| d.id.clone())
            .collect();
        v.sort();
        v
    };
    let cases: Vec<(&str, Filter<Something>, Vec<String>)> = vec![
        (
            "id in a HashSet",
            f.id.is_one_of(set.iter().cloned()),
            s_ids(&|d| set.contains(&d.id)),
        ),
        (
            "id not in a HashSet",
            f.id.is_one_of(set.iter().cloned()).not(),
            s_ids(&|d| !set.contains(&d.id)),
        ),
        (
            "number in a list with a duplicate and a stranger",
            f.number.is_one_of(numbers.clone()),
            s_ids(&|d| numbers.contains(&d.number)),
        ),
        (
            "number not in the list",
            f.number.is_one_of(numbers.clone()).not(),
            s_ids(&|d| !numbers.contains(&d.number)),
        ),
        (
            "message in the static list",
            f.message.is_one_of(CONSTANT_LIST),
            s_ids(&|d| CONSTANT_LIST.contains(&d.message.as_str())),
        ),
        (
            "code (column) in a list",
            f.code.is_one_of(["c1", "c1", "c4"]),
            s_ids(&|d| d.code == "c1" || d.code == "c4"),
        ),
        (
            "code (column) not in a list",
            f.code.is_one_of(["c1", "c4"]).not(),
            s_ids(&|d| d.code != "c1" && d.code != "c4"),
        ),
        (
            "child.rank in a list or message in another",
            f.child
                .rank
                .is_one_of([0i64, 5])
                .or(f.message.is_one_of(["m1"])),
            s_ids(&|d| [0, 5].contains(&d.child.rank) || d.message == "m1"),
        ),
        (
            "number in a list and code not in another",
            f.number
                .is_one_of([3, 6])
                .and(f.code.is_one_of(["c0"]).not()),
            s_ids(&|d| [3, 6].contains(&d.number) && d.code != "c0"),
        ),
        ("id in []", f.id.is_one_of(none.clone()), vec![]),
        ("message in []", f.message.is_one_of(none.clone()), vec![]),
        ("code in []", f.code.is_one_of(none.clone()), vec![]),
        (
            "number in []",
            f.number.is_one_of(Vec::<i32>::new()),
            vec![],
        ),
        ("child.id in []", f.child.id.is_one_of(none.clone()), vec![]),
        (
            "id not in []",
            f.id.is_one_of(none.clone()).not(),
            s_ids(&|_| true),
        ),
        (
            "number not in []",
            f.number.is_one_of(Vec::<i32>::new()).not(),
            s_ids(&|_| true),
        ),
        (
            "code not in []",
            f.code.is_one_of(none.clone()).not(),
            s_ids(&|_| true),
        ),
        (
            "in [] or number == 3",
            f.id.is_one_of(none.clone()).or(f.number.eq(3)),
            s_ids(&|d| d.number == 3),
        ),
    ];
    let mut wrong = Vec::new();
    for (label, filter, want) in cases {
        let found = ok(s
            .query::<Something>()
            .where_filter(filter.clone())
            .to_list()
            .await);
        let mut got: Vec<String> = found.into_iter().map(|d| d.id).collect();
        got.sort();
        let counted = ok(s.query::<Something>().where_filter(filter).count().await);
        if got != want || counted != want.len() as i64 {
            wrong.push(format!(
                "{label}: found {got:?} (count {counted}), expected {want:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct BaseClass {
    /// A plain field that happens to be named `id`.
    id: String,
    #[document(id)]
    system_id: String,
    rank: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct BaseRef {
    id: i64,
    base: String,
}

/// `Acceptance/custom_identity_members.cs`: `get_by_id_member_property`,
/// `get_by_id_property` (the identity is `SystemId`, and `Id` is an ordinary member). A
/// field named `id` that is not the document's id is queried in the JSON; the marked id
/// is the table's key: filters, lists, loads, sorts, selections, aggregates and includes
/// tell the two apart.
#[tokio::test]
async fn a_custom_identity_member_and_a_plain_field_named_id_are_told_apart() {
    let (_schema, b) = builder("ml_custom_id");
    let store = ok(b
        .document::<BaseClass>()
        .document::<BaseRef>()
        .build()
        .await);
    let docs = [("qwe", "123", 3), ("asd", "456", 1), ("zxc", "789", 2)].map(|(id, sys, rank)| {
        BaseClass {
            id: id.to_owned(),
            system_id: sys.to_owned(),
            rank,
        }
    });
    seed!(store, docs);
    let refs = [(1, "456"), (2, "789"), (3, "qwe"), (4, "456")].map(|(id, base)| BaseRef {
        id,
        base: base.to_owned(),
    });
    seed!(store, refs);
    let mut s = store.query_session();
    let system_ids = ["123", "456"];
    let ids = ["qwe", "zxc"];
    let count = |n: marten::Result<i64>| ok(n);
    assert_eq!(
        count(
            s.query::<BaseClass>()
                .filter(|f| f.id.is_one_of(system_ids))
                .count()
                .await
        ),
        0
    );
    assert_eq!(
        count(
            s.query::<BaseClass>()
                .filter(|f| f.system_id.is_one_of(system_ids))
                .count()
                .await
        ),
        2
    );
    assert_eq!(
        count(
            s.query::<BaseClass>()
                .filter(|f| f.id.is_one_of(ids))
                .count()
                .await
        ),
        2
    );
    assert_eq!(
        count(
            s.query::<BaseClass>()
                .filter(|f| f.system_id.is_one_of(ids))
                .count()
                .await
        ),
        0
    );
    let loaded: Vec<BaseClass> = ok(s.load_many(&["123".to_owned(), "456".to_owned()]).await);
    assert_eq!(loaded.len(), 2);
    let by_plain = ok(s
        .query::<BaseClass>()
        .filter(|f| f.id.eq("asd"))
        .single()
        .await);
    assert_eq!(by_plain.map(|b| b.system_id), Some("456".to_owned()));
    assert!(!ok(s
        .query::<BaseClass>()
        .filter(|f| f.system_id.eq("asd"))
        .exists()
        .await));
    let plain_desc: Vec<(String, String)> = ok(s
        .query::<BaseClass>()
        .order_by(|f| f.id.desc())
        .select(|f| (f.id, f.system_id))
        .to_list()
        .await);
    assert_eq!(
        plain_desc,
        [("zxc", "789"), ("qwe", "123"), ("asd", "456")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let by_rank: Vec<String> = ok(s
        .query::<BaseClass>()
        .order_by(|f| f.rank.asc())
        .select(|f| f.system_id)
        .to_list()
        .await);
    assert_eq!(by_rank, ["456", "789", "123"]);
    assert_eq!(
        ok(s.query::<BaseClass>().max(|f| f.system_id).await).as_deref(),
        Some("789")
    );
    assert_eq!(
        ok(s.query::<BaseClass>().min(|f| f.id).await).as_deref(),
        Some("asd")
    );
    // An include by the marked id: "qwe" is a plain `id`, no document's key.
    let found = ok(s
        .query::<BaseRef>()
        .order_by(|f| f.id.asc())
        .include::<BaseClass>(|f| f.base)
        .to_list()
        .await);
    assert_eq!(found.documents.len(), 4);
    let keys: BTreeSet<&str> = found.included.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["456", "789"]));
    assert_eq!(
        found.included.get("456").map(|b| b.id.as_str()),
        Some("asd")
    );
}

// ---------------------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Level {
    number: i32,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Ordered {
    id: i64,
    flag: bool,
    #[query(nested)]
    level: Level,
    /// Left out of the JSON when empty: a NULL duplicated column.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[document(index)]
    label: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    plain_label: String,
    big: i64,
    #[document(index)]
    big_col: i64,
    score: f64,
}

keyed!(Ordered);

/// `Acceptance/order_by_clauses.cs` (`OrderBy(x => x.Inner.Number)`, several keys in
/// each direction, numbers sorted as numbers); `Bugs/query_with_order_by.cs`
/// (`OrderBy(x => x.String)` with `StringComparer.Ordinal`: byte order);
/// `Acceptance/statistics_and_paged_list.cs`: `check_query_with_where_clause_followed_by_to_pagedlist`,
/// `check_total_items_count`, `check_first_item_on_page`, `check_last_item_on_page`.
/// Sorting by a boolean, a nested number and a nested string in mixed directions; by
/// numbers of different magnitudes (not in text order); by a duplicated text column
/// whose value is missing from some documents (first ascending, last descending, like
/// the same field without a column); by the id; and the pages of a filtered, sorted
/// query joined back into the whole list, each with the filtered total.
#[tokio::test]
async fn ordering_by_several_keys_of_every_kind_and_pages_of_filtered_queries() {
    let (_schema, b) = builder("ml_order");
    let store = ok(b.document::<Ordered>().build().await);
    let names = ["b", "A", "a", "", "ab", "Z", "é"];
    let bigs = [2, 10, 100, -3, 1_000_000_000_000, 9, -20, 0];
    let scores = [1.5, 10.25, -0.5, 2.0, 100.0, 9.75];
    let docs: Vec<Ordered> = (1..=40i64)
        .map(|i| {
            let label = names[(i * 3 % 7) as usize].to_owned();
            let big = bigs[(i * 5 % 8) as usize];
            Ordered {
                id: i,
                flag: i % 3 == 1,
                level: Level {
                    number: (i % 4) as i32,
                    name: names[(i % 7) as usize].to_owned(),
                },
                label: label.clone(),
                plain_label: label,
                big,
                big_col: big,
                score: scores[(i % 6) as usize],
            }
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let all = |_: &Ordered| true;

    // flag desc, level.number asc, level.name desc.
    let want = ordered(&docs, all, |a, b| {
        b.flag
            .cmp(&a.flag)
            .then(a.level.number.cmp(&b.level.number))
            .then(b.level.name.cmp(&a.level.name))
    });
    let found = ok(s
        .query::<Ordered>()
        .order_by(|f| f.flag.desc())
        .order_by(|f| f.level.number.asc())
        .order_by(|f| f.level.name.desc())
        .to_list()
        .await);
    assert_eq!(keys(&found), want);

    // A text field missing from some documents: the column and the jsonb value agree.
    for desc in [false, true] {
        let want = ordered(&docs, all, |a, b| {
            let c = a.label.cmp(&b.label);
            if desc {
                c.reverse()
            } else {
                c
            }
        });
        let on_column = ok(s
            .query::<Ordered>()
            .order_by(|f| if desc { f.label.desc() } else { f.label.asc() })
            .to_list()
            .await);
        let on_jsonb = ok(s
            .query::<Ordered>()
            .order_by(|f| {
                if desc {
                    f.plain_label.desc()
                } else {
                    f.plain_label.asc()
                }
            })
            .to_list()
            .await);
        assert_eq!(keys(&on_column), want, "column, desc {desc}");
        assert_eq!(keys(&on_jsonb), want, "jsonb, desc {desc}");
    }
    // As a second key, after a column.
    let found = ok(s
        .query::<Ordered>()
        .order_by(|f| f.big_col.asc())
        .order_by(|f| f.label.desc())
        .to_list()
        .await);
    assert_eq!(
        keys(&found),
        ordered(&docs, all, |a, b| a
            .big_col
            .cmp(&b.big_col)
            .then(b.label.cmp(&a.label)))
    );

    // Numbers sort as numbers, not as text (2 < 10 < 100), on the value and the column.
    let found = ok(s
        .query::<Ordered>()
        .order_by(|f| f.big.asc())
        .to_list()
        .await);
    assert_eq!(keys(&found), ordered(&docs, all, |a, b| a.big.cmp(&b.big)));
    let found = ok(s
        .query::<Ordered>()
        .order_by(|f| f.big_col.desc())
        .to_list()
        .await);
    assert_eq!(
        keys(&found),
        ordered(&docs, all, |a, b| b.big_col.cmp(&a.big_col))
    );
    let found = ok(s
        .query::<Ordered>()
        .order_by(|f| f.score.asc())
        .order_by(|f| f.id.desc())
        .to_list()
        .await);
    assert_eq!(
        keys(&found),
        ordered(&docs, all, |a, b| a
            .score
            .total_cmp(&b.score)
            .then(b.id.cmp(&a.id)))
    );
    let found = ok(s
        .query::<Ordered>()
        .order_by(|f| f.id.desc())
        .take(5)
        .to_list()
        .await);
    assert_eq!(keys(&found), [40, 39, 38, 37, 36]);

    // The pages of a filtered, sorted query and their totals.
    let keep = |d: &Ordered| d.flag || d.big > 5;
    let want = ordered(&docs, keep, |a, b| {
        a.level
            .name
            .cmp(&b.level.name)
            .then(b.score.total_cmp(&a.score))
    });
    let mut joined = Vec::new();
    for page in 0..=(want.len() / 4 + 1) {
        let p = ok(s
            .query::<Ordered>()
            .filter(|f| f.flag.eq(true).or(f.big.gt(5)))
            .order_by(|f| f.level.name.asc())
            .order_by(|f| f.score.desc())
            .to_page(page, 4)
            .await);
        assert_eq!(p.total, want.len() as i64, "page {page}");
        let from = (page * 4).min(want.len());
        let to = (from + 4).min(want.len());
        assert_eq!(keys(&p.items), want[from..to], "page {page}");
        joined.extend(keys(&p.items));
    }
    assert_eq!(joined, want);
    // Pages sorted by the column with missing values (last, descending), then a number.
    let want = ordered(&docs, all, |a, b| {
        b.label.cmp(&a.label).then(a.big_col.cmp(&b.big_col))
    });
    let mut joined = Vec::new();
    for page in 0..=(want.len() / 7) {
        let p = ok(s
            .query::<Ordered>()
            .order_by(|f| f.label.desc())
            .order_by(|f| f.big_col.asc())
            .to_page(page, 7)
            .await);
        assert_eq!(p.total, want.len() as i64);
        joined.extend(keys(&p.items));
    }
    assert_eq!(joined, want);
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Numbered {
    id: i64,
    number: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct NeverStored {
    id: i64,
    number: i32,
}

keyed!(Numbered, NeverStored);

/// `Bugs/Bug_261_double_take_or_skip.cs`: `does_not_blow_up_with_double_take`
/// (`Take(4).Take(8)` is 8), `one_more_try` (`Take(10).Take(4)` is 4),
/// `does_not_blow_up_with_double_skip` (`Take(4).Skip(4).Skip(8)` is 4): the last take and
/// the last skip win. `Operators/count_operator.cs`: `count_ignores_order_by`,
/// `count_with_a_where_clause`, `count_without_any_where`; `Operators/any_operator.cs`:
/// `naked_any_miss`, `naked_any_hit`, `any_miss_with_query`, `any_should_ignore_order`,
/// `any_hit_with_more_than_one_match`; `Operators/to_list_operator.cs`:
/// `should_return_empty_list`; `Operators/async_enumerable.cs`: `query_to_async_enumerable`
/// (streamed with a filter and an order).
#[tokio::test]
async fn the_last_take_and_skip_win_and_counts_and_exists_ignore_order() {
    let (_schema, b) = builder("ml_take_skip");
    let store = ok(b
        .document::<Numbered>()
        .document::<NeverStored>()
        .build()
        .await);
    let docs: Vec<Numbered> = (1..=100i64)
        .map(|i| Numbered {
            id: i,
            number: (i * 13 % 10) as i32,
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let found = ok(s.query::<Numbered>().take(4).take(8).to_list().await);
    assert_eq!(keys(&found), (1..=8).collect::<Vec<i64>>());
    let found = ok(s.query::<Numbered>().take(10).take(4).to_list().await);
    assert_eq!(keys(&found), [1, 2, 3, 4]);
    let found = ok(s
        .query::<Numbered>()
        .take(4)
        .skip(4)
        .skip(8)
        .to_list()
        .await);
    assert_eq!(keys(&found), [9, 10, 11, 12]);
    let found = ok(s
        .query::<Numbered>()
        .order_by(|f| f.number.desc())
        .skip(3)
        .take(2)
        .skip(5)
        .to_list()
        .await);
    let want = ordered(&docs, |_| true, |a, b| b.number.cmp(&a.number));
    assert_eq!(keys(&found), want[5..7]);

    // Counts ignore the order; exists too.
    let n = ok(s
        .query::<Numbered>()
        .order_by(|f| f.number.asc())
        .count()
        .await);
    assert_eq!(n, 100);
    let n = ok(s
        .query::<Numbered>()
        .filter(|f| f.number.gt(3))
        .order_by(|f| f.number.desc())
        .count()
        .await);
    assert_eq!(n, docs.iter().filter(|d| d.number > 3).count() as i64);
    assert!(!ok(s.query::<NeverStored>().exists().await));
    assert!(ok(s.query::<NeverStored>().to_list().await).is_empty());
    assert_eq!(ok(s.query::<NeverStored>().count().await), 0);
    assert!(ok(s.query::<Numbered>().exists().await));
    assert!(!ok(s
        .query::<Numbered>()
        .filter(|f| f.number.eq(11))
        .exists()
        .await));
    assert!(ok(s
        .query::<Numbered>()
        .filter(|f| f.number.eq(4))
        .order_by(|f| f.id.desc())
        .exists()
        .await));

    // Streamed: the same documents in the same order as the list.
    let mut streamed = Vec::new();
    {
        let mut stream = ok(s
            .query::<Numbered>()
            .filter(|f| f.number.lt(5))
            .order_by(|f| f.number.asc())
            .stream()
            .await);
        while let Some(d) = stream.next().await {
            streamed.push(ok(d).id);
        }
    }
    assert_eq!(
        streamed,
        ordered(&docs, |d| d.number < 5, |a, b| a.number.cmp(&b.number))
    );
}

// ---------------------------------------------------------------------------------------
// Includes
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Assignee {
    id: Uuid,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Issue {
    id: i64,
    /// `Uuid::nil()` for an issue nobody is assigned to.
    assignee_id: Uuid,
    title: String,
    project: String,
    tags: Vec<String>,
}

keyed!(Issue);

fn issue(id: i64, assignee_id: Uuid, title: &str, project: &str, tags: &[&str]) -> Issue {
    Issue {
        id,
        assignee_id,
        title: title.to_owned(),
        project: project.to_owned(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

/// The ids of the assignees the issues `found` refer to that exist in `users`.
fn referred(found: &[Issue], users: &[Assignee]) -> BTreeSet<Uuid> {
    found
        .iter()
        .map(|i| i.assignee_id)
        .filter(|id| users.iter().any(|u| u.id == *id))
        .collect()
}

/// `Bugs/Bug_2224_Include_needs_to_respect_Take_and_Skip_in_main_body.cs`:
/// `include_to_list_using_inner_join_and_paging`, `..._and_ordering`,
/// `Bug_2243_include_to_list_using_inner_join_and_paging`, `include_with_pagination`
/// (with skip and take); `Bugs/Bug_2433_include_with_take.cs`;
/// `Includes/end_to_end_query_with_include.cs`: `include_to_list_with_orderby_descending_async`,
/// `..._ascending_async`, `include_with_containment_where_for_a_single_document`,
/// `include_with_any_containment_where_for_a_single_document`;
/// `Bugs/child_parent_inclusion_bug.cs`; `Bugs/Bug_3096_include_where_select.cs` (the
/// include and the filter). The included documents are exactly those the query's page
/// (after its filter, order, skip and take) refers to, once each.
#[tokio::test]
async fn includes_follow_the_querys_filter_order_skip_and_take() {
    let (_schema, b) = builder("ml_include_page");
    let store = ok(b.document::<Assignee>().document::<Issue>().build().await);
    let users: Vec<Assignee> = (0..6)
        .map(|i| Assignee {
            id: spread_uuid(70 + i),
            name: format!("u{i}"),
        })
        .collect();
    let missing = spread_uuid(99);
    let (u1, u2) = (users[0].id, users[1].id);
    let mut docs = vec![
        issue(1, u1, "1.Garage Door is busted", "bug2224", &[]),
        issue(2, u2, "AAA. Garage Door is busted", "bug2224", &["urgent"]),
        issue(3, u2, "3. Garage Door is busted", "bug2224", &[]),
        issue(4, Uuid::nil(), "4. Garage Door is busted", "bug2224", &[]),
        issue(5, u1, "BBB.Garage Door is busted", "ordering", &[]),
        issue(6, u2, "AAA. Garage Door is busted", "ordering", &[]),
        issue(7, u2, "CCC. Garage Door is busted", "ordering", &[]),
        issue(
            8,
            Uuid::nil(),
            "ddd. Garage Door is busted",
            "ordering",
            &[],
        ),
        issue(9, u1, "Garage Door is ok", "bug3096", &[]),
        issue(10, u2, "Garage Door is busted", "bug3096", &["urgent"]),
        issue(11, u2, "Garage Door is busted", "bug3096", &[]),
    ];
    for i in 12..=60i64 {
        let assignee = match i % 8 {
            7 => Uuid::nil(),
            6 => missing,
            k => users[k as usize % users.len()].id,
        };
        let tags: &[&str] = if i % 3 == 0 { &["urgent", "x"] } else { &["x"] };
        docs.push(issue(
            i,
            assignee,
            &format!("t{:02}", (i * 17) % 50),
            "bulk",
            tags,
        ));
    }
    let mut w = store.lightweight_session();
    for u in &users {
        ok(w.store(u.clone()));
    }
    for d in &docs {
        ok(w.store(d.clone()));
    }
    ok(w.save_changes().await);
    let mut s = store.query_session();

    // Bug_2224: the assigned issues by title, the first one, and its one assignee.
    let found = ok(s
        .query::<Issue>()
        .filter(|f| f.project.eq("bug2224"))
        .filter(|f| f.assignee_id.ne(Uuid::nil()))
        .order_by(|f| f.title.asc())
        .take(1)
        .include::<Assignee>(|f| f.assignee_id)
        .to_list()
        .await);
    assert_eq!(
        keys(&found.documents),
        [1],
        "'1.' sorts before '3.' and 'AAA'"
    );
    assert_eq!(
        found.included.keys().copied().collect::<Vec<_>>(),
        [u1],
        "one included assignee"
    );
    let found = ok(s
        .query::<Issue>()
        .filter(|f| f.project.eq("ordering"))
        .filter(|f| f.assignee_id.ne(Uuid::nil()))
        .order_by(|f| f.title.asc())
        .take(1)
        .include::<Assignee>(|f| f.assignee_id)
        .to_list()
        .await);
    assert_eq!(found.documents.len(), 1);
    assert_eq!(found.documents[0].title, "AAA. Garage Door is busted");
    assert_eq!(found.included.keys().copied().collect::<Vec<_>>(), [u2]);
    // Bug_3096: a filter on the text, one issue, one assignee.
    let found = ok(s
        .query::<Issue>()
        .filter(|f| f.project.eq("bug3096"))
        .filter(|f| f.title.contains("ok"))
        .include::<Assignee>(|f| f.assignee_id)
        .to_list()
        .await);
    assert_eq!(keys(&found.documents), [9]);
    assert_eq!(found.included.keys().copied().collect::<Vec<_>>(), [u1]);
    // child_parent_inclusion_bug: the filter on the id is kept.
    let found = ok(s
        .query::<Issue>()
        .filter(|f| f.id.eq(10))
        .include::<Assignee>(|f| f.assignee_id)
        .to_list()
        .await);
    assert_eq!(keys(&found.documents), [10]);
    assert_eq!(found.included.len(), 1);
    assert_eq!(found.included.get(&u2), Some(&users[1]));

    // Pages of the bulk issues, in both directions, with containment filters.
    for (label, only_urgent, desc, skip, take) in [
        ("asc, skip 0, take 10", false, false, 0, 10),
        ("desc, skip 10, take 10", false, true, 10, 10),
        ("asc, skip 30, take 50", false, false, 30, 50),
        ("urgent desc, skip 2, take 5", true, true, 2, 5),
        ("urgent asc, skip 100, take 5", true, false, 100, 5),
    ] {
        let keep = |i: &Issue| {
            i.project == "bulk" && (!only_urgent || i.tags.iter().any(|t| t == "urgent"))
        };
        let want = ordered(&docs, keep, |a, b| {
            let c = a.title.cmp(&b.title);
            if desc {
                c.reverse()
            } else {
                c
            }
        });
        let from = skip.min(want.len());
        let to = (from + take).min(want.len());
        let want = &want[from..to];
        let found = ok(s
            .query::<Issue>()
            .filter(|f| {
                let q = f.project.eq("bulk");
                if only_urgent {
                    q.and(f.tags.contains("urgent"))
                } else {
                    q
                }
            })
            .order_by(|f| if desc { f.title.desc() } else { f.title.asc() })
            .skip(skip)
            .take(take)
            .include::<Assignee>(|f| f.assignee_id)
            .to_list()
            .await);
        assert_eq!(keys(&found.documents), want, "{label}");
        let got: BTreeSet<Uuid> = found.included.keys().copied().collect();
        assert_eq!(got, referred(&found.documents, &users), "{label}");
        for (id, user) in &found.included {
            assert_eq!(users.iter().find(|u| u.id == *id), Some(user), "{label}");
        }
    }
    // `any` over the tags, with the include.
    let found = ok(s
        .query::<Issue>()
        .filter(|f| f.tags.contains("urgent").and(f.project.ne("bulk")))
        .include::<Assignee>(|f| f.assignee_id)
        .to_list()
        .await);
    assert_eq!(sorted_keys(&found.documents), [2, 10]);
    assert_eq!(found.included.keys().copied().collect::<Vec<_>>(), [u2]);
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct BusinessField {
    id: String,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Member {
    id: i64,
    name: String,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Links {
    member_id: i64,
    note: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
struct Education {
    id: String,
    field_id: String,
    #[query(nested)]
    links: Links,
    year: i32,
}

/// `Bugs/Bug_3082_trouble_with_repeated_include_usage.cs`: `query_multiple_times` (text
/// ids, the same include query twice, and a miss);
/// `Bugs/Bug_3151_using_duplicated_fields_in_linq_queries.cs`: `Bug_3150_query_multiple_times`;
/// `Includes/end_to_end_query_with_include.cs`: `include_with_generic_type` (an integer
/// id) and `simple_include_for_a_single_document`; `Bugs/Bug_634_include_against_soft_deleted_docs.cs`
/// turned around: matches of a soft-deleted type, their includes in each read mode.
/// Includes by text ids, by integer ids held in a nested field, twice on one session, for
/// live, every or only the deleted matches.
#[tokio::test]
async fn includes_by_text_and_nested_integer_ids_repeated_and_per_deleted_mode() {
    let (_schema, b) = builder("ml_include_ids");
    let store = ok(b
        .document::<BusinessField>()
        .document::<Member>()
        .document::<Education>()
        .build()
        .await);
    let fields: Vec<BusinessField> = (0..4)
        .map(|i| BusinessField {
            id: format!("field-{i}"),
            name: format!("F{i}"),
        })
        .collect();
    let members: Vec<Member> = (1..=5)
        .map(|i| Member {
            id: i * 100,
            name: format!("M{i}"),
        })
        .collect();
    let educations: Vec<Education> = (0..12)
        .map(|i: i64| Education {
            id: format!("edu-{i:02}"),
            field_id: format!("field-{}", i % 5),
            links: Links {
                member_id: (i % 6 + 1) * 100,
                note: format!("n{i}"),
            },
            year: 2000 + i as i32,
        })
        .collect();
    let mut w = store.lightweight_session();
    for d in &fields {
        ok(w.store(d.clone()));
    }
    for d in &members {
        ok(w.store(d.clone()));
    }
    for d in &educations {
        ok(w.store(d.clone()));
    }
    ok(w.save_changes().await);
    let deleted: BTreeSet<&str> = ["edu-01", "edu-04", "edu-07", "edu-10"].into();
    for id in &deleted {
        ok(w.delete::<Education>(&id.to_string()));
    }
    ok(w.save_changes().await);

    let mut s = store.query_session();
    let edu_ids = |docs: &[Education]| docs.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    // Text ids, twice on the same session.
    for round in 0..2 {
        let found = ok(s
            .query::<Education>()
            .filter(|f| f.year.ge(2003))
            .order_by(|f| f.year.desc())
            .include::<BusinessField>(|f| f.field_id)
            .to_list()
            .await);
        let want: Vec<&Education> = educations
            .iter()
            .rev()
            .filter(|e| e.year >= 2003 && !deleted.contains(e.id.as_str()))
            .collect();
        assert_eq!(
            edu_ids(&found.documents),
            want.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            "round {round}"
        );
        let want_fields: BTreeSet<String> = want
            .iter()
            .map(|e| e.field_id.clone())
            .filter(|id| fields.iter().any(|f| &f.id == id))
            .collect();
        let got: BTreeSet<String> = found.included.keys().cloned().collect();
        assert_eq!(got, want_fields, "round {round}");
        for (id, field) in &found.included {
            assert_eq!(fields.iter().find(|x| &x.id == id), Some(field));
        }
    }
    // A miss includes nothing.
    let found = ok(s
        .query::<Education>()
        .filter(|f| f.id.eq("nope"))
        .include::<BusinessField>(|f| f.field_id)
        .to_list()
        .await);
    assert!(found.documents.is_empty() && found.included.is_empty());

    // Integer ids in a nested field, per read mode of the soft-deleted matches.
    for mode in ["live", "include_deleted", "only_deleted"] {
        let q = s
            .query::<Education>()
            .filter(|f| f.links.note.ne("n0"))
            .order_by(|f| f.id.asc());
        let q = match mode {
            "live" => q,
            "include_deleted" => q.include_deleted(),
            _ => q.only_deleted(),
        };
        let found = ok(q.include::<Member>(|f| f.links.member_id).to_list().await);
        let want: Vec<&Education> = educations
            .iter()
            .filter(|e| e.links.note != "n0")
            .filter(|e| match mode {
                "live" => !deleted.contains(e.id.as_str()),
                "include_deleted" => true,
                _ => deleted.contains(e.id.as_str()),
            })
            .collect();
        assert_eq!(
            edu_ids(&found.documents),
            want.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            "{mode}"
        );
        let want_members: BTreeSet<i64> = want
            .iter()
            .map(|e| e.links.member_id)
            .filter(|id| members.iter().any(|m| m.id == *id))
            .collect();
        let got: BTreeSet<i64> = found.included.keys().copied().collect();
        assert_eq!(got, want_members, "{mode}");
        for (id, m) in &found.included {
            assert_eq!(members.iter().find(|x| x.id == *id), Some(m), "{mode}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Selections
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Deep3 {
    text: Option<String>,
    number: i32,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Deep2 {
    #[query(nested)]
    deep: Deep3,
    city: String,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Deep1 {
    #[query(nested)]
    inner: Deep2,
    name: String,
}

/// A nested object selected whole (not followed by queries).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Plain {
    a: i32,
    b: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Shown {
    id: i64,
    number: i32,
    color: Color,
    #[query(nested)]
    outer: Deep1,
    plain: Plain,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    missing: Option<String>,
    tags: Vec<String>,
}

keyed!(Shown);

/// `Bugs/Bug_3350_Select_with_deep_accessor.cs` (`x.Inner != null && x.Inner.String !=
/// null`, then a view of `Number` and the deep string); `Acceptance/select_clause_usage.cs`:
/// `use_select_in_query_for_one_field`, `use_select_in_query_for_one_field_and_first`,
/// `use_select_to_another_type`, `use_select_with_multiple_fields_in_anonymous`,
/// `transform_with_deep_properties`, `use_select_in_query_for_one_object_property`;
/// `Bugs/Bug_1189_can_select_transform_without_an_id.cs`; `Operators/first_operator.cs`
/// on a selection that matches nothing. Selections of fields three levels deep, of an
/// optional field missing from the JSON, of a whole object and of a list, into tuples and
/// structs without an id, keep the query's filter and order.
#[tokio::test]
async fn selections_of_deep_optional_whole_and_list_fields() {
    let (_schema, b) = builder("ml_select");
    let store = ok(b.document::<Shown>().build().await);
    let docs: Vec<Shown> = (1..=12i64)
        .map(|i| Shown {
            id: i,
            number: (i * 5 % 7) as i32,
            color: COLORS[(i % 4) as usize],
            outer: Deep1 {
                inner: Deep2 {
                    deep: Deep3 {
                        text: (i % 3 != 0).then(|| format!("deep-{i}")),
                        number: i as i32 * 10,
                    },
                    city: format!("city{}", i % 2),
                },
                name: format!("n{i}"),
            },
            plain: Plain {
                a: i as i32,
                b: format!("b{i}"),
            },
            missing: (i % 4 == 0).then(|| format!("here{i}")),
            tags: (0..(i % 3)).map(|k| format!("t{k}")).collect(),
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let by_id = |keep: &dyn Fn(&Shown) -> bool| -> Vec<&Shown> {
        docs.iter().filter(|d| keep(d)).collect()
    };

    let texts: Vec<Option<String>> = ok(s
        .query::<Shown>()
        .order_by(|f| f.id.asc())
        .select(|f| f.outer.inner.deep.text)
        .to_list()
        .await);
    assert_eq!(
        texts,
        docs.iter()
            .map(|d| d.outer.inner.deep.text.clone())
            .collect::<Vec<_>>()
    );
    #[derive(Deserialize, Debug, PartialEq)]
    struct SelectedView {
        number: i32,
        text: String,
    }
    let views: Vec<SelectedView> = ok(s
        .query::<Shown>()
        .filter(|f| f.outer.inner.deep.text.is_some())
        .order_by(|f| f.number.asc())
        .select_into::<SelectedView, _>(|f| (f.number, f.outer.inner.deep.text))
        .to_list()
        .await);
    let mut want: Vec<&Shown> = by_id(&|d| d.outer.inner.deep.text.is_some());
    want.sort_by_key(|d| (d.number, d.id));
    let want: Vec<SelectedView> = want
        .iter()
        .map(|d| SelectedView {
            number: d.number,
            text: d.outer.inner.deep.text.clone().expect("some"),
        })
        .collect();
    assert!(!views.is_empty());
    assert_eq!(views, want);
    // A tuple of fields at three depths.
    let tuples: Vec<(i64, String, String, i32)> = ok(s
        .query::<Shown>()
        .filter(|f| f.outer.inner.city.eq("city1"))
        .order_by(|f| f.outer.inner.deep.number.desc())
        .select(|f| {
            (
                f.id,
                f.outer.name,
                f.outer.inner.city,
                f.outer.inner.deep.number,
            )
        })
        .to_list()
        .await);
    let mut want: Vec<&Shown> = by_id(&|d| d.outer.inner.city == "city1");
    want.sort_by_key(|d| std::cmp::Reverse(d.outer.inner.deep.number));
    let want: Vec<(i64, String, String, i32)> = want
        .iter()
        .map(|d| {
            (
                d.id,
                d.outer.name.clone(),
                d.outer.inner.city.clone(),
                d.outer.inner.deep.number,
            )
        })
        .collect();
    assert_eq!(tuples, want);
    // Bug_1189: a view without the id, first of an ordered query.
    #[derive(Deserialize, Debug, PartialEq)]
    struct TargetView {
        color: Color,
        number: i32,
    }
    let view: Option<TargetView> = ok(s
        .query::<Shown>()
        .order_by(|f| f.number.desc())
        .select_into::<TargetView, _>(|f| (f.color, f.number))
        .first()
        .await);
    let top = docs
        .iter()
        .max_by(|a, b| a.number.cmp(&b.number).then(b.id.cmp(&a.id)))
        .expect("docs");
    assert_eq!(
        view,
        Some(TargetView {
            color: top.color,
            number: top.number
        })
    );
    let first_color: Option<Color> = ok(s
        .query::<Shown>()
        .filter(|f| f.number.lt(3))
        .order_by(|f| f.id.desc())
        .select(|f| f.color)
        .first()
        .await);
    assert_eq!(
        first_color,
        docs.iter().rev().find(|d| d.number < 3).map(|d| d.color)
    );
    // A whole object, a list, a field missing from the JSON.
    let plains: Vec<(Plain, Vec<String>, Option<String>)> = ok(s
        .query::<Shown>()
        .filter(|f| f.color.ne(Color::Red))
        .order_by(|f| f.id.asc())
        .select(|f| (f.plain, f.tags, f.missing))
        .to_list()
        .await);
    let want: Vec<(Plain, Vec<String>, Option<String>)> = by_id(&|d| d.color != Color::Red)
        .iter()
        .map(|d| (d.plain.clone(), d.tags.clone(), d.missing.clone()))
        .collect();
    assert_eq!(plains, want);
    let missing: Vec<Option<String>> = ok(s
        .query::<Shown>()
        .order_by(|f| f.id.asc())
        .select(|f| f.missing)
        .to_list()
        .await);
    assert_eq!(
        missing,
        docs.iter().map(|d| d.missing.clone()).collect::<Vec<_>>()
    );
    // Nothing matches: no first, no single, an empty list.
    let none: Option<i32> = ok(s
        .query::<Shown>()
        .filter(|f| f.number.gt(100))
        .select(|f| f.number)
        .first()
        .await);
    assert_eq!(none, None);
    let none: Option<(i64, Color)> = ok(s
        .query::<Shown>()
        .filter(|f| f.number.gt(100))
        .select(|f| (f.id, f.color))
        .single()
        .await);
    assert_eq!(none, None);
}

// ---------------------------------------------------------------------------------------
// Aggregates
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Measure {
    id: i64,
    color: Color,
    number: i32,
    #[document(index)]
    number_col: i32,
    maybe: Option<i32>,
    #[document(index)]
    maybe_col: Option<i32>,
    amount: f64,
    #[document(index)]
    name_col: String,
}

keyed!(Measure);

fn measure(id: i64, color: Color, number: i32, maybe: Option<i32>, amount: f64) -> Measure {
    Measure {
        id,
        color,
        number,
        number_col: number,
        maybe,
        maybe_col: maybe,
        amount,
        name_col: format!("n{}", number.rem_euclid(5)),
    }
}

/// `Operators/aggregate_functions.cs`: `get_max` (1, 42, 3, 4), `get_min` (1, 2, -5, 42),
/// `get_average` (10), `sum_without_any_where`, `sum_with_nullable`, `get_sum_of_integers`,
/// `get_sum_of_decimals` (1.1 + 2.2 + 3.3), `get_sum_of_empty_table`,
/// `get_sum_of_integers_with_where`; `Operators/distinct_operator.cs`:
/// `get_distinct_number`, `get_distinct_string`; `Operators/count_operator.cs`:
/// `long_count_with_a_where_clause`. The same answers on the `jsonb` value and on a
/// duplicated column; over an empty set `None` (Marten answers 0 for a sum); over values
/// that are all `None`, `None`; skip, take and order do not change them; in a batch too.
#[tokio::test]
async fn aggregates_over_empty_sets_missing_values_and_indexed_columns() {
    let (_schema, b) = builder("ml_aggregates");
    let store = ok(b.document::<Measure>().build().await);
    let mut s = store.query_session();
    // The empty table.
    assert_eq!(ok(s.query::<Measure>().sum(|f| f.number).await), None);
    assert_eq!(ok(s.query::<Measure>().sum(|f| f.number_col).await), None);
    assert_eq!(ok(s.query::<Measure>().avg(|f| f.amount).await), None);
    assert_eq!(ok(s.query::<Measure>().max(|f| f.name_col).await), None);
    assert_eq!(
        ok(s.query::<Measure>().count_distinct(|f| f.color).await),
        0
    );
    assert_eq!(ok(s.query::<Measure>().count().await), 0);

    let docs = [
        measure(1, Color::Blue, 1, Some(1), 1.1),
        measure(2, Color::Red, 42, Some(2), 2.2),
        measure(3, Color::Green, 3, Some(3), 3.3),
        measure(4, Color::Blue, 4, Some(4), 0.0),
        measure(5, Color::Red, -5, None, -0.5),
        measure(6, Color::Yellow, 2, None, 0.25),
    ];
    seed!(store, docs);
    let only = |ids: &'static [i64]| move |f: MeasureFields<Measure>| f.id.is_one_of(ids.to_vec());
    // get_max / get_min / get_average over Marten's four numbers.
    let max = ok(s
        .query::<Measure>()
        .filter(only(&[1, 2, 3, 4]))
        .max(|f| f.number)
        .await);
    assert_eq!(max, Some(42));
    let max = ok(s
        .query::<Measure>()
        .filter(only(&[1, 2, 3, 4]))
        .max(|f| f.number_col)
        .await);
    assert_eq!(max, Some(42));
    let min = ok(s
        .query::<Measure>()
        .filter(only(&[1, 2, 5, 4]))
        .min(|f| f.number_col)
        .await);
    assert_eq!(min, Some(-5));
    for avg in [
        ok(s.query::<Measure>()
            .filter(only(&[1, 6, 5, 2]))
            .avg(|f| f.number)
            .await),
        ok(s.query::<Measure>()
            .filter(only(&[1, 6, 5, 2]))
            .avg(|f| f.number_col)
            .await),
    ] {
        assert_eq!(avg, Some(10.0), "(1 + 2 - 5 + 42) / 4");
    }
    let avg = ok(s
        .query::<Measure>()
        .filter(only(&[1, 2, 3, 5]))
        .avg(|f| f.number)
        .await);
    assert_eq!(avg, Some(10.25));
    // sum_with_nullable: the Nones add nothing.
    assert_eq!(ok(s.query::<Measure>().sum(|f| f.maybe).await), Some(10));
    assert_eq!(
        ok(s.query::<Measure>().sum(|f| f.maybe_col).await),
        Some(10)
    );
    assert_eq!(
        ok(s.query::<Measure>().avg(|f| f.maybe_col).await),
        Some(2.5)
    );
    // All None: no value.
    let nones = only(&[5, 6]);
    assert_eq!(
        ok(s.query::<Measure>().filter(nones).sum(|f| f.maybe).await),
        None
    );
    assert_eq!(
        ok(s.query::<Measure>()
            .filter(nones)
            .avg(|f| f.maybe_col)
            .await),
        None
    );
    assert_eq!(
        ok(s.query::<Measure>()
            .filter(nones)
            .count_distinct(|f| f.maybe)
            .await),
        0
    );
    // get_sum_of_decimals: 1.1 + 2.2 + 3.3 is 6.6 (summed as numeric).
    let sum = ok(s
        .query::<Measure>()
        .filter(only(&[1, 2, 3]))
        .sum(|f| f.amount)
        .await)
    .expect("a sum");
    assert!((sum - 6.6).abs() < 1e-9, "{sum}");
    // get_sum_of_integers_with_where: Number < 4 over 1, 2, 3, 4.
    assert_eq!(
        ok(s.query::<Measure>()
            .filter(only(&[1, 2, 3, 4]))
            .filter(|f| f.number_col.lt(4))
            .sum(|f| f.number)
            .await),
        Some(4),
        "1 + 3 (2's number is 42)"
    );
    // Distinct values.
    let distinct = |get: fn(&Measure) -> String| {
        docs.iter().map(get).collect::<BTreeSet<String>>().len() as i64
    };
    assert_eq!(
        ok(s.query::<Measure>().count_distinct(|f| f.color).await),
        distinct(|m| format!("{:?}", m.color))
    );
    assert_eq!(
        ok(s.query::<Measure>().count_distinct(|f| f.name_col).await),
        distinct(|m| m.name_col.clone())
    );
    assert_eq!(
        ok(s.query::<Measure>().count_distinct(|f| f.number_col).await),
        distinct(|m| m.number.to_string())
    );
    assert_eq!(
        ok(s.query::<Measure>().count_distinct(|f| f.maybe).await),
        4
    );
    // min / max of text on the column (byte order).
    assert_eq!(
        ok(s.query::<Measure>().min(|f| f.name_col).await),
        docs.iter().map(|m| m.name_col.clone()).min()
    );
    // Skip, take and order do not apply to aggregates.
    assert_eq!(
        ok(s.query::<Measure>()
            .order_by(|f| f.number.desc())
            .skip(2)
            .take(1)
            .sum(|f| f.number_col)
            .await),
        Some(docs.iter().map(|m| i64::from(m.number)).sum())
    );
    // count_operator: a count with a where clause.
    assert_eq!(
        ok(s.query::<Measure>()
            .filter(|f| f.number.gt(3))
            .count()
            .await),
        docs.iter().filter(|m| m.number > 3).count() as i64
    );
    // In a batch, an empty set and a full one.
    let mut batch = s.batch();
    let empty = batch.aggregate(
        QuerySpec::<Measure>::new().filter(|f| f.number.gt(1000)),
        |f| f.number_col.sum(),
    );
    let full = batch.aggregate(QuerySpec::<Measure>::new(), |f| f.number_col.max());
    let results = ok(batch.execute().await);
    assert_eq!(ok(results.get(empty)), None);
    assert_eq!(ok(results.get(full)), Some(42));
}

/// `Operators/distinct_operator.cs`: `get_distinct_nullable_enums` (the distinct values of
/// a nullable field) on a duplicated column: `count_distinct` of an indexed `Option`
/// field counts its distinct values as it does on the `jsonb` value (`None`, a NULL
/// column, is no value), for numbers and for text.
#[tokio::test]
async fn count_distinct_of_an_indexed_option_field() {
    let (_schema, b) = builder("ml_distinct_option_col");
    let store = ok(b.document::<Measure>().document::<Shop>().build().await);
    let docs = [
        measure(1, Color::Blue, 1, Some(1), 1.0),
        measure(2, Color::Red, 2, Some(2), 2.0),
        measure(3, Color::Green, 3, Some(2), 3.0),
        measure(4, Color::Blue, 4, None, 4.0),
    ];
    seed!(store, docs);
    let shops: Vec<Shop> = (1..=5i64)
        .map(|i| Shop {
            id: i,
            nick: (i % 2 == 1).then(|| format!("nick{}", i % 3)),
        })
        .collect();
    seed!(store, shops);
    let mut s = store.query_session();
    let on_jsonb = ok(s.query::<Measure>().count_distinct(|f| f.maybe).await);
    assert_eq!(on_jsonb, 2);
    let mut wrong = Vec::new();
    match s.query::<Measure>().count_distinct(|f| f.maybe_col).await {
        Ok(2) => {}
        other => wrong.push(format!(
            "count_distinct(maybe_col: Option<i32>, indexed): expected Ok(2), got {other:?}"
        )),
    }
    let want = shops
        .iter()
        .filter_map(|x| x.nick.clone())
        .collect::<BTreeSet<_>>()
        .len() as i64;
    match s.query::<Shop>().count_distinct(|f| f.nick).await {
        Ok(n) if n == want => {}
        other => wrong.push(format!(
            "count_distinct(nick: Option<String>, indexed): expected Ok({want}), got {other:?}"
        )),
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Shop {
    id: i64,
    #[document(index)]
    nick: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Soft-deleted rows mixed with live ones
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(soft_delete)]
struct SoftItem {
    id: i64,
    number: i32,
    name: String,
}

keyed!(SoftItem);

/// The items with a number, those with a name starting with a prefix, optionally every
/// row or only the deleted ones.
struct SoftItems {
    number: i32,
    prefix: &'static str,
    mode: u8,
}

impl CompiledQuery for SoftItems {
    type Document = SoftItem;
    type Returns = ToList;

    fn build(&self, q: QuerySpec<SoftItem>) -> QuerySpec<SoftItem> {
        let q = q
            .filter(|f| f.number.eq(self.number))
            .filter(|f| f.name.starts_with(self.prefix))
            .order_by(|f| f.id.asc());
        match self.mode {
            0 => q,
            1 => q.include_deleted(),
            _ => q.only_deleted(),
        }
    }
}

/// `SoftDeletes/query_with_multiple_where_clauses_and_soft_deletes_configured.cs`: both
/// tests (`Number == 1` then `Name.StartsWith("Jim")`, with and without soft deletes);
/// `Bugs/Bug_3031_querying_using_soft_deletes.cs`: `test_list` (`MaybeDeleted()`: the live
/// and the deleted document, the deleted one's metadata marked), `test_any` and the
/// `WithArchivedState` variants (`IncludeArchived`, `OnlyArchived` as a query helper).
/// Chained filters on a soft-deleted type in each read mode, for lists, counts, exists,
/// pages, sums, selections and a compiled query, against the same sets computed in Rust.
#[tokio::test]
async fn chained_filters_on_soft_deleted_types_in_every_read_mode() {
    let (_schema, b) = builder("ml_soft");
    let store = ok(b.document::<SoftItem>().build().await);
    let first = ["Jim Bob", "Joe Bill", "Jim Beam", "Jimmy", "Bob Jim"];
    let docs: Vec<SoftItem> = (1..=25i64)
        .map(|i| SoftItem {
            id: i,
            number: if i <= 3 {
                [1, 2, 1][i as usize - 1]
            } else {
                (i % 3) as i32
            },
            name: first[(i as usize - 1) % first.len()].to_owned(),
        })
        .collect();
    seed!(store, docs);
    // Delete some by id, some by filter.
    let mut w = store.lightweight_session();
    for id in [3i64, 8, 13] {
        ok(w.delete::<SoftItem>(&id));
    }
    ok(w.delete_where::<SoftItem>(SoftItem::fields().id.is_one_of([21i64, 22, 24])));
    ok(w.save_changes().await);
    let deleted: BTreeSet<i64> = [3, 8, 13, 21, 22, 24].into();

    let mut s = store.query_session();
    let in_mode = |mode: u8, d: &SoftItem| match mode {
        0 => !deleted.contains(&d.id),
        1 => true,
        _ => deleted.contains(&d.id),
    };
    for (number, prefix) in [(1, "Jim"), (2, "Jo"), (0, "Bob"), (1, "")] {
        for mode in 0..3u8 {
            let label = format!("number {number}, prefix {prefix:?}, mode {mode}");
            let keep =
                |d: &SoftItem| in_mode(mode, d) && d.number == number && d.name.starts_with(prefix);
            let want = expected(&docs, keep);
            macro_rules! q {
                () => {{
                    let q = s
                        .query::<SoftItem>()
                        .filter(|f| f.number.eq(number))
                        .filter(|f| f.name.starts_with(prefix));
                    match mode {
                        0 => q,
                        1 => q.include_deleted(),
                        _ => q.only_deleted(),
                    }
                }};
            }
            let found = ok(q!().order_by(|f| f.id.asc()).to_list().await);
            assert_eq!(keys(&found), want, "{label}");
            assert_eq!(ok(q!().count().await), want.len() as i64, "{label}");
            assert_eq!(ok(q!().exists().await), !want.is_empty(), "{label}");
            let page = ok(q!().order_by(|f| f.id.desc()).to_page(1, 2).await);
            assert_eq!(page.total, want.len() as i64, "{label}");
            let rev: Vec<i64> = want.iter().rev().copied().collect();
            assert_eq!(
                keys(&page.items),
                rev[2.min(rev.len())..4.min(rev.len())],
                "{label}"
            );
            let sum = ok(q!().sum(|f| f.id).await);
            assert_eq!(
                sum,
                (!want.is_empty()).then(|| want.iter().sum()),
                "{label}"
            );
            let ids: Vec<i64> = ok(q!()
                .order_by(|f| f.id.asc())
                .select(|f| f.id)
                .to_list()
                .await);
            assert_eq!(ids, want, "{label}");
            let compiled = ok(s
                .query_compiled(&SoftItems {
                    number,
                    prefix,
                    mode,
                })
                .await);
            assert_eq!(keys(&compiled), want, "compiled {label}");
        }
    }
    // Marten's case: two `Jim`s with number 1, one of them (3) deleted.
    let live = ok(s
        .query::<SoftItem>()
        .filter(|f| f.number.eq(1))
        .filter(|f| f.name.starts_with("Jim"))
        .filter(|f| f.id.le(3))
        .to_list()
        .await);
    assert_eq!(keys(&live), [1]);
    // Bug_3031: with the deleted ones, both; the metadata tells which is deleted.
    let both = ok(s
        .query::<SoftItem>()
        .include_deleted()
        .filter(|f| f.id.is_one_of([2i64, 3]))
        .order_by(|f| f.id.asc())
        .to_list()
        .await);
    assert_eq!(keys(&both), [2, 3]);
    let mut l = store.lightweight_session();
    let live_meta = ok(l.metadata::<SoftItem>(&2).await).expect("metadata");
    assert!(!live_meta.deleted && live_meta.deleted_at.is_none());
    let gone_meta = ok(l.metadata::<SoftItem>(&3).await).expect("metadata");
    assert!(gone_meta.deleted && gone_meta.deleted_at.is_some());
    assert!(ok(s.query::<SoftItem>().include_deleted().exists().await));
    assert_eq!(
        ok(s.query::<SoftItem>().only_deleted().count().await),
        deleted.len() as i64
    );
    // The read modes in a batch.
    let mut batch = s.batch();
    let live = batch.count(QuerySpec::<SoftItem>::new().filter(|f| f.number.eq(1)));
    let every = batch.list(
        QuerySpec::<SoftItem>::new()
            .include_deleted()
            .filter(|f| f.number.eq(1))
            .order_by(|f| f.id.asc()),
    );
    let gone = batch.aggregate(QuerySpec::<SoftItem>::new().only_deleted(), |f| f.id.sum());
    let results = ok(batch.execute().await);
    assert_eq!(
        ok(results.get(live)),
        expected(&docs, |d| d.number == 1 && !deleted.contains(&d.id)).len() as i64
    );
    assert_eq!(
        keys(&ok(results.get(every))),
        expected(&docs, |d| d.number == 1)
    );
    assert_eq!(ok(results.get(gone)), Some(deleted.iter().sum::<i64>()));
}

// ---------------------------------------------------------------------------------------
// Compiled queries re-run with new values
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct InnerNumber {
    number: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Login {
    id: Uuid,
    #[document(index)]
    user_name: String,
    #[document(index)]
    email: String,
    first_name: String,
    last_name: String,
    age: i32,
    flag: bool,
    numbers: Vec<i32>,
    guids: Vec<Uuid>,
    #[query(nested)]
    inner: InnerNumber,
    event: String,
    seq: i64,
}

/// Bug_1886: a user by name or by e-mail, both duplicated fields.
struct ByNameOrEmail(String);

impl CompiledQuery for ByNameOrEmail {
    type Document = Login;
    type Returns = First;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| {
            f.user_name
                .eq(self.0.as_str())
                .or(f.email.eq(self.0.as_str()))
        })
    }
}

/// Bug_4169: names starting with a prefix.
struct NameStarts(&'static str);

impl CompiledQuery for NameStarts {
    type Document = Login;
    type Returns = ToList;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| f.user_name.starts_with(self.0))
            .order_by(|f| f.seq.asc())
    }
}

/// Bug_4169: names ending with a suffix.
struct NameEnds(&'static str);

impl CompiledQuery for NameEnds {
    type Document = Login;
    type Returns = ToList;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| f.user_name.ends_with(self.0))
            .order_by(|f| f.seq.asc())
    }
}

/// Bug_784: flagged, with a number in the list.
struct FlaggedWith(i32);

impl CompiledQuery for FlaggedWith {
    type Document = Login;
    type Returns = ToList;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| f.flag.eq(true).and(f.numbers.contains(self.0)))
            .order_by(|f| f.seq.asc())
    }
}

/// compiled_query_problem_with_nested_properties: how many have this nested number.
struct NestedNumber(i32);

impl CompiledQuery for NestedNumber {
    type Document = Login;
    type Returns = Count;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| f.inner.number.eq(self.0))
    }
}

/// Bug_605: flagged (or not), one page by sequence.
struct FlagPage {
    flag: bool,
    skip: usize,
    take: usize,
}

impl CompiledQuery for FlagPage {
    type Document = Login;
    type Returns = ToList;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        let q = if self.flag {
            q.filter(|f| f.flag.eq(true))
        } else {
            q.filter(|f| f.flag.eq(true).not())
        };
        q.order_by(|f| f.seq.asc()).skip(self.skip).take(self.take)
    }
}

/// Bug_1891: one page of an event's timeline (the skip computed from the page number).
struct Timeline {
    event: &'static str,
    page: usize,
    page_size: usize,
}

impl CompiledQuery for Timeline {
    type Document = Login;
    type Returns = ToList;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| f.event.eq(self.event))
            .order_by(|f| f.seq.asc())
            .skip((self.page - 1) * self.page_size)
            .take(self.page_size)
    }
}

/// Bug_1623: is anybody this old.
struct AgeExists(i32);

impl CompiledQuery for AgeExists {
    type Document = Login;
    type Returns = Exists;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| f.age.eq(self.0))
    }
}

/// bug_use_guid_contains_within_compiled_query: the one holding this uuid.
struct HoldsGuid(Uuid);

impl CompiledQuery for HoldsGuid {
    type Document = Login;
    type Returns = Single;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| f.guids.contains(self.0))
    }
}

/// FindUserByAllTheThings: three parameters, two filters.
struct AllTheThings {
    user_name: String,
    first_name: String,
    last_name: String,
}

impl CompiledQuery for AllTheThings {
    type Document = Login;
    type Returns = Single;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| {
            f.first_name
                .eq(self.first_name.as_str())
                .and(f.user_name.eq(self.user_name.as_str()))
        })
        .filter(|f| f.last_name.eq(self.last_name.as_str()))
    }
}

/// CompiledQuery1: any with this name, ignoring case.
struct NameIgnoringCase(&'static str);

impl CompiledQuery for NameIgnoringCase {
    type Document = Login;
    type Returns = Exists;
    fn build(&self, q: QuerySpec<Login>) -> QuerySpec<Login> {
        q.filter(|f| f.user_name.eq_ignore_case(self.0))
    }
}

fn logins() -> Vec<Login> {
    let names = [
        "ADMIN",
        "hello world",
        "world hello",
        "jdm",
        "shadetreedev",
        "hello",
        "Hello again",
    ];
    (0..21i64)
        .map(|i| Login {
            id: spread_uuid(2000 + i as u64),
            user_name: format!("{}{}", names[i as usize % names.len()], i / 7),
            email: if i == 0 {
                "TEST@EXAMPLE.COM".to_owned()
            } else {
                format!("u{i}@example.com")
            },
            first_name: ["Jeremy", "Lindsey", "Max"][i as usize % 3].to_owned(),
            last_name: ["Miller", "Smith"][i as usize % 2].to_owned(),
            age: (i % 6) as i32 + 5,
            flag: i % 3 != 1,
            numbers: (0..(i % 4)).map(|k| (i as i32 + k as i32) % 8).collect(),
            guids: vec![spread_uuid(9000 + i as u64)],
            inner: InnerNumber {
                number: (i % 5) as i32,
            },
            event: ["created", "closed"][i as usize % 2].to_owned(),
            seq: 100 - i,
        })
        .collect()
}

/// The uuids of `docs` `keep` accepts, by `seq`.
fn by_seq(docs: &[Login], keep: impl Fn(&Login) -> bool) -> Vec<Uuid> {
    let mut v: Vec<&Login> = docs.iter().filter(|d| keep(d)).collect();
    v.sort_by_key(|d| d.seq);
    v.iter().map(|d| d.id).collect()
}

fn login_ids(found: &[Login]) -> Vec<Uuid> {
    found.iter().map(|d| d.id).collect()
}

/// `Bugs/Bug_1886_compiled_query_value_retention.cs` (an OR of two duplicated fields, run
/// with one value then another in new sessions); `Bugs/Bug_4169_compiled_query_startswith_endswith_swap.cs`
/// (both tests); `Bugs/Bug_784_Collection_Contains_within_compiled_query.cs`;
/// `Bugs/compiled_query_problem_with_nested_properties.cs`;
/// `Bugs/Bug_605_unary_expressions_in_where_clause_of_compiled_query.cs` (`x.Flag` and
/// `!x.Flag` with skip and take); `Bugs/Bug_1891_compiled_query_problem.cs` (a skip
/// computed from a page number); `Compiled/compiled_queries.cs`: `Bug_1623_use_any_within_compiled_query`,
/// `bug_use_guid_contains_within_compiled_query`, `several_parameters_for_compiled_query`
/// (`FindUserByAllTheThings`), `bug_1090_Any_with_compiled_queries` (`EqualsIgnoreCase`),
/// `count_query_compiled`, `projection_query_compiled` (run twice with different names).
/// Each compiled query type, run again and again with new values (interleaved with the
/// others, in several sessions), returns each value's answer; each type and shape is
/// rendered once.
#[tokio::test]
async fn compiled_queries_rerun_with_new_values_return_each_values_answer() {
    let (_schema, b) = builder("ml_compiled");
    let store = ok(b.document::<Login>().build().await);
    let docs = logins();
    seed!(store, docs);
    let before = store.compiled_query_stats().renders;
    for round in 0..2 {
        let mut s = store.query_session();
        // Bug_1886, in a new session per value.
        for name in [
            "ADMIN0",
            "TEST@EXAMPLE.COM",
            "jdm1",
            "u5@example.com",
            "nobody",
        ] {
            let found = ok(s.query_compiled(&ByNameOrEmail(name.to_owned())).await);
            let want = docs
                .iter()
                .find(|d| d.user_name == name || d.email == name)
                .map(|d| d.id);
            assert_eq!(found.map(|d| d.id), want, "round {round}: {name}");
        }
        // Bug_4169: the same argument, a prefix for one type and a suffix for the other.
        for arg in ["hello", "world", "jdm", "0", "zzz"] {
            let starts = ok(s.query_compiled(&NameStarts(arg)).await);
            let ends = ok(s.query_compiled(&NameEnds(arg)).await);
            assert_eq!(
                login_ids(&starts),
                by_seq(&docs, |d| d.user_name.starts_with(arg)),
                "starts with {arg}"
            );
            assert_eq!(
                login_ids(&ends),
                by_seq(&docs, |d| d.user_name.ends_with(arg)),
                "ends with {arg}"
            );
        }
        // Bug_784.
        for n in [5, 3, 0, 99] {
            let found = ok(s.query_compiled(&FlaggedWith(n)).await);
            assert_eq!(
                login_ids(&found),
                by_seq(&docs, |d| d.flag && d.numbers.contains(&n)),
                "flagged with {n}"
            );
        }
        // Nested property, counted.
        for n in [0, 4, 7] {
            let found = ok(s.query_compiled(&NestedNumber(n)).await);
            assert_eq!(
                found,
                docs.iter().filter(|d| d.inner.number == n).count() as i64,
                "nested {n}"
            );
        }
        // Bug_605: x.Flag and !x.Flag, pages.
        for (flag, skip, take) in [(true, 2, 3), (false, 0, 4), (true, 0, 100), (false, 5, 2)] {
            let found = ok(s.query_compiled(&FlagPage { flag, skip, take }).await);
            let want = by_seq(&docs, |d| d.flag == flag);
            let from = skip.min(want.len());
            let to = (from + take).min(want.len());
            assert_eq!(
                login_ids(&found),
                want[from..to],
                "flag {flag} {skip} {take}"
            );
        }
        // Bug_1891: pages by number.
        for (event, page) in [("created", 1), ("created", 2), ("closed", 3), ("closed", 1)] {
            let found = ok(s
                .query_compiled(&Timeline {
                    event,
                    page,
                    page_size: 4,
                })
                .await);
            let want = by_seq(&docs, |d| d.event == event);
            let from = ((page - 1) * 4).min(want.len());
            let to = (from + 4).min(want.len());
            assert_eq!(login_ids(&found), want[from..to], "{event} page {page}");
        }
        // Bug_1623.
        for age in [6, 5, 11, 42] {
            assert_eq!(
                ok(s.query_compiled(&AgeExists(age)).await),
                docs.iter().any(|d| d.age == age),
                "age {age}"
            );
        }
        // A uuid in a list, the only one.
        for d in [&docs[3], &docs[17]] {
            let found = ok(s.query_compiled(&HoldsGuid(d.guids[0])).await);
            assert_eq!(found.map(|x| x.id), Some(d.id));
        }
        assert!(ok(s.query_compiled(&HoldsGuid(Uuid::nil())).await).is_none());
        // Three parameters.
        for d in [&docs[4], &docs[11]] {
            let found = ok(s
                .query_compiled(&AllTheThings {
                    user_name: d.user_name.clone(),
                    first_name: d.first_name.clone(),
                    last_name: d.last_name.clone(),
                })
                .await);
            assert_eq!(found.map(|x| x.id), Some(d.id));
        }
        let wrong_last = ok(s
            .query_compiled(&AllTheThings {
                user_name: docs[4].user_name.clone(),
                first_name: docs[4].first_name.clone(),
                last_name: "Nobody".to_owned(),
            })
            .await);
        assert!(wrong_last.is_none());
        for (name, want) in [("admin0", true), ("HELLO0", true), ("foo", false)] {
            assert_eq!(
                ok(s.query_compiled(&NameIgnoringCase(name)).await),
                want,
                "ignoring case {name}"
            );
        }
    }
    // One rendering per type and shape (FlagPage has two shapes): 12.
    assert_eq!(store.compiled_query_stats().renders - before, 12);
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum RouteStatus {
    Created,
    Planned,
    Driving,
}

impl Comparable for RouteStatus {
    const KIND: ValueKind = ValueKind::Text;
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Route {
    id: i64,
    name: String,
    status: RouteStatus,
    date: Stamp,
}

keyed!(Route);

/// Bug_365: planned routes after a date (a constant and a parameter).
struct RoutesPlannedAfter(Stamp);

impl CompiledQuery for RoutesPlannedAfter {
    type Document = Route;
    type Returns = ToList;
    fn build(&self, q: QuerySpec<Route>) -> QuerySpec<Route> {
        q.filter(|f| f.status.eq(RouteStatus::Planned).and(f.date.gt(self.0)))
            .order_by(|f| f.date.asc())
    }
}

/// Bug_3610: an active one of a name (`Status.In(Active)`, an enum stored as a string).
struct ActiveNamed(&'static str);

impl CompiledQuery for ActiveNamed {
    type Document = Route;
    type Returns = ToList;
    fn build(&self, q: QuerySpec<Route>) -> QuerySpec<Route> {
        q.filter(|f| {
            f.status
                .is_one_of([RouteStatus::Driving])
                .and(f.name.eq(self.0))
        })
    }
}

/// The routes of some ids, however many (none too).
struct RoutesOf(Vec<i64>);

impl CompiledQuery for RoutesOf {
    type Document = Route;
    type Returns = ToList;
    fn build(&self, q: QuerySpec<Route>) -> QuerySpec<Route> {
        q.filter(|f| f.id.is_one_of(self.0.clone()))
            .order_by(|f| f.id.desc())
    }
}

/// How many routes have one of some statuses, however many (none too).
struct CountWithStatus(Vec<RouteStatus>);

impl CompiledQuery for CountWithStatus {
    type Document = Route;
    type Returns = Count;
    fn build(&self, q: QuerySpec<Route>) -> QuerySpec<Route> {
        q.filter(|f| f.status.is_one_of(self.0.clone()))
    }
}

/// `Bugs/Bug_365_compiled_query_with_constant_fails.cs` (a constant enum and a date
/// parameter; the compiled count equals the uncompiled one);
/// `Bugs/Bug_3610_enum_array_as_string_in_compiled_query.cs` (`Status.In(Active)` with a
/// string-stored enum); `Operators/is_one_of_operator.cs` inside compiled queries. Lists of
/// any length, the empty one included, reuse one statement and each returns its answer.
#[tokio::test]
async fn compiled_queries_with_dates_enums_and_lists_of_any_length() {
    let (_schema, b) = builder("ml_compiled_lists");
    let store = ok(b.document::<Route>().build().await);
    let statuses = [
        RouteStatus::Created,
        RouteStatus::Planned,
        RouteStatus::Driving,
    ];
    let docs: Vec<Route> = (1..=30i64)
        .map(|i| Route {
            id: i,
            name: format!("r{}", i % 4),
            status: if i % 2 == 0 {
                RouteStatus::Planned
            } else {
                statuses[(i % 3) as usize]
            },
            date: stamp((i * 1440) % 20_000, (i % 5) as i8),
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let before = store.compiled_query_stats().renders;
    for days in [5, 0, 11, -3, 400] {
        let after = stamp(days * 1440, 3);
        let found = ok(s.query_compiled(&RoutesPlannedAfter(after)).await);
        let want = ordered(
            &docs,
            |r| r.status == RouteStatus::Planned && r.date > after,
            |a, b| a.date.cmp(&b.date),
        );
        assert_eq!(keys(&found), want, "after {days} days");
        let uncompiled = ok(s
            .query::<Route>()
            .filter(|f| f.status.eq(RouteStatus::Planned))
            .filter(|f| f.date.gt(after))
            .count()
            .await);
        assert_eq!(found.len() as i64, uncompiled);
    }
    for name in ["r1", "r3", "r0", "nobody"] {
        let found = ok(s.query_compiled(&ActiveNamed(name)).await);
        assert_eq!(
            sorted_keys(&found),
            expected(&docs, |r| r.status == RouteStatus::Driving
                && r.name == name),
            "{name}"
        );
    }
    for ids in [vec![3, 9], vec![], vec![1], vec![30, 2, 2, 77, 15], vec![]] {
        let found = ok(s.query_compiled(&RoutesOf(ids.clone())).await);
        let mut want: Vec<i64> = docs
            .iter()
            .map(|r| r.id)
            .filter(|id| ids.contains(id))
            .collect();
        want.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(keys(&found), want, "ids {ids:?}");
    }
    for list in [
        vec![RouteStatus::Driving],
        vec![],
        vec![RouteStatus::Created, RouteStatus::Planned],
        statuses.to_vec(),
        vec![],
    ] {
        let found = ok(s.query_compiled(&CountWithStatus(list.clone())).await);
        assert_eq!(
            found,
            docs.iter().filter(|r| list.contains(&r.status)).count() as i64,
            "statuses {list:?}"
        );
    }
    assert_eq!(store.compiled_query_stats().renders - before, 4);
}

// ---------------------------------------------------------------------------------------
// Deep nesting
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Mark {
    tag: String,
    weight: i32,
}

/// An object at the bottom, present or not.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Leaf {
    note: String,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct L4 {
    code: String,
    value: Option<i32>,
    marks: Vec<Mark>,
    leaf: Option<Leaf>,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct L3 {
    #[query(nested)]
    l4: L4,
    depth: i32,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct L2 {
    #[query(nested)]
    level_three: L3,
    n: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Tree {
    id: i64,
    #[query(nested)]
    l2: L2,
}

keyed!(Tree);

/// `Acceptance/null_or_not_null_querying.cs`: `CanQueryNullNotNullAtArbitraryDepth` (an
/// object four levels down present or `null`); `Acceptance/deep_searches.cs`
/// (`query_two_deep`, `query_three_deep`, `order_by_2_deep`) taken one level further, with
/// a renamed level; `ChildCollections/querying_through_n_deep_sub_collections.cs` (`Any`
/// on a collection four levels down). Filters, `is_none` / `is_some`, `any`, sorting,
/// selections and aggregates on fields four levels deep.
#[tokio::test]
async fn filters_sorts_selections_and_aggregates_four_levels_deep() {
    let (_schema, b) = builder("ml_deep");
    let store = ok(b.document::<Tree>().build().await);
    let docs: Vec<Tree> = (1..=18i64)
        .map(|i| Tree {
            id: i,
            l2: L2 {
                level_three: L3 {
                    l4: L4 {
                        code: format!("c{}", (i * 7) % 10),
                        value: (i % 3 != 0).then_some((i % 5) as i32),
                        marks: (0..(i % 3))
                            .map(|k| Mark {
                                tag: format!("t{}", (i + k) % 4),
                                weight: (i * k) as i32 % 9,
                            })
                            .collect(),
                        leaf: (i % 4 == 1).then(|| Leaf {
                            note: format!("leaf{i}"),
                        }),
                    },
                    depth: (i % 6) as i32,
                },
                n: (i % 4) as i32,
            },
        })
        .collect();
    seed!(store, docs);
    let mut s = store.query_session();
    let f = Tree::fields();
    let l4 = |t: &Tree| t.l2.level_three.l4.clone();
    let cases: Vec<Case<Tree>> = vec![
        case(
            "leaf is some",
            f.l2.level_three.l4.leaf.is_some(),
            move |t| l4(t).leaf.is_some(),
        ),
        case(
            "leaf is none",
            f.l2.level_three.l4.leaf.is_none(),
            move |t| l4(t).leaf.is_none(),
        ),
        case(
            "value == Some(2)",
            f.l2.level_three.l4.value.eq(Some(2)),
            move |t| l4(t).value == Some(2),
        ),
        case(
            "value is none or code > c5",
            f.l2.level_three
                .l4
                .value
                .is_none()
                .or(f.l2.level_three.l4.code.gt("c5".to_owned())),
            move |t| l4(t).value.is_none() || l4(t).code.as_str() > "c5",
        ),
        case(
            "code starts with c1 or depth >= 4",
            f.l2.level_three
                .l4
                .code
                .starts_with("c1")
                .or(f.l2.level_three.depth.ge(4)),
            move |t| l4(t).code.starts_with("c1") || t.l2.level_three.depth >= 4,
        ),
        case(
            "any mark t2 with weight > 1",
            f.l2.level_three
                .l4
                .marks
                .any(|m| m.tag.eq("t2").and(m.weight.gt(1))),
            move |t| l4(t).marks.iter().any(|m| m.tag == "t2" && m.weight > 1),
        ),
        case(
            "not any mark t0",
            f.l2.level_three.l4.marks.any(|m| m.tag.eq("t0")).not(),
            move |t| !l4(t).marks.iter().any(|m| m.tag == "t0"),
        ),
        case(
            "marks empty and leaf some",
            f.l2.level_three
                .l4
                .marks
                .is_empty()
                .and(f.l2.level_three.l4.leaf.is_some()),
            move |t| l4(t).marks.is_empty() && l4(t).leaf.is_some(),
        ),
    ];
    check_cases!(s, Tree, docs, cases);
    // The JSON key of the renamed level.
    assert_eq!(
        f.l2.level_three.l4.code.path().segments,
        ["l2", "levelThree", "l4", "code"]
    );
    let found = ok(s
        .query::<Tree>()
        .order_by(|f| f.l2.level_three.l4.code.desc())
        .order_by(|f| f.l2.n.asc())
        .to_list()
        .await);
    assert_eq!(
        keys(&found),
        ordered(
            &docs,
            |_| true,
            |a, b| b
                .l2
                .level_three
                .l4
                .code
                .cmp(&a.l2.level_three.l4.code)
                .then(a.l2.n.cmp(&b.l2.n))
        )
    );
    let codes: Vec<(i64, String, Option<Leaf>)> = ok(s
        .query::<Tree>()
        .filter(|f| f.l2.level_three.l4.leaf.is_some())
        .order_by(|f| f.id.asc())
        .select(|f| (f.id, f.l2.level_three.l4.code, f.l2.level_three.l4.leaf))
        .to_list()
        .await);
    let want: Vec<(i64, String, Option<Leaf>)> = docs
        .iter()
        .filter(|t| t.l2.level_three.l4.leaf.is_some())
        .map(|t| {
            (
                t.id,
                t.l2.level_three.l4.code.clone(),
                t.l2.level_three.l4.leaf.clone(),
            )
        })
        .collect();
    assert_eq!(codes, want);
    assert_eq!(
        ok(s.query::<Tree>().max(|f| f.l2.level_three.l4.code).await),
        docs.iter().map(|t| t.l2.level_three.l4.code.clone()).max()
    );
    assert_eq!(
        ok(s.query::<Tree>().sum(|f| f.l2.level_three.l4.value).await),
        Some(
            docs.iter()
                .filter_map(|t| t.l2.level_three.l4.value)
                .map(i64::from)
                .sum()
        )
    );
}

// ---------------------------------------------------------------------------------------
// Option fields missing from the JSON
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Sparse {
    id: i64,
    /// Left out of the JSON when `None` (as in a document stored before the field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// The same, with a duplicated column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[document(index)]
    note_col: Option<String>,
}

keyed!(Sparse);

/// `Acceptance/nullable_types.cs` (`query_against_null_1` .. `_3`, `x.NullableNumber ==
/// null`, `x.NullableBool != true`) and `Acceptance/enum_usage.cs`
/// (`use_nullable_enum_values_as_part_of_in_query`), for an `Option` field that is absent
/// from the JSON when `None` (`skip_serializing_if`, or a document written before the
/// field was added): `is_none` finds it, and so do `eq(None)`, `ne(Some(..))` and
/// `is_one_of([.., None])`, on the `jsonb` value as on a duplicated column and as the
/// filter's own Rust predicate (`Filter::matches`) says.
#[tokio::test]
async fn an_option_missing_from_the_json_is_none_for_eq_ne_and_is_one_of() {
    let (schema, b) = builder("ml_missing_option");
    let store = ok(b.document::<Sparse>().build().await);
    let docs: Vec<Sparse> = (1..=6i64)
        .map(|i| {
            let note = [None, Some("a"), Some("b")][(i % 3) as usize].map(str::to_owned);
            Sparse {
                id: i,
                note: note.clone(),
                note_col: note,
            }
        })
        .collect();
    seed!(store, docs);
    let absent: i64 = schema
        .raw_client()
        .await
        .query_one(
            "SELECT count(*) FROM mt_doc_sparse WHERE NOT data ? 'note' AND NOT data ? 'note_col'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(absent, 2, "the Nones are absent from the JSON");
    let mut s = store.query_session();
    let f = Sparse::fields();
    let a = Some("a".to_owned());
    let mut wrong = Vec::new();
    for (name, field) in [("jsonb", f.note.clone()), ("column", f.note_col.clone())] {
        let filters = [
            ("is_none()", field.is_none()),
            ("eq(None)", field.eq(None)),
            ("ne(Some(a))", field.ne(a.clone())),
            (
                "is_one_of([Some(a), None])",
                field.is_one_of([a.clone(), None]),
            ),
            ("not(eq(Some(a)))", field.eq(a.clone()).not()),
        ];
        for (label, filter) in filters {
            // What the filter's own predicate keeps (the Rust answer).
            let want = expected(&docs, |d| filter.matches(d));
            let found = ok(s.query::<Sparse>().where_filter(filter).to_list().await);
            let got = sorted_keys(&found);
            if got != want {
                wrong.push(format!("{name} {label}: found {got:?}, expected {want:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Gap {
    note: Option<String>,
    n: Option<i32>,
}

/// Each of its `Option`s (at the root, on a column, in a nested struct, in an `Option`
/// struct, in the elements of a list) is, in the stored JSON, missing, `null` or a value.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Holey {
    id: i64,
    note: Option<String>,
    #[document(index)]
    note_col: Option<String>,
    num: Option<i32>,
    #[query(nested)]
    gap: Gap,
    maybe_gap: Option<Gap>,
    gaps: Vec<Gap>,
}

keyed!(Holey);

/// What the stored JSON holds for an `Option`: no key, `null`, or the value.
#[derive(Debug, Clone)]
enum Slot<T> {
    Absent,
    Null,
    Value(T),
}

impl<T: Clone> Slot<T> {
    /// The Rust value (serde reads a missing `Option` as `None`).
    fn get(&self) -> Option<T> {
        match self {
            Slot::Value(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Writes the key of `obj` as the slot says, the value with `json`.
    fn put(
        &self,
        obj: &mut serde_json::Map<String, serde_json::Value>,
        key: &str,
        json: impl Fn(&T) -> serde_json::Value,
    ) {
        match self {
            Slot::Absent => {}
            Slot::Null => {
                obj.insert(key.to_owned(), serde_json::Value::Null);
            }
            Slot::Value(v) => {
                obj.insert(key.to_owned(), json(v));
            }
        }
    }
}

fn slot<T: Clone + std::fmt::Debug + 'static>(
    value: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Slot<T>> {
    proptest::prop_oneof![
        Just(Slot::Absent),
        Just(Slot::Null),
        value.prop_map(Slot::Value)
    ]
}

type GapSlots = (Slot<String>, Slot<i32>);

/// A `Holey` document as its slots.
#[derive(Debug, Clone)]
struct HoleySlots {
    note: Slot<String>,
    note_col: Slot<String>,
    num: Slot<i32>,
    gap: GapSlots,
    maybe_gap: Slot<GapSlots>,
    gaps: Vec<GapSlots>,
}

fn gap_of((note, n): &GapSlots) -> Gap {
    Gap {
        note: note.get(),
        n: n.get(),
    }
}

fn gap_json((note, n): &GapSlots) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    note.put(&mut obj, "note", |v| serde_json::json!(v));
    n.put(&mut obj, "n", |v| serde_json::json!(v));
    serde_json::Value::Object(obj)
}

impl HoleySlots {
    /// The document in Rust.
    fn doc(&self, id: i64) -> Holey {
        Holey {
            id,
            note: self.note.get(),
            note_col: self.note_col.get(),
            num: self.num.get(),
            gap: gap_of(&self.gap),
            maybe_gap: self.maybe_gap.get().map(|g| gap_of(&g)),
            gaps: self.gaps.iter().map(gap_of).collect(),
        }
    }

    /// The document as stored (it reads back as [`doc`](Self::doc)).
    fn json(&self, id: i64) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), serde_json::json!(id));
        self.note.put(&mut obj, "note", |v| serde_json::json!(v));
        self.note_col
            .put(&mut obj, "note_col", |v| serde_json::json!(v));
        self.num.put(&mut obj, "num", |v| serde_json::json!(v));
        obj.insert("gap".into(), gap_json(&self.gap));
        self.maybe_gap.put(&mut obj, "maybe_gap", gap_json);
        let gaps = self.gaps.iter().map(gap_json).collect();
        obj.insert("gaps".into(), serde_json::Value::Array(gaps));
        serde_json::Value::Object(obj)
    }
}

fn text() -> impl Strategy<Value = String> + Clone {
    proptest::sample::select(vec!["a".to_owned(), "b".to_owned()])
}

fn gap_slots() -> impl Strategy<Value = GapSlots> {
    (slot(text()), slot(1..3i32))
}

fn holey_slots() -> impl Strategy<Value = HoleySlots> {
    (
        (slot(text()), slot(text()), slot(1..3i32)),
        gap_slots(),
        slot(gap_slots()),
        proptest::collection::vec(gap_slots(), 0..3),
    )
        .prop_map(|((note, note_col, num), gap, maybe_gap, gaps)| HoleySlots {
            note,
            note_col,
            num,
            gap,
            maybe_gap,
            gaps,
        })
}

/// A test of an `Option` field.
#[derive(Debug, Clone)]
enum OptOp<T> {
    Eq(Option<T>),
    Ne(Option<T>),
    OneOf(Vec<Option<T>>),
    IsNone,
    IsSome,
}

fn opt_op<T: Clone + std::fmt::Debug + 'static>(
    value: impl Strategy<Value = T> + Clone + 'static,
) -> impl Strategy<Value = OptOp<T>> {
    let opt = || proptest::option::of(value.clone());
    proptest::prop_oneof![
        opt().prop_map(OptOp::Eq),
        opt().prop_map(OptOp::Ne),
        proptest::collection::vec(opt(), 0..3).prop_map(OptOp::OneOf),
        Just(OptOp::IsNone),
        Just(OptOp::IsSome),
    ]
}

fn opt_filter<R: 'static, T: Comparable + Clone>(
    f: &marten::query::Field<R, Option<T>>,
    op: &OptOp<T>,
) -> Filter<R> {
    match op {
        OptOp::Eq(v) => f.eq(v.clone()),
        OptOp::Ne(v) => f.ne(v.clone()),
        OptOp::OneOf(vs) => f.is_one_of(vs.clone()),
        OptOp::IsNone => f.is_none(),
        OptOp::IsSome => f.is_some(),
    }
}

/// A filter tree over `Holey`'s `Option` fields: a text field (0 `note`, 1 `note_col`,
/// 2 `gap.note`, 3 `maybe_gap.note`, 4 `gaps.any(note)`) or a number field (0 `num`,
/// 1 `gap.n`, 2 `maybe_gap.n`, 3 `gaps.any(n)`).
#[derive(Debug, Clone)]
enum HoleSpec {
    Text(u8, OptOp<String>),
    Number(u8, OptOp<i32>),
    And(Box<HoleSpec>, Box<HoleSpec>),
    Or(Box<HoleSpec>, Box<HoleSpec>),
    Not(Box<HoleSpec>),
}

fn hole_spec() -> impl Strategy<Value = HoleSpec> {
    let leaf = proptest::prop_oneof![
        (0..5u8, opt_op(text())).prop_map(|(t, op)| HoleSpec::Text(t, op)),
        (0..4u8, opt_op(1..3i32)).prop_map(|(t, op)| HoleSpec::Number(t, op)),
    ];
    leaf.prop_recursive(3, 8, 2, |inner| {
        proptest::prop_oneof![
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| HoleSpec::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| HoleSpec::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| HoleSpec::Not(Box::new(a))),
        ]
    })
}

/// A field of `Holey`'s `Option` struct `maybe_gap` (the derive follows nested structs,
/// not `Option` ones; the path API does): it has a value only when `maybe_gap` is `Some`.
fn maybe_gap_field<T: 'static>(
    key: &'static str,
    access: fn(&Gap) -> &Option<T>,
) -> marten::query::Field<Holey, Option<T>> {
    marten::__private::query::Base::<Holey, Holey>::root()
        .nested_option("maybe_gap", |h: &Holey| &h.maybe_gap)
        .field(key, None, access)
}

fn hole_filter(spec: &HoleSpec) -> Filter<Holey> {
    let f = Holey::fields();
    match spec {
        HoleSpec::Text(0, op) => opt_filter(&f.note, op),
        HoleSpec::Text(1, op) => opt_filter(&f.note_col, op),
        HoleSpec::Text(2, op) => opt_filter(&f.gap.note, op),
        HoleSpec::Text(3, op) => opt_filter(&maybe_gap_field("note", |g| &g.note), op),
        HoleSpec::Text(_, op) => {
            let op = op.clone();
            f.gaps.any(move |g| opt_filter(&g.note, &op))
        }
        HoleSpec::Number(0, op) => opt_filter(&f.num, op),
        HoleSpec::Number(1, op) => opt_filter(&f.gap.n, op),
        HoleSpec::Number(2, op) => opt_filter(&maybe_gap_field("n", |g| &g.n), op),
        HoleSpec::Number(_, op) => {
            let op = op.clone();
            f.gaps.any(move |g| opt_filter(&g.n, &op))
        }
        HoleSpec::And(a, b) => hole_filter(a).and(hole_filter(b)),
        HoleSpec::Or(a, b) => hole_filter(a).or(hole_filter(b)),
        HoleSpec::Not(a) => hole_filter(a).not(),
    }
}

/// The distinct values of `note`, `note_col`, `num` and `gap.note` among `docs`.
fn distinct_options(docs: &[&Holey]) -> [i64; 4] {
    fn count<T: Ord>(values: impl Iterator<Item = Option<T>>) -> i64 {
        values.flatten().collect::<BTreeSet<T>>().len() as i64
    }
    [
        count(docs.iter().map(|d| d.note.clone())),
        count(docs.iter().map(|d| d.note_col.clone())),
        count(docs.iter().map(|d| d.num)),
        count(docs.iter().map(|d| d.gap.note.clone())),
    ]
}

/// The property test of `tests/queries.rs`, over `Option`s that are missing from the
/// stored JSON as well as `null` (serde reads both as `None`): random documents, random
/// trees of `eq`, `ne`, `is_one_of`, `is_none`, `is_some` (and `and`, `or`, `not`) on the
/// `jsonb` value, a column, a nested struct, an `Option` struct and list elements; the
/// database finds what `Filter::matches` keeps of the documents read back, and counts
/// the distinct values of the matches as Rust does.
#[test]
fn option_fields_missing_from_the_json_match_rust_filters_on_random_documents() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (schema, b) = builder("ml_missing_option_prop");
    let store = rt.block_on(async { ok(b.document::<Holey>().build().await) });
    let raw = rt.block_on(schema.raw_client());
    let config = ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let checked = std::cell::Cell::new(0usize);
    let absent_seen = std::cell::Cell::new(0i64);
    proptest::proptest!(config, |(
        slots in proptest::collection::vec(holey_slots(), 0..16),
        specs in proptest::collection::vec(hole_spec(), 6),
    )| {
        let docs: Vec<Holey> = (0..).zip(&slots).map(|(i, sl)| sl.doc(i)).collect();
        let ids: Vec<i64> = docs.iter().map(|d| d.id).collect();
        let stored: Vec<serde_json::Value> = (0..).zip(&slots).map(|(i, sl)| sl.json(i)).collect();
        let (mut read, results) = rt.block_on(async {
            raw.execute("DELETE FROM mt_doc_holey", &[]).await.expect("clear");
            seed!(store, docs);
            // The JSON as the slots say: some keys missing, some `null`.
            raw.execute(
                "UPDATE mt_doc_holey AS t SET data = v.data \
                 FROM unnest($1::bigint[], $2::jsonb[]) AS v(id, data) WHERE t.id = v.id",
                &[&ids, &stored],
            )
            .await
            .expect("rewrite the JSON");
            let absent: i64 = raw
                .query_one("SELECT count(*) FROM mt_doc_holey WHERE NOT data ? 'note'", &[])
                .await
                .expect("count")
                .get(0);
            absent_seen.set(absent_seen.get() + absent);
            let mut s = store.query_session();
            let read = ok(s.query::<Holey>().to_list().await);
            let mut results = Vec::new();
            for sp in &specs {
                let filter = hole_filter(sp);
                let matching: Vec<&Holey> = read.iter().filter(|d| filter.matches(d)).collect();
                let want: Vec<i64> = expected(&read, |d| filter.matches(d));
                let found = ok(s.query::<Holey>().where_filter(filter.clone()).to_list().await);
                let counted = ok(s.query::<Holey>().where_filter(filter.clone()).count().await);
                macro_rules! q {
                    () => {
                        s.query::<Holey>().where_filter(filter.clone())
                    };
                }
                let distinct = [
                    ok(q!().count_distinct(|f| f.note).await),
                    ok(q!().count_distinct(|f| f.note_col).await),
                    ok(q!().count_distinct(|f| f.num).await),
                    ok(q!().count_distinct(|f| f.gap.note).await),
                ];
                results.push((
                    sp.clone(),
                    (sorted_keys(&found), counted, distinct),
                    (want.clone(), want.len() as i64, distinct_options(&matching)),
                ));
            }
            (read, results)
        });
        read.sort_by_key(|d| d.id);
        proptest::prop_assert_eq!(&read, &docs, "the stored JSON reads back as the documents");
        for (sp, got, want) in results {
            proptest::prop_assert_eq!(got, want, "filter {:?}", sp);
        }
        checked.set(checked.get() + specs.len());
    });
    assert!(checked.get() >= 40 * 6, "every case ran");
    assert!(absent_seen.get() > 0, "some documents miss a key");
}
