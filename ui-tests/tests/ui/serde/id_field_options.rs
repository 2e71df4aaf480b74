// The id is read back from the document's JSON on every load: serde has to write it, read
// it, and do both as the id type itself does.
use marten::{Aggregate, Document};
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

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Document, Serialize, Deserialize)]
struct Skipped {
    #[serde(skip)]
    id: Uuid,
}

#[derive(Document, Serialize, Deserialize)]
struct NotWritten {
    #[serde(skip_serializing)]
    id: Uuid,
}

#[derive(Document, Serialize, Deserialize)]
struct NotRead {
    #[serde(skip_deserializing)]
    id: Uuid,
}

#[derive(Document, Serialize, Deserialize)]
struct SometimesWritten {
    #[serde(default, skip_serializing_if = "is_zero")]
    id: i64,
}

#[derive(Document, Serialize, Deserialize)]
struct AsText {
    #[serde(with = "as_text")]
    id: i64,
}

#[derive(Document, Serialize, Deserialize)]
struct WrittenAsText {
    #[document(id)]
    #[serde(serialize_with = "as_text::serialize")]
    key: i64,
}

#[derive(Document, Serialize, Deserialize)]
struct ReadFromText {
    #[serde(rename = "Id", deserialize_with = "as_text::deserialize")]
    id: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Default)]
struct Tally {
    #[serde(skip)]
    id: Uuid,
    version: i64,
}

fn main() {}
