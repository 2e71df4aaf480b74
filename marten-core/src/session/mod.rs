//! What a session is made of, independent of any database: the state it remembers per
//! document type (known versions, identity map, dirty tracking) in [`state`]. Backends
//! keep one [`SessionState`] per session and mutate it only through `&mut`.

pub mod state;

pub use state::{DirtyQueue, DocState, SessionState, Tracked};
