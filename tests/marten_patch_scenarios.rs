//! Patching behaviours Marten's own tests check (`src/PatchingTests`, and the `Bugs/`
//! tests about patches) that `tests/patching.rs` does not: chains of operations on one
//! field, exact float and wide-integer increments, keys missing from the stored JSON,
//! missing parent objects, serialized names with awkward characters, whole-object
//! comparisons in `append_if_missing` and `remove`, tagged-enum elements, unsetting by
//! filter, `any` filters over nested collections, concurrent patches, a large bundle of
//! operations over several types in one save, stores, deletes and patches of one id in
//! one save, duplicated (indexed / unique) columns, tenants, and the identity map after a
//! save that patched.
//!
//! Every expected document is computed in Rust from what the test stored, and compared
//! with what the database loads back.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::query::Filter;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// Serialized names with awkward characters
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct OddInner {
    #[serde(rename = "it's \"odd\" \\ {k}, ü")]
    odd_value: i64,
    #[serde(rename = "ключ 🔑")]
    label: String,
    #[serde(rename = "a.b")]
    dotted: Vec<String>,
    plain_count: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct CasedDoc {
    id: Uuid,
    some_number: i32,
    long_name_field: String,
    #[query(nested)]
    inner_thing: OddInner,
}

/// `PatchExpressionTests.check_camel_case_serialized_property` and
/// `patching_api.set_a_deep_property_by_id`: a patch names fields by their serialized
/// keys (`rename_all`, and `rename` with quotes, a backslash, braces, a comma, a dot and
/// non-ASCII letters), at the root and one level down; set, increment and append each
/// change exactly the renamed key.
#[tokio::test]
async fn serialized_names_with_awkward_characters_are_patched_in_place() {
    let (_schema, b) = builder("mp_keys");
    let store = ok(b.document::<CasedDoc>().build().await);
    let mut expected = CasedDoc {
        id: Uuid::now_v7(),
        some_number: 5,
        long_name_field: "before".into(),
        inner_thing: OddInner {
            odd_value: 40,
            label: "old".into(),
            dotted: vec!["x".into()],
            plain_count: 1,
        },
    };
    let mut s = store.lightweight_session();
    ok(s.store(expected.clone()));
    ok(s.save_changes().await);

    ok(s.patch::<CasedDoc>(&expected.id)
        .set(|f| f.some_number, 10)
        .set(|f| f.long_name_field, "it's \"after\"")
        .increment(|f| f.inner_thing.odd_value, 2)
        .set(|f| f.inner_thing.label, "新しい ключ")
        .append(|f| f.inner_thing.dotted, "y")
        .increment(|f| f.inner_thing.plain_count, 4)
        .queue());
    ok(s.save_changes().await);
    expected.some_number = 10;
    expected.long_name_field = "it's \"after\"".into();
    expected.inner_thing.odd_value = 42;
    expected.inner_thing.label = "新しい ключ".into();
    expected.inner_thing.dotted.push("y".into());
    expected.inner_thing.plain_count = 5;

    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<CasedDoc>(&expected.id).await),
        Some(expected.clone())
    );
    // The values sit under the serialized keys, and no key was added beside them.
    let under_keys = ok(q
        .query::<CasedDoc>()
        .where_sql(
            "d.data -> 'innerThing' ->> 'ключ 🔑' = $1 \
             AND (d.data -> 'innerThing' ->> 'it''s \"odd\" \\ {k}, ü')::bigint = $2 \
             AND d.data -> 'innerThing' -> 'a.b' = '[\"x\", \"y\"]'::jsonb \
             AND (SELECT count(*) FROM jsonb_object_keys(d.data -> 'innerThing')) = 4 \
             AND (SELECT count(*) FROM jsonb_object_keys(d.data)) = 4",
            ("新しい ключ".to_owned(), 42i64),
        )
        .count()
        .await);
    assert_eq!(under_keys, 1);
}

// ---------------------------------------------------------------------------------------
// Chains of operations in one patch, and several patches of one id in one save
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Tally {
    id: i64,
    number: i32,
    tags: Vec<String>,
    note: Option<String>,
}

fn tally(id: i64, number: i32) -> Tally {
    Tally {
        id,
        number,
        tags: vec!["a".into(), "b".into(), "a".into()],
        note: Some("n".into()),
    }
}

/// `patching_api.able_to_chain_patch_operations`: `Set(Number, 10)` then
/// `Increment(Number, 10)` in one patch gives 20 (each operation sees the previous one's
/// result). Also the other orders on one field: an increment then a set (the set wins),
/// an append then a remove of the same element (removed, with its older copies), a
/// remove then an append (one copy, at the end), set / unset / set of an `Option`, and
/// two patches of one id in one save (the second sees the first).
#[tokio::test]
async fn chained_operations_on_one_field_apply_in_order() {
    let (_schema, b) = builder("mp_chain");
    let store = ok(b.document::<Tally>().build().await);
    let docs: Vec<Tally> = (1..=5).map(|i| tally(i, 5)).collect();
    let mut s = store.lightweight_session();
    for d in &docs {
        ok(s.store(d.clone()));
    }
    ok(s.save_changes().await);

    ok(s.patch::<Tally>(&1)
        .set(|f| f.number, 10)
        .increment(|f| f.number, 10)
        .queue());
    ok(s.patch::<Tally>(&2)
        .increment(|f| f.number, 7)
        .set(|f| f.number, 3)
        .queue());
    ok(s.patch::<Tally>(&3)
        .append(|f| f.tags, "a")
        .remove(|f| f.tags, "a")
        .queue());
    ok(s.patch::<Tally>(&4)
        .remove(|f| f.tags, "a")
        .append(|f| f.tags, "a")
        .set(|f| f.note, Some("x".to_owned()))
        .unset(|f| f.note)
        .set(|f| f.note, Some("y".to_owned()))
        .queue());
    ok(s.patch::<Tally>(&5).increment(|f| f.number, 1).queue());
    ok(s.patch::<Tally>(&5)
        .append_if_missing(|f| f.tags, "c")
        .increment(|f| f.number, 1)
        .queue());
    ok(s.patch::<Tally>(&5)
        .append_if_missing(|f| f.tags, "c")
        .queue());
    ok(s.save_changes().await);

    let mut want = docs.clone();
    want[0].number = 20;
    want[1].number = 3;
    want[2].tags = vec!["b".into()];
    want[3].tags = vec!["b".into(), "a".into()];
    want[3].note = Some("y".into());
    want[4].number = 7;
    want[4].tags.push("c".into());
    let mut q = store.query_session();
    let mut loaded = ok(q.query::<Tally>().to_list().await);
    loaded.sort_by_key(|d| d.id);
    assert_eq!(loaded, want);
}

