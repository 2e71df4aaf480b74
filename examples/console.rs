//! The web console over a small store: seeds orders (a few streams, tags, a poison event)
//! and invoices in its own schema, runs the async daemon, and serves the console on
//! 127.0.0.1 until Ctrl-C.
//!
//! ```text
//! cargo run --example console            # http://127.0.0.1:7070/
//! CONSOLE_PORT=0 cargo run --example console
//! ```
//!
//! It connects to `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and works in the schema `console_example` (dropped and seeded anew each run).

use marten::daemon::{Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten_console::{Console, QueryField};
use serde::{Deserialize, Serialize};

#[derive(Tag, Serialize, Deserialize, Clone, Debug)]
#[tag(name = "customer")]
struct Customer(String);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderPlaced {
    #[tag]
    customer: Customer,
    total: i64,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderShipped {
    carrier: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct OrderLost {}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct OrderSummary {
    id: Uuid,
    version: i64,
    total: i64,
    shipped: bool,
}

#[marten::apply]
impl OrderSummary {
    fn apply_placed(&mut self, e: &OrderPlaced) {
        self.total += e.total;
    }
    fn apply_shipped(&mut self, _e: &OrderShipped) {
        self.shipped = true;
    }
    fn apply_lost(&mut self, _e: &OrderLost) {
        panic!("a lost order cannot be summed up");
    }
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Invoice {
    id: i64,
    customer: String,
    total: i64,
    paid: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let port: u16 = match std::env::var("CONSOLE_PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 7070,
    };
    // A fresh schema each run.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute("DROP SCHEMA IF EXISTS console_example CASCADE")
        .await?;
    drop(client);
    let _ = connection.await;
    let store = DocumentStore::builder()
        .connection_string(url)
        .schema("console_example")
        .event::<OrderPlaced>()
        .event::<OrderShipped>()
        .event::<OrderLost>()
        .projection::<OrderSummary>(Lifecycle::Async)
        .build()
        .await?;

    let mut session = store.lightweight_session();
    session.set_correlation_id(Some("console-example".to_owned()));
    for i in 0..40i64 {
        let order = Uuid::now_v7();
        session.events().append(
            order,
            [
                PendingEvent::new(OrderPlaced {
                    customer: Customer(format!("customer-{}", i % 5)),
                    total: 10 * i,
                }),
                PendingEvent::new(OrderShipped {
                    carrier: "post".to_owned(),
                })
                .with_header("warehouse", "north"),
            ],
        )?;
        session.store(Invoice {
            id: i + 1,
            customer: format!("customer-{}", i % 5),
            total: 10 * i,
            paid: i % 3 == 0,
        })?;
    }
    session.events().append(Uuid::now_v7(), [OrderLost {}])?;
    session.save_changes().await?;

    let options = DaemonOptions {
        retries: 1,
        poison: PoisonPolicy::DeadLetter,
        ..DaemonOptions::default()
    };
    let daemon = Daemon::start(&store, options);

    let console = Console::builder(&store)
        .document::<Invoice>(|f| {
            vec![
                QueryField::text(f.customer),
                QueryField::ordered(f.total),
                QueryField::equality(f.paid),
            ]
        })
        .actions(true)
        .build();
    let bound = console.bind(([127, 0, 0, 1], port).into()).await?;
    println!("marten console at {} (Ctrl-C to stop)", bound.url()?);
    bound
        .serve_with_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    daemon.stop().await?;
    Ok(())
}
