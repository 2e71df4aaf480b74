//! Sessions on PostgreSQL: marten-core's [`marten_core::session::Session`] with
//! [`Postgres`] as its backend. The session itself (kinds, identity map, dirty tracking,
//! known versions, writes, loads and the save loop) is marten-core's; this layer provides
//! what it needs from the database (`backend`; patches and deletes by filter in
//! `patch_backend`), opens sessions from a store (`open`; on the read replica, with
//! [`ReplicaReads`], in `replica`)
//! and the session-facing event API (`events`); compiled queries run on it (`compiled`).
//!
//! May use: every layer below (query, store, projections, events, documents, the unit of
//! work, schema, connection); the daemon sits above.

mod backend;
mod compiled;
pub(crate) mod events;
mod new_ids;
mod open;
mod patch_backend;
mod replica;

pub use self::backend::Postgres;
pub use self::events::{Boundary, EventQuery, Events, Writing};
pub use self::new_ids::NewIds;
pub use self::replica::ReplicaReads;
use crate::connection::Conn;
use crate::query::source::sealed as source_sealed;
pub use crate::query::QuerySource;
use crate::store::DocumentStore;
pub use marten_core::session::{DirtyTracking, IdentityMap, Lightweight, SessionOptions, Tracking};

/// A writing session on PostgreSQL; see [`LightweightSession`], [`IdentitySession`] and
/// [`DirtyTrackedSession`].
pub type Session<K> = marten_core::session::Session<Postgres, K>;
/// A session without identity map.
pub type LightweightSession = Session<Lightweight>;
/// A session with an identity map.
pub type IdentitySession = Session<IdentityMap>;
/// A session that saves changes to loaded documents.
pub type DirtyTrackedSession = Session<DirtyTracking>;
/// A read-only session on PostgreSQL: loads and queries without tracking anything.
pub type QuerySession = marten_core::session::QuerySession<Postgres>;

impl<K: Tracking> source_sealed::Sealed for Session<K> {}

impl<K: Tracking> QuerySource for Session<K> {
    fn source(&mut self) -> (&DocumentStore, &mut Conn) {
        let parts = self.parts_mut();
        (&parts.store, &mut parts.conn)
    }
}

impl source_sealed::Sealed for QuerySession {}

impl QuerySource for QuerySession {
    fn source(&mut self) -> (&DocumentStore, &mut Conn) {
        self.parts_mut()
    }
}
