//! Bad input: undeserializable rows, hostile ids, empty ids, a connection dropped
//! mid-save. Every case is a typed error and loses nothing already committed.

mod common;

use std::time::Duration;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Page {
    id: String,
    title: String,
    views: u32,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Order {
    id: Uuid,
    total: i64,
}

#[tokio::test]
async fn a_row_that_no_longer_deserializes_names_type_id_and_cause() {
    let (schema, b) = builder("bad_json");
    let store = ok(b.document::<Page>().build().await);
    let mut s = store.lightweight_session();
    ok(s.store(Page {
        id: "home".into(),
        title: "Home".into(),
        views: 1,
    }));
    ok(s.save_changes().await);
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_doc_page SET data = jsonb_set(data, '{views}', '\"many\"') WHERE id = 'home'",
            &[],
        )
        .await
        .expect("corrupt");
    let err = s
        .load::<Page>(&"home".to_owned())
        .await
        .expect_err("bad json");
    match &err {
        marten::Error::Deserialize {
            document_type,
            id,
            source,
        } => {
            assert_eq!(*document_type, "Page");
            assert_eq!(id, "home");
            assert!(source.to_string().contains("invalid type"), "{source}");
        }
        other => panic!("wrong error {other}"),
    }
    assert!(
        err.to_string().contains("Page") && err.to_string().contains("home"),
        "{err}"
    );
}

#[tokio::test]
async fn hostile_ids_round_trip() {
    let (schema, b) = builder("bad_ids");
    let store = ok(b.document::<Page>().build().await);
    let ids = [
        "it's",
        "back\\slash",
        "\"quoted\"",
        "'; DROP TABLE mt_doc_page; --",
        "ünïcødé ✓ 日本",
        "$1",
        "%s %n",
        " leading and trailing ",
        "new\nline",
    ];
    let mut s = store.lightweight_session();
    for (i, id) in ids.iter().enumerate() {
        ok(s.store(Page {
            id: (*id).to_owned(),
            title: format!("t{i}"),
            views: i as u32,
        }));
    }
    ok(s.save_changes().await);
    for (i, id) in ids.iter().enumerate() {
        let page: Page =
            ok(s.load(&(*id).to_owned()).await).unwrap_or_else(|| panic!("{id:?} missing"));
        assert_eq!(page.title, format!("t{i}"));
    }
    let many: Vec<Page> = ok(s
        .load_many(&ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .await);
    assert_eq!(many.len(), ids.len());
    let n: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT count(*) FROM mt_doc_page", &[])
        .await
        .expect("table still there")
        .get(0);
    assert_eq!(n, ids.len() as i64);
}

#[tokio::test]
async fn an_empty_string_id_is_a_clear_error() {
    let (_schema, b) = builder("bad_empty_id");
    let store = ok(b.document::<Page>().build().await);
    let mut s = store.lightweight_session();
    let err = s
        .store(Page {
            id: String::new(),
            title: "x".into(),
            views: 0,
        })
        .expect_err("empty id");
    match &err {
        marten::Error::InvalidId {
            document_type,
            reason,
            ..
        } => {
            assert_eq!(*document_type, "Page");
            assert!(reason.contains("empty"));
        }
        other => panic!("wrong error {other}"),
    }
    assert_eq!(s.pending_changes(), 0);
    let err = s.load::<Page>(&String::new()).await.expect_err("empty id");
    assert!(matches!(err, marten::Error::InvalidId { .. }));
}

#[tokio::test]
async fn a_connection_dropped_mid_save_is_an_error_and_writes_nothing() {
    let (schema, b) = builder("bad_dropped");
    let store = ok(b.document::<Order>().build().await);
    let blocker_id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.store(Order {
        id: blocker_id,
        total: 1,
    }));
    ok(s.save_changes().await);

    // Another connection holds the row lock of one document of the batch, so the save
    // blocks after writing the others.
    let locker = schema.raw_client().await;
    locker.batch_execute("BEGIN").await.expect("begin");
    locker
        .execute(
            "SELECT 1 FROM mt_doc_order WHERE id = $1 FOR UPDATE",
            &[&blocker_id],
        )
        .await
        .expect("lock");

    let fresh: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    let saver = {
        let store = store.clone();
        let fresh = fresh.clone();
        tokio::spawn(async move {
            let mut s = store.lightweight_session();
            for id in &fresh {
                s.store(Order { id: *id, total: 5 })?;
            }
            s.store(Order {
                id: blocker_id,
                total: 99,
            })?;
            s.save_changes().await
        })
    };
    // Wait until the saver is blocked on the lock, then kill its backend.
    let killer = schema.raw_client().await;
    let mut killed = 0;
    for _ in 0..100 {
        killed = killer
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'marten' AND wait_event_type = 'Lock' AND datname = current_database() \
                 AND query LIKE '%mt_doc_order%'",
                &[],
            )
            .await
            .expect("terminate")
            .get::<_, i64>(0);
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(killed, 1, "the saver was seen blocked and killed");
    let err = saver.await.expect("task").expect_err("connection dropped");
    assert!(matches!(err, marten::Error::Connection(_)), "{err:?}");
    locker.batch_execute("ROLLBACK").await.expect("rollback");

    let n: i64 = killer
        .query_one(
            "SELECT count(*) FROM mt_doc_order WHERE id = ANY($1)",
            &[&fresh],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "nothing of the killed batch was committed");
    let total: i64 = killer
        .query_one(
            "SELECT (data->>'total')::bigint FROM mt_doc_order WHERE id = $1",
            &[&blocker_id],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(total, 1, "the committed document is intact");

    // The store recovers: the next session gets a healthy connection.
    let mut s = store.lightweight_session();
    ok(s.store(Order {
        id: Uuid::now_v7(),
        total: 3,
    }));
    ok(s.save_changes().await);
}

// ---------------------------------------------------------------------------------------
// NUL characters, hostile and long values, corrupt stored data, huge timeouts.
// ---------------------------------------------------------------------------------------

use std::collections::BTreeMap;

use marten::{Lifecycle, PendingEvent, StreamIdentity, TagQuery};

/// A document with a map, so a NUL can sit in a key.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Profile {
    id: String,
    title: String,
    meta: BTreeMap<String, String>,
}

