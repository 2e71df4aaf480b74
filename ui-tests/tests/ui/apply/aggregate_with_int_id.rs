use marten::Aggregate;
use serde::{Deserialize, Serialize};

#[derive(Aggregate, Serialize, Deserialize, Default)]
struct Project {
    id: i64,
    version: i64,
}

#[marten::apply]
impl Project {
    fn apply(&mut self, _e: &Started) {}
}

#[derive(marten::Event, Serialize, Deserialize)]
struct Started {}

fn main() {}
