use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop {
    id: Uuid,
    name: String,
}

#[derive(Document, Serialize, Deserialize)]
struct Order {
    id: Uuid,
    total: i64,
}

struct NotSql;

async fn check(s: &mut QuerySession) {
    // A field of another document is no selection of this one.
    let _ = s.query::<Shop>().select(|_| Order::fields().total).to_list().await;
    // A raw parameter must be a value PostgreSQL can take.
    let _ = s.query::<Shop>().where_sql("d.id = $1", (NotSql,)).to_list().await;
}

fn main() {}