fn profile(id: &str, title: &str) -> Profile {
    Profile {
        id: id.to_owned(),
        title: title.to_owned(),
        meta: BTreeMap::new(),
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Said {
    text: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Topical {
    #[tag(name = "topic")]
    topic: String,
}

/// The state of a boundary over `Topical` events.
#[derive(Default, Debug)]
struct TopicSeen {
    seen: usize,
}

#[marten::apply]
impl TopicSeen {
    fn apply(&mut self, _e: &Topical) {
        self.seen += 1;
    }
}

/// An inline aggregate over `Said`.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Chat {
    id: Uuid,
    version: i64,
    lines: Vec<String>,
}

#[marten::apply]
impl Chat {
    fn apply_said(&mut self, e: &Said) {
        self.lines.push(e.text.clone());
    }
}

/// A multi-stream document: every `Said` of every stream, under its text's first word.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Words {
    id: String,
    count: u32,
}

#[marten::apply]
impl Words {
    fn identity(e: &Said) -> String {
        e.text.split(' ').next().unwrap_or("none").to_owned()
    }

    fn create(_e: &Said) -> Self {
        Words {
            id: String::new(),
            count: 1,
        }
    }

    fn apply(&mut self, _e: &Said) {
        self.count += 1;
    }
}

/// The number of rows of `table`, read on a raw connection.
async fn rows(schema: &marten_testing::TestSchema, table: &str) -> i64 {
    schema
        .raw_client()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

/// 10 KB that does not compress (so PostgreSQL cannot squeeze it into an index).
fn incompressible_10k() -> String {
    (0..320)
        .map(|_| Uuid::new_v4().simple().to_string())
        .collect()
}

#[track_caller]
fn assert_invalid_input(
    err: &marten::Error,
    want_owner: &str,
    want_id: Option<&str>,
    want_field: &str,
) {
    match err {
        marten::Error::InvalidInput {
            owner,
            id,
            field,
            reason,
        } => {
            assert_eq!(owner, want_owner, "{err}");
            assert_eq!(id.as_deref(), want_id, "{err}");
            assert_eq!(field, want_field, "{err}");
            assert!(reason.contains("NUL"), "{err}");
        }
        other => panic!("wrong error: {other} ({other:?})"),
    }
}

#[tokio::test]
async fn a_nul_in_a_string_document_id_is_refused_before_sending() {
    let (schema, b) = builder("nul_doc_id");
    let store = ok(b.document::<Profile>().build().await);
    let mut s = store.lightweight_session();
    let err = s.store(profile("a\0b", "x")).expect_err("nul id");
    assert!(
        matches!(&err, marten::Error::InvalidId { document_type: "Profile", reason, .. } if reason.contains("NUL")),
        "{err:?}"
    );
    let err = s
        .load::<Profile>(&"a\0b".to_owned())
        .await
        .expect_err("nul id");
    assert!(matches!(err, marten::Error::InvalidId { .. }), "{err:?}");
    let err = s.delete::<Profile>(&"a\0b".to_owned()).expect_err("nul id");
    assert!(matches!(err, marten::Error::InvalidId { .. }), "{err:?}");
    assert_eq!(s.pending_changes(), 0);
    ok(s.save_changes().await);
    assert_eq!(rows(&schema, "mt_doc_profile").await, 0);
}

#[tokio::test]
async fn a_nul_in_a_document_field_or_map_key_names_type_id_and_field() {
    let (schema, b) = builder("nul_doc_field");
    let store = ok(b.document::<Profile>().build().await);
    let mut s = store.lightweight_session();
    let err = s.store(profile("p1", "bad\0title")).expect_err("nul field");
    assert_invalid_input(&err, "Profile", Some("p1"), "title");
    assert!(
        err.to_string().contains("Profile") && err.to_string().contains("p1"),
        "{err}"
    );

    let mut p = profile("p2", "fine");
    p.meta.insert("ok".into(), "fine".into());
    p.meta.insert("k\0ey".into(), "v".into());
    let err = s.insert(p).expect_err("nul key");
    assert_invalid_input(&err, "Profile", Some("p2"), r#"meta["k\0ey"] (key)"#);

    let mut p = profile("p3", "fine");
    p.meta.insert("lang".into(), "\0".into());
    let err = s.update(p).expect_err("nul value");
    assert_invalid_input(&err, "Profile", Some("p3"), "meta.lang");

    // The text `\u0000` (a backslash and five characters) is no NUL and round-trips.
    ok(s.store(profile("p4", "\\u0000 and \\\\u0000")));
    assert_eq!(s.pending_changes(), 1, "only the good document is queued");
    ok(s.save_changes().await);
    let back = ok(s.load::<Profile>(&"p4".to_owned()).await).expect("p4");
    assert_eq!(back.title, "\\u0000 and \\\\u0000");
    assert_eq!(rows(&schema, "mt_doc_profile").await, 1);
}

#[tokio::test]
async fn one_bad_document_among_good_ones_fails_the_whole_save_and_writes_nothing() {
    let (schema, b) = builder("nul_doc_batch");
    let store = ok(b.document::<Profile>().build().await);
    let mut seed = store.lightweight_session();
    for id in ["a", "b", "c"] {
        ok(seed.store(profile(id, "original")));
    }
    ok(seed.save_changes().await);

    let mut s = store.dirty_tracked_session();
    let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    for doc in ok(s.load_many::<Profile>(&ids).await) {
        doc.title = if doc.id == "b" {
            "poisoned\0".to_owned()
        } else {
            "changed".to_owned()
        };
    }
    let err = s.save_changes().await.expect_err("one bad document");
    assert_invalid_input(&err, "Profile", Some("b"), "title");
    let titles: Vec<String> = schema
        .raw_client()
        .await
        .query("SELECT data->>'title' FROM mt_doc_profile ORDER BY id", &[])
        .await
        .expect("titles")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        titles,
        ["original", "original", "original"],
        "nothing written"
    );
}

#[tokio::test]
async fn a_nul_anywhere_in_an_event_is_refused_before_sending() {
    let (schema, b) = builder("nul_events");
    let store = ok(b.stream_identity(StreamIdentity::String).build().await);
    let said = |t: &str| Said { text: t.to_owned() };
    let mut s = store.lightweight_session();

    let err = s
        .events()
        .append("s\0tream", [said("hi")])
        .expect_err("stream id");
    assert!(
        matches!(&err, marten::Error::InvalidStreamId { reason, .. } if reason.contains("NUL")),
        "{err:?}"
    );
    let err = s
        .events()
        .append("s1", [said("ok"), said("h\0i")])
        .expect_err("data");
    assert_invalid_input(&err, "event said", Some("\"s1\""), "text");
    let err = s
        .events()
        .append(
            "s1",
            [PendingEvent::new(said("ok")).with_header("k\0", "v")],
        )
        .expect_err("header key");
    assert_invalid_input(
        &err,
        "event said",
        Some("\"s1\""),
        r#"header ["k\0"] (key)"#,
    );
    let err = s
        .events()
        .append(
            "s1",
            [PendingEvent::new(said("ok")).with_header("ip", "1\0")],
        )
        .expect_err("header value");
    assert_invalid_input(&err, "event said", Some("\"s1\""), "header ip");
    let err = s
        .events()
        .append(
            "s1",
            [PendingEvent::new(said("ok")).with_correlation_id("c\0")],
        )
        .expect_err("correlation id");
    assert_invalid_input(&err, "event said", Some("\"s1\""), "correlation id");
    let err = s
        .events()
        .append(
            "s1",
            [PendingEvent::new(said("ok")).with_causation_id("\0")],
        )
        .expect_err("causation id");
    assert_invalid_input(&err, "event said", Some("\"s1\""), "causation id");
    let err = s
        .events()
        .append(
            "s1",
            [Topical {
                topic: "t\0".into(),
            }],
        )
        .expect_err("tag value");
    // The tag's value is a field of the event: the event's data names it first.
    assert_invalid_input(&err, "event topical", Some("\"s1\""), "topic");
    let err = s
        .events()
        .start_stream_of("Ag\0g", "s1", [said("ok")])
        .expect_err("aggregate type");
    assert_invalid_input(&err, "stream", Some("\"s1\""), "aggregate type");

    // Session metadata is checked when it is stamped on an event.
    let mut other = store.lightweight_session();
    other.set_header("who\0", "me");
    let err = other
        .events()
        .append("s1", [said("ok")])
        .expect_err("session header");
    assert_invalid_input(
        &err,
        "event said",
        Some("\"s1\""),
        r#"header ["who\0"] (key)"#,
    );
    assert_eq!(other.pending_changes(), 0);

    assert_eq!(s.pending_changes(), 0, "nothing was queued");
    ok(s.save_changes().await);

    // A boundary query with a NUL tag is refused too.
    let err = s
        .events()
        .fetch_for_writing_by_tags::<TopicSeen>(TagQuery::new().tag_named("topic", "x\0"))
        .await
        .err()
        .expect("nul tag query");
    assert_invalid_input(&err, "tag \"topic\"", None, "value");

    ok(s.events().append("s1", [said("after")]));
    ok(s.save_changes().await);
    for table in ["mt_events", "mt_streams"] {
        assert_eq!(rows(&schema, table).await, 1, "{table}");
    }
    assert_eq!(rows(&schema, "mt_tag_versions").await, 0);
}

#[tokio::test]
async fn a_query_value_with_a_nul_is_refused_before_sending() {
    let (_schema, b) = builder("nul_query");
    let store = ok(b.document::<Profile>().build().await);
    let mut s = store.query_session();
    let err = s
        .query::<Profile>()
        .filter(|f| f.title.eq("a\0"))
        .to_list()
        .await
        .expect_err("nul value");
    assert!(
        matches!(&err, marten::Error::InvalidQuery(m) if m.contains("NUL")),
        "{err:?}"
    );
    let err = s
        .query::<Profile>()
        .where_sql(
            "d.data->>'title' = $1::text",
            vec![marten::query::RawParam::Text("\0".into())],
        )
        .count()
        .await
        .expect_err("nul raw value");
    assert!(
        matches!(&err, marten::Error::InvalidQuery(m) if m.contains("NUL")),
        "{err:?}"
    );
}

#[tokio::test]
async fn hostile_stream_ids_tags_headers_and_metadata_round_trip() {
    let (_schema, b) = builder("hostile_events");
    let store = ok(b.stream_identity(StreamIdentity::String).build().await);
    let long = "ü".repeat(5 * 1024); // 10 KB, fine where nothing is indexed
    let hostile = [
        "it's",
        "back\\slash",
        "\"quoted\"",
        "$1",
        "'; DROP TABLE mt_events; --",
        "a;b",
        "ünïcødé ✓ 日本 🎉",
        "\\u0000",
        " ",
    ];
    let mut s = store.lightweight_session();
    for (i, h) in hostile.iter().enumerate() {
        ok(s.events().append(
            *h,
            [PendingEvent::new(Topical {
                topic: (*h).to_owned(),
            })
            .with_header(*h, *h)
            .with_header("", "empty key")
            .with_correlation_id(*h)
            .with_causation_id(long.clone())],
        ));
        let _ = i;
    }
    ok(s.save_changes().await);
    for h in hostile {
        let events = ok(s.events().fetch_stream(h).await);
        assert_eq!(events.len(), 1, "{h:?}");
        let e = &events[0];
        let mut headers = serde_json::Map::new();
        headers.insert(h.to_owned(), h.into());
        headers.insert(String::new(), "empty key".into());
        assert_eq!(e.stream_id, StreamId::String(h.to_owned()));
        assert_eq!(e.data_as::<Topical>().map(|t| t.topic.as_str()), Some(h));
        assert_eq!(e.correlation_id.as_deref(), Some(h));
        assert_eq!(e.causation_id.as_deref(), Some(long.as_str()));
        assert_eq!(e.headers, Some(serde_json::Value::Object(headers)), "{h:?}");
        let b = ok(s
            .events()
            .fetch_for_writing_by_tags::<TopicSeen>(TagQuery::new().tag_named("topic", h))
            .await);
        assert_eq!(b.events().len(), 1, "{h:?}");
        assert_eq!(b.versions()[0].1, 1, "{h:?}");
    }
}

#[tokio::test]
async fn empty_and_oversized_keys_are_typed_errors() {
    let (schema, b) = builder("long_keys");
    let store = ok(b
        .document::<Profile>()
        .stream_identity(StreamIdentity::String)
        .build()
        .await);
    let big = incompressible_10k();
    let mut s = store.lightweight_session();
    let err = s.store(profile(&big, "x")).expect_err("10 KB id");
    assert!(
        matches!(&err, marten::Error::InvalidId { reason, .. } if reason.contains("2048")),
        "{err:?}"
    );
    let err = s
        .events()
        .append(big.as_str(), [Said { text: "x".into() }])
        .expect_err("10 KB stream");
    assert!(
        matches!(&err, marten::Error::InvalidStreamId { reason, .. } if reason.contains("2048")),
        "{err:?}"
    );
    let err = s
        .events()
        .append("", [Said { text: "x".into() }])
        .expect_err("empty stream");
    assert!(
        matches!(&err, marten::Error::InvalidStreamId { .. }),
        "{err:?}"
    );
    for (value, why) in [(big.as_str(), "1024"), ("", "empty")] {
        let err = s
            .events()
            .append(
                "s",
                [Topical {
                    topic: value.to_owned(),
                }],
            )
            .expect_err("bad tag");
        assert!(
            matches!(&err, marten::Error::InvalidInput { field, reason, .. } if field == "value" && reason.contains(why)),
            "{err:?}"
        );
        let err = s
            .events()
            .fetch_for_writing_by_tags::<TopicSeen>(TagQuery::new().tag_named("topic", value))
            .await
            .err()
            .expect("bad tag query");
        assert!(
            matches!(&err, marten::Error::InvalidInput { .. }),
            "{err:?}"
        );
    }
    // The longest accepted id round-trips; a 10 KB field is no key and round-trips.
    let longest = "é".repeat(marten::MAX_ID_BYTES / 2);
    ok(s.store(profile(&longest, &big)));
    ok(s.events()
        .append(longest.as_str(), [Said { text: big.clone() }]));
    ok(s.save_changes().await);
    let back = ok(s.load::<Profile>(&longest).await).expect("longest id");
    assert_eq!(back.title, big);
    let events = ok(s.events().fetch_stream(longest.as_str()).await);
    assert_eq!(
        events[0].data_as::<Said>().map(|e| e.text.as_str()),
        Some(big.as_str())
    );
    assert_eq!(rows(&schema, "mt_doc_profile").await, 1);
    assert_eq!(rows(&schema, "mt_streams").await, 1);
}

async fn chat_store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
    let (schema, b) = builder(label);
    let store = ok(b
        .projection::<Chat>(Lifecycle::Inline)
        .multi_stream_projection::<Words>(Lifecycle::Inline)
        .document::<Profile>()
        .aggregate_cache(0)
        .build()
        .await);
    (schema, store)
}

async fn said(store: &DocumentStore, stream: Uuid, text: &str) -> marten::Result<()> {
    let mut s = store.lightweight_session();
    s.events().append(
        stream,
        [Said {
            text: text.to_owned(),
        }],
    )?;
    s.save_changes().await
}

#[tokio::test]
async fn an_aggregate_version_that_cannot_advance_is_a_typed_error() {
    let (schema, store) = chat_store("agg_version_max").await;
    let id = Uuid::now_v7();
    ok(said(&store, id, "one").await);
    let raw = schema.raw_client().await;
    for bad in ["9223372036854775807", "-3"] {
        raw.execute(
            &format!("UPDATE mt_doc_chat SET data = jsonb_set(data, '{{version}}', '{bad}')"),
            &[],
        )
        .await
        .expect("corrupt");
        let mut s = store.lightweight_session();
        let err = s
            .events()
            .aggregate_stream::<Chat>(id)
            .await
            .expect_err("corrupt version");
        match &err {
            marten::Error::CorruptData {
                owner,
                id: Some(got),
                detail,
            } => {
                assert_eq!(owner, "Chat");
                assert_eq!(got, &id.to_string());
                assert!(detail.contains(bad), "{detail}");
            }
            other => panic!("wrong error {other:?}"),
        }
        let err = s
            .events()
            .fetch_for_writing::<Chat>(id)
            .await
            .err()
            .expect("corrupt");
        assert!(matches!(err, marten::Error::CorruptData { .. }), "{err:?}");
    }
}

/// A negative expected version, which no stream has, is refused at once, naming the
/// stream, instead of queuing a save that can never succeed; the session's other work is
/// kept.
#[tokio::test]
async fn a_negative_expected_version_is_refused_at_once() {
    let (_schema, store) = chat_store("stream_version_negative").await;
    let id = Uuid::now_v7();
    ok(said(&store, id, "one").await);
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [Said {
            text: "kept".into(),
        }],
    ));
    let err = s
        .events()
        .append_expected(id, -1, [Said { text: "x".into() }])
        .expect_err("negative");
    assert!(
        matches!(&err, marten::Error::InvalidInput { owner, id: Some(got), field, .. }
            if owner == "stream" && *got == id.to_string() && field == "expected version"),
        "{err:?}"
    );
    ok(s.save_changes().await);
    let texts: Vec<String> = ok(store.lightweight_session().events().fetch_stream(id).await)
        .iter()
        .filter_map(|e| e.data_as::<Said>().map(|s| s.text.clone()))
        .collect();
    assert_eq!(texts, ["one", "kept"]);
}

