//! Every page over HTTP against a real PostgreSQL: streams (search by id, type, tag,
//! archived, keyset paging), a stream's events with their metadata, documents (the typed
//! query box, paging by id), projections (position, lag, owner, live JSON, chart), dead
//! letters, tags; stored `<script>` in data, headers, tags and ids escaped on every page;
//! actions off by default, guarded when on; binding refused off loopback without auth.

mod common;

use common::*;
use marten::prelude::*;
use marten_console::{Console, ConsoleError, QueryField};

#[tokio::test]
async fn streams_page_lists_searches_and_pages_by_id() {
    let (_schema, store) = store("console_streams").await;
    let seeded = seed(&store, 60, 0).await;
    let console = console(&store).build();
    let served = serve(&console).await;

    let first = page(served.addr, "/streams").await;
    assert!(first.contains("<table id=\"streams\">"), "{first}");
    let next = first
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("after="))
        .expect("62 streams need a next page")
        .replace("&amp;", "&");
    let second = page(served.addr, &next).await;
    let rows = |body: &str| body.matches("<tr><td><a").count();
    assert_eq!(rows(&first), 50);
    assert_eq!(rows(&second), 12, "62 streams in all: {second}");
    for id in &seeded.plain {
        let on_first = first.contains(&id.to_string());
        let on_second = second.contains(&id.to_string());
        assert!(on_first != on_second, "{id} on exactly one page");
    }

    let by_id = page(served.addr, &format!("/streams?id={}", seeded.plain[3])).await;
    assert_eq!(rows(&by_id), 1);
    assert!(by_id.contains(&seeded.plain[3].to_string()));
    let bad_id = get(served.addr, "/streams?id=not-a-uuid").await;
    assert_eq!(bad_id.status, 400);
    assert!(bad_id.body.contains("is not a uuid stream id"));

    // Tag c1: streams 1, 4, 7, ... of the 60.
    let by_tag = page(served.addr, "/streams?tag_type=customer&tag_value=c1").await;
    assert_eq!(rows(&by_tag), 20, "{by_tag}");
    assert!(by_tag.contains(&seeded.plain[1].to_string()));
    assert!(!by_tag.contains(&seeded.plain[0].to_string()));
    let half_tag = get(served.addr, "/streams?tag_type=customer").await;
    assert_eq!(half_tag.status, 400);

    // Archived streams only with the toggle.
    let mut s = store.lightweight_session();
    ok(s.events().archive_stream(seeded.plain[0]));
    ok(s.save_changes().await);
    let id = seeded.plain[0].to_string();
    let hidden = page(served.addr, &format!("/streams?id={id}")).await;
    assert_eq!(rows(&hidden), 0);
    let shown = page(served.addr, &format!("/streams?id={id}&archived=on")).await;
    assert_eq!(rows(&shown), 1);
    assert!(shown.contains("<td>yes</td>"));
}

/// The `href` of a page's "Next page" link, unescaped.
fn next_link(body: &str) -> Option<String> {
    body.split("<p class=\"next\">")
        .nth(1)?
        .split("href=\"")
        .nth(1)?
        .split('"')
        .next()
        .map(|h| h.replace("&amp;", "&"))
}

#[tokio::test]
async fn streams_searched_by_tag_are_paged_by_the_tags_sequence() {
    let (_schema, store) = store("console_streams_tag").await;
    // Tag c1: streams 1, 4, 7, ... of the 630: 210 streams, one tagged event each, more
    // than one chunk (200) of the tag's events.
    let seeded = seed(&store, 630, 0).await;
    let c1: Vec<String> = seeded
        .plain
        .iter()
        .skip(1)
        .step_by(3)
        .map(|id| id.to_string())
        .collect();
    assert_eq!(c1.len(), 210);
    // Stream 1 is tagged again after every other: in the first chunk and in the second.
    let mut s = store.lightweight_session();
    ok(s.events().append(
        seeded.plain[1],
        [OrderPlaced {
            customer: CustomerTag("c1".to_owned()),
            note: "again".to_owned(),
        }],
    ));
    // Stream 4 is archived: hidden without the toggle.
    ok(s.events().archive_stream(seeded.plain[4]));
    ok(s.save_changes().await);
    let console = console(&store).build();
    let served = serve(&console).await;
    let rows = |body: &str| body.matches("<tr><td><a").count();

    let first = page(served.addr, "/streams?tag_type=customer&tag_value=c1").await;
    assert!(
        first.contains("a stream may appear again on a later page"),
        "{first}"
    );
    assert_eq!(
        rows(&first),
        199,
        "the first 200 events' streams but the archived one"
    );
    assert!(!first.contains(&c1[1]), "archived stream 4 hidden");
    let next = next_link(&first).expect("211 tagged events need a second chunk");
    assert!(
        next.contains("after_seq=") && next.contains("tag_value=c1"),
        "{next}"
    );
    let second = page(served.addr, &next).await;
    assert_eq!(
        rows(&second),
        11,
        "the last 10 streams and stream 1 again: {second}"
    );
    assert!(next_link(&second).is_none(), "the tag has no more events");
    for (i, id) in c1.iter().enumerate() {
        let on_first = first.contains(id.as_str());
        let on_second = second.contains(id.as_str());
        match i {
            0 => assert!(on_first && on_second, "stream 1 on both pages"),
            1 => assert!(!on_first && !on_second, "stream 4 archived"),
            _ => assert!(on_first != on_second, "{id} on exactly one page"),
        }
    }
    assert!(
        !first.contains(&seeded.plain[0].to_string()),
        "not tagged c1"
    );

    // The toggle shows the archived stream; the id filter narrows a chunk.
    let all = page(
        served.addr,
        "/streams?tag_type=customer&tag_value=c1&archived=on",
    )
    .await;
    assert_eq!(rows(&all), 200);
    let one = page(
        served.addr,
        &format!("/streams?tag_type=customer&tag_value=c1&id={}", c1[0]),
    )
    .await;
    assert_eq!(rows(&one), 1, "{one}");
    assert!(
        next_link(&one).is_some(),
        "the tag's next chunk is still read"
    );
    let none = page(served.addr, "/streams?tag_type=customer&tag_value=nobody").await;
    assert_eq!(rows(&none), 0);
    assert!(next_link(&none).is_none());
}

