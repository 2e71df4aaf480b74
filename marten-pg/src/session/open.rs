//! Opening sessions from a store: one method per kind of session.

use super::{
    DirtyTrackedSession, IdentitySession, LightweightSession, QuerySession, Session,
    SessionOptions, Tracking,
};
use crate::store::DocumentStore;

impl DocumentStore {
    /// Opens a read-only session without tracking.
    pub fn query_session(&self) -> QuerySession {
        QuerySession::new(self.clone())
    }

    /// Opens a session without identity map: `store` queues an upsert, loads always query.
    pub fn lightweight_session(&self) -> LightweightSession {
        Session::new(self.clone(), SessionOptions::default())
    }

    /// Opens a session with an identity map: a second load of an id makes no query.
    pub fn identity_session(&self) -> IdentitySession {
        Session::new(self.clone(), SessionOptions::default())
    }

    /// Opens a session that saves changed loaded documents without an explicit `store`.
    pub fn dirty_tracked_session(&self) -> DirtyTrackedSession {
        Session::new(self.clone(), SessionOptions::default())
    }

    /// Opens a session of any kind with options.
    pub fn session_with<K: Tracking>(&self, options: SessionOptions) -> Session<K> {
        Session::new(self.clone(), options)
    }
}
