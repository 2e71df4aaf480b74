//! A filter rendered as the condition of a write (a patch or a delete by filter): the
//! tenant's match first for a conjoined type, then the filter, ANDed so it cannot widen
//! the tenant's match, then which rows of a soft-deleted type it may touch. Uses
//! `render` and `deleted`.

use marten_core::query::Filter;
use marten_core::{Result, TenantId};

use super::deleted::Deleted;
use super::render::{self, Sql};
use crate::documents::condition::Condition;
use crate::documents::conjoined;
use crate::documents::PgDocument;
use crate::tables::tenant_match::tenant_match;
use crate::tenant_key::TenantKey;

/// `filter` over the rows `d` of `D`'s table, with its parameters numbered from `$1`;
/// a conjoined type's rows are matched on `tenant` first, a soft-deleted type's are
/// those `deleted` chooses. Fails with
/// [`Error::InvalidQuery`](marten_core::Error::InvalidQuery) for an invalid raw fragment.
pub(crate) fn condition<D: PgDocument>(
    filter: &Filter<D>,
    tenant: Option<&TenantId>,
    deleted: Deleted,
) -> Result<Condition> {
    let mut sql = Sql::default();
    let mut parts = Vec::with_capacity(3);
    if conjoined::<D>() {
        let p = sql.param(Box::new(TenantKey::of(tenant)));
        parts.push(tenant_match(&p, true));
    }
    parts.push(format!(
        "({})",
        render::render(filter.node(), D::GIN_INDEX, &mut sql)
    ));
    parts.extend(deleted.clause(D::SOFT_DELETE));
    let sql = sql.checked()?;
    Ok(Condition {
        text: parts.join(" AND "),
        params: sql.params,
    })
}
