//! The event operations handle of a session, `session.events()`: the [`Events`] struct,
//! its check of stream ids and the tenant its operations work for. The operations are in
//! `append_api`, `read_api` and `writing`.

use marten_core::{Error, Result, StreamId, StreamIdentity};

use crate::events::EventTenant;
use crate::session::{Session, Tracking};
use crate::stream_key::StreamKey;

/// Why a string stream id longer than [`marten_core::MAX_ID_BYTES`] is refused.
const STREAM_ID_TOO_LONG: &str =
    "a string stream id must not be longer than 2048 bytes (PostgreSQL cannot index longer keys)";

/// The event operations of a session, borrowed from it: `session.events()`.
pub struct Events<'s, K: Tracking> {
    pub(crate) session: &'s mut Session<K>,
}

impl<K: Tracking> Events<'_, K> {
    /// The tenant of the session's event operations: with conjoined events a session
    /// without a tenant gets [`Error::TenantRequired`], before anything is sent.
    pub(super) fn tenant(&self) -> Result<EventTenant> {
        let store = &self.session.parts().store;
        EventTenant::of_session(store.events_tenancy(), store.tenant())
    }

    /// The stream's key, if `stream` is a valid id for this store's stream identity.
    pub(super) fn key(&self, stream: StreamId) -> Result<StreamKey> {
        let identity = self.session.parts().store.stream_identity();
        match (&stream, identity) {
            (StreamId::Uuid(_), StreamIdentity::Uuid) => Ok(StreamKey(stream)),
            (StreamId::String(s), StreamIdentity::String) if s.is_empty() => {
                Err(Error::InvalidStreamId {
                    stream,
                    reason: "a string stream id must not be empty",
                })
            }
            (StreamId::String(s), StreamIdentity::String) if s.contains('\0') => {
                Err(Error::InvalidStreamId {
                    stream,
                    reason: "a string stream id must not contain NUL characters",
                })
            }
            (StreamId::String(s), StreamIdentity::String)
                if s.len() > marten_core::MAX_ID_BYTES =>
            {
                Err(Error::InvalidStreamId {
                    stream,
                    reason: STREAM_ID_TOO_LONG,
                })
            }
            (StreamId::String(_), StreamIdentity::String) => Ok(StreamKey(stream)),
            (StreamId::Uuid(_), StreamIdentity::String) => Err(Error::InvalidStreamId {
                stream,
                reason: "this store uses string stream ids",
            }),
            (StreamId::String(_), StreamIdentity::Uuid) => Err(Error::InvalidStreamId {
                stream,
                reason: "this store uses uuid stream ids",
            }),
        }
    }
}
