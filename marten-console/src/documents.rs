//! The document types a host registers with
//! [`ConsoleBuilder::document`](crate::ConsoleBuilder::document), and the fields of each
//! that the documents page's query box offers: each [`QueryField`] wraps one typed field
//! path of the query DSL (`Field<D, T>`), so a filter typed into the page is the same
//! `Filter<D>` a program would build with `f.total.gt(100)`. The value typed is read as
//! JSON of the field's type (`100`, `true`, `"text"`), or as a string when it is not JSON.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use marten_core::query::{Comparable, Field, Filter, HasFields, Orderable, TextField};
use marten_core::{Document, DocumentId, IdKey, Tenancy};
use marten_pg::query::param;
use marten_pg::{DocumentStore, PgDocument};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// An operator of the query box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// Starts with (strings).
    StartsWith,
    /// Ends with (strings).
    EndsWith,
    /// Equal ignoring case (strings).
    EqIgnoreCase,
}

impl Op {
    /// Every operator.
    pub const ALL: [Op; 9] = [
        Op::Eq,
        Op::Ne,
        Op::Gt,
        Op::Ge,
        Op::Lt,
        Op::Le,
        Op::StartsWith,
        Op::EndsWith,
        Op::EqIgnoreCase,
    ];

    /// The operator's name in forms and URLs.
    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Ge => "ge",
            Op::Lt => "lt",
            Op::Le => "le",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::EqIgnoreCase => "eq_ignore_case",
        }
    }

    /// The operator named `name`.
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == name)
    }
}

type MakeFilter<D> = Box<dyn Fn(Op, &str) -> Result<Filter<D>, String> + Send + Sync>;

/// One field of a document type the query box can filter on, with its operators.
pub struct QueryField<D> {
    name: String,
    ops: &'static [Op],
    make: MakeFilter<D>,
}

impl<D> std::fmt::Debug for QueryField<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryField")
            .field("name", &self.name)
            .field("ops", &self.ops)
            .finish_non_exhaustive()
    }
}

/// The value typed for a field: JSON of `T`, else the text as a JSON string.
fn value_of<T: DeserializeOwned>(input: &str) -> Result<T, String> {
    serde_json::from_str(input)
        .or_else(|_| serde_json::from_value(serde_json::Value::String(input.to_owned())))
        .map_err(|e| format!("{input:?} is not a value of this field: {e}"))
}

fn path_name<D: 'static, T: 'static>(field: &Field<D, T>) -> String {
    field.path().segments.join(".")
}

impl<D: 'static> QueryField<D> {
    /// A field compared for equality only (`eq`, `ne`).
    pub fn equality<T: Comparable + DeserializeOwned + Clone>(field: Field<D, T>) -> Self {
        QueryField {
            name: path_name(&field),
            ops: &[Op::Eq, Op::Ne],
            make: Box::new(move |op, input| {
                let v: T = value_of(input)?;
                match op {
                    Op::Eq => Ok(field.eq(v)),
                    Op::Ne => Ok(field.ne(v)),
                    other => Err(unsupported(other)),
                }
            }),
        }
    }

    /// An ordered field (numbers, strings, uuids, booleans): equality and order.
    pub fn ordered<T: Orderable + DeserializeOwned + Clone>(field: Field<D, T>) -> Self {
        QueryField {
            name: path_name(&field),
            ops: &[Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le],
            make: Box::new(move |op, input| {
                let v: T = value_of(input)?;
                ordered_filter(&field, op, v)
            }),
        }
    }

    /// The field's name in the query box (its JSON path, dotted).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operators it offers.
    pub fn ops(&self) -> &'static [Op] {
        self.ops
    }

    /// The filter `field op value`, or why not.
    pub fn filter(&self, op: Op, value: &str) -> Result<Filter<D>, String> {
        if !self.ops.contains(&op) {
            return Err(unsupported(op));
        }
        (self.make)(op, value)
    }
}

