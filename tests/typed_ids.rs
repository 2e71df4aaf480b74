//! Strong-typed ids (`#[derive(DocumentId)]` newtypes over `Uuid`, `i64` and `String`) as
//! document ids, aggregate stream ids and tags, and ids the store generates (HiLo).

mod common;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(DocumentId, Tag, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OrderId(Uuid);

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct InvoiceNo(i64);

#[derive(DocumentId, Clone, Debug, PartialEq, Eq, Hash)]
struct Sku(String);

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Order {
    id: OrderId,
    customer: String,
    total: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Invoice {
    id: InvoiceNo,
    order: OrderId,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Product {
    id: Sku,
    name: String,
}

/// A plain connection to the test's database, for looking at the schema.
async fn raw_client(schema: &marten_testing::TestSchema) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(schema.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

fn order(id: OrderId, customer: &str, total: i64) -> Order {
    Order {
        id,
        customer: customer.into(),
        total,
    }
}

#[test]
fn a_newtype_id_is_its_inner_value_in_text_json_and_sql() {
    let id = OrderId(Uuid::now_v7());
    assert_eq!(id.to_string(), id.0.to_string());
    assert_eq!(
        serde_json::to_string(&id).expect("json"),
        format!("\"{}\"", id.0)
    );
    let back: OrderId = serde_json::from_str(&format!("\"{}\"", id.0)).expect("json");
    assert_eq!(back, id);
    assert_eq!(OrderId::from(id.0), id);
    assert_eq!(Uuid::from(id), id.0);
    assert_eq!(<OrderId as marten::ColumnType>::SQL_TYPE, "uuid");
    assert_eq!(<InvoiceNo as marten::ColumnType>::SQL_TYPE, "bigint");
    assert_eq!(<Sku as marten::ColumnType>::SQL_TYPE, "text");
    assert_eq!(StreamId::from(id), StreamId::Uuid(id.0));
    assert_eq!(StreamId::from(&id), StreamId::Uuid(id.0));
    assert_eq!(
        StreamId::from(Sku("a".into())),
        StreamId::String("a".into())
    );
}

#[tokio::test]
async fn uuid_i64_and_string_newtypes_store_load_query_and_delete() {
    let (schema, b) = builder("typed_ids_docs");
    let store = ok(b.build().await);
    let (a, c) = (OrderId(Uuid::now_v7()), OrderId(Uuid::now_v7()));
    let mut s = store.lightweight_session();
    ok(s.store(order(a, "ann", 10)));
    ok(s.store(order(c, "cid", 30)));
    ok(s.store(Invoice {
        id: InvoiceNo(7),
        order: a,
    }));
    ok(s.store(Product {
        id: Sku("sku-1".into()),
        name: "kettle".into(),
    }));
    ok(s.save_changes().await);

    let mut q = store.query_session();
    assert_eq!(ok(q.load::<Order>(&a).await), Some(order(a, "ann", 10)));
    let many = ok(q.load_many::<Order>(&[a, c, OrderId(Uuid::now_v7())]).await);
    assert_eq!(many.len(), 2);
    let invoice = ok(q.load::<Invoice>(&InvoiceNo(7)).await).expect("invoice");
    assert_eq!(invoice.order, a);
    let product = ok(q.load::<Product>(&Sku("sku-1".into())).await).expect("product");
    assert_eq!(product.name, "kettle");

    // The typed field of a newtype id takes the newtype (or its inner value).
    let found = ok(q.query::<Order>().filter(|f| f.id.eq(c)).to_list().await);
    assert_eq!(found, vec![order(c, "cid", 30)]);
    let found = ok(q.query::<Order>().filter(|f| f.id.eq(a.0)).to_list().await);
    assert_eq!(found.len(), 1);
    let by_order = ok(q
        .query::<Invoice>()
        .filter(|f| f.order.eq(a))
        .to_list()
        .await);
    assert_eq!(by_order.len(), 1);
    let above = ok(q
        .query::<Invoice>()
        .filter(|f| f.id.gt(InvoiceNo(6)))
        .to_list()
        .await);
    assert_eq!(above.len(), 1);

    let mut s = store.lightweight_session();
    ok(s.delete::<Order>(&a));
    ok(s.delete::<Product>(&Sku("sku-1".into())));
    ok(s.save_changes().await);
    assert_eq!(ok(q.load::<Order>(&a).await), None);
    assert_eq!(ok(q.load::<Product>(&Sku("sku-1".into())).await), None);
    assert!(ok(q.load::<Order>(&c).await).is_some());

    // The id columns have the inner types.
    let client = raw_client(&schema).await;
    for (table, expected) in [
        ("mt_doc_order", "uuid"),
        ("mt_doc_invoice", "bigint"),
        ("mt_doc_product", "text"),
    ] {
        let row = client
            .query_one(
                "SELECT data_type FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 AND column_name = 'id'",
                &[&schema.name(), &table],
            )
            .await
            .expect("column type");
        assert_eq!(row.get::<_, String>(0), expected, "{table}");
    }
}

#[tokio::test]
async fn a_nil_uuid_newtype_gets_a_version_7_uuid_and_an_empty_string_id_is_refused() {
    let (_schema, b) = builder("typed_ids_nil");
    let store = ok(b.build().await);
    let mut s = store.lightweight_session();
    let id = ok(s.store(order(OrderId(Uuid::nil()), "new", 1)));
    assert!(!id.0.is_nil());
    assert_eq!(id.0.get_version_num(), 7);
    let empty = s.store(Product {
        id: Sku(String::new()),
        name: "x".into(),
    });
    assert!(
        matches!(empty, Err(marten::Error::InvalidId { .. })),
        "{empty:?}"
    );
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<Order>(&id).await).map(|o| o.customer),
        Some("new".into())
    );
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    #[tag]
    order: OrderId,
    customer: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct LineAdded {
    #[tag]
    order: OrderId,
    amount: i64,
}

/// An aggregate whose id is a uuid newtype: its stream id.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct OrderSummary {
    id: OrderId,
    version: i64,
    customer: String,
    total: i64,
}

#[marten::apply]
impl OrderSummary {
    fn create(e: &OrderPlaced) -> Self {
        OrderSummary {
            id: e.order,
            version: 0,
            customer: e.customer.clone(),
            total: 0,
        }
    }
    fn apply(&mut self, e: &LineAdded) {
        self.total += e.amount;
    }
}

/// Folds the events a tag query finds.
#[derive(Default, Debug)]
struct OrderTotal {
    total: i64,
}

#[marten::apply]
impl OrderTotal {
    fn apply(&mut self, e: &LineAdded) {
        self.total += e.amount;
    }
}

fn placed(order: OrderId) -> OrderPlaced {
    OrderPlaced {
        order,
        customer: "ann".into(),
    }
}

#[tokio::test]
async fn a_uuid_newtype_is_a_stream_id_inline_and_live() {
    let (_schema, b) = builder("typed_ids_streams");
    let store = ok(b
        .projection::<OrderSummary>(Lifecycle::Inline)
        .build()
        .await);
    let id = OrderId(Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        id,
        [
            PendingEvent::new(placed(id)),
            PendingEvent::new(LineAdded {
                order: id,
                amount: 5,
            }),
        ],
    ));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    ok(s.events().append(
        id,
        [LineAdded {
            order: id,
            amount: 7,
        }],
    ));
    ok(s.save_changes().await);

    let mut q = store.query_session();
    let inline = ok(q.load::<OrderSummary>(&id).await).expect("inline document");
    assert_eq!((inline.id, inline.version, inline.total), (id, 3, 12));

    let mut s = store.lightweight_session();
    let live: OrderSummary = ok(s.events().aggregate_stream(id).await).expect("live");
    assert_eq!(live, inline);
    let state = ok(s.events().fetch_stream_state(id).await).expect("state");
    assert_eq!(state.id, StreamId::Uuid(id.0));

    let mut writing = ok(s.events().fetch_for_writing::<OrderSummary>(id).await);
    assert_eq!(writing.version(), 3);
    assert_eq!(writing.state().map(|o| o.total), Some(12));
    ok(writing.append([LineAdded {
        order: id,
        amount: 1,
    }]));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    assert_eq!(
        ok(q.load::<OrderSummary>(&id).await).map(|o| o.total),
        Some(13)
    );
}

#[tokio::test]
async fn a_newtype_id_is_a_tag() {
    assert_eq!(<OrderId as marten::Tag>::TAG_TYPE, "order_id");
    let (_schema, b) = builder("typed_ids_tags");
    let store = ok(b.build().await);
    let (id, other) = (OrderId(Uuid::now_v7()), OrderId(Uuid::now_v7()));
    let mut s = store.lightweight_session();
    for (order, amount) in [(id, 2), (other, 100), (id, 3)] {
        ok(s.events()
            .append(Uuid::now_v7(), [LineAdded { order, amount }]));
    }
    ok(s.save_changes().await);

    let query = || TagQuery::new().tag(id).event_types::<(LineAdded,)>();
    let mut s = store.lightweight_session();
    let mut boundary = ok(s
        .events()
        .fetch_for_writing_by_tags::<OrderTotal>(query())
        .await);
    assert_eq!(boundary.events().len(), 2);
    assert_eq!(boundary.state().map(|t| t.total), Some(5));
    assert!(boundary
        .versions()
        .iter()
        .any(|(tag, _)| *tag == marten::EventTag::of(&id)));
    assert_eq!(marten::EventTag::of(&id).value, id.0.to_string());
    ok(boundary.append([LineAdded {
        order: id,
        amount: 1,
    }]));
    ok(s.save_changes().await);
}

/// An aggregate over a string newtype, on a store with string stream ids.
#[derive(DocumentId, Clone, Debug, PartialEq, Eq, Hash)]
struct CartKey(String);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ItemAdded {
    item: String,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Cart {
    id: CartKey,
    version: i64,
    items: Vec<String>,
}

#[marten::apply]
impl Cart {
    fn apply(&mut self, e: &ItemAdded) {
        self.items.push(e.item.clone());
    }
}

impl Default for CartKey {
    fn default() -> Self {
        CartKey("unset".into())
    }
}

#[tokio::test]
async fn a_string_newtype_is_a_string_stream_id() {
    let (_schema, b) = builder("typed_ids_string_streams");
    let store = ok(b
        .stream_identity(StreamIdentity::String)
        .projection::<Cart>(Lifecycle::Inline)
        .build()
        .await);
    let key = CartKey("cart-1".into());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        &key,
        [
            ItemAdded { item: "tea".into() },
            ItemAdded { item: "cup".into() },
        ],
    ));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    let cart = ok(q.load::<Cart>(&key).await).expect("cart");
    assert_eq!((cart.id.clone(), cart.version), (key.clone(), 2));
    assert_eq!(cart.items, ["tea", "cup"]);
    let mut s = store.lightweight_session();
    let live: Cart = ok(s.events().aggregate_stream(key.clone()).await).expect("live");
    assert_eq!(live, cart);
}

