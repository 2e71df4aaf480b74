use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop {
    id: f64,
    name: String,
}

fn main() {}
