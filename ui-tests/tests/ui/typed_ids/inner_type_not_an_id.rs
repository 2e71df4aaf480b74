// A named inner type is checked by its traits: `Money` is no id type.
use marten::DocumentId;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Money(i64);

#[derive(DocumentId, Clone, Debug, PartialEq, Eq, Hash)]
struct PriceId(Money);

fn main() {}
