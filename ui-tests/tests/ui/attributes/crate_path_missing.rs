use marten::prelude::*;
use serde::{Deserialize, Serialize};

// The path is used: a path that does not exist fails.
#[derive(Document, Serialize, Deserialize)]
#[marten(crate = "nowhere")]
struct Missing {
    id: Uuid,
}

fn main() {}
