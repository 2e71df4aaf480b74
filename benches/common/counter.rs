//! The event and the aggregate of the append rows: `Ticked` events folded into a
//! `Counter` (the inline projection's document, `mt_doc_counter`), shared by the documents
//! and instructions benchmarks and by the inline raw referent ([`super::inline`]).

use marten::prelude::*;
use serde::{Deserialize, Serialize};

/// The event every append row appends.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
pub struct Ticked {
    pub n: i64,
    pub note: String,
}

/// The aggregate of a stream of [`Ticked`]: their sum.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
pub struct Counter {
    pub id: Uuid,
    pub version: i64,
    pub total: i64,
}

#[marten::apply]
impl Counter {
    fn apply(&mut self, e: &Ticked) {
        self.total += e.n;
    }
}

/// The `i`th event.
pub fn tick(i: i64) -> Ticked {
    Ticked {
        n: i,
        note: "a small event".into(),
    }
}
