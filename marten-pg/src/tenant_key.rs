//! Binding a [`TenantId`] as a `text` parameter: how every statement on a conjoined
//! table names its tenant (never formatted into SQL).

use std::error::Error as StdError;

use bytes::BytesMut;
use marten_core::TenantId;
use postgres_types::{accepts, to_sql_checked, IsNull, ToSql, Type};

/// A tenant id as a parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TenantKey(pub TenantId);

impl TenantKey {
    /// The tenant of a statement scoped by `tenant`, if any.
    pub(crate) fn of(tenant: Option<&TenantId>) -> Option<Self> {
        tenant.cloned().map(TenantKey)
    }
}

impl ToSql for TenantKey {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.0.as_str().to_sql(ty, out)
    }

    accepts!(TEXT, VARCHAR);
    to_sql_checked!();
}
