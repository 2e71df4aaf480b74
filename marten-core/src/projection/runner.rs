//! What an async projection's runner does after each thing it tries: making the daemon's
//! tables, acquiring the projection, taking a step. A step that worked is followed at
//! once, an idle one after a poll interval; a reset or takeover, or a lost lock, gives
//! the projection up; a poison event ([`Error::Apply`]) stops it; any other failure is
//! retried after a backoff that starts at a poll interval and doubles with each
//! consecutive failure up to [`MAX_BACKOFF`] (see [`backoff`]), so that a persistent
//! database error (a dropped column, a refused permission, a statement timeout) costs a
//! try every few seconds rather than every poll. Tables that cannot be made for a
//! transient reason are tried again after [`WAIT_POLLS`] poll intervals; for any other
//! reason the projection stops. Which failures of planning a batch the events or the
//! projection's own data caused ([`caused_by_data`]), and which failures of committing it
//! the data of its writes caused ([`commit_caused_by_data`]), so that the poison policy,
//! not a retry for ever, meets them, is decided here too.
//!
//! How often a failure that repeats is worth a warning is decided here too
//! ([`LogThrottle`]): the first time, whenever its text changes, and at most every
//! [`WARN_EVERY`] while it stays the same.
//!
//! Pure: the functions here decide from what happened, the poll interval and the time
//! they are given; the runner waits, logs, acquires and steps.

use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How many poll intervals a runner waits before trying the daemon's tables again, or
/// acquiring a projection another node owns.
pub const WAIT_POLLS: u32 = 5;

/// The longest a runner waits between tries of something that keeps failing: a step, a
/// blue/green switch, an acquire.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often a failure that repeats with the same text is warned about again (in
/// between it is logged at debug).
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// How long to wait after the `failures`-th consecutive failure (counting from 1), polling
/// every `poll`: `poll`, doubled with each further failure, capped at [`MAX_BACKOFF`]
/// (never below `poll`).
pub fn backoff(poll: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    poll.saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
        .max(poll)
}

/// Decides which of a repeating failure's reports are warnings: the first, one whose
/// text differs from the last warned, and one [`WARN_EVERY`] after the last warning.
#[derive(Debug, Default)]
pub struct LogThrottle {
    /// The text last warned about, and when.
    last: Option<(String, Instant)>,
}

impl LogThrottle {
    /// Whether a failure reading `text` at `now` is worth a warning (and if so, records
    /// it as the last warned).
    pub fn warn(&mut self, text: &str, now: Instant) -> bool {
        let due = match &self.last {
            Some((last, at)) => last != text || now.saturating_duration_since(*at) >= WARN_EVERY,
            None => true,
        };
        if due {
            self.last = Some((text.to_owned(), now));
        }
        due
    }

    /// Forgets the last failure: the thing failing worked again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// What one step of a runner came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// A batch was committed (or discarded): read again at once.
    Worked,
    /// Nothing to do: wait a poll interval.
    Idle,
    /// The projection was reset or taken over: give it up.
    StepDown,
}

/// What a runner does after a step, or after checking its lock.
#[derive(Debug)]
pub enum Action {
    /// Take the next step at once.
    Continue,
    /// Wait this long, then take the next step.
    Idle(Duration),
    /// The step failed for a reason waiting may cure: report the error, wait this long
    /// and try again.
    Retry {
        /// The step's error.
        error: Error,
        /// How long to wait first.
        after: Duration,
    },
    /// Give the projection up and acquire it again.
    StepDown,
    /// Stop the projection with this error (a poison event).
    Stop(Error),
}

/// What a runner does after trying to make the daemon's tables.
#[derive(Debug)]
pub enum Tables {
    /// They are there: go on.
    Ready,
    /// They could not be made for a reason waiting may cure (the server is down or
    /// restarting): report the error, wait this long and try again.
    Wait {
        /// Why they could not be made.
        error: Error,
        /// How long to wait first.
        after: Duration,
    },
    /// They cannot be made and waiting will not help: stop with this error.
    Stop(Error),
}