#[tokio::test]
async fn a_streams_page_shows_each_event_with_its_metadata() {
    let (_schema, store) = store("console_events").await;
    let seeded = seed(&store, 2, 0).await;
    let console = console(&store).build();
    let served = serve(&console).await;

    let body = page(served.addr, &format!("/streams/{}", seeded.plain[0])).await;
    assert!(body.contains("<table id=\"events\">"));
    assert!(body.contains("<td>order_placed</td>") && body.contains("<td>order_shipped</td>"));
    assert!(
        body.contains("<td>1</td>") && body.contains("<td>2</td>"),
        "versions"
    );
    assert!(
        body.contains("&quot;carrier&quot;: &quot;post&quot;"),
        "pretty JSON data: {body}"
    );

    let hostile = page(served.addr, &format!("/streams/{}", seeded.hostile)).await;
    assert!(hostile.contains("cause-42"), "causation id");
    assert!(
        hostile.contains("corr-&lt;script&gt;"),
        "correlation id, escaped"
    );
    assert!(hostile.contains("&quot;origin&quot;"), "headers: {hostile}");

    let missing = get(served.addr, &format!("/streams/{}", Uuid::now_v7())).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn stored_script_is_escaped_on_every_page() {
    let (schema, store) = store("console_escape").await;
    let seeded = seed(&store, 1, 0).await;
    run_daemon(&store).await;
    // A dead letter whose error carries script too.
    let raw = schema.raw_client().await;
    raw.execute(
        "INSERT INTO mt_dead_letters (projection, seq_id, event_type, stream_id, error) \
         VALUES ('OrderSummary', 1, $1, $1, $1)",
        &[&SCRIPT],
    )
    .await
    .expect("insert a hostile dead letter");
    let mut s = store.lightweight_session();
    ok(s.store(Invoice {
        id: 7,
        customer: SCRIPT.to_owned(),
        total: 1,
        paid: false,
    }));
    ok(s.save_changes().await);
    let console = console(&store).actions(true).build();
    let served = serve(&console).await;

    let tag_value = enc(&format!("acme{SCRIPT}"));
    let pages = [
        "/streams".to_owned(),
        format!("/streams/{}", seeded.hostile),
        "/documents/Invoice".to_owned(),
        format!(
            "/documents/Invoice?field=customer&op=eq&value={}",
            enc(SCRIPT)
        ),
        "/projections".to_owned(),
        "/dead-letters".to_owned(),
        "/tags".to_owned(),
        format!("/tags?type=customer&value={tag_value}"),
        format!("/streams?type={}", enc(SCRIPT)),
    ];
    for p in &pages {
        let body = page(served.addr, p).await;
        assert!(
            !body.contains("<script>alert"),
            "{p} writes a stored script unescaped:\n{body}"
        );
        // Only the console's own script tag.
        assert_eq!(body.matches("<script").count(), 1, "{p}");
    }
    let events = page(served.addr, &format!("/streams/{}", seeded.hostile)).await;
    assert!(events.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"));
    let dead = page(served.addr, "/dead-letters").await;
    assert!(dead.contains("&lt;script&gt;alert"), "{dead}");
    let doc = page(
        served.addr,
        &format!(
            "/documents/Invoice?field=customer&op=eq&value={}",
            enc(SCRIPT)
        ),
    )
    .await;
    assert!(
        doc.contains("<td>7</td>"),
        "the query found the hostile invoice: {doc}"
    );
    drop(raw);
}

#[tokio::test]
async fn hostile_string_stream_ids_are_escaped_and_bound() {
    let schema = marten_testing::TestSchema::new("console_string_ids");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .stream_identity(marten::StreamIdentity::String)
        .event::<OrderPlaced>()
        .build()
        .await);
    let id = format!("x'; DROP TABLE mt_events; --{SCRIPT}");
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id.clone(),
        [OrderPlaced {
            customer: CustomerTag("c".into()),
            note: "n".into(),
        }],
    ));
    ok(s.save_changes().await);
    let console = Console::builder(&store).build();
    let served = serve(&console).await;
    let list = page(served.addr, &format!("/streams?id={}", enc(&id))).await;
    assert!(!list.contains("<script>alert"));
    assert_eq!(list.matches("<tr><td><a").count(), 1, "{list}");
    let one = page(served.addr, &format!("/streams/{}", enc(&id))).await;
    assert!(one.contains("<td>order_placed</td>"));
    assert!(!one.contains("<script>alert"));
}

#[tokio::test]
async fn documents_page_queries_typed_fields_and_pages_by_id() {
    let (_schema, store) = store("console_documents").await;
    seed(&store, 0, 120).await;
    let console = console(&store).build();
    let served = serve(&console).await;

    let index = page(served.addr, "/documents").await;
    assert!(index.contains(">Invoice</a>"));
    let all = page(served.addr, "/documents/Invoice").await;
    assert_eq!(all.matches("<tr><td>").count(), 50);
    assert!(
        all.contains("<option value=\"total\">"),
        "the query box names the fields"
    );
    let next = all
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("after="))
        .expect("a next page")
        .replace("&amp;", "&");
    assert!(next.contains("after=l%3A50"), "{next}");
    let second = page(served.addr, &next).await;
    assert!(second.contains("<tr><td>51</td>") && !second.contains("<tr><td>50</td>"));

    // total > 1000: invoices 101..=120.
    let big = page(
        served.addr,
        "/documents/Invoice?field=total&op=gt&value=1000",
    )
    .await;
    assert_eq!(big.matches("<tr><td>").count(), 20, "{big}");
    let acme = page(
        served.addr,
        "/documents/Invoice?field=customer&op=starts_with&value=ac",
    )
    .await;
    assert_eq!(
        acme.matches("<tr><td>").count(),
        50,
        "60 acme invoices, a page of them"
    );
    let paid = page(
        served.addr,
        "/documents/Invoice?field=paid&op=eq&value=true",
    )
    .await;
    assert_eq!(paid.matches("<tr><td>").count(), 40, "{paid}");
    // A value of the wrong type, an operator the field lacks, an unknown field.
    for bad in [
        "/documents/Invoice?field=total&op=gt&value=lots",
        "/documents/Invoice?field=paid&op=gt&value=true",
        "/documents/Invoice?field=nope&op=eq&value=1",
    ] {
        assert_eq!(get(served.addr, bad).await.status, 400, "{bad}");
    }
    assert_eq!(get(served.addr, "/documents/Nope").await.status, 404);
}

#[tokio::test]
async fn projections_page_shows_position_lag_owner_rate_and_chart() {
    let (_schema, store) = store("console_projections").await;
    seed(&store, 10, 0).await;
    let console = console(&store)
        .options({
            let mut o = marten_console::ConsoleOptions::default();
            o.sample_every = std::time::Duration::from_millis(50);
            o
        })
        .build();
    let served = serve(&console).await;
    let empty = page(served.addr, "/projections").await;
    assert!(empty.contains("No async projection has run yet"));

    run_daemon(&store).await;
    let body = page(served.addr, "/projections").await;
    assert!(body.contains("<tr data-slot=\"OrderSummary\">"), "{body}");
    assert!(body.contains("<td class=\"owner\">node-a</td>"), "{body}");
    assert!(
        body.contains("<td class=\"lag\">0</td>"),
        "caught up: {body}"
    );
    assert!(body.contains("/projections/lag.svg"));

    // Appended events show as lag, in events and in seconds.
    let mut s = store.lightweight_session();
    for _ in 0..5 {
        ok(s.events().append(
            Uuid::now_v7(),
            [OrderShipped {
                carrier: "x".into(),
            }],
        ));
    }
    ok(s.save_changes().await);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let live = get(served.addr, "/projections.json").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&live.body).expect("JSON");
    let slot = &json["slots"][0];
    assert_eq!(slot["slot"], "OrderSummary");
    assert_eq!(slot["lag"], 5);
    assert!(
        slot["lag_seconds"].as_f64().expect("seconds") > 0.1,
        "{slot}"
    );
    assert_eq!(slot["owner"], "node-a");
    assert!(slot["rate"].is_number(), "sampled: {slot}");

    let chart = get(served.addr, "/projections/lag.svg").await;
    assert_eq!(chart.status, 200);
    assert_eq!(chart.header("content-type"), Some("image/svg+xml"));
    assert!(chart.body.contains("<polyline") && chart.body.contains("OrderSummary"));
}

#[tokio::test]
async fn dead_letters_page_shows_the_event_and_error() {
    let (_schema, store) = store("console_dead").await;
    let seeded = seed(&store, 1, 0).await;
    run_daemon(&store).await;
    let console = console(&store).build();
    let served = serve(&console).await;
    let body = page(served.addr, "/dead-letters").await;
    assert!(body.contains("<td>OrderSummary</td>"), "{body}");
    assert!(body.contains(" boom</td>"), "the event type: {body}");
    assert!(body.contains("panicked: boom: the summary cannot take this event"));
    assert!(body.contains(&seeded.poisoned.to_string()));
    assert!(
        body.contains("<th>Attempts</th>") && body.contains("<td>2</td>"),
        "the first try and the one retry the daemon made: {body}"
    );
    assert!(!body.contains("retry…"), "actions are off");
}

#[tokio::test]
async fn tags_page_lists_tags_and_a_tags_events_and_version() {
    let (_schema, store) = store("console_tags").await;
    seed(&store, 9, 0).await;
    let console = console(&store).build();
    let served = serve(&console).await;
    let list = page(served.addr, "/tags").await;
    assert!(
        list.contains(">c0</a>") && list.contains(">c2</a>"),
        "{list}"
    );
    let c0 = page(served.addr, "/tags?type=customer&value=c0").await;
    assert!(
        c0.contains("<dd class=\"tag-version\">3</dd>"),
        "three tagged appends: {c0}"
    );
    assert_eq!(c0.matches("<td>order_placed</td>").count(), 3);
    assert_eq!(get(served.addr, "/tags?type=customer").await.status, 400);
}

