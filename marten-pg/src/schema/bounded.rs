//! A connection of its own for schema work (checking the server, migrating, reading and
//! patching the schema) whose every wait is bounded by the store's request timeout.
//!
//! Connecting is bounded by the pool's create timeout; what is sent once connected is
//! bounded here, step by step: past the request timeout a step fails with
//! [`Error::Timeout`] naming what it waited for, and the connection is cancelled and
//! closed, never used again (closing ends its transaction and the migration lock with
//! it). The same happens to a connection dropped while a step may still run on it (the
//! caller's future was cancelled). Without a request timeout, nothing is bounded.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use marten_core::{Error, Result};
use tokio_postgres::Client;
use tracing::warn;

use crate::connection::{cancel_then_drop, within, Connector, Dedicated};

/// A dedicated connection for schema work and the store whose request timeout bounds
/// each of its steps.
pub(crate) struct SchemaConn<'s> {
    /// `None` only once dropped.
    client: Option<Dedicated>,
    source: &'s Connector,
    /// A step was started and not answered: one under way, or one given up at the
    /// request timeout. The connection may still be running a statement.
    unsettled: AtomicBool,
}

impl<'s> SchemaConn<'s> {
    /// `client`, its steps bounded by the request timeout of `source`.
    pub(crate) fn new(client: Dedicated, source: &'s Connector) -> Self {
        Self {
            client: Some(client),
            source,
            unsettled: AtomicBool::new(false),
        }
    }

    /// The connection, to write a step's statements to.
    pub(crate) fn client(&self) -> &Client {
        match &self.client {
            Some(client) => client,
            // Taken only by `drop`.
            None => unreachable!("a schema connection without its client"),
        }
    }

    /// The store's connections and time limits.
    pub(crate) fn source(&self) -> &'s Connector {
        self.source
    }

    /// Whether a step was given up: the connection is about to be closed and takes no
    /// more statements.
    pub(crate) fn is_lost(&self) -> bool {
        self.unsettled.load(Ordering::SeqCst)
    }

    /// Awaits `work` (statements on [`client`](Self::client)) within the request
    /// timeout. Past it, fails with [`Error::Timeout`] naming `doing` (what the step
    /// is part of, "migrating schema s"); the connection is then lost: it takes no more
    /// steps, and is cancelled and closed when dropped.
    pub(crate) async fn step<T>(
        &self,
        doing: &str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.unsettled.swap(true, Ordering::SeqCst) {
            // A step was given up before: the connection may still run its statement.
            return Err(timed_out(self.source, doing));
        }
        match within(self.source, work).await {
            Some(answered) => {
                self.unsettled.store(false, Ordering::SeqCst);
                answered
            }
            None => {
                warn!(
                    doing,
                    "schema work got no answer within the request timeout"
                );
                Err(timed_out(self.source, doing))
            }
        }
    }
}

impl Drop for SchemaConn<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.unsettled.load(Ordering::SeqCst) {
            // A statement may still run: cancel it, then close the connection.
            cancel_then_drop(client.cancel_request(), client);
        }
    }
}

/// The error of schema work `doing` that got no answer within the request timeout of
/// `source`.
pub(crate) fn timed_out(source: &impl AsRef<Connector>, doing: &str) -> Error {
    let waited = source.as_ref().request_timeout().unwrap_or_default();
    Error::Timeout {
        what: format!("an answer from the database while {doing} (waited {waited:?})"),
    }
}
