//! What a subscription's handler writes through: SQL statements and documents, queued in
//! order and committed in the transaction that advances the subscription's checkpoint.

use marten_core::{Error, Result, TenantId};

use super::statement::SqlStatement;
use crate::documents::{conjoined, PgDocument};
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
    /// Whether the batch is a tenant's (conjoined documents need one).
    has_tenant: bool,
    /// The first write that could not be queued.
    error: Option<Error>,
}

impl SubscriptionTx {
    /// An empty transaction whose conjoined documents belong to `tenant`.
    pub(crate) fn new(tenant: Option<&TenantId>) -> Self {
        SubscriptionTx {
            ops: ProjectedOps::for_tenant(tenant),
            pending: None,
            has_tenant: tenant.is_some(),
            error: None,
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

    /// Queues the upsert of a document (under the batch's tenant for a conjoined type;
    /// a conjoined type in a batch without a tenant fails the batch with
    /// [`Error::TenantRequired`]).
    pub fn store<D: PgDocument>(&mut self, doc: D) {
        self.flush();
        if self.tenant_ok::<D>() {
            self.ops.store(doc);
        }
    }

    /// Queues the delete of a document by id (as [`store`](Self::store) for tenants).
    pub fn delete<D: PgDocument>(&mut self, id: D::Id) {
        self.flush();
        if self.tenant_ok::<D>() {
            self.ops.delete::<D>(id);
        }
    }

    /// Whether documents of `D` can be written in this batch (else records why not).
    fn tenant_ok<D: PgDocument>(&mut self) -> bool {
        if conjoined::<D>() && !self.has_tenant {
            self.error.get_or_insert(Error::TenantRequired {
                owner: D::DOCUMENT_TYPE.to_owned(),
            });
            return false;
        }
        true
    }

    /// Moves the statement being bound to the list.
    fn flush(&mut self) {
        if let Some(statement) = self.pending.take() {
            self.ops.list.push_op(Box::new(statement));
        }
    }

    /// The queued writes, or the first error a `store` or `delete` met.
    pub(crate) fn into_list(mut self) -> Result<OpList> {
        self.flush();
        if let Some(e) = self.error {
            return Err(e);
        }
        self.ops.into_list()
    }
}