#[tokio::test]
async fn a_stream_version_that_cannot_advance_is_a_typed_error() {
    let (schema, store) = chat_store("stream_version_max").await;
    let id = Uuid::now_v7();
    ok(said(&store, id, "one").await);
    let raw = schema.raw_client().await;
    // An expected version of i64::MAX: the inline projection cannot number the events.
    let mut s = store.lightweight_session();
    ok(s.events()
        .append_expected(id, i64::MAX, [Said { text: "x".into() }]));
    let err = s.save_changes().await.expect_err("overflow");
    assert!(
        matches!(&err, marten::Error::CorruptData { owner, id: Some(got), .. } if owner == "stream" && *got == id.to_string()),
        "{err:?}"
    );
    // A stream row edited to i64::MAX: the inline projection reads it under lock.
    raw.execute("UPDATE mt_streams SET version = 9223372036854775807", &[])
        .await
        .expect("corrupt");
    let err = said(&store, id, "two").await.expect_err("overflow");
    assert!(matches!(&err, marten::Error::CorruptData { .. }), "{err:?}");
    // An event row edited to i64::MAX: fetch_for_writing reads that version (live).
    let live = Uuid::now_v7();
    let (schema2, b) = builder("stream_version_live");
    let store2 = ok(b.event::<Said>().build().await);
    ok(said(&store2, live, "one").await);
    schema2
        .raw_client()
        .await
        .execute("UPDATE mt_events SET version = 9223372036854775807", &[])
        .await
        .expect("corrupt");
    let mut s = store2.lightweight_session();
    let mut w = ok(s.events().fetch_for_writing::<Chat>(live).await);
    assert_eq!(w.version(), i64::MAX);
    let err = w.append([Said { text: "x".into() }]).expect_err("overflow");
    assert!(matches!(&err, marten::Error::CorruptData { .. }), "{err:?}");
    assert_eq!(rows(&schema, "mt_events").await, 1, "nothing written");
}

