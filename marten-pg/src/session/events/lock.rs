//! Locking a stream's row for `append_exclusive`: the lock is taken now, inside the
//! session's transaction, under a savepoint and a lock timeout (the stream of the
//! session's tenant, with conjoined events). Uses the session's
//! connection (`Request`), the event SQL and `stream_row` to read the locked row.

use std::time::Duration;

use marten_core::{Error, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tracing::warn;

use super::api::Events;
use super::stream_row::{expected_version, reading, version_row};
use crate::connection::{timed_out, within, Request};
use crate::connection::{Db, Pipeline, SqlText, Stmt};
use crate::error_map::{map_db_error, Failed};
use crate::events::read;
use crate::events::EventTenant;
use crate::session::Tracking;
use crate::stream_key::StreamKey;

/// Sets the lock timeout of the current transaction to `$1` (text, `"250ms"`), keeping
/// the one in force in `marten.lock_timeout_before` for [`RESTORE_LOCK_TIMEOUT`].
const SET_LOCK_TIMEOUT: &str = "SELECT set_config('marten.lock_timeout_before', \
     current_setting('lock_timeout'), true), set_config('lock_timeout', $1, true)";

/// Puts back the lock timeout [`SET_LOCK_TIMEOUT`] replaced: the exclusive lock timeout
/// bounds the wait for the stream's row alone, not the rest of the transaction.
const RESTORE_LOCK_TIMEOUT: &str =
    "SELECT set_config('lock_timeout', current_setting('marten.lock_timeout_before'), true)";

impl<K: Tracking> Events<'_, K> {
    /// Locks the stream's row now in the session's transaction, waiting up to the store's
    /// exclusive lock timeout, and returns its version.
    pub(super) async fn lock_stream(
        &mut self,
        tenant: &EventTenant,
        key: &StreamKey,
    ) -> Result<i64> {
        let s = self.session.parts_mut();
        let timeout = s.store.event_config().exclusive_lock_timeout;
        read::ensure(s.store.as_ref()).await?;
        let sql = s.store.events().sql();
        let mut req = s.conn.request(&s.store).await?;
        let answered = within(
            &s.store,
            lock_stream_on(&mut req, &sql.lock_stream, tenant, key, timeout),
        );
        let Some(outcome) = answered.await else {
            req.mark_lost();
            return Err(timed_out(&s.store));
        };
        req.settle(&outcome);
        outcome
    }
}

impl<K: Tracking> Events<'_, K> {
    /// Where the session's transaction stands before an operation that may begin one:
    /// how many were begun.
    pub(super) fn transaction_mark(&self) -> TransactionMark {
        TransactionMark {
            begun: self.session.parts().conn.transactions_begun(),
        }
    }

    /// Whether the transaction open now was begun by the operation that took `mark` (none
    /// was open, or the one that was had been lost): call right after its lock.
    pub(super) fn began_since(&self, mark: &TransactionMark) -> bool {
        self.session.parts().conn.began_since(mark.begun)
    }

    /// Ends the transaction the operation that took `mark` began (`began`, see
    /// [`began_since`](Self::began_since)), and its locks: a rollback within the request
    /// timeout (a rollback that is not answered in time closes the connection, which ends
    /// the transaction on the server). A loss of that transaction found on the way is
    /// over with it; the loss of an earlier one stays for the next save to report.
    pub(super) async fn end_transaction_begun(&mut self, mark: TransactionMark, began: bool) {
        if !began {
            return;
        }
        let s = self.session.parts_mut();
        if s.conn.in_transaction() {
            if let Ok(mut req) = s.conn.request(&s.store).await {
                if within(&s.store, req.rollback()).await.is_none() {
                    req.mark_lost();
                } else {
                    req.finish();
                }
            }
        }
        s.conn.forget_losses_since(mark.begun);
    }
}

/// See [`Events::transaction_mark`].
pub(super) struct TransactionMark {
    begun: u64,
}

/// What the pipelined lock attempt answered: the savepoint and the locking select.
type Answers = (
    Result<(), tokio_postgres::Error>,
    Result<Vec<Row>, tokio_postgres::Error>,
);

