//! Storage of documents with `#[concurrency(optimistic)]`: a `uuid` version per write.

use std::marker::PhantomData;

use marten_core::concurrency::Optimistic;
use marten_core::Result;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::storage::{sealed, DocumentStorage, PgDocument, WriteKind};
use super::write_batch::WriteBatch;
use crate::error_map::{map_db_error, Failed};
use crate::tables::documents::{OptimisticSql, ReadSql, WriteSql, VERSION_COLUMN};
use crate::PgId;

/// The storage `#[derive(Document)]` selects for `#[concurrency(optimistic)]`.
pub struct OptimisticStorage<D> {
    reads: ReadSql,
    writes: OptimisticSql,
    _doc: PhantomData<fn() -> D>,
}

impl<D> sealed::Sealed for OptimisticStorage<D> {}

impl<D: PgDocument<Mode = Optimistic>> DocumentStorage<D> for OptimisticStorage<D> {
    fn new() -> Self {
        let id_type = <D::Id as PgId>::SQL_TYPE;
        OptimisticStorage {
            reads: ReadSql::new(D::TABLE_NAME, id_type, Some(VERSION_COLUMN)),
            writes: OptimisticSql::new(D::TABLE_NAME, id_type),
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
            crate::tables::documents::add_version_column(schema, D::TABLE_NAME),
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
        &["id", "data", "mt_last_modified", "mt_version"]
    }

    fn reads(&self) -> &ReadSql {
        &self.reads
    }

    fn write_sql(&self, kind: WriteKind) -> &WriteSql {
        match kind {
            WriteKind::Insert => &self.writes.insert,
            WriteKind::Update => &self.writes.update,
            _ => &self.writes.upsert,
        }
    }

    fn checked(_kind: WriteKind) -> bool {
        true
    }

    fn fresh_version() -> Option<Uuid> {
        Some(Uuid::new_v4())
    }

    fn params<'a>(batch: &'a WriteBatch<D>, out: &mut Vec<&'a (dyn ToSql + Sync)>) {
        if batch.ids.len() == 1 {
            out.extend([
                &batch.ids[0] as &(dyn ToSql + Sync),
                &batch.docs[0],
                &batch.fresh[0],
                &batch.expected[0],
            ]);
        } else {
            out.extend([
                &batch.ids as &(dyn ToSql + Sync),
                &batch.docs,
                &batch.fresh,
                &batch.expected,
                &batch.count,
            ]);
        }
    }

    fn read_version(row: &Row, idx: usize) -> Result<Option<Uuid>> {
        row.try_get(idx)
            .map_err(|e| map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE)))
    }

    fn read_versions(row: &Row, idx: usize) -> Result<Vec<Uuid>> {
        let v: Option<Vec<Uuid>> = row
            .try_get(idx)
            .map_err(|e| map_db_error(e, Failed::Reading(D::DOCUMENT_TYPE)))?;
        Ok(v.unwrap_or_default())
    }
}
