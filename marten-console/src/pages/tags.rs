//! The tags page: without a tag, every tag with its version, keyset-paged over the tag
//! versions' primary key, whole: `(tag_type, tag_value, tenant_id)`, or `(tenant_id,
//! tag_type, tag_value)` with conjoined events (one tag has a row per tenant, so the
//! cursor carries the tenant: `after_type`, `after_value`, `after_tenant`; a
//! single-tenant store's cursor without `after_tenant` still pages by type and value);
//! with one (`?type=..&value=..`), its version(s) and its events, keyset-paged by
//! sequence over the event tags' primary key `(tag_type, tag_value, seq_id)`.
//!
//! With conjoined events a tag is each tenant's own: its page is one tenant's
//! (`&tenant=..`, which the list's links carry), its version and its events alone, over
//! the keys `(tenant_id, tag_type, tag_value[, seq_id])`; a tag without its tenant is
//! refused (400), never shown with every tenant's events mixed.
//!
//! `SELECT tag_type, tag_value, tenant_id, version FROM mt_tag_versions WHERE (tag_type,
//! tag_value, tenant_id) > ($1, $2, $3) ORDER BY tag_type, tag_value, tenant_id LIMIT $4`
//! (conjoined: `(tenant_id, tag_type, tag_value)`);
//! `SELECT tenant_id, version FROM mt_tag_versions WHERE tag_type = $1 AND tag_value = $2`;
//! `SELECT e.seq_id, e.stream_id::text, e.version, e.type, e.timestamp, e.tenant_id, e.data
//! FROM mt_event_tags g JOIN mt_events e ON e.seq_id = g.seq_id WHERE g.tag_type = $1 AND
//! g.tag_value = $2 AND g.seq_id > $3 ORDER BY g.seq_id LIMIT $4` (conjoined: a
//! `tenant_id = $t` condition first in both, and the events joined on the tenant too).
//!
//! A tag's type, value and tenant are matched as given, spaces included (the list's links
//! carry them so); a tag not found so, with no cursor, is looked up again trimmed.

use axum::extract::{Query, State as Extract};
use axum::response::Response;
use serde::Deserialize;
use tokio_postgres::Row;

use super::{column, exact, pretty, respond, trimmed_search, ts, PageError, Params, PAGE_SIZE};
use crate::html::{Href, Html};
use crate::state::{Shared, State};
use crate::tables::Tables;

/// The page's query string.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct TagsQuery {
    /// A tag type.
    #[serde(rename = "type")]
    pub(crate) tag_type: Option<String>,
    /// A tag value.
    pub(crate) value: Option<String>,
    /// The tag's tenant: required with conjoined events (each tenant has its own version
    /// and events of a tag); not used with single-tenant ones.
    pub(crate) tenant: Option<String>,
    /// Keyset cursor: the last sequence shown (a tag's events) .
    pub(crate) after: Option<i64>,
    /// Keyset cursor of the list of tags: the last tag type shown.
    pub(crate) after_type: Option<String>,
    /// Keyset cursor of the list of tags: the last tag value shown.
    pub(crate) after_value: Option<String>,
    /// Keyset cursor of the list of tags: the last row's tenant (required with conjoined
    /// events; optional with single-tenant ones, whose links before it had none).
    pub(crate) after_tenant: Option<String>,
}

impl TagsQuery {
    /// The tag with its type and value trimmed, when that changes them and no cursor is
    /// given: the second try of a tag not found as typed.
    fn trimmed(&self) -> Option<TagsQuery> {
        if self.after.is_some() {
            return None;
        }
        let mut t = self.clone();
        trimmed_search([&mut t.tag_type, &mut t.value, &mut t.tenant]).then_some(t)
    }
}

/// Where the list of tags goes on: the last row's type, value and tenant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListCursor<'a> {
    pub(crate) tag_type: &'a str,
    pub(crate) tag_value: &'a str,
    /// `None`: a single-tenant store's link from before tenants were in the cursor.
    pub(crate) tenant: Option<&'a str>,
}

