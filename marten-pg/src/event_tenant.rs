//! The tenant an event operation of a session works for ([`EventTenant`]): which tenant
//! its appends record, which tenant's streams it finds (conjoined events only) and which
//! tenant's tag versions it reads and bumps. Decided once per operation from the store's
//! event tenancy and the session's tenant, before anything is sent. Pure: no I/O.
//!
//! May use: marten-core's tenant rules; nothing of the crate (it sits in the bottom layer,
//! so the unit of work's appends and the events layer both use it).

use marten_core::tenant::{require_tenant, DEFAULT_TENANT};
use marten_core::{Result, Tenancy, TenantId};
use tokio_postgres::types::ToSql;

/// What [`require_tenant`] names in [`marten_core::Error::TenantRequired`].
const OWNER: &str = "events";

/// The tenant of an event operation, bound as a parameter of its statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventTenant {
    tenancy: Tenancy,
    /// The session's tenant, or [`DEFAULT_TENANT`] without one.
    tenant: String,
}

impl EventTenant {
    /// The tenant of a session with `tenant` on a store whose events are `tenancy`:
    /// conjoined events need a tenant ([`marten_core::Error::TenantRequired`]).
    pub(crate) fn of_session(tenancy: Tenancy, tenant: Option<&TenantId>) -> Result<Self> {
        require_tenant(tenancy, tenant, OWNER)?;
        Ok(EventTenant {
            tenancy,
            tenant: tenant.map_or(DEFAULT_TENANT, TenantId::as_str).to_owned(),
        })
    }

    /// The event tenancy of the store.
    pub(crate) fn tenancy(&self) -> Tenancy {
        self.tenancy
    }

    /// The tenant recorded on appended events (and, conjoined, on their stream and tags).
    pub(crate) fn written(&self) -> &String {
        &self.tenant
    }

    /// Whether the scope ([`EventTenant::scope`]) is all a statement must bind to record
    /// the tenant: conjoined events record their scope, and single-tenant events of no
    /// tenant record [`DEFAULT_TENANT`], the events table's column default.
    pub(crate) fn scope_suffices(&self) -> bool {
        self.tenancy == Tenancy::Conjoined || self.tenant == DEFAULT_TENANT
    }

    /// The tenant whose streams the operation finds: conjoined events only (single-tenant
    /// streams are everyone's).
    pub(crate) fn scope(&self) -> Option<&String> {
        (self.tenancy == Tenancy::Conjoined).then_some(&self.tenant)
    }

    /// The tenant of the tag versions the operation reads or bumps: the session's with
    /// conjoined events, [`DEFAULT_TENANT`] with single-tenant ones.
    pub(crate) fn tags(&self) -> &(dyn ToSql + Sync) {
        static DEFAULT: &str = DEFAULT_TENANT;
        match self.tenancy {
            Tenancy::Conjoined => &self.tenant,
            Tenancy::Single => &DEFAULT,
        }
    }

    /// `params` followed by the scope of a scoped statement (see
    /// [`crate::tables::events::EventSql`]): the tenant, with conjoined events only.
    pub(crate) fn scoped<'a>(
        &'a self,
        mut params: Vec<&'a (dyn ToSql + Sync)>,
    ) -> Vec<&'a (dyn ToSql + Sync)> {
        if let Some(tenant) = self.scope() {
            params.push(tenant);
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conjoined_events_need_a_tenant_and_are_scoped_to_it() {
        let t = TenantId::new("t1").unwrap();
        let err = EventTenant::of_session(Tenancy::Conjoined, None).unwrap_err();
        assert!(
            matches!(err, marten_core::Error::TenantRequired { ref owner } if owner == "events"),
            "{err:?}"
        );
        let conjoined = EventTenant::of_session(Tenancy::Conjoined, Some(&t)).unwrap();
        assert_eq!(conjoined.scope().map(String::as_str), Some("t1"));
        assert_eq!(conjoined.written(), "t1");
        assert_eq!(conjoined.scoped(Vec::new()).len(), 1);
        let single = EventTenant::of_session(Tenancy::Single, Some(&t)).unwrap();
        assert_eq!(single.scope(), None);
        assert_eq!(single.written(), "t1");
        assert!(single.scoped(Vec::new()).is_empty());
        let none = EventTenant::of_session(Tenancy::Single, None).unwrap();
        assert_eq!(none.written(), DEFAULT_TENANT);
    }
}
