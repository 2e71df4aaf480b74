//! The locked read an inline aggregate plans from: the stream rows, locked until the save
//! commits, and the aggregate documents of those streams, in one statement flight.
//! Uses the planner's request, the connection's pipeline, document storage and the error
//! map.

use std::collections::HashMap;

use crate::connection::{Db, Stmt};
use marten_core::projection::inline::LockedStream;
use marten_core::tenant::require_tenant;
use marten_core::{Aggregate, Document, Error, Result};
use tokio_postgres::Row;

use crate::connection::Pipeline;
use crate::documents::{DocumentStorage, PgDocument};
use crate::error_map::{map_db_error, reading_documents as reading, Failed};
use crate::json::JsonRef;
use crate::projections::{Planner, TagsStatement};
use crate::tenant_key::TenantKey;

/// Locks the streams until the save commits and reads their versions and documents
/// (`lock` is the locking statement), after the save's tags when no read of its planning
/// has locked them yet (see [`TagsStatement`]). The documents are read by a second
/// statement of the same flight, which starts after the locks are held: its snapshot sees
/// the last committed projection (a joined read in the locking statement would see the
/// one from before the wait).
pub(super) async fn lock_streams<A: Aggregate + PgDocument>(
    pg: &mut Planner<'_, '_>,
    lock: &str,
    scoped: bool,
    ids: &[A::Id],
) -> Result<HashMap<A::Id, LockedStream<A>>> {
    let tenant = require_tenant(A::TENANCY, pg.out.tenant.as_ref(), A::DOCUMENT_TYPE)?;
    let tenant = tenant.cloned().map(TenantKey);
    pg.store.ensure::<A>().await?;
    let begin = !pg.req.in_transaction();
    let lock = prepare::<A>(pg.req.client(), lock).await?;
    let docs = prepare::<A>(pg.req.client(), &A::storage().reads().load_many).await?;
    let tags = pg.tags.take();
    let tags = TagsStatement::prepare(pg.req.client(), tags.as_ref()).await?;
    if begin {
        // BEGIN is about to be written.
        pg.req.set_in_transaction(true);
    }
    let c = pg.req.client();
    // The documents' tenant (a conjoined `A`) and, `scoped`, the streams' (the same: a
    // single-tenant `A` is refused with conjoined events).
    let with_tenant = |on: bool| -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        match (&tenant, on) {
            (Some(t), true) => vec![&ids, t],
            _ => vec![&ids],
        }
    };
    let params = with_tenant(scoped);
    let doc_params = with_tenant(true);
    // BEGIN, the save's tags (before any row), the lock and the read in one flight.
    let mut pipe = Pipeline::new(c, 4);
    let begun = begin.then(|| pipe.command("BEGIN"));
    let tagged = tags.as_ref().map(|t| t.push(&mut pipe));
    let streams = pipe.query(&lock, &params);
    let docs = pipe.query(&docs, &doc_params);
    let mut answers = pipe.send().await;
    if let Some(Err(e)) = begun.map(|h| answers.take(h)) {
        return Err(map_db_error(e, Failed::Transaction));
    }
    TagsStatement::answer(&mut answers, tagged)?;
    let (streams, docs) = (answers.take(streams), answers.take(docs));
    read_locked::<A>(streams, docs)
}

async fn prepare<A: Document>(client: Db<'_>, sql: &str) -> Result<Stmt> {
    client.statement(sql).await.map_err(reading::<A>)
}

/// Decodes the answers of the locked read: the stream rows (`id, version, is_archived`)
/// and the documents of those streams (`id, data`).
fn read_locked<A: Aggregate + PgDocument>(
    streams: std::result::Result<Vec<Row>, tokio_postgres::Error>,
    docs: std::result::Result<Vec<Row>, tokio_postgres::Error>,
) -> Result<HashMap<A::Id, LockedStream<A>>> {
    let mut out = HashMap::new();
    for row in streams.map_err(reading::<A>)? {
        let id: A::Id = row.try_get(0).map_err(reading::<A>)?;
        let version: i64 = row.try_get(1).map_err(reading::<A>)?;
        let archived: bool = row.try_get(2).map_err(reading::<A>)?;
        let state = None;
        out.insert(
            id,
            LockedStream {
                version,
                state,
                archived,
            },
        );
    }
    for row in docs.map_err(reading::<A>)? {
        let id: A::Id = row.try_get(0).map_err(reading::<A>)?;
        let json: JsonRef<'_> = row.try_get(1).map_err(reading::<A>)?;
        let doc = serde_json::from_slice::<A>(json.0).map_err(|source| Error::Deserialize {
            document_type: A::DOCUMENT_TYPE,
            id: id.to_string(),
            source,
        })?;
        if let Some(entry) = out.get_mut(&id) {
            entry.state = Some(doc);
        }
    }
    Ok(out)
}