/// The list of tags after a cursor (from the first row without one), in the order of the
/// tag versions' primary key: `(tag_type, tag_value, tenant_id)`, or `(tenant_id,
/// tag_type, tag_value)` with conjoined events.
pub(crate) fn list_statement(
    t: &Tables,
    after: Option<ListCursor<'_>>,
) -> Result<(String, Params), PageError> {
    let mut p = Params::default();
    let key = if t.conjoined {
        "v.tenant_id, v.tag_type, v.tag_value"
    } else {
        "v.tag_type, v.tag_value, v.tenant_id"
    };
    let wh = match after {
        None => String::new(),
        Some(c) => {
            let (a, b) = (
                p.push(c.tag_type.to_owned()),
                p.push(c.tag_value.to_owned()),
            );
            match (c.tenant, t.conjoined) {
                (Some(tenant), true) => {
                    let tenant = p.push(tenant.to_owned());
                    format!(" WHERE ({key}) > ({tenant}, {a}, {b})")
                }
                (Some(tenant), false) => {
                    let tenant = p.push(tenant.to_owned());
                    format!(" WHERE ({key}) > ({a}, {b}, {tenant})")
                }
                // One tenant: a (type, value) is one row.
                (None, false) => format!(" WHERE (v.tag_type, v.tag_value) > ({a}, {b})"),
                (None, true) => return Err(PageError::bad(
                    "the cursor of the tags of conjoined events needs its tenant (after_tenant)",
                )),
            }
        }
    };
    let limit = p.push(PAGE_SIZE + 1);
    let sql = format!(
        "SELECT v.tag_type, v.tag_value, v.tenant_id, v.version FROM {} v{wh} \
         ORDER BY {key} LIMIT {limit}",
        t.tag_versions
    );
    Ok((sql, p))
}

/// The refusal of a conjoined tag without its tenant.
fn tenant_needed() -> PageError {
    PageError::bad(
        "with conjoined events a tag is each tenant's own: give the tag's tenant (tenant=..)",
    )
}

/// A tag's versions and its events after `after`. With conjoined events, `tenant`'s
/// alone (bound as a parameter; without one, refused); with single-tenant events the
/// tenant is not used.
pub(crate) fn tag_statements(
    t: &Tables,
    tag: (&str, &str),
    tenant: Option<&str>,
    after: i64,
) -> Result<[(String, Params); 2], PageError> {
    let tenant = if t.conjoined {
        Some(tenant.ok_or_else(tenant_needed)?)
    } else {
        None
    };
    let mut vp = Params::default();
    let scope = match tenant {
        Some(tenant) => format!("v.tenant_id = {} AND ", vp.push(tenant.to_owned())),
        None => String::new(),
    };
    let (a, b) = (vp.push(tag.0.to_owned()), vp.push(tag.1.to_owned()));
    let versions = format!(
        "SELECT v.tenant_id, v.version FROM {} v \
         WHERE {scope}v.tag_type = {a} AND v.tag_value = {b} ORDER BY v.tenant_id",
        t.tag_versions
    );
    let mut ep = Params::default();
    let scope = match tenant {
        Some(tenant) => format!("g.tenant_id = {} AND ", ep.push(tenant.to_owned())),
        None => String::new(),
    };
    let (a, b) = (ep.push(tag.0.to_owned()), ep.push(tag.1.to_owned()));
    let after = ep.push(after);
    let limit = ep.push(PAGE_SIZE + 1);
    let tenant_join = if t.conjoined {
        " AND e.tenant_id = g.tenant_id"
    } else {
        ""
    };
    let events = format!(
        "SELECT e.seq_id, e.stream_id::text, e.version, e.type, e.timestamp, e.tenant_id, e.data \
         FROM {tags} g JOIN {events} e ON e.seq_id = g.seq_id{tenant_join} \
         WHERE {scope}g.tag_type = {a} AND g.tag_value = {b} AND g.seq_id > {after} \
         ORDER BY g.seq_id LIMIT {limit}",
        tags = t.tags,
        events = t.events
    );
    Ok([(versions, vp), (events, ep)])
}

