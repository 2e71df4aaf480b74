use marten::DocumentId;
use uuid::Uuid;

#[derive(DocumentId, Clone, Debug, PartialEq, Eq, Hash)]
struct OrderId {
    value: Uuid,
}

fn main() {}