#[tokio::test]
async fn actions_are_off_by_default() {
    let (_schema, store) = store("console_actions_off").await;
    seed(&store, 1, 0).await;
    run_daemon(&store).await;
    let console = console(&store).build();
    let served = serve(&console).await;
    let confirm = get(
        served.addr,
        "/actions/confirm?action=rebuild&projection=OrderSummary",
    )
    .await;
    assert_eq!(confirm.status, 403);
    let body = format!(
        "projection=OrderSummary&confirm=yes&token={}",
        console.action_token()
    );
    let post = request(
        served.addr,
        "POST",
        "/actions/rebuild",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    )
    .await;
    assert_eq!(post.status, 403, "{}", post.body);
    assert!(post.body.contains("actions are off"));
    let get_action = get(served.addr, "/actions/rebuild").await;
    assert_eq!(get_action.status, 405, "actions are POST only");
    let body = page(served.addr, "/projections").await;
    assert!(!body.contains("rebuild…"));
}

#[tokio::test]
async fn a_retry_needs_confirmation_token_and_same_origin_then_replays() {
    let (schema, store) = store("console_retry").await;
    seed(&store, 2, 0).await;
    run_daemon(&store).await;
    let raw = schema.raw_client().await;
    let dead_id: i64 = raw
        .query_one("SELECT id FROM mt_dead_letters", &[])
        .await
        .expect("one dead letter")
        .get(0);
    let console = console(&store).actions(true).build();
    let served = serve(&console).await;

    let list = page(served.addr, "/dead-letters").await;
    assert!(list.contains("retry…"));
    let confirm = page(
        served.addr,
        &format!("/actions/confirm?action=retry&id={dead_id}"),
    )
    .await;
    assert!(
        confirm.contains("method=\"post\"") && confirm.contains("name=\"confirm\" value=\"yes\"")
    );
    assert!(confirm.contains(console.action_token()));

    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let token = console.action_token().to_owned();
    let post = |body: String, extra: Option<(&'static str, String)>| {
        let addr = served.addr;
        async move {
            let mut headers = vec![form];
            let extra_owned;
            if let Some((k, v)) = extra {
                extra_owned = v;
                headers.push((k, extra_owned.as_str()));
                request(addr, "POST", "/actions/retry", &headers, &body).await
            } else {
                request(addr, "POST", "/actions/retry", &headers, &body).await
            }
        }
    };
    let no_token = post(format!("id={dead_id}&confirm=yes"), None).await;
    assert_eq!(no_token.status, 403);
    let wrong = post(format!("id={dead_id}&confirm=yes&token=00"), None).await;
    assert_eq!(wrong.status, 403);
    let unconfirmed = post(format!("id={dead_id}&token={token}"), None).await;
    assert_eq!(unconfirmed.status, 400);
    let cross = post(
        format!("id={dead_id}&confirm=yes&token={token}"),
        Some(("Origin", "http://evil.example".to_owned())),
    )
    .await;
    assert_eq!(cross.status, 403);
    assert!(cross.body.contains("cross-origin"));
    let still: i64 = raw
        .query_one("SELECT count(*) FROM mt_dead_letters", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(still, 1, "nothing refused changed anything");

    let done = post(
        format!("id={dead_id}&confirm=yes&token={token}"),
        Some(("Origin", format!("http://{}", served.addr))),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("is rebuilding"));
    assert!(
        done.body
            .contains("Cleared 1 dead letter(s) of OrderSummary"),
        "the rebuild cleared the one dead letter: {}",
        done.body
    );
    let left: i64 = raw
        .query_one("SELECT count(*) FROM mt_dead_letters", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the dead letter is cleared");
    let position: i64 = raw
        .query_one(
            "SELECT last_seq FROM mt_event_progression WHERE name = 'OrderSummary'",
            &[],
        )
        .await
        .expect("position")
        .get(0);
    assert_eq!(position, 0, "the projection was reset for its replay");
    // The replay meets the still-failing event again: dead-lettered anew.
    run_daemon(&store).await;
    let again: Vec<i64> = raw
        .query("SELECT id FROM mt_dead_letters", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], dead_id);
}

#[tokio::test]
async fn binding_off_loopback_needs_an_auth_hook() {
    let (_schema, store) = store("console_bind").await;
    let open = Console::builder(&store).build();
    match open.bind(([0, 0, 0, 0], 0).into()).await {
        Err(ConsoleError::NonLocalWithoutAuth { addr }) => assert!(addr.ip().is_unspecified()),
        other => panic!("expected NonLocalWithoutAuth, got {other:?}"),
    }
    let auth = axum::middleware::from_fn(
        |req: axum::extract::Request, next: axum::middleware::Next| async move {
            let allowed = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v == "Bearer let-me-in");
            if allowed {
                next.run(req).await
            } else {
                axum::response::IntoResponse::into_response(axum::http::StatusCode::UNAUTHORIZED)
            }
        },
    );
    let guarded = Console::builder(&store).auth(auth).build();
    let bound = match guarded.bind(([0, 0, 0, 0], 0).into()).await {
        Ok(b) => b,
        Err(e) => panic!("an auth hook allows any address: {e}"),
    };
    let port = bound.local_addr().expect("addr").port();
    let task = tokio::spawn(bound.serve());
    let addr = ([127, 0, 0, 1], port).into();
    assert_eq!(get(addr, "/streams").await.status, 401);
    let ok_resp = request(
        addr,
        "GET",
        "/streams",
        &[("Authorization", "Bearer let-me-in")],
        "",
    )
    .await;
    assert_eq!(ok_resp.status, 200);
    task.abort();
}

#[tokio::test]
async fn the_router_mounts_under_a_base_path() {
    let (_schema, store) = store("console_nest").await;
    let seeded = seed(&store, 1, 0).await;
    let console = console(&store).base_path("/ops/console").build();
    let app = axum::Router::new().nest("/ops/console", console.router());
    let served = serve_app(app).await;
    let addr = served.addr;
    let body = page(addr, "/ops/console/streams").await;
    assert!(body.contains(&format!(
        "href=\"/ops/console/streams/{}\"",
        seeded.plain[0]
    )));
    assert!(body.contains("href=\"/ops/console/assets/console.css\""));
    let css = get(addr, "/ops/console/assets/console.css").await;
    assert_eq!(css.status, 200);
    assert!(css.body.contains(".bar"));
    let root = get(addr, "/ops/console/").await;
    assert!(
        root.status == 303 || root.status == 308 || root.status == 307 || root.status == 404,
        "{}",
        root.status
    );
}

/// A conjoined document type: each tenant its own rows, the same ids.
#[derive(Document, serde::Serialize, serde::Deserialize, Clone, Debug)]
#[document(tenancy = "conjoined")]
struct Memo {
    id: i64,
    text: String,
}

