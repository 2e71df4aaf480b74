//! The spans marten opens: saves, loads, typed queries (a fingerprint, never a
//! parameter), appends, tag boundary reads, schema work and daemon batches, each with
//! OpenTelemetry's database fields. One global subscriber records every closed span;
//! each test picks its own by its schema's name in `db.namespace`.

mod common;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A closed span: its name and every field recorded on it, as text.
#[derive(Clone, Debug, Default)]
struct Captured {
    name: &'static str,
    fields: HashMap<String, String>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

impl Visit for Captured {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.fields
            .insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Every span closed in this process, in the order they closed.
fn closed() -> &'static Mutex<Vec<Captured>> {
    static CLOSED: OnceLock<Mutex<Vec<Captured>>> = OnceLock::new();
    CLOSED.get_or_init(Mutex::default)
}

/// Keeps each open span's fields in its extensions; moves them to [`closed`] on close.
struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut captured = Captured {
            name: attrs.metadata().name(),
            fields: HashMap::new(),
        };
        attrs.record(&mut captured);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(captured);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(captured) = span.extensions_mut().get_mut::<Captured>() {
                values.record(captured);
            }
        }
    }

    /// The writer's `save_changes` event: whether the save was one statement, recorded
    /// as the field `single` of the enclosing `save_changes` span.
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut seen = Captured::default();
        event.record(&mut seen);
        let (Some("save_changes"), Some(single)) = (seen.field("message"), seen.field("single"))
        else {
            return;
        };
        let single = single.to_owned();
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if span.name() == "save_changes" {
                if let Some(captured) = span.extensions_mut().get_mut::<Captured>() {
                    captured.fields.insert("single".to_owned(), single);
                }
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(captured) = span.extensions_mut().remove::<Captured>() else {
            return;
        };
        if let Ok(mut list) = closed().lock() {
            list.push(captured);
        }
    }
}

/// Installs the capturing subscriber once for the whole test binary.
fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
}

/// The closed spans named `name` in `namespace`.
fn spans(name: &str, namespace: &str) -> Vec<Captured> {
    let list = closed().lock().expect("span list");
    list.iter()
        .filter(|c| c.name == name && c.field("db.namespace") == Some(namespace))
        .cloned()
        .collect()
}

/// The one closed span named `name` in `namespace` with field `key` = `value`.
fn one_span(name: &str, namespace: &str, key: &str, value: &str) -> Captured {
    let found: Vec<Captured> = spans(name, namespace)
        .into_iter()
        .filter(|c| c.field(key) == Some(value))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} spans with {key} = {value}: {found:?}"
    );
    found[0].clone()
}

