// A field with a query path must be written by serde, under its own key, by its type's own
// `Serialize` (query values are written that way); `#[query(skip)]` takes its path away.
use marten::{Document, Queryable};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

#[derive(Serialize, Deserialize, Default)]
struct Extra {
    note: String,
}

#[derive(Document, Serialize, Deserialize)]
struct Invoice {
    id: Uuid,
    #[serde(with = "as_text")]
    amount: i64,
    #[serde(serialize_with = "as_text::serialize")]
    tax: i64,
    #[serde(skip)]
    cache: i64,
    #[serde(skip_serializing)]
    secret: String,
    #[serde(flatten)]
    extra: Extra,
    // Fine: not queried.
    #[serde(with = "as_text")]
    #[query(skip)]
    discount: i64,
    #[serde(skip)]
    #[query(skip)]
    scratch: i64,
}

#[derive(Queryable, Serialize, Deserialize)]
struct Line {
    #[serde(with = "as_text")]
    cents: i64,
}

fn main() {}
