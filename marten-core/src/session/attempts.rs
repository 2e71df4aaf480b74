//! How often a save is planned and sent: again while an inline projection met a stale
//! cache entry or a concurrent save, and, when the save began its own transaction, while
//! the transaction lost a deadlock or a serialization race (the server rolled it back
//! whole, so nothing was written). Any other error ends the save; so does the last
//! attempt, with the last conflict met or [`Error::ProjectionConflict`].
//!
//! Pure: [`SaveAttempts`] counts the attempts and remembers the last conflict; the
//! backend plans, sends, settles its requests and logs.

use crate::{Error, Result};

/// How many times a save is planned and sent before it gives up on conflicts.
pub const MAX_SAVE_ATTEMPTS: u32 = 10;

/// What one attempt at a save ended with.
#[derive(Debug)]
pub enum AttemptEnd {
    /// The save was written.
    Committed,
    /// Planning found a stale cached aggregate: plan again, from locked reads.
    PlanAgain,
    /// An inline projection's assertion met a concurrent save: plan again.
    Retry,
    /// Planning or sending failed with this error.
    Failed(Error),
}

/// What the save does after an attempt.
#[derive(Debug)]
pub enum Next {
    /// Make another attempt.
    Again,
    /// The save is over, with this result.
    Done(Result<()>),
}

/// The attempts of one save: how many were made, whether the session already held a
/// transaction when the save began, and the last conflict met.
#[derive(Debug)]
pub struct SaveAttempts {
    max: u32,
    made: u32,
    held: bool,
    conflict: Option<Error>,
}

impl SaveAttempts {
    /// The attempts of a save allowed [`MAX_SAVE_ATTEMPTS`]; `held` says the session was
    /// already in a transaction when the save began.
    pub fn new(held: bool) -> Self {
        Self::with_max(held, MAX_SAVE_ATTEMPTS)
    }

    /// The attempts of a save allowed `max` attempts (at least one is always made).
    pub fn with_max(held: bool, max: u32) -> Self {
        Self {
            max,
            made: 0,
            held,
            conflict: None,
        }
    }

    /// How many attempts have ended so far.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// Whether the next attempt may build on cached aggregates instead of locked reads:
    /// only the first, and never in a transaction the session already held (its stream
    /// locks would be released by the rollback a stale entry causes).
    pub fn use_cache(&self) -> bool {
        self.made == 0 && !self.held
    }

    /// Whether `error` ends the attempt but not the save: a deadlock or serialization
    /// failure ([`Error::Conflict`]) of a transaction the save began itself.
    pub fn retries(&self, error: &Error) -> bool {
        !self.held && matches!(error, Error::Conflict { .. })
    }

