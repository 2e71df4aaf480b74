//! Patches as unit-of-work operations: [`PatchStatement`], one `UPDATE` of one document
//! by id or of every document a rendered filter ([`Condition`]) matches. Its text is
//! built when queued (see [`crate::tables::documents::update`]); every value is a
//! parameter. Uses the unit of work's operation traits, the document storage (versions,
//! reads) and the table SQL.
//!
//! An increment is checked against its field's type ([`NumberType`], the
//! [`NumberKind`] the patch carries): a sum the type cannot hold (`u8` at 255 plus 1, an `f64` beyond
//! `f64::MAX`) fails the save with [`Error::InvalidInput`] naming the document type and
//! the field, and nothing of the save is written (the document would no longer load).

use futures_util::future::BoxFuture;
use marten_core::concurrency::VersionOf;
use marten_core::patch::{NumberKind, Patch, PatchOp, PatchTarget};
use marten_core::{Document, DocumentId, Error, Rejection, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::storage::{conjoined, read_version, read_versions, BasicWrite, DocumentStorage};
use super::storage::{PgDocument, PgVersion};
use super::typed_batch::document_target;
use crate::connection::{Db, SqlText};
use crate::error_map::reading_documents as reading;
use crate::tables::documents as sql;
use crate::tables::functions::REJECTED_SQLSTATE;
use crate::tenant_key::TenantKey;
use crate::unit_of_work::{Operation, SessionState, Target};

use super::condition::{Condition, Param};

/// One patch: an `UPDATE` of documents of type `D`.
pub(crate) struct PatchStatement<D: PgDocument> {
    /// The statement in a transaction the batch guard ends (an increment out of range
    /// sets the rejected flag and is answered in the last column).
    sql: String,
    /// The statement that is the whole save, when it checks increments (an increment out
    /// of range raises the guard's error); `sql` otherwise.
    sql_alone: Option<String>,
    /// Whether the statement is the whole save ([`Operation::alone`]).
    alone: bool,
    /// The checked increments: the field and its type.
    increments: Vec<(String, NumberType)>,
    /// Whether an increment went out of its field's range (nothing was written).
    out_of_range: bool,
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
        let types: Vec<Option<NumberType>> = patch
            .ops
            .iter()
            .map(|op| match op {
                PatchOp::Increment { kind, .. } => Some(NumberType(*kind)),
                _ => None,
            })
            .collect();
        let ranges: Vec<Option<(&'static str, &'static str)>> =
            types.iter().map(|t| t.map(NumberType::range)).collect();
        let increments: Vec<(String, NumberType)> = (patch.ops.iter().zip(&types))
            .filter_map(|(op, t)| t.map(|t| (op.path().segments.join("."), t)))
            .collect();
        let checked = !increments.is_empty();
        let expected = patch.expected.filter(|v| v.param().is_some());
        let expected_param = expected.map(|_| params.len() + 1);
        let bump = <VersionOf<D> as PgVersion>::BUMP;
        let statement = |raise: bool| {
            let data = sql::patched_data(&patch.ops, first, &ranges, raise);
            let column = checked && !raise;
            sql::update(D::TABLE_NAME, bump, &data, &text, expected_param, column)
        };
        Ok(PatchStatement {
            sql: statement(false),
            sql_alone: checked.then(|| statement(true)),
            alone: false,
            increments,
            out_of_range: false,
            params,
            id,
            expected,
            tenant,
            written: Vec::new(),
            rejected: false,
        })
    }

    /// The error of an increment out of its field's range: the document type, the id of
    /// a patch by id, the field (each checked one, when the patch has several) and its type.
    fn out_of_range_error(&self) -> Error {
        let mut fields: Vec<&(String, NumberType)> = Vec::new();
        for inc in &self.increments {
            if !fields.iter().any(|(f, _)| *f == inc.0) {
                fields.push(inc);
            }
        }
        let (field, reason) = match fields.as_slice() {
            [(field, ty)] => (field.clone(), ty.reason()),
            many => (
                many.iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                "would be incremented out of the range of its type (the document would no \
                 longer load)",
            ),
        };
        Error::InvalidInput {
            owner: D::DOCUMENT_TYPE.to_owned(),
            id: self.id.as_ref().map(ToString::to_string),
            field,
            reason,
        }
    }
}

/// The number type of an incremented field, which the sum must stay within: a sum out
/// of the type's range no longer deserializes (or, for `f32`, reads as infinite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NumberType(NumberKind);

