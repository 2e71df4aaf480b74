//! Stores, loads and updates documents, and catches an optimistic concurrency conflict.
//!
//! Run it with `cargo run --example quickstart`. It connects to `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct CoffeeShop {
    id: Uuid,
    name: String,
    employees: Vec<Uuid>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let store = DocumentStore::builder()
        .connection_string(url)
        .schema("quickstart")
        .document::<CoffeeShop>()
        .build()
        .await?;

    // Store: a nil id gets a new v7 uuid.
    let mut session = store.lightweight_session();
    let id = session.store(CoffeeShop {
        id: Uuid::nil(),
        name: "Espresso Corner".into(),
        employees: vec![Uuid::now_v7()],
    })?;
    session.save_changes().await?;
    println!("stored coffee shop {id}");

    // Load and update.
    let mut shop: CoffeeShop = session.load(&id).await?.ok_or("just stored")?;
    shop.name = "Espresso Corner & Bakery".into();
    session.store(shop.clone())?;
    session.save_changes().await?;
    let meta = session
        .metadata::<CoffeeShop>(&id)
        .await?
        .ok_or("just stored")?;
    println!("renamed to {:?}, version {}", shop.name, meta.version);

    // Two sessions load the same version; the second save is rejected.
    let mut alice = store.lightweight_session();
    let mut bob = store.lightweight_session();
    let mut a: CoffeeShop = alice.load(&id).await?.ok_or("exists")?;
    let mut b: CoffeeShop = bob.load(&id).await?.ok_or("exists")?;
    a.employees.push(Uuid::now_v7());
    b.name = "Bob's Beans".into();
    alice.store(a)?;
    alice.save_changes().await?;
    bob.store(b)?;
    match bob.save_changes().await {
        Err(marten::Error::Rejected(rejections)) => {
            for r in &rejections {
                println!("conflict caught: {r}");
            }
        }
        other => return Err(format!("expected a conflict, got {other:?}").into()),
    }

    let current: CoffeeShop = store.query_session().load(&id).await?.ok_or("exists")?;
    println!(
        "final: {:?} with {} employees",
        current.name,
        current.employees.len()
    );
    Ok(())
}
