use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Order {
    id: Uuid,
    count: i64,
    tags: Vec<String>,
}

fn check(s: &mut LightweightSession, id: Uuid) -> marten::Result<()> {
    // A text value for a number field, a number element for a list of strings.
    s.patch::<Order>(&id).set(|f| f.count, "seven").queue()?;
    s.patch::<Order>(&id).append(|f| f.tags, 7).queue()
}

fn main() {}
