//! Event schema evolution, event naming and snapshot scenarios ported from Marten's
//! `src/EventSourcingTests` (SchemaChange, Bugs) and `src/DaemonTests`, and from the
//! JasperFx.Events compliance suites (`SnapshotLifecycleCompliance`): the behaviour is
//! theirs, the code is written for marten-rs. "Old" events are appended by a second store
//! on the test's schema that knows only the old types, as an older build of the
//! application would have written them; the store under test knows only the current
//! types, their aliases and the upcasters from the old names.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{builder, builder_on, ok};
use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::subscriptions::{
    EventFilter, HandlerError, Subscription, SubscriptionBatch, SubscriptionTx,
};
use marten::{DocumentStoreBuilder, UnknownEvents};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);

fn expect_err<T: std::fmt::Debug>(r: marten::Result<T>) -> marten::Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

/// The stored type names of `stream`'s rows in version order, read by SQL.
async fn stored_types(schema: &TestSchema, stream: Uuid) -> Vec<String> {
    schema
        .raw_client()
        .await
        .query(
            "SELECT type FROM mt_events WHERE stream_id = $1 ORDER BY version",
            &[&stream],
        )
        .await
        .expect("stored types")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every event `read_all` returns from the start, once at least `want` are readable:
/// `read_all` reads only below the oldest transaction open on the server, and other
/// tests' transactions may hold that horizon back for a moment.
async fn read_all_settled(store: &DocumentStore, want: usize) -> Vec<EventEnvelope> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let page = ok(store
            .lightweight_session()
            .events()
            .read_all(Position::START, 1000)
            .await);
        if page.events.len() >= want || std::time::Instant::now() > deadline {
            return page.events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a daemon on `store` until its projections have caught up, then stops it.
async fn catch_up(store: &DocumentStore) {
    let daemon = Daemon::start(store, DaemonOptions::default());
    ok(daemon.wait_for_non_stale(WAIT).await);
    ok(daemon.stop().await);
}

// ---------------------------------------------------------------------------------------
// A shopping cart in three schema versions (MultipleSchemaVersions).
// ---------------------------------------------------------------------------------------

/// Version 1: what the first build of the application stored.
mod cart_v1 {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "cart_opened")]
    pub struct CartOpened {
        pub cart_id: Uuid,
        pub client_id: Uuid,
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "product_added")]
    pub struct ProductAdded {
        pub cart_id: Uuid,
        pub product_id: Uuid,
        pub quantity: i64,
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[document(table = "chain_cart")]
    pub struct Cart {
        pub id: Uuid,
        pub version: i64,
        pub client_id: Uuid,
        pub items: BTreeMap<Uuid, i64>,
    }

    #[marten::apply]
    impl Cart {
        fn create(e: &CartOpened) -> Self {
            Cart {
                id: e.cart_id,
                version: 0,
                client_id: e.client_id,
                items: BTreeMap::new(),
            }
        }
        fn apply(&mut self, e: &ProductAdded) {
            *self.items.entry(e.product_id).or_insert(0) += e.quantity;
        }
    }
}

/// Version 2: new names, a status and an optional opening time, an optional price.
mod cart_v2 {
    use super::*;

    #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub enum Status {
        #[default]
        Opened,
        Confirmed,
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[event(name = "cart_opened_v2")]
    pub struct CartOpened {
        pub cart_id: Uuid,
        pub client_id: Uuid,
        pub status: Status,
        pub opened_at: Option<String>,
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[event(name = "product_added_v2")]
    pub struct ProductAdded {
        pub cart_id: Uuid,
        pub product_id: Uuid,
        pub quantity: i64,
        pub price_cents: Option<i64>,
    }

    /// Reads version 1 documents: the new fields have defaults.
    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[document(table = "chain_cart")]
    pub struct Cart {
        pub id: Uuid,
        pub version: i64,
        pub client_id: Uuid,
        pub items: BTreeMap<Uuid, i64>,
        #[serde(default)]
        pub status: Status,
        #[serde(default)]
        pub opened_at: Option<String>,
    }

    #[marten::apply]
    impl Cart {
        fn create(e: &CartOpened) -> Self {
            Cart {
                id: e.cart_id,
                version: 0,
                client_id: e.client_id,
                items: BTreeMap::new(),
                status: e.status,
                opened_at: e.opened_at.clone(),
            }
        }
        fn apply(&mut self, e: &ProductAdded) {
            *self.items.entry(e.product_id).or_insert(0) += e.quantity;
        }
    }

    pub fn opened_from_v1(old: cart_v1::CartOpened) -> CartOpened {
        CartOpened {
            cart_id: old.cart_id,
            client_id: old.client_id,
            status: Status::Opened,
            opened_at: None,
        }
    }

    /// The JSON upcaster of `product_added`: the price did not exist.
    pub fn product_from_v1_json(mut json: serde_json::Value) -> Result<serde_json::Value, String> {
        let object = json.as_object_mut().ok_or("not an object")?;
        object.insert("price_cents".into(), serde_json::Value::Null);
        Ok(json)
    }

