//! The store's cache of compiled queries' SQL: the statement text rendered the first time
//! a compiled query type runs in a given shape, keyed by the query type and the shape's
//! key (everything the text depends on, parameter values aside), and how many times a
//! text was rendered ([`CompiledQueryStats`]). Knows nothing of queries: the keys and
//! texts are made in `query`.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::DocumentStore;

/// How many shapes the cache keeps; past it, a new shape is rendered on each run (a
/// query type whose shape depends on unbounded values does not grow the store without
/// bound).
const CAPACITY: usize = 4096;

/// The texts of each compiled query type, by shape key.
type Texts = HashMap<TypeId, HashMap<Box<[u8]>, Arc<str>>>;

/// The compiled statements of a store, shared by its clones and tenant handles.
#[derive(Default)]
pub(crate) struct CompiledSql {
    texts: RwLock<Texts>,
    cached: AtomicU64,
    renders: AtomicU64,
}

/// What a store's compiled-query cache holds (see [`DocumentStore::compiled_query_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompiledQueryStats {
    /// How many statements are cached (one per compiled query type and shape).
    pub cached: usize,
    /// How many times a compiled query's statement was rendered (a first run of a type
    /// or shape, or a run past the cache's capacity); a run from the cache adds none.
    pub renders: u64,
}

impl CompiledSql {
    /// The text cached for `query` in the shape `shape`, if any.
    pub(crate) fn get(&self, query: TypeId, shape: &[u8]) -> Option<Arc<str>> {
        let texts = self.texts.read().unwrap_or_else(PoisonError::into_inner);
        texts.get(&query)?.get(shape).cloned()
    }

    /// Records a text rendered for `query` in the shape `shape` (counted as a render)
    /// and returns it.
    pub(crate) fn insert(&self, query: TypeId, shape: Box<[u8]>, text: &str) -> Arc<str> {
        self.renders.fetch_add(1, Ordering::Relaxed);
        let text: Arc<str> = Arc::from(text);
        let mut texts = self.texts.write().unwrap_or_else(PoisonError::into_inner);
        if self.cached.load(Ordering::Relaxed) < CAPACITY as u64 {
            let shapes = texts.entry(query).or_default();
            if shapes.insert(shape, text.clone()).is_none() {
                self.cached.fetch_add(1, Ordering::Relaxed);
            }
        }
        text
    }

    fn stats(&self) -> CompiledQueryStats {
        CompiledQueryStats {
            cached: usize::try_from(self.cached.load(Ordering::Relaxed)).unwrap_or(usize::MAX),
            renders: self.renders.load(Ordering::Relaxed),
        }
    }
}

impl DocumentStore {
    /// The compiled statements of this store.
    pub(crate) fn compiled_sql(&self) -> &CompiledSql {
        &self.compiled
    }

    /// How many compiled-query statements this store holds and how many times one was
    /// rendered (see the README, "Compiled queries"): a compiled query that runs again in
    /// a shape it ran in before is not rendered again.
    pub fn compiled_query_stats(&self) -> CompiledQueryStats {
        self.compiled.stats()
    }
}
