//! The SQL text of every table and function marten owns, one file per table: pure text,
//! built once per type or store, tested without a database. The bottom layer of the
//! crate: it may use nothing of the crate but leaf helpers, and everything above reads
//! its statements from here.

pub mod def;
pub mod documents;
pub mod event_ddl;
pub mod event_order;
pub mod event_reserve;
pub mod event_tags;
pub mod event_tip;
pub mod events;
pub mod functions;
pub mod hilo;
pub mod progression;
pub mod qualify;
pub mod snapshots;
pub mod stream_commands;
pub mod tenant_match;
pub mod tenants;
pub mod versions;

/// The tables marten creates for itself (events, streams, tags, the daemon's progression
/// and dead letters, the HiLo counters), in every store's schema.
pub const INTERNAL_TABLES: [&str; 7] = [
    events::EVENTS_TABLE,
    events::STREAMS_TABLE,
    events::TAGS_TABLE,
    events::TAG_VERSIONS_TABLE,
    progression::PROGRESSION_TABLE,
    progression::DEAD_LETTER_TABLE,
    hilo::HILO_TABLE,
];
