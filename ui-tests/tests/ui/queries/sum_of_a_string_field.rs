use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop {
    id: Uuid,
    name: String,
    rating: i32,
}

async fn check(s: &mut QuerySession) {
    // `sum` and `avg` need a numeric field.
    let _ = s.query::<Shop>().sum(|f| f.name).await;
    let _ = Shop::fields().name.avg();
    // `min` works on any ordered field.
    let _ = s.query::<Shop>().min(|f| f.name).await;
}

fn main() {}
