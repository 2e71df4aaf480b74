//! A subscription that fills an outbox: every `OrderPlaced` becomes a row of an `outbox`
//! table, written in the same transaction that moves the subscription's checkpoint, so
//! each event is in the outbox exactly once whatever crashes (a relay then publishes the
//! rows to a broker and deletes them).
//!
//! ```text
//! cargo run --example subscriptions
//! ```
//!
//! It connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and starts from an empty `subscriptions_example` schema.

use std::time::Duration;

use marten::daemon::{Daemon, DaemonOptions};
use marten::prelude::*;
use marten::subscriptions::{
    EventFilter, HandlerError, Subscription, SubscriptionBatch, SubscriptionTx,
};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    customer: String,
    total_cents: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderShipped {}

/// Turns each placed order into an outbox message.
struct OrderOutbox;

impl Subscription for OrderOutbox {
    fn name(&self) -> &'static str {
        "order_outbox"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event::<OrderPlaced>()
    }

    async fn handle(
        &self,
        batch: &SubscriptionBatch<'_>,
        tx: &mut SubscriptionTx,
    ) -> Result<(), HandlerError> {
        for (delivery, event) in batch.deliveries() {
            let Some(order) = event.data_as::<OrderPlaced>() else {
                continue;
            };
            let payload = serde_json::to_value(order).map_err(|e| HandlerError::at(event, e))?;
            // Unqualified names resolve in the store's schema.
            tx.execute(
                "INSERT INTO outbox (delivery_id, topic, stream_id, payload) \
                 VALUES ($1, 'orders.placed', $2, $3)",
            )
            .bind(delivery.to_string())
            .bind(event.stream_id.to_string())
            .bind(payload);
        }
        Ok(())
    }
}

const SCHEMA: &str = "subscriptions_example";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());

    // The outbox is the application's own table.
    let (client, connection) =
        marten::tokio_postgres::connect(&url, marten::tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}; \
             CREATE TABLE {SCHEMA}.outbox (delivery_id text PRIMARY KEY, topic text NOT NULL, \
             stream_id text NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;

    let store = DocumentStore::builder()
        .connection_string(&url)
        .schema(SCHEMA)
        .event::<OrderPlaced>()
        .event::<OrderShipped>()
        .subscription(OrderOutbox)
        .build()
        .await?;

    let mut session = store.lightweight_session();
    for (i, customer) in ["ada", "grace", "edsger"].iter().enumerate() {
        let order = Uuid::now_v7();
        session.events().start_stream(
            order,
            [OrderPlaced {
                customer: customer.to_string(),
                total_cents: 1000 * (i as i64 + 1),
            }],
        )?;
        session.events().append(order, [OrderShipped {}])?;
    }
    session.save_changes().await?;

    let daemon = Daemon::start(&store, DaemonOptions::default());
    daemon.wait_for_non_stale(Duration::from_secs(30)).await?;
    daemon.stop().await?;

    let rows = client
        .query(
            &format!("SELECT delivery_id, topic, payload::text FROM {SCHEMA}.outbox ORDER BY delivery_id"),
            &[],
        )
        .await?;
    println!("{} messages in the outbox:", rows.len());
    for row in rows {
        let (id, topic, payload): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        println!("  {id} {topic} {payload}");
    }
    Ok(())
}
