//! Patches as unit-of-work operations: [`PatchStatement`], one `UPDATE` of one document
//! by id or of every document a rendered filter ([`Condition`]) matches. Its text is
//! built when queued (see [`crate::tables::documents::update`]); every value is a
//! parameter. Uses the unit of work's operation traits, the document storage (versions,
//! reads) and the table SQL.

use futures_util::future::BoxFuture;
use marten_core::concurrency::VersionOf;
use marten_core::patch::{Patch, PatchOp, PatchTarget};
use marten_core::{Document, DocumentId, Rejection, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::storage::{conjoined, read_version, read_versions, BasicWrite, DocumentStorage};
use super::storage::{PgDocument, PgVersion};
use super::typed_batch::document_target;
use crate::connection::{Db, SqlText};
use crate::error_map::reading_documents as reading;
use crate::tables::documents as sql;
use crate::tenant_key::TenantKey;
use crate::unit_of_work::{Operation, SessionState, Target};

use super::condition::{Condition, Param};

/// One patch: an `UPDATE` of documents of type `D`.
pub(crate) struct PatchStatement<D: PgDocument> {
    sql: String,
    /// The condition's parameters, then the operations' values.
    params: Vec<Param>,
    /// The id of a patch by id (for explaining a rejection).
    id: Option<D::Id>,
    /// The version a patch by id asserts (bound last).
    expected: Option<VersionOf<D>>,
    tenant: Option<TenantKey>,
    written: Vec<(D::Id, Option<VersionOf<D>>)>,
    rejected: bool,
}

impl<D: PgDocument> PatchStatement<D> {
    /// The statement of `patch`; `condition` renders a filter target (the tenant's match
    /// first). Refuses a value PostgreSQL cannot store (a NUL character).
    pub(crate) fn new(
        patch: Patch<D>,
        tenant: Option<&marten_core::TenantId>,
        condition: impl FnOnce(&marten_core::query::Filter<D>) -> Result<Condition>,
    ) -> Result<Self> {
        let tenant = if conjoined::<D>() {
            TenantKey::of(tenant)
        } else {
            None
        };
        let (cond, id) = match &patch.target {
            PatchTarget::Id(id) => (by_id::<D>(id, &tenant), Some(id.clone())),
            PatchTarget::Where(filter) => (condition(filter)?, None),
        };
        let Condition { text, mut params } = cond;
        let first = params.len() + 1;
        for op in &patch.ops {
            if let Some(value) = op.value() {
                check_value::<D>(op, value, id.as_ref())?;
                params.push(Box::new(value.clone()));
            }
        }
        let expected = patch.expected.filter(|v| v.param().is_some());
        let expected_param = expected.map(|_| params.len() + 1);
        let data = sql::patched_data(&patch.ops, first);
        let bump = <VersionOf<D> as PgVersion>::BUMP;
        Ok(PatchStatement {
            sql: sql::update(D::TABLE_NAME, bump, &data, &text, expected_param),
            params,
            id,
            expected,
            tenant,
            written: Vec::new(),
            rejected: false,
        })
    }
}

/// The condition of a patch by id: the tenant's match (conjoined) and the id.
fn by_id<D: PgDocument>(id: &D::Id, tenant: &Option<TenantKey>) -> Condition {
    let (text, _) = sql::by_id(super::storage::scope::<D>());
    let mut params: Vec<Param> = Vec::with_capacity(2);
    if conjoined::<D>() {
        params.push(Box::new(tenant.clone()));
    }
    params.push(Box::new(id.clone()));
    Condition { text, params }
}

/// Refuses a value `jsonb` cannot hold, naming the field.
fn check_value<D: Document>(
    op: &PatchOp,
    value: &serde_json::Value,
    id: Option<&D::Id>,
) -> Result<()> {
    let json = value.to_string();
    let field = op.path().segments.join(".");
    crate::validate::check_json_field(json.as_bytes(), &format!("{field}: "), || {
        (D::DOCUMENT_TYPE.to_owned(), id.map(|i| i.to_string()))
    })
}

impl<D: PgDocument> Operation for PatchStatement<D> {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Built(&self.sql)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut out: Vec<&(dyn ToSql + Sync)> = self
            .params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        if let Some(v) = self.expected.as_ref().and_then(PgVersion::param) {
            out.push(v);
        }
        out
    }

    fn target(&self) -> Target {
        document_target::<D>()
    }

    /// One statement, however many documents a patch by filter changes.
    fn len(&self) -> usize {
        1
    }

    fn checked(&self) -> bool {
        self.expected.is_some()
    }

    /// One `UPDATE` writes its rows or, rejected, none: alone it needs no transaction
    /// (its rejection is read from its own row, without the batch guard).
    fn atomic(&self) -> bool {
        true
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        self.written.clear();
        let Some(row) = rows.first() else {
            return Ok(());
        };
        let ids: Option<Vec<D::Id>> = row.try_get(0).map_err(reading::<D>)?;
        let ids = ids.unwrap_or_default();
        let versions = read_versions::<D>(row, 1)?;
        self.written = if versions.len() == ids.len() {
            ids.into_iter()
                .zip(versions.into_iter().map(Some))
                .collect()
        } else {
            ids.into_iter().map(|id| (id, None)).collect()
        };
        if self.checked() {
            let flag: Option<String> = row.try_get(2).map_err(reading::<D>)?;
            self.rejected = flag.is_some();
        }
        Ok(())
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn reset(&mut self) {
        self.rejected = false;
        self.written.clear();
    }

    fn explain<'a>(&'a self, client: Db<'a>) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async move {
            let Some(id) = &self.id else {
                return Ok(Vec::new());
            };
            let ids = vec![id.clone()];
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
            if conjoined::<D>() {
                params.push(&self.tenant);
            }
            let rows = client
                .query(D::storage().reads().versions.as_str(), &params)
                .await
                .map_err(reading::<D>)?;
            let found = match rows.first() {
                Some(row) => Some(read_version::<D>(row, 1)?),
                None => None,
            };
            let kind = D::Storage::rejection(BasicWrite::Upsert.into(), self.expected, found);
            Ok(vec![Rejection::new(D::DOCUMENT_TYPE, id.key(), kind)])
        })
    }

    fn committed(&self, state: &mut SessionState) {
        let docs = state.doc_state::<D>();
        for (id, version) in &self.written {
            // A copy the session loaded between queueing the patch and its save is older
            // than the patched row: forgotten, so the next load reads the row (and a
            // dirty-tracked copy cannot write the pre-patch state back over it).
            docs.identity.remove(id);
            docs.tracked.remove(id);
            // A patch by id names a document the session asked for; a patch by filter
            // updates only what the session already knew.
            let known = self.id.is_some() || docs.versions.contains_key(id);
            match version {
                Some(v) if known => {
                    docs.versions.insert(id.clone(), *v);
                }
                _ => {
                    docs.versions.remove(id);
                }
            }
        }
    }
}
