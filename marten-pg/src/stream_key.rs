//! Binding a [`StreamId`] as a `uuid` or `text` parameter and reading it back.

use std::error::Error as StdError;

use bytes::BytesMut;
use marten_core::StreamId;
use postgres_types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

/// A stream id as a parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey(pub StreamId);

impl ToSql for StreamKey {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match (&self.0, ty) {
            (StreamId::Uuid(u), t) if *t == Type::UUID => u.to_sql(ty, out),
            (StreamId::String(s), t) if *t == Type::TEXT => s.to_sql(ty, out),
            (id, t) => Err(format!("stream id {id} cannot be bound as {t}").into()),
        }
    }

    accepts!(UUID, TEXT);
    to_sql_checked!();
}

/// A stream id read from a `uuid` or `text` column.
pub(crate) struct StreamIdColumn(pub StreamId);

impl<'a> FromSql<'a> for StreamIdColumn {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        if *ty == Type::UUID {
            Ok(StreamIdColumn(StreamId::Uuid(uuid::Uuid::from_sql(
                ty, raw,
            )?)))
        } else {
            Ok(StreamIdColumn(StreamId::String(String::from_sql(ty, raw)?)))
        }
    }

    accepts!(UUID, TEXT);
}