// ---------------------------------------------------------------------------------------
// Increments: floats and integers at their edges
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Measure {
    id: i64,
    double: f64,
    float: f32,
    neg: f64,
}

/// `patching_api.increment_for_double` (11.2 + 2.4 is 13.6), `increment_for_float`
/// (11.2f + 2.4f is 13.6f) and `increment_for_decimal` (a decimal sum): increments are
/// decimal sums, so three increments of 0.1 give 0.3 (not Rust's 0.30000000000000004),
/// and a negative amount subtracts.
#[tokio::test]
async fn float_increments_are_exact_decimal_sums() {
    let (_schema, b) = builder("mp_floats");
    let store = ok(b.document::<Measure>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Measure {
        id: 1,
        double: 11.2,
        float: 11.2,
        neg: 1.0,
    }));
    ok(s.store(Measure {
        id: 2,
        double: 0.0,
        float: 0.0,
        neg: -0.5,
    }));
    ok(s.save_changes().await);

    ok(s.patch::<Measure>(&1)
        .increment(|f| f.double, 2.4)
        .increment(|f| f.float, 2.4f32)
        .increment(|f| f.neg, -2.5)
        .queue());
    for _ in 0..3 {
        ok(s.patch::<Measure>(&2)
            .increment(|f| f.double, 0.1)
            .increment(|f| f.float, 0.1f32)
            .increment(|f| f.neg, -0.1)
            .queue());
    }
    ok(s.save_changes().await);

    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<Measure>(&1).await),
        Some(Measure {
            id: 1,
            double: 13.6,
            float: 13.6,
            neg: -1.5,
        })
    );
    assert_eq!(
        ok(q.load::<Measure>(&2).await),
        Some(Measure {
            id: 2,
            double: 0.3,
            float: 0.3,
            neg: -0.8,
        })
    );
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Widths {
    id: i64,
    small: i8,
    short: i16,
    byte: u8,
    int: i32,
    unsigned: u32,
    long: i64,
    huge: u64,
}

/// `patching_api.increment_for_int`, `increment_for_int_with_explicit_increment`,
/// `increment_for_long`: increments of every integer width, up to each type's maximum
/// (and down to `i64::MIN`), past 2^53 where a float sum would round.
#[tokio::test]
async fn integer_increments_are_exact_up_to_each_types_limits() {
    let (_schema, b) = builder("mp_ints");
    let store = ok(b.document::<Widths>().build().await);
    let first = Widths {
        id: 1,
        small: -128,
        short: 32_000,
        byte: 250,
        int: 6,
        unsigned: 4_000_000_000,
        long: i64::MAX - 10,
        huge: u64::MAX - 7,
    };
    let second = Widths {
        id: 2,
        small: 100,
        short: -32_000,
        byte: 5,
        int: -6,
        unsigned: 0,
        long: (1 << 53) + 1,
        huge: (1 << 53) + 1,
    };
    let third = Widths {
        long: i64::MIN + 5,
        ..second.clone()
    };
    let third = Widths { id: 3, ..third };
    let mut s = store.lightweight_session();
    for d in [&first, &second, &third] {
        ok(s.store(d.clone()));
    }
    ok(s.save_changes().await);

    ok(s.patch::<Widths>(&1)
        .increment(|f| f.small, 127)
        .increment(|f| f.short, 767)
        .increment(|f| f.byte, 5)
        .increment(|f| f.int, 1)
        .increment(|f| f.unsigned, 294_967_295)
        .increment(|f| f.long, 10)
        .increment(|f| f.huge, 7)
        .queue());
    ok(s.patch::<Widths>(&2)
        .increment(|f| f.small, -100)
        .increment(|f| f.short, -768)
        .increment(|f| f.byte, 5)
        .increment(|f| f.int, 3)
        .increment(|f| f.long, 2)
        .increment(|f| f.huge, 2)
        .queue());
    ok(s.patch::<Widths>(&3).increment(|f| f.long, -5).queue());
    ok(s.save_changes().await);

    let mut q = store.query_session();
    let want1 = Widths {
        id: 1,
        small: -1,
        short: i16::MAX,
        byte: u8::MAX,
        int: 7,
        unsigned: u32::MAX,
        long: i64::MAX,
        huge: u64::MAX,
    };
    let want2 = Widths {
        id: 2,
        small: 0,
        short: i16::MIN,
        byte: 10,
        int: -3,
        unsigned: 0,
        long: (1 << 53) + 3,
        huge: (1 << 53) + 3,
    };
    let want3 = Widths {
        id: 3,
        long: i64::MIN,
        ..third.clone()
    };
    assert_eq!(ok(q.load::<Widths>(&1).await), Some(want1));
    assert_eq!(ok(q.load::<Widths>(&2).await), Some(want2));
    assert_eq!(ok(q.load::<Widths>(&3).await), Some(want3));
}

// ---------------------------------------------------------------------------------------
// Keys missing from the stored JSON, and missing parent objects
// ---------------------------------------------------------------------------------------

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Meta {
    label: String,
    count: i32,
    #[serde(default)]
    items: Vec<String>,
}

impl Meta {
    fn is_blank(&self) -> bool {
        self == &Meta::default()
    }
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Sparse {
    id: i64,
    group: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    hits: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gone: Vec<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Meta::is_blank")]
    #[query(nested)]
    meta: Meta,
}

fn sparse(id: i64, group: &str) -> Sparse {
    Sparse {
        id,
        group: group.into(),
        hits: 0,
        tags: vec![],
        seen: vec![],
        gone: vec![],
        updated_at: None,
        meta: Meta::default(),
    }
}

async fn sparse_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Sparse>().build().await);
    (schema, store)
}

/// How many `Sparse` documents match a raw SQL condition.
async fn count_where(store: &DocumentStore, sql: &str) -> i64 {
    ok(store
        .query_session()
        .query::<Sparse>()
        .where_sql(sql, ())
        .count()
        .await)
}

