use marten::Document;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop<T> {
    id: uuid::Uuid,
    extra: T,
}

fn main() {}
