use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[document(table = "Coffee-Shops")]
struct Shop {
    id: uuid::Uuid,
}

#[derive(Document, Serialize, Deserialize)]
#[document(table = "shops\"; drop table x; --")]
struct Other {
    id: uuid::Uuid,
}

fn main() {}
