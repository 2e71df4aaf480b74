// The store generates integer ids only; a nil uuid id is filled on any `store`.
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct OrderId(Uuid);

#[derive(Document, Serialize, Deserialize)]
struct Order {
    id: OrderId,
}

#[derive(Document, Serialize, Deserialize)]
struct Note {
    id: String,
}

async fn save(store: DocumentStore) -> marten::Result<()> {
    let mut s = store.lightweight_session();
    s.insert_new(Order { id: OrderId(Uuid::nil()) }).await?;
    store.next_id::<Note>().await?;
    Ok(())
}

fn main() {
    let _ = save;
}
