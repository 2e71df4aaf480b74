//! Event schema evolution: events stored under a former name (an alias) or in an older
//! shape (an upcaster's old name) read as the current types on every read path:
//! `fetch_stream`, live aggregation, the inline snapshot, `read_all`, the async daemon
//! and tag boundaries. The old events are appended by a store that knows only the old
//! types, then read by a store that knows only the new ones.

mod common;

use std::time::Duration;

use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::DocumentStoreBuilder;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct OrderId(Uuid);

// ---- The old types (only the writer knows them). ----

/// Version 1 of "an order was placed": an amount in cents.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "order_placed")]
struct OrderPlacedV1 {
    #[tag]
    order: OrderId,
    amount: i64,
}

/// The former name of `LineAdded`, same shape.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "item_added")]
struct ItemAdded {
    #[tag]
    order: OrderId,
    sku: String,
}

/// Version 1 of "an order was shipped": one carrier name.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "order_shipped")]
struct OrderShippedV1 {
    #[tag]
    order: OrderId,
    carrier: String,
}

// ---- The current types (the reader knows only these). ----

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Money {
    cents: i64,
    currency: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "order_placed_v2")]
struct OrderPlaced {
    #[tag]
    order: OrderId,
    total: Money,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "line_added", aliases = ["item_added", "sku_added"])]
struct LineAdded {
    #[tag]
    order: OrderId,
    sku: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "order_shipped_v2")]
struct OrderShipped {
    #[tag]
    order: OrderId,
    carriers: Vec<String>,
}

/// The state every path folds the events into.
macro_rules! order_state {
    ($name:ident) => {
        #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        struct $name {
            id: Uuid,
            version: i64,
            total: Money,
            lines: Vec<String>,
            carriers: Vec<String>,
        }

        #[marten::apply]
        impl $name {
            fn apply(&mut self, e: &OrderPlaced) {
                self.total = e.total.clone();
            }
            fn apply(&mut self, e: &LineAdded) {
                self.lines.push(e.sku.clone());
            }
            fn apply(&mut self, e: &OrderShipped) {
                self.carriers.extend(e.carriers.iter().cloned());
            }
        }
    };
}

order_state!(Order); // inline
order_state!(OrderView); // async

/// A boundary state (not a document).
#[derive(Default, Debug)]
struct OrderLines {
    cents: i64,
    lines: usize,
    carriers: usize,
}

#[marten::apply]
impl OrderLines {
    fn apply(&mut self, e: &OrderPlaced) {
        self.cents = e.total.cents;
    }
    fn apply(&mut self, _e: &LineAdded) {
        self.lines += 1;
    }
    fn apply(&mut self, e: &OrderShipped) {
        self.carriers += e.carriers.len();
    }
}

/// A builder on the same schema as `schema`.
fn same_schema(schema: &TestSchema) -> DocumentStoreBuilder {
    DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(8)
}

/// The current types and the upcasters from the old shapes.
fn evolved(b: DocumentStoreBuilder) -> DocumentStoreBuilder {
    b.event::<LineAdded>()
        .upcast::<OrderPlaced, _>("order_placed", |mut json| {
            let amount = json
                .get("amount")
                .and_then(serde_json::Value::as_i64)
                .ok_or("no amount")?;
            json["total"] = serde_json::json!({ "cents": amount, "currency": "EUR" });
            Ok(json)
        })
        .upcast_from::<OrderShippedV1, OrderShipped, _>("order_shipped", |old| OrderShipped {
            order: old.order,
            carriers: vec![old.carrier],
        })
}

/// Appends the old events of one order with a store that knows only the old types.
async fn write_old_order(schema: &TestSchema) -> (Uuid, OrderId) {
    let writer = ok(same_schema(schema).build().await);
    let id = Uuid::now_v7();
    let order = OrderId(Uuid::now_v7());
    let mut s = writer.lightweight_session();
    ok(s.events().append(
        id,
        [OrderPlacedV1 {
            order,
            amount: 1250,
        }],
    ));
    ok(s.events().append(
        id,
        [ItemAdded {
            order,
            sku: "apple".into(),
        }],
    ));
    ok(s.events().append(
        id,
        [ItemAdded {
            order,
            sku: "pear".into(),
        }],
    ));
    ok(s.events().append(
        id,
        [OrderShippedV1 {
            order,
            carrier: "post".into(),
        }],
    ));
    ok(s.save_changes().await);
    (id, order)
}

fn expected_total() -> Money {
    Money {
        cents: 1250,
        currency: "EUR".into(),
    }
}

fn assert_order(total: &Money, lines: &[String], carriers: &[String]) {
    assert_eq!(total, &expected_total());
    assert_eq!(lines, ["apple".to_owned(), "pear".to_owned()]);
    assert_eq!(carriers, ["post".to_owned()]);
}

