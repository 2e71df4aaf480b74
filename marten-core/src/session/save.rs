//! The save loop of a session, generic over the backend that plans and sends one attempt
//! ([`SaveBackend`]): attempts are made until [`SaveAttempts`] says the save is over.
//! The backend keeps its I/O (connections, statements, locks); this loop keeps the rule.

use std::future::Future;

use super::attempts::{AttemptEnd, Next, SaveAttempts};
use crate::Result;

/// A backend that makes one attempt at a session's save: plans the inline projections
/// and sends the unit of work, and says how the attempt ended.
pub trait SaveBackend {
    /// Makes one attempt. `attempts` says whether the attempt may plan from cached
    /// aggregates ([`SaveAttempts::use_cache`]) and which failures will be retried
    /// ([`SaveAttempts::retries`]). An `Err` ends the save at once: the backend could not
    /// even make the attempt (no connection, no answer in time).
    fn attempt(
        &mut self,
        attempts: &SaveAttempts,
    ) -> impl Future<Output = Result<AttemptEnd>> + Send;
}

/// Saves through `backend` until the save commits, fails, or conflicts too often. `held`:
/// the session already held a transaction when the save began.
pub async fn save<B: SaveBackend + Send>(backend: &mut B, held: bool) -> Result<()> {
    let mut attempts = SaveAttempts::new(held);
    loop {
        let end = backend.attempt(&attempts).await?;
        match attempts.next(end) {
            Next::Again => {}
            Next::Done(result) => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// A backend that ends its attempts as scripted and counts them.
    struct Scripted {
        ends: Vec<Result<AttemptEnd>>,
        made: usize,
        cache_uses: Vec<bool>,
    }

    impl SaveBackend for Scripted {
        async fn attempt(&mut self, attempts: &SaveAttempts) -> Result<AttemptEnd> {
            self.cache_uses.push(attempts.use_cache());
            self.made += 1;
            if self.ends.is_empty() {
                return Ok(AttemptEnd::Committed);
            }
            self.ends.remove(0)
        }
    }

    fn run(backend: &mut Scripted, held: bool) -> Result<()> {
        let mut fut = std::pin::pin!(save(backend, held));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("the scripted backend never waits"),
        }
    }

    #[test]
    fn attempts_repeat_until_one_commits_and_only_the_first_uses_the_cache() {
        let mut b = Scripted {
            ends: vec![Ok(AttemptEnd::PlanAgain), Ok(AttemptEnd::Retry)],
            made: 0,
            cache_uses: Vec::new(),
        };
        assert!(run(&mut b, false).is_ok());
        assert_eq!(b.made, 3);
        assert_eq!(b.cache_uses, [true, false, false]);
    }

    #[test]
    fn an_attempt_that_cannot_be_made_ends_the_save() {
        let mut b = Scripted {
            ends: vec![Err(Error::Timeout {
                what: "an answer".into(),
            })],
            made: 0,
            cache_uses: Vec::new(),
        };
        assert!(matches!(run(&mut b, false), Err(Error::Timeout { .. })));
        assert_eq!(b.made, 1);
    }

    #[test]
    fn a_failed_attempt_ends_the_save_with_its_error() {
        let mut b = Scripted {
            ends: vec![Ok(AttemptEnd::Failed(Error::Configuration("x".into())))],
            made: 0,
            cache_uses: Vec::new(),
        };
        assert!(matches!(run(&mut b, false), Err(Error::Configuration(_))));
        assert_eq!(b.made, 1);
    }

    #[test]
    fn a_save_that_keeps_meeting_concurrent_saves_gives_up() {
        let mut b = Scripted {
            ends: (0..100).map(|_| Ok(AttemptEnd::Retry)).collect(),
            made: 0,
            cache_uses: Vec::new(),
        };
        assert!(matches!(
            run(&mut b, true),
            Err(Error::ProjectionConflict { .. })
        ));
        assert_eq!(b.made, crate::session::MAX_SAVE_ATTEMPTS as usize);
        assert!(
            b.cache_uses.iter().all(|u| !u),
            "a held transaction never uses the cache"
        );
    }
}