    pub fn upcasters(b: DocumentStoreBuilder) -> DocumentStoreBuilder {
        b.upcast_from::<cart_v1::CartOpened, CartOpened, _>("cart_opened", opened_from_v1)
            .upcast::<ProductAdded, _>("product_added", product_from_v1_json)
    }
}

/// Version 3: a client object and a product item object.
mod cart_v3 {
    use super::*;
    pub use cart_v2::Status;

    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Client {
        pub id: Uuid,
        pub name: String,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct ProductItem {
        pub product_id: Uuid,
        pub quantity: i64,
        pub price_cents: Option<i64>,
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[event(name = "cart_opened_v3")]
    pub struct CartOpened {
        pub cart_id: Uuid,
        pub client: Client,
        pub status: Status,
        pub opened_at: Option<String>,
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[event(name = "product_added_v3")]
    pub struct ProductAdded {
        pub cart_id: Uuid,
        pub item: ProductItem,
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[document(table = "chain_cart")]
    pub struct Cart {
        pub id: Uuid,
        pub version: i64,
        pub client_id: Uuid,
        pub items: BTreeMap<Uuid, i64>,
        #[serde(default)]
        pub status: Status,
        #[serde(default)]
        pub opened_at: Option<String>,
    }

    #[marten::apply]
    impl Cart {
        fn create(e: &CartOpened) -> Self {
            Cart {
                id: e.cart_id,
                version: 0,
                client_id: e.client.id,
                items: BTreeMap::new(),
                status: e.status,
                opened_at: e.opened_at.clone(),
            }
        }
        fn apply(&mut self, e: &ProductAdded) {
            *self.items.entry(e.item.product_id).or_insert(0) += e.item.quantity;
        }
    }

    pub fn opened_from_v2(old: cart_v2::CartOpened) -> CartOpened {
        CartOpened {
            cart_id: old.cart_id,
            client: Client {
                id: old.client_id,
                name: "Unknown".into(),
            },
            status: old.status,
            opened_at: old.opened_at,
        }
    }

    pub fn product_from_v2(old: cart_v2::ProductAdded) -> ProductAdded {
        ProductAdded {
            cart_id: old.cart_id,
            item: ProductItem {
                product_id: old.product_id,
                quantity: old.quantity,
                price_cents: old.price_cents,
            },
        }
    }

    /// Both older names point at version 3 (composed: there is no chain).
    pub fn upcasters(b: DocumentStoreBuilder) -> DocumentStoreBuilder {
        b.upcast_from::<cart_v1::CartOpened, CartOpened, _>("cart_opened", |old| {
            opened_from_v2(cart_v2::opened_from_v1(old))
        })
        .upcast_from::<cart_v2::CartOpened, CartOpened, _>("cart_opened_v2", opened_from_v2)
        .upcast::<ProductAdded, _>("product_added", |json| {
            let v2 = cart_v2::product_from_v1_json(json)?;
            let v2: cart_v2::ProductAdded =
                serde_json::from_value(v2).map_err(|e| e.to_string())?;
            serde_json::to_value(product_from_v2(v2)).map_err(|e| e.to_string())
        })
        .upcast_from::<cart_v2::ProductAdded, ProductAdded, _>("product_added_v2", product_from_v2)
    }
}

/// Port of `MultipleSchemaVersions.UpcastingWithMultipleSchemaAndDifferentTypeNamesShouldWork`
/// (Marten `src/EventSourcingTests/SchemaChange/MultipleVersions`): events of schema
/// version 1, then 2, then 3 in one stream with an inline cart; each new build (a store
/// restarted with the next version's types and upcasters) appends its own version, reads
/// every earlier one as its own, keeps the inline document it loads from the previous
/// build's shape, and the inline document equals a full live fold.
#[tokio::test]
async fn an_upcaster_chain_reads_every_schema_version_as_the_newest() {
    let (schema, b) = builder("evo_chain");
    let (cart, client, product) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    // Version 1 writes the stream and its inline document.
    let v1 = ok(b
        .projection::<cart_v1::Cart>(Lifecycle::Inline)
        .build()
        .await);
    let mut s = v1.lightweight_session();
    ok(s.events().start_stream(
        cart,
        [
            PendingEvent::new(cart_v1::CartOpened {
                cart_id: cart,
                client_id: client,
            }),
            PendingEvent::new(cart_v1::ProductAdded {
                cart_id: cart,
                product_id: product,
                quantity: 3,
            }),
        ],
    ));
    ok(s.save_changes().await);
    drop(v1);

    // Version 2.
    let v2 = ok(cart_v2::upcasters(builder_on(&schema))
        .projection::<cart_v2::Cart>(Lifecycle::Inline)
        .build()
        .await);
    let mut s = v2.lightweight_session();
    ok(s.events().append(
        cart,
        [cart_v2::ProductAdded {
            cart_id: cart,
            product_id: product,
            quantity: 2,
            price_cents: Some(123),
        }],
    ));
    ok(s.save_changes().await);
    let events = ok(v2.lightweight_session().events().fetch_stream(cart).await);
    assert_eq!(events.len(), 3);
    assert!(events[0].is::<cart_v2::CartOpened>());
    assert!(events[1].is::<cart_v2::ProductAdded>() && events[2].is::<cart_v2::ProductAdded>());
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.stored_type.as_ref(), e.event_type.as_ref()))
        .collect();
    assert_eq!(
        names,
        [
            ("cart_opened", "cart_opened_v2"),
            ("product_added", "product_added_v2"),
            ("product_added_v2", "product_added_v2"),
        ]
    );
    assert_eq!(
        events[1]
            .data_as::<cart_v2::ProductAdded>()
            .map(|p| p.price_cents),
        Some(None)
    );
    let want_v2 = cart_v2::Cart {
        id: cart,
        version: 3,
        client_id: client,
        items: BTreeMap::from([(product, 5)]),
        status: cart_v2::Status::Opened,
        opened_at: None,
    };
    let doc = ok(v2.query_session().load::<cart_v2::Cart>(&cart).await);
    assert_eq!(doc.as_ref(), Some(&want_v2), "the inline document");
    let reader = ok(cart_v2::upcasters(builder_on(&schema)).build().await);
    let live: Option<cart_v2::Cart> = ok(reader
        .lightweight_session()
        .events()
        .aggregate_stream(cart)
        .await);
    assert_eq!(live, Some(want_v2), "a full live fold");
    drop((v2, reader));

    // Version 3.
    let v3 = ok(cart_v3::upcasters(builder_on(&schema))
        .projection::<cart_v3::Cart>(Lifecycle::Inline)
        .build()
        .await);
    let mut s = v3.lightweight_session();
    ok(s.events().append(
        cart,
        [cart_v3::ProductAdded {
            cart_id: cart,
            item: cart_v3::ProductItem {
                product_id: product,
                quantity: 4,
                price_cents: Some(123),
            },
        }],
    ));
    ok(s.save_changes().await);
    let mut s = v3.lightweight_session();
    let events = ok(s.events().fetch_stream(cart).await);
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.stored_type.as_ref(), e.event_type.as_ref()))
        .collect();
    assert_eq!(
        names,
        [
            ("cart_opened", "cart_opened_v3"),
            ("product_added", "product_added_v3"),
            ("product_added_v2", "product_added_v3"),
            ("product_added_v3", "product_added_v3"),
        ]
    );
    let opened = events[0]
        .data_as::<cart_v3::CartOpened>()
        .expect("a v3 opening");
    assert_eq!(
        opened.client,
        cart_v3::Client {
            id: client,
            name: "Unknown".into()
        }
    );
    let items: Vec<(i64, Option<i64>)> = events[1..]
        .iter()
        .map(|e| {
            let p = e.data_as::<cart_v3::ProductAdded>().expect("a v3 product");
            (p.item.quantity, p.item.price_cents)
        })
        .collect();
    assert_eq!(items, [(3, None), (2, Some(123)), (4, Some(123))]);
    let all = read_all_settled(&v3, 4).await;
    assert_eq!(all.len(), 4);
    assert!(all[0].is::<cart_v3::CartOpened>());
    assert!(all[1..].iter().all(|e| e.is::<cart_v3::ProductAdded>()));

    let want_v3 = cart_v3::Cart {
        id: cart,
        version: 4,
        client_id: client,
        items: BTreeMap::from([(product, 9)]),
        status: cart_v3::Status::Opened,
        opened_at: None,
    };
    let doc = ok(v3.query_session().load::<cart_v3::Cart>(&cart).await);
    assert_eq!(doc.as_ref(), Some(&want_v3), "the inline document");
    let reader = ok(cart_v3::upcasters(builder_on(&schema)).build().await);
    let live: Option<cart_v3::Cart> = ok(reader
        .lightweight_session()
        .events()
        .aggregate_stream(cart)
        .await);
    assert_eq!(live, Some(want_v3), "a full live fold");

    // Reading rewrote nothing.
    assert_eq!(
        stored_types(&schema, cart).await,
        [
            "cart_opened",
            "product_added",
            "product_added_v2",
            "product_added_v3"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Shape changes that keep the name (SimpleMappings).
// ---------------------------------------------------------------------------------------

mod opened_old {
    use super::*;

    /// The first shape, with a field the current type dropped.
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "shopping_cart_opened")]
    pub struct ShoppingCartOpened {
        pub shopping_cart_id: Uuid,
        pub client_id: Uuid,
        pub sales_channel: String,
    }
}

fn status_opened() -> String {
    "opened".into()
}

/// The current shape under the same name: a field renamed in Rust (its JSON key kept by
/// serde), one removed, an optional one added and a required one added with a default.
#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "shopping_cart_opened")]
struct ShoppingCartOpened {
    #[serde(rename = "shopping_cart_id")]
    cart_id: Uuid,
    client_id: Uuid,
    opened_at: Option<String>,
    #[serde(default = "status_opened")]
    status: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct OpenedCart {
    id: Uuid,
    version: i64,
    client_id: Uuid,
    status: String,
    opened_at: Option<String>,
}

#[marten::apply]
impl OpenedCart {
    fn create(e: &ShoppingCartOpened) -> Self {
        OpenedCart {
            id: e.cart_id,
            version: 0,
            client_id: e.client_id,
            status: e.status.clone(),
            opened_at: e.opened_at.clone(),
        }
    }
}

/// Port of Marten's `SimpleMappings` schema-change samples (`WithNotRequiredProperty`,
/// `WithRequiredProperty`, `WithRenamedProperty`; `src/EventSourcingTests/SchemaChange/
/// SimpleMappings.cs`): an event type that kept its stored name reads its old events
/// without an upcaster when the change is additive: the removed field is ignored, the
/// optional one is `None`, the required one takes its default, the renamed one reads its
/// old key; live aggregation folds them; an event query by the renamed field matches old
/// and new events, while one by the defaulted field matches only events that stored it
/// (queries read the stored JSON, not the decoded value).
#[tokio::test]
async fn a_type_that_gained_lost_and_renamed_fields_reads_its_old_events() {
    let (schema, b) = builder("evo_simple_mappings");
    let old = ok(b.event::<opened_old::ShoppingCartOpened>().build().await);
    let (old_cart, new_cart, client) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut s = old.lightweight_session();
    ok(s.events().start_stream(
        old_cart,
        [opened_old::ShoppingCartOpened {
            shopping_cart_id: old_cart,
            client_id: client,
            sales_channel: "web".into(),
        }],
    ));
    ok(s.save_changes().await);

    let store = ok(builder_on(&schema)
        .event::<ShoppingCartOpened>()
        .build()
        .await);
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        new_cart,
        [ShoppingCartOpened {
            cart_id: new_cart,
            client_id: client,
            opened_at: Some("2024-05-01T10:00:00Z".into()),
            status: "confirmed".into(),
        }],
    ));
    ok(s.save_changes().await);

