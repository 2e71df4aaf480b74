//! Opening a tenant's store and sessions: the store of its database, scoped to it, then
//! one method per kind of session.

use marten_core::{Error, Result, TenantId};

use super::TenantedStore;
use crate::session::{DirtyTrackedSession, IdentitySession, LightweightSession, QuerySession};
use crate::store::DocumentStore;

impl TenantedStore {
    /// The store of `tenant`'s database, scoped to `tenant`
    /// ([`DocumentStore::for_tenant`]), built (and its schema made sure of) on the first
    /// use of that database. [`Error::UnknownTenant`] if no database is configured for
    /// it, [`Error::InvalidTenant`] for an invalid id.
    ///
    /// The errors of looking up and opening the tenant's database name the tenant (as
    /// `the database of tenant "acme"`) in their text: the context of every error with a
    /// [`DatabaseError`](marten_core::DatabaseError) ([`Error::Connection`],
    /// [`Error::Authentication`], [`Error::Tls`], [`Error::TooManyConnections`],
    /// [`Error::Conflict`], [`Error::Canceled`], [`Error::LockNotAvailable`],
    /// [`Error::OutcomeUnknown`], [`Error::Database`]), and [`Error::Timeout`],
    /// [`Error::Configuration`], [`Error::SchemaObjectMissing`] and
    /// [`Error::UnsupportedServerVersion`]. [`Error::SchemaMismatch`],
    /// [`Error::PoolExhausted`] and [`Error::NameConflict`] have no text to carry it and
    /// do not name it.
    pub async fn store_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<DocumentStore> {
        let tenant = tenant.try_into()?;
        let url = self.resolve(&tenant).await?;
        let store = self.open(&tenant, &url).await?;
        store.for_tenant(&tenant)
    }

    /// Opens a read-only session on `tenant`'s database (see [`store_for`](Self::store_for)).
    pub async fn query_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<QuerySession> {
        Ok(self.store_for(tenant).await?.query_session())
    }

    /// Opens a lightweight session on `tenant`'s database.
    pub async fn lightweight_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<LightweightSession> {
        Ok(self.store_for(tenant).await?.lightweight_session())
    }

    /// Opens an identity-map session on `tenant`'s database.
    pub async fn identity_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<IdentitySession> {
        Ok(self.store_for(tenant).await?.identity_session())
    }

    /// Opens a dirty-tracked session on `tenant`'s database.
    pub async fn dirty_tracked_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<DirtyTrackedSession> {
        Ok(self.store_for(tenant).await?.dirty_tracked_session())
    }
}
