//! The actions that change data: retry a dead letter, rebuild a projection. Off unless
//! the host turned them on ([`ConsoleOptions::actions`](crate::ConsoleOptions::actions));
//! each is a confirmation page (GET) whose form POSTs the action with `confirm=yes` and
//! the console's random token. A POST is refused (403) without the token, or when its
//! `Origin` header names another host than its `Host` (a cross-site form), and (400)
//! without the confirmation. The `Host` itself was checked before (`host.rs`: a page of a
//! DNS-rebinding domain has a matching `Origin`, but not a `Host` of the console's).
//!
//! Retrying a dead letter rebuilds its projection ([`marten_pg::daemon::rebuild`]: a
//! running daemon replays it from the first event, so the event is applied again, and if
//! it still fails it is dead-lettered again). The rebuild itself deletes the projection's
//! dead letters, every one of them (this event's and any other's), in its own transaction;
//! the page reports how many there were, counted just before it (`SELECT count(*) FROM
//! mt_dead_letters WHERE projection = $1`). With conjoined events the rebuild is the dead
//! letter's tenant's alone ([`marten_pg::daemon::rebuild_tenant`]): it deletes that
//! tenant's dead letters of the projection (`... AND tenant_id = $2`, counted the same
//! way), and every other tenant's slot, documents and dead letters are left as they are.
//!
//! A rebuild the store refuses (no async projection of that name: 404; one it cannot
//! rebuild as asked, such as one tenant of a projection writing documents shared by every
//! tenant: 409) changes nothing; a store that fails answers 5xx.

use axum::extract::{Form, Query, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::html::{Href, Html};
use crate::pages::{column, respond, PageError};
use crate::state::{Shared, State};

/// The confirmation page's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConfirmQuery {
    action: String,
    id: Option<i64>,
    projection: Option<String>,
}

/// A retry's form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RetryForm {
    id: i64,
    token: Option<String>,
    confirm: Option<String>,
}

/// A rebuild's form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RebuildForm {
    projection: String,
    token: Option<String>,
    confirm: Option<String>,
}

fn forbidden(message: &str) -> PageError {
    PageError {
        status: StatusCode::FORBIDDEN,
        message: message.to_owned(),
    }
}

fn actions_on(state: &State) -> Result<(), PageError> {
    if state.options.actions {
        Ok(())
    } else {
        Err(forbidden(
            "actions are off: the host has not enabled them (ConsoleOptions::actions)",
        ))
    }
}

/// The checks of every POST: actions on, same origin, the token, the confirmation.
fn guard(
    state: &State,
    headers: &HeaderMap,
    token: Option<&str>,
    confirm: Option<&str>,
) -> Result<(), PageError> {
    actions_on(state)?;
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://").map(|(_, rest)| rest));
        if host.is_none() || origin_host != host {
            return Err(forbidden("cross-origin request refused"));
        }
    }
    if !same(token.unwrap_or(""), &state.token) {
        return Err(forbidden("missing or wrong action token"));
    }
    if confirm != Some("yes") {
        return Err(PageError::bad("not confirmed (confirm=yes)"));
    }
    Ok(())
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `GET /actions/confirm?action=retry&id=N` or `?action=rebuild&projection=NAME`.
pub(crate) async fn confirm(
    Extract(state): Extract<Shared>,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let body = confirm_body(&state, &q).await;
    respond(&state, "Confirm", body)
}

async fn confirm_body(state: &State, q: &ConfirmQuery) -> Result<Html, PageError> {
    actions_on(state)?;
    let base = &state.options.base_path;
    let mut h = Html::new();
    match (q.action.as_str(), q.id, q.projection.as_deref()) {
        ("retry", Some(id), _) => {
            let letter = dead_letter(state, id)
                .await?
                .ok_or_else(|| PageError::not_found(format!("no dead letter {id}")))?;
            h.raw("<p class=\"confirm\">Retry event #")
                .text(letter.seq)
                .raw(" of projection <b>")
                .text(&letter.projection)
                .raw("</b>");
            if state.tables.conjoined {
                h.raw(" for tenant <b class=\"tenant\">")
                    .text(&letter.tenant)
                    .raw("</b>? Its dead letters are cleared and the projection is rebuilt for this tenant alone: a running daemon replays the tenant's events into it; other tenants are left as they are.</p>");
            } else {
                h.raw("? Its dead letters are cleared and the projection is rebuilt: a running daemon replays every event into it.</p>");
            }
            h.raw("<form method=\"post\" action=\"")
                .text(base)
                .raw("/actions/retry\"><input type=\"hidden\" name=\"id\" value=\"")
                .text(id);
        }
        ("rebuild", _, Some(projection)) => {
            h.raw("<p class=\"confirm\">Rebuild projection <b>")
                .text(projection)
                .raw("</b>? Its position is reset and its documents deleted: a running daemon replays every event into it.</p>")
                .raw("<form method=\"post\" action=\"")
                .text(base)
                .raw("/actions/rebuild\"><input type=\"hidden\" name=\"projection\" value=\"")
                .text(projection);
        }
        _ => return Err(PageError::bad("unknown action")),
    }
    h.raw("\"><input type=\"hidden\" name=\"token\" value=\"")
        .text(&state.token)
        .raw("\"><input type=\"hidden\" name=\"confirm\" value=\"yes\"><button class=\"danger\">Yes, do it</button> ")
        .link(&Href::new(base, "/projections"), "Cancel")
        .raw("</form>");
    Ok(h)
}