    let events = ok(s.events().fetch_stream(old_cart).await);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].data_as::<ShoppingCartOpened>(),
        Some(&ShoppingCartOpened {
            cart_id: old_cart,
            client_id: client,
            opened_at: None,
            status: "opened".into(),
        })
    );
    assert_eq!(
        (
            events[0].stored_type.as_ref(),
            events[0].event_type.as_ref()
        ),
        ("shopping_cart_opened", "shopping_cart_opened")
    );
    let live: Option<OpenedCart> = ok(s.events().aggregate_stream(old_cart).await);
    assert_eq!(
        live,
        Some(OpenedCart {
            id: old_cart,
            version: 1,
            client_id: client,
            status: "opened".into(),
            opened_at: None,
        })
    );

    // The renamed field is queried by its stored key: both events.
    let by_cart = ok(s
        .events()
        .query::<ShoppingCartOpened>()
        .filter(|f| f.cart_id.eq(old_cart))
        .to_list()
        .await);
    assert_eq!(by_cart.len(), 1);
    assert_eq!(by_cart[0].version, 1);
    assert_eq!(
        ok(s.events()
            .query::<ShoppingCartOpened>()
            .filter(|f| f.client_id.eq(client))
            .count()
            .await),
        2
    );
    // The defaulted field exists only in the new event's JSON.
    let opened = ok(s
        .events()
        .query::<ShoppingCartOpened>()
        .filter(|f| f.status.eq("opened"))
        .count()
        .await);
    assert_eq!(opened, 0, "the old event stored no status");
    let confirmed = ok(s
        .events()
        .query::<ShoppingCartOpened>()
        .filter(|f| f.status.eq("confirmed"))
        .to_list()
        .await);
    assert_eq!(confirmed.len(), 1);
    assert_eq!(
        confirmed[0]
            .data_as::<ShoppingCartOpened>()
            .map(|e| e.cart_id),
        Some(new_cart)
    );
}

// ---------------------------------------------------------------------------------------
// An old type appended by the store that upcasts it (Bug_4680).
// ---------------------------------------------------------------------------------------

/// The former shape, still compiled into the application and still appended by old code.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "greeting_said")]
struct GreetingSaidV1 {
    value: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "greeting_said_v2")]
struct GreetingSaid {
    value: String,
    loud: bool,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Greetings {
    id: Uuid,
    version: i64,
    said: Vec<String>,
}

#[marten::apply]
impl Greetings {
    fn apply(&mut self, e: &GreetingSaid) {
        self.said
            .push(format!("{}{}", e.value, if e.loud { "!" } else { "" }));
    }
}

fn greeting_upcaster(b: DocumentStoreBuilder) -> DocumentStoreBuilder {
    b.upcast_from::<GreetingSaidV1, GreetingSaid, _>("greeting_said", |old| GreetingSaid {
        value: old.value,
        loud: false,
    })
}

/// Port of Marten's `Bug_4680_upcaster_shadowed_by_typed_append.
/// same_store_typed_append_is_upcast_on_read` (`src/EventSourcingTests/SchemaChange`):
/// a store with an upcaster from the old name that also appends the old type (typed)
/// stores the old name and JSON, and reads the event back upcast, never as the old type,
/// from a fresh session, from a restarted store, in a live fold, through `read_all` and
/// (archived) through `including_archived`.
#[tokio::test]
async fn an_old_type_appended_by_the_store_that_upcasts_it_reads_back_upcast() {
    let (schema, b) = builder("evo_bug_4680");
    let store = ok(greeting_upcaster(b).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [GreetingSaidV1 {
            value: "hello".into(),
        }],
    ));
    ok(s.save_changes().await);
    ok(s.events().append(
        id,
        [GreetingSaid {
            value: "hi".into(),
            loud: true,
        }],
    ));
    ok(s.save_changes().await);
    assert_eq!(
        stored_types(&schema, id).await,
        ["greeting_said", "greeting_said_v2"]
    );

    let restarted = ok(greeting_upcaster(builder_on(&schema)).build().await);
    for (label, store) in [("same store", &store), ("restarted", &restarted)] {
        let mut s = store.lightweight_session();
        let events = ok(s.events().fetch_stream(id).await);
        assert_eq!(events.len(), 2, "{label}");
        assert!(!events[0].is::<GreetingSaidV1>(), "{label}");
        assert_eq!(
            events[0].data_as::<GreetingSaid>(),
            Some(&GreetingSaid {
                value: "hello".into(),
                loud: false
            }),
            "{label}"
        );
        assert_eq!(
            (
                events[0].stored_type.as_ref(),
                events[0].event_type.as_ref()
            ),
            ("greeting_said", "greeting_said_v2"),
            "{label}"
        );
        let live: Option<Greetings> = ok(s.events().aggregate_stream(id).await);
        assert_eq!(
            live.map(|g| (g.version, g.said)),
            Some((2, vec!["hello".to_owned(), "hi!".to_owned()])),
            "{label}"
        );
        let all = read_all_settled(store, 2).await;
        assert!(
            all.len() == 2 && all.iter().all(|e| e.is::<GreetingSaid>()),
            "{label}"
        );
    }

    let mut s = store.lightweight_session();
    ok(s.events().archive_stream(id));
    ok(s.save_changes().await);
    let archived = ok(s
        .events()
        .fetch_stream_with(id, StreamRange::all().including_archived())
        .await);
    assert_eq!(archived.len(), 2);
    assert!(archived
        .iter()
        .all(|e| e.is::<GreetingSaid>() && e.archived));
}

// ---------------------------------------------------------------------------------------
// Two types that share one stored name (Bug_3880 and Bug_4680's alt-mapping test).
// ---------------------------------------------------------------------------------------

mod group_events {
    use super::*;

    /// Stored as "created" (the snake-case type name).
    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Created {
        pub name: String,
    }
}

mod user_events {
    use super::*;

    /// Also stored as "created": the module path is not part of the name.
    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Created {
        pub name: String,
    }
}