/// A document whose `i64` id the store generates.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Ticket {
    id: i64,
    title: String,
}

/// A document whose `i32` id the store generates.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Seat {
    id: i32,
}

/// A store on `schema` (another "process" on the same database schema).
async fn store_on(schema: &marten_testing::TestSchema, block_size: u32) -> DocumentStore {
    ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(4)
        .hilo_block_size(block_size)
        .build()
        .await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hilo_ids_are_unique_across_concurrent_tasks_and_stores() {
    const TASKS: usize = 16;
    const IDS: usize = 500;
    let (schema, b) = builder("typed_ids_hilo_race");
    let first = ok(b.build().await);
    // Four stores on one schema, as four processes would be, with different block sizes
    // (blocks never overlap whatever their sizes).
    let mut stores = vec![first];
    for size in [2, 7, 250] {
        stores.push(store_on(&schema, size).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = stores[t % stores.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut ids = Vec::with_capacity(IDS);
            for _ in 0..IDS {
                ids.push(ok(store.next_id::<Ticket>().await));
            }
            ids
        }));
    }
    let mut all = std::collections::HashSet::new();
    for task in tasks {
        let ids = task.await.expect("task");
        // Increasing within one task (each store hands its blocks out in order).
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        for id in ids {
            assert!(id > 0);
            assert!(all.insert(id), "id {id} handed out twice");
        }
    }
    assert_eq!(all.len(), TASKS * IDS);
    // Another document type has a sequence of its own.
    assert_eq!(ok(stores[1].next_id::<Seat>().await), 1);
}

