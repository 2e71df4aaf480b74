use marten::prelude::*;
use serde::{Deserialize, Serialize};

// Serializable, but not a document: no `#[derive(Document)]`.
#[derive(Serialize, Deserialize)]
struct Note {
    id: Uuid,
}

impl marten::Document for Note {
    type Id = Uuid;
    type Mode = marten::concurrency::Off;
    const DOCUMENT_TYPE: &'static str = "Note";
    const TABLE_NAME: &'static str = "mt_doc_note";
    fn id(&self) -> &Uuid {
        &self.id
    }
    fn id_mut(&mut self) -> &mut Uuid {
        &mut self.id
    }
}

async fn check(session: &mut LightweightSession, note: Note) {
    let _ = session.store(note);
    let _ = session.load::<Note>(&Uuid::nil()).await;
}

fn main() {}
