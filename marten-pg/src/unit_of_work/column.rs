//! One column of a statement's rows (an append's events in
//! [`super::append::StreamAppend`], a document batch's documents): its values held inline
//! while there is one (the common lone append or store allocates nothing per column), bound
//! as a PostgreSQL array.

use std::cmp::Ordering;
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

    /// Moves the values as `swaps` (from [`row_order`]) say, in that order.
    pub(crate) fn apply_swaps(&mut self, swaps: &[(usize, usize)]) {
        for (a, b) in swaps {
            self.0.swap(*a, *b);
        }
    }
}

/// The swaps that put rows keyed by `keys` in the order `cmp` sorts the keys in, to be
/// applied to every column of the rows ([`Column::apply_swaps`]); none when the rows are
/// in that order already (the common case: ids made in ascending order).
pub(crate) fn row_order<T>(keys: &[T], cmp: impl Fn(&T, &T) -> Ordering) -> Vec<(usize, usize)> {
    if keys.windows(2).all(|w| cmp(&w[0], &w[1]).is_le()) {
        return Vec::new();
    }
    // order[k]: the row whose values go to position k.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|a, b| cmp(&keys[*a], &keys[*b]));
    // Each cycle of the permutation, a swap per step: position k takes the values of
    // order[k], and what was at k moves on to where the cycle needs it next.
    let mut swaps = Vec::new();
    let mut done = vec![false; order.len()];
    for start in 0..order.len() {
        let mut k = start;
        while !done[k] {
            done[k] = true;
            let from = order[k];
            if from == start {
                break;
            }
            swaps.push((k, from));
            k = from;
        }
    }
    swaps
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

    #[test]
    fn row_order_sorts_every_column_alike() {
        let keys = [5, 3, 9, 1, 3, 7, 2, 8, 6, 4];
        let mut ids: Column<i32> = keys.iter().copied().collect();
        let mut names: Column<String> = keys.iter().map(|k| format!("row {k}")).collect();
        let swaps = row_order(&ids, i32::cmp);
        ids.apply_swaps(&swaps);
        names.apply_swaps(&swaps);
        assert_eq!(ids.as_slice(), [1, 2, 3, 3, 4, 5, 6, 7, 8, 9]);
        let expected: Vec<String> = ids.iter().map(|k| format!("row {k}")).collect();
        assert_eq!(names.as_slice(), expected.as_slice());
        assert!(
            row_order(&ids, i32::cmp).is_empty(),
            "sorted rows need no swaps"
        );
    }

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
