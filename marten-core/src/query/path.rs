//! Field paths: where a value sits in a document ([`Path`]), how to reach a field's
//! parent ([`Base`], which builds each [`Field`]) and the trait the derive implements to
//! name a type's fields ([`HasFields`]). Uses [`Field`] of `field`.

use std::sync::Arc;

use super::field::Field;

/// How to get from a root `R` to a value `T` (for evaluating a filter in Rust).
pub type Getter<R, T> = Arc<dyn for<'a> Fn(&'a R) -> Option<&'a T> + Send + Sync>;

/// The JSON path of a field below the root document (or below a collection element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// JSON keys, outermost first (serde renames applied).
    pub segments: Vec<&'static str>,
    /// A duplicated column holding this field, when it is marked for an index.
    pub column: Option<(&'static str, &'static str)>,
}

/// Where a field's parent sits: the path to it and how to reach it.
pub struct Base<R, S> {
    segments: Vec<&'static str>,
    get: Getter<R, S>,
}

impl<R: 'static> Base<R, R> {
    /// The root document itself.
    pub fn root() -> Self {
        Base {
            segments: Vec::new(),
            get: Arc::new(|r: &R| Some(r)),
        }
    }
}

impl<R: 'static, S: 'static> Base<R, S> {
    /// A field of the parent: its JSON key and accessor.
    pub fn field<T: 'static>(
        &self,
        key: &'static str,
        column: Option<(&'static str, &'static str)>,
        access: fn(&S) -> &T,
    ) -> Field<R, T> {
        let parent = self.get.clone();
        // Only a field of the root document can have a duplicated column.
        let column = if self.segments.is_empty() {
            column
        } else {
            None
        };
        Field {
            path: Path {
                segments: self.segments_to(key),
                column,
            },
            get: Arc::new(move |r: &R| parent(r).map(access)),
        }
    }

    /// A nested struct field, for its own fields.
    pub fn nested<T: 'static>(&self, key: &'static str, access: fn(&S) -> &T) -> Base<R, T> {
        let parent = self.get.clone();
        Base {
            segments: self.segments_to(key),
            get: Arc::new(move |r: &R| parent(r).map(access)),
        }
    }

    /// A nested struct behind an `Option`.
    pub fn nested_option<T: 'static>(
        &self,
        key: &'static str,
        access: fn(&S) -> &Option<T>,
    ) -> Base<R, T> {
        let parent = self.get.clone();
        Base {
            segments: self.segments_to(key),
            get: Arc::new(move |r: &R| parent(r).and_then(|s| access(s).as_ref())),
        }
    }

    /// The JSON keys from the root to the parent's field `key`.
    fn segments_to(&self, key: &'static str) -> Vec<&'static str> {
        let mut segments = self.segments.clone();
        segments.push(key);
        segments
    }
}

/// A type whose fields queries can name; `#[derive(Document)]` and `#[derive(Queryable)]`
/// implement it. Nested struct fields of documents (`#[query(nested)]`) and elements of
/// collections queried with `any` need it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no query fields",
    note = "derive `marten::Queryable` for it (or `Document`)"
)]
pub trait HasFields: Send + Sync + 'static {
    /// The field paths of this type, rooted at `R`.
    type Fields<R: 'static>;
    /// The field paths below `base`.
    fn fields_at<R: 'static>(base: Base<R, Self>) -> Self::Fields<R>
    where
        Self: Sized;
}
