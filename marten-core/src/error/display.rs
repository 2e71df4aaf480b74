//! Helpers that write parts of [`Error`](super::Error) messages: an optional id or stream,
//! and a list joined by a separator. Uses nothing else.

use std::fmt;

/// ` <id>` when there is an id, for error messages.
pub(super) fn with_id(id: &Option<String>) -> String {
    match id {
        Some(id) => format!(" {id}"),
        None => String::new(),
    }
}

/// ` in stream <id>` when the stream is known, for error messages.
pub(super) fn in_stream(stream: &Option<crate::StreamId>) -> String {
    match stream {
        Some(stream) => format!(" in stream {stream}"),
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

/// An error with every source after it, separated by `": "` (an [`Error`](super::Error)'s
/// own message leaves its sources out): what a log line shows.
pub struct WithSources<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for WithSources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::WithSources;
    use crate::error::DatabaseError;
    use crate::Error;

    #[test]
    fn a_log_line_shows_the_sources_of_an_error() {
        let e = Error::Database(DatabaseError {
            code: Some("42P01".into()),
            context: "reading mt_doc_x".into(),
            source: "relation \"x\" does not exist".into(),
        });
        let line = WithSources(&e).to_string();
        assert!(line.starts_with("database error: "), "{line}");
        assert!(line.contains("does not exist"), "{line}");
    }
}