#[tokio::test]
async fn conjoined_tenants_are_shown_apart() {
    let schema = marten_testing::TestSchema::new("console_conjoined");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .events_tenancy(marten::Tenancy::Conjoined)
        .event::<OrderPlaced>()
        .event::<OrderShipped>()
        .build()
        .await);
    // The same stream ids in two tenants: 150 tagged streams each (300 tagged events,
    // more than a chunk), stream `shared` with two events in acme and one in globex.
    let shared = Uuid::now_v7();
    let mut ids = vec![shared];
    ids.extend((1..150).map(|_| Uuid::now_v7()));
    for (tenant, events) in [("acme", 2), ("globex", 1)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        for (i, id) in ids.iter().enumerate() {
            let mut batch = vec![PendingEvent::new(OrderPlaced {
                customer: CustomerTag("c1".to_owned()),
                note: format!("{tenant} order {i}"),
            })];
            if events == 2 && i == 0 {
                batch.push(PendingEvent::new(OrderShipped {
                    carrier: format!("{tenant}-post"),
                }));
            }
            ok(s.events().append(*id, batch));
        }
        ok(s.store(Memo {
            id: 1,
            text: format!("memo of {tenant}"),
        }));
        ok(s.save_changes().await);
    }
    let console = console(&store)
        .document::<Memo>(|f| vec![QueryField::ordered(f.id)])
        .build();
    let served = serve(&console).await;
    let rows = |body: &str| body.matches("<tr><td><a").count();
    let id = shared.to_string();

    // The streams page: one row per tenant, each linking to its tenant's stream.
    let by_id = page(served.addr, &format!("/streams?id={id}")).await;
    assert_eq!(rows(&by_id), 2, "{by_id}");
    assert!(by_id.contains("<td>acme</td>") && by_id.contains("<td>globex</td>"));
    assert!(by_id.contains("tenant=acme") && by_id.contains("tenant=globex"));
    // Keyset pages by (tenant, id): 300 streams, 50 a page, never twice.
    let mut seen = std::collections::HashSet::new();
    let mut next = Some("/streams".to_owned());
    while let Some(path) = next {
        let body = page(served.addr, &path).await;
        for row in body.split("<tr><td><a").skip(1) {
            let tenant = if row.contains("<td>acme</td>") {
                "acme"
            } else {
                "globex"
            };
            let stream = row.split('>').nth(1).unwrap_or_default().split('<').next();
            assert!(
                seen.insert((tenant, stream.unwrap_or_default().to_owned())),
                "{tenant} {stream:?} twice"
            );
        }
        next = next_link(&body);
    }
    assert_eq!(seen.len(), 300);

    // A stream's events: each tenant's own, never the other's.
    let acme = page(served.addr, &format!("/streams/{id}?tenant=acme")).await;
    assert!(
        acme.contains("acme order 0") && acme.contains("acme-post"),
        "{acme}"
    );
    assert!(!acme.contains("globex"), "{acme}");
    let globex = page(served.addr, &format!("/streams/{id}?tenant=globex")).await;
    assert!(globex.contains("globex order 0"), "{globex}");
    assert!(!globex.contains("acme"), "{globex}");
    assert!(!globex.contains("<td>order_shipped</td>"));

    // The tag search, tenant by tenant: acme's 150 streams then 50 of globex's, then
    // globex's last 100.
    let first = page(served.addr, "/streams?tag_type=customer&tag_value=c1").await;
    assert_eq!(rows(&first), 200, "{first}");
    assert_eq!(first.matches("<td>acme</td>").count(), 150);
    let next = next_link(&first).expect("300 tagged events, two chunks");
    assert!(next.contains("after_tenant=globex"), "{next}");
    let second = page(served.addr, &next).await;
    assert_eq!(rows(&second), 100, "{second}");
    assert_eq!(second.matches("<td>globex</td>").count(), 100);
    assert!(next_link(&second).is_none());

    // Documents: a tenant's own, by the `tenant` parameter.
    let acme = page(served.addr, "/documents/Memo?tenant=acme").await;
    assert!(
        acme.contains("memo of acme") && !acme.contains("memo of globex"),
        "{acme}"
    );
    let globex = page(served.addr, "/documents/Memo?tenant=globex").await;
    assert!(globex.contains("memo of globex") && !globex.contains("memo of acme"));
    let bare = get(served.addr, "/documents/Memo").await;
    assert_eq!(bare.status, 400, "{}", bare.body);
    assert!(bare.body.contains("Memo is conjoined"), "{}", bare.body);
    assert!(
        !bare.body.contains("memo of"),
        "no tenant, no tenant's rows"
    );
    let form = page(served.addr, "/documents/Memo?tenant=acme").await;
    assert!(form.contains("name=\"tenant\" value=\"acme\""), "{form}");
}

/// The auth hook the tests give: `Authorization: Bearer let-me-in` or 401.
async fn bearer(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let allowed = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v == "Bearer let-me-in");
    if allowed {
        next.run(req).await
    } else {
        axum::response::IntoResponse::into_response(axum::http::StatusCode::UNAUTHORIZED)
    }
}

/// `GET path` with `Host: host` (and more headers).
async fn get_as(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    more: &[(&str, &str)],
) -> Response {
    let mut headers = vec![("Host", host)];
    headers.extend_from_slice(more);
    request(addr, "GET", path, &headers, "").await
}

