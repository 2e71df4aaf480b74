//! PostgreSQL's `xid8` (a 64-bit transaction id with epoch) as a parameter and result,
//! in its binary form: positions in the global order are sent and read as the stored
//! `xid8` itself, never as text (which sorts "10000000" before "9999999").

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use postgres_types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

/// A full transaction id (`xid8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Xid8(pub u64);

impl ToSql for Xid8 {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.put_u64(self.0);
        Ok(IsNull::No)
    }

    accepts!(XID8);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Xid8 {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("an xid8 value of {} bytes, expected 8", raw.len()))?;
        Ok(Xid8(u64::from_be_bytes(bytes)))
    }

    accepts!(XID8);
}
