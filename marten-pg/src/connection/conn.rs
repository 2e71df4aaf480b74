//! The connection owner: one pooled connection and the state it is in.
//!
//! Every request of a session, of the daemon and of the command line goes through a
//! [`Conn`]. A request is a [`Request`] guard: it exists from before the first statement
//! is written until the caller says its responses were read ([`Request::finish`]). A guard
//! dropped before that - the caller's future was cancelled, or it returned early - means
//! the connection may still be running a statement or be inside a transaction nobody
//! will end, so the connection is closed on the spot (a cancel request stops what runs on
//! it; closing rolls back its transaction and frees its locks), never handed back to the
//! pool. A `Conn` dropped while it holds an open transaction (a session that took an
//! exclusive stream lock and was never saved) is closed the same way.
//!
//! Cancellation safety is therefore a property of this type, not of each call site: code
//! that sends requests only has to finish its guard after the last response was read.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use marten_core::{Error, Result};
use tracing::{debug, warn};

use super::cancel::cancel_then_drop;
use super::deadlines::Within;
use super::replica::{Route, WriteToken};
use super::{Connector, Db, Pooled, Statements};

/// How a held transaction was lost: its connection was found closed.
const CLOSED: &str = "its connection was closed";
/// How a held transaction was lost: a request on it timed out or was cancelled.
const GIVEN_UP: &str = "a request on its connection timed out or was cancelled";
/// How a held transaction was lost: a request on it failed on the connection.
const FAILED: &str = "a request on its connection failed";

/// A connection slot: empty until the first request, then one pooled connection. Public
/// only in name (sessions hand it to queries); nothing outside the crate can use it.
#[derive(Default)]
pub struct Conn {
    slot: Option<Pooled>,
    /// A transaction is open: `BEGIN` was (or is about to be) written and no answer to a
    /// `COMMIT` or `ROLLBACK` has been read since.
    in_transaction: bool,
    /// How many transactions were begun through this slot: an operation that compares
    /// it before and after knows whether it began the transaction open now.
    begun: u64,
    /// The connection failed or is in an unknown state: close it before the next request.
    broken: bool,
    /// A transaction held across requests (a session's exclusive stream locks) ended
    /// without a `COMMIT`: the connection was lost or closed while it was open. The
    /// session's next save reports it instead of running without the locks
    /// ([`take_lost_transaction`](Self::take_lost_transaction)); what ended it, and
    /// which transaction it was (its number in [`Conn::transactions_begun`]'s count).
    /// The earliest loss not yet reported is kept.
    lost_transaction: Option<(&'static str, u64)>,
    /// A request may still run on the server: send a cancel request when closing.
    cancel_on_discard: bool,
    /// Statements its requests use instead of the store's (a blue/green build's, which
    /// send a document table's statements to the version's own table).
    statements: Option<Arc<Statements>>,
    /// Where a session's reads go and what it knows of its writes (see `replica.rs`):
    /// `None` until the session asks for replica reads or write tokens.
    route: Option<Box<Route>>,
    /// How far the server behind the connection in the slot was seen to have replayed
    /// the primary's log (a replica's connection): forgotten with the connection.
    pub(super) replayed: Option<u64>,
}

impl Conn {
    /// An empty slot.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An empty slot whose requests use `statements` instead of the store's.
    pub(crate) fn with_statements(statements: Arc<Statements>) -> Self {
        let mut conn = Self::default();
        conn.statements = Some(statements);
        conn
    }

    /// Whether a transaction is open on the connection.
    pub(crate) fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// How many transactions were begun through this slot.
    pub(crate) fn transactions_begun(&self) -> u64 {
        self.begun
    }

    /// Whether the transaction open now was begun after [`transactions_begun`] read
    /// `before`: by the operation that read it, not by an earlier one (whose transaction
    /// may have been lost meanwhile).
    ///
    /// [`transactions_begun`]: Self::transactions_begun
    pub(crate) fn began_since(&self, before: u64) -> bool {
        self.in_transaction && self.begun != before
    }

