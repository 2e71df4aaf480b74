// A generic newtype over a type that is no id: both are reported in one compile.
use marten::DocumentId;

#[derive(DocumentId)]
struct Ids<T>(Vec<T>);

#[derive(DocumentId)]
enum Kind {
    A,
}

fn main() {}
