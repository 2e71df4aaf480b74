//! Stored event type names claimed by two Rust types: every way a type gets registered
//! (`.event`, the projections' and snapshots' event types, aliases, upcasters, and an
//! aggregate first folded after build) refuses a name another type already has, naming
//! the stored name and both Rust types; the same type registered twice is fine, and an
//! explicit `#[event(name = "..")]` resolves a clash.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

/// Two types named `Created`: by default both are stored as "created".
mod orders {
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Created {
        pub amount: i64,
    }
}

mod invoices {
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct Created {
        pub amount: i64,
    }
}

/// The same clash, resolved by an explicit name.
mod billing {
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[event(name = "invoice_created")]
    pub struct Created {
        pub amount: i64,
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Order {
    id: Uuid,
    version: i64,
    amount: i64,
}

#[marten::apply]
impl Order {
    fn create(e: &orders::Created) -> Self {
        Order {
            id: Uuid::nil(),
            version: 0,
            amount: e.amount,
        }
    }
}

/// A second aggregate of `orders::Created`: the same type in two projections.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct OrderCount {
    id: Uuid,
    version: i64,
    created: u32,
}

#[marten::apply]
impl OrderCount {
    fn apply(&mut self, _e: &orders::Created) {
        self.created += 1;
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Invoice {
    id: Uuid,
    version: i64,
    amount: i64,
}

#[marten::apply]
impl Invoice {
    fn create(e: &invoices::Created) -> Self {
        Invoice {
            id: Uuid::nil(),
            version: 0,
            amount: e.amount,
        }
    }
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Bill {
    id: Uuid,
    version: i64,
    amount: i64,
}

#[marten::apply]
impl Bill {
    fn create(e: &billing::Created) -> Self {
        Bill {
            id: Uuid::nil(),
            version: 0,
            amount: e.amount,
        }
    }
}

/// A type whose former name is "created".
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "order_opened", aliases = ["created"])]
struct OrderOpened {
    amount: i64,
}

fn orders_created() -> &'static str {
    std::any::type_name::<orders::Created>()
}

fn invoices_created() -> &'static str {
    std::any::type_name::<invoices::Created>()
}

/// The message of a configuration error, or why the result is not one.
fn configuration_error<T>(r: marten::Result<T>) -> String {
    match r {
        Err(Error::Configuration(message)) => message,
        Err(e) => panic!("expected Error::Configuration, got {e} ({e:?})"),
        Ok(_) => panic!("expected Error::Configuration, got Ok"),
    }
}

/// Asserts that `message` names the stored name and both Rust types.
#[track_caller]
fn names_both(message: &str, stored: &str, a: &str, b: &str) {
    assert!(
        message.contains(&format!("{stored:?}")) && message.contains(a) && message.contains(b),
        "the error should name {stored:?}, `{a}` and `{b}`: {message}"
    );
}

#[tokio::test]
async fn two_types_of_one_name_in_projections_fail_build() {
    let (_schema, b) = builder("evn_two_projections");
    let built = b
        .projection::<Order>(Lifecycle::Inline)
        .projection::<Invoice>(Lifecycle::Live)
        .build()
        .await;
    let message = configuration_error(built);
    names_both(&message, "created", orders_created(), invoices_created());

    // Whichever comes first, and through a snapshot policy too.
    let (_schema, b) = builder("evn_two_projections_rev");
    let built = b
        .projection::<Invoice>(Lifecycle::Live)
        .projection::<Order>(Lifecycle::Async)
        .build()
        .await;
    names_both(
        &configuration_error(built),
        "created",
        orders_created(),
        invoices_created(),
    );
    let (_schema, b) = builder("evn_snapshot");
    let built = b
        .projection::<Order>(Lifecycle::Inline)
        .snapshot::<Invoice>(10)
        .build()
        .await;
    names_both(
        &configuration_error(built),
        "created",
        orders_created(),
        invoices_created(),
    );
}

#[tokio::test]
async fn an_event_type_and_a_projection_of_one_name_fail_build() {
    let (_schema, b) = builder("evn_event_then_projection");
    let built = b
        .event::<invoices::Created>()
        .projection::<Order>(Lifecycle::Inline)
        .build()
        .await;
    names_both(
        &configuration_error(built),
        "created",
        orders_created(),
        invoices_created(),
    );

    let (_schema, b) = builder("evn_projection_then_event");
    let built = b
        .projection::<Order>(Lifecycle::Live)
        .event::<invoices::Created>()
        .build()
        .await;
    names_both(
        &configuration_error(built),
        "created",
        orders_created(),
        invoices_created(),
    );
}