    /// Whether a transaction held across requests was lost and its loss is still to be
    /// reported (see [`take_lost_transaction`](Self::take_lost_transaction)).
    pub(crate) fn lost_transaction_pending(&self) -> bool {
        self.lost_transaction.is_some()
    }

    /// Forgets a loss of a transaction begun after [`transactions_begun`] read `before`
    /// (an operation that began it, and ends it, reports its loss itself); the loss of
    /// an earlier one stays to be reported.
    ///
    /// [`transactions_begun`]: Self::transactions_begun
    pub(crate) fn forget_losses_since(&mut self, before: u64) {
        if self.lost_transaction.is_some_and(|(_, lost)| lost > before) {
            self.lost_transaction = None;
        }
    }

    /// How a transaction held across requests was lost since the last call, if it was,
    /// and forgets it: a save that was to commit under its locks must not run without
    /// them.
    pub(crate) fn take_lost_transaction(&mut self) -> Option<&'static str> {
        self.lost_transaction.take().map(|(cause, _)| cause)
    }

    /// Ends the transaction on this side because its connection is lost or to be closed:
    /// `held`, it was open before the request at hand began (it holds locks a later
    /// save counts on), so the loss is kept for that save to report.
    fn lose_transaction(&mut self, held: bool, cause: &'static str) {
        if self.in_transaction && held && self.lost_transaction.is_none() {
            self.lost_transaction = Some((cause, self.begun));
        }
        self.in_transaction = false;
    }

    /// Where the session's reads go, created (reads on the primary) on first use.
    pub(crate) fn route_mut(&mut self) -> &mut Route {
        self.route.get_or_insert_with(Box::default)
    }

    /// Where the session's reads go, if it ever asked.
    pub(crate) fn route(&self) -> Option<&Route> {
        self.route.as_deref()
    }

