//! The JSON keys the derives name are the keys serde writes: for every `rename_all` rule
//! (both its forms, `rename_all = ".."` and `rename_all(serialize = .., deserialize = ..)`),
//! field `rename` in both forms, nested `Queryable` structs, and awkward field names (mixed
//! case, non-ASCII letters, digits, leading, trailing and double underscores, raw
//! identifiers). Checked two ways: each typed path's keys against where serde_json puts
//! the field's value, and against PostgreSQL, where a stored document is found by each of
//! its fields (a path naming a key serde never writes would silently match nothing).

#![allow(non_snake_case)]

mod common;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The value a sample document holds in `field`: unique per field and per document.
fn value(tag: &str, field: &str) -> String {
    format!("{tag}:{}", field.trim_start_matches("r#"))
}

/// The keys, outermost first, under which `needle` sits in `json`.
fn keys_of(json: &Value, needle: &str) -> Option<Vec<String>> {
    match json {
        Value::String(s) if s == needle => Some(Vec::new()),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            keys_of(v, needle).map(|mut rest| {
                rest.insert(0, k.clone());
                rest
            })
        }),
        _ => None,
    }
}

/// Every path's keys are where serde_json writes that field's value.
fn assert_keys_are_serdes<T: Serialize>(
    type_name: &str,
    doc: &T,
    tag: &str,
    paths: Vec<(&'static str, Vec<&'static str>)>,
) {
    let json = serde_json::to_value(doc).expect("serializes");
    for (field, segments) in paths {
        let needle = if field == "id" {
            json_id(&json, tag)
        } else {
            value(tag, field)
        };
        let written = keys_of(&json, &needle)
            .unwrap_or_else(|| panic!("{type_name}.{field}: value not in {json}"));
        assert_eq!(
            segments, written,
            "{type_name}.{field}: marten queries {segments:?}, serde writes {written:?} ({json})"
        );
    }
}

/// The id's value, as written (the samples' ids are the only UUID-shaped strings).
fn json_id(json: &Value, tag: &str) -> String {
    let Value::Object(map) = json else {
        panic!("not an object: {json}")
    };
    map.values()
        .filter_map(Value::as_str)
        .find(|s| !s.starts_with(&format!("{tag}:")) && s.len() == 36)
        .unwrap_or_else(|| panic!("no id in {json}"))
        .to_owned()
}

/// Documents whose fields are all strings, under one serde container attribute; each
/// with its sample, its paths, and a count of the stored documents each field finds.
macro_rules! naming_docs {
    ($( $name:ident [$($serde:tt)*] round_trip: $round_trip:literal { $($field:ident),* $(,)? } )*) => {
        $(
            #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
            #[serde($($serde)*)]
            struct $name {
                id: Uuid,
                // Through its generated column (`data ->> key`), so its key counts too.
                #[document(index)]
                indexed_field: String,
                $($field: String,)*
            }

            impl $name {
                fn sample(tag: &str) -> Self {
                    $name {
                        id: Uuid::now_v7(),
                        indexed_field: value(tag, "indexed_field"),
                        $($field: value(tag, stringify!($field)),)*
                    }
                }

                fn paths() -> Vec<(&'static str, Vec<&'static str>)> {
                    let f = $name::fields();
                    vec![
                        ("id", f.id.path().segments.clone()),
                        ("indexed_field", f.indexed_field.path().segments.clone()),
                        $((stringify!($field), f.$field.path().segments.clone()),)*
                    ]
                }

                async fn found_by_each_field(store: &DocumentStore, tag: &str) -> Vec<(&'static str, i64)> {
                    let mut s = store.query_session();
                    let mut out = vec![(
                        "indexed_field",
                        ok(s.query::<$name>()
                            .filter(|f| f.indexed_field.eq(value(tag, "indexed_field")))
                            .count()
                            .await),
                    )];
                    $(
                        out.push((
                            stringify!($field),
                            ok(s.query::<$name>()
                                .filter(|f| f.$field.eq(value(tag, stringify!($field))))
                                .count()
                                .await),
                        ));
                    )*
                    out
                }
            }
        )*

        fn check_keys() {
            $(
                assert_keys_are_serdes(stringify!($name), &$name::sample("k"), "k", $name::paths());
            )*
        }

        async fn check_store(store: &DocumentStore) {
            let mut s = store.lightweight_session();
            $(
                let found = $name::sample("found");
                ok(s.store(found.clone()));
                ok(s.store($name::sample("other")));
                ok(s.save_changes().await);
                for (field, n) in $name::found_by_each_field(store, "found").await {
                    assert_eq!(n, 1, "{}.{field}: the stored document is not found by it", stringify!($name));
                }
                if $round_trip {
                    let loaded = ok(s.load::<$name>(&found.id).await);
                    assert_eq!(loaded.as_ref(), Some(&found), "{}", stringify!($name));
                }
            )*
        }

        fn register(b: marten::DocumentStoreBuilder) -> marten::DocumentStoreBuilder {
            b $(.document::<$name>())*
        }
    };
}

