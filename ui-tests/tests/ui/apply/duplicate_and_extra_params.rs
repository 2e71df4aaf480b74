use marten::{Event, EventEnvelope};

fn _uses(_: &EventEnvelope) {}
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Added {
    n: i64,
}

#[derive(Default)]
struct Counter {
    n: i64,
}

#[marten::apply]
impl Counter {
    fn apply(&mut self, e: &Added) {
        self.n += e.n;
    }

    fn apply_again(&mut self, e: &Added) {
        self.n += e.n;
    }

    fn apply_more(&mut self, _e: &Added, _meta: &EventEnvelope, _extra: i32) {}
}

fn main() {}
