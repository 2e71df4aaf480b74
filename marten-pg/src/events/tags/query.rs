//! What a consistency boundary covers: a [`TagQuery`] (tags, optionally event types) and
//! the [`EventTypes`] tuples that name event types. Pure values: no I/O; uses only the
//! core's tag and event traits.

use marten_core::{Event, EventTag, Tag};

/// Which events a boundary covers: any of its tags, optionally only some event types.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct TagQuery {
    tags: Vec<EventTag>,
    event_types: Option<Vec<&'static str>>,
}

impl TagQuery {
    /// An empty query; add tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events carrying this typed tag.
    pub fn tag<T: Tag>(mut self, value: T) -> Self {
        self.tags.push(EventTag::of(&value));
        self
    }

    /// Events carrying this tag, given by type name and value (for plain `#[tag]` fields).
    pub fn tag_named(mut self, tag_type: impl Into<String>, value: impl ToString) -> Self {
        self.tags.push(EventTag::named(tag_type, value));
        self
    }

    /// Only events of these types: `.event_types::<(CourseDefined, StudentSubscribed)>()`.
    pub fn event_types<T: EventTypes>(mut self) -> Self {
        self.event_types = Some(T::names());
        self
    }

    /// The tags, deduplicated and in (type, value) order.
    pub fn tags(&self) -> Vec<EventTag> {
        let mut tags = self.tags.clone();
        tags.sort();
        tags.dedup();
        tags
    }

    /// The stored names of the event types the query is limited to (`None`: all types).
    pub(crate) fn event_type_names(&self) -> Option<&[&'static str]> {
        self.event_types.as_deref()
    }
}

/// A tuple of event types, for [`TagQuery::event_types`].
pub trait EventTypes {
    /// The stored type names.
    fn names() -> Vec<&'static str>;
}

macro_rules! event_tuples {
    ($($t:ident),+) => {
        impl<$($t: Event),+> EventTypes for ($($t,)+) {
            fn names() -> Vec<&'static str> {
                vec![$($t::EVENT_TYPE),+]
            }
        }
    };
}

event_tuples!(A);
event_tuples!(A, B);
event_tuples!(A, B, C);
event_tuples!(A, B, C, D);
event_tuples!(A, B, C, D, E);
event_tuples!(A, B, C, D, E, F);
event_tuples!(A, B, C, D, E, F, G);
event_tuples!(A, B, C, D, E, F, G, H);
