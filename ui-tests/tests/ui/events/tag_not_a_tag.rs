use marten::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Room {
    number: u8,
}

#[derive(Event, Serialize, Deserialize)]
struct Booked {
    #[tag]
    room: Room,
}

fn main() {}