    /// Whether the slot holds a connection the next request will use as it is (open,
    /// not broken).
    pub(super) fn holds_usable(&self) -> bool {
        !self.broken && self.slot.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Gives the connection in the slot back to the pool when it is clean (no
    /// transaction, not broken); a connection in another state stays.
    pub(super) fn release(&mut self) {
        if !self.in_transaction && !self.broken {
            self.replayed = None;
            self.slot = None;
        }
    }

    /// Makes the connection in the slot available to other work until the next request
    /// takes one again (schema work on a caller's pool, whose connections may all be out,
    /// one of them here): a clean one goes back to the pool and a broken one is closed;
    /// one inside a transaction stays where it is.
    pub(crate) fn set_aside(&mut self) {
        if self.broken || self.slot.as_ref().is_some_and(|c| c.is_closed()) {
            self.lose_transaction(true, CLOSED);
            self.discard(self.cancel_on_discard);
        } else {
            self.release();
        }
    }

    /// Starts a request, taking a connection from the store's pool if the slot is empty
    /// (a bounded wait: [`marten_core::Error::PoolExhausted`]).
    pub(crate) async fn request(&mut self, source: &impl AsRef<Connector>) -> Result<Request<'_>> {
        if self.broken || self.slot.as_ref().is_some_and(|c| c.is_closed()) {
            // Closed by the server (or its socket) between requests: a transaction open
            // on it is gone with its locks.
            self.lose_transaction(true, CLOSED);
            self.discard(self.cancel_on_discard);
        }
        if self.slot.is_none() {
            self.slot = Some(source.as_ref().pooled().await?);
        }
        let statements = match &self.statements {
            Some(own) => own.clone(),
            None => source.as_ref().statements().clone(),
        };
        let held = self.in_transaction;
        Ok(Request {
            conn: self,
            statements,
            finished: false,
            held,
        })
    }

    /// Runs `f` as one request: its statements, all their responses read.
    /// The wait for the answers is bounded by the store's request timeout: past it, the
    /// request is abandoned (its connection cancelled and closed) and the caller gets
    /// [`Error::Timeout`]. For reads and work that is safe to repeat; saves report an
    /// unknown outcome themselves (see the unit of work).
    pub(crate) async fn run<T>(
        &mut self,
        source: &impl AsRef<Connector>,
        f: impl AsyncFnOnce(Db<'_>) -> Result<T>,
    ) -> Result<T> {
        let req = self.request(source).await?;
        let Some(result) = within(source, f(req.client())).await else {
            warn!("a request timed out");
            // Unfinished: the guard cancels and closes the connection.
            drop(req);
            return Err(timed_out(source));
        };
        req.settle(&result);
        result
    }

    /// Closes the connection without returning it to the pool. `cancel`: a statement may
    /// still run on it, so a cancel request is sent first (on the runtime, bounded). A
    /// connection of the store's pool keeps its place in the pool until it is closed
    /// (after its cancel request): a storm of timeouts never has more connections open
    /// than the pool's size.
    fn discard(&mut self, cancel: bool) {
        self.replayed = None;
        self.in_transaction = false;
        self.broken = false;
        self.cancel_on_discard = false;
        let Some(obj) = self.slot.take() else {
            return;
        };
        if !cancel {
            drop(obj.retire());
            return;
        }
        let request = obj.cancel_request();
        cancel_then_drop(request, obj.retire());
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if (self.in_transaction || self.broken) && self.slot.is_some() {
            debug!("closing a connection dropped inside a transaction");
            self.discard(self.cancel_on_discard);
        }
    }
}

/// A request in flight on a [`Conn`]: see the module documentation.
pub(crate) struct Request<'c> {
    conn: &'c mut Conn,
    statements: Arc<Statements>,
    finished: bool,
    /// A transaction was open when the request began (held across requests).
    held: bool,
}

impl Request<'_> {
    /// The connection to write statements to, with the store's statements.
    pub(crate) fn client(&self) -> Db<'_> {
        match &self.conn.slot {
            Some(obj) => Db::new(obj, &self.statements),
            // `Conn::request` filled the slot and only this guard's drop empties it.
            None => unreachable!("a request without a connection"),
        }
    }

    /// Whether a transaction is open on the connection.
    pub(crate) fn in_transaction(&self) -> bool {
        self.conn.in_transaction
    }

    /// [`Conn::take_lost_transaction`] of the request's connection (the request that
    /// found it closed has already recorded the loss).
    pub(crate) fn take_lost_transaction(&mut self) -> Option<&'static str> {
        self.conn.take_lost_transaction()
    }

    /// Records that a transaction is open (call before `BEGIN` is written) or over (call
    /// after the answer to `COMMIT` or `ROLLBACK` was read).
    pub(crate) fn set_in_transaction(&mut self, open: bool) {
        if open && !self.conn.in_transaction {
            self.conn.begun = self.conn.begun.wrapping_add(1);
        }
        self.conn.in_transaction = open;
    }

    /// Ends an open transaction with `ROLLBACK`; if that fails, the connection is closed
    /// before its next request.
    pub(crate) async fn rollback(&mut self) {
        if !self.conn.in_transaction || self.conn.broken {
            return;
        }
        match self.client().raw().batch_execute("ROLLBACK").await {
            Ok(()) => self.conn.in_transaction = false,
            Err(e) => {
                warn!(error = %e, "rollback failed; the connection will be closed");
                // Closing it ends the transaction the rollback was to end.
                self.conn.broken = true;
                self.conn.in_transaction = false;
            }
        }
    }

    /// [`rollback`](Self::rollback) within the store's request timeout; past it the
    /// request is marked lost (its connection cancelled and closed, which ends the
    /// transaction on the server).
    pub(crate) async fn rollback_within(&mut self, source: &impl AsRef<Connector>) {
        if within(source, self.rollback()).await.is_none() {
            self.mark_lost();
        }
    }

    /// Whether the session records the log position of its saves (it asked for
    /// read-your-writes on the replica): the save then reads it after `COMMIT`, in the
    /// same round trip.
    pub(crate) fn records_write_position(&self) -> bool {
        self.conn.route().is_some_and(Route::records_writes)
    }

    /// Records the log position a save's `COMMIT` reached (`None`: the save may have
    /// committed and its position could not be read).
    pub(crate) fn record_write_position(&mut self, position: Option<WriteToken>) {
        self.conn.route_mut().record_write(position);
    }

    /// Every response of the request was read: the connection is in a known state.
    pub(crate) fn finish(mut self) {
        self.finished = true;
    }

    /// Every response was read and `result` is what came of them: a broken connection
    /// ([`Error::Connection`]) is closed before the next request.
    pub(crate) fn settle<T>(self, result: &Result<T>) {
        match result {
            Ok(_) => self.finish(),
            Err(e) => self.settle_error(e),
        }
    }

    /// Every response was read and the request failed with `error`.
    pub(crate) fn settle_error(self, error: &Error) {
        if matches!(error, Error::Connection(_) | Error::OutcomeUnknown(_)) {
            self.finish_broken();
        } else {
            self.finish();
        }
    }

    /// The connection was lost, or a request on it was given up while it may still run on
    /// the server: it is closed (with a cancel request) before the next request, and its
    /// transaction, if any, is over for this side.
    pub(crate) fn mark_lost(&mut self) {
        self.conn.broken = true;
        self.conn.cancel_on_discard = true;
        self.conn.lose_transaction(self.held, GIVEN_UP);
    }

    /// The request failed in a way that leaves the connection unusable or its state
    /// unknown (it broke, or a transaction could not be ended): close it before the
    /// next request.
    pub(crate) fn finish_broken(mut self) {
        self.finished = true;
        self.conn.broken = true;
        self.conn.lose_transaction(self.held, FAILED);
    }
}

