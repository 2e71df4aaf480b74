//! The projections page: one row per progression slot (a projection, each shard of a
//! sharded one, each tenant's with conjoined events), [`SLOTS_PAGE`] of them a page by
//! name (`?after=` the last name of the page before): position, lag in events and in
//! seconds, owner node, rate (from the sampled history), a bar the script keeps live
//! from `/projections.json` (the same page of slots), and a chart of the lag over the
//! last hour of the [`CHARTED`] slots that lag most (`/projections/lag.svg`, drawn from
//! the history, naming how many more there are). The slots are read by [`crate::slots`].

use std::fmt::Write;
use std::time::Duration;

use axum::extract::{Query, State as Extract};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use serde::Deserialize;

use super::{exact, respond, PageError};
use crate::html::{Href, Html};
use crate::lag::CHARTED;
use crate::slots::{read_slots_page, SlotRow};
use crate::state::{Shared, State};

/// Slots per page.
pub(crate) const SLOTS_PAGE: i64 = 200;

/// The page's (and its live data's) query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ProjectionsQuery {
    /// The keyset cursor: the last slot name of the page before.
    after: Option<String>,
}

/// `GET /projections`.
pub(crate) async fn page(
    Extract(state): Extract<Shared>,
    Query(q): Query<ProjectionsQuery>,
) -> Response {
    let body = body(&state, &q).await;
    respond(&state, "Projections", body)
}

/// The page of slots after `q.after`, and the cursor of the next page when there is one.
async fn slots(
    state: &State,
    q: &ProjectionsQuery,
) -> Result<(Vec<SlotRow>, Option<String>), PageError> {
    let after = exact(&q.after).unwrap_or("");
    let mut rows = read_slots_page(&state.store, &state.tables, after, SLOTS_PAGE + 1).await?;
    let next = if rows.len() > SLOTS_PAGE as usize {
        rows.truncate(SLOTS_PAGE as usize);
        rows.last().map(|r| r.name.clone())
    } else {
        None
    };
    Ok((rows, next))
}

fn bar_width(r: &SlotRow) -> f64 {
    if r.head <= 0 {
        100.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let w = r.position.max(0) as f64 * 100.0 / r.head as f64;
        w.clamp(0.0, 100.0)
    }
}

async fn body(state: &State, q: &ProjectionsQuery) -> Result<Html, PageError> {
    let base = &state.options.base_path;
    let (rows, next) = slots(state, q).await?;
    let rates = state.history.rates();
    let mut live = Href::new(base, "/projections.json");
    if let Some(after) = exact(&q.after) {
        live = live.query("after", after);
    }
    let mut h = Html::new();
    h.raw("<table id=\"projections\" data-live=\"")
        .text(live.as_str())
        .raw("\">")
        .header_row(&[
            "Slot",
            "Tenant",
            "Position",
            "Head",
            "Lag (events)",
            "Lag (s)",
            "Owner",
            "Rate (ev/s)",
            "Progress",
            "",
        ]);
    for r in &rows {
        h.raw("<tr data-slot=\"")
            .text(&r.name)
            .raw("\">")
            .cell(&r.name)
            .cell(&r.tenant)
            .raw("<td class=\"position\">")
            .text(r.position)
            .raw("</td><td class=\"head\">")
            .text(r.head)
            .raw("</td><td class=\"lag\">")
            .text(r.lag_events())
            .raw("</td><td class=\"lag-seconds\">")
            .text(format!("{:.1}", r.lag_seconds))
            .raw("</td><td class=\"owner\">")
            .text(r.owner.as_deref().unwrap_or(""))
            .raw("</td><td class=\"rate\">")
            .text(
                rates
                    .get(&r.name)
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
            )
            .raw("</td><td><div class=\"bar\"><div class=\"fill\" style=\"width:")
            .text(format!("{:.1}", bar_width(r)))
            .raw("%\"></div></div></td><td>");
        if state.options.actions {
            let href = Href::new(base, "/actions/confirm")
                .query("action", "rebuild")
                .query("projection", r.projection());
            h.link(&href, "rebuild…");
        }
        h.raw("</td></tr>");
    }
    h.raw("</table>");
    if rows.is_empty() && q.after.is_none() {
        h.raw("<p class=\"empty\">No async projection has run yet.</p>");
    }
    if let Some(next) = &next {
        let href = Href::new(base, "/projections").query("after", next);
        h.raw("<p class=\"next\">")
            .link(&href, "Next page")
            .raw("</p>");
    }
    h.raw("<h2>Lag, up to the last hour</h2><img id=\"lag-chart\" alt=\"lag chart\" src=\"")
        .text(base)
        .raw("/projections/lag.svg\">");
    Ok(h)
}

