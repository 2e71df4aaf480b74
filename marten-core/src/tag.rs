//! Tags: typed values events carry, for dynamic consistency boundaries.

/// A typed tag value, usually a newtype id (`struct CourseId(Uuid)`). Implement it with
/// `#[derive(Tag)]`: the tag type is the type name in snake case (or `#[tag(name = "..")]`)
/// and the value is the inner value's text.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tag",
    label = "a #[tag] field must be a tag",
    note = "derive `Tag` for a newtype id (`#[derive(Tag)] struct CourseId(Uuid);`), or tag a `String`, `Uuid`, `i64` or `i32` field"
)]
pub trait Tag {
    /// The tag type, e.g. `course_id`.
    const TAG_TYPE: &'static str;
    /// The tag value as stored.
    fn tag_value(&self) -> String;
}

/// One tag of one event: its type and value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventTag {
    /// The tag type.
    pub tag_type: String,
    /// The tag value.
    pub value: String,
}

impl EventTag {
    /// A tag of a typed value.
    pub fn of<T: Tag>(value: &T) -> Self {
        EventTag {
            tag_type: T::TAG_TYPE.to_owned(),
            value: value.tag_value(),
        }
    }

    /// A tag given by type name and value.
    pub fn named(tag_type: impl Into<String>, value: impl ToString) -> Self {
        EventTag {
            tag_type: tag_type.into(),
            value: value.to_string(),
        }
    }
}

macro_rules! plain_tag {
    ($($t:ty),*) => {$(
        impl Tag for $t {
            const TAG_TYPE: &'static str = "";
            fn tag_value(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

plain_tag!(String, uuid::Uuid, i64, i32);

/// The tag of a plain value under `name` (used by generated code).
#[doc(hidden)]
pub fn plain_tag<T: Tag>(value: &T, name: &'static str) -> EventTag {
    if T::TAG_TYPE.is_empty() {
        EventTag::named(name, value.tag_value())
    } else {
        EventTag::of(value)
    }
}
