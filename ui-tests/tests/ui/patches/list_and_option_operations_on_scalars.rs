use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Order {
    id: Uuid,
    status: String,
    count: i64,
}

fn check(s: &mut LightweightSession, id: Uuid) -> marten::Result<()> {
    // `append` on a field that is not a `Vec`.
    s.patch::<Order>(&id).append(|f| f.status, "x").queue()?;
    // `unset` on a required field.
    s.patch::<Order>(&id).unset(|f| f.count).queue()
}

fn main() {}
