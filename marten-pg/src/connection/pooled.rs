//! [`Pooled`]: a connection out of the store's pool, its own ([`Lease`]) or a caller's
//! (deadpool's [`Object`]), and the prepared statements each keeps.

use std::ops::Deref;

use deadpool_postgres::{ClientWrapper, Object};
use tokio_postgres::{Client, Statement};

use super::cancel::CancelRequest;
use super::connector::Dedicated;
use super::pool::{Lease, Retiring, PER_CONNECTION};

/// A connection out of its pool on its way to being closed ([`Pooled::retire`]): it closes
/// when dropped, and then (the store's own pool) gives its permit back. Held only to be
/// dropped.
pub(crate) enum Closing {
    /// Of the store's own pool, holding its permit.
    Own { _retiring: Retiring },
    /// Taken out of a caller's pool.
    Taken { _client: ClientWrapper },
}

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

    /// Forgets the statements prepared on this connection, which are prepared again on
    /// their next use. For a statement PostgreSQL refused to run because the shape of
    /// its result changed since it was prepared (`0A000`, "cached plan must not change
    /// result type": a column added to or dropped from a table it reads with `*`, by a
    /// migration or another program): kept, it would fail on every later use on this
    /// connection, for as long as the connection lives. The statement that failed is not
    /// known by its text here, so all of the connection's go (the event is rare, and
    /// preparing again costs one round trip per statement).
    pub(crate) fn forget_statements(&self) {
        match self {
            Pooled::Own(lease) => lease.forget_statements(),
            Pooled::Caller(object) => object.statement_cache.clear(),
        }
    }

    /// The connection taken out of its pool to be closed when dropped (after its cancel
    /// request, if any): one of the store's pool keeps its permit until then, so the pool
    /// never has more than its size of connections open (see [`Lease::retire`]). One of a
    /// caller's pool is taken out of it at once (deadpool gives its slot back then).
    pub(crate) fn retire(self) -> Closing {
        match self {
            Pooled::Own(lease) => Closing::Own {
                _retiring: lease.retire(),
            },
            Pooled::Caller(object) => Closing::Taken {
                _client: Object::take(object),
            },
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