/// Port of Marten's `Bug_3880_able_to_use_different_event_types_with_same_name.
/// append_and_load` and `Bug_4680...alt_mapping_swap_still_works_when_no_upcaster_registered`
/// (`src/EventSourcingTests/Bugs`, `SchemaChange`): two event types with the same short
/// name appended to one stream. Marten reads each back as the type that was written. In
/// marten-rs both take the stored name "created", so the store must never read one as
/// the other: registering both at build is a configuration error, and appending both to
/// a store that knows neither must either be refused or read each back as its own type.
#[tokio::test]
async fn two_types_sharing_a_stored_name_never_read_as_each_other() {
    let (_s1, b) = builder("evo_same_name_build");
    let err = b
        .event::<group_events::Created>()
        .event::<user_events::Created>()
        .build()
        .await
        .map(|_| ())
        .expect_err("two types under one name");
    assert!(
        matches!(err, marten::Error::Configuration(ref m) if m.contains("\"created\"")),
        "{err:?}"
    );

    let (_s2, b) = builder("evo_same_name_append");
    let store = ok(b.build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let appended = s.events().start_stream(
        id,
        [
            PendingEvent::new(group_events::Created { name: "foo".into() }),
            PendingEvent::new(user_events::Created { name: "bar".into() }),
        ],
    );
    match appended {
        Err(marten::Error::Configuration(m)) => {
            assert!(m.contains("\"created\""), "{m}");
            ok(s.save_changes().await);
            assert!(ok(s.events().fetch_stream_state(id).await).is_none());
        }
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(()) => {
            ok(s.save_changes().await);
            let events = ok(store.lightweight_session().events().fetch_stream(id).await);
            assert_eq!(events.len(), 2);
            assert_eq!(
                events[0]
                    .data_as::<group_events::Created>()
                    .map(|e| e.name.as_str()),
                Some("foo")
            );
            assert!(
                events[1].is::<user_events::Created>(),
                "the user event was written as user_events::Created and reads back as {}",
                if events[1].is::<group_events::Created>() {
                    "group_events::Created"
                } else {
                    "something else"
                }
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// An aggregate that handles both versions of an event (Bug_4178).
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "customer_created")]
struct CustomerCreatedV1 {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "customer_created_v2")]
struct CustomerCreatedV2 {
    name: String,
    email: String,
}

macro_rules! versioned_customer {
    ($name:ident) => {
        #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        struct $name {
            id: Uuid,
            version: i64,
            name: String,
            email: Option<String>,
            v1_applies: i64,
            v2_applies: i64,
        }

        #[marten::apply]
        impl $name {
            fn apply(&mut self, e: &CustomerCreatedV1) {
                self.name = e.name.clone();
                self.v1_applies += 1;
            }
            fn apply(&mut self, e: &CustomerCreatedV2) {
                self.name = e.name.clone();
                self.email = Some(e.email.clone());
                self.v2_applies += 1;
            }
        }
    };
}

versioned_customer!(Customer); // inline
versioned_customer!(CustomerView); // async
versioned_customer!(CustomerLive); // live

/// Port of Marten's `Bug_4178_nested_versioned_events_dispatch_to_wrong_projection_apply_overload`
/// (`src/EventSourcingTests/Bugs`): two versions of one event kept side by side as two
/// types (two stored names), both in one stream; every lifecycle calls each version's
/// apply method exactly once and `fetch_stream` reads each as its own type.
#[tokio::test]
async fn an_aggregate_applies_each_version_of_an_event_once() {
    let (_schema, b) = builder("evo_bug_4178");
    let store = ok(b
        .projection::<Customer>(Lifecycle::Inline)
        .projection::<CustomerView>(Lifecycle::Async)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(CustomerCreatedV1 {
                name: "Alice".into(),
            }),
            PendingEvent::new(CustomerCreatedV2 {
                name: "Alice Updated".into(),
                email: "alice@example.com".into(),
            }),
        ],
    ));
    ok(s.save_changes().await);

    let events = ok(s.events().fetch_stream(id).await);
    assert_eq!(events.len(), 2);
    assert!(events[0].is::<CustomerCreatedV1>() && !events[0].is::<CustomerCreatedV2>());
    assert!(events[1].is::<CustomerCreatedV2>() && !events[1].is::<CustomerCreatedV1>());
    assert_eq!(
        events[1]
            .data_as::<CustomerCreatedV2>()
            .map(|e| e.email.as_str()),
        Some("alice@example.com")
    );

    let want = |version| {
        (
            version,
            "Alice Updated".to_owned(),
            Some("alice@example.com".to_owned()),
            1,
            1,
        )
    };
    let inline = ok(store.query_session().load::<Customer>(&id).await).expect("inline");
    assert_eq!(
        (
            inline.version,
            inline.name,
            inline.email,
            inline.v1_applies,
            inline.v2_applies
        ),
        want(2)
    );
    let live: CustomerLive = ok(s.events().aggregate_stream(id).await).expect("live");
    assert_eq!(
        (
            live.version,
            live.name,
            live.email,
            live.v1_applies,
            live.v2_applies
        ),
        want(2)
    );
    catch_up(&store).await;
    let view = ok(store.query_session().load::<CustomerView>(&id).await).expect("async");
    assert_eq!(
        (
            view.version,
            view.name,
            view.email,
            view.v1_applies,
            view.v2_applies
        ),
        want(2)
    );
}

// ---------------------------------------------------------------------------------------
// Upcasting in the async daemon and its rebuild (Upcasters).
// ---------------------------------------------------------------------------------------

mod shop_old {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "shop_cart_opened")]
    pub struct ShopCartOpened {
        pub shopping_cart_id: Uuid,
        pub client_id: Uuid,
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ShopClient {
    id: Uuid,
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "shop_cart_opened_with_status")]
struct ShopCartOpenedWithStatus {
    shopping_cart_id: Uuid,
    client: ShopClient,
    status: String,
}

macro_rules! shop_cart {
    ($name:ident) => {
        #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
        struct $name {
            id: Uuid,
            version: i64,
            client: ShopClient,
            status: String,
        }

        #[marten::apply]
        impl $name {
            fn create(e: &ShopCartOpenedWithStatus) -> Self {
                $name {
                    id: e.shopping_cart_id,
                    version: 0,
                    client: e.client.clone(),
                    status: e.status.clone(),
                }
            }
        }
    };
}

shop_cart!(ShopCartDetails); // async
shop_cart!(ShopCart); // live

/// The two ways to register the same upcaster: over the JSON, or from the old type.
fn shop_upcasters(b: DocumentStoreBuilder, typed: bool) -> DocumentStoreBuilder {
    if typed {
        b.upcast_from::<shop_old::ShopCartOpened, ShopCartOpenedWithStatus, _>(
            "shop_cart_opened",
            |old| ShopCartOpenedWithStatus {
                shopping_cart_id: old.shopping_cart_id,
                client: ShopClient {
                    id: old.client_id,
                    name: "Unknown".into(),
                },
                status: "Opened".into(),
            },
        )
    } else {
        b.upcast::<ShopCartOpenedWithStatus, _>("shop_cart_opened", |json| {
            let old = json.as_object().ok_or("not an object")?;
            let cart = old.get("shopping_cart_id").ok_or("no cart id")?;
            let client = old.get("client_id").ok_or("no client id")?;
            Ok(serde_json::json!({
                "shopping_cart_id": cart,
                "client": { "id": client, "name": "Unknown" },
                "status": "Opened",
            }))
        })
    }
}

/// Port of Marten's `UpcastersTests.HavingEvents_WithSchemaChange_AggregationShouldWork`
/// (`src/EventSourcingTests/SchemaChange/Upcasters.cs`, its theory over upcaster
/// flavours): events of the old shape, read by a store that upcasts them (over the JSON,
/// or from the old type), fold live into the new aggregate, and the async daemon projects
/// them, on its first catch-up and again after a rebuild of the projection.
#[tokio::test]
async fn upcast_events_fold_live_and_in_the_daemon_before_and_after_a_rebuild() {
    for typed in [false, true] {
        let (schema, b) = builder(if typed {
            "evo_upcasters_typed"
        } else {
            "evo_upcasters_json"
        });
        let old = ok(b.event::<shop_old::ShopCartOpened>().build().await);
        let (cart, client) = (Uuid::now_v7(), Uuid::now_v7());
        let mut s = old.lightweight_session();
        ok(s.events().append(
            cart,
            [shop_old::ShopCartOpened {
                shopping_cart_id: cart,
                client_id: client,
            }],
        ));
        ok(s.save_changes().await);

        let store = ok(shop_upcasters(builder_on(&schema), typed)
            .projection::<ShopCartDetails>(Lifecycle::Async)
            .build()
            .await);
        let want_client = ShopClient {
            id: client,
            name: "Unknown".into(),
        };
        let live: ShopCart = ok(store
            .lightweight_session()
            .events()
            .aggregate_stream(cart)
            .await)
        .expect("live");
        assert_eq!(
            (live.id, live.version, &live.client, live.status.as_str()),
            (cart, 1, &want_client, "Opened"),
            "typed: {typed}"
        );

        let daemon = Daemon::start(&store, DaemonOptions::default());
        ok(daemon.wait_for_non_stale(WAIT).await);
        let projected = ok(store.query_session().load::<ShopCartDetails>(&cart).await);
        let projected = projected.expect("projected");
        assert_eq!(
            (
                projected.version,
                &projected.client,
                projected.status.as_str()
            ),
            (1, &want_client, "Opened"),
            "typed: {typed}"
        );
        ok(marten::daemon::rebuild(&store, "ShopCartDetails").await);
        ok(daemon.wait_for_non_stale(WAIT).await);
        ok(daemon.stop().await);
        let rebuilt = ok(store.query_session().load::<ShopCartDetails>(&cart).await);
        assert_eq!(rebuilt, Some(projected), "typed: {typed}: the rebuild");
    }
}

