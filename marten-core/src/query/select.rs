//! [`Selection`]: the fields a query returns instead of whole documents — one field
//! (`|f| f.name`, read as the field's type) or a tuple of up to eight (`|f| (f.name,
//! f.total)`, read as a tuple). A backend selects only those values and deserializes
//! them into [`Selection::Output`] (or into a struct whose fields are named like their
//! JSON keys). Uses `path` and `field`.

use serde::de::DeserializeOwned;

use super::field::Field;
use super::path::Path;

/// Fields of documents `R` a query returns instead of the documents.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a selection of fields of `{R}`",
    note = "select one field (`|f| f.name`) or a tuple of up to eight fields (`|f| (f.name, f.total)`) of the queried document, each of a type that implements `Deserialize`"
)]
pub trait Selection<R> {
    /// What each match is read as: the field's type, or a tuple of them.
    type Output: DeserializeOwned;
    /// Whether the output is one field's value (not an array of them).
    const SINGLE: bool;
    /// The selected fields' paths, in order.
    fn paths(&self) -> Vec<Path>;
}

impl<R, T: DeserializeOwned + 'static> Selection<R> for Field<R, T>
where
    R: 'static,
{
    type Output = T;
    const SINGLE: bool = true;
    fn paths(&self) -> Vec<Path> {
        vec![self.path().clone()]
    }
}

macro_rules! tuple_selection {
    ($($t:ident $i:tt),+) => {
        impl<R: 'static, $($t: DeserializeOwned + 'static),+> Selection<R> for ($(Field<R, $t>,)+) {
            type Output = ($($t,)+);
            const SINGLE: bool = false;
            fn paths(&self) -> Vec<Path> {
                vec![$(self.$i.path().clone()),+]
            }
        }
    };
}

tuple_selection!(A 0);
tuple_selection!(A 0, B 1);
tuple_selection!(A 0, B 1, C 2);
tuple_selection!(A 0, B 1, C 2, D 3);
tuple_selection!(A 0, B 1, C 2, D 3, E 4);
tuple_selection!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_selection!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_selection!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
