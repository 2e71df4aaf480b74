//! Reading a runner's next page: up to a batch of events after its position in the
//! gap-safe global order, leaving out events of types the store does not know (its
//! projections could not handle them), collecting those of known types that cannot be
//! decoded (the runner applies the poison policy to them), and, for a runner whose
//! projection and hooks use no metadata, reading only what its folds use.
//!
//! Owns: nothing but the read. May use: the connection layer, the events layer's reads.

use marten_core::{Result, TenantId};

use crate::connection::Conn;
use crate::events::read::{read_all, PageShape};
use crate::events::{EventPage, Position};
use crate::store::DocumentStore;

/// What a runner reads of a page: archived events are not projected; events of unknown
/// types are skipped (counted in the page's rows, not in its events); events that cannot
/// be decoded are collected (see [`PageShape::collect_unreadable`]); `lean`: only the
/// fields a projection without metadata uses (see [`PageShape::lean`]).
fn shape(lean: bool) -> PageShape {
    PageShape {
        include_archived: false,
        skip_unknown: true,
        lean,
        collect_unreadable: true,
    }
}

/// Up to `limit` events after `after` (of every tenant, or of `tenant`), read on `conn`
/// within the store's request timeout; `lean` as [`PageShape::lean`].
pub(super) async fn next_page(
    store: &DocumentStore,
    conn: &mut Conn,
    tenant: Option<&TenantId>,
    after: Position,
    limit: usize,
    lean: bool,
) -> Result<EventPage> {
    let tenant = tenant.map(|t| t.as_str().to_owned());
    conn.run(store, async |client| {
        let store = store.as_ref();
        read_all(store, client, tenant.as_ref(), after, limit, shape(lean)).await
    })
    .await
}
