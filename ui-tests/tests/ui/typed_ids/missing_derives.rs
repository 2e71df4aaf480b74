// An id is compared, hashed, cloned and printed: the newtype derives those traits itself.
use marten::DocumentId;
use uuid::Uuid;

#[derive(DocumentId)]
struct OrderId(Uuid);

fn main() {}
