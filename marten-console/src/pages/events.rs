//! A stream's page: the stream's row and its events, keyset-paged by version over the
//! unique index of `(stream_id, version)` (`(tenant_id, stream_id, version)` with
//! conjoined events): version, sequence, type, timestamp, correlation and causation ids,
//! headers and the data as pretty JSON.
//!
//! `SELECT type, version, created, timestamp, is_archived FROM mt_streams WHERE id = $1`
//! and `SELECT seq_id, version, type, timestamp, correlation_id, causation_id, headers,
//! data, is_archived FROM mt_events WHERE stream_id = $1 AND version > $2 ORDER BY version
//! LIMIT $3` (a `tenant_id = $t` condition first with conjoined events).

use axum::extract::{Path, Query, State as Extract};
use axum::response::Response;
use serde::Deserialize;

use super::{column, exact, pretty, respond, stream_id_param, ts, PageError, Params, PAGE_SIZE};
use crate::html::{Href, Html};
use crate::state::{Shared, State};
use crate::tables::Tables;

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    /// The version after which to read.
    pub(crate) after: Option<i64>,
    /// The stream's tenant (conjoined events; the default tenant otherwise), exactly as
    /// the console's links give it.
    pub(crate) tenant: Option<String>,
}

/// The stream's statement and the events' statement with their parameters.
pub(crate) fn statements(
    t: &Tables,
    id: &str,
    q: &EventsQuery,
) -> Result<[(String, Params); 2], PageError> {
    let tenant = exact(&q.tenant).unwrap_or(marten_core::tenant::DEFAULT_TENANT);
    let mut sp = Params::default();
    let sid = stream_id_param(&mut sp, t.identity, id)?;
    let scope = if t.conjoined {
        format!("s.tenant_id = {} AND ", sp.push(tenant.to_owned()))
    } else {
        String::new()
    };
    let stream = format!(
        "SELECT s.type, s.version, s.created, s.timestamp, s.is_archived FROM {} s \
         WHERE {scope}s.id = {sid}",
        t.streams
    );
    let mut ep = Params::default();
    let eid = stream_id_param(&mut ep, t.identity, id)?;
    let scope = if t.conjoined {
        format!("e.tenant_id = {} AND ", ep.push(tenant.to_owned()))
    } else {
        String::new()
    };
    let after = ep.push(q.after.unwrap_or(0));
    let limit = ep.push(PAGE_SIZE + 1);
    let events = format!(
        "SELECT e.seq_id, e.version, e.type, e.timestamp, e.correlation_id, e.causation_id, \
         e.headers, e.data, e.is_archived FROM {} e \
         WHERE {scope}e.stream_id = {eid} AND e.version > {after} ORDER BY e.version LIMIT {limit}",
        t.events
    );
    Ok([(stream, sp), (events, ep)])
}

/// `GET /streams/{id}`.
pub(crate) async fn page(
    Extract(state): Extract<Shared>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let body = body(&state, &id, &q).await;
    respond(&state, &format!("Stream {id}"), body)
}

async fn body(state: &State, id: &str, q: &EventsQuery) -> Result<Html, PageError> {
    let base = &state.options.base_path;
    let [(stream_sql, sp), (events_sql, ep)] = statements(&state.tables, id, q)?;
    let stream = state.store.sql_query(&stream_sql, &sp.refs()).await?;
    let Some(s) = stream.first() else {
        return Err(PageError::not_found(format!("no stream {id}")));
    };
    let mut h = Html::new();
    let stream_type: Option<String> = s.try_get(0).map_err(column)?;
    let version: i64 = s.try_get(1).map_err(column)?;
    let created: time::OffsetDateTime = s.try_get(2).map_err(column)?;
    let last: time::OffsetDateTime = s.try_get(3).map_err(column)?;
    let archived: bool = s.try_get(4).map_err(column)?;
    h.raw("<dl class=\"stream\"><dt>Type</dt><dd>")
        .text(stream_type.as_deref().unwrap_or(""))
        .raw("</dd><dt>Version</dt><dd>")
        .text(version)
        .raw("</dd><dt>Created</dt><dd>")
        .text(ts(created))
        .raw("</dd><dt>Last event</dt><dd>")
        .text(ts(last))
        .raw("</dd><dt>Archived</dt><dd>")
        .text(if archived { "yes" } else { "no" })
        .raw("</dd></dl>");
    let rows = state.store.sql_query(&events_sql, &ep.refs()).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    h.raw("<table id=\"events\">").header_row(&[
        "Version",
        "Sequence",
        "Type",
        "Timestamp",
        "Correlation",
        "Causation",
        "Headers",
        "Data",
    ]);
    let mut last_version = None;
    for r in rows.iter().take(PAGE_SIZE as usize) {
        let seq: i64 = r.try_get(0).map_err(column)?;
        let v: i64 = r.try_get(1).map_err(column)?;
        let ty: String = r.try_get(2).map_err(column)?;
        let at: time::OffsetDateTime = r.try_get(3).map_err(column)?;
        let corr: Option<String> = r.try_get(4).map_err(column)?;
        let cause: Option<String> = r.try_get(5).map_err(column)?;
        let headers: Option<serde_json::Value> = r.try_get(6).map_err(column)?;
        let data: serde_json::Value = r.try_get(7).map_err(column)?;
        last_version = Some(v);
        h.raw("<tr>")
            .cell(v)
            .cell(seq)
            .cell(&ty)
            .cell(ts(at))
            .cell(corr.as_deref().unwrap_or(""))
            .cell(cause.as_deref().unwrap_or(""))
            .raw("<td><pre class=\"json headers\">")
            .text(pretty(headers.as_ref()))
            .raw("</pre></td><td><pre class=\"json data\">")
            .text(pretty(Some(&data)))
            .raw("</pre></td></tr>");
    }
    h.raw("</table>");
    if let (true, Some(v)) = (more, last_version) {
        let mut next = Href::new(base, "/streams").segment(id).query("after", v);
        if let Some(t) = exact(&q.tenant) {
            next = next.query("tenant", t);
        }
        h.raw("<p class=\"next\">")
            .link(&next, "Next page")
            .raw("</p>");
    }
    Ok(h)
}
