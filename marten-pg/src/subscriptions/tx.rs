//! What a subscription's handler writes through: SQL statements and documents, queued in
//! order and committed in the transaction that advances the subscription's checkpoint.

use marten_core::{Result, TenantId};

use super::statement::SqlStatement;
use crate::documents::PgDocument;
use crate::projections::ProjectedOps;
use crate::unit_of_work::OpList;

/// The writes of one batch of a subscription, committed together with its checkpoint
/// (exactly once): they happen if and only if the checkpoint moves past the batch.
///
/// The writes are queued and sent when the handler returns, in the order queued, in one
/// transaction and one round trip; a failing statement rolls the batch back and it is
/// retried (a statement's error is not a poison event: fix the SQL or the table).
pub struct SubscriptionTx {
    ops: ProjectedOps,
    pending: Option<SqlStatement>,
}

impl SubscriptionTx {
    /// An empty transaction whose conjoined documents belong to `tenant`.
    pub(crate) fn new(tenant: Option<&TenantId>) -> Self {
        SubscriptionTx {
            ops: ProjectedOps::for_tenant(tenant),
            pending: None,
        }
    }

    /// Queues SQL statement `sql` (a literal: `$1`, `$2`, ... are its parameters, which
    /// you [`bind`](SqlStatement::bind) on what this returns).
    ///
    /// ```no_run
    /// # fn f(tx: &mut marten_pg::subscriptions::SubscriptionTx) {
    /// tx.execute("INSERT INTO outbox (delivery_id, body) VALUES ($1, $2)")
    ///     .bind("orders:42".to_owned())
    ///     .bind("{}".to_owned());
    /// # }
    /// ```
    pub fn execute(&mut self, sql: &'static str) -> &mut SqlStatement {
        self.flush();
        self.pending.insert(SqlStatement::new(sql))
    }

    /// Queues the upsert of a document (under the batch's tenant for a conjoined type).
    pub fn store<D: PgDocument>(&mut self, doc: D) {
        self.flush();
        self.ops.store(doc);
    }

    /// Queues the delete of a document by id.
    pub fn delete<D: PgDocument>(&mut self, id: D::Id) {
        self.flush();
        self.ops.delete::<D>(id);
    }

    /// Moves the statement being bound to the list.
    fn flush(&mut self) {
        if let Some(statement) = self.pending.take() {
            self.ops.list.push_op(Box::new(statement));
        }
    }

    /// The queued writes, or the first error a `store` met.
    pub(crate) fn into_list(mut self) -> Result<OpList> {
        self.flush();
        self.ops.into_list()
    }
}
