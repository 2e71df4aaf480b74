use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct Note {
    id: Uuid,
}

fn check(session: &mut LightweightSession, note: Note) {
    let _ = session.store_with_version(note, marten::concurrency::NoVersion);
}

fn main() {}
