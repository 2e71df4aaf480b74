//! A conjoined document type the typed-query tests share: invoices with the same ids
//! under two tenants.

use marten::prelude::*;
use serde::{Deserialize, Serialize};

use super::{builder, ok};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[document(tenancy = "conjoined")]
pub struct Invoice {
    pub id: i64,
    #[document(index)]
    pub customer: String,
    pub total: i64,
    pub rate: f64,
    pub note: Option<String>,
}

pub fn invoice(id: i64, customer: &str, total: i64) -> Invoice {
    Invoice {
        id,
        customer: customer.into(),
        total,
        rate: total as f64 / 4.0,
        note: (total % 2 == 0).then(|| format!("n{total}")),
    }
}

/// A store with `Invoice`, and the same ids 1..=4 under tenants "red" (totals 10, 20,
/// 30, 40 for customers a, b, a, c) and "blue" (totals 1000.. for customers x, y).
pub async fn seeded(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b.document::<Invoice>().build().await);
    let mut red = ok(store.lightweight_session_for("red"));
    for (id, c) in [(1, "a"), (2, "b"), (3, "a"), (4, "c")] {
        ok(red.store(invoice(id, c, id * 10)));
    }
    ok(red.save_changes().await);
    let mut blue = ok(store.lightweight_session_for("blue"));
    for (id, c) in [(1, "x"), (2, "y"), (3, "x"), (4, "y")] {
        ok(blue.store(invoice(id, c, 1000 + id)));
    }
    ok(blue.save_changes().await);
    (schema, store)
}

pub fn ids(found: &[Invoice]) -> Vec<i64> {
    found.iter().map(|i| i.id).collect()
}
