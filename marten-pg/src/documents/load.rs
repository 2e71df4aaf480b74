//! Reading documents by id (one, many, many under lock) and their metadata: the reads
//! every session kind and the projections share. May use: the storages, the error map.

use crate::connection::{Db, SqlText};
use marten_core::concurrency::VersionOf;
use marten_core::{DocumentMetadata, Error, Result, TenantId};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::storage::conjoined;
use super::{DocumentStorage, PgDocument};
use crate::error_map::reading_documents as reading;
use crate::json::JsonRef;
use crate::tenant_key::TenantKey;

pub(crate) use marten_core::session::{check_id, Loaded};

/// The tenant a read of `D` binds: the scope's for a conjoined type (the caller made
/// sure there is one), none for a single-tenant type.
fn tenant_of<D: PgDocument>(tenant: Option<&TenantId>) -> Option<TenantKey> {
    if conjoined::<D>() {
        TenantKey::of(tenant)
    } else {
        None
    }
}

/// `first`, then the tenant of a conjoined type: a read's parameters.
fn with_tenant<'a, D: PgDocument>(
    first: &'a (dyn ToSql + Sync),
    tenant: &'a Option<TenantKey>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    if conjoined::<D>() {
        vec![first, tenant]
    } else {
        vec![first]
    }
}

/// The row the by-id statement `sql` of `D` reads for `id` (of `tenant`, for a conjoined
/// type), if there is one.
async fn row_by_id<D: PgDocument>(
    client: Db<'_>,
    sql: &'static str,
    tenant: Option<&TenantId>,
    id: &D::Id,
) -> Result<Option<Row>> {
    check_id::<D>(id)?;
    let stmt = client
        .statement(SqlText::Static(sql))
        .await
        .map_err(reading::<D>)?;
    let tenant = tenant_of::<D>(tenant);
    let params = with_tenant::<D>(id, &tenant);
    client.query_opt(&stmt, &params).await.map_err(reading::<D>)
}

fn decode<D: PgDocument>(id: &D::Id, json: JsonRef<'_>) -> Result<D> {
    serde_json::from_slice(json.0).map_err(|source| Error::Deserialize {
        document_type: D::DOCUMENT_TYPE,
        id: id.to_string(),
        source,
    })
}

/// Loads one document by id (of `tenant`, for a conjoined type).
pub(crate) async fn load_one<D: PgDocument>(
    client: Db<'_>,
    tenant: Option<&TenantId>,
    id: &D::Id,
) -> Result<Option<Loaded<D>>> {
    let Some(row) = row_by_id::<D>(client, &D::storage().reads().load, tenant, id).await? else {
        return Ok(None);
    };
    let json: JsonRef<'_> = row.try_get(0).map_err(reading::<D>)?;
    let doc = decode::<D>(id, json)?;
    let version = if row.len() > 1 {
        super::storage::read_version::<D>(&row, 1)?
    } else {
        None
    };
    Ok(Some(Loaded {
        id: id.clone(),
        doc,
        version,
        json: json.0.to_vec(),
    }))
}

/// Loads the documents with the given ids that exist (in no particular order).
pub(crate) async fn load_many<D: PgDocument>(
    client: Db<'_>,
    tenant: Option<&TenantId>,
    ids: &[D::Id],
) -> Result<Vec<Loaded<D>>> {
    load_many_with::<D>(client, tenant, ids, &D::storage().reads().load_many).await
}

/// Like [`load_many`], locking the rows (in id order) until the transaction ends.
pub(crate) async fn load_many_locked<D: PgDocument>(
    client: Db<'_>,
    tenant: Option<&TenantId>,
    ids: &[D::Id],
) -> Result<Vec<Loaded<D>>> {
    load_many_with::<D>(client, tenant, ids, &D::storage().reads().load_many_locked).await
}

async fn load_many_with<D: PgDocument>(
    client: Db<'_>,
    tenant: Option<&TenantId>,
    ids: &[D::Id],
    sql: &'static str,
) -> Result<Vec<Loaded<D>>> {
    for id in ids {
        check_id::<D>(id)?;
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = client
        .statement(SqlText::Static(sql))
        .await
        .map_err(reading::<D>)?;
    let tenant = tenant_of::<D>(tenant);
    let rows = client
        .query(&stmt, &with_tenant::<D>(&ids, &tenant))
        .await
        .map_err(reading::<D>)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: D::Id = row.try_get(0).map_err(reading::<D>)?;
        let json: JsonRef<'_> = row.try_get(1).map_err(reading::<D>)?;
        let doc = decode::<D>(&id, json)?;
        let version = if row.len() > 2 {
            super::storage::read_version::<D>(row, 2)?
        } else {
            None
        };
        out.push(Loaded {
            id,
            doc,
            version,
            json: json.0.to_vec(),
        });
    }
    Ok(out)
}

/// Reads a document's version, last-modified time and soft-delete state (of a marked
/// row too).
pub(crate) async fn metadata<D: PgDocument>(
    client: Db<'_>,
    tenant: Option<&TenantId>,
    id: &D::Id,
) -> Result<Option<DocumentMetadata<VersionOf<D>>>> {
    let Some(row) = row_by_id::<D>(client, &D::storage().reads().metadata, tenant, id).await?
    else {
        return Ok(None);
    };
    let version = super::storage::read_version::<D>(&row, 0)?.unwrap_or_default();
    let last_modified: OffsetDateTime = row.try_get(1).map_err(reading::<D>)?;
    let deleted: bool = row.try_get(2).map_err(reading::<D>)?;
    let deleted_at: Option<OffsetDateTime> = row.try_get(3).map_err(reading::<D>)?;
    Ok(Some(
        DocumentMetadata::new(version, last_modified).with_deleted(deleted, deleted_at),
    ))
}
