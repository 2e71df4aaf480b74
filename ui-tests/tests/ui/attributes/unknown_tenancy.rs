use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[document(tenancy = "shared")]
struct Shop {
    id: uuid::Uuid,
}

#[derive(Document, Serialize, Deserialize)]
#[document(tenancy = "conjoined", tenancy = "single")]
struct Stall {
    id: uuid::Uuid,
}

fn main() {}