impl NumberType {
    /// The least and greatest values, as SQL `numeric` literals (for a float, the
    /// magnitude up to which a stored number reads as a finite value).
    fn range(self) -> (&'static str, &'static str) {
        match self.0 {
            NumberKind::I8 => ("-128", "127"),
            NumberKind::I16 => ("-32768", "32767"),
            NumberKind::I32 => ("-2147483648", "2147483647"),
            NumberKind::I64 => ("-9223372036854775808", "9223372036854775807"),
            NumberKind::U8 => ("0", "255"),
            NumberKind::U16 => ("0", "65535"),
            NumberKind::U32 => ("0", "4294967295"),
            NumberKind::U64 => ("0", "18446744073709551615"),
            // PostgreSQL writes a `jsonb` number with all its digits (no exponent), and
            // serde_json reads such a long number as a float only approximately: an
            // `f32` up to here reads as at most `f32::MAX`; an `f64` written as
            // `17976931348623157` and 292 more digits (`f64::MAX` itself) already fails
            // to read, so the bound keeps a margin of a few units in the last place.
            NumberKind::F32 => ("-3.40282356e38", "3.40282356e38"),
            NumberKind::F64 => ("-1.797693134862315e308", "1.797693134862315e308"),
        }
    }

    /// Why an increment of a field of this type was refused.
    fn reason(self) -> &'static str {
        match self.0 {
            NumberKind::I8 => "would be incremented out of the range of i8 (-128..=127)",
            NumberKind::I16 => "would be incremented out of the range of i16 (-32768..=32767)",
            NumberKind::I32 => "would be incremented out of the range of i32",
            NumberKind::I64 => "would be incremented out of the range of i64",
            NumberKind::U8 => "would be incremented out of the range of u8 (0..=255)",
            NumberKind::U16 => "would be incremented out of the range of u16 (0..=65535)",
            NumberKind::U32 => "would be incremented out of the range of u32",
            NumberKind::U64 => "would be incremented out of the range of u64",
            NumberKind::F32 => "would be incremented beyond the largest finite f32",
            NumberKind::F64 => "would be incremented beyond the largest finite f64",
        }
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

/// Refuses a value `jsonb` cannot hold, naming the field, and an increment by a NaN or
/// infinite float (which serde writes as `null`).
fn check_value<D: Document>(
    op: &PatchOp,
    value: &serde_json::Value,
    id: Option<&D::Id>,
) -> Result<()> {
    if matches!(op, PatchOp::Increment { .. }) && !value.is_number() {
        return Err(Error::InvalidInput {
            owner: D::DOCUMENT_TYPE.to_owned(),
            id: id.map(ToString::to_string),
            field: op.path().segments.join("."),
            reason: "is incremented by NaN or an infinite number, which JSON cannot hold",
        });
    }
    let json = value.to_string();
    let field = op.path().segments.join(".");
    crate::validate::check_json_field(json.as_bytes(), &format!("{field}: "), || {
        (D::DOCUMENT_TYPE.to_owned(), id.map(|i| i.to_string()))
    })
}

impl<D: PgDocument> Operation for PatchStatement<D> {
    fn sql(&self) -> SqlText<'_> {
        match &self.sql_alone {
            Some(sql) if self.alone => SqlText::Built(sql),
            _ => SqlText::Built(&self.sql),
        }
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

    /// A version to assert, or an increment to check (in a transaction, the batch guard
    /// rolls back an increment out of range).
    fn checked(&self) -> bool {
        self.expected.is_some() || !self.increments.is_empty()
    }

    /// One `UPDATE` writes its rows or, rejected, none: alone it needs no transaction
    /// (its rejection is read from its own row, without the batch guard).
    fn atomic(&self) -> bool {
        true
    }

    /// The whole save: an increment out of range raises (there is no guard to roll the
    /// statement back).
    fn alone(&mut self) {
        self.alone = true;
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
        if self.expected.is_some() {
            let flag: Option<String> = row.try_get(2).map_err(reading::<D>)?;
            self.rejected = flag.is_some();
        }
        if !self.increments.is_empty() && !self.alone {
            let out: Option<bool> = row.try_get(3).map_err(reading::<D>)?;
            self.out_of_range = out == Some(true);
        }
        Ok(())
    }

    /// The guard's error raised by the statement alone: an increment out of range.
    fn rejected_by(&mut self, e: &tokio_postgres::Error) -> bool {
        let raised = e.code().is_some_and(|c| c.code() == REJECTED_SQLSTATE);
        if raised && self.alone && self.sql_alone.is_some() {
            self.out_of_range = true;
            self.written.clear();
            return true;
        }
        false
    }

    fn has_rejections(&self) -> bool {
        self.rejected || self.out_of_range
    }

    fn reset(&mut self) {
        self.rejected = false;
        self.out_of_range = false;
        self.alone = false;
        self.written.clear();
    }

    /// An increment out of range is the save's error ([`Error::InvalidInput`]); a
    /// version rejection is explained by the stored version.
    fn explain<'a>(&'a self, client: Db<'a>) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        if self.out_of_range {
            let e = self.out_of_range_error();
            return Box::pin(async move { Err(e) });
        }
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
            // dirty-tracked copy cannot write the pre-patch state back over it). A copy a
            // later write of the same save put there is the document it stored, and
            // stays.
            docs.forget_stale(id);
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
