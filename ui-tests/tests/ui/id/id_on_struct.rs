use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[document(id)]
struct Shop {
    id: uuid::Uuid,
}

fn main() {}
