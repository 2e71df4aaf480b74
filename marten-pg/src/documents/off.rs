//! Storage of documents with `#[concurrency(off)]` (the default): no version, the last
//! writer wins.

use std::marker::PhantomData;

use marten_core::concurrency::{NoVersion, Off};
use marten_core::Result;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::storage::{sealed, DocumentStorage, PgDocument, WriteKind};
use super::write_batch::WriteBatch;
use crate::tables::documents::{OffSql, ReadSql, WriteSql};
use crate::PgId;

/// The storage `#[derive(Document)]` selects for `#[concurrency(off)]` or no attribute.
pub struct OffStorage<D> {
    reads: ReadSql,
    writes: OffSql,
    _doc: PhantomData<fn() -> D>,
}

impl<D> sealed::Sealed for OffStorage<D> {}

impl<D: PgDocument<Mode = Off>> DocumentStorage<D> for OffStorage<D> {
    fn new() -> Self {
        let id_type = <D::Id as PgId>::SQL_TYPE;
        OffStorage {
            reads: ReadSql::new(D::TABLE_NAME, id_type, None),
            writes: OffSql::new(D::TABLE_NAME, id_type),
            _doc: PhantomData,
        }
    }

    fn ddl(schema: &str) -> Vec<String> {
        let mut ddl = vec![crate::tables::documents::create_table(
            schema,
            D::TABLE_NAME,
            <D::Id as PgId>::SQL_TYPE,
        )];
        ddl.extend(crate::tables::documents::index_ddl(
            schema,
            D::TABLE_NAME,
            D::INDEXES,
            D::GIN_INDEX,
        ));
        ddl
    }

    fn columns() -> &'static [&'static str] {
        &["id", "data", "mt_last_modified"]
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

    fn checked(kind: WriteKind) -> bool {
        matches!(kind, WriteKind::Insert | WriteKind::Update)
    }

    fn fresh_version() -> Option<NoVersion> {
        None
    }

    fn params<'a>(batch: &'a WriteBatch<D>, out: &mut Vec<&'a (dyn ToSql + Sync)>) {
        if batch.ids.len() == 1 {
            out.extend([&batch.ids[0] as &(dyn ToSql + Sync), &batch.docs[0]]);
        } else {
            out.extend([&batch.ids as &(dyn ToSql + Sync), &batch.docs]);
            if <Self as DocumentStorage<D>>::checked(batch.kind) {
                out.push(&batch.count);
            }
        }
    }

    fn read_version(_row: &Row, _idx: usize) -> Result<Option<NoVersion>> {
        Ok(None)
    }

    fn read_versions(_row: &Row, _idx: usize) -> Result<Vec<NoVersion>> {
        Ok(Vec::new())
    }
}