impl<D: 'static> QueryField<D> {
    /// A string field: order and the string operators (`starts_with`, `ends_with`,
    /// `eq_ignore_case`).
    pub fn text<T>(field: Field<D, T>) -> Self
    where
        T: TextField + Orderable + DeserializeOwned + Clone + From<String>,
    {
        QueryField {
            name: path_name(&field),
            ops: &Op::ALL,
            make: Box::new(move |op, input| match op {
                Op::StartsWith => Ok(field.starts_with(input)),
                Op::EndsWith => Ok(field.ends_with(input)),
                Op::EqIgnoreCase => Ok(field.eq_ignore_case(input)),
                other => ordered_filter(&field, other, T::from(input.to_owned())),
            }),
        }
    }
}

fn ordered_filter<D: 'static, T: Orderable + Clone>(
    field: &Field<D, T>,
    op: Op,
    v: T,
) -> Result<Filter<D>, String> {
    Ok(match op {
        Op::Eq => field.eq(v),
        Op::Ne => field.ne(v),
        Op::Gt => field.gt(v),
        Op::Ge => field.ge(v),
        Op::Lt => field.lt(v),
        Op::Le => field.le(v),
        other => return Err(unsupported(other)),
    })
}

fn unsupported(op: Op) -> String {
    format!("the operator {} does not apply to this field", op.name())
}

/// A query of the documents page: an optional filter and the id after which to read.
#[derive(Debug, Clone, Default)]
pub struct DocQuery {
    /// Field name, operator and typed value.
    pub filter: Option<(String, Op, String)>,
    /// The keyset cursor (an id as [`encode_id`] writes it).
    pub after: Option<String>,
    /// The tenant whose documents a conjoined type shows (required for one).
    pub tenant: Option<String>,
    /// Documents per page.
    pub limit: usize,
}

/// One page of documents: `(id, JSON)` rows and the cursor of the next page.
#[derive(Debug, Clone, Default)]
pub struct DocPage {
    /// The documents: id as text, pretty JSON.
    pub rows: Vec<(String, String)>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// Why a page of documents could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocError {
    /// The query cannot be run as asked: a field the type does not offer, an operator the
    /// field lacks, a value not of the field's type, a cursor the console did not write,
    /// no tenant for a conjoined type. The request's fault: the page answers 400.
    #[error("{0}")]
    Query(String),
    /// The store failed: the database unreachable or too slow (the page answers 503), a
    /// tenant it refuses (400), anything else (500).
    #[error(transparent)]
    Store(#[from] marten_core::Error),
}

/// A boxed future of a page.
pub type PageFuture<'a> = Pin<Box<dyn Future<Output = Result<DocPage, DocError>> + Send + 'a>>;

/// A registered document type, erased.
pub trait DocumentView: Send + Sync {
    /// The type's name ([`Document::DOCUMENT_TYPE`]).
    fn name(&self) -> &'static str;
    /// The fields of the query box: `(name, operators)`.
    fn fields(&self) -> Vec<(String, &'static [Op])>;
    /// A page of documents matching `query`.
    fn page<'a>(&'a self, store: &'a DocumentStore, query: &'a DocQuery) -> PageFuture<'a>;
    /// Whether the type is conjoined (each tenant its own rows): the page then asks for
    /// a tenant.
    fn conjoined(&self) -> bool {
        false
    }
}

/// A document type and its query fields.
pub(crate) struct Registered<D> {
    pub(crate) fields: Vec<QueryField<D>>,
}

impl<D> DocumentView for Registered<D>
where
    D: PgDocument + HasFields + serde::Serialize + Clone,
{
    fn name(&self) -> &'static str {
        D::DOCUMENT_TYPE
    }

    fn fields(&self) -> Vec<(String, &'static [Op])> {
        self.fields
            .iter()
            .map(|f| (f.name.clone(), f.ops))
            .collect()
    }

    fn conjoined(&self) -> bool {
        D::TENANCY == Tenancy::Conjoined
    }

