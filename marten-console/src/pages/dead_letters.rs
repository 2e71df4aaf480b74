//! The dead-letters page: every poison event the daemon recorded, keyset-paged by the
//! dead-letter table's primary key: the projection, the event (sequence, type, stream,
//! data), the error, when, and how many times its apply failed before the daemon recorded
//! it (the first try and the retries; `-` for rows recorded before marten kept the count).
//! With actions on, each has a "retry" link to its confirmation page.
//!
//! `SELECT d.id, d.projection, d.seq_id, d.event_type, d.stream_id, d.error, d.at,
//! d.tenant_id, d.attempts, e.data FROM mt_dead_letters d LEFT JOIN mt_events e ON
//! e.seq_id = d.seq_id WHERE d.id > $1 ORDER BY d.id LIMIT $2`.

use axum::extract::{Query, State as Extract};
use axum::response::Response;
use serde::Deserialize;

use super::{column, pretty, respond, ts, PageError, Params, PAGE_SIZE};
use crate::html::{Href, Html};
use crate::state::{Shared, State};
use crate::tables::Tables;

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeadLettersQuery {
    /// The last dead letter shown.
    pub(crate) after: Option<i64>,
}

/// The statement of a page after `after`.
pub(crate) fn statement(t: &Tables, after: i64) -> (String, Params) {
    let mut p = Params::default();
    let a = p.push(after);
    let limit = p.push(PAGE_SIZE + 1);
    let sql = format!(
        "SELECT d.id, d.projection, d.seq_id, d.event_type, d.stream_id, d.error, d.at, d.tenant_id, \
         d.attempts, e.data FROM {dl} d LEFT JOIN {events} e ON e.seq_id = d.seq_id \
         WHERE d.id > {a} ORDER BY d.id LIMIT {limit}",
        dl = t.dead_letters,
        events = t.events
    );
    (sql, p)
}

/// `GET /dead-letters`.
pub(crate) async fn page(
    Extract(state): Extract<Shared>,
    Query(q): Query<DeadLettersQuery>,
) -> Response {
    let body = body(&state, &q).await;
    respond(&state, "Dead letters", body)
}

async fn body(state: &State, q: &DeadLettersQuery) -> Result<Html, PageError> {
    let base = &state.options.base_path;
    let (sql, p) = statement(&state.tables, q.after.unwrap_or(0));
    let rows = state.store.sql_query(&sql, &p.refs()).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    let mut h = Html::new();
    h.raw("<table id=\"dead-letters\">").header_row(&[
        "Id",
        "Projection",
        "Event",
        "Stream",
        "Error",
        "At",
        "Attempts",
        "Data",
        "",
    ]);
    let mut last = None;
    for r in rows.iter().take(PAGE_SIZE as usize) {
        let id: i64 = r.try_get(0).map_err(column)?;
        let projection: String = r.try_get(1).map_err(column)?;
        let seq: i64 = r.try_get(2).map_err(column)?;
        let ty: String = r.try_get(3).map_err(column)?;
        let stream: String = r.try_get(4).map_err(column)?;
        let error: String = r.try_get(5).map_err(column)?;
        let at: time::OffsetDateTime = r.try_get(6).map_err(column)?;
        let tenant: String = r.try_get(7).map_err(column)?;
        let attempts: i32 = r.try_get(8).map_err(column)?;
        let data: Option<serde_json::Value> = r.try_get(9).map_err(column)?;
        last = Some(id);
        let mut stream_href = Href::new(base, "/streams").segment(&stream);
        if state.tables.conjoined {
            stream_href = stream_href.query("tenant", &tenant);
        }
        h.raw("<tr>")
            .cell(id)
            .cell(&projection)
            .raw("<td>#")
            .text(seq)
            .raw(" ")
            .text(&ty)
            .raw("</td><td>")
            .link(&stream_href, &stream)
            .raw("</td><td><pre class=\"error\">")
            .text(&error)
            .raw("</pre></td>")
            .cell(ts(at))
            .cell(if attempts > 0 {
                attempts.to_string()
            } else {
                "-".to_owned()
            })
            .raw("<td><pre class=\"json data\">")
            .text(pretty(data.as_ref()))
            .raw("</pre></td><td>");
        if state.options.actions {
            let href = Href::new(base, "/actions/confirm")
                .query("action", "retry")
                .query("id", id);
            h.link(&href, "retry…");
        }
        h.raw("</td></tr>");
    }
    h.raw("</table>");
    if rows.is_empty() {
        h.raw("<p class=\"empty\">No dead letters.</p>");
    }
    if let (true, Some(id)) = (more, last) {
        let next = Href::new(base, "/dead-letters").query("after", id);
        h.raw("<p class=\"next\">")
            .link(&next, "Next page")
            .raw("</p>");
    }
    Ok(h)
}