naming_docs! {
    NoRule [deny_unknown_fields] round_trip: true {
        user_name, userName, mixedCase_x, straße, first_ärger, ärger_first, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    Lower [rename_all = "lowercase"] round_trip: true {
        user_name, userName, mixedCase_x, straße, first_ärger, ärger_first, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    Upper [rename_all = "UPPERCASE"] round_trip: true {
        user_name, userName, mixedCase_x, straße, first_ärger, ärger_first, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    // `userName` would collide with `user_name`'s key in these two, and serde's derive
    // panics on a camelCase field without an ASCII first letter (`ärger_first`).
    Pascal [rename_all = "PascalCase"] round_trip: true {
        user_name, mixedCase_x, straße, first_ärger, ärger_first, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    Camel [rename_all = "camelCase"] round_trip: true {
        user_name, mixedCase_x, straße, first_ärger, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    Snake [rename_all = "snake_case"] round_trip: true {
        user_name, userName, mixedCase_x, straße, first_ärger, ärger_first, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    ScreamingSnake [rename_all = "SCREAMING_SNAKE_CASE"] round_trip: true {
        user_name, userName, mixedCase_x, straße, first_ärger, ärger_first, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    Kebab [deny_unknown_fields, rename_all = "kebab-case"] round_trip: true {
        user_name, userName, mixedCase_x, straße, first_ärger, ärger_first, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    ScreamingKebab [rename_all = "SCREAMING-KEBAB-CASE"] round_trip: true {
        user_name, userName, mixedCase_x, straße, first_ärger, ärger_first, _leading,
        trailing_, a__b, __double__, x1_2y, v2, r#type,
    }
    // The serialize side is what is stored and so what queries name.
    BothSides [rename_all(serialize = "SCREAMING-KEBAB-CASE", deserialize = "SCREAMING-KEBAB-CASE")]
    round_trip: true {
        user_name, straße, first_ärger, __double__, r#type,
    }
    SerializeOnly [rename_all(serialize = "camelCase")] round_trip: false {
        user_name, straße, first_ärger, __double__, r#type,
    }
    DeserializeOnly [rename_all(deserialize = "UPPERCASE")] round_trip: false {
        user_name, straße, first_ärger, __double__, r#type,
    }
    Asymmetric [rename_all(serialize = "kebab-case", deserialize = "PascalCase")] round_trip: false {
        user_name, straße, first_ärger, __double__, r#type,
    }
}

/// A nested struct with a rule of its own.
#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct Inner {
    city_name: String,
    #[serde(rename(serialize = "Zip Code", deserialize = "Zip Code"))]
    zip_code: String,
}

/// A `macro_rules!` fragment in `rename`: serde reads the literal through its invisible
/// group, and so must marten.
macro_rules! renamed_doc {
    ($key:expr) => {
        /// Field renames in both forms, a rename only on the deserialize side (the field
        /// is still written under the rule), and a nested struct.
        #[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[serde(rename_all = "camelCase")]
        struct Renamed {
            id: Uuid,
            #[serde(rename = "plain rename")]
            plain: String,
            #[serde(rename(serialize = "serialized_as", deserialize = "serialized_as"))]
            both_sides: String,
            #[serde(rename(serialize = "only_when_written"))]
            serialize_side: String,
            #[serde(rename(deserialize = "read_as"), alias = "also_read_as")]
            deserialize_side: String,
            #[serde(default, rename = $key)]
            from_macro: String,
            #[query(nested)]
            inner_struct: Inner,
        }
    };
}

renamed_doc!("key from a macro");

impl Renamed {
    fn sample(tag: &str) -> Self {
        Renamed {
            id: Uuid::now_v7(),
            plain: value(tag, "plain"),
            both_sides: value(tag, "both_sides"),
            serialize_side: value(tag, "serialize_side"),
            deserialize_side: value(tag, "deserialize_side"),
            from_macro: value(tag, "from_macro"),
            inner_struct: Inner {
                city_name: value(tag, "city_name"),
                zip_code: value(tag, "zip_code"),
            },
        }
    }

    fn paths() -> Vec<(&'static str, Vec<&'static str>)> {
        let f = Renamed::fields();
        vec![
            ("id", f.id.path().segments.clone()),
            ("plain", f.plain.path().segments.clone()),
            ("both_sides", f.both_sides.path().segments.clone()),
            ("serialize_side", f.serialize_side.path().segments.clone()),
            (
                "deserialize_side",
                f.deserialize_side.path().segments.clone(),
            ),
            ("from_macro", f.from_macro.path().segments.clone()),
            (
                "city_name",
                f.inner_struct.city_name.path().segments.clone(),
            ),
            ("zip_code", f.inner_struct.zip_code.path().segments.clone()),
        ]
    }
}

#[test]
fn every_path_names_the_key_serde_writes() {
    check_keys();
    assert_keys_are_serdes("Renamed", &Renamed::sample("k"), "k", Renamed::paths());
}

/// A few keys spelled out, so the rules' quirks are visible here (serde's own: on a
/// field, `lowercase` changes nothing and only ASCII letters change case).
#[test]
fn serdes_quirks() {
    let key = |segments: &[&'static str]| segments.join(".");
    assert_eq!(key(&Lower::fields().userName.path().segments), "userName");
    assert_eq!(key(&Upper::fields().straße.path().segments), "STRAßE");
    assert_eq!(
        key(&Camel::fields().first_ärger.path().segments),
        "firstärger"
    );
    assert_eq!(
        key(&Pascal::fields().ärger_first.path().segments),
        "ärgerFirst"
    );
    assert_eq!(
        key(&Kebab::fields().__double__.path().segments),
        "--double--"
    );
    assert_eq!(
        key(&ScreamingKebab::fields()._leading.path().segments),
        "-LEADING"
    );
    assert_eq!(key(&Camel::fields().r#type.path().segments), "type");
    assert_eq!(
        key(&SerializeOnly::fields().user_name.path().segments),
        "userName"
    );
    assert_eq!(
        key(&DeserializeOnly::fields().user_name.path().segments),
        "user_name"
    );
    assert_eq!(
        key(&Asymmetric::fields().user_name.path().segments),
        "user-name"
    );
    let f = Renamed::fields();
    assert_eq!(key(&f.serialize_side.path().segments), "only_when_written");
    assert_eq!(key(&f.deserialize_side.path().segments), "deserializeSide");
    assert_eq!(key(&f.from_macro.path().segments), "key from a macro");
    assert_eq!(
        key(&f.inner_struct.zip_code.path().segments),
        "innerStruct.Zip Code"
    );
    assert_eq!(
        key(&f.inner_struct.city_name.path().segments),
        "innerStruct.CITY_NAME"
    );
}

#[tokio::test]
async fn a_stored_document_is_found_by_each_field() {
    let (_schema, b) = builder("derive_naming");
    let store = ok(register(b).document::<Renamed>().build().await);
    check_store(&store).await;

    let mut s = store.lightweight_session();
    let found = Renamed::sample("found");
    ok(s.store(found.clone()));
    ok(s.store(Renamed::sample("other")));
    ok(s.save_changes().await);
    let v = |field: &str| value("found", field);
    let counts = [
        (
            "plain",
            ok(s.query::<Renamed>()
                .filter(|f| f.plain.eq(v("plain")))
                .count()
                .await),
        ),
        (
            "both_sides",
            ok(s.query::<Renamed>()
                .filter(|f| f.both_sides.eq(v("both_sides")))
                .count()
                .await),
        ),
        (
            "serialize_side",
            ok(s.query::<Renamed>()
                .filter(|f| f.serialize_side.eq(v("serialize_side")))
                .count()
                .await),
        ),
        (
            "deserialize_side",
            ok(s.query::<Renamed>()
                .filter(|f| f.deserialize_side.eq(v("deserialize_side")))
                .count()
                .await),
        ),
        (
            "from_macro",
            ok(s.query::<Renamed>()
                .filter(|f| f.from_macro.eq(v("from_macro")))
                .count()
                .await),
        ),
        (
            "city_name",
            ok(s.query::<Renamed>()
                .filter(|f| f.inner_struct.city_name.eq(v("city_name")))
                .count()
                .await),
        ),
        (
            "zip_code",
            ok(s.query::<Renamed>()
                .filter(|f| f.inner_struct.zip_code.eq(v("zip_code")))
                .count()
                .await),
        ),
    ];
    for (field, n) in counts {
        assert_eq!(
            n, 1,
            "Renamed.{field}: the stored document is not found by it"
        );
    }
}

/// An event or tag type named with a raw identifier is stored under its name without the
/// `r#` (as serde and every other derive name it).
#[allow(non_camel_case_types)]
mod raw {
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct r#match {
        pub n: i64,
    }

    #[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct r#loop(pub Uuid);
}

#[test]
fn raw_identifiers_name_events_and_tags_without_the_prefix() {
    assert_eq!(<raw::r#match as Event>::EVENT_TYPE, "match");
    assert_eq!(<raw::r#loop as Tag>::TAG_TYPE, "loop");
}
