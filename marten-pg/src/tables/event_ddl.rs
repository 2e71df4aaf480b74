//! The event store's tables as data ([`TableDef`]): `mt_streams`, `mt_events` with its
//! sequence and indexes, the tag tables; their DDL is rendered from them.

use marten_core::StreamIdentity;

use crate::tables::def::{ColumnDef, IndexDef, TableDef};
use crate::tables::events::{
    id_type, EVENTS_TABLE, EVENT_ID_INDEX, STREAMS_TABLE, TAGS_TABLE, TAG_VERSIONS_TABLE,
};

/// The sequence of event sequence numbers.
pub const EVENTS_SEQUENCE: &str = "mt_events_sequence";

/// The index of the gap-safe global order.
pub const TX_SEQ_INDEX: &str = "mt_events_tx_seq";

/// The unique constraint of a stream's versions.
pub const STREAM_VERSION_CONSTRAINT: &str = "mt_events_stream_version";

fn col(name: &str, sql_type: &str, rest: &str) -> ColumnDef {
    ColumnDef::new(name, sql_type, rest)
}

/// The event store's tables in `schema` for stream ids of `identity`, in creation order.
pub fn table_defs(schema: &str, identity: StreamIdentity) -> Vec<TableDef> {
    let idt = id_type(identity);
    let streams = TableDef::new(
        STREAMS_TABLE,
        vec![
            col("id", idt, "PRIMARY KEY"),
            col("type", "text", ""),
            col("version", "bigint", "NOT NULL DEFAULT 0"),
            col("created", "timestamptz", "NOT NULL DEFAULT now()"),
            col("timestamp", "timestamptz", "NOT NULL DEFAULT now()"),
            col("is_archived", "boolean", "NOT NULL DEFAULT false"),
        ],
    );
    let mut events = TableDef::new(
        EVENTS_TABLE,
        vec![
            col(
                "seq_id",
                "bigint",
                &format!("PRIMARY KEY DEFAULT nextval('{schema}.{EVENTS_SEQUENCE}')"),
            ),
            col("id", "uuid", "NOT NULL"),
            col(
                "stream_id",
                idt,
                &format!("NOT NULL REFERENCES {schema}.{STREAMS_TABLE}(id) ON DELETE CASCADE"),
            ),
            col("version", "bigint", "NOT NULL"),
            col("type", "text", "NOT NULL"),
            col("data", "jsonb", "NOT NULL"),
            col("timestamp", "timestamptz", "NOT NULL DEFAULT now()"),
            col("correlation_id", "text", ""),
            col("causation_id", "text", ""),
            col("headers", "jsonb", ""),
            col("tx_id", "xid8", "NOT NULL DEFAULT pg_current_xact_id()"),
            col("is_archived", "boolean", "NOT NULL DEFAULT false"),
        ],
    );
    events.sequences.push(EVENTS_SEQUENCE.to_owned());
    events.constraints.push(format!(
        "CONSTRAINT {STREAM_VERSION_CONSTRAINT} UNIQUE (stream_id, version)"
    ));
    events.indexes = vec![
        IndexDef::btree(STREAM_VERSION_CONSTRAINT, true, &["stream_id", "version"]),
        IndexDef::btree(TX_SEQ_INDEX, false, &["tx_id", "seq_id"]),
        // An event id is appended once: a save sent again after an unknown outcome is
        // refused as a duplicate instead of appending its events twice.
        IndexDef::btree(EVENT_ID_INDEX, true, &["id"]),
    ];
    events.after.push(format!(
        "ALTER SEQUENCE {schema}.{EVENTS_SEQUENCE} OWNED BY {schema}.{EVENTS_TABLE}.seq_id"
    ));
    let [tags, versions] = tag_tables(schema);
    vec![streams, events, tags, versions]
}

/// The tags of each event and the version of each tag.
fn tag_tables(schema: &str) -> [TableDef; 2] {
    let mut tags = TableDef::new(
        TAGS_TABLE,
        vec![
            col("tag_type", "text", "NOT NULL"),
            col("tag_value", "text", "NOT NULL"),
            col(
                "seq_id",
                "bigint",
                &format!("NOT NULL REFERENCES {schema}.{EVENTS_TABLE}(seq_id) ON DELETE CASCADE"),
            ),
        ],
    );
    tags.constraints
        .push("PRIMARY KEY (tag_type, tag_value, seq_id)".to_owned());
    let mut versions = TableDef::new(
        TAG_VERSIONS_TABLE,
        vec![
            col("tag_type", "text", "NOT NULL"),
            col("tag_value", "text", "NOT NULL"),
            col("tenant_id", "text", "NOT NULL DEFAULT '*DEFAULT*'"),
            col("version", "bigint", "NOT NULL DEFAULT 0"),
        ],
    );
    versions
        .constraints
        .push("PRIMARY KEY (tag_type, tag_value, tenant_id)".to_owned());
    [tags, versions]
}

/// The DDL of the event store in `schema`, idempotent.
pub fn ddl(schema: &str, identity: StreamIdentity) -> Vec<String> {
    table_defs(schema, identity)
        .iter()
        .flat_map(|t| t.ddl(schema))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_created_before_the_events_and_owned_by_them_after() {
        let ddl = ddl("s1", StreamIdentity::String);
        let sequence = ddl
            .iter()
            .position(|s| s == "CREATE SEQUENCE IF NOT EXISTS s1.mt_events_sequence");
        let events = ddl.iter().position(|s| s.contains("s1.mt_events ("));
        assert!(sequence.is_some() && sequence < events, "{ddl:#?}");
        assert!(ddl
            .iter()
            .any(|s| s.contains("tx_id xid8 NOT NULL DEFAULT pg_current_xact_id()")));
        assert!(ddl.iter().any(|s| s.contains("id text PRIMARY KEY")));
        assert!(ddl
            .iter()
            .any(|s| s == "CREATE UNIQUE INDEX IF NOT EXISTS mt_events_id ON s1.mt_events (id)"));
        let owned = ddl.iter().position(|s| s.starts_with("ALTER SEQUENCE"));
        assert!(events < owned, "{ddl:#?}");
        for sql in &ddl {
            assert!(sql.contains("s1."), "schema-qualified: {sql}");
        }
    }
}