#[tokio::test]
async fn old_events_read_as_the_current_types_on_every_read_path() {
    let (schema, _) = builder("ev_evolution_paths");
    let (id, order) = write_old_order(&schema).await;
    let store = ok(evolved(same_schema(&schema))
        .projection::<Order>(Lifecycle::Inline)
        .projection::<OrderView>(Lifecycle::Async)
        .build()
        .await);
    let mut s = store.lightweight_session();

    // fetch_stream: the data is the current type; the envelope says both names.
    let events = ok(s.events().fetch_stream(id).await);
    assert_eq!(events.len(), 4);
    let placed = events[0].data_as::<OrderPlaced>().expect("upcast");
    assert_eq!(placed.total, expected_total());
    assert_eq!(placed.order, order);
    assert_eq!(events[0].event_type, "order_placed_v2");
    assert_eq!(events[0].stored_type, "order_placed");
    assert_eq!(
        events[1].data_as::<LineAdded>().map(|l| l.sku.as_str()),
        Some("apple")
    );
    assert_eq!(events[1].event_type, "line_added");
    assert_eq!(events[1].stored_type, "item_added");
    let shipped = events[3].data_as::<OrderShipped>().expect("typed upcast");
    assert_eq!(shipped.carriers, ["post".to_owned()]);

    // Live aggregation (no snapshot yet).
    let live: Order = ok(s.events().aggregate_stream(id).await).expect("live");
    assert_order(&live.total, &live.lines, &live.carriers);
    assert_eq!(live.version, 4);

    // read_all, through a session and the store.
    let page = ok(s.events().read_all(Position::START, 100).await);
    assert_eq!(page.events.len(), 4);
    assert!(page.events[0].is::<OrderPlaced>());
    assert!(page.events[3].is::<OrderShipped>());
    let page = ok(store.read_all_events(Position::START, 100).await);
    assert!(page.events[1].is::<LineAdded>() && page.events[2].is::<LineAdded>());

    // A tag boundary limited to the current types also matches their old names.
    let query = TagQuery::new()
        .tag(order)
        .event_types::<(OrderPlaced, LineAdded, OrderShipped)>();
    let b = ok(s
        .events()
        .fetch_for_writing_by_tags::<OrderLines>(query)
        .await);
    assert_eq!(b.events().len(), 4);
    let state = b.state().expect("boundary state");
    assert_eq!((state.cents, state.lines, state.carriers), (1250, 2, 1));
    drop(b);

    // The inline snapshot: fetch_for_writing folds the old events, the append stores the
    // document, and live aggregation then starts from it.
    let mut w = ok(s.events().fetch_for_writing::<Order>(id).await);
    assert_eq!(w.version(), 4);
    ok(w.append([LineAdded {
        order,
        sku: "plum".into(),
    }]));
    ok(s.save_changes().await);
    let doc = ok(store.query_session().load::<Order>(&id).await).expect("snapshot");
    assert_eq!(doc.lines, ["apple", "pear", "plum"]);
    assert_eq!(doc.total, expected_total());
    assert_eq!(doc.version, 5);
    let mut s = store.lightweight_session();
    let from_snapshot: Order = ok(s.events().aggregate_stream(id).await).expect("live");
    assert_eq!(from_snapshot, doc);

    // The async daemon.
    let daemon = Daemon::start(&store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
    let view = ok(store.query_session().load::<OrderView>(&id).await).expect("projected");
    assert_eq!(view.lines, ["apple", "pear", "plum"]);
    assert_eq!(view.total, expected_total());
    assert_eq!(view.carriers, ["post"]);
    assert_eq!(view.version, 5);
}

#[tokio::test]
async fn appends_write_the_current_name() {
    let (schema, b) = builder("ev_evolution_current_name");
    let store = ok(evolved(b).build().await);
    let id = Uuid::now_v7();
    let order = OrderId(Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [LineAdded {
            order,
            sku: "fig".into(),
        }],
    ));
    ok(s.save_changes().await);
    let stored: String = schema
        .raw_client()
        .await
        .query_one("SELECT type FROM mt_events", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(stored, "line_added");
    let events = ok(s.events().fetch_stream(id).await);
    assert_eq!(events[0].stored_type, "line_added");
    assert_eq!(events[0].event_type, "line_added");
}

/// The sequence of the stored event of `event_type`.
async fn sequence_of(schema: &TestSchema, event_type: &str) -> i64 {
    schema
        .raw_client()
        .await
        .query_one(
            "SELECT seq_id FROM mt_events WHERE type = $1",
            &[&event_type],
        )
        .await
        .expect("seq")
        .get(0)
}

#[tokio::test]
async fn a_failing_upcaster_is_a_typed_error_naming_the_type_and_sequence() {
    let (schema, _) = builder("ev_evolution_failing");
    let (id, _) = write_old_order(&schema).await;
    let store = ok(same_schema(&schema)
        .event::<LineAdded>()
        .event::<OrderShipped>()
        .upcast::<OrderPlaced, _>("order_placed", |_| Err("amounts are gone".to_owned()))
        .build()
        .await);
    let seq = sequence_of(&schema, "order_placed").await;
    let mut s = store.lightweight_session();
    let err = s.events().fetch_stream(id).await.expect_err("upcast fails");
    match &err {
        marten::Error::Upcast {
            event_type,
            target,
            sequence,
            stream,
            message,
        } => {
            assert_eq!(event_type, "order_placed");
            assert_eq!(*target, "order_placed_v2");
            assert_eq!(*sequence, seq);
            assert_eq!(stream.as_ref(), Some(&StreamId::Uuid(id)));
            assert_eq!(message, "amounts are gone");
        }
        other => panic!("expected Upcast, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("order_placed")
            && text.contains(&seq.to_string())
            && text.contains(&format!("in stream {id}")),
        "{text}"
    );

    // The same through read_all, and an old name nobody reads stays an unknown type.
    let err = ok_err(s.events().read_all(Position::START, 100).await);
    assert!(matches!(err, marten::Error::Upcast { sequence, .. } if sequence == seq));
    let err = ok_err(s.events().aggregate_stream::<Order>(id).await);
    assert!(
        matches!(err, marten::Error::Upcast { sequence, .. } if sequence == seq),
        "{err:?}"
    );
}

#[tokio::test]
async fn stored_data_that_is_not_the_old_type_is_an_upcast_error() {
    let (schema, _) = builder("ev_evolution_bad_old");
    let (id, _) = write_old_order(&schema).await;
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_events SET data = '{\"order\": 5}' WHERE type = 'order_shipped'",
            &[],
        )
        .await
        .expect("update");
    let seq = sequence_of(&schema, "order_shipped").await;
    let store = ok(evolved(same_schema(&schema)).build().await);
    let mut s = store.lightweight_session();
    match ok_err(s.events().fetch_stream(id).await) {
        marten::Error::Upcast {
            event_type,
            sequence,
            target,
            ..
        } => {
            assert_eq!(
                (event_type.as_str(), sequence, target),
                ("order_shipped", seq, "order_shipped_v2")
            );
        }
        other => panic!("expected Upcast, got {other:?}"),
    }
}

#[tokio::test]
async fn an_old_name_without_an_upcaster_is_an_unknown_type() {
    let (schema, _) = builder("ev_evolution_missing");
    let (id, _) = write_old_order(&schema).await;
    let store = ok(same_schema(&schema)
        .event::<OrderPlaced>()
        .event::<LineAdded>()
        .build()
        .await);
    let seq = sequence_of(&schema, "order_placed").await;
    let mut s = store.lightweight_session();
    match ok_err(s.events().fetch_stream(id).await) {
        marten::Error::UnknownEventType {
            event_type,
            sequence,
        } => assert_eq!((event_type.as_str(), sequence), ("order_placed", seq)),
        other => panic!("expected UnknownEventType, got {other:?}"),
    }
    // A fold reads no sequences (a lean read) and still names the event's.
    match ok_err(s.events().aggregate_stream::<Order>(id).await) {
        marten::Error::UnknownEventType {
            event_type,
            sequence,
        } => assert_eq!((event_type.as_str(), sequence), ("order_placed", seq)),
        other => panic!("expected UnknownEventType, got {other:?}"),
    }
}

fn ok_err<T: std::fmt::Debug>(r: marten::Result<T>) -> marten::Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "sku_added")]
struct SkuAdded {
    sku: String,
}

