//! Opening sessions from a store: one method per kind of session.

use super::{
    DirtyTrackedSession, IdentitySession, LightweightSession, QuerySession, Session,
    SessionOptions, Tracking,
};
use crate::store::DocumentStore;
use marten_core::{Error, Result, TenantId};

impl DocumentStore {
    /// Opens a read-only session without tracking.
    pub fn query_session(&self) -> QuerySession {
        QuerySession::new(self.clone())
    }

    /// Opens a session without identity map: `store` queues an upsert, loads always query.
    pub fn lightweight_session(&self) -> LightweightSession {
        Session::new(self.clone(), SessionOptions::default())
    }

    /// Opens a session with an identity map: a second load of an id makes no query.
    pub fn identity_session(&self) -> IdentitySession {
        Session::new(self.clone(), SessionOptions::default())
    }

    /// Opens a session that saves changed loaded documents without an explicit `store`.
    pub fn dirty_tracked_session(&self) -> DirtyTrackedSession {
        Session::new(self.clone(), SessionOptions::default())
    }

    /// Opens a session of any kind with options.
    pub fn session_with<K: Tracking>(&self, options: SessionOptions) -> Session<K> {
        Session::new(self.clone(), options)
    }

    /// Opens a read-only session for `tenant` (see [`DocumentStore::for_tenant`]).
    pub fn query_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<QuerySession> {
        Ok(self.for_tenant(tenant)?.query_session())
    }

    /// Opens a lightweight session for `tenant`: conjoined documents and events are read
    /// and written under that tenant only.
    pub fn lightweight_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<LightweightSession> {
        Ok(self.for_tenant(tenant)?.lightweight_session())
    }

    /// Opens an identity-map session for `tenant`.
    pub fn identity_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<IdentitySession> {
        Ok(self.for_tenant(tenant)?.identity_session())
    }

    /// Opens a dirty-tracked session for `tenant`.
    pub fn dirty_tracked_session_for(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
    ) -> Result<DirtyTrackedSession> {
        Ok(self.for_tenant(tenant)?.dirty_tracked_session())
    }
}
