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

fn main() {}
