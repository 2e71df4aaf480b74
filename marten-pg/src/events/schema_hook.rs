//! The schema hook of the event tables: the `TypeId` naming them in the store's set of
//! created objects and their migration, per stream identity. Uses `crate::schema`.

use std::any::TypeId;

use marten_core::StreamIdentity;

use crate::schema::{AutoCreate, MigrateFn};

/// Marker types naming the event store's tables for each stream identity in the store's
/// set of created objects.
struct UuidEventTables;
struct StringEventTables;

/// The `TypeId` and migration of the event tables for a stream identity.
pub(crate) fn events_schema(identity: StreamIdentity) -> (TypeId, MigrateFn) {
    match identity {
        StreamIdentity::Uuid => (TypeId::of::<UuidEventTables>(), |c, s, m: AutoCreate| {
            Box::pin(crate::schema::migrate_events(c, s, m, StreamIdentity::Uuid))
        }),
        StreamIdentity::String => (TypeId::of::<StringEventTables>(), |c, s, m: AutoCreate| {
            Box::pin(crate::schema::migrate_events(
                c,
                s,
                m,
                StreamIdentity::String,
            ))
        }),
    }
}
