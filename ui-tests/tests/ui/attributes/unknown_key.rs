use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[document(tabel = "shops")]
struct Shop {
    id: uuid::Uuid,
}

fn main() {}
