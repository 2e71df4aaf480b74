// An aggregate's version is read back from its stored JSON to know which events it holds:
// serde has to write it and read it back.
use marten::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Aggregate, Serialize, Deserialize, Default)]
struct Skipped {
    id: Uuid,
    #[serde(skip)]
    version: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Default)]
struct NotWritten {
    id: Uuid,
    #[serde(skip_serializing)]
    version: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Default)]
struct NotRead {
    id: Uuid,
    #[serde(skip_deserializing)]
    #[aggregate(version)]
    seen: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Default)]
struct SometimesWritten {
    id: Uuid,
    #[serde(default, skip_serializing_if = "is_zero")]
    version: i64,
}

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

// A version written as text reads back, but a typed query on it would match nothing:
// refused as on any queried field.
#[derive(Aggregate, Serialize, Deserialize, Default)]
struct AsText {
    id: Uuid,
    #[serde(with = "as_text")]
    version: i64,
}

fn main() {}