// ---------------------------------------------------------------------------------------
// An event type removed from the code (skipping_unknown_event_types_in_continuous_builds).
// ---------------------------------------------------------------------------------------

/// Removed from the current build: only the old writer knows it.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct LegacyPinged {
    note: String,
}

#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug)]
struct Bumped {
    by: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Cut {}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Closed {}

macro_rules! counts {
    ($name:ident) => {
        /// Folded without metadata (a lean read).
        #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        struct $name {
            id: Uuid,
            version: i64,
            bumped: i64,
            cut: i64,
            closed: i64,
        }

        #[marten::apply]
        impl $name {
            fn apply(&mut self, e: &Bumped) {
                self.bumped += e.by;
            }
            fn apply(&mut self, _e: &Cut) {
                self.cut += 1;
            }
            fn apply(&mut self, _e: &Closed) {
                self.closed += 1;
            }
        }
    };
}

counts!(Counts); // live
counts!(CountsView); // async

/// Folded with metadata (a full read): the versions it was given.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct CountsSeen {
    id: Uuid,
    version: i64,
    seen: Vec<i64>,
}

#[marten::apply]
impl CountsSeen {
    fn apply(&mut self, _e: &Bumped, meta: &EventEnvelope) {
        self.seen.push(meta.version);
    }
    fn apply(&mut self, _e: &Cut, meta: &EventEnvelope) {
        self.seen.push(meta.version);
    }
    fn apply(&mut self, _e: &Closed, meta: &EventEnvelope) {
        self.seen.push(meta.version);
    }
}

/// Port of Marten's `skipping_unknown_event_types_in_continuous_builds.
/// cleanly_skip_over_unknown_events` (`src/DaemonTests/Resiliency`), extended to every
/// read path: events of a type the current build no longer has (stored at the start and
/// at the end of a stream) are left out, under `UnknownEvents::Skip`, by `fetch_stream`,
/// lean and full live folds, `read_all`, event queries and the async daemon, and
/// `fetch_for_writing` still reports the stream's version, so an append through it is
/// accepted.
#[tokio::test]
async fn events_of_a_removed_type_are_skipped_on_every_read_path() {
    let (schema, b) = builder("evo_unknown_skip");
    let old = ok(b.build().await);
    let id = Uuid::now_v7();
    let legacy = |n: &str| PendingEvent::new(LegacyPinged { note: n.to_owned() });
    let mut s = old.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            legacy("a"),
            legacy("b"),
            PendingEvent::new(Bumped { by: 1 }),
            PendingEvent::new(Bumped { by: 10 }),
            PendingEvent::new(Cut {}),
            PendingEvent::new(Closed {}),
            legacy("last"),
        ],
    ));
    ok(s.save_changes().await);

    let store = ok(builder_on(&schema)
        .unknown_events(UnknownEvents::Skip)
        .projection::<CountsView>(Lifecycle::Async)
        .build()
        .await);
    let mut s = store.lightweight_session();
    let events = ok(s.events().fetch_stream(id).await);
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [3, 4, 5, 6]);

    let lean: Counts = ok(s.events().aggregate_stream(id).await).expect("lean fold");
    assert_eq!((lean.bumped, lean.cut, lean.closed), (11, 1, 1));
    let full: CountsSeen = ok(s.events().aggregate_stream(id).await).expect("full fold");
    assert_eq!(full.seen, [3, 4, 5, 6]);

    let all = read_all_settled(&store, 4).await;
    let sequences: Vec<i64> = all.iter().map(|e| e.version).collect();
    assert_eq!(sequences, [3, 4, 5, 6], "read_all");
    assert_eq!(
        ok(s.events()
            .query::<Bumped>()
            .filter(|f| f.by.ge(1))
            .count()
            .await),
        2
    );

    catch_up(&store).await;
    let view = ok(store.query_session().load::<CountsView>(&id).await).expect("projected");
    assert_eq!((view.bumped, view.cut, view.closed), (11, 1, 1));

    // The stream is at version 7 (its newest event is the unknown one).
    let mut w = ok(s.events().fetch_for_writing::<Counts>(id).await);
    let read_version = w.version();
    ok(w.append([Bumped { by: 100 }]));
    let saved = s.save_changes().await;
    assert!(
        read_version == 7 && saved.is_ok(),
        "fetch_for_writing read version {read_version} of a stream at 7; the save: {saved:?}"
    );
    let state = ok(s.events().fetch_stream_state(id).await).expect("stream");
    assert_eq!(state.version, 8);
    let lean: Counts = ok(s.events().aggregate_stream(id).await).expect("lean fold");
    assert_eq!((lean.version, lean.bumped), (8, 111));
}

// ---------------------------------------------------------------------------------------
// Snapshots of an older aggregate shape.
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Ticked {
    n: i64,
}

/// The meter of the previous build: a total only.
mod meter_v1 {
    use super::*;

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    #[document(table = "meter")]
    pub struct Meter {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
    }

    #[marten::apply]
    impl Meter {
        fn apply(&mut self, e: &Ticked) {
            self.total += e.n;
        }
    }
}

/// The meter gained a counter with a default: old snapshots still deserialize.
mod meter_defaulted {
    use super::*;

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    #[document(table = "meter")]
    pub struct Meter {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
        #[serde(default)]
        pub ticks: i64,
    }

    #[marten::apply]
    impl Meter {
        fn apply(&mut self, e: &Ticked) {
            self.total += e.n;
            self.ticks += 1;
        }
    }
}

/// The meter gained a required counter: old snapshots no longer deserialize.
mod meter_required {
    use super::*;

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
    #[document(table = "meter")]
    pub struct Meter {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
        pub ticks: i64,
    }

    #[marten::apply]
    impl Meter {
        fn apply(&mut self, e: &Ticked) {
            self.total += e.n;
            self.ticks += 1;
        }
    }
}

/// Appends `Ticked { n }` for each `n` of `ns` to `id`, one save.
async fn tick(store: &DocumentStore, id: Uuid, ns: std::ops::RangeInclusive<i64>) {
    let mut s = store.lightweight_session();
    ok(s.events().append(id, ns.map(|n| Ticked { n })));
    ok(s.save_changes().await);
}

/// The stored snapshot's JSON (the `meter` table's one row), if any.
async fn meter_snapshot(schema: &TestSchema) -> Option<serde_json::Value> {
    schema
        .raw_client()
        .await
        .query_opt("SELECT data FROM meter", &[])
        .await
        .expect("snapshot")
        .map(|r| r.get(0))
}

/// Deletes the events of `stream` before `version`, behind the store's back: a fold that
/// still gives the full state must have started from a snapshot.
async fn delete_events_before(schema: &TestSchema, stream: Uuid, version: i64) -> u64 {
    schema
        .raw_client()
        .await
        .execute(
            "DELETE FROM mt_events WHERE stream_id = $1 AND version < $2",
            &[&stream, &version],
        )
        .await
        .expect("delete early events")
}

/// A meter snapshot policy every 5 events, with the previous build's snapshot of 10
/// events (total 55) of `id` written and the build's store dropped.
async fn meter_with_v1_snapshot(label: &str) -> (TestSchema, Uuid) {
    let (schema, b) = builder(label);
    let v1 = ok(b.snapshot::<meter_v1::Meter>(5).build().await);
    let id = Uuid::now_v7();
    tick(&v1, id, 1..=10).await;
    let m: meter_v1::Meter =
        ok(v1.lightweight_session().events().aggregate_stream(id).await).expect("meter");
    assert_eq!((m.version, m.total), (10, 55));
    assert_eq!(
        meter_snapshot(&schema).await,
        Some(serde_json::json!({"id": id, "version": 10, "total": 55}))
    );
    (schema, id)
}

