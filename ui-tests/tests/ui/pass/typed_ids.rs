// Strong-typed ids over every supported inner type, by any path, as document ids,
// aggregate ids, tags and query values.
use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(DocumentId, Tag, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OrderId(uuid::Uuid);

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LineNo(i32);

#[derive(DocumentId, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
struct InvoiceNo(i64);

#[derive(DocumentId, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sku(pub std::string::String);

#[derive(Aggregate, Serialize, Deserialize, Clone)]
struct Order {
    id: OrderId,
    version: i64,
    #[document(index)]
    invoice: InvoiceNo,
}

#[marten::apply]
impl Order {
    fn create(e: &Placed) -> Self {
        Order { id: e.order, version: 0, invoice: InvoiceNo::default() }
    }
}

#[derive(Event, Serialize, Deserialize)]
struct Placed {
    #[tag]
    order: OrderId,
}

#[derive(Document, Serialize, Deserialize)]
struct Line {
    id: LineNo,
    sku: Sku,
}

#[derive(Document, Serialize, Deserialize)]
struct Product {
    id: Sku,
}

fn main() {
    let id = OrderId(Uuid::now_v7());
    let _: StreamId = id.into();
    let _: StreamId = (&Sku("a".into())).into();
    let _ = Order::fields().id.eq(id);
    let _ = Order::fields().id.gt(id);
    let _ = Order::fields().invoice.eq(InvoiceNo(3));
    let _ = Line::fields().sku.eq(Sku("a".into()));
    let _ = TagQuery::new().tag(id);
}