/// `GET /projections.json`: the page's slots now (the same `after`), for its script.
pub(crate) async fn json(
    Extract(state): Extract<Shared>,
    Query(q): Query<ProjectionsQuery>,
) -> Response {
    match slots(&state, &q).await {
        Ok((rows, _)) => {
            let rates = state.history.rates();
            let slots: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "slot": r.name,
                        "tenant": r.tenant,
                        "position": r.position,
                        "head": r.head,
                        "lag": r.lag_events(),
                        "lag_seconds": r.lag_seconds,
                        "owner": r.owner,
                        "rate": rates.get(&r.name),
                        "progress": bar_width(r),
                    })
                })
                .collect();
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "slots": slots }).to_string(),
            )
                .into_response()
        }
        Err(e) => e.into_json(),
    }
}

impl PageError {
    fn into_json(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "error": self.message }).to_string(),
        )
            .into_response()
    }
}

/// The colours of the chart's lines, in turn.
const COLOURS: [&str; 6] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
];

/// `GET /projections/lag.svg`: the lag over the last hour of the slots that lag most,
/// from the history.
pub(crate) async fn chart(Extract(state): Extract<Shared>) -> Response {
    let series = state.history.series(Duration::from_secs(3600));
    let more = state.history.slot_count().saturating_sub(series.len());
    let svg = chart_svg(&series, more);
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

/// The chart: x from the oldest sample shown (at most an hour ago, at least a minute)
/// on the left to now on the right, y from 0 to the largest lag; a line for each of the
/// first [`CHARTED`] series (those past it counted with `more`, the slots not charted,
/// in a note: "+k more").
pub(crate) fn chart_svg(series: &[(String, Vec<(f64, i64)>)], more: usize) -> String {
    let more = more + series.len().saturating_sub(CHARTED);
    let series = &series[..series.len().min(CHARTED)];
    let (w, hgt, pad) = (720.0f64, 200.0f64, 30.0f64);
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, l)| *l))
        .max()
        .unwrap_or(0)
        .max(1);
    let span = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(ago, _)| *ago))
        .fold(60.0f64, f64::max)
        .min(3600.0);
    let span_label = if span >= 120.0 {
        format!("-{:.0} min", span / 60.0)
    } else {
        format!("-{span:.0} s")
    };
    let mut h = Html::new();
    h.raw("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"230\" viewBox=\"0 0 720 230\">")
        .raw("<rect width=\"720\" height=\"230\" fill=\"#fff\"/>")
        .raw("<line x1=\"30\" y1=\"200\" x2=\"720\" y2=\"200\" stroke=\"#999\"/>")
        .raw("<line x1=\"30\" y1=\"0\" x2=\"30\" y2=\"200\" stroke=\"#999\"/>")
        .raw("<text x=\"32\" y=\"12\" font-size=\"11\" fill=\"#555\">")
        .text(max)
        .raw("</text><text x=\"32\" y=\"215\" font-size=\"11\" fill=\"#555\">")
        .text(span_label)
        .raw("</text><text x=\"690\" y=\"215\" font-size=\"11\" fill=\"#555\">now</text>");
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        for (ago, lag) in points {
            let x = pad + (w - pad) * (1.0 - ago / span);
            #[allow(clippy::cast_precision_loss)]
            let y = hgt - hgt * (*lag as f64) / (max as f64);
            let _ = write!(d, "{x:.1},{y:.1} ");
        }
        h.raw("<polyline fill=\"none\" stroke-width=\"2\" stroke=\"")
            .text(colour)
            .raw("\" points=\"")
            .text(d.trim_end())
            .raw("\"><title>")
            .text(name)
            .raw("</title></polyline><text font-size=\"11\" x=\"40\" y=\"")
            .text(28 + 14 * i)
            .raw("\" fill=\"")
            .text(colour)
            .raw("\">")
            .text(name)
            .raw("</text>");
    }
    if more > 0 {
        h.raw("<text class=\"more\" font-size=\"11\" x=\"40\" y=\"")
            .text(28 + 14 * series.len())
            .raw("\" fill=\"#555\">+")
            .text(more)
            .raw(" more (not lagging as much)</text>");
    }
    h.raw("</svg>");
    h.into_string()
}