/// `patching_api.increment_for_int` over Marten's `mt_jsonb_increment` (a missing value
/// counts as 0), `remove_primitive_element` (Marten's `mt_jsonb_remove` changes only an
/// array) and `append_to_a_primitive_array`: on keys the stored JSON lacks, `increment`
/// starts from 0, `append` / `append_if_missing` start a list (marten-rs's documented
/// rule), and `remove` changes nothing (the key stays absent).
#[tokio::test]
async fn operations_on_keys_missing_from_the_stored_json() {
    let (_schema, store) = sparse_store("mp_missing_keys").await;
    let mut s = store.lightweight_session();
    ok(s.store(sparse(1, "g")));
    ok(s.save_changes().await);
    assert_eq!(
        count_where(&store, "d.data = '{\"id\": 1, \"group\": \"g\"}'::jsonb").await,
        1
    );

    ok(s.patch::<Sparse>(&1)
        .increment(|f| f.hits, 5)
        .append(|f| f.tags, "a")
        .append_if_missing(|f| f.seen, "s")
        .append_if_missing(|f| f.seen, "s")
        .remove(|f| f.gone, 3)
        .queue());
    ok(s.save_changes().await);
    let mut want = sparse(1, "g");
    want.hits = 5;
    want.tags = vec!["a".into()];
    want.seen = vec!["s".into()];
    assert_eq!(
        ok(store.query_session().load::<Sparse>(&1).await),
        Some(want)
    );
    assert_eq!(count_where(&store, "NOT (d.data ? 'gone')").await, 1);
}

/// `patching_api.initialise_a_new_property_by_expression`: a patch by a raw SQL filter
/// (`(data ->> 'UpdatedAt') is null`) sets a key every match lacks; afterwards the
/// filter matches nothing, and a document that already had the key keeps its value.
#[tokio::test]
async fn patch_where_initialises_a_key_missing_from_every_match() {
    let (_schema, store) = sparse_store("mp_initialise").await;
    let mut s = store.lightweight_session();
    let mut docs: Vec<Sparse> = (1..=3).map(|i| sparse(i, "g")).collect();
    let mut dated = sparse(4, "g");
    dated.updated_at = Some("old".into());
    docs.push(dated);
    for d in &docs {
        ok(s.store(d.clone()));
    }
    ok(s.save_changes().await);
    let missing = "(d.data ->> 'updated_at') IS NULL";
    assert_eq!(count_where(&store, missing).await, 3);

    let stamp = "2024-05-01T10:00:00Z".to_owned();
    ok(s.patch_where::<Sparse>(Filter::raw(missing, vec![]))
        .set(|f| f.updated_at, Some(stamp.clone()))
        .queue());
    ok(s.save_changes().await);
    assert_eq!(count_where(&store, missing).await, 0);
    for d in docs.iter_mut().filter(|d| d.updated_at.is_none()) {
        d.updated_at = Some(stamp.clone());
    }
    let mut loaded = ok(store.query_session().query::<Sparse>().to_list().await);
    loaded.sort_by_key(|d| d.id);
    assert_eq!(loaded, docs);
}

/// `patching_api.set_a_deep_property_by_id` and `increment_for_int` on a path whose
/// parent object is missing: Marten's `set` and `increment` are `jsonb_set`, which
/// leaves the document as it is when a parent is missing, and so does marten-rs (its
/// documented rule). The same operations on a document that has the parent change it.
#[tokio::test]
async fn nested_operations_under_a_missing_parent_change_nothing() {
    let (_schema, store) = sparse_store("mp_missing_parent").await;
    let mut s = store.lightweight_session();
    let bare = sparse(1, "g");
    let mut full = sparse(2, "g");
    full.meta = Meta {
        label: "m".into(),
        count: 1,
        items: vec![],
    };
    ok(s.store(bare.clone()));
    ok(s.store(full.clone()));
    ok(s.save_changes().await);
    assert_eq!(count_where(&store, "d.data ? 'meta'").await, 1);

    for id in [1, 2] {
        ok(s.patch::<Sparse>(&id)
            .set(|f| f.meta.label, "set")
            .increment(|f| f.meta.count, 2)
            .append(|f| f.meta.items, "i")
            .queue());
    }
    ok(s.save_changes().await);
    full.meta = Meta {
        label: "set".into(),
        count: 3,
        items: vec!["i".into()],
    };
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Sparse>(&1).await), Some(bare));
    assert_eq!(ok(q.load::<Sparse>(&2).await), Some(full));
    assert_eq!(
        count_where(&store, "d.id = 1 AND NOT (d.data ? 'meta')").await,
        1
    );
}

