//! Write batches: several writes of one document type and one write kind sent as one
//! statement, type-erased behind [`Operation`] so a unit of work can hold operations of
//! many document types. Reads back which rows were written and explains rejections.
//! Uses the unit of work's operation traits, the document storage (SQL, parameters,
//! versions), the schema's migration and the error map; never projections, session,
//! store or daemon.

use std::any::Any;
use std::collections::HashSet;

use futures_util::future::BoxFuture;
use marten_core::concurrency::VersionOf;
use marten_core::{Document, DocumentId, Error, Rejection, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::connection::{Db, SqlText};

use super::storage::{
    conjoined, fresh_version, read_version, read_versions, BasicWrite, DocumentStorage, PgDocument,
    WriteOf,
};
use super::typed_batch::{document_batch, document_target, forget_held};
use crate::error_map::reading_documents as reading;
use crate::json::RawJson;
use crate::tenant_key::TenantKey;
use crate::unit_of_work::{row_order, Column, DocumentBatch, Operation, SessionState, Target};

/// Up to this many documents, a batch finds a repeated id by scanning its ids.
const SCAN_IDS: usize = 16;

/// Several writes of one kind to documents of one type, sent as one statement
/// (`unnest` arrays, or scalars for a single document).
pub struct WriteBatch<D: PgDocument> {
    pub(crate) kind: WriteOf<D>,
    pub(crate) ids: Column<D::Id>,
    pub(crate) docs: Column<RawJson>,
    /// Expected version per document (`None` = unchecked), or the revision to write for
    /// the revision kinds.
    pub(crate) expected: Column<Option<VersionOf<D>>>,
    /// New versions chosen by the client (optimistic only; empty otherwise).
    pub(crate) fresh: Column<VersionOf<D>>,
    pub(crate) count: i64,
    /// The tenant of a conjoined type's rows (bound after the row parameters).
    tenant: Option<TenantKey>,
    /// The ids of a batch past [`SCAN_IDS`] documents, to refuse a second write of one;
    /// empty while the batch is small enough to scan `ids` (most saves write a few
    /// documents, and a set would be an allocation and a hash per write).
    id_set: HashSet<D::Id>,
    /// The documents the statement wrote, with their new versions (checked kinds; held
    /// inline for one document).
    written: Column<(D::Id, Option<VersionOf<D>>)>,
    /// An unchecked batch whose row count said it wrote every row (known only when it
    /// was sent alone, [`Operation::accept_count`]; a transaction's statements report
    /// rows, not counts).
    wrote_all: bool,
    rejected: bool,
    /// One checked document sent as the whole save (see [`Operation::alone`]).
    alone: bool,
    /// Written by an inline projection: a rejection means "plan again".
    pub(crate) derived: bool,
    /// The document an inline aggregate planned from its cache expects to replace
    /// (`Some(None)`: none stored): the batch holds that one write, sent guarded
    /// (`WriteSql::one_guarded`), and a changed document rejects it.
    guard: Option<Option<RawJson>>,
}

impl<D: PgDocument> WriteBatch<D> {
    /// An empty batch of `kind`; the rows of a conjoined type belong to `tenant`.
    pub(crate) fn new(kind: WriteOf<D>, tenant: Option<&marten_core::TenantId>) -> Self {
        WriteBatch {
            kind,
            tenant: if conjoined::<D>() {
                TenantKey::of(tenant)
            } else {
                None
            },
            ids: Column::default(),
            docs: Column::default(),
            expected: Column::default(),
            fresh: Column::default(),
            count: 0,
            id_set: HashSet::new(),
            written: Column::default(),
            wrote_all: false,
            rejected: false,
            alone: false,
            derived: false,
            guard: None,
        }
    }

    /// A batch of the one derived write of `id`, guarded by the document it expects to
    /// replace (`None`: none stored).
    pub(crate) fn guarded(
        kind: WriteOf<D>,
        tenant: Option<&marten_core::TenantId>,
        (id, doc): (D::Id, RawJson),
        replaces: Option<&[u8]>,
    ) -> Self {
        let mut batch = WriteBatch::new(kind, tenant);
        batch.push(id, doc, None);
        batch.derived = true;
        batch.guard = Some(replaces.map(|j| RawJson(j.to_vec())));
        batch
    }

    /// Whether `id` can join this batch (a statement may touch a row only once).
    pub(crate) fn accepts(&self, kind: WriteOf<D>, id: &D::Id) -> bool {
        self.kind == kind
            && self.guard.is_none()
            && if self.id_set.is_empty() {
                !self.ids.contains(id)
            } else {
                !self.id_set.contains(id)
            }
    }

    pub(crate) fn push(&mut self, id: D::Id, doc: RawJson, expected: Option<VersionOf<D>>) {
        if !self.id_set.is_empty() {
            self.id_set.insert(id.clone());
        } else if self.ids.len() == SCAN_IDS {
            self.id_set.extend(self.ids.iter().cloned());
            self.id_set.insert(id.clone());
        }
        self.ids.push(id);
        self.docs.push(doc);
        self.expected.push(expected);
        if let Some(v) = fresh_version::<D>() {
            self.fresh.push(v);
        }
        self.count += 1;
    }

    /// A column's parameter: its value for a single document, the array for several.
    pub(crate) fn column<'a, T: ToSql + Sync>(
        &self,
        values: &'a Column<T>,
    ) -> &'a (dyn ToSql + Sync) {
        match values.as_slice() {
            [one] if self.ids.len() == 1 => one,
            _ => values,
        }
    }

    /// Whether a write of this batch may write nothing without being rejected: an
    /// unchecked write other than the plain upsert (the numeric `TryUpdateRevision`, which
    /// skips a revision that is not newer). The unchecked upsert (of a document without
    /// versions) always writes.
    fn may_skip(&self) -> bool {
        !self.checked() && self.kind != WriteOf::<D>::from(BasicWrite::Upsert)
    }

    /// After the commit of a batch that [may skip](Self::may_skip) rows and is not read
    /// back. When its row count said every row was written, what the session holds of
    /// them is what is stored, at the version each row was written at (the revision the
    /// write gave, in `expected`). Otherwise the session cannot tell a skipped row from a
    /// written one, and forgets what it held of every document of the batch (the copy a
    /// skipped write left is not what is stored; its row may even be soft-deleted) and
    /// their versions: the next load reads them anew.
    fn committed_unread(&self, state: &mut SessionState) {
        if self.wrote_all {
            let docs = state.doc_state::<D>();
            for (id, version) in self.ids.iter().zip(self.expected.iter()) {
                match version {
                    Some(v) => docs.versions.insert(id.clone(), *v),
                    None => docs.versions.remove(id),
                };
            }
            return;
        }
        forget_held::<D>(&self.ids, state);
        let docs = state.doc_state::<D>();
        if docs.versions.is_empty() {
            return;
        }
        for id in &self.ids {
            docs.versions.remove(id);
        }
    }

    fn rejected_ids(&self) -> Vec<(usize, &D::Id)> {
        let written: HashSet<&D::Id> = self.written.iter().map(|(id, _)| id).collect();
        self.ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !written.contains(id))
            .collect()
    }
}

