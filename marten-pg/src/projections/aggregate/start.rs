//! Where a live fold starts: the aggregate's stored document (an inline aggregate's
//! document, or a live aggregate's snapshot) when there is one the fold may build on.

use marten_core::{Aggregate, Error, Result, TenantId};
use tracing::warn;

use crate::connection::Db;
use crate::documents::load;
use crate::documents::PgDocument;
use crate::projections::ProjectionCatalog;

/// A stored aggregate document a fold starts from.
pub(super) struct Stored<A> {
    pub(super) doc: A,
    pub(super) json: Vec<u8>,
    /// The stream version it was folded up to.
    pub(super) version: i64,
}

/// The stored document of aggregate `id` (of `tenant`, a conjoined type), if it exists,
/// is not past `to_version`. `snapshot`: it is a live aggregate's snapshot, and one that
/// does not deserialize (the aggregate's shape changed since it was stored) is skipped
/// with a warning: the fold then starts from the first event. An inline aggregate's
/// document that does not deserialize is [`Error::Deserialize`], as it is to the save
/// that would plan from it. A stored version no event can follow is
/// [`Error::CorruptData`].
pub(super) async fn stored<A: Aggregate + PgDocument>(
    store: &ProjectionCatalog,
    client: Db<'_>,
    tenant: Option<&TenantId>,
    id: &A::Id,
    to_version: i64,
    snapshot: bool,
) -> Result<Option<Stored<A>>> {
    store.ensure::<A>().await?;
    let loaded = match load::load_one::<A>(client, tenant, id).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return Ok(None),
        Err(Error::Deserialize { source, .. }) if snapshot => {
            warn!(
                document_type = A::DOCUMENT_TYPE,
                id = %id,
                error = %source,
                "aggregate snapshot does not deserialize: folding its stream from the start"
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let version = loaded.doc.version();
    if version < 0 || version == i64::MAX {
        return Err(Error::CorruptData {
            owner: A::DOCUMENT_TYPE.to_owned(),
            id: Some(id.to_string()),
            detail: format!(
                "its stored version {version} is not a stream version events can follow"
            ),
        });
    }
    if version > to_version {
        return Ok(None);
    }
    Ok(Some(Stored {
        doc: loaded.doc,
        json: loaded.json,
        version,
    }))
}