/// Snapshots (marten-rs `.snapshot::<A>(n)`, Marten's `Snapshot<T>` with the JasperFx
/// `SnapshotLifecycleCompliance` story of a snapshot that keeps up with later events):
/// the aggregate gained a field with a serde default after the snapshot was taken. The
/// old snapshot still deserializes, so the fold starts from it (proven by deleting the
/// events before it) and applies only the later events: the new field counts only them,
/// while the old fields stay exact; the next due snapshot stores the new shape.
#[tokio::test]
async fn a_snapshot_of_an_older_shape_with_a_defaulted_new_field_is_built_on() {
    let (schema, id) = meter_with_v1_snapshot("evo_snap_defaulted").await;
    let store = ok(builder_on(&schema)
        .snapshot::<meter_defaulted::Meter>(5)
        .build()
        .await);
    assert_eq!(delete_events_before(&schema, id, 10).await, 9);
    tick(&store, id, 11..=13).await;
    let mut s = store.lightweight_session();
    let m: meter_defaulted::Meter = ok(s.events().aggregate_stream(id).await).expect("meter");
    assert_eq!(
        (m.version, m.total, m.ticks),
        (13, 55 + 11 + 12 + 13, 3),
        "the snapshot's total, and ticks of the events after it only"
    );
    tick(&store, id, 14..=15).await;
    let m: meter_defaulted::Meter = ok(s.events().aggregate_stream(id).await).expect("meter");
    assert_eq!((m.version, m.total, m.ticks), (15, 120, 5));
    assert_eq!(
        meter_snapshot(&schema).await,
        Some(serde_json::json!({"id": id, "version": 15, "total": 120, "ticks": 5})),
        "5 events past the old snapshot: one of the new shape"
    );
}

/// As above, but the new field is required: the old snapshot no longer deserializes, is
/// passed over (not an error) and the stream folded from its first event, exactly; that
/// fold writes a snapshot of the new shape, which the next fold starts from.
#[tokio::test]
async fn a_snapshot_of_an_older_shape_that_no_longer_deserializes_is_replaced() {
    let (schema, id) = meter_with_v1_snapshot("evo_snap_required").await;
    let store = ok(builder_on(&schema)
        .snapshot::<meter_required::Meter>(5)
        .build()
        .await);
    tick(&store, id, 11..=12).await;
    let mut s = store.lightweight_session();
    let m: meter_required::Meter = ok(s.events().aggregate_stream(id).await).expect("meter");
    assert_eq!((m.version, m.total, m.ticks), (12, 78, 12), "a full fold");
    assert_eq!(
        meter_snapshot(&schema).await,
        Some(serde_json::json!({"id": id, "version": 12, "total": 78, "ticks": 12})),
        "the full fold replaced the old-shape snapshot"
    );
    assert_eq!(delete_events_before(&schema, id, 12).await, 11);
    tick(&store, id, 13..=13).await;
    let m: meter_required::Meter = ok(s.events().aggregate_stream(id).await).expect("meter");
    assert_eq!(
        (m.version, m.total, m.ticks),
        (13, 91, 13),
        "from the new snapshot"
    );
}

// ---------------------------------------------------------------------------------------
// Snapshots over upcast events.
// ---------------------------------------------------------------------------------------

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "measured")]
struct MeasuredV1 {
    value: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "measured_v2")]
struct Measured {
    value: i64,
    unit: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Gauge {
    id: Uuid,
    version: i64,
    sum: i64,
    units: Vec<String>,
}

#[marten::apply]
impl Gauge {
    fn apply(&mut self, e: &Measured) {
        self.sum += e.value;
        self.units.push(e.unit.clone());
    }
}

/// How many times the counting upcaster of
/// [`a_live_fold_from_a_snapshot_does_not_read_the_upcast_events_before_it`] ran.
static MEASURED_UPCASTS: AtomicUsize = AtomicUsize::new(0);

fn measured(value: i64) -> Measured {
    Measured {
        value,
        unit: "cm".into(),
    }
}

/// Snapshots (marten-rs `.snapshot::<A>(n)`) combined with upcasting (Marten's
/// `MultipleSchemaVersions` folds upcast events into a snapshotted cart): a stream of
/// old-shape events and new ones, snapshotted every 4 events. The first fold upcasts
/// every old event and writes a snapshot; later folds start from it and upcast none of
/// the events before it (counted in the upcaster), while a fold up to an earlier version
/// folds from the start again. A store whose upcaster now fails still folds, fetches for
/// writing and appends from the snapshot; reads of the old events themselves fail with
/// `Error::Upcast`. The stored rows keep their old name and JSON throughout.
#[tokio::test]
async fn a_live_fold_from_a_snapshot_does_not_read_the_upcast_events_before_it() {
    let (schema, b) = builder("evo_snap_upcast");
    let old = ok(b.event::<MeasuredV1>().build().await);
    let id = Uuid::now_v7();
    let mut s = old.lightweight_session();
    ok(s.events()
        .start_stream(id, (1..=4).map(|value| MeasuredV1 { value })));
    ok(s.save_changes().await);

    let store = ok(builder_on(&schema)
        .upcast_from::<MeasuredV1, Measured, _>("measured", |old| {
            MEASURED_UPCASTS.fetch_add(1, Ordering::SeqCst);
            Measured {
                value: old.value,
                unit: "mm".into(),
            }
        })
        .snapshot::<Gauge>(4)
        .build()
        .await);
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [measured(5)]));
    ok(s.save_changes().await);

    let g: Gauge = ok(s.events().aggregate_stream(id).await).expect("gauge");
    assert_eq!((g.version, g.sum), (5, 15));
    assert_eq!(g.units, ["mm", "mm", "mm", "mm", "cm"]);
    assert_eq!(MEASURED_UPCASTS.load(Ordering::SeqCst), 4);
    let snapshot_version: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT (data->>'version')::bigint FROM mt_doc_gauge", &[])
        .await
        .expect("a snapshot")
        .get(0);
    assert_eq!(snapshot_version, 5);

    ok(s.events().append(id, [measured(6), measured(7)]));
    ok(s.save_changes().await);
    let g: Gauge = ok(s.events().aggregate_stream(id).await).expect("gauge");
    assert_eq!((g.version, g.sum, g.units.len()), (7, 28, 7));
    assert_eq!(
        MEASURED_UPCASTS.load(Ordering::SeqCst),
        4,
        "folded from the snapshot: no old event upcast again"
    );
    let early: Gauge = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().up_to_version(3))
        .await)
    .expect("gauge up to 3");
    assert_eq!((early.version, early.sum), (3, 6));
    assert_eq!(MEASURED_UPCASTS.load(Ordering::SeqCst), 7);

    // The upcaster now refuses every old event.
    let failing = ok(builder_on(&schema)
        .upcast::<Measured, _>("measured", |_| Err("the old unit is gone".to_owned()))
        .snapshot::<Gauge>(4)
        .build()
        .await);
    let mut s = failing.lightweight_session();
    let g: Gauge = ok(s.events().aggregate_stream(id).await).expect("from the snapshot");
    assert_eq!((g.version, g.sum), (7, 28));
    let latest: Gauge = ok(s.events().fetch_latest(id).await).expect("latest");
    assert_eq!(latest.version, 7);
    let mut w = ok(s.events().fetch_for_writing::<Gauge>(id).await);
    assert_eq!(w.version(), 7);
    ok(w.append([measured(8)]));
    ok(s.save_changes().await);
    let first_seq: i64 = schema
        .raw_client()
        .await
        .query_one(
            "SELECT seq_id FROM mt_events WHERE stream_id = $1 AND version = 1",
            &[&id],
        )
        .await
        .expect("seq")
        .get(0);
    for err in [
        expect_err(s.events().fetch_stream(id).await),
        expect_err(
            s.events()
                .aggregate_stream_with::<Gauge>(id, StreamRange::all().up_to_version(2))
                .await,
        ),
    ] {
        match err {
            marten::Error::Upcast {
                event_type,
                target,
                sequence,
                stream,
                message,
            } => assert_eq!(
                (
                    event_type.as_str(),
                    target,
                    sequence,
                    stream,
                    message.as_str()
                ),
                (
                    "measured",
                    "measured_v2",
                    first_seq,
                    Some(StreamId::Uuid(id)),
                    "the old unit is gone"
                )
            ),
            other => panic!("expected Upcast, got {other:?}"),
        }
    }
    let rows = schema
        .raw_client()
        .await
        .query(
            "SELECT type, data FROM mt_events WHERE stream_id = $1 AND version <= 4 \
             ORDER BY version",
            &[&id],
        )
        .await
        .expect("rows");
    for (i, row) in rows.iter().enumerate() {
        let (ty, data): (String, serde_json::Value) = (row.get(0), row.get(1));
        assert_eq!(ty, "measured");
        assert_eq!(data, serde_json::json!({ "value": i as i64 + 1 }));
    }
    assert_eq!(rows.len(), 4);
}

