// An indexed field's column is cast from the field's key in the stored JSON: serde has to
// write it there, with its type's own `Serialize`, even when the field is not queried.
use marten::Document;
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
struct Contact {
    email: String,
}

#[derive(Document, Serialize, Deserialize)]
struct Account {
    id: Uuid,
    #[document(index)]
    #[serde(with = "as_text")]
    amount: i64,
    #[document(unique)]
    #[query(skip)]
    #[serde(serialize_with = "as_text::serialize")]
    number: i64,
    #[document(unique)]
    #[query(skip)]
    #[serde(skip)]
    login: String,
    #[document(unique)]
    #[query(skip)]
    #[serde(flatten)]
    contact: Contact,
}

fn main() {}
