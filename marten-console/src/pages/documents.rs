//! The documents page: the document types the host registered
//! ([`ConsoleBuilder::document`](crate::ConsoleBuilder::document)) and, for one of them, a
//! page of its documents: a query box over the type's query fields (field, operator,
//! value: a filter of the typed query DSL, rendered by marten like any query), paged by
//! id (`d.id > $cursor ORDER BY d.id`, the primary key). The SQL is marten's own.
//!
//! The value and the tenant are used as typed, spaces included (a string id may have
//! them), and the cursor as the console wrote it; a query that finds nothing (or is
//! refused as a bad request) as typed, with no cursor, is tried again with the value and
//! tenant trimmed. A store that fails (unreachable, too slow) answers 5xx at once, not
//! tried again.

use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{exact, given, respond, trimmed_search, PageError, PAGE_SIZE};
use crate::documents::{DocError, DocPage, DocQuery, DocumentView, Op};
use crate::html::{Href, Html};
use crate::state::{Shared, State};

/// The page's query string.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct DocumentsQuery {
    /// A query field's name.
    pub(crate) field: Option<String>,
    /// An operator's name.
    pub(crate) op: Option<String>,
    /// The value typed.
    pub(crate) value: Option<String>,
    /// The keyset cursor.
    pub(crate) after: Option<String>,
    /// The tenant (a conjoined document type).
    pub(crate) tenant: Option<String>,
}

impl DocumentsQuery {
    /// The query with its value and tenant trimmed, when that changes them and no cursor
    /// is given: the second try of a query that found nothing as typed.
    pub(crate) fn trimmed(&self) -> Option<DocumentsQuery> {
        if self.after.is_some() {
            return None;
        }
        let mut t = self.clone();
        trimmed_search([&mut t.value, &mut t.tenant]).then_some(t)
    }
}

/// A page of `view`'s documents for `q`: the value, the tenant and the cursor as given.
async fn read(
    state: &State,
    view: &dyn DocumentView,
    q: &DocumentsQuery,
) -> Result<DocPage, PageError> {
    let filter = match (given(&q.field), exact(&q.value)) {
        (Some(field), Some(value)) => {
            let op_name = given(&q.op).unwrap_or("eq");
            let op = Op::parse(op_name)
                .ok_or_else(|| PageError::bad(format!("unknown operator {op_name}")))?;
            Some((field.to_owned(), op, value.to_owned()))
        }
        _ => None,
    };
    let query = DocQuery {
        filter,
        after: exact(&q.after).map(str::to_owned),
        tenant: exact(&q.tenant).map(str::to_owned),
        limit: PAGE_SIZE as usize,
    };
    view.page(&state.store, &query).await.map_err(|e| match e {
        DocError::Query(why) => PageError::bad(why),
        DocError::Store(e) => PageError::from(e),
    })
}

/// `GET /documents`.
pub(crate) async fn index(Extract(state): Extract<Shared>) -> Response {
    let base = &state.options.base_path;
    let mut h = Html::new();
    h.raw("<ul class=\"types\">");
    for d in &state.documents {
        h.raw("<li>")
            .link(&Href::new(base, "/documents").segment(d.name()), d.name())
            .raw("</li>");
    }
    h.raw("</ul>");
    if state.documents.is_empty() {
        h.raw("<p class=\"empty\">No document type is registered with the console (ConsoleBuilder::document).</p>");
    }
    respond(&state, "Documents", Ok(h))
}

/// `GET /documents/{type}`.
pub(crate) async fn page(
    Extract(state): Extract<Shared>,
    Path(name): Path<String>,
    Query(q): Query<DocumentsQuery>,
) -> Response {
    let Some(view) = state.documents.iter().find(|d| d.name() == name).cloned() else {
        let e = PageError::not_found(format!("no document type {name} is registered"));
        return respond(&state, "Documents", Err(e));
    };
    let body = body(&state, view.as_ref(), &q).await;
    respond(&state, view.name(), body)
}

async fn body(
    state: &State,
    view: &dyn DocumentView,
    q: &DocumentsQuery,
) -> Result<Html, PageError> {
    let base = &state.options.base_path;
    let fields = view.fields();
    let mut h = Html::new();
    h.raw("<form class=\"search\" method=\"get\"><select name=\"field\">");
    for (name, _) in &fields {
        h.raw("<option value=\"").text(name).raw("\"");
        if given(&q.field) == Some(name.as_str()) {
            h.raw(" selected");
        }
        h.raw(">").text(name).raw("</option>");
    }
    h.raw("</select><select name=\"op\">");
    for op in Op::ALL {
        h.raw("<option value=\"").text(op.name()).raw("\"");
        if given(&q.op) == Some(op.name()) {
            h.raw(" selected");
        }
        h.raw(">").text(op.name()).raw("</option>");
    }
    h.raw("</select><input name=\"value\" placeholder=\"value (JSON or text)\" value=\"")
        .text(exact(&q.value).unwrap_or_default())
        .raw("\">");
    if view.conjoined() {
        h.raw("<label>Tenant <input name=\"tenant\" value=\"")
            .text(exact(&q.tenant).unwrap_or_default())
            .raw("\"></label>");
    }
    h.raw("<button>Query</button></form>");
    h.raw("<p class=\"fields\">Fields: ");
    for (name, ops) in &fields {
        h.raw("<code>").text(name).raw("</code> (");
        let names: Vec<&str> = ops.iter().map(|o| o.name()).collect();
        h.text(names.join(", ")).raw(") ");
    }
    h.raw("</p>");
    // As typed; then, if that found nothing or was refused, with the value and the
    // tenant trimmed.
    let first = read(state, view, q).await;
    let retried;
    let (page, q) = match (first, q.trimmed()) {
        (Ok(p), Some(t)) if p.rows.is_empty() => {
            retried = t;
            (read(state, view, &retried).await?, &retried)
        }
        (Err(e), Some(t)) if e.status == StatusCode::BAD_REQUEST => {
            retried = t;
            (read(state, view, &retried).await?, &retried)
        }
        (first, _) => (first?, q),
    };
    h.raw("<table id=\"documents\">")
        .header_row(&["Id", "Document"]);
    for (id, json) in &page.rows {
        h.raw("<tr>")
            .cell(id)
            .raw("<td><pre class=\"json data\">")
            .text(json)
            .raw("</pre></td></tr>");
    }
    h.raw("</table>");
    if page.rows.is_empty() {
        h.raw("<p class=\"empty\">No document matches.</p>");
    }
    if let Some(next) = &page.next {
        let mut href = Href::new(base, "/documents").segment(view.name());
        for (k, v) in [("field", given(&q.field)), ("op", given(&q.op))] {
            if let Some(v) = v {
                href = href.query(k, v);
            }
        }
        for (k, v) in [("value", exact(&q.value)), ("tenant", exact(&q.tenant))] {
            if let Some(v) = v {
                href = href.query(k, v);
            }
        }
        href = href.query("after", next);
        h.raw("<p class=\"next\">")
            .link(&href, "Next page")
            .raw("</p>");
    }
    Ok(h)
}
