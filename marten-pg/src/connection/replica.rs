//! Reads on the store's read replica: where a session's loads and queries go
//! ([`Route`], kept by its [`Conn`]), the position of a committed write in the primary's
//! write-ahead log ([`WriteToken`]), and the bounded wait for the replica to have
//! replayed one before a read.
//!
//! The wait polls `pg_last_wal_replay_lsn()` with a growing pause. Each check takes a
//! pooled connection of the replica and gives it back before pausing, so a waiting
//! session holds nothing while it sleeps; the connection of the check that finds the
//! replica caught up stays with the session for the read (behind a load balancer the
//! next pooled connection might be another server). A server that is not in recovery (a
//! promoted replica, or the primary itself) has every committed write.
//!
//! May use: the rest of the connection layer and the error map.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use marten_core::{Error, Result};
use postgres_types::PgLsn;
use tracing::debug;

use super::{Conn, Connector, Replica};
use crate::error_map::{map_db_error, Failed};

/// Reads where the replica is and whether it is one at all.
const REPLAYED: &str = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()";

/// Read on the primary after a save's `COMMIT`: a position at or past the end of the
/// commit record. With `synchronous_commit` on (or `local`, `remote_*`) the commit record
/// is flushed when `COMMIT` answers, so the flush position covers it; with `off` it may
/// not be, and the insert position does (the replica then gets it once the WAL writer
/// flushes).
pub(crate) const WRITE_POSITION: &str =
    "SELECT CASE WHEN current_setting('synchronous_commit') = 'off' \
     THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_flush_lsn() END";

/// The first pause between two checks of a replica; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(2);

/// The longest pause between two checks of a replica.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The position of a committed write in the primary's write-ahead log (a PostgreSQL log
/// sequence number): a read on the read replica that is given it waits until the replica
/// has replayed that far, and so sees the write.
///
/// A session that asked for it records the token of each save
/// (`ReplicaReads::read_your_writes`, `write_token`); the store gives one that covers
/// every write committed so far (`DocumentStore::write_token`). It prints as PostgreSQL
/// prints an LSN (`16/B374D848`) and parses back from that text, so it can travel in a
/// cookie or a redirect to the request that reads next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteToken(u64);

impl WriteToken {
    /// The token of log position `lsn` (as `pg_lsn` - `'0/0'` counts it).
    pub fn from_lsn(lsn: u64) -> Self {
        WriteToken(lsn)
    }

    /// The log position, as a number.
    pub fn lsn(self) -> u64 {
        self.0
    }
}

impl fmt::Display for WriteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for WriteToken {
    type Err = Error;