#[tokio::test]
async fn documents_with_generated_ids_are_stored_and_load_back() {
    let (schema, b) = builder("typed_ids_hilo_docs");
    let store = ok(b.hilo_block_size(10).build().await);
    let other = store_on(&schema, 3).await;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = if t % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut s = store.lightweight_session();
            let mut ids = Vec::new();
            for i in 0..25 {
                let title = format!("task {t} ticket {i}");
                ids.push(ok(s.insert_new(Ticket { id: 0, title }).await));
                ids.push(
                    ok(s.store_new(Invoice {
                        id: InvoiceNo(0),
                        order: OrderId(Uuid::now_v7()),
                    })
                    .await)
                    .0,
                );
            }
            ok(s.save_changes().await);
            ids
        }));
    }
    let mut ticket_ids = Vec::new();
    for task in tasks {
        let ids = task.await.expect("task");
        ticket_ids.extend(ids.iter().step_by(2).copied());
    }
    let mut q = store.query_session();
    let tickets = ok(q.load_many::<Ticket>(&ticket_ids).await);
    assert_eq!(tickets.len(), 100);
    assert_eq!(ok(q.query::<Ticket>().count().await), 100);
    assert_eq!(ok(q.query::<Invoice>().count().await), 100);
    let first = ok(q.load::<Ticket>(&ticket_ids[0]).await).expect("ticket");
    assert_eq!(first.title, "task 0 ticket 0");

    // An id given by the caller is kept.
    let mut s = store.lightweight_session();
    assert_eq!(
        ok(s.insert_new(Ticket {
            id: -5,
            title: "mine".into()
        })
        .await),
        -5
    );
    ok(s.save_changes().await);
}

