//! What a session is made of, independent of any database: the state it remembers per
//! document type (known versions, identity map, dirty tracking) in [`state`]; how often a
//! save is planned and sent again, in [`attempts`]; the save loop itself, generic over the
//! backend that makes one attempt, in [`mod@save`]. Backends keep one [`SessionState`] per
//! session and mutate it only through `&mut`.

pub mod attempts;
pub mod save;
pub mod state;

pub use attempts::{AttemptEnd, Next, SaveAttempts, MAX_SAVE_ATTEMPTS};
pub use save::{save, SaveBackend};
pub use state::{DirtyQueue, DocState, SessionState, Tracked};