// ---------------------------------------------------------------------------------------
// Lifecycles agree over evolved events (SnapshotLifecycleCompliance).
// ---------------------------------------------------------------------------------------

mod parcel_old {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "parcel_shipped")]
    pub struct ParcelShipped {
        pub to: String,
    }

    /// The former name of `ParcelScanned`, same shape.
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "item_scanned")]
    pub struct ItemScanned {
        pub location: String,
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "parcel_shipped_v2")]
struct ParcelShipped {
    destination: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "parcel_scanned", aliases = ["item_scanned"])]
struct ParcelScanned {
    location: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ParcelDelivered {}

macro_rules! parcel {
    ($name:ident) => {
        #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
        struct $name {
            id: Uuid,
            version: i64,
            destination: String,
            scans: Vec<String>,
            delivered: bool,
        }

        #[marten::apply]
        impl $name {
            fn create(e: &ParcelShipped) -> Self {
                $name {
                    id: Uuid::nil(),
                    version: 0,
                    destination: e.destination.clone(),
                    scans: vec![],
                    delivered: false,
                }
            }
            fn apply(&mut self, e: &ParcelScanned) {
                self.scans.push(e.location.clone());
            }
            fn apply(&mut self, _e: &ParcelDelivered) {
                self.delivered = true;
            }
        }
    };
}

parcel!(ParcelInline);
parcel!(ParcelAsync);
parcel!(ParcelLive);

/// Port of JasperFx.Events' `SnapshotLifecycleCompliance` (`an_inline_snapshot_matches_the_live_fold`,
/// `an_async_snapshot_is_not_written_by_the_committing_transaction`,
/// `an_async_snapshot_matches_the_live_fold_once_the_daemon_catches_up`,
/// `a_snapshot_keeps_up_with_events_appended_after_it_was_created`), over a stream that
/// starts with an upcast event and an aliased one: the inline document, the async
/// document (absent until the daemon runs) and the live fold with a snapshot policy
/// (first folded in full, then from its snapshot) reach the same state.
#[tokio::test]
async fn inline_async_and_snapshotted_live_folds_agree_over_evolved_events() {
    let (schema, b) = builder("evo_lifecycles");
    let old = ok(b.build().await);
    let id = Uuid::now_v7();
    let mut s = old.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(parcel_old::ParcelShipped {
                to: "Rivendell".into(),
            }),
            PendingEvent::new(parcel_old::ItemScanned {
                location: "Bree".into(),
            }),
        ],
    ));
    ok(s.save_changes().await);

    let store = ok(builder_on(&schema)
        .upcast_from::<parcel_old::ParcelShipped, ParcelShipped, _>("parcel_shipped", |o| {
            ParcelShipped { destination: o.to }
        })
        .projection::<ParcelInline>(Lifecycle::Inline)
        .projection::<ParcelAsync>(Lifecycle::Async)
        .snapshot::<ParcelLive>(2)
        .build()
        .await);
    let mut s = store.lightweight_session();
    let mut w = ok(s.events().fetch_for_writing::<ParcelInline>(id).await);
    assert_eq!(w.version(), 2);
    ok(w.append([ParcelScanned {
        location: "Weathertop".into(),
    }]));
    ok(s.save_changes().await);
    let live: ParcelLive = ok(s.events().aggregate_stream(id).await).expect("live");
    ok(s.events().append(id, [ParcelDelivered {}]));
    ok(s.save_changes().await);

    let story = |version, destination: &str, scans: &[String], delivered| {
        (version, destination.to_owned(), scans.to_vec(), delivered)
    };
    let want = story(
        4,
        "Rivendell",
        &["Bree".to_owned(), "Weathertop".to_owned()],
        true,
    );
    assert_eq!(
        story(live.version, &live.destination, &live.scans, live.delivered),
        story(
            3,
            "Rivendell",
            &["Bree".to_owned(), "Weathertop".to_owned()],
            false
        )
    );
    let inline = ok(store.query_session().load::<ParcelInline>(&id).await).expect("inline");
    assert_eq!(
        story(
            inline.version,
            &inline.destination,
            &inline.scans,
            inline.delivered
        ),
        want
    );
    assert_eq!(inline.id, id);
    assert!(
        ok(store.query_session().load::<ParcelAsync>(&id).await).is_none(),
        "an async document is not written by the committing transaction"
    );
    let snapshot: i64 = schema
        .raw_client()
        .await
        .query_one(
            "SELECT (data->>'version')::bigint FROM mt_doc_parcellive",
            &[],
        )
        .await
        .expect("a live snapshot")
        .get(0);
    assert_eq!(snapshot, 3);
    let live: ParcelLive = ok(s.events().aggregate_stream(id).await).expect("live");
    assert_eq!(
        story(live.version, &live.destination, &live.scans, live.delivered),
        want,
        "the live fold from its snapshot keeps up"
    );
    catch_up(&store).await;
    let projected = ok(store.query_session().load::<ParcelAsync>(&id).await).expect("async");
    assert_eq!(
        story(
            projected.version,
            &projected.destination,
            &projected.scans,
            projected.delivered
        ),
        want
    );
    assert_eq!(projected.id, id);
}

// ---------------------------------------------------------------------------------------
// One type under four stored names, in projections and queries (NamespaceChange).
// ---------------------------------------------------------------------------------------

mod reservation_old {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "item_reserved")]
    pub struct ItemReserved {
        pub warehouse: String,
        pub sku: String,
    }

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "stock_reserved")]
    pub struct StockReserved {
        pub warehouse: String,
        pub sku: String,
    }

    /// An older shape: the warehouse was `wh`.
    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    #[event(name = "reservation_made")]
    pub struct ReservationMade {
        pub wh: String,
        pub sku: String,
    }
}

/// Its current name, two former names of the same shape, and an older shape upcast.
#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "sku_reserved", aliases = ["item_reserved", "stock_reserved"])]
struct SkuReserved {
    warehouse: String,
    sku: String,
}

/// A multi-stream view: the skus reserved per warehouse, in event order.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct WarehouseSkus {
    id: String,
    skus: Vec<String>,
}

#[marten::apply]
impl WarehouseSkus {
    fn identities(e: &SkuReserved) -> Vec<String> {
        vec![e.warehouse.clone()]
    }
    fn create(e: &SkuReserved) -> Self {
        WarehouseSkus {
            id: String::new(),
            skus: vec![e.sku.clone()],
        }
    }
    fn apply(&mut self, e: &SkuReserved) {
        self.skus.push(e.sku.clone());
    }
}

/// One document per event an event projection was given.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ReservationSeen {
    id: String,
    stored_type: String,
    event_type: String,
    sku: String,
}

struct ReservationLog;

impl marten::EventProjection for ReservationLog {
    fn name(&self) -> &'static str {
        "ReservationLog"
    }
    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut marten::ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(e) = event.data_as::<SkuReserved>() {
            ops.store(ReservationSeen {
                id: event.id.to_string(),
                stored_type: event.stored_type.to_string(),
                event_type: event.event_type.to_string(),
                sku: e.sku.clone(),
            });
        }
        Ok(())
    }
}

type Feed = Arc<Mutex<Vec<(String, String)>>>;

/// A subscription narrowed to `SkuReserved`: the stored name and sku of each event handed.
struct ReservationFeed(Feed);

impl Subscription for ReservationFeed {
    fn name(&self) -> &'static str {
        "reservation_feed"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event::<SkuReserved>()
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        _tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        let mut feed = self
            .0
            .lock()
            .map_err(|_| HandlerError::new("poisoned lock"))?;
        for e in batch.events() {
            let r = e
                .data_as::<SkuReserved>()
                .ok_or_else(|| HandlerError::at(e, "not a SkuReserved"))?;
            feed.push((e.stored_type.to_string(), r.sku.clone()));
        }
        Ok(())
    }
}