#[tokio::test]
async fn the_hilo_floor_is_raised_and_an_i32_id_that_does_not_fit_is_refused() {
    let (_schema, b) = builder("typed_ids_hilo_floor");
    let store = ok(b.build().await);
    assert_eq!(ok(store.next_id::<Ticket>().await), 1);
    ok(store.reset_hilo_floor::<Ticket>(1_000_000).await);
    assert_eq!(ok(store.next_id::<Ticket>().await), 1_000_001);
    // Never lowered.
    ok(store.reset_hilo_floor::<Ticket>(10).await);
    assert!(ok(store.next_id::<Ticket>().await) > 1_000_001);

    ok(store.reset_hilo_floor::<Seat>(i64::from(i32::MAX)).await);
    let too_big = store.next_id::<Seat>().await;
    assert!(
        matches!(too_big, Err(marten::Error::InvalidId { .. })),
        "{too_big:?}"
    );
}

/// At the top of `i64` the allocator hands out the last ids and then refuses with a
/// typed error, on every later call (it used to overflow: a panic in a debug build, ids
/// from `i64::MIN` on in a release build). A negative floor is refused.
#[tokio::test]
async fn hilo_ids_end_at_i64_max_with_a_typed_error() {
    let (_schema, b) = builder("typed_ids_hilo_max");
    let store = ok(b.hilo_block_size(2).build().await);
    ok(store.reset_hilo_floor::<Ticket>(i64::MAX - 2).await);
    assert_eq!(ok(store.next_id::<Ticket>().await), i64::MAX - 1);
    assert_eq!(ok(store.next_id::<Ticket>().await), i64::MAX);
    for _ in 0..2 {
        match store.next_id::<Ticket>().await {
            Err(marten::Error::InvalidId {
                document_type,
                reason,
                ..
            }) => {
                assert!(document_type.contains("Ticket"), "{document_type}");
                assert!(reason.contains("used up"), "{reason}");
            }
            other => panic!("an id past i64::MAX: {other:?}"),
        }
    }
    // Another type's ids are not affected.
    assert_eq!(ok(store.next_id::<Invoice>().await), InvoiceNo(1));
    let negative = store.reset_hilo_floor::<Invoice>(-5).await;
    assert!(
        matches!(negative, Err(marten::Error::InvalidId { .. })),
        "{negative:?}"
    );
}

