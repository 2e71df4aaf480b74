//! The names of marten's tables in the store's schema, quoted and qualified once per
//! console, for the console's own statements (each page's SQL is in its file under
//! `pages/`). Identifiers are quoted (`"schema"."mt_events"`), so a schema name with
//! capitals or odd characters is read as written; values are always parameters.

use marten_core::{StreamIdentity, Tenancy};
use marten_pg::tables::events::{EVENTS_TABLE, STREAMS_TABLE, TAGS_TABLE, TAG_VERSIONS_TABLE};
use marten_pg::tables::progression::{DEAD_LETTER_TABLE, PROGRESSION_TABLE};
use marten_pg::DocumentStore;

/// `name` as a quoted SQL identifier (`"` doubled inside).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// marten's tables in one store's schema, and what shapes their keys.
#[derive(Debug, Clone)]
pub struct Tables {
    /// `mt_events`.
    pub events: String,
    /// `mt_streams`.
    pub streams: String,
    /// `mt_event_tags`.
    pub tags: String,
    /// `mt_tag_versions`.
    pub tag_versions: String,
    /// `mt_event_progression`.
    pub progression: String,
    /// `mt_dead_letters`.
    pub dead_letters: String,
    /// Stream ids: `uuid` or `text`.
    pub identity: StreamIdentity,
    /// Whether the event tables are keyed by tenant first.
    pub conjoined: bool,
}

impl Tables {
    /// The tables of `store`'s schema.
    pub fn of(store: &DocumentStore) -> Self {
        let schema = quote_ident(store.schema());
        let q = |t: &str| format!("{schema}.{}", quote_ident(t));
        Tables {
            events: q(EVENTS_TABLE),
            streams: q(STREAMS_TABLE),
            tags: q(TAGS_TABLE),
            tag_versions: q(TAG_VERSIONS_TABLE),
            progression: q(PROGRESSION_TABLE),
            dead_letters: q(DEAD_LETTER_TABLE),
            identity: store.stream_identity(),
            conjoined: store.events_tenancy() == Tenancy::Conjoined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("s1"), "\"s1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