/// What a retry needs of a dead letter.
struct DeadLetter {
    /// The projection whose apply failed.
    projection: String,
    /// The event's sequence.
    seq: i64,
    /// The tenant of the slot that recorded it (`*DEFAULT*` with single-tenant events).
    tenant: String,
}

/// The projection, event and tenant of dead letter `id`.
async fn dead_letter(state: &State, id: i64) -> Result<Option<DeadLetter>, PageError> {
    let sql = format!(
        "SELECT projection, seq_id, tenant_id FROM {} WHERE id = $1",
        state.tables.dead_letters
    );
    let rows = state.store.sql_query(&sql, &[&id]).await?;
    match rows.first() {
        Some(r) => Ok(Some(DeadLetter {
            projection: r.try_get(0).map_err(column)?,
            seq: r.try_get(1).map_err(column)?,
            tenant: r.try_get(2).map_err(column)?,
        })),
        None => Ok(None),
    }
}

/// `POST /actions/retry`.
pub(crate) async fn retry(
    Extract(state): Extract<Shared>,
    headers: HeaderMap,
    Form(f): Form<RetryForm>,
) -> Response {
    let body = retry_body(&state, &headers, &f).await;
    respond(&state, "Retry", body)
}

async fn retry_body(state: &State, headers: &HeaderMap, f: &RetryForm) -> Result<Html, PageError> {
    guard(state, headers, f.token.as_deref(), f.confirm.as_deref())?;
    let DeadLetter {
        projection,
        seq,
        tenant,
    } = dead_letter(state, f.id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("no dead letter {}", f.id)))?;
    // The rebuild deletes the dead letters it replays, in its own transaction: those of
    // the projection (with conjoined events, of the dead letter's tenant alone). Counted
    // just before it, with the same scope, for the report (one recorded in between is
    // deleted uncounted).
    let dl = &state.tables.dead_letters;
    let rows = if state.tables.conjoined {
        let sql = format!("SELECT count(*) FROM {dl} WHERE projection = $1 AND tenant_id = $2");
        state.store.sql_query(&sql, &[&projection, &tenant]).await?
    } else {
        let sql = format!("SELECT count(*) FROM {dl} WHERE projection = $1");
        state.store.sql_query(&sql, &[&projection]).await?
    };
    let cleared: i64 = match rows.first() {
        Some(r) => r.try_get(0).map_err(column)?,
        None => 0,
    };
    // With conjoined events, the dead letter's tenant alone: a rebuild of the whole
    // projection would reset every tenant's slot and delete every tenant's documents.
    let rebuilt = if state.tables.conjoined {
        marten_pg::daemon::rebuild_tenant(&state.store, &projection, tenant.as_str()).await
    } else {
        marten_pg::daemon::rebuild(&state.store, &projection).await
    };
    if let Err(e) = rebuilt {
        return Err(refused(state, &projection, e).await);
    }
    tracing::info!(
        projection,
        seq,
        tenant,
        cleared,
        "console: dead letter retried"
    );
    let mut h = Html::new();
    h.raw("<p class=\"done\">Cleared ")
        .text(cleared)
        .raw(" dead letter(s) of ")
        .text(&projection);
    if state.tables.conjoined {
        h.raw(" for tenant ").text(&tenant);
    }
    h.raw(" (event #")
        .text(seq)
        .raw("'s and any other's: the replay meets every event again); ")
        .text(&projection)
        .raw(" is rebuilding");
    if state.tables.conjoined {
        h.raw(" for tenant ").text(&tenant);
    }
    h.raw(".</p>").link(
        &Href::new(&state.options.base_path, "/projections"),
        "Projections",
    );
    Ok(h)
}

/// `POST /actions/rebuild`.
pub(crate) async fn rebuild(
    Extract(state): Extract<Shared>,
    headers: HeaderMap,
    Form(f): Form<RebuildForm>,
) -> Response {
    let body = rebuild_body(&state, &headers, &f).await;
    respond(&state, "Rebuild", body)
}

async fn rebuild_body(
    state: &State,
    headers: &HeaderMap,
    f: &RebuildForm,
) -> Result<Html, PageError> {
    guard(state, headers, f.token.as_deref(), f.confirm.as_deref())?;
    if let Err(e) = marten_pg::daemon::rebuild(&state.store, &f.projection).await {
        return Err(refused(state, &f.projection, e).await);
    }
    tracing::info!(projection = f.projection, "console: projection rebuilt");
    let mut h = Html::new();
    h.raw("<p class=\"done\">")
        .text(&f.projection)
        .raw(" is rebuilding.</p>")
        .link(
            &Href::new(&state.options.base_path, "/projections"),
            "Projections",
        );
    Ok(h)
}

/// The page error of a rebuild of `projection` that failed with `e`: a refusal of the
/// request ([`marten_core::Error::Configuration`]: nothing changed) is 404 when the store
/// has no async projection of that name, else 409; a store failure is classified as
/// every page's ([`PageError::from`]).
async fn refused(state: &State, projection: &str, e: marten_core::Error) -> PageError {
    let marten_core::Error::Configuration(why) = &e else {
        return PageError::from(e);
    };
    tracing::info!(projection, reason = why, "console: rebuild refused");
    let known = match state.store.projection_status().await {
        Ok(all) => all.iter().any(|p| p.name == projection),
        Err(_) => true,
    };
    PageError {
        status: if known {
            StatusCode::CONFLICT
        } else {
            StatusCode::NOT_FOUND
        },
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::same("abc", "abc"));
        assert!(!super::same("abc", "abd"));
        assert!(!super::same("abc", "ab"));
    }
}