#[tokio::test]
async fn without_schema_changes_a_missing_hilo_table_is_an_error_naming_it() {
    let (schema, b) = builder("typed_ids_hilo_none");
    let store = ok(b.build().await);
    ok(store.next_id::<Ticket>().await);
    let client = raw_client(&schema).await;
    client
        .batch_execute(&format!("DROP TABLE {}.mt_hilo", schema.name()))
        .await
        .expect("drop");
    let none = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .auto_create(AutoCreate::None)
        .build()
        .await);
    match none.next_id::<Ticket>().await {
        Err(marten::Error::SchemaObjectMissing { object }) => {
            assert!(object.contains("mt_hilo"), "{object}")
        }
        other => panic!("expected a missing mt_hilo, got {other:?}"),
    }
}

#[tokio::test]
async fn identity_and_dirty_tracked_sessions_key_newtype_ids() {
    let (_schema, b) = builder("typed_ids_sessions");
    let store = ok(b.build().await);
    let id = OrderId(Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.store(order(id, "ann", 1)));
    ok(s.save_changes().await);

    let mut tracked = store.dirty_tracked_session();
    let loaded = ok(tracked.load::<Order>(&id).await).expect("loaded");
    loaded.total = 42;
    ok(tracked.save_changes().await);
    let mut identity = store.identity_session();
    let first = ok(identity.load::<Order>(&id).await).expect("first");
    let second = ok(identity.load::<Order>(&id).await).expect("second");
    assert_eq!((first.total, second.total), (42, 42));
}

#[tokio::test]
async fn an_insert_with_a_generated_id_cancelled_at_every_await_leaves_the_pool_clean() {
    use marten_testing::cancel::{assert_clean, cancel_at_every_await, Operation};
    let within = std::time::Duration::from_secs(10);
    let (schema, b) = common::named_builder("typed_ids_hilo_cancel");
    // One connection and blocks of one id: every insert reserves a block first.
    let store = ok(b
        .pool_size(1)
        .hilo_block_size(1)
        .document::<Ticket>()
        .build()
        .await);
    let make = |k: usize| -> Operation<marten::Result<i64>> {
        let store = store.clone();
        Box::pin(async move {
            let mut s = store.lightweight_session();
            let id = s
                .insert_new(Ticket {
                    id: 0,
                    title: format!("attempt {k}"),
                })
                .await?;
            s.save_changes().await?;
            Ok(id)
        })
    };
    let (schema, probe) = (&schema, &store);
    let after_drop = |_k: usize| async move {
        let raw = schema.raw_client().await;
        assert_clean(&raw, schema.name(), within).await;
        // The pool's one connection is free again.
        ok(probe.next_id::<Seat>().await);
    };
    let run = cancel_at_every_await(100, make, after_drop).await;
    let id = ok(run.output);
    assert!(run.cancelled >= 2, "only {} pending polls", run.cancelled);
    let mut s = store.lightweight_session();
    let ticket = ok(s.load::<Ticket>(&id).await).expect("ticket");
    assert_eq!(ticket.title, format!("attempt {}", run.cancelled + 1));
    // The session holds the pool's one connection: its next block is reserved on it.
    // Blocks reserved by dropped attempts are skipped, never handed out again.
    let next = ok(s
        .insert_new(Ticket {
            id: 0,
            title: "next".into(),
        })
        .await);
    assert!(next > id);
    ok(s.save_changes().await);
}

