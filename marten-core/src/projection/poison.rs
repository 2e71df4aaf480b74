//! What an async projection's runner does when planning a batch fails on an event, or
//! committing it fails on what its writes hold (a constraint of the projected table):
//! retry after a doubling backoff, and once the retries are spent apply the
//! [`PoisonPolicy`] (dead-letter the event and go on without it, or stop the projection).
//! An event whose stored body cannot be decoded meets the policy at once: decoding it
//! again would fail again.
//!
//! Pure: [`on_failure`] decides from the count of failures in a row, [`on_unreadable`]
//! from the policy alone; the runner keeps the count, sleeps, records dead letters and
//! stops.

use std::time::Duration;

/// What happens to an event whose apply keeps failing (or whose projected writes the
/// database keeps refusing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PoisonPolicy {
    /// Record it as a dead letter (in `mt_dead_letters`) with the error and go on without
    /// it (the default).
    #[default]
    DeadLetter,
    /// Stop the projection (the daemon's status reports the error).
    Stop,
}

/// The first retry's delay; each further retry doubles it.
pub const BASE_BACKOFF: Duration = Duration::from_millis(50);

/// The most doublings of [`BASE_BACKOFF`]: no retry waits longer than
/// `BASE_BACKOFF * 2^MAX_DOUBLINGS` (3.2 s).
pub const MAX_DOUBLINGS: u32 = 6;

/// What the runner does after a failed attempt at a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// Try the batch again after waiting this long.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// Dead-letter the failing event, take it out of the batch and plan again (with the
    /// count of failures reset).
    DeadLetter,
    /// Stop the projection with the apply error.
    Stop,
}

/// The delay before retry number `failure` (counted from 1): 50 ms doubled `failure - 1`
/// times, at most [`MAX_DOUBLINGS`] times. `0` counts as `1`.
pub fn backoff(failure: u32) -> Duration {
    let doublings = failure.saturating_sub(1).min(MAX_DOUBLINGS);
    BASE_BACKOFF * (1u32 << doublings)
}

/// What to do after `failures` failed attempts in a row (this one included): retry while
/// `failures <= retries`, then what `policy` says.
pub fn on_failure(failures: u32, retries: u32, policy: PoisonPolicy) -> FailureAction {
    if failures <= retries {
        return FailureAction::Retry {
            after: backoff(failures),
        };
    }
    match policy {
        PoisonPolicy::DeadLetter => FailureAction::DeadLetter,
        PoisonPolicy::Stop => FailureAction::Stop,
    }
}

/// What to do with an event of a type the projection handles whose stored body cannot be
/// decoded (it does not deserialize, or its upcaster refuses it): what `policy` says,
/// without retries.
pub fn on_unreadable(policy: PoisonPolicy) -> FailureAction {
    match policy {
        PoisonPolicy::DeadLetter => FailureAction::DeadLetter,
        PoisonPolicy::Stop => FailureAction::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_from_50ms() {
        let seq: Vec<Duration> = (1..=7).map(backoff).collect();
        assert_eq!(
            seq,
            vec![
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200)
            ]
        );
    }

    #[test]
    fn backoff_is_capped_at_64_times_the_base() {
        assert_eq!(backoff(7), ms(3200));
        assert_eq!(backoff(8), ms(3200));
        assert_eq!(backoff(u32::MAX), ms(3200));
    }

    #[test]
    fn backoff_of_zero_is_the_base() {
        assert_eq!(backoff(0), ms(50));
    }

    #[test]
    fn failures_up_to_retries_are_retried_with_backoff() {
        let actions: Vec<FailureAction> = (1..=3)
            .map(|n| on_failure(n, 3, PoisonPolicy::Stop))
            .collect();
        assert_eq!(
            actions,
            vec![
                FailureAction::Retry { after: ms(50) },
                FailureAction::Retry { after: ms(100) },
                FailureAction::Retry { after: ms(200) },
            ]
        );
    }

    #[test]
    fn the_failure_after_the_last_retry_meets_the_policy() {
        assert_eq!(
            on_failure(4, 3, PoisonPolicy::DeadLetter),
            FailureAction::DeadLetter
        );
        assert_eq!(on_failure(4, 3, PoisonPolicy::Stop), FailureAction::Stop);
    }

    #[test]
    fn no_retries_means_the_first_failure_meets_the_policy() {
        assert_eq!(
            on_failure(1, 0, PoisonPolicy::DeadLetter),
            FailureAction::DeadLetter
        );
        assert_eq!(on_failure(1, 0, PoisonPolicy::Stop), FailureAction::Stop);
    }

    #[test]
    fn many_retries_wait_at_most_the_cap() {
        assert_eq!(
            on_failure(20, 100, PoisonPolicy::Stop),
            FailureAction::Retry { after: ms(3200) }
        );
    }

    #[test]
    fn an_unreadable_event_meets_the_policy_at_once() {
        assert_eq!(
            on_unreadable(PoisonPolicy::DeadLetter),
            FailureAction::DeadLetter
        );
        assert_eq!(on_unreadable(PoisonPolicy::Stop), FailureAction::Stop);
    }

    #[test]
    fn dead_letter_is_the_default_policy() {
        assert_eq!(PoisonPolicy::default(), PoisonPolicy::DeadLetter);
    }
}