/// DNS rebinding: a page of evil.example re-pointed at 127.0.0.1 sends `Host:
/// evil.example:PORT`. Without an auth hook every route refuses it (421, plain text, no
/// token), the actions too, with the token and a matching `Origin`; loopback names, with
/// or without the port, are served.
#[tokio::test]
async fn a_foreign_host_is_refused_on_every_route_without_auth() {
    let (schema, store) = store("console_hosts").await;
    seed(&store, 1, 0).await;
    run_daemon(&store).await;
    let raw = schema.raw_client().await;
    let dead_id: i64 = raw
        .query_one("SELECT id FROM mt_dead_letters", &[])
        .await
        .expect("one dead letter")
        .get(0);
    let console = console(&store).actions(true).build();
    let served = serve(&console).await;
    let port = served.addr.port();
    let token = console.action_token().to_owned();
    let evil = format!("evil.example:{port}");

    for host in [
        evil.as_str(),
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "127.0.0.2",
    ] {
        for path in [
            "/streams",
            "/",
            "/assets/console.js",
            "/projections.json",
            "/dead-letters",
            "/actions/confirm?action=rebuild&projection=OrderSummary",
            &format!("/actions/confirm?action=retry&id={dead_id}"),
            "/no-such-page",
        ] {
            let r = get_as(served.addr, host, path, &[]).await;
            assert_eq!(r.status, 421, "GET {path} as {host}: {}", r.body);
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("text/plain")),
                "{:?}",
                r.headers
            );
            assert!(r.body.contains("DNS rebinding"), "{}", r.body);
            assert!(!r.body.contains(&token), "the token leaks to {host}");
        }
    }
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let origin = format!("http://{evil}");
    for (path, body) in [
        (
            "/actions/rebuild",
            format!("projection=OrderSummary&confirm=yes&token={token}"),
        ),
        (
            "/actions/retry",
            format!("id={dead_id}&confirm=yes&token={token}"),
        ),
    ] {
        let r = request(
            served.addr,
            "POST",
            path,
            &[form, ("Host", evil.as_str()), ("Origin", origin.as_str())],
            &body,
        )
        .await;
        assert_eq!(r.status, 421, "POST {path} as {evil}: {}", r.body);
    }
    let dead: i64 = raw
        .query_one("SELECT count(*) FROM mt_dead_letters", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(dead, 1, "the refused retry cleared nothing");
    let last_seq: i64 = raw
        .query_one(
            "SELECT last_seq FROM mt_event_progression WHERE name = 'OrderSummary'",
            &[],
        )
        .await
        .expect("position")
        .get(0);
    assert!(last_seq > 0, "the refused rebuild reset nothing");

    let with_port = [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    let hosts = ["localhost", "LocalHost", "127.0.0.1", "[::1]"]
        .into_iter()
        .chain(with_port.iter().map(String::as_str));
    for host in hosts {
        let r = get_as(served.addr, host, "/streams", &[]).await;
        assert_eq!(r.status, 200, "GET /streams as {host}: {}", r.body);
        let css = get_as(served.addr, host, "/assets/console.css", &[]).await;
        assert_eq!(css.status, 200, "{host}");
        let confirm = get_as(
            served.addr,
            host,
            "/actions/confirm?action=rebuild&projection=OrderSummary",
            &[],
        )
        .await;
        assert_eq!(confirm.status, 200, "{host}: {}", confirm.body);
        assert!(confirm.body.contains(&token));
    }
    // An action from the console's own page on localhost.
    let local = format!("localhost:{port}");
    let origin = format!("http://{local}");
    let done = request(
        served.addr,
        "POST",
        "/actions/rebuild",
        &[form, ("Host", local.as_str()), ("Origin", origin.as_str())],
        &format!("projection=OrderSummary&confirm=yes&token={token}"),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("is rebuilding"));
}

/// The address `bind` was given is a name of the console too; the router mounted in a
/// service without an auth hook checks the `Host` as well.
#[tokio::test]
async fn the_bound_address_is_admitted_and_a_mounted_router_checks_the_host() {
    let (_schema, store) = store("console_hosts_bound").await;
    seed(&store, 1, 0).await;
    let on_two = console(&store).build();
    let bound = match on_two.bind(([127, 0, 0, 2], 0).into()).await {
        Ok(b) => b,
        Err(e) => panic!("bind 127.0.0.2: {e}"),
    };
    let addr = bound.local_addr().expect("addr");
    let task = tokio::spawn(bound.serve());
    let port = addr.port();
    assert_eq!(get(addr, "/streams").await.status, 200, "Host: {addr}");
    let other = format!("127.0.0.3:{port}");
    assert_eq!(get_as(addr, &other, "/streams", &[]).await.status, 421);
    assert_eq!(get_as(addr, "localhost", "/streams", &[]).await.status, 200);
    task.abort();

    let app = axum::Router::new().nest("/ops", console(&store).base_path("/ops").build().router());
    let served = serve_app(app).await;
    let addr = served.addr;
    assert_eq!(get(addr, "/ops/streams").await.status, 200);
    let evil = format!("evil.example:{}", addr.port());
    for path in ["/ops/streams", "/ops/assets/console.css", "/ops/nope"] {
        assert_eq!(get_as(addr, &evil, path, &[]).await.status, 421, "{path}");
    }
}

/// With an auth hook the console is exposed on purpose: any `Host` reaches the hook, unless
/// allowed hosts are listed, which turns the check on (loopback names still admitted).
#[tokio::test]
async fn with_an_auth_hook_the_host_is_checked_only_against_listed_hosts() {
    let (_schema, store) = store("console_hosts_auth").await;
    seed(&store, 1, 0).await;
    let creds = [("Authorization", "Bearer let-me-in")];

    let open = Console::builder(&store)
        .auth(axum::middleware::from_fn(bearer))
        .build();
    let served = serve(&open).await;
    let port = served.addr.port();
    let evil = format!("evil.example:{port}");
    let internal = format!("console.internal:{port}");
    assert_eq!(
        get_as(served.addr, &evil, "/streams", &[]).await.status,
        401
    );
    assert_eq!(
        get_as(served.addr, &evil, "/streams", &creds).await.status,
        200,
        "the hook decides"
    );
    drop(served);

    let listed = Console::builder(&store)
        .auth(axum::middleware::from_fn(bearer))
        .allowed_hosts(["console.internal", ".ops.example"])
        .build();
    let served = serve(&listed).await;
    let port = served.addr.port();
    let evil = format!("evil.example:{port}");
    let sub = format!("a.ops.example:{port}");
    assert_eq!(
        get_as(served.addr, &evil, "/streams", &creds).await.status,
        421
    );
    for host in [
        internal.as_str(),
        "console.internal",
        &sub,
        "ops.example",
        "localhost",
    ] {
        let r = get_as(served.addr, host, "/streams", &creds).await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        let r = get_as(served.addr, host, "/streams", &[]).await;
        assert_eq!(r.status, 401, "{host}: still behind the hook");
    }
    drop(served);

    // Without a hook, listed hosts are admitted besides loopback.
    let named = Console::builder(&store)
        .allowed_hosts(["console.internal"])
        .build();
    let served = serve(&named).await;
    assert_eq!(
        get_as(served.addr, "console.internal", "/streams", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get_as(served.addr, "evil.example", "/streams", &[])
            .await
            .status,
        421
    );
}

/// Every row of a paged list: follows "Next page" from `first`, returning each page.
async fn all_pages(addr: std::net::SocketAddr, first: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        assert!(pages.len() < 20, "runaway paging at {path}");
        let body = page(addr, &path).await;
        next = next_link(&body);
        pages.push(body);
    }
    pages
}

/// With conjoined events a tag has a row per tenant (`(tenant_id, tag_type, tag_value)`):
/// 52 rows, acme's c00..c25 and globex's c01..c26, where a (type, value) of both tenants
/// falls on the page boundary when ordered by type and value; every row is shown once.
#[tokio::test]
async fn the_tag_list_pages_by_the_whole_key_with_conjoined_tenants() {
    let schema = marten_testing::TestSchema::new("console_tags_conjoined");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .events_tenancy(marten::Tenancy::Conjoined)
        .event::<OrderPlaced>()
        .build()
        .await);
    let mut expected = std::collections::BTreeSet::new();
    for (tenant, values) in [("acme", 0..26), ("globex", 1..27)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        for i in values {
            let value = format!("c{i:02}");
            expected.insert((tenant.to_owned(), value.clone()));
            ok(s.events().append(
                Uuid::now_v7(),
                [OrderPlaced {
                    customer: CustomerTag(value),
                    note: String::new(),
                }],
            ));
        }
        ok(s.save_changes().await);
    }
    assert_eq!(expected.len(), 52);
    let console = Console::builder(&store).build();
    let served = serve(&console).await;
    let pages = all_pages(served.addr, "/tags").await;
    assert_eq!(pages.len(), 2, "52 rows, 50 a page");
    let mut seen = Vec::new();
    for body in &pages {
        for row in body.split("<tr><td>customer</td>").skip(1) {
            let value = row
                .split("\">")
                .nth(1)
                .and_then(|r| r.split('<').next())
                .unwrap_or_default();
            let tenant = row
                .split("</a></td><td>")
                .nth(1)
                .and_then(|r| r.split('<').next())
                .unwrap_or_default();
            seen.push((tenant.to_owned(), value.to_owned()));
        }
    }
    let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a row twice: {seen:?}");
    assert_eq!(unique, expected, "every (tenant, tag) once");
    let next = next_link(&pages[0]).expect("a second page");
    assert!(next.contains("after_tenant="), "{next}");
    // A cursor without its tenant cannot say where a conjoined list goes on.
    let old = get(served.addr, "/tags?after_type=customer&after_value=c24").await;
    assert_eq!(old.status, 400, "{}", old.body);
    assert!(old.body.contains("after_tenant"));
}

/// A single-tenant store's list of tags pages by the whole key too, and its links from
/// before the tenant was in the cursor (`after_type`, `after_value`) still work.
#[tokio::test]
async fn a_single_tenant_tag_list_keeps_its_cursor_links() {
    let (_schema, store) = store("console_tags_single").await;
    let mut s = store.lightweight_session();
    for i in 0..55 {
        ok(s.events().append(
            Uuid::now_v7(),
            [OrderPlaced {
                customer: CustomerTag(format!("c{i:02}")),
                note: String::new(),
            }],
        ));
    }
    ok(s.save_changes().await);
    let console = console(&store).build();
    let served = serve(&console).await;
    let pages = all_pages(served.addr, "/tags").await;
    let rows: usize = pages
        .iter()
        .map(|b| b.matches("<tr><td>customer</td>").count())
        .sum();
    assert_eq!(rows, 55);
    let old = page(served.addr, "/tags?after_type=customer&after_value=c50").await;
    assert_eq!(old.matches("<tr><td>customer</td>").count(), 4, "{old}");
    assert!(!old.contains(">c50</a>") && old.contains(">c51</a>"));
}

/// A text document id for the trimming test.
#[derive(Document, serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Note {
    id: String,
    text: String,
}

