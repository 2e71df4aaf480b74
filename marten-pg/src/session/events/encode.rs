//! Turning pending events into one [`StreamAppend`]: each event serialized, the session's
//! metadata merged into its own, and text PostgreSQL would refuse rejected up front. Uses
//! the append op (`append.rs`) and `crate::validate`; sends nothing.

use marten_core::{Error, Result};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::api::Events;
use crate::events::pending::PendingEvent;
use crate::json::RawJson;
use crate::session::Tracking;
use crate::stream_key::StreamKey;
use crate::unit_of_work::append::{AppendKind, StreamAppend};
use marten_core::session::EventMeta;

impl<K: Tracking> Events<'_, K> {
    /// Builds the append, serializing every event; `None` for an empty plain append or
    /// start (a start of no events is refused by the caller that asked for a start, see
    /// [`no_events`]; an empty expected-version append asserts the version alone).
    pub(super) fn build(
        &mut self,
        kind: AppendKind,
        stream: StreamKey,
        events: impl IntoIterator<Item: Into<PendingEvent>>,
    ) -> Result<Option<StreamAppend>> {
        let tenant = self.tenant()?;
        let store = self.session.parts().store.clone();
        let meta = &self.session.parts().event_meta;
        let events = events.into_iter();
        let mut append = StreamAppend::new(
            kind,
            store.stream_identity(),
            tenant,
            stream.0,
            events.size_hint().0,
        );
        for pending in events {
            let mut pending: PendingEvent = pending.into();
            let type_id = std::any::Any::type_id(pending.data.as_any());
            store.register_event(pending.register, pending.event_type, type_id)?;
            let encoded = Encoded::new(&mut pending, meta, &append.stream)?;
            encoded.push(pending, &mut append);
        }
        append.count = append.ids.len() as i64;
        if append.count == 0 && matches!(kind, AppendKind::Append | AppendKind::Start) {
            return Ok(None);
        }
        Ok(Some(append))
    }
}

/// The error of a start of `stream` without events: a stream is its events, so it cannot
/// exist without one (as in Marten); nothing is queued.
pub(super) fn no_events(stream: String) -> Error {
    Error::InvalidInput {
        owner: "stream".to_owned(),
        id: Some(stream),
        field: "events".to_owned(),
        reason: "are empty: a stream cannot be started without events",
    }
}

/// One event's columns, serialized and checked, with the session's metadata merged in.
struct Encoded {
    data: Vec<u8>,
    headers: Option<RawJson>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
}

impl Encoded {
    /// Serializes `pending` and checks its data, headers, ids and tags, in that order
    /// (taking its metadata: what is left goes into [`Encoded::push`]).
    fn new(pending: &mut PendingEvent, meta: &EventMeta, stream: &StreamKey) -> Result<Self> {
        let event_type = pending.event_type;
        let owner = || (format!("event {event_type}"), Some(stream.0.to_string()));
        let data =
            (pending.serialize)(pending.data.as_ref()).map_err(|source| Error::SerializeEvent {
                event_type,
                stream: stream.0.clone(),
                source,
            })?;
        crate::validate::check_json(&data, owner)?;
        let headers = merge_headers(&meta.headers, pending.headers.take());
        let headers = encode_headers(headers, event_type, stream, owner)?;
        let correlation_id = pending
            .correlation_id
            .take()
            .or_else(|| meta.correlation_id.clone());
        let causation_id = pending
            .causation_id
            .take()
            .or_else(|| meta.causation_id.clone());
        for (field, text) in [
            ("correlation id", &correlation_id),
            ("causation id", &causation_id),
        ] {
            if let Some(text) = text {
                crate::validate::check_text(text, || field.to_owned(), owner)?;
            }
        }
        for tag in &pending.tags {
            crate::validate::check_tag(&tag.tag_type, &tag.value)?;
        }
        Ok(Encoded {
            data,
            headers,
            correlation_id,
            causation_id,
        })
    }

    /// Adds the event (and its tags) as the append's next row.
    fn push(self, pending: PendingEvent, append: &mut StreamAppend) {
        let ordinal = append.ids.len() as i64 + 1;
        for tag in pending.tags {
            append.tag_ords.push(ordinal);
            append.tag_types.push(tag.tag_type);
            append.tag_values.push(tag.value);
        }
        append.ids.push(pending.id.unwrap_or_else(Uuid::now_v7));
        append.types.push(pending.event_type);
        append.data.push(RawJson(self.data));
        append.headers.push(self.headers);
        append.correlation_ids.push(self.correlation_id);
        append.causation_ids.push(self.causation_id);
        append.events.push(pending.data);
    }
}

/// The session's headers with the event's own on top (the event's win).
fn merge_headers(
    session: &Option<Map<String, Value>>,
    own: Option<Map<String, Value>>,
) -> Option<Map<String, Value>> {
    match (session, own) {
        (None, None) => None,
        (Some(h), None) => Some(h.clone()),
        (None, Some(h)) => Some(h),
        (Some(session), Some(own)) => {
            let mut all = session.clone();
            all.extend(own);
            Some(all)
        }
    }
}

/// The headers as checked JSON.
fn encode_headers(
    headers: Option<Map<String, Value>>,
    event_type: &'static str,
    stream: &StreamKey,
    owner: impl FnOnce() -> (String, Option<String>),
) -> Result<Option<RawJson>> {
    let Some(headers) = headers else {
        return Ok(None);
    };
    let json = serde_json::to_vec(&headers).map_err(|source| Error::SerializeEvent {
        event_type,
        stream: stream.0.clone(),
        source,
    })?;
    crate::validate::check_json_field(&json, "header ", owner)?;
    Ok(Some(RawJson(json)))
}