/// Locks a stream's row in the connection's transaction (opening one if none is open),
/// waiting at most `timeout`. A failure undoes only this attempt: locks taken earlier in
/// the transaction stay.
async fn lock_stream_on(
    req: &mut Request<'_>,
    lock_sql: &str,
    tenant: &EventTenant,
    key: &StreamKey,
    timeout: Duration,
) -> Result<i64> {
    let client = req.client();
    let lock = client.statement(lock_sql).await.map_err(reading)?;
    let set_timeout = client
        .statement(SqlText::Static(SET_LOCK_TIMEOUT))
        .await
        .map_err(reading)?;
    let restore_timeout = client
        .statement(SqlText::Static(RESTORE_LOCK_TIMEOUT))
        .await
        .map_err(reading)?;
    let began = !req.in_transaction();
    if began {
        // BEGIN is about to be written.
        req.set_in_transaction(true);
    }
    let lock_params = tenant.scoped(vec![key]);
    let answers = send_attempt(
        req.client(),
        began,
        [&set_timeout, &restore_timeout],
        &lock,
        &lock_params,
        timeout,
    )
    .await;
    // Only a select that failed inside the savepoint leaves it to undo: a refused
    // savepoint never opened (the transaction was aborted before), and a select that
    // answered was followed by the savepoint's release.
    let undo = match (&answers, began) {
        (_, true) => Undo::Transaction,
        ((Ok(()), Err(_)), false) => Undo::ToSavepoint,
        _ => Undo::Nothing,
    };
    let outcome = attempt_outcome(answers, key, timeout);
    if outcome.is_err() {
        if let Err(e) = undo_attempt(req, undo).await {
            // The attempt's own failure is the one to report; the connection cannot be
            // trusted to hold the session's transaction any more.
            warn!(error = %e, "could not undo a failed exclusive lock attempt");
            req.mark_lost();
        }
    }
    outcome
}

/// Pipelines the attempt in one round trip: `BEGIN` (if `began`), a savepoint, the lock
/// timeout, the locking select, the lock timeout put back and the savepoint's release.
/// (A failed select aborts what follows; undoing the attempt's savepoint puts the
/// timeout back then.)
async fn send_attempt(
    c: Db<'_>,
    began: bool,
    [set_timeout, restore_timeout]: [&Stmt; 2],
    lock: &Stmt,
    lock_params: &[&(dyn ToSql + Sync)],
    timeout: Duration,
) -> Answers {
    let timeout_text = lock_timeout_text(timeout);
    let timeout_params: [&(dyn ToSql + Sync); 1] = [&timeout_text];
    let mut pipe = Pipeline::new(c, 6);
    // A failed BEGIN fails the savepoint after it, which is what the outcome reads.
    let _begin = began.then(|| pipe.command("BEGIN"));
    let savepoint = pipe.command("SAVEPOINT mt_exclusive");
    let _timeout = pipe.query(set_timeout, &timeout_params);
    let locked = pipe.query(lock, lock_params);
    let _restore = pipe.query(restore_timeout, &[]);
    let _release = pipe.command("RELEASE SAVEPOINT mt_exclusive");
    let mut answers = pipe.send().await;
    (answers.take(savepoint), answers.take(locked))
}

/// The `lock_timeout` setting for `timeout`. PostgreSQL takes at most i32::MAX ms (about
/// 24.8 days): a longer timeout (`Duration::MAX`) waits that long.
fn lock_timeout_text(timeout: Duration) -> String {
    format!("{}ms", timeout.as_millis().clamp(1, i32::MAX as u128))
}

/// The stream's version from the attempt's answers, or why it could not be locked.
fn attempt_outcome(
    (savepoint, locked): Answers,
    key: &StreamKey,
    timeout: Duration,
) -> Result<i64> {
    match (savepoint, locked) {
        (Err(e), _) => Err(map_db_error(e, Failed::Transaction)),
        (_, Ok(rows)) => rows
            .first()
            .map(version_row)
            .transpose()
            .and_then(|row| expected_version(key, row)),
        (_, Err(e)) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            Err(Error::StreamLocked {
                stream: key.0.clone(),
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
        (_, Err(e)) => Err(reading(e)),
    }
}

/// What undoing a failed attempt takes.
enum Undo {
    /// The attempt began the transaction: roll all of it back.
    Transaction,
    /// The select failed inside the attempt's savepoint: roll back to it and release it
    /// (a savepoint rolled back to stays; left, a later attempt's undo could go back to
    /// it and release locks taken since).
    ToSavepoint,
    /// Nothing of the attempt is open.
    Nothing,
}

/// Undoes a failed attempt, as `undo` says.
async fn undo_attempt(req: &mut Request<'_>, undo: Undo) -> Result<()> {
    match undo {
        Undo::Transaction => {
            req.rollback().await;
            Ok(())
        }
        Undo::ToSavepoint => req
            .client()
            .batch_execute("ROLLBACK TO SAVEPOINT mt_exclusive; RELEASE SAVEPOINT mt_exclusive")
            .await
            .map_err(|e| map_db_error(e, Failed::Transaction)),
        Undo::Nothing => Ok(()),
    }
}
