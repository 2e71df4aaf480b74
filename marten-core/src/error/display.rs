//! Helpers that write parts of [`Error`](super::Error) messages: an optional id, and a
//! list joined by a separator. Uses nothing else.

use std::fmt;

/// ` <id>` when there is an id, for error messages.
pub(super) fn with_id(id: &Option<String>) -> String {
    match id {
        Some(id) => format!(" {id}"),
        None => String::new(),
    }
}

/// The items of a list, each shown with its `Display`, separated by the second field.
pub(super) struct Joined<'a, T>(pub(super) &'a [T], pub(super) &'static str);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            fmt::Display::fmt(item, f)?;
        }
        Ok(())
    }
}
