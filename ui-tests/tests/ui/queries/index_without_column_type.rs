use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Money {
    cents: i64,
    currency: String,
}

#[derive(Document, Serialize, Deserialize)]
struct Invoice {
    id: i64,
    #[document(index)]
    total: Money,
}

fn main() {}