/// Ids with surrounding spaces: found as typed (a spaced id before the unspaced one),
/// found trimmed when the typed spaces match nothing, and the next page's cursor, kept
/// untrimmed, does not repeat the last row. Streams (text ids), documents (string ids)
/// and tags alike.
#[tokio::test]
async fn ids_with_spaces_are_found_and_paged_exactly() {
    let schema = marten_testing::TestSchema::new("console_spaced_ids");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .stream_identity(marten::StreamIdentity::String)
        .event::<OrderPlaced>()
        .build()
        .await);
    // "s000 ".."s059 " (each with a trailing space, so the first page's last row has
    // one whatever the collation), and two "padded" streams: one with spaces around,
    // one without.
    let mut ids: Vec<String> = (0..60).map(|i| format!("s{i:03} ")).collect();
    ids.push(" padded ".to_owned());
    ids.push("padded".to_owned());
    let mut s = store.lightweight_session();
    for id in &ids {
        let tag = if id.contains("padded") {
            id.clone()
        } else {
            "plain".to_owned()
        };
        ok(s.events().append(
            id.clone(),
            [OrderPlaced {
                customer: CustomerTag(tag),
                note: String::new(),
            }],
        ));
    }
    for i in 0..60 {
        ok(s.store(Note {
            id: format!("n{i:03} "),
            text: format!("note {i}"),
        }));
    }
    for (id, text) in [(" spaced ", "the spaced note"), ("plain", "the plain note")] {
        ok(s.store(Note {
            id: id.to_owned(),
            text: text.to_owned(),
        }));
    }
    ok(s.save_changes().await);
    let console = Console::builder(&store)
        .document::<Note>(|f| vec![QueryField::text(f.id)])
        .build();
    let served = serve(&console).await;
    let links = |body: &str| -> Vec<String> {
        body.split("<tr><td><a href=\"/streams/")
            .skip(1)
            .filter_map(|r| r.split('"').next())
            .map(str::to_owned)
            .collect()
    };

    // Streams: every id once across the pages.
    let pages = all_pages(served.addr, "/streams?type=").await;
    let seen: Vec<String> = pages.iter().flat_map(|b| links(b)).collect();
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a stream twice: {seen:?}");
    assert_eq!(seen.len(), 62);
    let next = next_link(&pages[0]).expect("a second page");
    assert!(next.ends_with("%20"), "the cursor keeps its space: {next}");
    // By id: exactly as typed, spaces included; trimmed when that finds nothing.
    let exact = page(served.addr, "/streams?id=%20padded%20").await;
    assert_eq!(links(&exact), ["%20padded%20"], "{exact}");
    let plain = page(served.addr, "/streams?id=padded").await;
    assert_eq!(links(&plain), ["padded"]);
    let typo = page(served.addr, "/streams?id=padded%20%20").await;
    assert_eq!(links(&typo), ["padded"], "tried trimmed: {typo}");
    let s049 = page(served.addr, "/streams?id=s049%20").await;
    assert_eq!(links(&s049), ["s049%20"]);
    let s049 = page(served.addr, "/streams?id=%20s049%20").await;
    assert!(links(&s049).is_empty(), "neither as typed nor trimmed");
    // By tag, and the tag's own page, as typed.
    let tagged = page(
        served.addr,
        "/streams?tag_type=customer&tag_value=%20padded%20",
    )
    .await;
    assert_eq!(links(&tagged), ["%20padded%20"], "{tagged}");
    let tag = page(served.addr, "/tags?type=customer&value=%20padded%20").await;
    assert_eq!(tag.matches("<td>order_placed</td>").count(), 1, "{tag}");
    assert!(tag.contains("href=\"/streams/%20padded%20\""), "{tag}");
    let list = page(served.addr, "/tags").await;
    assert!(
        list.contains("href=\"/tags?type=customer&amp;value=%20padded%20\""),
        "{list}"
    );

    // Documents: the cursor after "n0xx " goes on after it; the id found as typed.
    let pages = all_pages(served.addr, "/documents/Note").await;
    let rows: Vec<&str> = pages
        .iter()
        .flat_map(|b| b.split("<tr><td>").skip(1))
        .filter_map(|r| r.split("</td>").next())
        .collect();
    let unique: std::collections::HashSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "a document twice: {rows:?}");
    assert_eq!(rows.len(), 62);
    let next = next_link(&pages[0]).expect("a second page");
    assert!(next.ends_with("%20"), "the cursor keeps its space: {next}");
    let spaced = page(
        served.addr,
        "/documents/Note?field=id&op=eq&value=%20spaced%20",
    )
    .await;
    assert!(spaced.contains("the spaced note"), "{spaced}");
    let trimmed = page(served.addr, "/documents/Note?field=id&op=eq&value=plain%20").await;
    assert!(
        trimmed.contains("the plain note"),
        "tried trimmed: {trimmed}"
    );
    assert!(
        trimmed.contains("value (JSON or text)\" value=\"plain \""),
        "the box shows what was typed: {trimmed}"
    );
}

/// An async projection of conjoined events: each tenant projects its own documents; a
/// `boom` event fails its apply (a poison event, dead-lettered).
#[derive(Aggregate, serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[document(tenancy = "conjoined")]
struct TenantSummary {
    id: Uuid,
    version: i64,
    placed: i64,
}

#[marten::apply]
impl TenantSummary {
    fn apply_placed(&mut self, _e: &OrderPlaced) {
        self.placed += 1;
    }
    fn apply_boom(&mut self, _e: &Boom) -> Result<(), String> {
        Err("boom: the tenant summary cannot take this event".into())
    }
}

/// The `last_seq` of progression row `slot`.
async fn position(raw: &tokio_postgres::Client, slot: &str) -> i64 {
    raw.query_one(
        "SELECT last_seq FROM mt_event_progression WHERE name = $1",
        &[&slot],
    )
    .await
    .unwrap_or_else(|e| panic!("the progression row {slot}: {e}"))
    .get(0)
}

/// How many dead letters `tenant` has.
async fn dead_letters_of(raw: &tokio_postgres::Client, tenant: &str) -> i64 {
    raw.query_one(
        "SELECT count(*) FROM mt_dead_letters WHERE tenant_id = $1",
        &[&tenant],
    )
    .await
    .expect("count the dead letters")
    .get(0)
}

/// With conjoined events, retrying acme's dead letter rebuilds acme's slot alone: globex's
/// position and projected documents are untouched, and only acme's dead letters of the
/// event are cleared.
#[tokio::test]
async fn a_conjoined_retry_rebuilds_the_dead_letters_tenant_alone() {
    let schema = marten_testing::TestSchema::new("console_retry_conjoined");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .events_tenancy(marten::Tenancy::Conjoined)
        .event::<OrderPlaced>()
        .event::<Boom>()
        .projection::<TenantSummary>(Lifecycle::Async)
        .build()
        .await);
    let (acme_stream, globex_stream) = (Uuid::now_v7(), Uuid::now_v7());
    let placed = || OrderPlaced {
        customer: CustomerTag("c1".to_owned()),
        note: String::new(),
    };
    let mut s = ok(store.lightweight_session_for("acme"));
    ok(s.events()
        .append(acme_stream, [PendingEvent::new(placed())]));
    ok(s.events().append(acme_stream, [PendingEvent::new(Boom {})]));
    ok(s.save_changes().await);
    let mut s = ok(store.lightweight_session_for("globex"));
    ok(s.events().append(globex_stream, [placed(), placed()]));
    ok(s.save_changes().await);
    run_daemon(&store).await;

    let raw = schema.raw_client().await;
    let letter = raw
        .query_one("SELECT id, tenant_id, seq_id FROM mt_dead_letters", &[])
        .await
        .expect("one dead letter");
    let (dead_id, seq): (i64, i64) = (letter.get(0), letter.get(2));
    assert_eq!(letter.get::<_, String>(1), "acme");
    // A dead letter of the same event and projection under another tenant (by hand:
    // sequences are global): acme's retry must not clear it.
    raw.execute(
        "INSERT INTO mt_dead_letters (projection, seq_id, event_type, stream_id, error, tenant_id) \
         VALUES ('TenantSummary', $1, 'boom', 'x', 'by hand', 'globex')",
        &[&seq],
    )
    .await
    .expect("a globex dead letter");
    let globex_position = position(&raw, "TenantSummary@globex").await;
    assert!(globex_position > 0, "globex's slot advanced");
    assert!(position(&raw, "TenantSummary@acme").await > 0);
    let globex_doc = |store: DocumentStore| async move {
        let mut q = ok(store.query_session_for("globex"));
        let doc = ok(q.load::<TenantSummary>(&globex_stream).await);
        let modified =
            ok(q.metadata::<TenantSummary>(&globex_stream).await).map(|m| m.last_modified);
        (doc, modified)
    };
    let (globex_before, globex_modified) = globex_doc(store.clone()).await;
    assert_eq!(globex_before.as_ref().map(|d| d.placed), Some(2));

    let console = console(&store).actions(true).build();
    let served = serve(&console).await;
    let confirm = page(
        served.addr,
        &format!("/actions/confirm?action=retry&id={dead_id}"),
    )
    .await;
    assert!(
        confirm.contains("for tenant <b class=\"tenant\">acme</b>"),
        "the confirmation names the tenant: {confirm}"
    );
    let token = console.action_token().to_owned();
    let origin = format!("http://{}", served.addr);
    let done = request(
        served.addr,
        "POST",
        "/actions/retry",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", origin.as_str()),
        ],
        &format!("id={dead_id}&confirm=yes&token={token}"),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("is rebuilding"), "{}", done.body);
    assert!(
        done.body
            .contains("Cleared 1 dead letter(s) of TenantSummary for tenant acme"),
        "acme's one dead letter, not globex's: {}",
        done.body
    );

    assert_eq!(
        position(&raw, "TenantSummary@globex").await,
        globex_position,
        "globex's slot is not reset"
    );
    assert_eq!(
        globex_doc(store.clone()).await,
        (globex_before, globex_modified),
        "globex's document is neither deleted nor rewritten"
    );
    assert_eq!(
        position(&raw, "TenantSummary@acme").await,
        0,
        "acme's slot is reset"
    );
    let mut q = ok(store.query_session_for("acme"));
    assert_eq!(
        ok(q.load::<TenantSummary>(&acme_stream).await),
        None,
        "acme's document is deleted for the replay"
    );
    assert_eq!(dead_letters_of(&raw, "acme").await, 0, "acme's cleared");
    assert_eq!(dead_letters_of(&raw, "globex").await, 1, "globex's kept");

    // acme's replay projects its document again and dead-letters the poison anew.
    run_daemon(&store).await;
    let mut q = ok(store.query_session_for("acme"));
    let acme = ok(q.load::<TenantSummary>(&acme_stream).await);
    assert_eq!(acme.map(|d| d.placed), Some(1));
    assert_eq!(dead_letters_of(&raw, "acme").await, 1);
}

