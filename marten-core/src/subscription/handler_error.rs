//! A subscription handler's failure.

use std::fmt;

use crate::{Error, EventEnvelope};

/// Why a subscription's handler failed on a batch, and (when it knows) on which event.
///
/// The daemon retries the batch with backoff; an event that keeps failing meets the
/// poison policy (dead-lettered and left out, or the subscription stops). A failure that
/// names no event is charged to the first event of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The global sequence of the event the handler failed on, if it said.
    pub sequence: Option<i64>,
    /// What went wrong.
    pub message: String,
}

impl HandlerError {
    /// A failure of the batch as a whole (charged to its first event).
    pub fn new(message: impl fmt::Display) -> Self {
        HandlerError {
            sequence: None,
            message: message.to_string(),
        }
    }

    /// A failure on `event`.
    pub fn at(event: &EventEnvelope, message: impl fmt::Display) -> Self {
        HandlerError {
            sequence: Some(event.sequence),
            message: message.to_string(),
        }
    }

    /// The [`Error::Apply`] of subscription `name` for this failure within `events` (the
    /// batch handed to the handler, in order): it names the event failed on, or the
    /// first one when the failure names none or one outside the batch. `None` for an
    /// empty batch.
    pub fn into_error(self, name: &'static str, events: &[EventEnvelope]) -> Option<Error> {
        let at = self
            .sequence
            .and_then(|s| events.iter().find(|e| e.sequence == s))
            .or_else(|| events.first())?;
        Some(Error::Apply {
            projection: name,
            event_type: at.event_type.clone().into_owned(),
            stream: at.stream_id.clone(),
            version: at.version,
            message: self.message,
        })
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sequence {
            Some(s) => write!(f, "at event {s}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for HandlerError {}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        HandlerError::new(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use crate::{Event, StreamId};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping;

    impl Event for Ping {
        const EVENT_TYPE: &'static str = "ping";
    }

    fn event(sequence: i64, stream: &str, version: i64) -> EventEnvelope {
        let mut e = EventEnvelope::new(
            sequence,
            Uuid::now_v7(),
            StreamId::from(stream),
            Arc::new(Ping),
        );
        e.version = version;
        e.event_type = "ping".into();
        e
    }

    fn failed_at(err: Option<Error>) -> Option<(StreamId, i64)> {
        match err {
            Some(Error::Apply {
                stream, version, ..
            }) => Some((stream, version)),
            _ => None,
        }
    }

    #[test]
    fn a_failure_names_its_event_or_the_first() {
        let events = [event(5, "a", 1), event(9, "b", 3)];
        let at = HandlerError::at(&events[1], "boom").into_error("s", &events);
        assert_eq!(failed_at(at), Some((StreamId::from("b"), 3)));
        let whole = HandlerError::new("down").into_error("s", &events);
        assert_eq!(failed_at(whole), Some((StreamId::from("a"), 1)));
        let outside = HandlerError {
            sequence: Some(77),
            message: "x".into(),
        };
        assert_eq!(
            failed_at(outside.into_error("s", &events)),
            Some((StreamId::from("a"), 1))
        );
        assert!(HandlerError::new("x").into_error("s", &[]).is_none());
    }
}
