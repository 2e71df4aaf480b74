// A type marten reads by its fields is serialized as an object with one key per field.
use marten::{Aggregate, Document, Queryable};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Serialize, Deserialize)]
struct Wire {
    id: Uuid,
}

impl From<Shop> for Wire {
    fn from(s: Shop) -> Self {
        Wire { id: s.id }
    }
}

#[derive(Document, Serialize, Deserialize, Clone)]
#[serde(into = "Wire")]
struct Shop {
    id: Uuid,
}

#[derive(Document, Serialize, Deserialize)]
#[serde(transparent)]
struct Bare {
    id: Uuid,
}

pub struct Foreign {
    pub id: Uuid,
}

#[derive(Document, Serialize, Deserialize)]
#[serde(remote = "Foreign")]
struct Mirror {
    id: Uuid,
}

#[derive(Queryable, Serialize, Deserialize)]
#[serde(transparent)]
struct Cents {
    value: i64,
}

impl From<Counter> for Wire {
    fn from(c: Counter) -> Self {
        Wire { id: c.id }
    }
}

#[derive(Aggregate, Serialize, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, into = "Wire")]
struct Counter {
    id: Uuid,
    version: i64,
}

fn main() {}