/// Port of Marten's `EventsNamespaceChange.HavingEvents_WithSchemaChange_AggregationShouldWork`
/// (`src/EventSourcingTests/SchemaChange/NamespaceChange.cs`: a type renamed, its old
/// name mapped to it), taken past aggregates: one Rust type read from four stored names
/// (its name, two aliases, an upcaster's old name) feeds an async multi-stream
/// projection, an async event projection and a subscription filtered by that type, as
/// that type, and is matched by an event
/// query under its name and aliases (same shape) but not under the upcaster's old name
/// (another shape, documented).
#[tokio::test]
async fn one_type_under_four_stored_names_feeds_projections_and_queries() {
    let (schema, b) = builder("evo_four_names");
    let old = ok(b.build().await);
    let mut s = old.lightweight_session();
    ok(s.events().append(
        Uuid::now_v7(),
        [reservation_old::ItemReserved {
            warehouse: "north".into(),
            sku: "apple".into(),
        }],
    ));
    ok(s.events().append(
        Uuid::now_v7(),
        [reservation_old::StockReserved {
            warehouse: "south".into(),
            sku: "pear".into(),
        }],
    ));
    ok(s.events().append(
        Uuid::now_v7(),
        [reservation_old::ReservationMade {
            wh: "north".into(),
            sku: "plum".into(),
        }],
    ));
    ok(s.save_changes().await);

    let feed = Feed::default();
    let store = ok(builder_on(&schema)
        .upcast::<SkuReserved, _>("reservation_made", |mut json| {
            let old = json.as_object_mut().ok_or("not an object")?;
            let wh = old.remove("wh").ok_or("no wh")?;
            old.insert("warehouse".into(), wh);
            Ok(json)
        })
        .multi_stream_projection::<WarehouseSkus>(Lifecycle::Async)
        .event_projection(ReservationLog, Lifecycle::Async)
        .document::<ReservationSeen>()
        .subscription(ReservationFeed(feed.clone()))
        .build()
        .await);
    let mut s = store.lightweight_session();
    ok(s.events().append(
        Uuid::now_v7(),
        [SkuReserved {
            warehouse: "north".into(),
            sku: "fig".into(),
        }],
    ));
    ok(s.save_changes().await);

    let all = read_all_settled(&store, 4).await;
    let read: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e.stored_type.as_ref(), e.event_type.as_ref()))
        .collect();
    assert_eq!(
        read,
        [
            ("item_reserved", "sku_reserved"),
            ("stock_reserved", "sku_reserved"),
            ("reservation_made", "sku_reserved"),
            ("sku_reserved", "sku_reserved"),
        ]
    );
    assert!(all.iter().all(|e| e.is::<SkuReserved>()));

    catch_up(&store).await;
    let fed = feed.lock().map(|f| f.clone()).unwrap_or_default();
    let pair = |st: &str, sku: &str| (st.to_owned(), sku.to_owned());
    assert_eq!(
        fed,
        [
            pair("item_reserved", "apple"),
            pair("stock_reserved", "pear"),
            pair("reservation_made", "plum"),
            pair("sku_reserved", "fig"),
        ],
        "the subscription is handed every stored name of its type, once, in order"
    );
    let mut q = store.query_session();
    let north = ok(q.load::<WarehouseSkus>(&"north".to_owned()).await).expect("north");
    assert_eq!(north.skus, ["apple", "plum", "fig"]);
    let south = ok(q.load::<WarehouseSkus>(&"south".to_owned()).await).expect("south");
    assert_eq!(south.skus, ["pear"]);
    let raw = schema.raw_client().await;
    let seen: Vec<(String, String, String)> = raw
        .query(
            "SELECT data->>'stored_type', data->>'event_type', data->>'sku' \
             FROM mt_doc_reservationseen ORDER BY data->>'sku'",
            &[],
        )
        .await
        .expect("seen")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let row = |st: &str, sku: &str| (st.to_owned(), "sku_reserved".to_owned(), sku.to_owned());
    assert_eq!(
        seen,
        [
            row("item_reserved", "apple"),
            row("sku_reserved", "fig"),
            row("stock_reserved", "pear"),
            row("reservation_made", "plum"),
        ]
    );

    let north_query = ok(s
        .events()
        .query::<SkuReserved>()
        .filter(|f| f.warehouse.eq("north"))
        .to_list()
        .await);
    let skus: Vec<&str> = north_query
        .iter()
        .filter_map(|e| e.data_as::<SkuReserved>().map(|r| r.sku.as_str()))
        .collect();
    assert_eq!(
        skus,
        ["apple", "fig"],
        "the upcaster's old name is not matched"
    );
    assert_eq!(ok(s.events().query::<SkuReserved>().count().await), 3);
}

// ---------------------------------------------------------------------------------------
// A failing upcaster on the write paths.
// ---------------------------------------------------------------------------------------

/// Marten's upcaster errors surface on every read (`Upcasters.cs` reads through
/// `AggregateStreamAsync` and `FetchForWriting`); marten-rs's `tests/event_evolution.rs`
/// covers `fetch_stream`, `read_all` and live folds. This covers the reads a command
/// handler makes before it appends: `fetch_for_writing`, `fetch_for_writing_expected`,
/// `fetch_for_exclusive_writing` and `fetch_latest` of an inline aggregate without its
/// document fail with `Error::Upcast` naming the stored name, the target and the old
/// event's sequence, nothing is appended, and dropping the session whose exclusive read
/// failed releases the stream for the next writer.
#[tokio::test]
async fn a_failing_upcaster_fails_the_reads_before_a_write_and_appends_nothing() {
    let (schema, b) = builder("evo_failing_writes");
    let old = ok(b.event::<MeasuredV1>().build().await);
    let id = Uuid::now_v7();
    let mut s = old.lightweight_session();
    ok(s.events()
        .start_stream(id, (1..=2).map(|value| MeasuredV1 { value })));
    ok(s.save_changes().await);
    let first_seq: i64 = schema
        .raw_client()
        .await
        .query_one(
            "SELECT seq_id FROM mt_events WHERE stream_id = $1 AND version = 1",
            &[&id],
        )
        .await
        .expect("seq")
        .get(0);

    let store = ok(builder_on(&schema)
        .upcast::<Measured, _>("measured", |json| {
            if json.get("value").and_then(serde_json::Value::as_i64) == Some(1) {
                Err("value 1 has no unit".to_owned())
            } else {
                Ok(serde_json::json!({ "value": json["value"], "unit": "mm" }))
            }
        })
        .projection::<Gauge>(Lifecycle::Inline)
        .exclusive_lock_timeout(Duration::from_secs(2))
        .build()
        .await);
    let check = |label: &str, err: marten::Error| match err {
        marten::Error::Upcast {
            event_type,
            target,
            sequence,
            message,
            ..
        } => assert_eq!(
            (event_type.as_str(), target, sequence, message.as_str()),
            ("measured", "measured_v2", first_seq, "value 1 has no unit"),
            "{label}"
        ),
        other => panic!("{label}: expected Upcast, got {other:?}"),
    };
    let mut s = store.lightweight_session();
    check(
        "fetch_for_writing",
        expect_err(
            s.events()
                .fetch_for_writing::<Gauge>(id)
                .await
                .map(|w| w.version()),
        ),
    );
    check(
        "fetch_for_writing_expected",
        expect_err(
            s.events()
                .fetch_for_writing_expected::<Gauge>(id, 2)
                .await
                .map(|w| w.version()),
        ),
    );
    check(
        "fetch_latest",
        expect_err(s.events().fetch_latest::<Gauge>(id).await),
    );
    let mut locked = store.lightweight_session();
    check(
        "fetch_for_exclusive_writing",
        expect_err(
            locked
                .events()
                .fetch_for_exclusive_writing::<Gauge>(id)
                .await
                .map(|w| w.version()),
        ),
    );
    ok(s.save_changes().await);
    let state = ok(s.events().fetch_stream_state(id).await).expect("stream");
    assert_eq!(state.version, 2, "nothing appended");
    assert!(ok(store.query_session().load::<Gauge>(&id).await).is_none());

    // Dropping the session whose exclusive read failed releases the stream's lock.
    drop(locked);
    let mut other = store.lightweight_session();
    ok(other.events().append_exclusive(id, [measured(3)]).await);
    ok(other.save_changes().await);
    let state = ok(s.events().fetch_stream_state(id).await).expect("stream");
    assert_eq!(state.version, 3);
}