/// [`WAIT_POLLS`] poll intervals (saturating).
pub fn long_wait(poll: Duration) -> Duration {
    poll.saturating_mul(WAIT_POLLS)
}

/// What follows a step that ended with `result`, polling every `poll`, after `failed`
/// consecutive failed steps before it. A poison event stops the projection (an apply
/// that kept failing under the stop policy), and so does an event whose stored body or
/// type cannot be read: reading it again would fail again, for ever. Any other failure is
/// retried after [`backoff`] (a poll interval for the first, doubling up to
/// [`MAX_BACKOFF`]); the caller resets `failed` once a step succeeds.
pub fn after_step(result: Result<Turn>, poll: Duration, failed: u32) -> Action {
    match result {
        Ok(Turn::Worked) => Action::Continue,
        Ok(Turn::Idle) => Action::Idle(poll),
        Ok(Turn::StepDown) => Action::StepDown,
        Err(
            e @ (Error::Apply { .. }
            | Error::DeserializeEvent { .. }
            | Error::Upcast { .. }
            | Error::UnknownEventType { .. }),
        ) => Action::Stop(e),
        Err(error) => Action::Retry {
            error,
            after: backoff(poll, failed.saturating_add(1)),
        },
    }
}

/// Whether a failure of planning a batch was caused by its events or by the projection's
/// own data rather than by the database or the connection: an apply that failed, an
/// invalid document id taken from an event, a document that does not serialize (or holds
/// text PostgreSQL cannot store), a stored document that no longer deserializes or is
/// unusable, a conjoined document without a tenant, an invalid stream id. Planning the
/// batch again fails the same way, so the runner meets such a failure with the poison
/// policy (retries with backoff, then a dead letter or a stop) on the event it fails on,
/// never with a retry for ever. Database, connection, pool and timeout failures are not:
/// waiting may cure them.
pub fn caused_by_data(error: &Error) -> bool {
    matches!(
        error,
        Error::Apply { .. }
            | Error::InvalidId { .. }
            | Error::Serialize { .. }
            | Error::Deserialize { .. }
            | Error::InvalidInput { .. }
            | Error::CorruptData { .. }
            | Error::TenantRequired { .. }
            | Error::InvalidStreamId { .. }
    )
}

/// Whether a failure of committing a batch was caused by what its projected writes hold
/// rather than by the database or the connection: the server refused a row (SQLSTATE
/// class 23, an integrity constraint: a unique index, a CHECK, a NOT NULL, a foreign key,
/// an exclusion constraint; a unique index of a document field is
/// [`Error::UniqueViolation`]) or a value (class 22, a data exception: a value too long
/// for its column or out of its range, text that does not convert), or the failure is
/// one [`caused_by_data`] names. Sending the same writes again fails the same way, so
/// the runner meets such a failure with the poison policy on the event whose writes
/// cause it. Connection losses, timeouts, serialization failures and deadlocks are not:
/// waiting may cure them. Nor is an event id that is already stored
/// ([`Error::DuplicateEvent`]): a commit sent again after one whose outcome was lost
/// meets it when the first one landed.
pub fn commit_caused_by_data(error: &Error) -> bool {
    let data_class = |code: &str| matches!(code.get(..2), Some("22" | "23"));
    match error {
        Error::UniqueViolation { .. } => true,
        Error::Database(e) => e.code.as_deref().is_some_and(data_class),
        other => caused_by_data(other),
    }
}

/// What follows checking the lock of an owned projection: a lost lock connection gives
/// the projection up; otherwise the runner goes on.
pub fn after_lock_check(lost: bool) -> Action {
    if lost {
        Action::StepDown
    } else {
        Action::Continue
    }
}

/// How long to wait after trying to acquire a projection: nothing once acquired, else
/// [`WAIT_POLLS`] poll intervals (another node owns it, or the database is unreachable).
pub fn after_acquire(acquired: bool, poll: Duration) -> Option<Duration> {
    (!acquired).then(|| long_wait(poll))
}

/// Whether making the tables failed for a reason waiting may cure: a retryable error
/// ([`Error::is_retryable`]), a timeout, or a lost connection ([`Error::OutcomeUnknown`]).
pub fn tables_transient(error: &Error) -> bool {
    error.is_retryable() || matches!(error, Error::Timeout { .. } | Error::OutcomeUnknown(_))
}

