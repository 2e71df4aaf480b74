use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop {
    id: Uuid,
    name: String,
}

async fn check(s: &mut LightweightSession) {
    // A type without `#[document(soft_delete)]` has no marked rows to include or undo.
    let _ = s.query::<Shop>().include_deleted().count().await;
    let _ = s.query::<Shop>().only_deleted().count().await;
    let _ = marten::QuerySpec::<Shop>::new().only_deleted();
    let _ = s.undo_delete_where::<Shop>(Shop::fields().name.eq("x"));
    // Hard deletes exist for every type.
    let _ = s.hard_delete::<Shop>(&Uuid::nil());
}

fn main() {}
