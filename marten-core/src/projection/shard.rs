//! Sharding an async projection: which shard of `count` an id belongs to, by a stable
//! hash of the id's canonical bytes (FNV-1a, 64 bits: the same in every process, build
//! and release, unlike `std`'s randomly seeded hasher), and the name suffix of a shard's
//! progression row. Aggregates are sharded by stream id, multi-stream projections by the
//! id of the document an event slices to: either way each document belongs to one shard,
//! which writes it in the order of its events. (Event projections, which may write any
//! document from any stream's events, are not sharded: two shards writing one document
//! would leave it as the one that commits last wrote it.)
//!
//! Pure: the daemon keeps each shard's position, lock and owner epoch; the projections
//! filter their events and slices with [`Shard::owns`].

use std::fmt;

use crate::IdKey;

/// One shard of a projection split `count` ways: the ids whose hash modulo `count` is
/// `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Shard `index` of `count`; `None` unless `index < count`.
    pub fn new(index: u32, count: u32) -> Option<Shard> {
        (index < count).then_some(Shard { index, count })
    }

    /// Every shard of a projection split `count` ways, in order.
    pub fn all(count: u32) -> impl Iterator<Item = Shard> {
        (0..count).map(move |index| Shard { index, count })
    }

    /// The shard's index (from 0).
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards the projection is split into.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether the id `key` belongs to this shard.
    pub fn owns(self, key: &IdKey) -> bool {
        shard_of(key, self.count) == self.index
    }
}

/// Names the shard as its progression row does: `#index/count`.
impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}/{}", self.index, self.count)
    }
}

/// The shard (of `count`, at least 1) that `key` belongs to.
pub fn shard_of(key: &IdKey, count: u32) -> u32 {
    let hash = match key {
        IdKey::Uuid(u) => fnv1a64(u.as_bytes()),
        IdKey::I64(i) => fnv1a64(&i.to_be_bytes()),
        IdKey::I32(i) => fnv1a64(&i.to_be_bytes()),
        IdKey::String(s) => fnv1a64(s.as_bytes()),
    };
    // The remainder is below `count`, so it fits in a u32.
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

/// FNV-1a, 64 bits: stable across processes, platforms and releases.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The position every one of a projection's old shards stands at, if they all stand at
/// the same one (a count may change only then: the new shards start there); `None` when
/// they differ. No shard at all is the start (`Some(start)`).
pub fn aligned<P: PartialEq + Copy>(positions: &[P], start: P) -> Option<P> {
    let first = positions.first().copied().unwrap_or(start);
    positions.iter().all(|p| *p == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_hash_is_fnv1a_and_stable() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let id = IdKey::Uuid(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
        assert_eq!(shard_of(&id, 7), shard_of(&id.clone(), 7));
    }

    #[test]
    fn every_id_belongs_to_exactly_one_shard_and_shards_are_balanced() {
        let mut counts = [0u32; 3];
        for i in 0..3000u128 {
            let key = IdKey::Uuid(Uuid::from_u128(i * 0x9e37_79b9_7f4a_7c15));
            let owners: Vec<Shard> = Shard::all(3).filter(|s| s.owns(&key)).collect();
            assert_eq!(owners.len(), 1);
            counts[owners[0].index() as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn a_shard_names_itself_and_checks_its_index() {
        assert_eq!(Shard::new(2, 3).map(|s| s.to_string()), Some("#2/3".into()));
        assert_eq!(Shard::new(3, 3), None);
        assert_eq!(shard_of(&IdKey::String("x".into()), 1), 0);
    }

    #[test]
    fn positions_align_only_when_all_equal() {
        assert_eq!(aligned(&[5, 5, 5], 0), Some(5));
        assert_eq!(aligned(&[5, 4, 5], 0), None);
        assert_eq!(aligned::<i32>(&[], 0), Some(0));
    }
}