async fn build_error(b: DocumentStoreBuilder) -> String {
    match b.build().await {
        Ok(_) => panic!("expected a configuration error"),
        Err(marten::Error::Configuration(message)) => message,
        Err(other) => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn names_that_collide_are_configuration_errors_naming_both() {
    // An alias that is another type's name, in both orders.
    let (_s1, b) = builder("ev_evolution_collide_a");
    let m = build_error(b.event::<SkuAdded>().event::<LineAdded>()).await;
    assert!(
        m.contains("\"sku_added\"") && m.contains("\"line_added\""),
        "{m}"
    );
    let (_s2, b) = builder("ev_evolution_collide_b");
    let m = build_error(b.event::<LineAdded>().event::<SkuAdded>()).await;
    assert!(
        m.contains("\"sku_added\"") && m.contains("\"line_added\""),
        "{m}"
    );
    // An upcaster from a name a type reads (its alias), or from a name upcast already.
    let (_s3, b) = builder("ev_evolution_collide_c");
    let m = build_error(
        b.event::<LineAdded>()
            .upcast::<OrderPlaced, _>("item_added", Ok),
    )
    .await;
    assert!(
        m.contains("\"item_added\"")
            && m.contains("\"line_added\"")
            && m.contains("\"order_placed_v2\""),
        "{m}"
    );
    let (_s4, b) = builder("ev_evolution_collide_d");
    let m = build_error(
        b.upcast::<OrderPlaced, _>("old", Ok)
            .upcast::<OrderShipped, _>("old", Ok),
    )
    .await;
    assert!(
        m.contains("\"order_placed_v2\"") && m.contains("\"order_shipped_v2\""),
        "{m}"
    );
}

#[test]
fn aliases_are_part_of_the_event_type() {
    assert_eq!(<LineAdded as Event>::ALIASES, ["item_added", "sku_added"]);
    assert!(<OrderPlaced as Event>::ALIASES.is_empty());
}