document_batch!(WriteBatch);

impl<D: PgDocument> Operation for WriteBatch<D> {
    fn sql(&self) -> SqlText<'_> {
        let sql = D::storage().write_sql(self.kind);
        SqlText::Static(if self.guard.is_some() {
            &sql.one_guarded
        } else if self.alone {
            &sql.one_alone
        } else if self.ids.len() == 1 {
            &sql.one
        } else {
            &sql.many
        })
    }

    fn alone(&mut self) {
        self.alone = self.ids.len() == 1 && self.checked() && self.guard.is_none();
    }

    /// By id (the batch's statements write their rows in the order they are bound).
    fn order_rows(&mut self) {
        let swaps = row_order(&self.ids, D::Id::write_order);
        if swaps.is_empty() {
            return;
        }
        self.ids.apply_swaps(&swaps);
        self.docs.apply_swaps(&swaps);
        self.expected.apply_swaps(&swaps);
        if !self.fresh.is_empty() {
            self.fresh.apply_swaps(&swaps);
        }
    }

    /// Alone, an optimistic write returns no row: its version is the fresh one the
    /// client chose, so its row count says all (see `WriteSql::one_alone`). A write
    /// that is not checked reads nothing back at all.
    fn counts_only(&self) -> bool {
        !self.checked() || (self.alone && !self.fresh.is_empty())
    }

    /// A checked write (alone, optimistic) was written when it counts a row; an unchecked
    /// batch's count says whether it wrote every row.
    fn accept_count(&mut self, count: u64) -> Result<()> {
        if !self.checked() {
            self.wrote_all = usize::try_from(count).is_ok_and(|n| n == self.ids.len());
            return Ok(());
        }
        self.written.clear();
        if count > 0 {
            if let (Some(id), Some(version)) = (self.ids.first(), self.fresh.first()) {
                self.written.push((id.clone(), Some(*version)));
            }
        }
        self.rejected = self.written.len() < self.ids.len();
        Ok(())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        // Ids, documents, two version columns, the tenant, the count or the guard: never
        // grown.
        let mut out = Vec::with_capacity(6);
        out.extend([self.column(&self.ids), self.column(&self.docs)]);
        D::Storage::params(self, &mut out);
        if conjoined::<D>() {
            out.push(&self.tenant);
        }
        if let Some(replaces) = &self.guard {
            out.push(replaces);
        }
        if self.ids.len() > 1 && self.checked() {
            out.push(&self.count);
        }
        out
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// A guarded write is read back whatever its kind: its guard may reject it.
    fn checked(&self) -> bool {
        D::Storage::checked(self.kind) || self.guard.is_some()
    }

    fn atomic(&self) -> bool {
        self.ids.len() == 1 || !self.checked()
    }

    fn target(&self) -> Target {
        document_target::<D>()
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        if !self.checked() {
            return Ok(());
        }
        if self.alone {
            // A row `id, version` for the written document; none when it was rejected.
            self.written.clear();
            for row in rows {
                let id: D::Id = row.try_get(0).map_err(reading::<D>)?;
                self.written.push((id, read_version::<D>(row, 1)?));
            }
            self.rejected = self.written.len() < self.ids.len();
            return Ok(());
        }
        let Some(row) = rows.first() else {
            return Err(unexpected::<D>("a checked write returned no row"));
        };
        let ids: Option<Vec<D::Id>> = row.try_get(0).map_err(reading::<D>)?;
        let ids = ids.unwrap_or_default();
        let versions = read_versions::<D>(row, 1)?;
        self.rejected = ids.len() < self.ids.len();
        self.written = if versions.len() == ids.len() {
            ids.into_iter()
                .zip(versions.into_iter().map(Some))
                .collect()
        } else {
            ids.into_iter().map(|id| (id, None)).collect()
        };
        Ok(())
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn retryable(&self) -> bool {
        self.derived
    }

    fn reset(&mut self) {
        self.rejected = false;
        self.wrote_all = false;
        self.alone = false;
        self.written.clear();
    }

    /// A guarded write's rejection is the cache's, retried and never reported (as a
    /// `CachedDocCheck`'s): a save that fails for another rejection does not name it.
    fn explain<'a>(&'a self, client: Db<'a>) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async move {
            if self.guard.is_some() {
                return Ok(Vec::new());
            }
            let rejected = self.rejected_ids();
            let ids: Vec<&D::Id> = rejected.iter().map(|(_, id)| *id).collect();
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
            if conjoined::<D>() {
                params.push(&self.tenant);
            }
            let rows = client
                .query(D::storage().reads().versions.as_str(), &params)
                .await
                .map_err(reading::<D>)?;
            let mut actual = std::collections::HashMap::new();
            for row in &rows {
                let id: D::Id = row.try_get(0).map_err(reading::<D>)?;
                actual.insert(id, read_version::<D>(row, 1)?);
            }
            Ok(rejected
                .into_iter()
                .map(|(i, id)| {
                    let found = actual.get(id).copied();
                    let expected = self.expected.get(i).copied().flatten();
                    let kind = D::Storage::rejection(self.kind, expected, found);
                    Rejection::new(D::DOCUMENT_TYPE, id.key(), kind)
                })
                .collect())
        })
    }

    fn forget_held(&self, state: &mut SessionState) {
        forget_held::<D>(&self.ids, state);
    }

    fn committed(&self, state: &mut SessionState) {
        if self.may_skip() {
            return self.committed_unread(state);
        }
        let docs = state.doc_state::<D>();
        if !self.checked() {
            // Not read back (an upsert, which always writes): the documents the session
            // holds are the ones written, but the versions it knew may be stale.
            if docs.versions.is_empty() {
                return;
            }
            for id in &self.ids {
                docs.versions.remove(id);
            }
            return;
        }
        for (id, version) in &self.written {
            match version {
                Some(v) => docs.versions.insert(id.clone(), *v),
                None => docs.versions.remove(id),
            };
        }
    }
}

fn unexpected<D: Document>(what: &str) -> Error {
    Error::Database(marten_core::DatabaseError {
        code: None,
        context: format!("writing {}", D::DOCUMENT_TYPE),
        source: what.to_owned().into(),
    })
}