/// Newtype ids go through binary `COPY` as their inner type.
#[tokio::test]
async fn newtype_ids_bulk_insert_as_their_inner_type() {
    let (_schema, b) = builder("typed_ids_bulk");
    let store = ok(b
        .document::<Order>()
        .document::<Invoice>()
        .document::<Product>()
        .build()
        .await);
    let orders: Vec<Order> = (0..3)
        .map(|i| Order {
            id: OrderId(Uuid::now_v7()),
            customer: "c".into(),
            total: i,
        })
        .collect();
    let ids: Vec<OrderId> = orders.iter().map(|o| o.id).collect();
    assert_eq!(ok(store.bulk_insert(orders, BulkMode::InsertOnly).await), 3);
    let invoices = vec![Invoice {
        id: InvoiceNo(7),
        order: ids[0],
    }];
    assert_eq!(
        ok(store.bulk_insert(invoices, BulkMode::Overwrite).await),
        1
    );
    let products = vec![Product {
        id: Sku("a-1".into()),
        name: "a".into(),
    }];
    assert_eq!(
        ok(store
            .bulk_insert(products, BulkMode::IgnoreDuplicates)
            .await),
        1
    );
    let mut q = store.query_session();
    assert_eq!(ok(q.load_many::<Order>(&ids).await).len(), 3);
    assert_eq!(
        ok(q.load::<Invoice>(&InvoiceNo(7)).await).map(|i| i.order),
        Some(ids[0])
    );
    assert!(ok(q.load::<Product>(&Sku("a-1".into())).await).is_some());
}

/// A floor raised on the server whose answer never came back (the caller gave up) leaves
/// this store no ids below it: the current block is dropped before the statement is sent.
#[tokio::test]
async fn a_raised_hilo_floor_whose_answer_was_lost_leaves_no_ids_below_it() {
    use marten_testing::fault::{Direction, Faults};
    use std::time::Duration;
    let (schema, _) = builder("typed_ids_hilo_lost");
    let proxy = marten_testing::FaultProxy::start(&schema.host_port())
        .await
        .expect("start the proxy");
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url_via_addr(proxy.addr()))
        .schema(schema.name())
        .pool_size(1)
        .document::<Ticket>()
        .build()
        .await);
    assert_eq!(ok(store.next_id::<Ticket>().await), 1);
    // Prepared on the one connection: the raise is sent at once, not after a Parse.
    ok(store.reset_hilo_floor::<Ticket>(0).await);
    assert_eq!(ok(store.next_id::<Ticket>().await), 1001);
    proxy.set_global(Faults::delay(
        Direction::ServerToClient,
        Duration::from_millis(1500),
    ));
    let raised = tokio::time::timeout(
        Duration::from_millis(500),
        store.reset_hilo_floor::<Ticket>(1_000_000),
    )
    .await;
    assert!(raised.is_err(), "the caller gave up before the answer came");
    proxy.heal();
    let id = ok(store.next_id::<Ticket>().await);
    assert!(id > 1_000_000, "an id below the floor was handed out: {id}");
}

/// The used-up error of `D`'s HiLo ids, or a panic naming what came instead.
fn assert_used_up<T: std::fmt::Debug>(result: marten::Result<T>) {
    match result {
        Err(marten::Error::InvalidId { reason, .. }) => {
            assert!(reason.contains("used up"), "{reason}");
        }
        other => panic!("an id past i64::MAX: {other:?}"),
    }
}

