use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[concurrency(pessimistic)]
struct Shop {
    id: uuid::Uuid,
}

fn main() {}
