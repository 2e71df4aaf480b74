//! The console's routes: pages (GET), the projections' live data and chart, the embedded
//! assets, and the actions (a confirmation page by GET, the action itself by POST only).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::actions;
use crate::pages::{dead_letters, documents, events, projections, streams, tags};
use crate::state::Shared;

/// The stylesheet, embedded.
const CSS: &str = include_str!("assets/console.css");
/// The script, embedded.
const JS: &str = include_str!("assets/console.js");

/// Every route over `state`.
pub(crate) fn routes(state: Shared) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/streams", get(streams::page))
        .route("/streams/{id}", get(events::page))
        .route("/documents", get(documents::index))
        .route("/documents/{name}", get(documents::page))
        .route("/projections", get(projections::page))
        .route("/projections.json", get(projections::json))
        .route("/projections/lag.svg", get(projections::chart))
        .route("/dead-letters", get(dead_letters::page))
        .route("/tags", get(tags::page))
        .route("/actions/confirm", get(actions::confirm))
        .route("/actions/retry", post(actions::retry))
        .route("/actions/rebuild", post(actions::rebuild))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .fallback(not_found)
        .with_state(state)
}

async fn root(axum::extract::State(state): axum::extract::State<Shared>) -> Redirect {
    Redirect::to(&format!("{}/streams", state.options.base_path))
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}
