use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
#[concurrency(optimistic)]
struct Note {
    id: Uuid,
}

fn check(session: &mut LightweightSession, note: Note) {
    let _ = session.update_revision(note, 3);
}

fn main() {}
