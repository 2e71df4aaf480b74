use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Order {
    id: Uuid,
    status: String,
    count: i64,
}

fn check(s: &mut LightweightSession, id: Uuid) -> marten::Result<()> {
    // `increment` on a text field.
    s.patch::<Order>(&id).increment(|f| f.status, 1).queue()
}

fn main() {}
