use marten::Document;
use serde::{Deserialize, Serialize};

// A text search configuration is a lower-case identifier: written into the index and
// its queries as a literal, it cannot carry quotes or a schema.
#[derive(Document, Serialize, Deserialize)]
#[document(full_text = "English")]
struct Post {
    id: uuid::Uuid,
}

#[derive(Document, Serialize, Deserialize)]
#[document(full_text = "english'::regconfig); drop table x; --")]
struct Note {
    id: uuid::Uuid,
}

#[derive(Document, Serialize, Deserialize)]
#[document(full_text, full_text = "simple")]
struct Memo {
    id: uuid::Uuid,
}

fn main() {}
