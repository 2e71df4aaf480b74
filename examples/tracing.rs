//! Prints marten's spans: a `tracing-subscriber` fmt layer filtered by `RUST_LOG`
//! (default `marten_pg=debug,marten_core=info`), then a save, a load, a query and an
//! append, each in its span with OpenTelemetry's database fields.
//!
//! Run it with `cargo run --example tracing`. It connects to `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use marten::prelude::*;
use serde::{Deserialize, Serialize};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct CoffeeShop {
    id: Uuid,
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CupSold {
    price_cents: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every span is printed when it closes, with its fields and its duration.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("marten_pg=debug,marten_core=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .init();

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let store = DocumentStore::builder()
        .connection_string(url)
        .schema("tracing_example")
        .document::<CoffeeShop>()
        .build()
        .await?;

    let mut session = store.lightweight_session();
    let id = session.store(CoffeeShop {
        id: Uuid::nil(),
        name: "Espresso Corner".into(),
    })?;
    session.save_changes().await?;
    let _shop: Option<CoffeeShop> = session.load(&id).await?;
    let found = session
        .query::<CoffeeShop>()
        .filter(|f| f.name.eq("Espresso Corner"))
        .to_list()
        .await?;
    println!("found {} coffee shop(s)", found.len());

    session
        .events()
        .append(Uuid::now_v7(), [CupSold { price_cents: 350 }])?;
    session.save_changes().await?;
    Ok(())
}