/// The `href` of each row of a conjoined tag list, with the row's tenant.
fn tag_links(list: &str) -> Vec<(String, String)> {
    list.split("<tr><td>customer</td><td><a href=\"")
        .skip(1)
        .map(|row| {
            let href = row
                .split('"')
                .next()
                .unwrap_or_default()
                .replace("&amp;", "&");
            let tenant = row
                .split("</a></td><td>")
                .nth(1)
                .and_then(|r| r.split('<').next())
                .unwrap_or_default();
            (tenant.to_owned(), href)
        })
        .collect()
}

/// With conjoined events, the same tag value in two tenants: the list links each row to
/// its tenant's tag page, which shows that tenant's version and events alone (paged with
/// the tenant kept); a tag page without its tenant is refused, not mixed.
#[tokio::test]
async fn a_conjoined_tag_page_is_one_tenants() {
    let schema = marten_testing::TestSchema::new("console_tag_page_conjoined");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .events_tenancy(marten::Tenancy::Conjoined)
        .event::<OrderPlaced>()
        .build()
        .await);
    for (tenant, count) in [("acme", 55), ("globex", 2)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        for i in 0..count {
            ok(s.events().append(
                Uuid::now_v7(),
                [OrderPlaced {
                    customer: CustomerTag("c1".to_owned()),
                    note: format!("{tenant} order {i}"),
                }],
            ));
        }
        ok(s.save_changes().await);
    }
    let console = Console::builder(&store).build();
    let served = serve(&console).await;
    let list = page(served.addr, "/tags").await;
    let links = tag_links(&list);
    assert_eq!(links.len(), 2, "{list}");
    let events = |body: &str| body.matches("<td>order_placed</td>").count();
    for (tenant, href) in &links {
        assert!(href.contains(&format!("tenant={tenant}")), "{href}");
        let (own, other, version, count) = match tenant.as_str() {
            "acme" => ("acme order", "globex", 55, 55),
            "globex" => ("globex order", "acme", 2, 2),
            t => panic!("a tenant {t}"),
        };
        let pages = all_pages(served.addr, href).await;
        let shown: usize = pages.iter().map(|b| events(b)).sum();
        assert_eq!(shown, count, "{tenant}'s events: {pages:?}");
        for body in &pages {
            assert!(body.contains(own), "{body}");
            assert!(
                !body.contains(other),
                "{tenant}'s page shows {other}: {body}"
            );
            assert_eq!(body.matches("class=\"tag-version\"").count(), 1, "{body}");
            assert!(
                body.contains(&format!("<dd class=\"tag-version\">{version}</dd>")),
                "{tenant}'s version: {body}"
            );
        }
        if let Some(first) = pages.first() {
            if let Some(next) = next_link(first) {
                assert!(next.contains(&format!("tenant={tenant}")), "{next}");
            }
        }
    }
    let direct = page(served.addr, "/tags?type=customer&value=c1&tenant=globex").await;
    assert_eq!(events(&direct), 2, "{direct}");
    assert!(!direct.contains("acme"), "{direct}");
    let bare = get(served.addr, "/tags?type=customer&value=c1").await;
    assert_eq!(bare.status, 400, "{}", bare.body);
    assert!(
        !bare.body.contains(" order "),
        "no tenant, no events: {}",
        bare.body
    );
}

/// Asserts `r` forbids framing and sniffing.
#[track_caller]
fn assert_unframeable(r: &Response, what: &str) {
    assert_eq!(
        r.header("x-frame-options"),
        Some("DENY"),
        "{what}: {:?}",
        r.headers
    );
    assert_eq!(
        r.header("content-security-policy"),
        Some("frame-ancestors 'none'"),
        "{what}: {:?}",
        r.headers
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: {:?}",
        r.headers
    );
}

/// Clickjacking: a hostile page must not frame the confirmation page of an action (its
/// form carries the token; one click on "Yes, do it" would rebuild). Every response, bound
/// or mounted, pages, assets, errors and refusals alike, forbids framing.
#[tokio::test]
async fn every_response_forbids_framing() {
    let (_schema, store) = store("console_frames").await;
    seed(&store, 1, 0).await;
    let bound = console(&store).actions(true).build();
    let served = serve(&bound).await;
    let confirm_path = "/actions/confirm?action=rebuild&projection=OrderSummary";
    let confirm = get(served.addr, confirm_path).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("Yes, do it"), "{}", confirm.body);
    assert_unframeable(&confirm, confirm_path);
    for path in [
        "/streams",
        "/projections",
        "/projections.json",
        "/projections/lag.svg",
        "/assets/console.js",
        "/assets/console.css",
        "/no-such-page",
        "/",
    ] {
        assert_unframeable(&get(served.addr, path).await, path);
    }
    let refused = get_as(served.addr, "evil.example", confirm_path, &[]).await;
    assert_eq!(refused.status, 421);
    assert_unframeable(&refused, "a refused Host");

    let mounted = console(&store).actions(true).base_path("/c").build();
    let app = axum::Router::new().nest("/c", mounted.router());
    let served = serve_app(app).await;
    let confirm = get(served.addr, &format!("/c{confirm_path}")).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert_unframeable(&confirm, "mounted confirmation page");
    assert_unframeable(&get(served.addr, "/c/streams").await, "mounted page");
}

/// The base path is normalised (`console`, `/console/`, `/`), whether given to the
/// builder or in the options: bound and mounted consoles serve and link right; a path
/// that is not one is refused with a typed error, never a panic.
#[tokio::test]
async fn base_paths_are_normalised_and_bad_ones_refused() {
    let (_schema, store) = store("console_base_paths").await;
    let seeded = seed(&store, 1, 0).await;
    let with_base = |path: &str| {
        let mut o = marten_console::ConsoleOptions::default();
        o.base_path = path.to_owned();
        console(&store).options(o)
    };
    let cases = [
        (console(&store).base_path("console"), "/console"),
        (console(&store).base_path("/console/"), "/console"),
        (with_base("ops/console/"), "/ops/console"),
        (with_base("/"), ""),
        (console(&store).base_path("/"), ""),
    ];
    let stream = seeded.plain[0].to_string();
    let check = |body: &str, base: &str| {
        assert!(
            body.contains(&format!("href=\"{base}/streams/{stream}\"")),
            "{base}: {body}"
        );
        assert!(
            body.contains(&format!("href=\"{base}/projections\"")),
            "{base}: {body}"
        );
        assert!(!body.contains("href=\"//"), "{base}: {body}");
        assert!(!body.contains(&format!("{base}//")), "{base}: {body}");
    };
    for (builder, base) in cases {
        let c = builder.build();
        let bound = match c.bind(([127, 0, 0, 1], 0).into()).await {
            Ok(b) => b,
            Err(e) => panic!("bind with base {base:?}: {e}"),
        };
        let url = bound.url().expect("url");
        assert!(url.ends_with(&format!("{base}/")), "{url}");
        assert!(!url.ends_with("//"), "{url}");
        let addr = bound.local_addr().expect("addr");
        let task = tokio::spawn(bound.serve());
        check(&page(addr, &format!("{base}/streams")).await, base);
        task.abort();

        let app = if base.is_empty() {
            c.router()
        } else {
            axum::Router::new().nest(base, c.router())
        };
        let served = serve_app(app).await;
        check(&page(served.addr, &format!("{base}/streams")).await, base);
    }

    for bad in [
        "/con sole",
        "/console?x=1",
        "/console#top",
        "/a/../b",
        "/{x}",
    ] {
        match console(&store).base_path(bad).try_build() {
            Err(ConsoleError::InvalidBasePath { path, reason }) => {
                assert_eq!(path, bad);
                assert!(!reason.is_empty());
            }
            other => panic!("{bad:?}: expected InvalidBasePath, got {other:?}"),
        }
        let c = console(&store).base_path(bad).build();
        match c.bind(([127, 0, 0, 1], 0).into()).await {
            Err(ConsoleError::InvalidBasePath { path, .. }) => assert_eq!(path, bad),
            other => panic!("{bad:?}: expected InvalidBasePath, got {other:?}"),
        }
        let served = serve_app(axum::Router::new().nest("/x", c.router())).await;
        let r = get(served.addr, "/x/streams").await;
        assert_eq!(r.status, 500, "{}", r.body);
        assert!(r.body.contains("invalid console base path"), "{}", r.body);
    }
}

