//! [`Pooled`]: a connection out of the store's pool, its own ([`Lease`]) or a caller's
//! (deadpool's [`Object`]), and the prepared statements each keeps.

use std::ops::Deref;

use deadpool_postgres::Object;
use tokio_postgres::{Client, Statement};

use super::cancel::CancelRequest;
use super::connector::Dedicated;
use super::pool::{Lease, PER_CONNECTION};

/// A pooled connection. Dropped, it goes back to its pool.
pub(crate) enum Pooled {
    /// From the store's own pool.
    Own(Lease),
    /// From a caller's pool.
    Caller(Object),
}

impl Deref for Pooled {
    type Target = Client;

    fn deref(&self) -> &Client {
        match self {
            Pooled::Own(lease) => lease.client(),
            Pooled::Caller(object) => object,
        }
    }
}

impl Pooled {
    /// `sql` (the store's text number `id`) prepared on this connection, from the
    /// connection's cache when it was prepared before.
    pub(crate) async fn prepared(
        &self,
        id: u64,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        match self {
            Pooled::Own(lease) => lease.prepared(id, sql).await,
            Pooled::Caller(object) => {
                if object.statement_cache.size() >= PER_CONNECTION {
                    object.statement_cache.clear();
                }
                object.prepare_cached(sql).await
            }
        }
    }

    /// The connection taken out of its pool for good: it closes when dropped.
    pub(crate) fn detach(self) -> Dedicated {
        match self {
            Pooled::Own(lease) => {
                let tls = lease.tls().clone();
                Dedicated::Own(lease.detach(), tls)
            }
            Pooled::Caller(object) => Dedicated::Taken(Object::take(object)),
        }
    }

    /// The cancel request for what runs on this connection, over the TLS it was made
    /// with (a caller's pool's: not known).
    pub(crate) fn cancel_request(&self) -> CancelRequest {
        match self {
            Pooled::Own(lease) => {
                CancelRequest::new(lease.client().cancel_token(), Some(lease.tls()))
            }
            Pooled::Caller(object) => CancelRequest::new(object.cancel_token(), None),
        }
    }
}
