//! An async aggregate's events in its stream's version order, each applied once.
//!
//! The daemon reads events in the gap-safe global order, by transaction, which need not be
//! a stream's version order: a transaction that took its id early (it wrote something
//! else first) and appended version `v + 1` after another transaction appended `v` and
//! committed comes first in that order. So an aggregate's document records the stream
//! version it has folded up to, and its next events are:
//!
//! - those above that version only (an event at or below it was folded already: by an
//!   earlier batch, or inline before the projection became async);
//! - in version order;
//! - without a hole: when the versions the batch saw of the stream (of any type,
//!   dead-lettered ones included) do not run on from the folded version, the missing ones
//!   are earlier events that come later in the global order, and the stream's events in
//!   the whole range are read by version instead ([`Order::Read`]). A stream's versions
//!   are contiguous, and version `v + 1` is appended only after the transaction of `v`
//!   ended, so every version up to the highest the batch saw is committed and readable.
//!
//! After the fold the document records the highest version the batch saw of its stream,
//! as a live fold records the version of the last event it read.
//!
//! A document fed by many streams (a multi-stream projection's) records no version per
//! stream: its slice of a batch is put in each stream's version order in place
//! ([`each_stream_in_order`]), which mends an inversion within a batch but not one
//! across batches.
//!
//! Pure: a backend loads the documents, reads the ranges and folds.

use std::collections::HashMap;
use std::hash::Hash;

/// What a stream's slice of a batch needs before it is folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order<E> {
    /// Fold these, in this order (none: the batch brings nothing new).
    Fold(Vec<E>),
    /// Read the stream's events of versions `after + 1 ..= through` and fold those
    /// instead.
    Read {
        /// The version the document has folded up to.
        after: i64,
        /// The highest version the batch saw.
        through: i64,
    },
}

/// Orders a stream's slice: `folded` is the version its document has folded up to (0 for
/// none), `events` the batch's events of the stream that the aggregate handles, `seen`
/// every version of the stream the batch saw (handled or not, dead-lettered included).
/// Returns the order and the version the document records after the fold.
pub fn order<E>(
    folded: i64,
    mut events: Vec<E>,
    seen: &[i64],
    version: impl Fn(&E) -> i64,
) -> (Order<E>, i64) {
    let mut new: Vec<i64> = seen.iter().copied().filter(|v| *v > folded).collect();
    new.sort_unstable();
    new.dedup();
    let through = new.last().copied().unwrap_or(folded);
    // Each new version is the one after the previous (the first: after the folded one).
    // Checked: the versions are the database's, and a document folded up to `i64::MAX`
    // has no next version (nothing is above it, so nothing is new).
    let runs_on = std::iter::once(&folded)
        .chain(&new)
        .zip(&new)
        .all(|(previous, v)| previous.checked_add(1) == Some(*v));
    if !runs_on {
        return (
            Order::Read {
                after: folded,
                through,
            },
            through,
        );
    }
    events.retain(|e| version(e) > folded);
    events.sort_by_key(|e| version(e));
    (Order::Fold(events), through)
}

/// Puts the events of each stream among `events` in version order, each stream's events
/// keeping the positions its events had (the order across streams is kept).
pub fn each_stream_in_order<E: Clone, K: Hash + Eq>(
    events: &mut [E],
    stream: impl Fn(&E) -> K,
    version: impl Fn(&E) -> i64,
) {
    let mut positions: HashMap<K, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        positions.entry(stream(e)).or_default().push(i);
    }
    let original = events.to_vec();
    for at in positions.values() {
        let mut sorted = at.clone();
        sorted.sort_by_key(|i| version(&original[*i]));
        if sorted != *at {
            for (to, from) in at.iter().zip(&sorted) {
                events[*to] = original[*from].clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered(folded: i64, events: &[i64], seen: &[i64]) -> (Order<i64>, i64) {
        order(folded, events.to_vec(), seen, |v| *v)
    }

    #[test]
    fn a_run_on_from_the_folded_version_is_folded_as_it_is() {
        assert_eq!(ordered(2, &[3, 4], &[3, 4]), (Order::Fold(vec![3, 4]), 4));
    }

    #[test]
    fn events_out_of_version_order_within_the_batch_are_sorted() {
        assert_eq!(
            ordered(0, &[2, 1, 3], &[2, 1, 3]),
            (Order::Fold(vec![1, 2, 3]), 3)
        );
    }

    #[test]
    fn events_already_folded_are_left_out() {
        assert_eq!(
            ordered(5, &[4, 5, 6], &[4, 5, 6]),
            (Order::Fold(vec![6]), 6)
        );
        assert_eq!(ordered(5, &[3, 5], &[3, 5]), (Order::Fold(vec![]), 5));
    }

    #[test]
    fn versions_of_unhandled_events_count_as_seen() {
        // 2 and 4 are events the aggregate does not handle.
        assert_eq!(ordered(1, &[3], &[2, 3, 4]), (Order::Fold(vec![3]), 4));
    }

    #[test]
    fn a_hole_reads_the_range() {
        let read = Order::Read {
            after: 2,
            through: 5,
        };
        assert_eq!(ordered(2, &[3, 5], &[3, 5]), (read, 5));
    }

    #[test]
    fn a_first_version_past_the_next_reads_from_the_folded_one() {
        let read = Order::Read {
            after: 0,
            through: 3,
        };
        assert_eq!(ordered(0, &[3], &[3]), (read, 3));
    }

    #[test]
    fn each_streams_events_are_sorted_in_their_own_places() {
        // (stream, version): stream 1's versions 3 and 2 are inverted.
        let mut events = [(1, 1), (2, 1), (1, 3), (2, 2), (1, 2)];
        each_stream_in_order(&mut events, |e| e.0, |e| e.1);
        assert_eq!(events, [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3)]);
    }

    #[test]
    fn versions_at_the_limits_do_not_overflow() {
        // A document folded up to the greatest version: nothing is new.
        assert_eq!(ordered(i64::MAX, &[], &[]), (Order::Fold(vec![]), i64::MAX));
        assert_eq!(
            ordered(i64::MAX, &[3, i64::MAX], &[3, i64::MAX]),
            (Order::Fold(vec![]), i64::MAX)
        );
        // The greatest version runs on from the one before it.
        assert_eq!(
            ordered(i64::MAX - 1, &[i64::MAX], &[i64::MAX]),
            (Order::Fold(vec![i64::MAX]), i64::MAX)
        );
        assert_eq!(
            ordered(
                i64::MAX - 2,
                &[i64::MAX, i64::MAX - 1],
                &[i64::MAX - 1, i64::MAX]
            ),
            (Order::Fold(vec![i64::MAX - 1, i64::MAX]), i64::MAX)
        );
        let read = Order::Read {
            after: i64::MAX - 2,
            through: i64::MAX,
        };
        assert_eq!(
            ordered(i64::MAX - 2, &[i64::MAX], &[i64::MAX]),
            (read, i64::MAX)
        );
        // The least: a hole up to the first version seen.
        let read = Order::Read {
            after: i64::MIN,
            through: 1,
        };
        assert_eq!(ordered(i64::MIN, &[1], &[1]), (read, 1));
    }

    #[test]
    fn repeated_versions_do_not_make_a_hole() {
        assert_eq!(
            ordered(0, &[1, 2], &[1, 1, 2]),
            (Order::Fold(vec![1, 2]), 2)
        );
    }
}
