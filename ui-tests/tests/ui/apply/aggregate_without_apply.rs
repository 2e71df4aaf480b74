use marten::Aggregate;
use serde::{Deserialize, Serialize};

#[derive(Aggregate, Serialize, Deserialize)]
struct Project {
    id: uuid::Uuid,
    version: i64,
}

fn main() {}
