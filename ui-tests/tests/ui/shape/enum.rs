use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
enum Shop {
    Open { id: uuid::Uuid },
}

fn main() {}
