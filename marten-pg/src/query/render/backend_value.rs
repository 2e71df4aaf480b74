//! [`PgValue`]: a `ToSql` value carried through the backend-neutral syntax tree as a
//! [`BackendParam`], and how a raw fragment's renderer takes it back as a parameter.
//! Uses nothing else of `render`.

use std::error::Error as StdError;
use std::sync::Arc;

use bytes::BytesMut;
use marten_core::query::BackendParam;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

/// A shared `ToSql` value, and whether it is text holding a NUL character (which
/// PostgreSQL text cannot hold, so the query is refused before it is sent).
#[derive(Debug, Clone)]
pub(crate) struct PgValue {
    value: Arc<dyn ToSql + Send + Sync>,
    has_nul: bool,
}

impl PgValue {
    /// Wraps `value` for the syntax tree.
    pub(crate) fn param<T: ToSql + Send + Sync + 'static>(value: T) -> BackendParam {
        let any: &dyn std::any::Any = &value;
        let has_nul = match (any.downcast_ref::<String>(), any.downcast_ref::<&str>()) {
            (Some(s), _) => s.contains('\0'),
            (_, Some(s)) => s.contains('\0'),
            _ => false,
        };
        let value = PgValue {
            value: Arc::new(value),
            has_nul,
        };
        BackendParam::new(value, std::any::type_name::<T>())
    }

    /// The value of a [`BackendParam`] made by [`param`](Self::param): the parameter to
    /// send and whether it holds a NUL character; `None` for another backend's value.
    pub(super) fn of(param: &BackendParam) -> Option<(Box<dyn ToSql + Sync + Send>, bool)> {
        let v = param.downcast_ref::<PgValue>()?;
        Some((Box::new(v.clone()), v.has_nul))
    }
}

impl ToSql for PgValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.value.to_sql_checked(ty, out)
    }

    /// Any type: the wrapped value checks it in `to_sql_checked`.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.value.to_sql_checked(ty, out)
    }

    fn encode_format(&self, ty: &Type) -> Format {
        self.value.encode_format(ty)
    }
}
