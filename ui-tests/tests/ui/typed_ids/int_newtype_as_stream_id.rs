// An aggregate's id is its stream's id: a newtype over `i64` cannot be one.
use marten::{Aggregate, DocumentId, Event};
use serde::{Deserialize, Serialize};

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct OrderNo(i64);

#[derive(Aggregate, Serialize, Deserialize, Clone)]
struct Order {
    id: OrderNo,
    version: i64,
}

#[marten::apply]
impl Order {
    fn create(_e: &Placed) -> Self {
        Order { id: OrderNo(0), version: 0 }
    }
}

#[derive(Event, Serialize, Deserialize)]
struct Placed {}

fn main() {}
