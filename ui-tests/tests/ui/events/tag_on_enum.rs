use marten::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum Changed {
    Renamed {
        #[tag]
        name: String,
    },
}

fn main() {}
