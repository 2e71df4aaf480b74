use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone)]
struct Opened {}

#[derive(Aggregate, Serialize, Deserialize, Default)]
#[document(soft_delete)]
struct Account {
    id: Uuid,
    version: i64,
}

#[marten::apply]
impl Account {
    fn apply(&mut self, _e: &Opened) {}
}

fn main() {}
