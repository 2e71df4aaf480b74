use marten::prelude::*;
use serde::{Deserialize, Serialize};

// Only `crate` is accepted.
#[derive(Document, Serialize, Deserialize)]
#[marten(krate = "marten")]
struct Misspelled {
    id: Uuid,
}

// The attribute macro takes only `crate` too.
#[derive(Default, Serialize, Deserialize)]
struct Count {
    n: i64,
}

#[marten::apply(into = "marten")]
impl Count {
    fn apply(&mut self, _e: &Written) {}
}

#[derive(Event, Serialize, Deserialize)]
struct Written {}

fn main() {}