#[tokio::test]
async fn an_undeserializable_row_names_type_and_id_everywhere() {
    let (schema, store) = chat_store("bad_json_everywhere").await;
    let raw = schema.raw_client().await;
    // Query: list, page, first and stream name the row's id.
    let mut s = store.lightweight_session();
    ok(s.store(profile("good", "a")));
    ok(s.store(profile("broken", "b")));
    ok(s.save_changes().await);
    raw.execute(
        "UPDATE mt_doc_profile SET data = jsonb_set(data, '{title}', '42') WHERE id = 'broken'",
        &[],
    )
    .await
    .expect("corrupt");
    let check = |err: marten::Error, want: &str| match err {
        marten::Error::Deserialize {
            document_type, id, ..
        } => {
            assert_eq!(id, want);
            document_type
        }
        other => panic!("wrong error {other:?}"),
    };
    let mut q = store.query_session();
    assert_eq!(
        check(
            q.query::<Profile>().to_list().await.expect_err("list"),
            "broken"
        ),
        "Profile"
    );
    check(
        q.query::<Profile>().to_page(0, 10).await.expect_err("page"),
        "broken",
    );
    check(
        q.query::<Profile>().first().await.expect_err("first"),
        "broken",
    );
    {
        use futures_util::StreamExt;
        let stream = ok(q.query::<Profile>().stream().await);
        let results: Vec<_> = stream.collect().await;
        let err = results.into_iter().find_map(|r| r.err()).expect("an error");
        check(err, "broken");
    }

    // Live aggregation from the inline snapshot, and inline planning from it.
    let chat = Uuid::now_v7();
    ok(said(&store, chat, "hello world").await);
    raw.execute(
        "UPDATE mt_doc_chat SET data = jsonb_set(data, '{lines}', '\"x\"')",
        &[],
    )
    .await
    .expect("corrupt");
    let err = s
        .events()
        .aggregate_stream::<Chat>(chat)
        .await
        .expect_err("live");
    assert_eq!(check(err, &chat.to_string()), "Chat");
    let err = said(&store, chat, "again")
        .await
        .expect_err("inline planning");
    assert_eq!(check(err, &chat.to_string()), "Chat");

    // Multi-stream planning reads the shared document.
    raw.execute(
        "UPDATE mt_doc_chat SET data = jsonb_set(data, '{lines}', '[]')",
        &[],
    )
    .await
    .expect("repair");
    raw.execute(
        "UPDATE mt_doc_words SET data = jsonb_set(data, '{count}', '-1')",
        &[],
    )
    .await
    .expect("corrupt");
    let err = said(&store, Uuid::now_v7(), "hello there")
        .await
        .expect_err("multi");
    assert_eq!(check(err, "hello"), "Words");
    assert_eq!(rows(&schema, "mt_events").await, 1, "nothing written");
}

