use marten::prelude::*;
use marten::QuerySpec;

#[derive(Document, serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Shop {
    id: Uuid,
    city: String,
}

// A return kind that is not one of marten's.
struct AllShops;

impl CompiledQuery for AllShops {
    type Document = Shop;
    type Returns = Vec<Shop>;

    fn build(&self, q: QuerySpec<Shop>) -> QuerySpec<Shop> {
        q
    }
}

// Not a compiled query at all.
struct InCity(String);

async fn run(mut s: QuerySession) -> marten::Result<()> {
    let _ = s.query_compiled(&InCity("Lisbon".into())).await?;
    Ok(())
}

fn main() {}
