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
use marten_core::{Document, DocumentId, Error, Rejection, RejectionKind, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::migrate_fn;
use super::storage::{DocumentStorage, PgDocument, WriteKind};
use super::typed_batch::{document_batch, document_type_of};
use crate::error_map::{map_db_error, Failed};
use crate::json::RawJson;
use crate::schema::MigrateFn;
use crate::unit_of_work::{DocumentBatch, Operation, SessionState};

/// Several writes of one kind to documents of one type, sent as one statement
/// (`unnest` arrays, or scalars for a single document).
pub struct WriteBatch<D: PgDocument> {
    pub(crate) kind: WriteKind,
    pub(crate) ids: Vec<D::Id>,
    pub(crate) docs: Vec<RawJson>,
    /// Expected version per document (`None` = unchecked), or the revision to write for
    /// the revision kinds.
    pub(crate) expected: Vec<Option<VersionOf<D>>>,
    /// New versions chosen by the client (optimistic only; empty otherwise).
    pub(crate) fresh: Vec<VersionOf<D>>,
    pub(crate) count: i64,
    id_set: HashSet<D::Id>,
    written: Vec<(D::Id, Option<VersionOf<D>>)>,
    rejected: bool,
    /// One checked document sent as the whole save (see [`Operation::alone`]).
    alone: bool,
    /// Written by an inline projection: a rejection means "plan again".
    pub(crate) derived: bool,
}

impl<D: PgDocument> WriteBatch<D> {
    pub(crate) fn new(kind: WriteKind) -> Self {
        WriteBatch {
            kind,
            ids: Vec::new(),
            docs: Vec::new(),
            expected: Vec::new(),
            fresh: Vec::new(),
            count: 0,
            id_set: HashSet::new(),
            written: Vec::new(),
            rejected: false,
            alone: false,
            derived: false,
        }
    }

    /// Whether `id` can join this batch (a statement may touch a row only once).
    pub(crate) fn accepts(&self, kind: WriteKind, id: &D::Id) -> bool {
        self.kind == kind && !self.id_set.contains(id)
    }

    pub(crate) fn push(&mut self, id: D::Id, doc: RawJson, expected: Option<VersionOf<D>>) {
        self.id_set.insert(id.clone());
        self.ids.push(id);
        self.docs.push(doc);
        self.expected.push(expected);
        if let Some(v) = D::Storage::fresh_version() {
            self.fresh.push(v);
        }
        self.count += 1;
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
    fn sql(&self) -> &'static str {
        let sql = D::storage().write_sql(self.kind);
        if self.alone {
            &sql.one_alone
        } else if self.ids.len() == 1 {
            &sql.one
        } else {
            &sql.many
        }
    }

    fn alone(&mut self) {
        self.alone = self.ids.len() == 1 && self.checked();
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut out = Vec::with_capacity(5);
        D::Storage::params(self, &mut out);
        out
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn checked(&self) -> bool {
        D::Storage::checked(self.kind)
    }

    fn atomic(&self) -> bool {
        self.ids.len() == 1 || !self.checked()
    }

    document_type_of!(D);

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        if !self.checked() {
            return Ok(());
        }
        if self.alone {
            // A row `id, version` for the written document; none when it was rejected.
            self.written.clear();
            for row in rows {
                let id: D::Id = row.try_get(0).map_err(reading::<D>)?;
                self.written.push((id, D::Storage::read_version(row, 1)?));
            }
            self.rejected = self.written.len() < self.ids.len();
            return Ok(());
        }
        let Some(row) = rows.first() else {
            return Err(unexpected::<D>("a checked write returned no row"));
        };
        let ids: Option<Vec<D::Id>> = row.try_get(0).map_err(reading::<D>)?;
        let ids = ids.unwrap_or_default();
        let versions = D::Storage::read_versions(row, 1)?;
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
        self.alone = false;
        self.written.clear();
    }

    fn explain<'a>(&'a self, client: &'a Client) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async move {
            let rejected = self.rejected_ids();
            let ids: Vec<&D::Id> = rejected.iter().map(|(_, id)| *id).collect();
            let rows = client
                .query(D::storage().reads().versions.as_str(), &[&ids])
                .await
                .map_err(reading::<D>)?;
            let mut actual = std::collections::HashMap::new();
            for row in &rows {
                let id: D::Id = row.try_get(0).map_err(reading::<D>)?;
                actual.insert(id, D::Storage::read_version(row, 1)?);
            }
            Ok(rejected
                .into_iter()
                .map(|(i, id)| {
                    let found = actual.get(id);
                    let expected = self.expected.get(i).copied().flatten();
                    let kind = match (self.kind, found) {
                        (WriteKind::Insert, _) => RejectionKind::AlreadyExists,
                        (WriteKind::Update, None) => RejectionKind::NotFound,
                        (WriteKind::UpdateRevision | WriteKind::TryUpdateRevision, f) => {
                            RejectionKind::RevisionNotNewer {
                                requested: expected.map_or(0, |v| revision_of(&v)),
                                actual: f.copied().flatten().map_or(0, |v| revision_of(&v)),
                            }
                        }
                        (_, f) => RejectionKind::VersionMismatch {
                            expected: expected.map_or_else(|| "any".to_owned(), |v| v.to_string()),
                            actual: f.copied().flatten().map(|v| v.to_string()),
                        },
                    };
                    Rejection::new(D::DOCUMENT_TYPE, id.key(), kind)
                })
                .collect())
        })
    }

    fn committed(&self, state: &mut SessionState) {
        let docs = state.doc_state::<D>();
        if self.kind == WriteKind::TryUpdateRevision {
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

/// Turns a version into a revision number for revision reports. Only numeric documents
/// reach the revision kinds; their version is an `i64`.
fn revision_of<V: std::fmt::Display>(v: &V) -> i64 {
    v.to_string().parse().unwrap_or(0)
}

fn unexpected<D: Document>(what: &str) -> Error {
    Error::Database(marten_core::DatabaseError {
        code: None,
        context: format!("writing {}", D::DOCUMENT_TYPE),
        source: what.to_owned().into(),
    })
}

fn reading<D: Document>(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE))
}
