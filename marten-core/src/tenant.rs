//! Tenants: the id of a tenant ([`TenantId`]) and how a document type or the event store
//! shares its tables between tenants ([`Tenancy`]). Knows nothing about SQL: a backend
//! binds a tenant id as a parameter of its statements.

use std::fmt;
use std::sync::Arc;

use crate::{Error, Result};

/// The longest tenant id accepted, in bytes.
pub const MAX_TENANT_BYTES: usize = 128;

/// The tenant recorded for data written without one (the tag versions of a session
/// opened without a tenant, the events of a single-tenant store). Refused as the id of a
/// tenant, so a tenant never shares rows with the untenanted store.
pub const DEFAULT_TENANT: &str = "*DEFAULT*";

/// How rows of a document type (or the event store) are shared between tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tenancy {
    /// One set of rows for every tenant: reference data, readable from any session.
    #[default]
    Single,
    /// One table for all tenants, with a `tenant_id` column leading its primary key and
    /// every index: each tenant sees only its own rows, and a session must name its
    /// tenant to touch them.
    Conjoined,
}

/// The id of a tenant: non-empty text of at most [`MAX_TENANT_BYTES`] bytes without
/// control characters, and not [`DEFAULT_TENANT`]. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Checks and wraps a tenant id; a refused id is an
    /// [`Error::InvalidTenant`] naming it and the reason.
    pub fn new(id: impl AsRef<str>) -> Result<Self> {
        let id = id.as_ref();
        let reason = if id.is_empty() {
            Some("is empty")
        } else if id.len() > MAX_TENANT_BYTES {
            Some("is longer than 128 bytes")
        } else if id.chars().any(char::is_control) {
            Some("contains a control character")
        } else if id == DEFAULT_TENANT {
            Some("is reserved for data written without a tenant")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidTenant {
                tenant: id.chars().take(MAX_TENANT_BYTES).collect(),
                reason,
            }),
            None => Ok(TenantId(Arc::from(id))),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TenantId {
    type Error = Error;

    fn try_from(id: &str) -> Result<Self> {
        TenantId::new(id)
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;

    fn try_from(id: String) -> Result<Self> {
        TenantId::new(id)
    }
}

impl TryFrom<&TenantId> for TenantId {
    type Error = Error;

    fn try_from(id: &TenantId) -> Result<Self> {
        Ok(id.clone())
    }
}

/// The tenant a session works for, checked against the tenancy of what it touches:
/// `owner` (a document type, `events`) is conjoined, so the session must have a tenant.
pub fn require_tenant<'t>(
    tenancy: Tenancy,
    tenant: Option<&'t TenantId>,
    owner: &str,
) -> Result<Option<&'t TenantId>> {
    match (tenancy, tenant) {
        (Tenancy::Single, _) => Ok(None),
        (Tenancy::Conjoined, Some(t)) => Ok(Some(t)),
        (Tenancy::Conjoined, None) => Err(Error::TenantRequired {
            owner: owner.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked() {
        assert_eq!(TenantId::new("acme").unwrap().as_str(), "acme");
        for (bad, reason) in [
            ("", "is empty"),
            ("a\u{0}b", "contains a control character"),
            ("a\nb", "contains a control character"),
            (
                DEFAULT_TENANT,
                "is reserved for data written without a tenant",
            ),
        ] {
            match TenantId::new(bad) {
                Err(Error::InvalidTenant { reason: r, .. }) => assert_eq!(r, reason),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(TenantId::new("x".repeat(MAX_TENANT_BYTES)).is_ok());
        assert!(TenantId::new("x".repeat(MAX_TENANT_BYTES + 1)).is_err());
    }

    #[test]
    fn a_conjoined_owner_needs_a_tenant() {
        let t = TenantId::new("t1").unwrap();
        assert_eq!(
            require_tenant(Tenancy::Single, Some(&t), "Doc").unwrap(),
            None
        );
        assert_eq!(
            require_tenant(Tenancy::Conjoined, Some(&t), "Doc").unwrap(),
            Some(&t)
        );
        let err = require_tenant(Tenancy::Conjoined, None, "Doc").unwrap_err();
        assert!(err.to_string().contains("Doc"), "{err}");
    }
}