// ---------------------------------------------------------------------------------------
// Collections of objects: append_if_missing and remove compare whole JSON values
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Child {
    id: i32,
    color: String,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Line {
    sku: String,
    qty: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Family {
    id: Uuid,
    children: Vec<Child>,
    raw: Vec<serde_json::Value>,
}

fn child(id: i32, color: &str) -> Child {
    Child {
        id,
        color: color.into(),
    }
}

/// `patching_api.append_complex_element`, `append_if_not_exists_complex_element`: an
/// object appended once is not appended again by `append_if_missing` (across saves and
/// within one), an object differing in one field is, and JSON objects equal up to key
/// order count as equal (marten-rs compares whole JSON values, so a strict subset of an
/// element's keys is a different element).
#[tokio::test]
async fn append_if_missing_compares_whole_objects() {
    let (_schema, b) = builder("mp_append_objects");
    let store = ok(b.document::<Family>().build().await);
    let mut want = Family {
        id: Uuid::now_v7(),
        children: vec![child(1, "Blue")],
        raw: vec![serde_json::json!({"a": 1, "b": [1, 2]})],
    };
    let id = want.id;
    let mut s = store.lightweight_session();
    ok(s.store(want.clone()));
    ok(s.save_changes().await);

    ok(s.patch::<Family>(&id)
        .append(|f| f.children, child(2, "Green"))
        .queue());
    ok(s.save_changes().await);
    ok(s.patch::<Family>(&id)
        .append_if_missing(|f| f.children, child(2, "Green"))
        .append_if_missing(|f| f.children, child(1, "Blue"))
        .append_if_missing(|f| f.raw, serde_json::json!({"b": [1, 2], "a": 1}))
        .queue());
    ok(s.save_changes().await);
    want.children.push(child(2, "Green"));
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Family>(&id).await), Some(want.clone()));

    ok(s.patch::<Family>(&id)
        .append_if_missing(|f| f.children, child(2, "Red"))
        .append_if_missing(|f| f.children, child(3, "Red"))
        .append_if_missing(|f| f.children, child(3, "Red"))
        .append_if_missing(|f| f.raw, serde_json::json!({"a": 1}))
        .queue());
    ok(s.save_changes().await);
    want.children.push(child(2, "Red"));
    want.children.push(child(3, "Red"));
    want.raw.push(serde_json::json!({"a": 1}));
    assert_eq!(ok(q.load::<Family>(&id).await), Some(want));
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Bag {
    id: i64,
    numbers: Vec<i32>,
    lines: Vec<Line>,
    words: Vec<String>,
}

/// `patching_api.remove_primitive_element`, `remove_repeated_primitive_elements`
/// (`RemoveAction.RemoveAll`) and `remove_complex_element`: `remove` takes out every
/// element equal to the value (marten-rs's `remove` is Marten's `RemoveAll`), compares
/// objects by all their fields, keeps the others in their order, leaves `[]` when it
/// removes the last element, and changes nothing for a value not in the list.
#[tokio::test]
async fn remove_takes_out_every_equal_element() {
    let (_schema, b) = builder("mp_remove");
    let store = ok(b.document::<Bag>().build().await);
    let line = |sku: &str, qty: i32| Line {
        sku: sku.into(),
        qty,
    };
    let bag = Bag {
        id: 1,
        numbers: vec![1, 2, 1, 3, 1],
        lines: vec![line("A", 1), line("B", 2), line("A", 2), line("A", 1)],
        words: vec!["only".into()],
    };
    let mut s = store.lightweight_session();
    ok(s.store(bag.clone()));
    ok(s.save_changes().await);

    ok(s.patch::<Bag>(&1)
        .remove(|f| f.numbers, 1)
        .remove(|f| f.lines, line("A", 1))
        .remove(|f| f.words, "only")
        .remove(|f| f.words, "zzz")
        .queue());
    ok(s.save_changes().await);
    let mut want = bag.clone();
    want.numbers.retain(|n| *n != 1);
    want.lines.retain(|l| l != &line("A", 1));
    want.words.clear();
    assert_eq!(want.numbers, [2, 3]);
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Bag>(&1).await), Some(want.clone()));

    ok(s.patch::<Bag>(&1)
        .remove(|f| f.numbers, 9)
        .remove(|f| f.lines, line("B", 3))
        .remove(|f| f.words, "zzz")
        .queue());
    ok(s.save_changes().await);
    assert_eq!(ok(q.load::<Bag>(&1).await), Some(want));
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind")]
enum Item {
    Plain { name: String },
    Colored { name: String, color: String },
    Numbered { name: String, number: i32 },
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ItemGroup {
    id: Uuid,
    items: Vec<Item>,
}

/// `PatchExpressionTests.can_append_with_sub_types_in_collection` and
/// `can_append_if_not_exists_with_sub_types_in_collection`: three patches of one
/// document in one save append elements of three shapes (here a tagged enum's variants)
/// in queue order; `append_if_missing` of the same elements adds nothing, and of a
/// variant equal in all but one field adds it.
#[tokio::test]
async fn appends_of_several_element_shapes_keep_queue_order() {
    let (_schema, b) = builder("mp_subtypes");
    let store = ok(b.document::<ItemGroup>().build().await);
    let group = ItemGroup {
        id: Uuid::now_v7(),
        items: vec![],
    };
    let id = group.id;
    let mut s = store.lightweight_session();
    ok(s.store(group));
    ok(s.save_changes().await);

    let items = vec![
        Item::Plain { name: "One".into() },
        Item::Colored {
            name: "Two".into(),
            color: "Blue".into(),
        },
        Item::Numbered {
            name: "Three".into(),
            number: 3,
        },
    ];
    for item in &items {
        ok(s.patch::<ItemGroup>(&id)
            .append(|f| f.items, item.clone())
            .queue());
    }
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<ItemGroup>(&id).await),
        Some(ItemGroup {
            id,
            items: items.clone()
        })
    );

    for item in items.iter().rev() {
        ok(s.patch::<ItemGroup>(&id)
            .append_if_missing(|f| f.items, item.clone())
            .queue());
    }
    let red = Item::Colored {
        name: "Two".into(),
        color: "Red".into(),
    };
    ok(s.patch::<ItemGroup>(&id)
        .append_if_missing(|f| f.items, red.clone())
        .queue());
    ok(s.save_changes().await);
    let mut want = items;
    want.push(red);
    assert_eq!(
        ok(q.load::<ItemGroup>(&id).await),
        Some(ItemGroup { id, items: want })
    );
}

