use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Shop {
    id: Uuid,
    name: String,
}

async fn check(s: &mut QuerySession) {
    // `Shop` has no `#[document(full_text)]`: no index to search.
    let _ = s.query::<Shop>().search("coffee").to_list().await;
}

fn main() {}
