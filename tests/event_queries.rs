//! Typed queries over the events of one type: by data fields, stream, time and count,
//! scoped to the tenant with conjoined events, against a Rust model of what was appended.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::Tenancy;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Money {
    cents: i64,
    currency: String,
}

#[derive(Event, Queryable, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "order_placed", aliases = ["purchase_made"])]
struct OrderPlaced {
    customer: String,
    #[query(nested)]
    total: Money,
    express: bool,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct OrderShipped {
    carrier: String,
}

fn placed(customer: &str, cents: i64, express: bool) -> OrderPlaced {
    OrderPlaced {
        customer: customer.into(),
        total: Money {
            cents,
            currency: "EUR".into(),
        },
        express,
    }
}

fn data(events: &[EventEnvelope]) -> Vec<OrderPlaced> {
    events
        .iter()
        .map(|e| e.data_as::<OrderPlaced>().cloned().expect("an OrderPlaced"))
        .collect()
}

#[tokio::test]
async fn events_are_queried_by_their_fields_stream_and_time() {
    let (schema, b) = builder("event_queries");
    let store = ok(b
        .event::<OrderPlaced>()
        .event::<OrderShipped>()
        .build()
        .await);
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut model: Vec<(Uuid, OrderPlaced)> = Vec::new();
    for round in 0..5i64 {
        let mut s = store.lightweight_session();
        for (i, stream) in streams.iter().enumerate() {
            let e = placed(&format!("c{i}"), round * 100 + i as i64, round % 2 == 0);
            model.push((*stream, e.clone()));
            ok(s.events().append(
                *stream,
                vec![
                    PendingEvent::from(e),
                    PendingEvent::from(OrderShipped {
                        carrier: "x".into(),
                    }),
                ],
            ));
        }
        ok(s.save_changes().await);
    }
    let mut s = store.lightweight_session();
    // By a nested field and a flag, oldest first; other event types never match.
    let big_express = ok(s
        .events()
        .query::<OrderPlaced>()
        .filter(|f| f.total.cents.ge(200).and(f.express.eq(true)))
        .to_list()
        .await);
    let want: Vec<OrderPlaced> = model
        .iter()
        .filter(|(_, e)| e.total.cents >= 200 && e.express)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(data(&big_express), want);
    assert!(big_express
        .windows(2)
        .all(|w| w[0].sequence < w[1].sequence));
    // By stream, with a limit, and counted.
    let of_stream = ok(s
        .events()
        .query::<OrderPlaced>()
        .stream(streams[2])
        .take(3)
        .to_list()
        .await);
    let want: Vec<OrderPlaced> = model
        .iter()
        .filter(|(st, _)| *st == streams[2])
        .take(3)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(data(&of_stream), want);
    assert_eq!(
        ok(s.events()
            .query::<OrderPlaced>()
            .filter(|f| f.customer.is_one_of(["c1", "c3"]))
            .count()
            .await),
        10
    );
    // By time: nothing after now, everything since a moment before the first append.
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert_eq!(
        ok(s.events().query::<OrderPlaced>().since(later).count().await),
        0
    );
    let earlier = OffsetDateTime::now_utc() - time::Duration::hours(1);
    assert_eq!(
        ok(s.events()
            .query::<OrderPlaced>()
            .since(earlier)
            .until(later)
            .count()
            .await),
        20
    );
    // Events stored under an alias are the same shape and match too.
    let raw = schema.raw_client().await;
    raw.execute(
        "UPDATE mt_events SET type = 'purchase_made' WHERE type = 'order_placed' \
         AND (data ->> 'customer') = 'c0'",
        &[],
    )
    .await
    .expect("rename");
    assert_eq!(
        ok(s.events()
            .query::<OrderPlaced>()
            .filter(|f| f.customer.eq("c0"))
            .count()
            .await),
        5
    );
    // Values are bound: a quote in a value is data.
    assert_eq!(
        ok(s.events()
            .query::<OrderPlaced>()
            .filter(|f| f.customer.eq("c0' OR '1'='1"))
            .count()
            .await),
        0
    );
    let sql = ok(s
        .events()
        .query::<OrderPlaced>()
        .filter(|f| f.customer.eq("c0"))
        .to_sql());
    assert!(!sql.contains("c0"), "bound, not formatted: {sql}");
}

#[tokio::test]
async fn conjoined_events_are_queried_within_the_sessions_tenant() {
    let (_schema, b) = builder("event_queries_tenants");
    let store = ok(b
        .events_tenancy(Tenancy::Conjoined)
        .event::<OrderPlaced>()
        .build()
        .await);
    let stream = Uuid::now_v7();
    for (tenant, n) in [("red", 3), ("blue", 2)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        let events: Vec<PendingEvent> = (0..n)
            .map(|i| PendingEvent::from(placed(tenant, i, false)))
            .collect();
        ok(s.events().append(stream, events));
        ok(s.save_changes().await);
    }
    for (tenant, n) in [("red", 3), ("blue", 2), ("green", 0)] {
        let mut s = ok(store.lightweight_session_for(tenant));
        let found = ok(s
            .events()
            .query::<OrderPlaced>()
            .stream(stream)
            .to_list()
            .await);
        assert_eq!(found.len(), n, "{tenant}");
        assert!(data(&found).iter().all(|e| e.customer == tenant));
        // A filter on the data matches the tenant's events only, and the tenant is
        // tested before it (see `a_filtering_scan_tests_the_tenant_first`).
        let cheap = s
            .events()
            .query::<OrderPlaced>()
            .filter(|f| f.total.cents.lt(2));
        assert_eq!(ok(cheap.count().await), n.min(2) as i64, "{tenant}");
        let sql = ok(s
            .events()
            .query::<OrderPlaced>()
            .filter(|f| f.total.cents.lt(2))
            .to_sql());
        assert!(
            sql.contains("WHERE d.tenant_id = $1::text AND CASE WHEN d.tenant_id = $1::text THEN true ELSE false END AND d.type"),
            "{sql}"
        );
    }
    let mut nobody = store.lightweight_session();
    let err = nobody
        .events()
        .query::<OrderPlaced>()
        .count()
        .await
        .expect_err("no tenant");
    assert!(
        matches!(err, marten::Error::TenantRequired { .. }),
        "{err:?}"
    );
}