// ---------------------------------------------------------------------------------------
// Unsetting, nullable fields, filters over nested collections
// ---------------------------------------------------------------------------------------

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Contact {
    email: Option<String>,
    phone: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Profile {
    id: i64,
    group: String,
    note: Option<String>,
    #[query(nested)]
    contact: Contact,
    ref_id: Option<Uuid>,
}

/// `patching_api.delete_property_from_many_documents`, `delete_redundant_nested_property`
/// and `PatchExpressionTests.can_patch_nullable_field`: one patch by filter clears an
/// optional field and an optional nested field on every match (15 documents) and no
/// other; patches by id set a `None` `Option<Uuid>` to a value and a set one to `None`.
#[tokio::test]
async fn unset_by_filter_on_many_documents_and_nullable_fields_by_id() {
    let (_schema, b) = builder("mp_unset");
    let store = ok(b.document::<Profile>().build().await);
    let mut docs: Vec<Profile> = (1..=20)
        .map(|i| Profile {
            id: i,
            group: if i <= 15 { "drop" } else { "keep" }.into(),
            note: Some(format!("note {i}")),
            contact: Contact {
                email: Some(format!("{i}@example.com")),
                phone: format!("555-{i}"),
            },
            ref_id: (i % 2 == 0).then(Uuid::now_v7),
        })
        .collect();
    let mut s = store.lightweight_session();
    for d in &docs {
        ok(s.store(d.clone()));
    }
    ok(s.save_changes().await);

    ok(s.patch_where::<Profile>(Profile::fields().group.eq("drop"))
        .unset(|f| f.note)
        .unset(|f| f.contact.email)
        .queue());
    let fresh = Uuid::now_v7();
    ok(s.patch::<Profile>(&17)
        .set(|f| f.ref_id, Some(fresh))
        .queue());
    ok(s.patch::<Profile>(&18)
        .set(|f| f.ref_id, None::<Uuid>)
        .queue());
    ok(s.save_changes().await);
    for d in docs.iter_mut().filter(|d| d.group == "drop") {
        d.note = None;
        d.contact.email = None;
    }
    docs[16].ref_id = Some(fresh);
    docs[17].ref_id = None;

    let mut q = store.query_session();
    let mut loaded = ok(q.query::<Profile>().to_list().await);
    loaded.sort_by_key(|d| d.id);
    assert_eq!(loaded, docs);
    let with_note = ok(q
        .query::<Profile>()
        .filter(|f| f.note.is_some())
        .count()
        .await);
    assert_eq!(with_note, 5);
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Kid {
    name: String,
    color: String,
}

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Household {
    children: Vec<Kid>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Target {
    id: Uuid,
    long: i64,
    #[query(nested)]
    inner: Household,
}

/// `Bug_2170_patch_with_sub_collection_query`: 50 bulk-inserted documents; a patch by
/// a filter with `any` over a collection inside a nested object (`Inner.Children.Any(t
/// => t.Color == Blue)`) sets `Long` on exactly the documents with a blue child.
#[tokio::test]
async fn patch_where_with_any_over_a_nested_collection() {
    let (_schema, b) = builder("mp_any");
    let store = ok(b.document::<Target>().build().await);
    let colors = ["Blue", "Green", "Red"];
    let mut docs: Vec<Target> = (0..50)
        .map(|i: usize| Target {
            id: Uuid::now_v7(),
            long: i as i64,
            inner: Household {
                children: (0..(i % 4))
                    .map(|k| Kid {
                        name: format!("kid {i}/{k}"),
                        color: colors[(i * 7 + k * 5) % 3].into(),
                    })
                    .collect(),
            },
        })
        .collect();
    let blue = |d: &Target| d.inner.children.iter().any(|k| k.color == "Blue");
    let matching = docs.iter().filter(|d| blue(d)).count();
    assert!(matching > 0 && matching < docs.len(), "{matching}");
    assert_eq!(
        ok(store.bulk_insert(docs.clone(), BulkMode::InsertOnly).await),
        50
    );

    let mut s = store.lightweight_session();
    ok(
        s.patch_where::<Target>(Target::fields().inner.children.any(|k| k.color.eq("Blue")))
            .set(|f| f.long, 33333)
            .queue(),
    );
    ok(s.save_changes().await);
    for d in docs.iter_mut().filter(|d| blue(d)) {
        d.long = 33333;
    }
    docs.sort_by_key(|d| d.id);
    let mut loaded = ok(store.query_session().query::<Target>().to_list().await);
    loaded.sort_by_key(|d| d.id);
    assert_eq!(loaded, docs);
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct ItemForPatching {
    id: Uuid,
    number: i32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Hits {
    id: String,
    n: i64,
    who: Vec<i64>,
}

/// `Bug_2460_parallel_patching`: 50 documents, each patched by its own session at the
/// same time, all end with the patched value. And 25 sessions incrementing and appending
/// to one numeric document at once: no update is lost (each patch reads and writes the
/// row in one statement) and the revision moves once per patch.
#[tokio::test]
async fn concurrent_patches_lose_no_update() {
    let (_schema, b) = builder("mp_parallel");
    let store = ok(b
        .document::<ItemForPatching>()
        .document::<Hits>()
        .pool_size(16)
        .build()
        .await);
    let items: Vec<ItemForPatching> = (0..50)
        .map(|i| ItemForPatching {
            id: Uuid::now_v7(),
            number: i,
        })
        .collect();
    let mut s = store.lightweight_session();
    for i in &items {
        ok(s.store(i.clone()));
    }
    let hits_id = "hits".to_owned();
    ok(s.store(Hits {
        id: hits_id.clone(),
        n: 0,
        who: vec![],
    }));
    ok(s.save_changes().await);

    let mut tasks = Vec::new();
    for item in &items {
        let store = store.clone();
        let id = item.id;
        tasks.push(tokio::spawn(async move {
            let mut s = store.lightweight_session();
            s.patch::<ItemForPatching>(&id)
                .set(|f| f.number, 1337)
                .queue()?;
            s.save_changes().await
        }));
    }
    for k in 0..25i64 {
        let store = store.clone();
        let id = hits_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = store.lightweight_session();
            s.patch::<Hits>(&id)
                .increment(|f| f.n, 1)
                .append(|f| f.who, k)
                .queue()?;
            s.save_changes().await
        }));
    }
    for t in futures_util::future::join_all(tasks).await {
        match t {
            Ok(r) => ok(r),
            Err(e) => panic!("task: {e}"),
        }
    }

    let mut q = store.query_session();
    let patched = ok(q
        .query::<ItemForPatching>()
        .filter(|f| f.number.eq(1337))
        .count()
        .await);
    assert_eq!(patched, 50);
    let mut hits = ok(q.load::<Hits>(&hits_id).await).expect("stored");
    hits.who.sort_unstable();
    assert_eq!(
        hits,
        Hits {
            id: hits_id.clone(),
            n: 25,
            who: (0..25).collect(),
        }
    );
    assert_eq!(
        ok(q.metadata::<Hits>(&hits_id).await)
            .expect("meta")
            .version,
        26
    );
}

// ---------------------------------------------------------------------------------------
// Many operations over several types in one save
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct StageDoc {
    id: Uuid,
    object_id: Uuid,
    definition_id: i32,
    stage: i32,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Definition {
    id: Uuid,
    object_id: Uuid,
    definition_id: i32,
    stages: i32,
    bool1: bool,
    bool2: bool,
    mode: String,
    fields1: String,
    attr: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Content {
    id: Uuid,
    content: String,
}

/// `PatchExpressionTests.save_large_bundle_of_operations`: one save holding deletes by
/// filter and patches by filter on several types, eight patches by the same filter each
/// setting one field, seventeen patches of ids that do not exist, and one of an id that
/// does. The save succeeds and each document ends as the operations say.
#[tokio::test]
async fn a_large_bundle_of_patches_and_deletes_over_several_types() {
    let (_schema, b) = builder("mp_bundle");
    let store = ok(b
        .document::<StageDoc>()
        .document::<Definition>()
        .document::<Content>()
        .build()
        .await);
    let (id1, id2) = (Uuid::now_v7(), Uuid::now_v7());
    let mut stages = Vec::new();
    let mut definitions = Vec::new();
    for object_id in [id1, id2] {
        for definition_id in 1..=2 {
            for stage in 1..=3 {
                stages.push(StageDoc {
                    id: Uuid::now_v7(),
                    object_id,
                    definition_id,
                    stage,
                    name: format!("s{stage}"),
                });
            }
            definitions.push(Definition {
                id: Uuid::now_v7(),
                object_id,
                definition_id,
                stages: 3,
                bool1: false,
                bool2: false,
                mode: "Manual".into(),
                fields1: "x".into(),
                attr: "a".into(),
            });
        }
    }
    let existing = Content {
        id: Uuid::now_v7(),
        content: "before".into(),
    };
    let mut s = store.lightweight_session();
    for d in &stages {
        ok(s.store(d.clone()));
    }
    for d in &definitions {
        ok(s.store(d.clone()));
    }
    ok(s.store(existing.clone()));
    ok(s.save_changes().await);

    let sf = StageDoc::fields();
    ok(s.delete_where::<StageDoc>(
        sf.object_id
            .eq(id1)
            .and(sf.definition_id.eq(1))
            .and(sf.stage.gt(1)),
    ));
    ok(s.patch_where::<StageDoc>(
        sf.object_id
            .eq(id1)
            .and(sf.definition_id.eq(1))
            .and(sf.stage.eq(1)),
    )
    .set(|f| f.name, "Matrix 1")
    .queue());
    let df = Definition::fields();
    let def = || df.object_id.eq(id1).and(df.definition_id.eq(1));
    ok(s.patch_where::<Definition>(def())
        .set(|f| f.stages, 1)
        .queue());
    ok(s.patch_where::<Definition>(def())
        .set(|f| f.bool1, true)
        .queue());
    ok(s.patch_where::<Definition>(def())
        .set(|f| f.bool2, true)
        .queue());
    ok(s.patch_where::<Definition>(def())
        .set(|f| f.mode, "Automatic")
        .queue());
    ok(s.patch_where::<Definition>(def())
        .set(|f| f.fields1, "||")
        .queue());
    ok(s.patch_where::<Definition>(def())
        .set(|f| f.attr, "|gwk-id|pt-id|")
        .queue());
    ok(s.patch_where::<Definition>(def())
        .set(|f| f.fields1, "")
        .queue());
    ok(s.patch_where::<Definition>(def())
        .increment(|f| f.stages, 1)
        .queue());
    let missing: Vec<Uuid> = (0..17).map(|_| Uuid::now_v7()).collect();
    for (i, id) in missing.iter().enumerate() {
        ok(s.patch::<Content>(id)
            .set(|f| f.content, format!("test{}", i + 1))
            .queue());
    }
    ok(s.patch::<Content>(&existing.id)
        .set(|f| f.content, "after")
        .queue());
    ok(s.save_changes().await);

    stages.retain(|d| !(d.object_id == id1 && d.definition_id == 1 && d.stage > 1));
    for d in stages
        .iter_mut()
        .filter(|d| d.object_id == id1 && d.definition_id == 1 && d.stage == 1)
    {
        d.name = "Matrix 1".into();
    }
    for d in definitions
        .iter_mut()
        .filter(|d| d.object_id == id1 && d.definition_id == 1)
    {
        d.stages = 2;
        d.bool1 = true;
        d.bool2 = true;
        d.mode = "Automatic".into();
        d.fields1 = String::new();
        d.attr = "|gwk-id|pt-id|".into();
    }
    let mut q = store.query_session();
    let mut got_stages = ok(q.query::<StageDoc>().to_list().await);
    got_stages.sort_by_key(|d| d.id);
    stages.sort_by_key(|d| d.id);
    assert_eq!(got_stages, stages);
    let mut got_defs = ok(q.query::<Definition>().to_list().await);
    got_defs.sort_by_key(|d| d.id);
    definitions.sort_by_key(|d| d.id);
    assert_eq!(got_defs, definitions);
    assert_eq!(
        ok(q.query::<Content>().to_list().await),
        [Content {
            id: existing.id,
            content: "after".into()
        }]
    );
}

// ---------------------------------------------------------------------------------------
// Stores, deletes and patches of one id in one save; versions and the identity map
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Revised {
    id: i64,
    name: String,
    amount: i64,
}

fn revised(id: i64, name: &str) -> Revised {
    Revised {
        id,
        name: name.into(),
        amount: 10,
    }
}

/// `PatchExpressionTests.Patch_And_Load_Should_Return_Non_Stale_Result`,
/// `patching_api.increment_for_decimal` (a store and a patch of a new document in one
/// save) and `Bug_3261_patch_plus_revisions` (patches of a numeric-revision document):
/// a store followed by two patches in one save leaves the patched document, at revision
/// 3, which a query, a load in the same identity session and the session's known version
/// all see (a later store from the session passes its version check). In the same save,
/// a delete then a patch then a store of another id leaves the stored document (the
/// patch found nothing), and a patch then a delete of a third leaves nothing.
#[tokio::test]
async fn stores_deletes_and_patches_of_one_id_apply_in_queue_order() {
    let (_schema, b) = builder("mp_store_patch");
    let store = ok(b.document::<Revised>().build().await);
    let mut seed = store.lightweight_session();
    ok(seed.store(revised(2, "two")));
    ok(seed.store(revised(3, "three")));
    ok(seed.save_changes().await);

    let mut s = store.identity_session();
    ok(s.store(revised(1, "foo")));
    ok(s.patch::<Revised>(&1).set(|f| f.name, "bar").queue());
    ok(s.patch::<Revised>(&1).increment(|f| f.amount, 2).queue());
    ok(s.delete::<Revised>(&2));
    ok(s.patch::<Revised>(&2).increment(|f| f.amount, 100).queue());
    ok(s.store(revised(2, "two again")));
    ok(s.patch::<Revised>(&3).set(|f| f.name, "patched").queue());
    ok(s.delete::<Revised>(&3));
    ok(s.save_changes().await);

    let want = Revised {
        id: 1,
        name: "bar".into(),
        amount: 12,
    };
    let names = ok(s
        .query::<Revised>()
        .filter(|f| f.id.eq(1))
        .select(|f| f.name)
        .to_list()
        .await);
    assert_eq!(names, ["bar"]);
    assert_eq!(ok(s.load::<Revised>(&1).await), Some(want.clone()));
    let mut q = store.query_session();
    assert_eq!(
        ok(q.metadata::<Revised>(&1).await).expect("meta").version,
        3
    );
    assert_eq!(s.version_of::<Revised>(&1), Some(3));
    assert_eq!(
        ok(q.load::<Revised>(&2).await),
        Some(revised(2, "two again"))
    );
    assert_eq!(ok(q.load::<Revised>(&3).await), None);

    let mut changed = want;
    changed.name = "stored".into();
    ok(s.store(changed.clone()));
    ok(s.save_changes().await);
    assert_eq!(ok(q.load::<Revised>(&1).await), Some(changed));
    assert_eq!(
        ok(q.metadata::<Revised>(&1).await).expect("meta").version,
        4
    );
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Note {
    id: Uuid,
    text: String,
    count: i64,
}

/// Marten ejects every document of a patched type from the session after a save
/// (`DocumentSessionBase.SaveChanges`: `EjectPatchedTypes`), so what
/// `PatchExpressionTests.Patch_And_Load_Should_Return_Non_Stale_Result` checks holds
/// however the loads interleave: a document loaded into dirty tracking (or the identity
/// map) after its patch was queued but before the save is read afresh after the save.
/// A change to the loaded copy, saved later, keeps the patched fields (the patch is not
/// lost to a stale tracked copy), and an identity session's next load sees the patch.
#[tokio::test]
async fn a_load_between_a_patch_and_its_save_is_not_served_stale_afterwards() {
    let (_schema, b) = builder("mp_identity");
    let store = ok(b.document::<Note>().build().await);
    let doc = Note {
        id: Uuid::now_v7(),
        text: "before".into(),
        count: 0,
    };
    let mut seed = store.lightweight_session();
    ok(seed.store(doc.clone()));
    ok(seed.save_changes().await);

    let mut d = store.dirty_tracked_session();
    ok(d.patch::<Note>(&doc.id).set(|f| f.text, "patched").queue());
    assert_eq!(
        ok(d.load::<Note>(&doc.id).await).map(|n| n.text.clone()),
        Some("before".to_owned())
    );
    ok(d.save_changes().await);
    if let Some(tracked) = ok(d.load::<Note>(&doc.id).await) {
        tracked.count += 100;
    }
    ok(d.save_changes().await);
    let mut want = Note {
        id: doc.id,
        text: "patched".into(),
        count: 100,
    };
    assert_eq!(
        ok(store.query_session().load::<Note>(&doc.id).await),
        Some(want.clone()),
        "the dirty-tracked session's later save keeps the patch"
    );

    let mut s = store.identity_session();
    ok(s.patch::<Note>(&doc.id).increment(|f| f.count, 1).queue());
    assert_eq!(ok(s.load::<Note>(&doc.id).await), Some(want.clone()));
    ok(s.save_changes().await);
    want.count = 101;
    assert_eq!(
        ok(s.load::<Note>(&doc.id).await),
        Some(want),
        "identity session after the save"
    );
}

// ---------------------------------------------------------------------------------------
// Duplicated columns
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Account {
    id: Uuid,
    #[document(unique)]
    email: String,
    #[document(index)]
    score: i64,
    other: i32,
}

/// `patching_api.bug_611_duplicate_field_is_updated_by_set_operation` and
/// `..._with_multiple_duplicates_smoke_test`, `duplicated_fields_only_update_when_source_is_modified`:
/// the duplicated columns of a unique string and an indexed number follow `set` and
/// `increment` (queries on them, which use the columns, find the new values and not the
/// old), a patch of another field leaves them as they were, and a patch that would
/// duplicate a unique value is a `UniqueViolation` that writes nothing of its save.
#[tokio::test]
async fn duplicated_columns_follow_patches_and_unique_ones_are_enforced() {
    let (schema, b) = builder("mp_columns");
    let store = ok(b.document::<Account>().build().await);
    let a = Account {
        id: Uuid::now_v7(),
        email: "a@example.com".into(),
        score: 10,
        other: 0,
    };
    let bee = Account {
        id: Uuid::now_v7(),
        email: "b@example.com".into(),
        score: 20,
        other: 0,
    };
    let mut s = store.lightweight_session();
    ok(s.store(a.clone()));
    ok(s.store(bee.clone()));
    ok(s.save_changes().await);

    ok(s.patch::<Account>(&a.id)
        .set(|f| f.email, "moon@example.com")
        .increment(|f| f.score, 5)
        .queue());
    ok(s.save_changes().await);
    ok(s.patch::<Account>(&a.id).set(|f| f.other, 42).queue());
    ok(s.save_changes().await);
    let want = Account {
        id: a.id,
        email: "moon@example.com".into(),
        score: 15,
        other: 42,
    };
    let mut q = store.query_session();
    let by_email = ok(q
        .query::<Account>()
        .filter(|f| f.email.eq("moon@example.com").and(f.score.eq(15)))
        .to_list()
        .await);
    assert_eq!(by_email, std::slice::from_ref(&want));
    let old = ok(q
        .query::<Account>()
        .filter(|f| f.email.eq("a@example.com").or(f.score.eq(10)))
        .count()
        .await);
    assert_eq!(old, 0);
    // The columns themselves, read directly.
    let client = schema.raw_client().await;
    let row = client
        .query_one(
            "SELECT mt_f_email, mt_f_score FROM mt_doc_account WHERE id::text = $1",
            &[&a.id.to_string()],
        )
        .await
        .expect("the row");
    let (email, score): (String, i64) = (row.get(0), row.get(1));
    assert_eq!((email.as_str(), score), ("moon@example.com", 15));

    let bystander = Account {
        id: Uuid::now_v7(),
        email: "c@example.com".into(),
        score: 1,
        other: 0,
    };
    ok(s.store(bystander.clone()));
    ok(s.patch::<Account>(&bee.id)
        .set(|f| f.email, "moon@example.com")
        .queue());
    match s.save_changes().await {
        Err(Error::UniqueViolation {
            document_type,
            field,
            ..
        }) => assert_eq!((document_type, field.as_str()), ("Account", "email")),
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert_eq!(ok(q.load::<Account>(&bystander.id).await), None);
    assert_eq!(ok(q.load::<Account>(&bee.id).await), Some(bee));
    assert_eq!(ok(q.load::<Account>(&a.id).await), Some(want));
}

// ---------------------------------------------------------------------------------------
// Values with special characters and numbers at their edges
// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct TypeB {
    name: String,
    tags: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Values {
    id: String,
    text: String,
    big: u64,
    neg: i64,
    real: f64,
    small: f64,
    type_b: TypeB,
    items: Vec<String>,
    maybe: Option<TypeB>,
}

/// `patching_api.set_an_immediate_property_by_id`, `Bug_1173_patch_typenamehandling_bug`
/// (setting a whole object), `Bug_5076_lazy_enumerable_round_trip`
/// (`can_read_back_after_patching_with_a_lazy_sequence`: setting a whole collection) and
/// `can_patch_nullable_field`: `set` of text with quotes, backslashes, `$1`, `%s`,
/// control characters, emoji, right-to-left and combining characters; of `u64::MAX`,
/// `i64::MIN`, 1e300 and 1e-300; of a whole object, a whole list and an optional object,
/// each read back equal to what was set, and equal to a stored document of the same
/// values.
#[tokio::test]
async fn set_values_with_special_characters_and_edge_numbers() {
    let (_schema, b) = builder("mp_values");
    let store = ok(b.document::<Values>().build().await);
    let id = "it's \"1\" \\ 🎉".to_owned();
    let before = Values {
        id: id.clone(),
        text: "plain".into(),
        big: 0,
        neg: 0,
        real: 0.0,
        small: 0.0,
        type_b: TypeB {
            name: "test".into(),
            tags: vec![],
        },
        items: vec!["original".into()],
        maybe: None,
    };
    let mut s = store.lightweight_session();
    ok(s.store(before.clone()));
    ok(s.save_changes().await);

    let text = "emoji 🎉👩‍👩‍👧, RTL שלום, e\u{301}, \u{1}\u{1f}\t\n, \\ \" ' $1 %s {} [] \u{2028}";
    let want = Values {
        id: id.clone(),
        text: text.into(),
        big: u64::MAX,
        neg: i64::MIN,
        real: 1e300,
        small: -1e-300,
        type_b: TypeB {
            name: "test2 \"quoted\"".into(),
            tags: vec!["x".into(), "".into()],
        },
        items: vec!["a".into(), "b".into()],
        maybe: Some(TypeB {
            name: "ü".into(),
            tags: vec![],
        }),
    };
    ok(s.patch::<Values>(&id)
        .set(|f| f.text, text)
        .set(|f| f.big, u64::MAX)
        .set(|f| f.neg, i64::MIN)
        .set(|f| f.real, 1e300)
        .set(|f| f.small, -1e-300)
        .set(|f| f.type_b, want.type_b.clone())
        .set(
            |f| f.items,
            ["a", "b", "skip"]
                .into_iter()
                .filter(|x| *x != "skip")
                .map(String::from)
                .collect::<Vec<_>>(),
        )
        .set(|f| f.maybe, want.maybe.clone())
        .queue());
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Values>(&id).await), Some(want.clone()));

    // The same values stored, not patched, read back the same.
    let stored = Values {
        id: "stored".into(),
        ..want.clone()
    };
    ok(s.store(stored.clone()));
    ok(s.save_changes().await);
    assert_eq!(ok(q.load::<Values>(&stored.id).await), Some(stored));

    // And back: a whole optional object to None.
    ok(s.patch::<Values>(&id)
        .set(|f| f.maybe, None::<TypeB>)
        .queue());
    ok(s.save_changes().await);
    let mut unset = want;
    unset.maybe = None;
    assert_eq!(ok(q.load::<Values>(&id).await), Some(unset));
}

// ---------------------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------------------

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(optimistic)]
struct User {
    id: Uuid,
    user_name: String,
    first_name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
#[concurrency(numeric)]
struct DocDto {
    id: i64,
    name: String,
}

/// `multi_tenancy.patching_respects_tenancy_too` and `patching_respects_tenancy_too_2`
/// (a document stored in tenant Red is not changed by patches from tenant Green, by id or
/// by filter, nor is a Green copy created), and `Bug_3261_patch_plus_revisions` (a patch
/// by an id filter of a conjoined numeric-revision document sets the field and moves
/// the revision, once per patch).
#[tokio::test]
async fn patches_stay_within_their_tenant() {
    let (_schema, b) = builder("mp_tenants");
    let store = ok(b.document::<User>().document::<DocDto>().build().await);
    let user = User {
        id: Uuid::now_v7(),
        user_name: "Me".into(),
        first_name: "Jeremy".into(),
    };
    let mut red = ok(store.lightweight_session_for("Red"));
    ok(red.store(user.clone()));
    ok(red.save_changes().await);
    let mut rq = ok(store.query_session_for("Red"));
    let version = ok(rq.metadata::<User>(&user.id).await)
        .expect("meta")
        .version;

    let mut green = ok(store.lightweight_session_for("Green"));
    ok(green
        .patch::<User>(&user.id)
        .set(|f| f.first_name, "John")
        .queue());
    ok(green
        .patch_where::<User>(User::fields().user_name.eq("Me"))
        .set(|f| f.first_name, "John")
        .queue());
    ok(green.save_changes().await);
    assert_eq!(ok(rq.load::<User>(&user.id).await), Some(user.clone()));
    assert_eq!(
        ok(rq.metadata::<User>(&user.id).await)
            .expect("meta")
            .version,
        version
    );
    let mut gq = ok(store.query_session_for("Green"));
    assert_eq!(ok(gq.load::<User>(&user.id).await), None);
    assert_eq!(ok(gq.query::<User>().count().await), 0);

    let doc = DocDto {
        id: 7,
        name: "Jason Tatum".into(),
    };
    ok(red.store(doc.clone()));
    ok(red.save_changes().await);
    ok(red
        .patch_where::<DocDto>(DocDto::fields().id.eq(doc.id))
        .set(|f| f.name, "newvalue")
        .queue());
    ok(red.save_changes().await);
    assert_eq!(
        ok(rq.load::<DocDto>(&7).await),
        Some(DocDto {
            id: 7,
            name: "newvalue".into()
        })
    );
    assert_eq!(
        ok(rq.metadata::<DocDto>(&7).await).expect("meta").version,
        2
    );
    ok(red
        .patch_where::<DocDto>(DocDto::fields().id.eq(doc.id))
        .set(|f| f.name, "again")
        .queue());
    ok(red.save_changes().await);
    assert_eq!(
        ok(rq.metadata::<DocDto>(&7).await).expect("meta").version,
        3
    );
}