/// `GET /tags`.
pub(crate) async fn page(Extract(state): Extract<Shared>, Query(q): Query<TagsQuery>) -> Response {
    let body = match (exact(&q.tag_type), exact(&q.value)) {
        (Some(_), Some(_)) => tag_body(&state, &q).await,
        (None, None) => list_body(&state, &q).await,
        _ => Err(PageError::bad("a tag needs both its type and its value")),
    };
    respond(&state, "Tags", body)
}

fn search_form(h: &mut Html, q: &TagsQuery, conjoined: bool) {
    h.raw("<form class=\"search\" method=\"get\"><label>Type <input name=\"type\" value=\"")
        .text(exact(&q.tag_type).unwrap_or_default())
        .raw("\"></label><label>Value <input name=\"value\" value=\"")
        .text(exact(&q.value).unwrap_or_default())
        .raw("\"></label>");
    if conjoined {
        h.raw("<label>Tenant <input name=\"tenant\" value=\"")
            .text(exact(&q.tenant).unwrap_or_default())
            .raw("\"></label>");
    }
    h.raw("<button>Show</button></form>");
}

async fn list_body(state: &State, q: &TagsQuery) -> Result<Html, PageError> {
    let base = &state.options.base_path;
    let after = match (exact(&q.after_type), exact(&q.after_value)) {
        (Some(tag_type), Some(tag_value)) => Some(ListCursor {
            tag_type,
            tag_value,
            tenant: exact(&q.after_tenant),
        }),
        (None, None) => None,
        _ => return Err(PageError::bad("a cursor needs after_type and after_value")),
    };
    let (sql, p) = list_statement(&state.tables, after)?;
    let rows = state.store.sql_query(&sql, &p.refs()).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    let mut h = Html::new();
    search_form(&mut h, q, state.tables.conjoined);
    h.raw("<table id=\"tags\">")
        .header_row(&["Type", "Value", "Tenant", "Version"]);
    let mut last = None;
    for r in rows.iter().take(PAGE_SIZE as usize) {
        let ty: String = r.try_get(0).map_err(column)?;
        let value: String = r.try_get(1).map_err(column)?;
        let tenant: String = r.try_get(2).map_err(column)?;
        let version: i64 = r.try_get(3).map_err(column)?;
        let mut href = Href::new(base, "/tags")
            .query("type", &ty)
            .query("value", &value);
        if state.tables.conjoined {
            href = href.query("tenant", &tenant);
        }
        h.raw("<tr>")
            .cell(&ty)
            .raw("<td>")
            .link(&href, &value)
            .raw("</td>")
            .cell(&tenant)
            .cell(version)
            .raw("</tr>");
        last = Some((ty, value, tenant));
    }
    h.raw("</table>");
    if rows.is_empty() {
        h.raw("<p class=\"empty\">No tags.</p>");
    }
    if let (true, Some((ty, value, tenant))) = (more, last) {
        let next = Href::new(base, "/tags")
            .query("after_type", ty)
            .query("after_value", value)
            .query("after_tenant", tenant);
        h.raw("<p class=\"next\">")
            .link(&next, "Next page")
            .raw("</p>");
    }
    Ok(h)
}