/// What follows trying to make the daemon's tables with `result`, polling every `poll`.
pub fn after_ensure_tables(result: Result<()>, poll: Duration) -> Tables {
    match result {
        Ok(()) => Tables::Ready,
        Err(error) if tables_transient(&error) => Tables::Wait {
            error,
            after: long_wait(poll),
        },
        Err(e) => Tables::Stop(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConflictKind, DatabaseError, StreamId};

    const POLL: Duration = Duration::from_millis(100);

    fn db() -> DatabaseError {
        DatabaseError {
            code: None,
            context: "test".into(),
            source: "down".into(),
        }
    }

    fn apply() -> Error {
        Error::Apply {
            projection: "p",
            event_type: "E".into(),
            stream: StreamId::from("s"),
            version: 1,
            message: "boom".into(),
        }
    }

    #[test]
    fn worked_continues_at_once() {
        assert!(matches!(
            after_step(Ok(Turn::Worked), POLL, 0),
            Action::Continue
        ));
    }

    #[test]
    fn idle_waits_a_poll_interval() {
        assert!(matches!(
            after_step(Ok(Turn::Idle), POLL, 0),
            Action::Idle(d) if d == POLL
        ));
    }

    #[test]
    fn step_down_gives_the_projection_up() {
        assert!(matches!(
            after_step(Ok(Turn::StepDown), POLL, 0),
            Action::StepDown
        ));
    }

    #[test]
    fn consecutive_step_errors_back_off_up_to_the_cap() {
        let after = |failed| match after_step(Err(Error::Database(db())), POLL, failed) {
            Action::Retry { after, .. } => after,
            other => panic!("{other:?}"),
        };
        assert_eq!(after(0), POLL);
        assert_eq!(after(1), POLL * 2);
        assert_eq!(after(3), POLL * 8);
        assert_eq!(after(20), MAX_BACKOFF);
        assert_eq!(after(u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(60), 3), Duration::from_secs(60));
    }

    #[test]
    fn a_repeating_failure_is_warned_about_once_per_text_or_period() {
        let mut t = LogThrottle::default();
        let now = Instant::now();
        assert!(t.warn("a", now));
        assert!(!t.warn("a", now + Duration::from_secs(1)));
        assert!(t.warn("b", now + Duration::from_secs(2)));
        assert!(!t.warn("b", now + Duration::from_secs(3)));
        assert!(t.warn("b", now + Duration::from_secs(2) + WARN_EVERY));
        t.reset();
        assert!(t.warn("b", now + Duration::from_secs(40)));
    }

    #[test]
    fn a_poison_event_stops_the_projection() {
        assert!(matches!(
            after_step(Err(apply()), POLL, 0),
            Action::Stop(Error::Apply { .. })
        ));
    }

    #[test]
    fn an_event_that_cannot_be_read_stops_the_projection() {
        let unreadable = Error::DeserializeEvent {
            event_type: "added".into(),
            sequence: 7,
            stream: None,
            source: serde_json::from_str::<i64>("\"x\"").unwrap_err(),
        };
        assert!(matches!(
            after_step(Err(unreadable), POLL, 0),
            Action::Stop(Error::DeserializeEvent { sequence: 7, .. })
        ));
    }

    #[test]
    fn other_step_errors_retry_after_a_poll_interval() {
        let errors = [
            Error::Database(db()),
            Error::Conflict {
                kind: ConflictKind::Deadlock,
                source: db(),
            },
            Error::Timeout { what: "x".into() },
        ];
        for e in errors {
            assert!(matches!(
                after_step(Err(e), POLL, 0),
                Action::Retry { after, .. } if after == POLL
            ));
        }
    }

    #[test]
    fn failures_of_the_events_data_meet_the_poison_policy() {
        let serde = || serde_json::from_str::<i64>("\"x\"").unwrap_err();
        let data = [
            apply(),
            Error::InvalidId {
                document_type: "D",
                id: String::new(),
                reason: "empty",
            },
            Error::Serialize {
                document_type: "D",
                id: "1".into(),
                source: serde(),
            },
            Error::Deserialize {
                document_type: "D",
                id: "1".into(),
                source: serde(),
            },
            Error::InvalidInput {
                owner: "D".into(),
                id: None,
                field: "name".into(),
                reason: "holds a NUL character",
            },
            Error::CorruptData {
                owner: "D".into(),
                id: None,
                detail: "version".into(),
            },
            Error::TenantRequired { owner: "D".into() },
        ];
        for e in &data {
            assert!(caused_by_data(e), "{e}");
        }
        let transient = [
            Error::Database(db()),
            Error::Connection(db()),
            Error::Timeout { what: "x".into() },
            Error::PoolExhausted {
                size: 1,
                waited_ms: 1,
            },
            Error::OutcomeUnknown(db()),
        ];
        for e in &transient {
            assert!(!caused_by_data(e), "{e}");
        }
    }

    fn coded(code: &str) -> DatabaseError {
        DatabaseError {
            code: Some(code.into()),
            context: "writing D documents".into(),
            source: "refused".into(),
        }
    }

    #[test]
    fn commit_failures_of_the_written_data_meet_the_poison_policy() {
        let data = [
            Error::UniqueViolation {
                document_type: "D",
                field: "email".into(),
                message: "Key (email)=(a) already exists.".into(),
            },
            // A CHECK, a NOT NULL, a unique index of raw SQL, a value too long, one out of
            // range.
            Error::Database(coded("23514")),
            Error::Database(coded("23502")),
            Error::Database(coded("23505")),
            Error::Database(coded("22001")),
            Error::Database(coded("22003")),
            Error::InvalidInput {
                owner: "D".into(),
                id: None,
                field: "name".into(),
                reason: "holds a NUL character",
            },
        ];
        for e in &data {
            assert!(commit_caused_by_data(e), "{e}");
        }
        let transient = [
            Error::Database(db()),
            Error::Database(coded("42P01")),
            Error::Database(coded("2")),
            Error::Connection(coded("08006")),
            Error::Conflict {
                kind: ConflictKind::Serialization,
                source: coded("40001"),
            },
            Error::Conflict {
                kind: ConflictKind::Deadlock,
                source: coded("40P01"),
            },
            Error::Canceled(coded("57014")),
            Error::Timeout { what: "x".into() },
            Error::OutcomeUnknown(db()),
            Error::DuplicateEvent { ids: Vec::new() },
            Error::ProjectionConflict { attempts: 10 },
        ];
        for e in &transient {
            assert!(!commit_caused_by_data(e), "{e}");
        }
    }

    #[test]
    fn a_lost_lock_steps_down() {
        assert!(matches!(after_lock_check(true), Action::StepDown));
        assert!(matches!(after_lock_check(false), Action::Continue));
    }

    #[test]
    fn an_unacquired_projection_waits_five_polls() {
        assert_eq!(after_acquire(false, POLL), Some(POLL * 5));
        assert_eq!(after_acquire(true, POLL), None);
    }

    #[test]
    fn ready_tables_go_on() {
        assert!(matches!(after_ensure_tables(Ok(()), POLL), Tables::Ready));
    }

    #[test]
    fn transient_table_errors_wait_five_polls() {
        let errors = [
            Error::Connection(db()),
            Error::Timeout { what: "x".into() },
            Error::OutcomeUnknown(db()),
            Error::Conflict {
                kind: ConflictKind::Serialization,
                source: db(),
            },
        ];
        for e in errors {
            assert!(tables_transient(&e));
            assert!(matches!(
                after_ensure_tables(Err(e), POLL),
                Tables::Wait { after, .. } if after == POLL * 5
            ));
        }
    }

    #[test]
    fn other_table_errors_stop() {
        for e in [Error::Database(db()), apply()] {
            assert!(!tables_transient(&e));
            assert!(matches!(after_ensure_tables(Err(e), POLL), Tables::Stop(_)));
        }
    }

    #[test]
    fn long_waits_saturate() {
        assert_eq!(long_wait(Duration::MAX), Duration::MAX);
    }
}
