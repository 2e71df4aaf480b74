use marten::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Added {
    n: i64,
}

#[derive(Event, Serialize, Deserialize)]
struct Removed {}

#[derive(Default)]
struct Counter {
    n: i64,
}

#[marten::apply]
impl Counter {
    fn create(&self, e: &Added) -> Self {
        Counter { n: e.n }
    }

    fn apply(&self, e: &Added) {
        let _ = e;
    }

    fn should_delete(&mut self, _e: &Removed) -> bool {
        true
    }

    fn apply_owned(self, _e: &Removed) {}
}

fn main() {}