/// The tag of `q` (type and value as given) and its versions; if it has none (no such
/// tag) and there is no cursor, the tag trimmed and its versions.
async fn find_tag(state: &State, q: &TagsQuery) -> Result<(TagsQuery, Vec<Row>), PageError> {
    let versions = |q: &TagsQuery| {
        let tag = (
            exact(&q.tag_type).unwrap_or_default(),
            exact(&q.value).unwrap_or_default(),
        );
        let statements = tag_statements(&state.tables, tag, exact(&q.tenant), 0);
        async move {
            let [(vsql, vp), _] = statements?;
            Ok::<_, PageError>(state.store.sql_query(&vsql, &vp.refs()).await?)
        }
    };
    let found = versions(q).await?;
    if found.is_empty() {
        if let Some(t) = q.trimmed() {
            let tenant_kept = !state.tables.conjoined || exact(&t.tenant).is_some();
            if let (Some(_), Some(_), true) = (exact(&t.tag_type), exact(&t.value), tenant_kept) {
                let again = versions(&t).await?;
                if !again.is_empty() {
                    return Ok((t, again));
                }
            }
        }
    }
    Ok((q.clone(), found))
}

async fn tag_body(state: &State, typed: &TagsQuery) -> Result<Html, PageError> {
    let base = &state.options.base_path;
    if state.tables.conjoined && exact(&typed.tenant).is_none() {
        return Err(tenant_needed());
    }
    let mut h = Html::new();
    search_form(&mut h, typed, state.tables.conjoined);
    let (q, versions) = find_tag(state, typed).await?;
    let tag = (
        exact(&q.tag_type).unwrap_or_default(),
        exact(&q.value).unwrap_or_default(),
    );
    let tenant = exact(&q.tenant);
    let [_, (esql, ep)] = tag_statements(&state.tables, tag, tenant, q.after.unwrap_or(0))?;
    h.raw("<dl class=\"tag\"><dt>Tag</dt><dd>")
        .text(tag.0)
        .raw(" = ")
        .text(tag.1)
        .raw("</dd>");
    if let (true, Some(tenant)) = (state.tables.conjoined, tenant) {
        h.raw("<dt>Tenant</dt><dd class=\"tag-tenant\">")
            .text(tenant)
            .raw("</dd>");
    }
    for v in &versions {
        let tenant: String = v.try_get(0).map_err(column)?;
        let version: i64 = v.try_get(1).map_err(column)?;
        h.raw("<dt>Version (")
            .text(tenant)
            .raw(")</dt><dd class=\"tag-version\">")
            .text(version)
            .raw("</dd>");
    }
    h.raw("</dl>");
    let rows = state.store.sql_query(&esql, &ep.refs()).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    h.raw("<table id=\"tag-events\">").header_row(&[
        "Sequence",
        "Stream",
        "Version",
        "Type",
        "Timestamp",
        "Data",
    ]);
    let mut last = None;
    for r in rows.iter().take(PAGE_SIZE as usize) {
        let seq: i64 = r.try_get(0).map_err(column)?;
        let stream: String = r.try_get(1).map_err(column)?;
        let version: i64 = r.try_get(2).map_err(column)?;
        let ty: String = r.try_get(3).map_err(column)?;
        let at: time::OffsetDateTime = r.try_get(4).map_err(column)?;
        let tenant: String = r.try_get(5).map_err(column)?;
        let data: serde_json::Value = r.try_get(6).map_err(column)?;
        let mut href = Href::new(base, "/streams").segment(&stream);
        if state.tables.conjoined {
            href = href.query("tenant", &tenant);
        }
        h.raw("<tr>")
            .cell(seq)
            .raw("<td>")
            .link(&href, &stream)
            .raw("</td>")
            .cell(version)
            .cell(&ty)
            .cell(ts(at))
            .raw("<td><pre class=\"json data\">")
            .text(pretty(Some(&data)))
            .raw("</pre></td></tr>");
        last = Some(seq);
    }
    h.raw("</table>");
    if let (true, Some(seq)) = (more, last) {
        let mut next = Href::new(base, "/tags")
            .query("type", tag.0)
            .query("value", tag.1);
        if let (true, Some(tenant)) = (state.tables.conjoined, tenant) {
            next = next.query("tenant", tenant);
        }
        let next = next.query("after", seq);
        h.raw("<p class=\"next\">")
            .link(&next, "Next page")
            .raw("</p>");
    }
    Ok(h)
}
