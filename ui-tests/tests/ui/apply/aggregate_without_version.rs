use marten::Aggregate;
use serde::{Deserialize, Serialize};

#[derive(Aggregate, Serialize, Deserialize)]
struct Project {
    id: uuid::Uuid,
    name: String,
}

fn main() {}
