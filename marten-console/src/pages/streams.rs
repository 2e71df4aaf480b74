//! The streams page: every stream, keyset-paged by id over the streams table's primary key
//! (`(tenant_id, id)` with conjoined events), searched by id, by type or by a tag, with or
//! without archived streams.
//!
//! The statement, put together from the filters given (each a parameter):
//! `SELECT id::text, type, version, created, timestamp, is_archived, tenant_id
//!  FROM mt_streams WHERE [id = $id] [AND type = $type] [AND NOT is_archived]
//!  [AND id > $after] ORDER BY id LIMIT $n`.
//!
//! Ids, types and tags are matched exactly as given, spaces included (a text id may have
//! them; the console's own links and cursors carry values untrimmed); a search whose
//! values as typed find nothing, and that has no cursor, is tried again with them
//! trimmed.
//!
//! A tag search pages by the tag's sequence instead: each page reads at most
//! [`TAG_CHUNK`] of the tag's rows after a cursor (`seq_id > $after_seq ORDER BY seq_id`
//! over the event tags' primary key `(tag_type, tag_value, seq_id)`; tenant by tenant,
//! `(tenant_id, tag_type, tag_value, seq_id)`, with conjoined events), joins their events
//! by sequence for the stream ids and shows the distinct streams of that chunk (with the
//! other filters); "next" carries the last sequence read. The work of a page is bounded
//! by the chunk, whatever the tag's size; a stream may appear again on a later page.

use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{
    column, exact, given, respond, stream_id_param, trimmed_search, ts, PageError, Params,
    PAGE_SIZE,
};
use crate::html::{Href, Html};
use crate::state::{Shared, State};
use crate::tables::Tables;

/// The page's query string.
#[derive(Debug, Default, Clone, Deserialize)]
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
    /// The tag search's cursor: the last of the tag's sequences read.
    pub(crate) after_seq: Option<i64>,
}

impl StreamsQuery {
    /// The search with its values trimmed, when that changes them and no cursor is given
    /// (a next page's link carries the values that found its first page): the second try
    /// of a search whose values as typed found nothing.
    pub(crate) fn trimmed(&self) -> Option<StreamsQuery> {
        if self.after.is_some() || self.after_seq.is_some() {
            return None;
        }
        let mut t = self.clone();
        let changed = trimmed_search([
            &mut t.id,
            &mut t.stream_type,
            &mut t.tag_type,
            &mut t.tag_value,
        ]);
        changed.then_some(t)
    }
}

/// How many of a tag's events one page of the tag search reads.
pub(crate) const TAG_CHUNK: i64 = 200;

