use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[concurrency(numeric)]
struct Invoice {
    id: String,
}

fn check(session: &mut LightweightSession, invoice: Invoice) {
    // A numeric document's version is an i64 revision, not a uuid.
    let _ = session.store_with_version(invoice, Uuid::nil());
}

fn main() {}
