//! Serialized JSON as a PostgreSQL parameter and result, without a `serde_json::Value` in
//! between: documents are serialized once, straight to bytes, and sent as `jsonb`.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use postgres_types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

/// The JSON text of a serialized document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(pub Vec<u8>);

impl ToSql for RawJson {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(&self.0);
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

/// JSON text borrowed from a result row.
#[derive(Debug, Clone, Copy)]
pub struct JsonRef<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for JsonRef<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => Ok(JsonRef(rest)),
                Some((v, _)) => Err(format!("unsupported jsonb version {v}").into()),
                None => Err("empty jsonb value".into()),
            }
        } else {
            Ok(JsonRef(raw))
        }
    }

    accepts!(JSON, JSONB);
}
