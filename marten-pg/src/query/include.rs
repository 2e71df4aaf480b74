//! [`Including`]: a [`Query`] that also loads the documents its matches refer to —
//! `include::<Customer>(|f| f.customer_id)` — in the same statement and snapshot: the
//! matches are a `WITH` of the query's own SELECT, and the referenced documents are the
//! rows of the other table whose id is among the matches' values of the field. Uses
//! `run`, `render` (the field's text) and `rows` (the read error).

use std::collections::HashMap;
use std::marker::PhantomData;

use marten_core::query::{HasFields, Path};
use marten_core::tenant::require_tenant;
use marten_core::{Error, Result};
use serde::de::DeserializeOwned;

use super::render::{text_expr, Sql};
use super::rows::reading;
use super::run::Query;
use super::QuerySource;
use crate::documents::{conjoined, PgDocument};
use crate::id::PgId;
use crate::json::JsonRef;
use crate::tables::documents::TENANT_COLUMN;
use crate::tenant_key::TenantKey;

/// The matches of a query and the documents of type `I` their field refers to (by id),
/// in one round trip. Filters, order, skip and take are the query's.
#[must_use = "a query does nothing until it is run"]
pub struct Including<'s, S: QuerySource, D, I> {
    query: Query<'s, S, D>,
    path: Path,
    _i: PhantomData<fn() -> I>,
}

impl<'s, S: QuerySource, D, I> Including<'s, S, D, I> {
    /// `query`, including the documents whose ids its field at `path` holds.
    pub(super) fn new(query: Query<'s, S, D>, path: Path) -> Self {
        Including {
            query,
            path,
            _i: PhantomData,
        }
    }
}

/// What an [`Including`] query returns: the matches in the query's order and the
/// documents they refer to, by id (a reference to a missing document is left out).
#[derive(Debug)]
#[non_exhaustive]
pub struct Included<D, I: PgDocument> {
    /// The query's matches, in its order.
    pub documents: Vec<D>,
    /// The referenced documents, by id.
    pub included: HashMap<I::Id, I>,
}

impl<S, D, I> Including<'_, S, D, I>
where
    S: QuerySource,
    D: PgDocument + HasFields,
    I: PgDocument,
    I::Id: std::hash::Hash + Eq,
{
    /// The SQL this query runs (for `EXPLAIN` and logs).
    pub fn to_sql(&self) -> String {
        self.statement(None).text
    }

    /// The matches and the documents they refer to.
    pub async fn to_list(mut self) -> Result<Included<D, I>> {
        self.query.scoped()?;
        let (store, _) = self.query.session.source();
        let tenant = require_tenant(I::TENANCY, store.tenant(), I::DOCUMENT_TYPE)?;
        let tenant = TenantKey::of(tenant);
        let sql = self.statement(tenant).checked()?;
        let (store, conn) = self.query.session.source();
        store.ensure_in::<D>(conn).await?;
        store.ensure_in::<I>(conn).await?;
        let rows = conn
            .read(store, async |client| {
                let stmt = client.statement(&sql.text).await.map_err(reading::<D>)?;
                client.query(&stmt, &sql.refs()).await.map_err(reading::<D>)
            })
            .await?;
        let mut out = Included {
            documents: Vec::new(),
            included: HashMap::new(),
        };
        for row in &rows {
            let main: bool = row.try_get(0).map_err(reading::<D>)?;
            if main {
                out.documents.push(decode::<D>(row)?);
            } else {
                let doc = decode::<I>(row)?;
                out.included.insert(doc.id().clone(), doc);
            }
        }
        Ok(out)
    }

    /// The statement: the query's, then (a conjoined `I`) `tenant`, whose rows of `I`
    /// are read (the live ones, for a soft-deleted `I`).
    fn statement(&self, tenant: Option<TenantKey>) -> Sql {
        let mut sql = self.query.spec.select(true);
        let field = text_expr("m.data", &self.path);
        let id_type = <I::Id as PgId>::SQL_TYPE;
        let scope = if conjoined::<I>() {
            format!(
                "i.{TENANT_COLUMN} = {}::text AND ",
                sql.param(Box::new(tenant))
            )
        } else {
            String::new()
        };
        sql.text = format!(
            "WITH m AS MATERIALIZED ({}) \
             SELECT true, m.data, m.id::text FROM m \
             UNION ALL \
             SELECT false, i.data, i.id::text FROM {} i \
             WHERE {scope}i.id = ANY(ARRAY(SELECT DISTINCT ({field})::{id_type} FROM m)){live}",
            sql.text,
            I::TABLE_NAME,
            // A soft-deleted `I`'s marked rows are not included, as a load skips them.
            live = crate::documents::storage::scope::<I>().live("i.")
        );
        sql
    }
}

/// Decodes the document of a row (`main, data, id as text`); a document that does not
/// deserialize is [`Error::Deserialize`] naming its type and id.
fn decode<T: PgDocument + DeserializeOwned>(row: &tokio_postgres::Row) -> Result<T> {
    let json: JsonRef<'_> = row.try_get(1).map_err(reading::<T>)?;
    serde_json::from_slice(json.0).map_err(|source| Error::Deserialize {
        document_type: T::DOCUMENT_TYPE,
        id: row
            .try_get::<_, String>(2)
            .unwrap_or_else(|_| "(unknown id)".to_owned()),
        source,
    })
}
