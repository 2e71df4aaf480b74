//! What every handler shares: the store, its tables, the options, the registered document
//! types, the per-process action token and the lag history (with the sampler task that
//! fills it, aborted when the last handle is dropped).

use std::sync::Arc;

use marten_pg::DocumentStore;

use crate::documents::DocumentView;
use crate::lag::{LagHistory, Sampler};
use crate::options::ConsoleOptions;
use crate::tables::Tables;

/// The handlers' state.
pub(crate) struct State {
    pub(crate) store: DocumentStore,
    pub(crate) tables: Arc<Tables>,
    pub(crate) options: ConsoleOptions,
    pub(crate) documents: Vec<Arc<dyn DocumentView>>,
    /// The token every action's form carries (random per console).
    pub(crate) token: String,
    pub(crate) history: Arc<LagHistory>,
    /// Fills `history`; dropped (aborted) with the state.
    pub(crate) _sampler: Option<Sampler>,
}

/// The state as handlers take it.
pub(crate) type Shared = Arc<State>;
