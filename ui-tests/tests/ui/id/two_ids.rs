use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop {
    #[document(id)]
    key: uuid::Uuid,
    #[document(id)]
    other: uuid::Uuid,
}

fn main() {}
