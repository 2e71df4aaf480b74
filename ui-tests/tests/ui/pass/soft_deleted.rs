use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[document(soft_delete, tenancy = "conjoined")]
#[concurrency(numeric)]
struct Shop {
    id: Uuid,
    name: String,
}

async fn check(s: &mut LightweightSession) -> marten::Result<()> {
    let _ = s.query::<Shop>().include_deleted().count().await?;
    let _ = s.query::<Shop>().only_deleted().to_list().await?;
    s.undo_delete_where::<Shop>(Shop::fields().name.eq("x"))?;
    s.hard_delete_where::<Shop>(Shop::fields().name.eq("x"))?;
    s.hard_delete::<Shop>(&Uuid::nil())?;
    Ok(())
}

fn main() {
    const { assert!(<Shop as marten::Document>::SOFT_DELETE) };
}