#[tokio::test]
async fn an_event_row_of_the_wrong_shape_names_type_and_sequence() {
    let (schema, b) = builder("bad_event_row");
    let store = ok(b.event::<Said>().build().await);
    let id = Uuid::now_v7();
    ok(said(&store, id, "fine").await);
    let seq: i64 = schema
        .raw_client()
        .await
        .query_one(
            "UPDATE mt_events SET data = '{\"text\": [1]}' RETURNING seq_id",
            &[],
        )
        .await
        .expect("corrupt")
        .get(0);
    let mut s = store.lightweight_session();
    let err = s.events().fetch_stream(id).await.expect_err("bad event");
    assert!(
        matches!(&err, marten::Error::DeserializeEvent { event_type, sequence, stream, .. } if event_type == "said" && *sequence == seq && *stream == Some(StreamId::Uuid(id))),
        "{err:?}"
    );
    let err = s
        .events()
        .aggregate_stream::<Chat>(id)
        .await
        .expect_err("bad event");
    // The fold reads no sequences (a lean read) and still names the event's.
    assert!(
        matches!(&err, marten::Error::DeserializeEvent { event_type, sequence, stream, .. } if event_type == "said" && *sequence == seq && *stream == Some(StreamId::Uuid(id))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_hand_edited_tag_version_is_a_typed_error() {
    let (schema, b) = builder("bad_tag_version");
    let store = ok(b.event::<Topical>().build().await);
    let mut s = store.lightweight_session();
    ok(s.events()
        .append(Uuid::now_v7(), [Topical { topic: "t".into() }]));
    ok(s.save_changes().await);
    let raw = schema.raw_client().await;
    for edit in [
        "UPDATE mt_tag_versions SET version = -5",
        "ALTER TABLE mt_tag_versions ALTER version DROP NOT NULL; UPDATE mt_tag_versions SET version = NULL",
    ] {
        raw.batch_execute(edit).await.expect("corrupt");
        let err = s
            .events()
            .fetch_for_writing_by_tags::<TopicSeen>(TagQuery::new().tag_named("topic", "t"))
            .await
            .err()
            .expect("corrupt tag version");
        assert!(
            matches!(&err, marten::Error::CorruptData { owner, id: Some(v), .. } if owner == "tag \"topic\"" && v == "\"t\""),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn huge_timeouts_saturate_instead_of_panicking() {
    let (_schema, b) = builder("huge_timeouts");
    let store = ok(b
        .event::<Said>()
        .pool_wait_timeout(Duration::MAX)
        .exclusive_lock_timeout(Duration::MAX)
        .build()
        .await);
    let id = Uuid::now_v7();
    ok(said(&store, id, "one").await);
    let mut s = store.lightweight_session();
    ok(s.events()
        .append_exclusive(id, [Said { text: "two".into() }])
        .await);
    ok(s.save_changes().await);
    assert_eq!(ok(s.events().fetch_stream(id).await).len(), 2);
    let _ = ok(s.events().oldest_open_transaction().await);
}

/// A dirty-tracked save refused before it is sent (a changed document holds a NUL) ends
/// the session's transaction too: the exclusive lock it was to commit under is released
/// at once, not held until the session is dropped.
#[tokio::test]
async fn a_dirty_save_refused_before_sending_releases_the_exclusive_lock() {
    let (_schema, b) = builder("nul_doc_locked");
    let store = ok(b
        .document::<Profile>()
        .exclusive_lock_timeout(Duration::from_millis(500))
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut seed = store.lightweight_session();
    ok(seed.store(profile("p", "original")));
    ok(seed
        .events()
        .start_stream(stream, [Said { text: "0".into() }]));
    ok(seed.save_changes().await);

    let mut s = store.dirty_tracked_session();
    ok(s.events()
        .append_exclusive(
            stream,
            [Said {
                text: "locked".into(),
            }],
        )
        .await);
    let doc = ok(s.load::<Profile>(&"p".to_owned()).await).expect("p");
    doc.title = "poisoned\0".to_owned();
    let err = s.save_changes().await.expect_err("a NUL");
    assert_invalid_input(&err, "Profile", Some("p"), "title");

    let mut other = store.lightweight_session();
    ok(other
        .events()
        .append_exclusive(
            stream,
            [Said {
                text: "other".into(),
            }],
        )
        .await);
    ok(other.save_changes().await);
    let events = ok(store
        .lightweight_session()
        .events()
        .fetch_stream(stream)
        .await);
    assert_eq!(events.len(), 2, "the refused save's append was not written");
}

/// An event serde cannot write as JSON (a map keyed by tuples).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Gridded {
    cells: std::collections::BTreeMap<(i32, i32), i32>,
}

/// An event that does not serialize is refused at the append, naming its type and the
/// stream it was for; nothing is queued or written.
#[tokio::test]
async fn an_event_that_does_not_serialize_names_its_type_and_stream() {
    let (schema, b) = builder("bad_event_serialize");
    let store = ok(b.event::<Gridded>().build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let err = s
        .events()
        .append(
            id,
            [Gridded {
                cells: [((1, 2), 3)].into_iter().collect(),
            }],
        )
        .expect_err("a tuple key");
    match &err {
        marten::Error::SerializeEvent {
            event_type, stream, ..
        } => assert_eq!((*event_type, stream), ("gridded", &StreamId::Uuid(id))),
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().contains(&id.to_string()), "{err}");
    ok(s.save_changes().await);
    assert_eq!(rows(&schema, "mt_events").await, 0);
}
