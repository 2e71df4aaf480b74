//! A save whose answers were lost: what it handed to the connection, and asking the
//! server, on another connection, what became of its transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use marten_core::{DatabaseError, Error};
use tokio_postgres::{Row, SimpleQueryMessage};
use tracing::{debug, warn};

use crate::connection::{Answers, Handle, Request};
use crate::error_map::{is_lost, lost_error};
use crate::schema::Catalog;

/// How long asking the server what became of a transaction may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The id and backend of the save's transaction (assigning the id now: the save writes).
pub(super) const TRANSACTION_IDENT: &str = "SELECT pg_current_xact_id(), pg_backend_pid()";

/// `BEGIN` and [`TRANSACTION_IDENT`] as one simple query: one request, one answer (its
/// row in text).
pub(super) const BEGIN_AND_IDENT: &str = "BEGIN; SELECT pg_current_xact_id(), pg_backend_pid()";

/// What a save's flight left behind for a caller that lost its answers: whether any of it
/// was handed to the connection, and the id and backend of its transaction once read.
#[derive(Default)]
pub(super) struct FlightProbe {
    sent: AtomicBool,
    ident: OnceLock<(String, i32)>,
}

impl FlightProbe {
    /// The save is about to be handed to the connection.
    pub(super) fn mark_sent(&self) {
        self.sent.store(true, Ordering::SeqCst);
    }

    /// Records the transaction's id and backend from the answer to [`TRANSACTION_IDENT`].
    pub(super) fn record(&self, rows: &[Row]) {
        if let Some(row) = rows.first() {
            let xid = row.try_get::<_, crate::xid8::Xid8>(0);
            if let (Ok(xid), Ok(pid)) = (xid, row.try_get::<_, i32>(1)) {
                let _ = self.ident.set((xid.0.to_string(), pid));
            }
        }
    }

    /// [`FlightProbe::record`] from the text answer to [`BEGIN_AND_IDENT`].
    pub(super) fn record_text(&self, messages: &[SimpleQueryMessage]) {
        let row = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        let field = |i| row.and_then(|r| r.try_get(i).ok().flatten());
        let (Some(xid), Some(pid)) = (field(0), field(1)) else {
            return;
        };
        if let (Ok(xid), Ok(pid)) = (xid.parse::<u64>(), pid.parse::<i32>()) {
            let _ = self.ident.set((xid.to_string(), pid));
        }
    }
}

/// The error that ends a lost flight: the answer behind `last` (COMMIT's, or the lone
/// statement's) was lost with the connection, and no other answer was an error of the
/// server (which would have doomed the transaction).
pub(super) fn commit_lost<K>(
    answers: &mut Answers,
    last: &Handle<K>,
    context: &str,
) -> Option<DatabaseError> {
    let lost = matches!(answers.peek(last), Some(Err(e)) if is_lost(e));
    if !lost || answers.server_error_besides(last) {
        return None;
    }
    answers.take_error(last).map(|e| lost_error(e, context))
}

/// Gives up a save whose answers did not arrive within the store's request timeout: its
/// statements may still run (or be stuck) on the server, so its connection is marked
/// lost; the error says whether anything of the save was handed to the connection.
pub(super) fn timed_out(req: &mut Request<'_>, probe: &FlightProbe, store: &Catalog) -> Error {
    let limit = store.request_timeout().unwrap_or_default();
    warn!(timeout_ms = limit.as_millis(), "save_changes timed out");
    req.mark_lost();
    if probe.sent.load(Ordering::SeqCst) {
        crate::connection::unanswered(store, "the answers of the save")
    } else {
        Error::Timeout {
            what: format!(
                "the answers of save_changes (request timeout of {} ms)",
                limit.as_millis()
            ),
        }
    }
}

/// Asks the server, on a connection of its own, what became of a transaction whose
/// COMMIT answer was lost. An aborted transaction wrote nothing: the failure is a plain
/// [`Error::Connection`] (or [`Error::Timeout`] when the request timed out). Otherwise
/// (committed, or nothing could be learned) the outcome stays unknown to the caller.
pub(super) async fn resolve(
    store: &Catalog,
    probe: &FlightProbe,
    source: DatabaseError,
    timed_out: bool,
) -> Error {
    let Some((xid, pid)) = probe.ident.get() else {
        return Error::OutcomeUnknown(source);
    };
    let limit = store
        .request_timeout()
        .map_or(RESOLVE_TIMEOUT, |t| t.min(RESOLVE_TIMEOUT));
    match tokio::time::timeout(limit, transaction_status(store, xid, *pid)).await {
        Ok(Some(false)) => {
            debug!(
                xid,
                "the lost save's transaction was rolled back: nothing was written"
            );
            if timed_out {
                Error::Timeout {
                    what: "the answers of save_changes (request timeout); nothing was written"
                        .to_owned(),
                }
            } else {
                Error::Connection(source)
            }
        }
        Ok(Some(true)) => {
            warn!(
                xid,
                "the lost save's transaction committed; its answers were lost"
            );
            Error::OutcomeUnknown(source)
        }
        Ok(None) | Err(_) => {
            warn!(
                xid,
                "could not learn what became of the lost save's transaction"
            );
            Error::OutcomeUnknown(source)
        }
    }
}

/// `Some(true)`: committed, `Some(false)`: rolled back, `None`: unknown. A transaction
/// still in progress belongs to a backend that has not noticed its client is gone; it
/// is terminated (only if it still runs that transaction), which settles it.
async fn transaction_status(store: &Catalog, xid: &str, pid: i32) -> Option<bool> {
    let client = store.dedicated_connection().await.ok()?;
    loop {
        let row = client
            .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid])
            .await
            .ok()?;
        let status: Option<String> = row.try_get(0).ok()?;
        match status.as_deref() {
            Some("committed") => return Some(true),
            Some("aborted") => return Some(false),
            Some("in progress") => {
                let ended = client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE pid = $1 AND backend_xid = $2::text::xid8::xid",
                        &[&pid, &xid],
                    )
                    .await;
                if let Err(e) = ended {
                    debug!(error = %e, "cannot end the lost save's backend");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return None,
        }
    }
}
