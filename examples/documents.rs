//! Documents that do real work, in a small shop: strong-typed ids, bulk insert with binary
//! `COPY`, patches, `delete_where`, soft deletes, and the richer typed queries (`is_one_of`,
//! aggregates, selections, includes, full-text search, `where_sql` with typed parameters
//! and a compiled query).
//!
//! Run it with `cargo run --example documents`. It connects to `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and works in the schema
//! `documents_example`, which it drops when it is done.

use marten::compiled::ToList;
use marten::prelude::*;
use marten::{BulkOptions, QuerySpec};
use serde::{Deserialize, Serialize};

/// A customer's id: cannot be passed where a product's is expected.
#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CustomerId(Uuid);

/// A product's id: its stock-keeping unit.
#[derive(DocumentId, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Sku(String);

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct Customer {
    id: CustomerId,
    name: String,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[document(full_text)]
#[concurrency(numeric)]
struct Product {
    id: Sku,
    title: String,
    description: String,
    #[document(index)]
    price: i64,
    stock: i64,
    tags: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[document(soft_delete)]
struct Order {
    id: Uuid,
    customer: CustomerId,
    sku: Sku,
    quantity: i64,
    status: String,
    note: Option<String>,
}

/// Orders of one status, the largest first: rendered once, run with new values.
struct OrdersWithStatus {
    status: String,
}

impl CompiledQuery for OrdersWithStatus {
    type Document = Order;
    type Returns = ToList;

    fn build(&self, q: QuerySpec<Order>) -> QuerySpec<Order> {
        q.filter(|f| f.status.eq(self.status.as_str()))
            .order_by(|f| f.quantity.desc())
    }
}

fn product(sku: &str, title: &str, description: &str, price: i64) -> Product {
    Product {
        id: Sku(sku.into()),
        title: title.into(),
        description: description.into(),
        price,
        stock: 10,
        tags: vec!["new".into()],
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    drop_schema(&url).await?; // a fresh start on every run
    let store = DocumentStore::builder()
        .connection_string(url.as_str())
        .schema("documents_example")
        .document::<Customer>()
        .document::<Product>()
        .document::<Order>()
        .build()
        .await?;
    let result = run(&store).await;
    drop(store);
    drop_schema(&url).await?;
    result
}

/// Drops the example's schema, if it is there.
async fn drop_schema(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (client, conn) =
        marten::tokio_postgres::connect(url, marten::tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    client
        .batch_execute("DROP SCHEMA IF EXISTS documents_example CASCADE")
        .await?;
    drop(client);
    conn.await??;
    Ok(())
}

async fn run(store: &DocumentStore) -> Result<(), Box<dyn std::error::Error>> {
    // Bulk insert: one binary COPY per batch, all or nothing.
    let products = vec![
        product("tea-1", "Sencha", "a green tea, grassy and bright", 12),
        product("tea-2", "Assam", "a strong black tea for mornings", 9),
        product("cof-1", "Espresso roast", "dark roasted coffee beans", 15),
    ];
    let n = store.bulk_insert(products, BulkMode::InsertOnly).await?;
    let n = n + store
        .bulk_insert_with(
            vec![product("cof-2", "Filter roast", "light roasted coffee", 14)],
            BulkOptions::new(BulkMode::Overwrite).batch_size(1_000),
        )
        .await?;
    println!("bulk inserted {n} products");

    // Strong-typed ids as document ids and as fields.
    let mut s = store.lightweight_session();
    let ada = CustomerId(Uuid::now_v7());
    s.store(Customer {
        id: ada,
        name: "Ada".into(),
    })?;
    for (sku, quantity) in [("tea-1", 2), ("tea-2", 1), ("cof-1", 5)] {
        s.store(Order {
            id: Uuid::nil(),
            customer: ada,
            sku: Sku(sku.into()),
            quantity,
            status: "open".into(),
            note: Some("gift wrap".into()),
        })?;
    }
    s.save_changes().await?;

    // Patches: one UPDATE each, without loading the documents.
    s.patch::<Product>(&Sku("tea-1".into()))
        .increment(|f| f.stock, -2)
        .append_if_missing(|f| f.tags, "bestseller")
        .remove(|f| f.tags, "new")
        .queue()?;
    s.patch_where::<Order>(Order::fields().quantity.ge(2))
        .set(|f| f.status, "paid")
        .unset(|f| f.note)
        .queue()?;
    s.save_changes().await?;
    let tea: Product = s.load(&Sku("tea-1".into())).await?.ok_or("stored")?;
    println!("tea-1: stock {}, tags {:?}", tea.stock, tea.tags);

    // Richer queries.
    let teas = s
        .query::<Product>()
        .filter(|f| f.id.is_one_of([Sku("tea-1".into()), Sku("tea-2".into())]))
        .count()
        .await?;
    let revenue: Option<i64> = s.query::<Product>().sum(|f| f.price).await?;
    let cheapest: Vec<(String, i64)> = s
        .query::<Product>()
        .order_by(|f| f.price.asc())
        .take(2)
        .select(|f| (f.title, f.price))
        .to_list()
        .await?;
    println!("{teas} teas; prices sum to {revenue:?}; cheapest {cheapest:?}");

    let with_customers = s
        .query::<Order>()
        .filter(|f| f.status.eq("paid"))
        .include::<Customer>(|f| f.customer)
        .to_list()
        .await?;
    for order in &with_customers.documents {
        let name = with_customers
            .included
            .get(&order.customer)
            .map(|c| c.name.as_str());
        println!(
            "paid order of {} x {} by {name:?}",
            order.quantity, order.sku
        );
    }

    let coffee = s
        .query::<Product>()
        .search("roasted coffee")
        .order_by_rank()
        .to_list()
        .await?;
    println!(
        "search \"roasted coffee\": {:?}",
        coffee.iter().map(|p| &p.title).collect::<Vec<_>>()
    );

    let since = marten::time::OffsetDateTime::now_utc() - marten::time::Duration::hours(1);
    let recent = s
        .query::<Product>()
        .where_sql(
            "d.mt_last_modified > $1 AND d.id = ANY($2)",
            (since, vec!["tea-1", "cof-2"]),
        )
        .count()
        .await?;
    println!("{recent} of tea-1 and cof-2 changed in the last hour");

    let paid = s
        .query_compiled(&OrdersWithStatus {
            status: "paid".into(),
        })
        .await?;
    let open = s
        .query_compiled(&OrdersWithStatus {
            status: "open".into(),
        })
        .await?;
    println!(
        "compiled: {} paid, {} open, rendered {} time(s)",
        paid.len(),
        open.len(),
        store.compiled_query_stats().renders
    );

    // Soft deletes: deletes mark; reads skip marked rows unless asked.
    s.delete_where::<Order>(Order::fields().status.eq("open"))?;
    s.save_changes().await?;
    let live = s.query::<Order>().count().await?;
    let deleted = s.query::<Order>().only_deleted().count().await?;
    println!("orders: {live} live, {deleted} soft-deleted");
    s.undo_delete_where::<Order>(Order::fields().status.eq("open"))?;
    s.hard_delete_where::<Order>(Order::fields().quantity.lt(2))?;
    s.save_changes().await?;
    println!(
        "after undo and a hard delete: {} orders",
        s.query::<Order>().include_deleted().count().await?
    );
    Ok(())
}
