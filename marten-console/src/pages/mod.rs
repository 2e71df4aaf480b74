//! The console's pages, one file each, every one with the SQL it runs (parameterized,
//! keyset-paged over an index: no `count(*)`, no `OFFSET`): streams, a stream's events,
//! documents, projections, dead letters and tags.

pub(crate) mod dead_letters;
pub(crate) mod documents;
pub(crate) mod events;
#[cfg(test)]
mod plans;
pub(crate) mod projections;
pub(crate) mod streams;
pub(crate) mod tags;

use axum::http::StatusCode;
use axum::response::{Html as HtmlResponse, IntoResponse, Response};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use crate::html::{self, Html};
use crate::state::State;

/// Rows per page.
pub(crate) const PAGE_SIZE: i64 = 50;

/// Why a page could not be shown.
#[derive(Debug)]
pub(crate) struct PageError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl PageError {
    /// A request the page cannot answer (400).
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// Nothing at that address (404).
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

/// The status of a page whose store call failed with `e`: 503 when the database could
/// not be reached or did not answer in time (a connection, the pool, a timeout, a
/// cancelled statement: trying again later may work), 400 for a value of the request the
/// store refused (an id, a tenant, input), 404 for a tenant it does not know, 500 for
/// anything else.
pub(crate) fn status_of(e: &marten_core::Error) -> StatusCode {
    use marten_core::Error as E;
    match e {
        E::Connection(_)
        | E::PoolExhausted { .. }
        | E::TooManyConnections(_)
        | E::Timeout { .. }
        | E::Canceled(_)
        | E::ReplicaBehind { .. } => StatusCode::SERVICE_UNAVAILABLE,
        E::InvalidId { .. }
        | E::InvalidStreamId { .. }
        | E::InvalidTenant { .. }
        | E::InvalidInput { .. }
        | E::TenantRequired { .. } => StatusCode::BAD_REQUEST,
        E::UnknownTenant { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<marten_core::Error> for PageError {
    fn from(e: marten_core::Error) -> Self {
        let status = status_of(&e);
        if status.is_server_error() {
            tracing::warn!(error = %e, "console query failed");
        }
        PageError {
            status,
            message: e.to_string(),
        }
    }
}

/// A stored value of an unexpected type.
pub(crate) fn column(e: tokio_postgres::Error) -> PageError {
    PageError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("unexpected stored value: {e}"),
    }
}

/// The page `title` around `body`, or the error page.
pub(crate) fn respond(state: &State, title: &str, body: Result<Html, PageError>) -> Response {
    match body {
        Ok(b) => HtmlResponse(html::page(&state.options.base_path, title, &b)).into_response(),
        Err(e) => {
            let mut b = Html::new();
            b.raw("<p class=\"error\">").text(&e.message).raw("</p>");
            (
                e.status,
                HtmlResponse(html::page(&state.options.base_path, title, &b)),
            )
                .into_response()
        }
    }
}

/// A timestamp as RFC 3339.
pub(crate) fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Statement parameters collected while a statement's text is put together.
#[derive(Default)]
pub(crate) struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    /// Adds a value; returns its placeholder (`$n`).
    pub(crate) fn push(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(v));
        format!("${}", self.values.len())
    }

    /// The values, for `sql_query`.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A stream id typed in a form or URL, as the parameter of the store's id type.
pub(crate) fn stream_id_param(
    params: &mut Params,
    identity: marten_core::StreamIdentity,
    text: &str,
) -> Result<String, PageError> {
    match identity {
        marten_core::StreamIdentity::Uuid => {
            let id = uuid::Uuid::parse_str(text.trim())
                .map_err(|_| PageError::bad(format!("{text:?} is not a uuid stream id")))?;
            Ok(params.push(id))
        }
        _ => Ok(params.push(text.to_owned())),
    }
}

/// A JSON value pretty-printed (`null` for none).
pub(crate) fn pretty(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
        None => "null".to_owned(),
    }
}

/// A non-empty, trimmed form value: for flags and the names of the query box's fields and
/// operators, never for an id, a tag, a tenant or a cursor (see [`exact`]).
pub(crate) fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A non-empty value exactly as sent, spaces included: a cursor or a value of a link the
/// console wrote (an id, a tag, a tenant), and a search box's first try.
pub(crate) fn exact(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// A search box's value trimmed, when trimming changes it: the second try of a search
/// that found nothing with the value as typed (`Some(None)`: nothing is left of it).
pub(crate) fn retrimmed(v: &Option<String>) -> Option<Option<String>> {
    let typed = v.as_deref()?;
    let trimmed = typed.trim();
    (trimmed.len() != typed.len()).then(|| (!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// `fields` trimmed (see [`retrimmed`]) when trimming changes any: the second try of a
/// search whose values as typed found nothing.
pub(crate) fn trimmed_search<const N: usize>(fields: [&mut Option<String>; N]) -> bool {
    let mut changed = false;
    for f in fields {
        if let Some(t) = retrimmed(f) {
            *f = t;
            changed = true;
        }
    }
    changed
}
