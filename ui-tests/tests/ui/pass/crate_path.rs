//! `#[marten(crate = "...")]`: generated code reaches marten through a crate that
//! re-exports it (here the module `db`), as a library wrapping marten would.
use serde::{Deserialize, Serialize};

mod db {
    pub use marten::*;
}

use db::prelude::*;

#[derive(Queryable, Serialize, Deserialize)]
#[marten(crate = "crate::db")]
struct Author {
    name: String,
}

#[derive(Document, Serialize, Deserialize)]
#[marten(crate = "crate::db")]
#[concurrency(numeric)]
struct Note {
    id: Uuid,
    #[document(index)]
    title: String,
    #[query(nested)]
    author: Author,
}

#[derive(Tag, Serialize, Deserialize, Clone, Copy)]
#[marten(crate = "crate::db")]
struct NoteId(Uuid);

#[derive(Event, Serialize, Deserialize)]
#[marten(crate = "crate::db")]
struct Written {
    #[tag]
    note: NoteId,
    n: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Default)]
#[marten(crate = "crate::db")]
struct Count {
    id: Uuid,
    version: i64,
    n: i64,
}

#[db::apply(crate = "crate::db")]
impl Count {
    fn apply(&mut self, e: &Written) {
        self.n += e.n;
    }
}

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[marten(crate = "crate::db")]
struct PageNo(i64);

#[derive(Document, Serialize, Deserialize)]
#[marten(crate = "crate::db")]
struct Page {
    id: PageNo,
}

fn main() {
    let _ = Page::fields().id.eq(PageNo(1));
    let _ = Note::fields().title;
    let _ = Note::fields().author.name;
}
