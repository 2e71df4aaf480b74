use marten::Document;
use serde::{Deserialize, Serialize};

// Statements name tables unquoted: a reserved word cannot be one.
#[derive(Document, Serialize, Deserialize)]
#[document(table = "user")]
struct Account {
    id: uuid::Uuid,
}

#[derive(Document, Serialize, Deserialize)]
#[document(table = "order")]
struct Purchase {
    id: uuid::Uuid,
}

// A struct named after a reserved word is fine: its table is `mt_doc_select`.
#[derive(Document, Serialize, Deserialize)]
struct Select {
    id: uuid::Uuid,
}

fn main() {}
