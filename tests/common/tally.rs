//! The counting domain of the daemon, recovery and snapshot tests: `Added` events folded
//! into a `Tally` (their sum and how many were applied, so an event applied twice or
//! not at all shows in `count`).
#![allow(dead_code)]

use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
pub struct Added {
    pub n: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub id: Uuid,
    pub version: i64,
    pub total: i64,
    pub count: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
        self.count += 1;
    }
}
