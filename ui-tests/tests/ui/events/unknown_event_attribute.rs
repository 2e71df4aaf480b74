use marten::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(nmae = "typo")]
struct Happened {}

fn main() {}