/// A rebuild the store refuses is the request's fault (an unknown projection: 404, and
/// nothing changes); a store that cannot be reached is the server's (5xx), not a bad
/// request, and a documents page does not query it twice.
#[tokio::test]
async fn refused_rebuilds_are_4xx_and_an_unreachable_store_5xx() {
    let schema = marten_testing::TestSchema::new("console_statuses");
    let proxy = marten_testing::FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url_via_addr(proxy.addr()))
        .schema(schema.name())
        .pool_wait_timeout(std::time::Duration::from_secs(2))
        .request_timeout(Some(std::time::Duration::from_secs(2)))
        .event::<OrderPlaced>()
        .event::<OrderShipped>()
        .event::<Boom>()
        .projection::<OrderSummary>(Lifecycle::Async)
        .build()
        .await);
    seed(&store, 1, 10).await;
    let console = console(&store).actions(true).build();
    let served = serve(&console).await;
    let token = console.action_token().to_owned();
    let rebuild = request(
        served.addr,
        "POST",
        "/actions/rebuild",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("projection=Nope&confirm=yes&token={token}"),
    )
    .await;
    assert_eq!(rebuild.status, 404, "{}", rebuild.body);
    assert!(
        rebuild.body.contains("no async projection named Nope"),
        "{}",
        rebuild.body
    );
    let docs = "/documents/Invoice?field=customer&op=eq&value=acme";
    assert_eq!(get(served.addr, docs).await.status, 200);

    drop(proxy);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for path in [docs, "/documents/Invoice", "/streams"] {
        let r = get(served.addr, path).await;
        assert!(
            (500..600).contains(&r.status),
            "{path} with the database unreachable: {} {}",
            r.status,
            r.body
        );
    }
}

/// Thousands of slots (conjoined events: one per projection and tenant): the chart
/// draws the few that lag most and counts the others; the table is paged by slot name.
#[tokio::test]
async fn thousands_of_slots_are_charted_and_listed_within_bounds() {
    let (schema, store) = store("console_many_slots").await;
    seed(&store, 2, 0).await;
    ok(store.projection_status().await);
    let raw = schema.raw_client().await;
    raw.batch_execute(
        "INSERT INTO mt_event_progression (name, tenant_id, last_tx, last_seq) \
         SELECT 'P@t' || lpad(i::text, 4, '0'), 't' || i, '0'::xid8, i % 5 \
         FROM generate_series(1, 2000) i",
    )
    .await
    .expect("2000 slots");
    let console = console(&store)
        .options({
            let mut o = marten_console::ConsoleOptions::default();
            o.sample_every = std::time::Duration::from_millis(50);
            o
        })
        .build();
    let served = serve(&console).await;
    let start = std::time::Instant::now();
    let chart = loop {
        let chart = get(served.addr, "/projections/lag.svg").await;
        assert_eq!(chart.status, 200);
        if chart.body.contains("<polyline") {
            break chart.body;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "sampled: {}",
            chart.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let lines = chart.matches("<polyline").count();
    assert!((1..=10).contains(&lines), "{lines} lines");
    assert!(
        chart.contains(&format!("+{} more", 2000 - lines)),
        "{chart}"
    );

    let slot_rows = |body: &str| -> Vec<String> {
        body.split("<tr data-slot=\"")
            .skip(1)
            .filter_map(|r| r.split('"').next())
            .map(str::to_owned)
            .collect()
    };
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    let mut next = Some("/projections".to_owned());
    while let Some(path) = next {
        let body = page(served.addr, &path).await;
        let rows = slot_rows(&body);
        assert!(rows.len() <= 200, "{} rows on {path}", rows.len());
        for r in rows {
            assert!(seen.insert(r.clone()), "{r} twice");
        }
        pages += 1;
        if let Some(after) = path.strip_prefix("/projections?after=") {
            assert!(
                body.contains(&format!("data-live=\"/projections.json?after={after}\"")),
                "the live data is the page's: {body}"
            );
        }
        next = next_link(&body);
        if let Some(n) = &next {
            assert!(n.starts_with("/projections?after="), "{n}");
        }
    }
    assert_eq!(seen.len(), 2000);
    assert_eq!(pages, 10);
    let live = get(served.addr, "/projections.json?after=P%40t1990").await;
    let json: serde_json::Value = serde_json::from_str(&live.body).expect("JSON");
    assert_eq!(json["slots"].as_array().map(Vec::len), Some(10), "{json}");
}

/// Mounted without an auth hook, the console answers the machine it runs on only, as a
/// console bound to loopback does: a peer that is not loopback is refused (403) whatever
/// `Host` it sends, an app served without the peer's address is told how to serve it
/// (500); an auth hook decides instead.
#[tokio::test]
async fn a_mounted_router_without_auth_answers_loopback_peers_only() {
    use axum::extract::connect_info::MockConnectInfo;
    let (_schema, store) = store("console_peers").await;
    seed(&store, 1, 0).await;
    let console = console(&store).actions(true).base_path("/ops").build();
    let token = console.action_token().to_owned();
    let remote = std::net::SocketAddr::from(([10, 0, 0, 5], 40000));

    let served = serve_app(axum::Router::new().nest("/ops", console.router())).await;
    assert_eq!(get(served.addr, "/ops/streams").await.status, 200);

    let app = axum::Router::new()
        .nest("/ops", console.router())
        .layer(MockConnectInfo(remote));
    let served = serve_app_without_peer(app).await;
    for path in [
        "/ops/streams",
        "/ops/actions/confirm?action=rebuild&projection=OrderSummary",
        "/ops/nope",
    ] {
        let r = get_as(served.addr, "localhost", path, &[]).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(
            r.body.contains("ConsoleBuilder::auth") && r.body.contains("Console::bind"),
            "{}",
            r.body
        );
        assert!(!r.body.contains(&token));
    }

    let served = serve_app_without_peer(axum::Router::new().nest("/ops", console.router())).await;
    let r = get(served.addr, "/ops/streams").await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("into_make_service_with_connect_info"),
        "{}",
        r.body
    );

    let guarded = Console::builder(&store)
        .base_path("/ops")
        .auth(axum::middleware::from_fn(bearer))
        .build();
    let app = axum::Router::new()
        .nest("/ops", guarded.router())
        .layer(MockConnectInfo(remote));
    let served = serve_app_without_peer(app).await;
    let creds = [("Authorization", "Bearer let-me-in")];
    let host = "console.example";
    assert_eq!(
        get_as(served.addr, host, "/ops/streams", &[]).await.status,
        401
    );
    assert_eq!(
        get_as(served.addr, host, "/ops/streams", &creds)
            .await
            .status,
        200
    );
}