#[tokio::test]
async fn aliases_and_upcasters_clash_with_projections_event_types() {
    let opened = std::any::type_name::<OrderOpened>();
    // An alias that is a projection's event type name, either way round.
    let (_schema, b) = builder("evn_alias");
    let built = b
        .projection::<Order>(Lifecycle::Inline)
        .event::<OrderOpened>()
        .build()
        .await;
    names_both(
        &configuration_error(built),
        "created",
        orders_created(),
        opened,
    );
    let (_schema, b) = builder("evn_alias_first");
    let built = b
        .event::<OrderOpened>()
        .projection::<Order>(Lifecycle::Inline)
        .build()
        .await;
    names_both(
        &configuration_error(built),
        "created",
        orders_created(),
        opened,
    );

    // An upcaster's old name that is a projection's event type name, either way round.
    let billing = std::any::type_name::<billing::Created>();
    let (_schema, b) = builder("evn_upcast");
    let built = b
        .projection::<Order>(Lifecycle::Live)
        .upcast::<billing::Created, _>("created", Ok)
        .build()
        .await;
    names_both(
        &configuration_error(built),
        "created",
        orders_created(),
        billing,
    );
    let (_schema, b) = builder("evn_upcast_first");
    let built = b
        .upcast::<billing::Created, _>("created", Ok)
        .projection::<Order>(Lifecycle::Live)
        .build()
        .await;
    names_both(
        &configuration_error(built),
        "created",
        orders_created(),
        billing,
    );
}

#[tokio::test]
async fn one_type_registered_many_ways_builds() {
    let (_schema, b) = builder("evn_same_type");
    let store = ok(b
        .event::<orders::Created>()
        .projection::<Order>(Lifecycle::Inline)
        .projection::<OrderCount>(Lifecycle::Live)
        .event::<orders::Created>()
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [orders::Created { amount: 5 }]));
    ok(s.save_changes().await);
    let count: Option<OrderCount> = ok(s.events().aggregate_stream(id).await);
    assert_eq!(count.map(|c| c.created), Some(1));
    let order: Option<Order> = ok(s.events().aggregate_stream(id).await);
    assert_eq!(order.map(|o| o.amount), Some(5));
}

#[tokio::test]
async fn an_explicit_name_resolves_the_clash_and_each_type_round_trips() {
    let (_schema, b) = builder("evn_explicit");
    let store = ok(b
        .projection::<Order>(Lifecycle::Inline)
        .projection::<Bill>(Lifecycle::Live)
        .build()
        .await);
    let (order, bill) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events()
        .start_stream(order, [orders::Created { amount: 3 }]));
    ok(s.events()
        .start_stream(bill, [billing::Created { amount: 4 }]));
    ok(s.save_changes().await);

    let events = ok(s.events().fetch_stream(order).await);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "created");
    assert_eq!(
        events[0].data_as::<orders::Created>(),
        Some(&orders::Created { amount: 3 })
    );
    let events = ok(s.events().fetch_stream(bill).await);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "invoice_created");
    assert_eq!(
        events[0].data_as::<billing::Created>(),
        Some(&billing::Created { amount: 4 })
    );

    let stored: Option<Order> = ok(store.query_session().load::<Order>(&order).await);
    assert_eq!(stored.map(|o| o.amount), Some(3));
    let live: Option<Bill> = ok(s.events().aggregate_stream(bill).await);
    assert_eq!(live.map(|b| b.amount), Some(4));
}

#[tokio::test]
async fn clashes_found_after_build_name_both_types() {
    let (_schema, b) = builder("evn_after_build");
    let store = ok(b.projection::<Order>(Lifecycle::Inline).build().await);
    let mut s = store.lightweight_session();

    // Appending the other type: refused at the append, naming both Rust types.
    let appended = s
        .events()
        .start_stream(Uuid::now_v7(), [invoices::Created { amount: 1 }]);
    names_both(
        &configuration_error(appended),
        "created",
        orders_created(),
        invoices_created(),
    );

    // Folding an aggregate the store was not built with: its events would read as the
    // other type, so the fold is refused rather than folding nothing.
    let id = Uuid::now_v7();
    ok(s.events().start_stream(id, [orders::Created { amount: 2 }]));
    ok(s.save_changes().await);
    let folded = s.events().aggregate_stream::<Invoice>(id).await;
    names_both(
        &configuration_error(folded),
        "created",
        orders_created(),
        invoices_created(),
    );
    // The store's own types still read.
    let order: Option<Order> = ok(s.events().aggregate_stream(id).await);
    assert_eq!(order.map(|o| o.amount), Some(2));
}