    fn page<'a>(&'a self, store: &'a DocumentStore, query: &'a DocQuery) -> PageFuture<'a> {
        Box::pin(async move {
            let filter = match &query.filter {
                Some((name, op, value)) => {
                    let field = self
                        .fields
                        .iter()
                        .find(|f| f.name == *name)
                        .ok_or_else(|| {
                            DocError::Query(format!(
                                "{name} is not a field of {}",
                                D::DOCUMENT_TYPE
                            ))
                        })?;
                    Some(field.filter(*op, value).map_err(DocError::Query)?)
                }
                None => None,
            };
            let mut session = match (D::TENANCY, &query.tenant) {
                (_, Some(tenant)) => store.query_session_for(tenant.as_str())?,
                (Tenancy::Conjoined, None) => {
                    return Err(DocError::Query(format!(
                        "{} is conjoined: each tenant has its own documents; give a tenant",
                        D::DOCUMENT_TYPE
                    )))
                }
                (_, None) => store.query_session(),
            };
            let mut q = session.query::<D>();
            if let Some(f) = filter {
                q = q.where_filter(f);
            }
            if let Some(after) = &query.after {
                let cursor = decode_id(after).map_err(DocError::Query)?;
                q = q.where_sql("d.id > $1", vec![cursor]);
            }
            let limit = query.limit.max(1);
            let docs = q.take(limit + 1).to_list().await?;
            let mut page = DocPage::default();
            for doc in docs.iter().take(limit) {
                let id = id_text(&doc.id().key());
                let json = serde_json::to_string_pretty(doc).map_err(|e| {
                    marten_core::Error::CorruptData {
                        owner: D::DOCUMENT_TYPE.to_owned(),
                        id: Some(id.clone()),
                        detail: format!("cannot be shown as JSON: {e}"),
                    }
                })?;
                page.rows.push((id, json));
            }
            if docs.len() > limit {
                page.next = docs.get(limit - 1).map(|d| encode_id(&d.id().key()));
            }
            Ok(page)
        })
    }
}

/// An id as its text.
fn id_text(key: &IdKey) -> String {
    match key {
        IdKey::Uuid(u) => u.to_string(),
        IdKey::I64(i) => i.to_string(),
        IdKey::I32(i) => i.to_string(),
        IdKey::String(s) => s.clone(),
    }
}

/// An id as a keyset cursor: its kind and its text (`u:`, `l:`, `i:`, `s:`).
pub fn encode_id(key: &IdKey) -> String {
    match key {
        IdKey::Uuid(u) => format!("u:{u}"),
        IdKey::I64(i) => format!("l:{i}"),
        IdKey::I32(i) => format!("i:{i}"),
        IdKey::String(s) => format!("s:{s}"),
    }
}

/// A cursor [`encode_id`] wrote, as a typed parameter.
fn decode_id(cursor: &str) -> Result<marten_core::query::RawParam, String> {
    let bad = || format!("{cursor:?} is not a page cursor");
    let (kind, text) = cursor.split_once(':').ok_or_else(bad)?;
    Ok(match kind {
        "u" => param(Uuid::parse_str(text).map_err(|_| bad())?),
        "l" => param(text.parse::<i64>().map_err(|_| bad())?),
        "i" => param(text.parse::<i32>().map_err(|_| bad())?),
        "s" => param(text.to_owned()),
        _ => return Err(bad()),
    })
}

/// A registration for [`ConsoleBuilder::document`](crate::ConsoleBuilder::document).
pub(crate) fn register<D>(
    fields: impl FnOnce(D::Fields<D>) -> Vec<QueryField<D>>,
) -> Arc<dyn DocumentView>
where
    D: PgDocument + HasFields + serde::Serialize + Clone + Document,
{
    let all = D::fields_at(marten_core::query::Base::<D, D>::root());
    Arc::new(Registered {
        fields: fields(all),
    })
}
