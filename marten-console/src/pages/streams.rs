//! The streams page: every stream, keyset-paged by id over the streams table's primary key
//! (`(tenant_id, id)` with conjoined events), searched by id, by type or by a tag, with or
//! without archived streams.
//!
//! The statement, put together from the filters given (each a parameter):
//! `SELECT id::text, type, version, created, timestamp, is_archived, tenant_id
//!  FROM mt_streams WHERE [id = $id] [AND type = $type] [AND id IN (the tag's streams)]
//!  [AND NOT is_archived] [AND id > $after] ORDER BY id LIMIT $n`. A tag search costs
//! the tag's size (its events are read to find their streams): for a tag of many events
//! the tags page, keyset-paged by sequence, is the cheap view.

use axum::extract::{Query, State as Extract};
use axum::response::Response;
use serde::Deserialize;

use super::{column, given, respond, stream_id_param, ts, PageError, Params, PAGE_SIZE};
use crate::html::{Href, Html};
use crate::state::{Shared, State};
use crate::tables::Tables;

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamsQuery {
    /// An exact stream id.
    pub(crate) id: Option<String>,
    /// A stream (aggregate) type.
    #[serde(rename = "type")]
    pub(crate) stream_type: Option<String>,
    /// A tag type (with `tag_value`).
    pub(crate) tag_type: Option<String>,
    /// A tag value.
    pub(crate) tag_value: Option<String>,
    /// Show archived streams too (`on`).
    pub(crate) archived: Option<String>,
    /// The keyset cursor: the last id shown (and its tenant with conjoined events).
    pub(crate) after: Option<String>,
    /// The cursor's tenant (conjoined events).
    pub(crate) after_tenant: Option<String>,
}

/// One stream.
pub(crate) struct StreamRow {
    pub(crate) id: String,
    pub(crate) stream_type: Option<String>,
    pub(crate) version: i64,
    pub(crate) created: time::OffsetDateTime,
    pub(crate) timestamp: time::OffsetDateTime,
    pub(crate) archived: bool,
    pub(crate) tenant: String,
}

/// The statement and its parameters for `q`.
pub(crate) fn statement(t: &Tables, q: &StreamsQuery) -> Result<(String, Params), PageError> {
    let mut p = Params::default();
    let mut wh: Vec<String> = Vec::new();
    if let Some(id) = given(&q.id) {
        wh.push(format!(
            "s.id = {}",
            stream_id_param(&mut p, t.identity, id)?
        ));
    }
    if let Some(ty) = given(&q.stream_type) {
        wh.push(format!("s.type = {}", p.push(ty.to_owned())));
    }
    match (given(&q.tag_type), given(&q.tag_value)) {
        (Some(tt), Some(tv)) => {
            let (a, b) = (p.push(tt.to_owned()), p.push(tv.to_owned()));
            let tenant_join = if t.conjoined {
                " AND e.tenant_id = g.tenant_id"
            } else {
                ""
            };
            let tenant_match = if t.conjoined {
                "(s.tenant_id, s.id) IN (SELECT e.tenant_id, e.stream_id"
            } else {
                "s.id IN (SELECT e.stream_id"
            };
            wh.push(format!(
                "{tenant_match} FROM {tags} g JOIN {events} e ON e.seq_id = g.seq_id{tenant_join} \
                 WHERE g.tag_type = {a} AND g.tag_value = {b})",
                tags = t.tags,
                events = t.events
            ));
        }
        (None, None) => {}
        _ => {
            return Err(PageError::bad(
                "a tag search needs both its type and its value",
            ))
        }
    }
    if given(&q.archived).is_none() {
        wh.push("NOT s.is_archived".to_owned());
    }
    if let Some(after) = given(&q.after) {
        let id = stream_id_param(&mut p, t.identity, after)?;
        if t.conjoined {
            let tenant = p.push(given(&q.after_tenant).unwrap_or_default().to_owned());
            wh.push(format!("(s.tenant_id, s.id) > ({tenant}, {id})"));
        } else {
            wh.push(format!("s.id > {id}"));
        }
    }
    let order = if t.conjoined {
        "s.tenant_id, s.id"
    } else {
        "s.id"
    };
    let limit = p.push(PAGE_SIZE + 1);
    let wh = if wh.is_empty() {
        "TRUE".to_owned()
    } else {
        wh.join(" AND ")
    };
    let sql = format!(
        "SELECT s.id::text, s.type, s.version, s.created, s.timestamp, s.is_archived, s.tenant_id \
         FROM {streams} s WHERE {wh} ORDER BY {order} LIMIT {limit}",
        streams = t.streams
    );
    Ok((sql, p))
}