fn assert_db_fields(span: &Captured, operation: &str) {
    assert_eq!(span.field("db.system"), Some("postgresql"), "{span:?}");
    assert_eq!(span.field("db.operation"), Some(operation), "{span:?}");
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Shop {
    id: Uuid,
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Added {
    n: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Tally {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Tally {
    fn apply(&mut self, e: &Added) {
        self.total += e.n;
    }
}

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CourseId(Uuid);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Enrolled {
    #[tag]
    course: CourseId,
}

#[derive(Default, Debug)]
struct Enrolments {
    count: usize,
}

#[marten::apply]
impl Enrolments {
    fn apply(&mut self, _e: &Enrolled) {
        self.count += 1;
    }
}

#[tokio::test]
async fn saves_loads_queries_and_schema_work_have_spans() {
    capture();
    let (schema, b) = builder("tracing_documents");
    let store = ok(b.document::<Shop>().build().await);
    let ns = schema.name();
    assert_db_fields(&spans("schema", ns)[0], "schema");

    let mut session = store.lightweight_session();
    for name in ["a", "b", "c"] {
        ok(session.store(Shop {
            id: Uuid::now_v7(),
            name: name.into(),
        }));
    }
    ok(session.save_changes().await);
    let save = one_span("save_changes", ns, "marten.operations", "3");
    assert_db_fields(&save, "save_changes");
    assert_eq!(save.field("marten.attempts"), Some("1"));

    let id = Uuid::now_v7();
    assert!(ok(session.load::<Shop>(&id).await).is_none());
    let load = one_span("load", ns, "marten.ids", "1");
    assert_db_fields(&load, "load");
    assert_eq!(load.field("marten.document"), Some(Shop::DOCUMENT_TYPE));

    let secret = "zebra-parameter-4711";
    let found = ok(session
        .query::<Shop>()
        .filter(|f| f.name.eq(secret))
        .to_list()
        .await);
    assert!(found.is_empty());
    let queries = spans("query", ns);
    assert_eq!(queries.len(), 1, "{queries:?}");
    assert_db_fields(&queries[0], "query");
    let fingerprint = queries[0]
        .field("marten.fingerprint")
        .expect("a fingerprint");
    assert_eq!(fingerprint.len(), 16, "{fingerprint}");
    let list = closed().lock().expect("span list");
    let leaked: Vec<&Captured> = list
        .iter()
        .filter(|c| c.fields.values().any(|v| v.contains(secret)))
        .collect();
    assert!(leaked.is_empty(), "a parameter value in a span: {leaked:?}");
}

#[tokio::test]
async fn appends_and_daemon_batches_have_spans() {
    capture();
    let (schema, b) = builder("tracing_events");
    let store = ok(b.projection::<Tally>(Lifecycle::Async).build().await);
    let ns = schema.name();
    let mut session = store.lightweight_session();
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    ok(session
        .events()
        .append(first, [Added { n: 1 }, Added { n: 2 }]));
    ok(session.events().append(second, [Added { n: 3 }]));
    ok(session.save_changes().await);
    let append = one_span("append", ns, "marten.streams", "2");
    assert_db_fields(&append, "append");
    assert_eq!(append.field("marten.events"), Some("3"));

    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let batches = spans("daemon.batch", ns);
    assert!(!batches.is_empty(), "no daemon batch span");
    let events: i64 = batches
        .iter()
        .map(|b| {
            assert_db_fields(b, "daemon.batch");
            assert!(b.field("marten.projection").is_some_and(|p| !p.is_empty()));
            assert!(b.field("marten.duration_ms").is_some(), "{b:?}");
            b.field("marten.events")
                .expect("events")
                .parse::<i64>()
                .expect("a count")
        })
        .sum();
    assert_eq!(events, 3, "{batches:?}");
    assert_eq!(spans("daemon.runner", ns).len(), 1);
}

#[tokio::test]
async fn tag_boundary_reads_have_spans() {
    capture();
    let (schema, b) = builder("tracing_tags");
    let store = ok(b.build().await);
    let ns = schema.name();
    let course = CourseId(Uuid::now_v7());
    let mut session = store.lightweight_session();
    ok(session
        .events()
        .append(Uuid::now_v7(), [Enrolled { course }, Enrolled { course }]));
    ok(session.save_changes().await);
    let mut reader = store.lightweight_session();
    let boundary = ok(reader
        .events()
        .fetch_for_writing_by_tags::<Enrolments>(TagQuery::new().tag(course))
        .await);
    assert_eq!(boundary.state().map(|s| s.count), Some(2));
    let read = one_span("fetch_for_writing_by_tags", ns, "marten.tags", "1");
    assert_db_fields(&read, "boundary_read");
    assert_eq!(read.field("marten.events"), Some("2"));
}

/// A boundary's save of one append is one statement: the tag lock rides in the append's
/// statement, with no transaction around it. With a second append the lock is a
/// statement of its own, in a transaction.
#[tokio::test]
async fn a_boundary_save_of_one_append_is_one_statement() {
    capture();
    let (schema, b) = builder("tracing_one_statement");
    let store = ok(b.build().await);
    let ns = schema.name();
    let course = CourseId(Uuid::now_v7());
    for appends in [1, 2] {
        let mut s = store.lightweight_session();
        let mut boundary = ok(s
            .events()
            .fetch_for_writing_by_tags::<Enrolments>(TagQuery::new().tag(course))
            .await);
        for _ in 0..appends {
            ok(boundary.append([Enrolled { course }]));
        }
        ok(s.save_changes().await);
    }
    let saves: Vec<Option<String>> = spans("save_changes", ns)
        .iter()
        .map(|c| c.field("single").map(str::to_owned))
        .collect();
    assert_eq!(
        saves,
        [Some("true".to_owned()), Some("false".to_owned())],
        "{saves:?}"
    );
}
