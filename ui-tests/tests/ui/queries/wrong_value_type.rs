use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop {
    id: Uuid,
    name: String,
    rating: i32,
    tags: Vec<String>,
    nick: Option<String>,
}

#[derive(Document, Serialize, Deserialize)]
struct Order {
    id: Uuid,
    total: i64,
}

async fn check(s: &mut QuerySession) {
    let _ = s.query::<Shop>().filter(|f| f.id.eq(5)).to_list().await;
}

fn main() {}