/// The streams matching `q`, one more than a page when there is a next page.
pub(crate) async fn read(state: &State, q: &StreamsQuery) -> Result<Vec<StreamRow>, PageError> {
    let (sql, p) = statement(&state.tables, q)?;
    let rows = state.store.sql_query(&sql, &p.refs()).await?;
    rows.iter()
        .map(|r| {
            Ok(StreamRow {
                id: r.try_get(0).map_err(column)?,
                stream_type: r.try_get(1).map_err(column)?,
                version: r.try_get(2).map_err(column)?,
                created: r.try_get(3).map_err(column)?,
                timestamp: r.try_get(4).map_err(column)?,
                archived: r.try_get(5).map_err(column)?,
                tenant: r.try_get(6).map_err(column)?,
            })
        })
        .collect()
}

/// `GET /streams`.
pub(crate) async fn page(
    Extract(state): Extract<Shared>,
    Query(q): Query<StreamsQuery>,
) -> Response {
    let body = body(&state, &q).await;
    respond(&state, "Streams", body)
}

async fn body(state: &State, q: &StreamsQuery) -> Result<Html, PageError> {
    let base = &state.options.base_path;
    let mut h = Html::new();
    h.raw("<form class=\"search\" method=\"get\">")
        .raw("<label>Id <input name=\"id\" value=\"")
        .text(given(&q.id).unwrap_or_default())
        .raw("\"></label><label>Type <input name=\"type\" value=\"")
        .text(given(&q.stream_type).unwrap_or_default())
        .raw("\"></label><label>Tag <input name=\"tag_type\" placeholder=\"type\" value=\"")
        .text(given(&q.tag_type).unwrap_or_default())
        .raw("\"><input name=\"tag_value\" placeholder=\"value\" value=\"")
        .text(given(&q.tag_value).unwrap_or_default())
        .raw("\"></label><label><input type=\"checkbox\" name=\"archived\"");
    if given(&q.archived).is_some() {
        h.raw(" checked");
    }
    h.raw("> archived</label><button>Search</button></form>");
    let mut rows = read(state, q).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    h.raw("<table id=\"streams\">").header_row(&[
        "Id",
        "Type",
        "Version",
        "Created",
        "Last event",
        "Archived",
        "Tenant",
    ]);
    for r in &rows {
        let mut href = Href::new(base, "/streams").segment(&r.id);
        if state.tables.conjoined {
            href = href.query("tenant", &r.tenant);
        }
        h.raw("<tr><td>")
            .link(&href, &r.id)
            .raw("</td>")
            .cell(r.stream_type.as_deref().unwrap_or(""))
            .cell(r.version)
            .cell(ts(r.created))
            .cell(ts(r.timestamp))
            .cell(if r.archived { "yes" } else { "" })
            .cell(&r.tenant)
            .raw("</tr>");
    }
    h.raw("</table>");
    if rows.is_empty() {
        h.raw("<p class=\"empty\">No stream matches.</p>");
    }
    if let (true, Some(last)) = (more, rows.last()) {
        let mut next = Href::new(base, "/streams");
        for (k, v) in [
            ("id", &q.id),
            ("type", &q.stream_type),
            ("tag_type", &q.tag_type),
            ("tag_value", &q.tag_value),
            ("archived", &q.archived),
        ] {
            if let Some(v) = given(v) {
                next = next.query(k, v);
            }
        }
        next = next.query("after", &last.id);
        if state.tables.conjoined {
            next = next.query("after_tenant", &last.tenant);
        }
        h.raw("<p class=\"next\">")
            .link(&next, "Next page")
            .raw("</p>");
    }
    Ok(h)
}
