//! Sessions, independent of any database: the writing [`Session<B, K>`] and the
//! read-only [`QuerySession<B>`] on a backend `B` ([`Backend`], with [`DocumentBackend`]
//! and [`QueryBackend`] per document type), a writing session being of a kind `K`
//! ([`Lightweight`], [`IdentityMap`], [`DirtyTracking`]).
//!
//! One concern per file: `kinds` (the session kinds), `options`, `backend` (what a
//! backend provides), `parts` (the session and its settings), `writes`, `patches`
//! (patches, and deletes by filter), `loads`, `save_changes`, `query_session`; the
//! state it remembers per document type (known versions, identity map, dirty tracking)
//! in [`state`]; how often a save is planned and sent again, in
//! [`attempts`]; the save loop, generic over what makes one attempt, in [`mod@save`].

pub mod attempts;
mod backend;
mod kinds;
mod loads;
mod options;
mod parts;
mod patches;
mod query_session;
pub mod save;
mod save_changes;
pub mod state;
mod writes;

pub use attempts::{AttemptEnd, Next, SaveAttempts, MAX_SAVE_ATTEMPTS};
pub use backend::{
    Backend, CompiledQueryBackend, DeleteKind, DocumentBackend, Loaded, PatchBackend, QueryBackend,
};
pub use kinds::{DirtyTracking, IdentityMap, Lightweight, Tracking};
pub use options::{EventMeta, SessionOptions};
pub use parts::{Parts, Session};
pub use patches::Patching;
pub use query_session::QuerySession;
pub use save::{save, SaveBackend};
pub use state::{DirtyQueue, DocState, SessionState, Tracked};
pub use writes::check_id;

#[cfg(test)]
mod tests;
