use marten::Document;
use serde::{Deserialize, Serialize};

// Every mistake is reported in one compile, each at its own span.
#[derive(Document, Serialize, Deserialize)]
#[concurrency(sometimes)]
#[document(table = "Bad Name")]
struct Shop {
    #[document(id)]
    a: uuid::Uuid,
    #[document(id)]
    b: uuid::Uuid,
}

fn main() {}