impl<'c> Request<'c> {
    /// Runs `work`, a transaction on this request, within the store's request timeout,
    /// and settles the request: past the timeout it is marked lost (its connection is
    /// cancelled and closed, which ends the transaction on the server) and the caller
    /// gets [`Error::Timeout`]; a transaction that failed is rolled back. (`work` returns
    /// a boxed future: a future of an async closure over a borrowed request is not `Send`
    /// for every lifetime, which the daemon's spawned tasks need.)
    pub(crate) async fn transaction_within<T>(
        mut self,
        source: &impl AsRef<Connector>,
        work: impl for<'r> FnOnce(&'r mut Request<'c>) -> BoxFuture<'r, Result<T>>,
    ) -> Result<T> {
        let Some(result) = within(source, work(&mut self)).await else {
            self.mark_lost();
            return Err(timed_out(source));
        };
        if result.is_err() {
            self.rollback_within(source).await;
        }
        self.settle(&result);
        result
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if !self.finished {
            if self.conn.slot.is_some() {
                warn!("a request was abandoned before its responses were read; closing its connection");
            }
            self.conn.lose_transaction(self.held, GIVEN_UP);
            self.conn.discard(true);
        }
    }
}

/// A request's `answers` awaited within the store's request timeout. `None`: the time ran
/// out; the caller marks its request lost ([`Request::mark_lost`]) and reports
/// [`timed_out`].
pub(crate) fn within<F: std::future::Future>(
    source: &impl AsRef<Connector>,
    answers: F,
) -> Within<'static, F> {
    source.as_ref().within(answers)
}

/// The unknown outcome of a write that was handed to the connection and got no answer
/// (`awaited`: "the answer to COMMIT") within the store's request timeout: it may have
/// committed.
pub(crate) fn unanswered(source: &impl AsRef<Connector>, awaited: &str) -> Error {
    let waited = source.as_ref().request_timeout().unwrap_or_default();
    Error::OutcomeUnknown(marten_core::DatabaseError {
        code: None,
        context: format!("waiting for {awaited}"),
        source: format!("no answer within {} ms", waited.as_millis()).into(),
    })
}

/// The error of a request that got no answer within the store's request timeout.
pub(crate) fn timed_out(source: &impl AsRef<Connector>) -> Error {
    let waited = source.as_ref().request_timeout().unwrap_or_default();
    Error::Timeout {
        what: format!("an answer from the database (waited {waited:?})"),
    }
}
