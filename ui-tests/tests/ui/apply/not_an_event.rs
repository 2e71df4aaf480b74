use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct NotAnEvent {
    n: i64,
}

#[derive(Default)]
struct Counter {
    n: i64,
}

#[marten::apply]
impl Counter {
    fn apply(&mut self, e: &NotAnEvent) {
        self.n += e.n;
    }
}

fn main() {}
