use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[concurrency(optimistic)]
#[concurrency(numeric)]
struct Shop {
    id: uuid::Uuid,
}

fn main() {}