    /// Records how an attempt ended and says what follows: another attempt while the
    /// attempt is retried and attempts remain; else the result (after the last attempt,
    /// the last conflict met, or [`Error::ProjectionConflict`] with the attempts made).
    pub fn next(&mut self, end: AttemptEnd) -> Next {
        self.made = self.made.saturating_add(1);
        match end {
            AttemptEnd::Committed => return Next::Done(Ok(())),
            AttemptEnd::PlanAgain | AttemptEnd::Retry => {}
            AttemptEnd::Failed(e) if self.retries(&e) => self.conflict = Some(e),
            AttemptEnd::Failed(e) => return Next::Done(Err(e)),
        }
        if self.made < self.max {
            return Next::Again;
        }
        Next::Done(Err(self.conflict.take().unwrap_or(
            Error::ProjectionConflict {
                attempts: self.made,
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConflictKind, DatabaseError};

    fn conflict(kind: ConflictKind) -> Error {
        Error::Conflict {
            kind,
            source: DatabaseError {
                code: None,
                context: "test".into(),
                source: "lost".into(),
            },
        }
    }

    fn timeout() -> Error {
        Error::Timeout {
            what: "test".into(),
        }
    }

    fn is_again(next: &Next) -> bool {
        matches!(next, Next::Again)
    }

    #[test]
    fn a_commit_ends_the_save() {
        let mut a = SaveAttempts::new(false);
        assert!(matches!(a.next(AttemptEnd::Committed), Next::Done(Ok(()))));
        assert_eq!(a.made(), 1);
    }

    #[test]
    fn only_the_first_attempt_of_an_own_transaction_uses_the_cache() {
        let mut a = SaveAttempts::new(false);
        assert!(a.use_cache());
        assert!(is_again(&a.next(AttemptEnd::PlanAgain)));
        assert!(!a.use_cache());
        assert!(!SaveAttempts::new(true).use_cache());
    }

    #[test]
    fn plan_again_and_retry_try_again_until_the_last_attempt() {
        for end in [|| AttemptEnd::PlanAgain, || AttemptEnd::Retry] {
            let mut a = SaveAttempts::new(false);
            for _ in 1..MAX_SAVE_ATTEMPTS {
                assert!(is_again(&a.next(end())));
            }
            let last = a.next(end());
            assert!(matches!(
                last,
                Next::Done(Err(Error::ProjectionConflict {
                    attempts: MAX_SAVE_ATTEMPTS
                }))
            ));
        }
    }

    #[test]
    fn a_held_transaction_also_retries_stale_plans() {
        let mut a = SaveAttempts::with_max(true, 2);
        assert!(is_again(&a.next(AttemptEnd::Retry)));
        assert!(matches!(
            a.next(AttemptEnd::PlanAgain),
            Next::Done(Err(Error::ProjectionConflict { attempts: 2 }))
        ));
    }

    #[test]
    fn conflicts_of_an_own_transaction_are_retried() {
        let mut a = SaveAttempts::new(false);
        for kind in [ConflictKind::Deadlock, ConflictKind::Serialization] {
            assert!(a.retries(&conflict(kind)));
            assert!(is_again(&a.next(AttemptEnd::Failed(conflict(kind)))));
        }
        assert!(matches!(a.next(AttemptEnd::Committed), Next::Done(Ok(()))));
        assert_eq!(a.made(), 3);
    }

    #[test]
    fn conflicts_in_a_held_transaction_end_the_save() {
        let mut a = SaveAttempts::new(true);
        assert!(!a.retries(&conflict(ConflictKind::Deadlock)));
        let next = a.next(AttemptEnd::Failed(conflict(ConflictKind::Deadlock)));
        assert!(matches!(next, Next::Done(Err(Error::Conflict { .. }))));
    }

    #[test]
    fn other_errors_end_the_save() {
        for held in [false, true] {
            let mut a = SaveAttempts::new(held);
            assert!(!a.retries(&timeout()));
            let next = a.next(AttemptEnd::Failed(timeout()));
            assert!(matches!(next, Next::Done(Err(Error::Timeout { .. }))));
        }
    }

    #[test]
    fn the_last_conflict_is_returned_after_the_last_attempt() {
        let mut a = SaveAttempts::with_max(false, 4);
        assert!(is_again(
            &a.next(AttemptEnd::Failed(conflict(ConflictKind::Deadlock)))
        ));
        assert!(is_again(&a.next(AttemptEnd::Failed(conflict(
            ConflictKind::Serialization
        )))));
        // A later stale plan does not forget the conflict.
        assert!(is_again(&a.next(AttemptEnd::Retry)));
        let last = a.next(AttemptEnd::PlanAgain);
        assert!(matches!(
            last,
            Next::Done(Err(Error::Conflict {
                kind: ConflictKind::Serialization,
                ..
            }))
        ));
    }

    #[test]
    fn a_conflict_on_the_last_attempt_is_returned() {
        let mut a = SaveAttempts::with_max(false, 1);
        let last = a.next(AttemptEnd::Failed(conflict(ConflictKind::Deadlock)));
        assert!(matches!(
            last,
            Next::Done(Err(Error::Conflict {
                kind: ConflictKind::Deadlock,
                ..
            }))
        ));
    }
}
