use marten::DocumentId;

#[derive(DocumentId, Clone, Debug, PartialEq)]
struct Price(f64);

fn main() {}
