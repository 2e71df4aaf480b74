//! Indexed fields take their column's SQL type from `ColumnType`: aliases, paths,
//! `Option` and user types work.

use marten::prelude::*;
use marten::ColumnType;
use serde::{Deserialize, Serialize};

type Count = u32;

#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Sku(String);

impl ColumnType for Sku {
    const SQL_TYPE: &'static str = "text";
}

#[derive(Document, Serialize, Deserialize)]
struct Item {
    id: Uuid,
    #[document(index)]
    weight: Option<i64>,
    #[document(index)]
    count: Count,
    #[document(unique)]
    name: std::string::String,
    #[document(index)]
    sku: Sku,
    #[document(index)]
    r#type: Option<Option<bool>>,
}

fn main() {
    let specs = <Item as marten::Document>::INDEXES;
    let types: Vec<&str> = specs.iter().map(|s| s.sql_type).collect();
    assert_eq!(types, ["bigint", "bigint", "text", "text", "boolean"]);
}
