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
        let has_nul = holds_nul(&value);
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

/// Whether `value` is text (or an array or option of text) holding a NUL character: the
/// text types a raw fragment's parameters are commonly given as.
fn holds_nul(value: &dyn std::any::Any) -> bool {
    let nul = |s: &str| s.contains('\0');
    if let Some(s) = value.downcast_ref::<String>() {
        return nul(s);
    }
    if let Some(s) = value.downcast_ref::<&str>() {
        return nul(s);
    }
    if let Some(s) = value.downcast_ref::<Box<str>>() {
        return nul(s);
    }
    if let Some(s) = value.downcast_ref::<std::borrow::Cow<'static, str>>() {
        return nul(s);
    }
    if let Some(s) = value.downcast_ref::<Option<String>>() {
        return s.as_deref().is_some_and(nul);
    }
    if let Some(s) = value.downcast_ref::<Option<&str>>() {
        return s.is_some_and(nul);
    }
    if let Some(v) = value.downcast_ref::<Vec<String>>() {
        return v.iter().any(|s| nul(s));
    }
    if let Some(v) = value.downcast_ref::<Vec<&str>>() {
        return v.iter().any(|s| nul(s));
    }
    if let Some(v) = value.downcast_ref::<Vec<Option<String>>>() {
        return v.iter().flatten().any(|s| nul(s));
    }
    false
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
