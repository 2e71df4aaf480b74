//! One column of a statement's rows (an append's events in
//! [`super::append::StreamAppend`], a document batch's documents): its values held inline
//! while there is one (the common lone append or store allocates nothing per column), bound
//! as a PostgreSQL array.

use std::ops::{Deref, DerefMut};

use bytes::BytesMut;
use postgres_types::{to_sql_checked, IsNull, ToSql, Type};
use smallvec::SmallVec;

/// The values of one column, one per row (event, document) of the statement.
#[derive(Debug, Clone)]
pub(crate) struct Column<T>(SmallVec<[T; 1]>);

impl<T> Default for Column<T> {
    fn default() -> Self {
        Column(SmallVec::new())
    }
}

impl<'a, T> IntoIterator for &'a Column<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T> FromIterator<T> for Column<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Column(iter.into_iter().collect())
    }
}

impl<T> Column<T> {
    /// An empty column with room for `capacity` values (inline for one).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Column(SmallVec::with_capacity(capacity))
    }
}

impl<T> Deref for Column<T> {
    type Target = SmallVec<[T; 1]>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T> DerefMut for Column<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Bound as an array of the values, as a slice of them would be.
impl<T: ToSql> ToSql for Column<T> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.as_slice().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&[T] as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound<T: ToSql>(value: &T, ty: &Type) -> Vec<u8> {
        let mut out = BytesMut::new();
        value.to_sql_checked(ty, &mut out).expect("bound");
        out.to_vec()
    }

    #[test]
    fn a_column_binds_as_the_array_of_its_values() {
        let mut column = Column::with_capacity(1);
        column.push(7_i64);
        assert!(!column.spilled(), "one value is held inline");
        assert_eq!(
            bound(&column, &Type::INT8_ARRAY),
            bound(&vec![7_i64], &Type::INT8_ARRAY)
        );
        column.extend([8, 9]);
        assert_eq!(
            bound(&column, &Type::INT8_ARRAY),
            bound(&vec![7_i64, 8, 9], &Type::INT8_ARRAY)
        );
        assert!(Column::<i64>::accepts(&Type::INT8_ARRAY));
        assert!(!Column::<i64>::accepts(&Type::INT8));
        let collected: Column<i64> = (7..10).collect();
        assert_eq!(collected.as_slice(), [7, 8, 9]);
        let texts: Column<Option<String>> = Column::default();
        assert_eq!(
            bound(&texts, &Type::TEXT_ARRAY),
            bound(&Vec::<Option<String>>::new(), &Type::TEXT_ARRAY)
        );
    }
}
