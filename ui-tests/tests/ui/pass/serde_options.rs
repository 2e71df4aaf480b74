// The serde options marten can follow: on the id, those that do not change how it is
// written or read; on other fields, any option once the field is `#[query(skip)]`, and those
// that leave what serde writes alone (`skip_deserializing`, `skip_serializing_if`,
// `deserialize_with`) even on queried and indexed fields.
use marten::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};

mod as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn null_as_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or(0))
}

#[derive(Serialize, Deserialize, Default)]
struct Extra {
    note: String,
}

#[derive(Document, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Invoice {
    #[serde(rename = "ID", alias = "id", default)]
    id: Uuid,
    #[serde(with = "as_text")]
    #[query(skip)]
    discount: i64,
    #[serde(
        serialize_with = "as_text::serialize",
        deserialize_with = "as_text::deserialize"
    )]
    #[query(skip)]
    tax: i64,
    #[serde(skip)]
    #[query(skip)]
    cache: i64,
    #[serde(skip_serializing, default)]
    #[query(skip)]
    secret: String,
    #[serde(flatten)]
    #[query(skip)]
    extra: Extra,
    // Written, not read back: queries and the column see what is written.
    #[serde(skip_deserializing)]
    #[document(index)]
    total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[document(unique)]
    number: Option<i64>,
    #[serde(deserialize_with = "null_as_zero")]
    #[document(index)]
    lines: i64,
}

#[derive(Queryable, Serialize, Deserialize)]
struct Line {
    #[serde(with = "as_text")]
    #[query(skip)]
    cents: i64,
    #[serde(skip_deserializing)]
    qty: i64,
}

#[derive(Event, Serialize, Deserialize)]
struct Typed {
    #[tag]
    r#type: String,
}

fn uses() {
    let _ = Invoice::fields().total.eq(1);
    let _ = Invoice::fields().number.eq(Some(2));
    let _ = Invoice::fields().lines.gt(3);
    let _ = <Line as marten::query::HasFields>::fields_at::<Invoice>;
}

fn main() {
    let _ = uses;
}
