use marten::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(aliases = ["old", "old"])]
struct Twice {}

#[derive(Event, Serialize, Deserialize)]
#[event(aliases = [""])]
struct Empty {}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "same", aliases = ["same"])]
struct OwnName {}

#[derive(Event, Serialize, Deserialize)]
#[event(aliases = "old")]
struct NotAList {}

fn main() {}
