use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop {
    key: uuid::Uuid,
    name: String,
}

fn main() {}
