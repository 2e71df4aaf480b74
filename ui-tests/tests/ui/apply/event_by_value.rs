use marten::Event;
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
    fn apply(&mut self, e: Added) {
        self.n += e.n;
    }
}

fn main() {}