    /// Parses PostgreSQL's text form of an LSN (`16/B374D848`).
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidInput {
            owner: "write token".to_owned(),
            id: None,
            field: "value".to_owned(),
            reason: "not a log position like 16/B374D848",
        };
        let (hi, lo) = s.trim().split_once('/').ok_or_else(invalid)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| invalid())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| invalid())?;
        Ok(WriteToken((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// Where a session's loads and queries go, and what it knows of its writes. Kept by the
/// session's [`Conn`]; absent (reads on the primary, nothing recorded) by default.
#[derive(Default)]
pub(crate) struct Route {
    /// Loads and queries go to the replica (when the store has one, and the session is
    /// not inside a transaction on the primary).
    on_replica: bool,
    /// Saves record the position of their commit, and replica reads wait for it.
    read_your_writes: bool,
    /// Replica reads wait until the replica has replayed this (the latest of the tokens
    /// given and the saves recorded).
    wait_for: Option<WriteToken>,
    /// The position of the session's last recorded save.
    last_write: Option<WriteToken>,
    /// A save committed (or may have) and its position could not be read: reads go to
    /// the primary until a later save's position is recorded.
    position_unknown: bool,
    /// Which of the store's replicas the session reads from (chosen in turn at its
    /// first replica read, then kept: its connection and what it knows are that one's).
    replica: Option<usize>,
    /// The session's connection to the replica.
    conn: Conn,
}

impl Route {
    /// Sends loads and queries to the replica (`true`) or the primary.
    pub(crate) fn set_on_replica(&mut self, on: bool) {
        self.on_replica = on;
    }

    /// Makes saves record their position and replica reads wait for it.
    pub(crate) fn set_read_your_writes(&mut self, on: bool) {
        self.read_your_writes = on;
    }

    /// Makes replica reads wait until the replica has replayed `token` (and every token
    /// given before).
    pub(crate) fn wait_for(&mut self, token: WriteToken) {
        self.wait_for = self.wait_for.max(Some(token));
    }

    /// The position of the session's last recorded save.
    pub(crate) fn last_write(&self) -> Option<WriteToken> {
        self.last_write
    }

    /// Whether saves record their position.
    pub(crate) fn records_writes(&self) -> bool {
        self.read_your_writes
    }

    /// Records what a save's position query answered (`None`: no answer).
    pub(crate) fn record_write(&mut self, position: Option<WriteToken>) {
        match position {
            Some(token) => {
                self.position_unknown = false;
                self.last_write = self.last_write.max(Some(token));
                self.wait_for(token);
            }
            None => self.position_unknown = true,
        }
    }

    /// Whether reads go to the replica (when the store has one) rather than the primary.
    fn reads_replica(&self) -> bool {
        self.on_replica && !self.position_unknown
    }
}

impl Conn {
    /// Whether this connection's reads go to a replica: asked for, one configured, and
    /// no transaction open on the primary (reads inside one see its writes only there).
    fn reads_replica(&self, source: &Connector) -> bool {
        let asked = self.route().is_some_and(Route::reads_replica);
        asked && !self.in_transaction() && source.has_replica()
    }

    /// The session's route and its replica (chosen now, in turn, at its first replica
    /// read); `None` when the store has none.
    fn replica_route<'a>(&mut self, source: &'a Connector) -> Option<(&mut Route, &'a Replica)> {
        let route = self.route_mut();
        let index = match route.replica {
            Some(index) => index,
            None => *route.replica.insert(source.next_replica()?),
        };
        Some((route, source.replica(index)?))
    }

    /// Runs `f` as one read request: on the replica when this connection's reads go
    /// there (after it has replayed what the session waits for), else as
    /// [`run`](Self::run) on the primary.
    pub(crate) async fn read<T>(
        &mut self,
        source: &impl AsRef<Connector>,
        f: impl AsyncFnOnce(super::Db<'_>) -> Result<T>,
    ) -> Result<T> {
        if !self.reads_replica(source.as_ref()) {
            return self.run(source, f).await;
        }
        let Some((route, replica)) = self.replica_route(source.as_ref()) else {
            return Err(no_replica());
        };
        caught_up(route, replica).await?;
        route.conn.run(&replica.connector, f).await
    }

    /// Starts a read request (for a read whose rows stream): on the replica when this
    /// connection's reads go there, as [`read`](Self::read) does.
    pub(crate) async fn read_request(
        &mut self,
        source: &impl AsRef<Connector>,
    ) -> Result<super::Request<'_>> {
        if !self.reads_replica(source.as_ref()) {
            return self.request(source).await;
        }
        let Some((route, replica)) = self.replica_route(source.as_ref()) else {
            return Err(no_replica());
        };
        caught_up(route, replica).await?;
        route.conn.request(&replica.connector).await
    }
}

/// The error of a replica read on a store whose replicas vanished between two looks
/// (which a store's fixed list of replicas never does).
fn no_replica() -> Error {
    Error::Configuration("the store has no read replica".to_owned())
}

/// Waits until the replica's server behind `route`'s connection has replayed what the
/// route waits for (at once when it is known to have), within the replica's wait
/// timeout: [`Error::ReplicaBehind`] past it.
async fn caught_up(route: &mut Route, replica: &Replica) -> Result<()> {
    let Some(target) = route.wait_for else {
        return Ok(());
    };
    if route.conn.replayed.is_some_and(|r| r >= target.0) && route.conn.holds_usable() {
        return Ok(());
    }
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let (in_recovery, replayed) = check(&mut route.conn, &replica.connector).await?;
        if !in_recovery || replayed.is_some_and(|r| r >= target.0) {
            route.conn.replayed = Some(replayed.unwrap_or(target.0).max(target.0));
            return Ok(());
        }
        // Not there yet: the connection goes back to the pool while the read pauses.
        route.conn.release();
        let waited = started.elapsed();
        let Some(left) = replica
            .wait_timeout
            .checked_sub(waited)
            .filter(|l| !l.is_zero())
        else {
            return Err(Error::ReplicaBehind {
                position: target.to_string(),
                replayed: replayed.map(|r| WriteToken(r).to_string()),
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            });
        };
        debug!(%target, pause_ms = pause.as_millis(), "waiting for the read replica");
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Asks the replica behind `conn` whether it is in recovery and how far it replayed.
async fn check(conn: &mut Conn, replica: &Connector) -> Result<(bool, Option<u64>)> {
    conn.run(replica, async |db| {
        let failed = |e| map_db_error(e, Failed::Other("reading the replica's replay position"));
        let row = db.query_one(REPLAYED, &[]).await.map_err(failed)?;
        let in_recovery: bool = row.try_get(0).map_err(failed)?;
        let replayed: Option<PgLsn> = row.try_get(1).map_err(failed)?;
        Ok((in_recovery, replayed.map(u64::from)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_print_and_parse_as_postgresql_prints_a_log_position() {
        let token = WriteToken::from_lsn(0x16_B374_D848);
        assert_eq!(token.to_string(), "16/B374D848");
        assert_eq!("16/B374D848".parse::<WriteToken>().ok(), Some(token));
        assert_eq!("0/0".parse::<WriteToken>().ok(), Some(WriteToken(0)));
        assert_eq!(
            "FFFFFFFF/FFFFFFFF".parse::<WriteToken>().ok(),
            Some(WriteToken(u64::MAX))
        );
        for bad in ["", "16", "16/", "/1", "x/1", "1/100000000", "1/2/3"] {
            assert!(bad.parse::<WriteToken>().is_err(), "{bad:?}");
        }
        assert!(WriteToken(1) < WriteToken(1 << 32));
    }

    #[test]
    fn a_route_waits_for_the_latest_position_and_reads_the_primary_after_an_unknown_one() {
        let mut route = Route::default();
        route.set_on_replica(true);
        route.wait_for(WriteToken(10));
        route.wait_for(WriteToken(5));
        assert_eq!(route.wait_for, Some(WriteToken(10)));
        route.record_write(Some(WriteToken(20)));
        assert_eq!(route.wait_for, Some(WriteToken(20)));
        assert_eq!(route.last_write(), Some(WriteToken(20)));
        assert!(route.reads_replica());
        route.record_write(None);
        assert!(
            !route.reads_replica(),
            "an unknown position reads the primary"
        );
        route.record_write(Some(WriteToken(30)));
        assert!(route.reads_replica());
    }
}
