//! One SQL statement a subscription's handler queues on its transaction: the text, the
//! parameters bound to it, sent as an operation of the unit of work that advances the
//! checkpoint.

use std::fmt;

use tokio_postgres::types::ToSql;

use crate::connection::SqlText;
use crate::unit_of_work::{Operation, Target};

/// A parameter bound to a [`SqlStatement`].
type Param = Box<dyn ToSql + Send + Sync>;

/// A statement queued by [`SubscriptionTx::execute`](super::SubscriptionTx::execute);
/// bind its parameters (`$1`, `$2`, ...) in order with [`bind`](SqlStatement::bind).
pub struct SqlStatement {
    sql: &'static str,
    params: Vec<Param>,
}

impl SqlStatement {
    pub(crate) fn new(sql: &'static str) -> Self {
        SqlStatement {
            sql,
            params: Vec::new(),
        }
    }

    /// Binds the next parameter.
    pub fn bind(&mut self, value: impl ToSql + Send + Sync + 'static) -> &mut Self {
        self.params.push(Box::new(value));
        self
    }
}

impl fmt::Debug for SqlStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStatement")
            .field("sql", &self.sql)
            .field("params", &self.params)
            .finish()
    }
}

impl Operation for SqlStatement {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Static(self.sql)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    fn target(&self) -> Target {
        // The statement's own tables are the caller's; the daemon's exist by now.
        Target::new(
            "subscription",
            "a subscription's statement",
            crate::schema::daemon_schema(),
        )
    }
}