/// Where the tag search goes on: the last tag row read (tenant, sequence).
pub(crate) type TagCursor = (String, i64);

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
    if let Some(id) = exact(&q.id) {
        wh.push(format!(
            "s.id = {}",
            stream_id_param(&mut p, t.identity, id)?
        ));
    }
    if let Some(ty) = exact(&q.stream_type) {
        wh.push(format!("s.type = {}", p.push(ty.to_owned())));
    }
    if tag(q)?.is_some() {
        return Err(PageError::bad("a tag search has its own statement"));
    }
    if given(&q.archived).is_none() {
        wh.push("NOT s.is_archived".to_owned());
    }
    if let Some(after) = exact(&q.after) {
        let id = stream_id_param(&mut p, t.identity, after)?;
        if t.conjoined {
            let tenant = p.push(exact(&q.after_tenant).unwrap_or_default().to_owned());
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

/// The tag searched for, if any (both its type and its value, or neither).
fn tag(q: &StreamsQuery) -> Result<Option<(&str, &str)>, PageError> {
    match (exact(&q.tag_type), exact(&q.tag_value)) {
        (Some(tt), Some(tv)) => Ok(Some((tt, tv))),
        (None, None) => Ok(None),
        _ => Err(PageError::bad(
            "a tag search needs both its type and its value",
        )),
    }
}

/// The tag search's statement for `q` (whose tag is `tag`): one row with the chunk's
/// size read (up to `TAG_CHUNK + 1`) and its last tag row, then that chunk's streams
/// (with the other filters), or that one row alone with no stream columns.
pub(crate) fn tag_statement(
    t: &Tables,
    q: &StreamsQuery,
    tag: (&str, &str),
) -> Result<(String, Params), PageError> {
    let mut p = Params::default();
    let (a, b) = (p.push(tag.0.to_owned()), p.push(tag.1.to_owned()));
    let after = p.push(q.after_seq.unwrap_or(0));
    let read = p.push(TAG_CHUNK + 1);
    let chunk = p.push(TAG_CHUNK);
    let scanned = if t.conjoined {
        // Tenant by tenant (the key is tenant-led): the rest of the cursor's tenant,
        // then the tenants after it, each an ordered range of the key.
        let tenant = p.push(exact(&q.after_tenant).unwrap_or_default().to_owned());
        format!(
            "SELECT u.seq_id, u.tenant_id FROM (\
             (SELECT g.seq_id, g.tenant_id FROM {tags} g WHERE g.tenant_id = {tenant} \
             AND g.tag_type = {a} AND g.tag_value = {b} AND g.seq_id > {after} \
             ORDER BY g.seq_id LIMIT {read}) UNION ALL \
             (SELECT g.seq_id, g.tenant_id FROM {tags} g WHERE g.tenant_id > {tenant} \
             AND g.tag_type = {a} AND g.tag_value = {b} \
             ORDER BY g.tenant_id, g.seq_id LIMIT {read})) u \
             ORDER BY u.tenant_id, u.seq_id LIMIT {read}",
            tags = t.tags
        )
    } else {
        format!(
            "SELECT g.seq_id, g.tenant_id FROM {tags} g WHERE g.tag_type = {a} \
             AND g.tag_value = {b} AND g.seq_id > {after} ORDER BY g.seq_id LIMIT {read}",
            tags = t.tags
        )
    };
    let mut on: Vec<String> = Vec::new();
    if t.conjoined {
        on.push("s.tenant_id = h.tenant_id".to_owned());
    }
    if let Some(id) = exact(&q.id) {
        on.push(format!(
            "s.id = {}",
            stream_id_param(&mut p, t.identity, id)?
        ));
    }
    if let Some(ty) = exact(&q.stream_type) {
        on.push(format!("s.type = {}", p.push(ty.to_owned())));
    }
    if given(&q.archived).is_none() {
        on.push("NOT s.is_archived".to_owned());
    }
    let (hit, tenant_join) = if t.conjoined {
        ("e.stream_id, e.tenant_id", " AND e.tenant_id = c.tenant_id")
    } else {
        ("e.stream_id", "")
    };
    let on = on.iter().map(|w| format!(" AND {w}")).collect::<String>();
    let sql = format!(
        "WITH scanned AS MATERIALIZED ({scanned}), \
         chunk AS (SELECT c.seq_id, c.tenant_id FROM scanned c \
           ORDER BY c.tenant_id, c.seq_id LIMIT {chunk}), \
         last AS (SELECT c.tenant_id, c.seq_id, (SELECT count(*) FROM scanned) AS n FROM chunk c \
           ORDER BY c.tenant_id DESC, c.seq_id DESC LIMIT 1), \
         hit AS (SELECT DISTINCT {hit} FROM chunk c JOIN {events} e ON e.seq_id = c.seq_id{tenant_join}) \
         SELECT l.n, l.tenant_id, l.seq_id, s.id::text, s.type, s.version, s.created, s.timestamp, \
           s.is_archived, s.tenant_id \
         FROM last l LEFT JOIN (hit h JOIN {streams} s ON s.id = h.stream_id{on}) ON TRUE \
         ORDER BY s.tenant_id, s.id",
        events = t.events,
        streams = t.streams
    );
    Ok((sql, p))
}

/// One page of streams and where the next page starts.
pub(crate) struct StreamsPage {
    /// The page's streams.
    pub(crate) rows: Vec<StreamRow>,
    /// A tag search's cursor when its tag has more rows.
    pub(crate) next_tag: Option<TagCursor>,
    /// Whether the search by id has a next page (after the last row).
    pub(crate) more: bool,
}

fn stream_row(r: &tokio_postgres::Row, at: usize) -> Result<StreamRow, PageError> {
    Ok(StreamRow {
        id: r.try_get(at).map_err(column)?,
        stream_type: r.try_get(at + 1).map_err(column)?,
        version: r.try_get(at + 2).map_err(column)?,
        created: r.try_get(at + 3).map_err(column)?,
        timestamp: r.try_get(at + 4).map_err(column)?,
        archived: r.try_get(at + 5).map_err(column)?,
        tenant: r.try_get(at + 6).map_err(column)?,
    })
}

/// The streams matching `q`: a page by id, or a chunk of the tag's events' streams.
pub(crate) async fn read(state: &State, q: &StreamsQuery) -> Result<StreamsPage, PageError> {
    let Some(tag) = tag(q)? else {
        let (sql, p) = statement(&state.tables, q)?;
        let rows = state.store.sql_query(&sql, &p.refs()).await?;
        let mut rows = rows
            .iter()
            .map(|r| stream_row(r, 0))
            .collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() as i64 > PAGE_SIZE;
        rows.truncate(PAGE_SIZE as usize);
        return Ok(StreamsPage {
            rows,
            next_tag: None,
            more,
        });
    };
    let (sql, p) = tag_statement(&state.tables, q, tag)?;
    let found = state.store.sql_query(&sql, &p.refs()).await?;
    let mut next_tag = None;
    let mut rows = Vec::new();
    for r in &found {
        let read: i64 = r.try_get(0).map_err(column)?;
        if read > TAG_CHUNK {
            let tenant: String = r.try_get(1).map_err(column)?;
            let seq: i64 = r.try_get(2).map_err(column)?;
            next_tag = Some((tenant, seq));
        }
        let id: Option<String> = r.try_get(3).map_err(column)?;
        if id.is_some() {
            rows.push(stream_row(r, 3)?);
        }
    }
    Ok(StreamsPage {
        rows,
        next_tag,
        more: false,
    })
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
        .text(exact(&q.id).unwrap_or_default())
        .raw("\"></label><label>Type <input name=\"type\" value=\"")
        .text(exact(&q.stream_type).unwrap_or_default())
        .raw("\"></label><label>Tag <input name=\"tag_type\" placeholder=\"type\" value=\"")
        .text(exact(&q.tag_type).unwrap_or_default())
        .raw("\"><input name=\"tag_value\" placeholder=\"value\" value=\"")
        .text(exact(&q.tag_value).unwrap_or_default())
        .raw("\"></label><label><input type=\"checkbox\" name=\"archived\"");
    if given(&q.archived).is_some() {
        h.raw(" checked");
    }
    h.raw("> archived</label><button>Search</button></form>");
    // As typed; then, if that found nothing or could not be read (a blank uuid),
    // trimmed.
    let first = read(state, q).await;
    let retried;
    let (found, q) = match (first, q.trimmed()) {
        (Ok(p), Some(t)) if p.rows.is_empty() && p.next_tag.is_none() => {
            retried = t;
            (read(state, &retried).await?, &retried)
        }
        (Err(e), Some(t)) if e.status == StatusCode::BAD_REQUEST => {
            retried = t;
            (read(state, &retried).await?, &retried)
        }
        (first, _) => (first?, q),
    };
    let StreamsPage {
        rows,
        next_tag,
        more,
    } = found;
    if tag(q)?.is_some() {
        h.raw("<p class=\"note\">The tag's events are read ")
            .text(TAG_CHUNK)
            .raw(" at a time, in order: a stream may appear again on a later page.</p>");
    }
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
        h.raw("<p class=\"empty\">No stream matches");
        if next_tag.is_some() {
            h.raw(" among these events of the tag (the next page reads on)");
        }
        h.raw(".</p>");
    }
    let after = match (next_tag, rows.last()) {
        (Some((tenant, seq)), _) => Some(("after_seq", seq.to_string(), tenant)),
        (None, Some(last)) if more => Some(("after", last.id.clone(), last.tenant.clone())),
        _ => None,
    };
    if let Some((key, after, tenant)) = after {
        let mut next = Href::new(base, "/streams");
        for (k, v) in [
            ("id", &q.id),
            ("type", &q.stream_type),
            ("tag_type", &q.tag_type),
            ("tag_value", &q.tag_value),
            ("archived", &q.archived),
        ] {
            if let Some(v) = exact(v) {
                next = next.query(k, v);
            }
        }
        next = next.query(key, &after);
        if state.tables.conjoined {
            next = next.query("after_tenant", &tenant);
        }
        h.raw("<p class=\"next\">")
            .link(&next, "Next page")
            .raw("</p>");
    }
    Ok(h)
}
