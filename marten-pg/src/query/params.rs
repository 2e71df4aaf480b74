//! The parameters of a raw SQL condition (`where_sql`): [`SqlParam`], one typed value
//! (any `ToSql`: timestamps, arrays, numerics, ..), and [`SqlParams`], what `where_sql`
//! takes: a tuple of `ToSql` values, a `Vec<SqlParam>`, `()`, or the older
//! `Vec<RawParam>`. Uses `render`'s [`PgValue`].

use marten_core::query::RawParam;
use tokio_postgres::types::ToSql;

use super::render::PgValue;

/// One parameter of a raw SQL condition: any value tokio-postgres can send
/// (`SqlParam::new(time::OffsetDateTime::now_utc())`, `SqlParam::new(vec![1i64, 2])`).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlParam(RawParam);

impl SqlParam {
    /// A typed parameter; PostgreSQL checks its type against the placeholder's.
    pub fn new<T: ToSql + Send + Sync + 'static>(value: T) -> Self {
        SqlParam(RawParam::Backend(PgValue::param(value)))
    }

    /// One of the untyped [`RawParam`]s.
    pub fn raw(param: RawParam) -> Self {
        SqlParam(param)
    }
}

/// The parameters of a raw SQL condition, `$1..` in order: a tuple of `ToSql` values
/// (`(since, vec![1i64, 2])`, `(3i64,)`), a `Vec<SqlParam>`, `()` for none, or a
/// `Vec<RawParam>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` are not the parameters of a raw SQL condition",
    note = "pass a tuple of `ToSql` values (`(since, 3i64)`, one value as `(3i64,)`), a `Vec<SqlParam>`, `()`, or a `Vec<RawParam>`"
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

impl SqlParams for Vec<SqlParam> {
    fn into_params(self) -> Vec<RawParam> {
        self.into_iter().map(|p| p.0).collect()
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
                vec![$(SqlParam::new($t).0),+]
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
