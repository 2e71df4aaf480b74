//! The stream versions an inline save's projections require: each projection that read
//! a stream (under lock, or from the aggregate cache) reports the version it built on,
//! per append. The requirements are merged; two different versions for one append are a
//! conflict (a stale cache entry, a stream created after the save's reservation found it
//! missing, or an append racing between two locked reads). Every plain append with a
//! requirement then asserts it: [`assertion`] says how.
//!
//! Pure: [`merge`] decides from the requirements and whether any came from a read not
//! under lock; the backend forgets the cache hits, plans again and rewrites its appends.

use std::collections::HashMap;

use crate::{Error, Result};

/// Merged requirements: which stream version each append (by its index in the unit of
/// work) must find.
pub type Required = HashMap<usize, i64>;

/// What the merged requirements of one planning come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// No append is required at two versions: these are the versions to assert.
    Required(Required),
    /// Two projections disagree on an append's version and some read came from the
    /// cache: forget the cache hits and plan the save again (from locked reads).
    PlanAgain,
}

/// Merges `requirements` (`(append index, stream version)`, in any order). Two different
/// versions for one append are a conflict: with `stale` (some requirement came from a
/// read not under lock: a cached aggregate, or a stream the reservation found missing and
/// so could not lock) the outcome is [`Merge::PlanAgain`]; without, the locked reads
/// themselves disagree and the save fails with [`Error::ProjectionConflict`] (0 attempts).
pub fn merge(requirements: impl IntoIterator<Item = (usize, i64)>, stale: bool) -> Result<Merge> {
    let mut required = Required::new();
    for (index, version) in requirements {
        match required.get(&index) {
            Some(v) if *v != version => {
                if stale {
                    return Ok(Merge::PlanAgain);
                }
                return Err(Error::ProjectionConflict { attempts: 0 });
            }
            _ => {
                required.insert(index, version);
            }
        }
    }
    Ok(Merge::Required(required))
}

/// What a plain append asserts once a projection requires its stream at a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assertion {
    /// The stream must not exist (the projection found it empty: version 0).
    Start,
    /// The stream must be at this version.
    Expected(i64),
}

/// The assertion for a required `version`: [`Assertion::Start`] for 0, else
/// [`Assertion::Expected`].
pub fn assertion(version: i64) -> Assertion {
    if version == 0 {
        Assertion::Start
    } else {
        Assertion::Expected(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(pairs: &[(usize, i64)]) -> Merge {
        Merge::Required(pairs.iter().copied().collect())
    }

    #[test]
    fn no_requirements_merge_to_nothing() {
        for hits in [false, true] {
            assert_eq!(merge([], hits).ok(), Some(required(&[])));
        }
    }

    #[test]
    fn distinct_appends_are_kept() {
        let merged = merge([(0, 3), (2, 0), (5, 7)], false).ok();
        assert_eq!(merged, Some(required(&[(0, 3), (2, 0), (5, 7)])));
    }

    #[test]
    fn agreeing_requirements_merge() {
        let merged = merge([(1, 4), (1, 4), (0, 2), (1, 4)], true).ok();
        assert_eq!(merged, Some(required(&[(0, 2), (1, 4)])));
    }

    #[test]
    fn disagreement_without_cache_hits_is_a_conflict() {
        let merged = merge([(0, 1), (1, 4), (1, 5)], false);
        assert!(matches!(
            merged,
            Err(Error::ProjectionConflict { attempts: 0 })
        ));
    }

    #[test]
    fn disagreement_with_cache_hits_plans_again() {
        let merged = merge([(1, 4), (0, 1), (1, 5)], true).ok();
        assert_eq!(merged, Some(Merge::PlanAgain));
    }

    #[test]
    fn version_zero_starts_the_stream() {
        assert_eq!(assertion(0), Assertion::Start);
    }

    #[test]
    fn other_versions_are_expected() {
        assert_eq!(assertion(1), Assertion::Expected(1));
        assert_eq!(assertion(42), Assertion::Expected(42));
    }
}