/// With fewer ids left below `i64::MAX` than a block holds, the last block is cut short
/// at `i64::MAX`: every one of them is handed out, in order, then `InvalidId` ("used
/// up"), for this store and any other on the schema. (Once the block that would pass
/// `i64::MAX` was refused whole: "used up" with 500 ids never handed out.)
#[tokio::test]
async fn the_last_hilo_ids_below_i64_max_are_handed_out_in_a_short_block() {
    let (schema, b) = builder("typed_ids_hilo_short");
    let store = ok(b.hilo_block_size(1000).build().await);
    ok(store.reset_hilo_floor::<Ticket>(i64::MAX - 500).await);
    for expected in i64::MAX - 499..=i64::MAX {
        assert_eq!(ok(store.next_id::<Ticket>().await), expected);
    }
    assert_used_up(store.next_id::<Ticket>().await);
    assert_used_up(store.next_id::<Ticket>().await);
    let other = store_on(&schema, 7).await;
    assert_used_up(other.next_id::<Ticket>().await);
    // A bulk insert of documents needing ids refuses them too, before anything is sent.
    let tickets = (0..5).map(|_| Ticket {
        id: 0,
        title: "late".into(),
    });
    assert_used_up(store.bulk_insert(tickets, BulkMode::InsertOnly).await);
}

/// Bulk inserts assign HiLo ids to zero ids of integer newtypes and of `i32`: an `i32`
/// id past `i32::MAX` is `InvalidId` and nothing is written.
#[tokio::test]
async fn bulk_inserts_assign_hilo_ids_to_newtype_and_i32_ids() {
    let (schema, b) = builder("typed_ids_bulk_hilo");
    let store = ok(b.hilo_block_size(2).build().await);
    let order = OrderId(Uuid::now_v7());
    let invoices = (0..5).map(|_| Invoice {
        id: InvoiceNo(0),
        order,
    });
    assert_eq!(
        ok(store.bulk_insert(invoices, BulkMode::InsertOnly).await),
        5
    );
    let mut q = store.query_session();
    let ids: Vec<InvoiceNo> = (1..=5).map(InvoiceNo).collect();
    assert_eq!(ok(q.load_many::<Invoice>(&ids).await).len(), 5);

    let seats = (0..3).map(|_| Seat { id: 0 });
    assert_eq!(ok(store.bulk_insert(seats, BulkMode::Overwrite).await), 3);
    ok(store
        .reset_hilo_floor::<Seat>(i64::from(i32::MAX) - 1)
        .await);
    let seats = (0..3).map(|_| Seat { id: 0 });
    let too_big = store.bulk_insert(seats, BulkMode::Overwrite).await;
    assert!(
        matches!(too_big, Err(marten::Error::InvalidId { .. })),
        "{too_big:?}"
    );
    let raw = schema.raw_client().await;
    let seats: i64 = raw
        .query_one("SELECT count(*) FROM mt_doc_seat", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(seats, 3);
}

/// Stores with different block sizes racing for the last ids below `i64::MAX`: each of
/// the 1,501 left is handed out exactly once (the short last block reads the value it
/// replaces with the row locked), then every store refuses with "used up".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_racing_for_the_last_hilo_ids_hand_each_out_once() {
    const TASKS: usize = 8;
    // Odd, and every block size even: only a short last block hands out the last id.
    const LEFT: i64 = 1_501;
    let (schema, b) = builder("typed_ids_hilo_last_race");
    let first = ok(b.build().await);
    ok(first.reset_hilo_floor::<Ticket>(i64::MAX - LEFT).await);
    let mut stores = vec![first];
    for size in [2, 8, 250] {
        stores.push(store_on(&schema, size).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = stores[t % stores.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut ids = Vec::new();
            loop {
                match store.next_id::<Ticket>().await {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        assert_used_up::<()>(Err(e));
                        return ids;
                    }
                }
            }
        }));
    }
    let mut all = std::collections::HashSet::new();
    for task in tasks {
        for id in task.await.expect("task") {
            assert!(id > i64::MAX - LEFT, "{id}");
            assert!(all.insert(id), "id {id} handed out twice");
        }
    }
    assert_eq!(all.len() as i64, LEFT);
}
