//! The parameters of a raw SQL condition (`where_sql`): [`param`], one typed value (any
//! `ToSql`: timestamps, arrays, numerics, ..) as a [`RawParam`], and [`SqlParams`], what
//! `where_sql` takes: a tuple of `ToSql` values, `()`, or a `Vec<RawParam>` (typed values
//! made with [`param`], untyped ones). Uses `render`'s [`PgValue`].

use marten_core::query::RawParam;
use tokio_postgres::types::ToSql;

use super::render::PgValue;

/// One typed parameter of a raw SQL condition, for a list built at run time: any value
/// tokio-postgres can send (`param(time::OffsetDateTime::now_utc())`,
/// `param(vec![1i64, 2])`), next to the untyped [`RawParam`]s if need be. PostgreSQL
/// checks its type against the placeholder's.
pub fn param<T: ToSql + Send + Sync + 'static>(value: T) -> RawParam {
    RawParam::Backend(PgValue::param(value))
}

/// The parameters of a raw SQL condition, `$1..` in order: a tuple of `ToSql` values
/// (`(since, vec![1i64, 2])`, `(3i64,)`), `()` for none, or a `Vec<RawParam>` (built at
/// run time, typed values made with [`param`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` are not the parameters of a raw SQL condition",
    note = "pass a tuple of `ToSql` values (`(since, 3i64)`, one value as `(3i64,)`), `()`, or a `Vec<RawParam>` (typed values made with `marten::query::param`)"
)]
pub trait SqlParams {
    /// The parameters, `$1` first.
    fn into_params(self) -> Vec<RawParam>;
}

impl SqlParams for Vec<RawParam> {
    fn into_params(self) -> Vec<RawParam> {
        self
    }
}

impl SqlParams for () {
    fn into_params(self) -> Vec<RawParam> {
        Vec::new()
    }
}

macro_rules! tuple_params {
    ($($t:ident),+) => {
        impl<$($t: ToSql + Send + Sync + 'static),+> SqlParams for ($($t,)+) {
            #[allow(non_snake_case)]
            fn into_params(self) -> Vec<RawParam> {
                let ($($t,)+) = self;
                vec![$(param($t)),+]
            }
        }
    };
}

tuple_params!(A);
tuple_params!(A, B);
tuple_params!(A, B, C);
tuple_params!(A, B, C, D);
tuple_params!(A, B, C, D, E);
tuple_params!(A, B, C, D, E, F);
tuple_params!(A, B, C, D, E, F, G);
tuple_params!(A, B, C, D, E, F, G, H);
