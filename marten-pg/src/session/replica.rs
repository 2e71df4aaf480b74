//! Sessions on the read replica: the store's query sessions that read there
//! ([`DocumentStore::query_session_on_replica`], [`DocumentStore::query_session_after`]),
//! the session methods that send loads and queries there and wait for writes
//! ([`ReplicaReads`]), and write tokens ([`DocumentStore::write_token`],
//! [`ReplicaReads::write_token`]). The routing and the wait are the connection's
//! (`crate::connection`); this layer only sets them.

use marten_core::Result;

use super::{QuerySession, QuerySource};
use crate::connection::{Conn, WriteToken, WRITE_POSITION};
use crate::error_map::{map_db_error, Failed};
use crate::store::DocumentStore;

impl DocumentStore {
    /// Whether the store has a read replica ([`DocumentStoreBuilder::read_replica`]).
    /// Without one, every read asked of the replica goes to the primary, which has every
    /// write.
    ///
    /// [`DocumentStoreBuilder::read_replica`]: crate::DocumentStoreBuilder::read_replica
    pub fn has_read_replica(&self) -> bool {
        let connector: &crate::connection::Connector = self.as_ref();
        connector.has_replica()
    }

    /// Opens a read-only session that reads from the read replica, as far as it has
    /// replayed the primary's log: it may miss the latest writes (see
    /// [`ReplicaReads::wait_for`] and [`query_session_after`](Self::query_session_after)
    /// to see one). Without a replica it reads from the primary.
    pub fn query_session_on_replica(&self) -> QuerySession {
        let mut session = self.query_session();
        session.read_from_replica();
        session
    }

    /// Opens a read-only session that reads from the read replica once it has replayed
    /// the write of `token` (a save of another session, another request): each read
    /// waits for that, at most the store's
    /// [`replica_wait_timeout`](crate::DocumentStoreBuilder::replica_wait_timeout), then
    /// fails with [`Error::ReplicaBehind`](marten_core::Error::ReplicaBehind).
    pub fn query_session_after(&self, token: WriteToken) -> QuerySession {
        let mut session = self.query_session_on_replica();
        session.wait_for(token);
        session
    }

    /// A token covering every write committed on the primary before this call (one
    /// query on the primary): a replica read given it sees them all. For writes made
    /// outside a session that records its own ([`ReplicaReads::read_your_writes`]), such
    /// as bulk inserts or another process's.
    pub async fn write_token(&self) -> Result<WriteToken> {
        let mut conn = Conn::new();
        conn.run(self, async |db| {
            let failed = |e| map_db_error(e, Failed::Other("reading the primary's log position"));
            let row = db.query_one(WRITE_POSITION, &[]).await.map_err(failed)?;
            let lsn: postgres_types::PgLsn = row.try_get(0).map_err(failed)?;
            Ok(WriteToken::from_lsn(u64::from(lsn)))
        })
        .await
    }
}

/// Where a session's loads and queries go: the primary (the default, for every session
/// kind) or the store's read replica, and which writes a replica read must see.
///
/// Only reads move: `store`, deletes, patches, appends and `save_changes` always go to the
/// primary, and so does every read while the session holds a transaction there (after
/// an exclusive append); schema work never runs on the replica, nor do event store reads
/// (`session.events()`), which stay on the primary. A replica read that must see a write
/// waits, holding no connection between its checks, at most the store's
/// [`replica_wait_timeout`](crate::DocumentStoreBuilder::replica_wait_timeout), then fails
/// with [`Error::ReplicaBehind`](marten_core::Error::ReplicaBehind). Without a replica
/// configured, replica reads go to the primary. Implemented by every session
/// ([`Session`](crate::Session) of any kind, [`QuerySession`]).
pub trait ReplicaReads: QuerySource {
    /// Sends the session's loads and queries to the read replica from now on. They see
    /// what the replica has replayed: without [`wait_for`](Self::wait_for) or
    /// [`read_your_writes`](Self::read_your_writes), possibly not the latest writes, not
    /// even the session's own.
    fn read_from_replica(&mut self) -> &mut Self;

    /// Sends the session's loads and queries to the primary again (the default).
    fn read_from_primary(&mut self) -> &mut Self;

    /// Makes the session's replica reads wait until the replica has replayed the write
    /// of `token` (and of every token given before).
    fn wait_for(&mut self, token: WriteToken) -> &mut Self;

    /// Read-your-writes: each save of the session from now on records the log position
    /// of its commit (read in the save's own round trip), and the session's replica reads
    /// wait until the replica has replayed it. The position is also the session's
    /// [`write_token`](Self::write_token), for another session to wait for. Should a save
    /// commit without its position being read (the connection broke just after), the
    /// session reads from the primary until a later save records one.
    fn read_your_writes(&mut self) -> &mut Self;

    /// The token of the session's last save recorded by
    /// [`read_your_writes`](Self::read_your_writes) (`None` before one).
    fn write_token(&mut self) -> Option<WriteToken>;
}

impl<S: QuerySource> ReplicaReads for S {
    fn read_from_replica(&mut self) -> &mut Self {
        self.source().1.route_mut().set_on_replica(true);
        self
    }

    fn read_from_primary(&mut self) -> &mut Self {
        self.source().1.route_mut().set_on_replica(false);
        self
    }

    fn wait_for(&mut self, token: WriteToken) -> &mut Self {
        self.source().1.route_mut().wait_for(token);
        self
    }

    fn read_your_writes(&mut self) -> &mut Self {
        self.source().1.route_mut().set_read_your_writes(true);
        self
    }

    fn write_token(&mut self) -> Option<WriteToken> {
        self.source().1.route().and_then(|r| r.last_write())
    }
}
