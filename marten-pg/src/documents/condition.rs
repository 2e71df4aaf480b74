//! [`Condition`]: a filter rendered as the condition of a write (a patch or a delete by
//! filter). A filter is rendered above this layer (by the query module, for the
//! session); it arrives here as its text over the row `d` and its parameters, numbered
//! from `$1`, the tenant's first for a conjoined type. Uses nothing else.

use tokio_postgres::types::ToSql;

/// A boxed statement parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// A rendered condition on the row `d`, with its parameters numbered from `$1`.
pub(crate) struct Condition {
    /// The SQL condition.
    pub(crate) text: String,
    /// Its parameters.
    pub(crate) params: Vec<Param>,
}
