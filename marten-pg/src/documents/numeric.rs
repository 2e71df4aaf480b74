//! Storage of documents with `#[concurrency(numeric)]`: an `i64` revision, 1 on insert and
//! one more per write.

use std::marker::PhantomData;

use marten_core::concurrency::Numeric;
use marten_core::Result;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::storage::{sealed, DocumentStorage, PgDocument, WriteKind};
use super::write_batch::WriteBatch;
use crate::error_map::{map_db_error, Failed};
use crate::tables::documents::{NumericSql, ReadSql, WriteSql, REVISION_COLUMN};
use crate::PgId;

/// The storage `#[derive(Document)]` selects for `#[concurrency(numeric)]`.
pub struct NumericStorage<D> {
    reads: ReadSql,
    writes: NumericSql,
    _doc: PhantomData<fn() -> D>,
}

impl<D> sealed::Sealed for NumericStorage<D> {}

impl<D: PgDocument<Mode = Numeric>> DocumentStorage<D> for NumericStorage<D> {
    fn new() -> Self {
        let id_type = <D::Id as PgId>::SQL_TYPE;
        NumericStorage {
            reads: ReadSql::new(D::TABLE_NAME, id_type, Some(REVISION_COLUMN)),
            writes: NumericSql::new(D::TABLE_NAME, id_type),
            _doc: PhantomData,
        }
    }

    fn ddl(schema: &str) -> Vec<String> {
        let mut ddl = vec![
            crate::tables::documents::create_table(
                schema,
                D::TABLE_NAME,
                <D::Id as PgId>::SQL_TYPE,
            ),
            crate::tables::documents::add_revision_column(schema, D::TABLE_NAME),
        ];
        ddl.extend(crate::tables::documents::index_ddl(
            schema,
            D::TABLE_NAME,
            D::INDEXES,
            D::GIN_INDEX,
        ));
        ddl
    }

    fn columns() -> &'static [&'static str] {
        &["id", "data", "mt_last_modified", "mt_revision"]
    }

    fn reads(&self) -> &ReadSql {
        &self.reads
    }

    fn write_sql(&self, kind: WriteKind) -> &WriteSql {
        match kind {
            WriteKind::Upsert => &self.writes.upsert,
            WriteKind::Insert => &self.writes.insert,
            WriteKind::Update => &self.writes.update,
            WriteKind::UpdateRevision => &self.writes.update_revision,
            WriteKind::TryUpdateRevision => &self.writes.try_update_revision,
        }
    }

    fn checked(kind: WriteKind) -> bool {
        kind != WriteKind::TryUpdateRevision
    }

    fn fresh_version() -> Option<i64> {
        None
    }

    fn params<'a>(batch: &'a WriteBatch<D>, out: &mut Vec<&'a (dyn ToSql + Sync)>) {
        if batch.ids.len() == 1 {
            out.extend([
                &batch.ids[0] as &(dyn ToSql + Sync),
                &batch.docs[0],
                &batch.expected[0],
            ]);
        } else {
            out.extend([
                &batch.ids as &(dyn ToSql + Sync),
                &batch.docs,
                &batch.expected,
            ]);
            if <Self as DocumentStorage<D>>::checked(batch.kind) {
                out.push(&batch.count);
            }
        }
    }

    fn read_version(row: &Row, idx: usize) -> Result<Option<i64>> {
        row.try_get(idx)
            .map_err(|e| map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE)))
    }

    fn read_versions(row: &Row, idx: usize) -> Result<Vec<i64>> {
        let v: Option<Vec<i64>> = row
            .try_get(idx)
            .map_err(|e| map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE)))?;
        Ok(v.unwrap_or_default())
    }
}
