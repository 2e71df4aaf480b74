//! The event store's tables as data ([`TableDef`]): `mt_streams`, `mt_events` with its
//! sequence and indexes, the tag tables; their DDL is rendered from them.
//!
//! Every table has a `tenant_id` column (`'*DEFAULT*'` unless a tenant is recorded). With
//! [`Tenancy::Conjoined`] events it leads the primary keys, the unique key of a stream's
//! versions and the foreign keys, so each tenant has streams of its own; with
//! [`Tenancy::Single`] the keys are the single-tenant ones.

use marten_core::tenant::DEFAULT_TENANT;
use marten_core::{StreamIdentity, Tenancy};

use crate::tables::def::{ColumnDef, IndexDef, TableDef};
use crate::tables::events::{
    id_type, EVENTS_TABLE, EVENT_ID_INDEX, STREAMS_TABLE, TAGS_TABLE, TAG_VERSIONS_TABLE,
};

/// The sequence of event sequence numbers.
pub const EVENTS_SEQUENCE: &str = "mt_events_sequence";

/// The index of the gap-safe global order.
pub const TX_SEQ_INDEX: &str = "mt_events_tx_seq";
/// The index of each tenant's events in the gap-safe global order (conjoined events).
pub const TENANT_TX_SEQ_INDEX: &str = "mt_events_tenant_tx_seq";

/// The index of the tags of each event, by its sequence number.
pub const TAGS_SEQ_INDEX: &str = "mt_event_tags_seq";

/// The unique constraint of a stream's versions.
pub const STREAM_VERSION_CONSTRAINT: &str = "mt_events_stream_version";

/// Whether the primary key of the streams table in schema `$1` holds `tenant_id` (so the
/// event tables are conjoined); NULL when there is no such table.
pub const STREAMS_KEY_HAS_TENANT: &str = "SELECT 'tenant_id' = ANY(array_agg(a.attname::text)) \
     FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
     JOIN pg_namespace n ON n.oid = t.relnamespace \
     JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(c.conkey) \
     WHERE n.nspname = $1 AND t.relname = 'mt_streams' AND c.contype = 'p'";

fn col(name: &str, sql_type: &str, rest: &str) -> ColumnDef {
    ColumnDef::new(name, sql_type, rest)
}

/// The `tenant_id` column of every event table; `conjoined`, in byte order (as the
/// tenant column of conjoined documents): the cheapest comparison for the key every
/// index of the table leads with.
fn tenant_col(conjoined: bool) -> ColumnDef {
    let collate = if conjoined { "COLLATE \"C\" " } else { "" };
    col(
        "tenant_id",
        "text",
        &format!("{collate}NOT NULL DEFAULT '{DEFAULT_TENANT}'"),
    )
}

/// The event store's tables in `schema` for stream ids of `identity` and events of
/// `tenancy`, in creation order.
pub fn table_defs(schema: &str, identity: StreamIdentity, tenancy: Tenancy) -> Vec<TableDef> {
    let idt = id_type(identity);
    let conjoined = tenancy == Tenancy::Conjoined;
    let [tags, versions] = tag_tables(schema, conjoined);
    vec![
        streams_table(idt, conjoined),
        events_table(schema, idt, conjoined),
        tags,
        versions,
    ]
}

/// `mt_streams`: one row per stream, keyed by its id (`conjoined`: the tenant's id).
fn streams_table(idt: &str, conjoined: bool) -> TableDef {
    let mut streams = TableDef::new(
        STREAMS_TABLE,
        vec![
            col(
                "id",
                idt,
                if conjoined { "NOT NULL" } else { "PRIMARY KEY" },
            ),
            col("type", "text", ""),
            col("version", "bigint", "NOT NULL DEFAULT 0"),
            col("created", "timestamptz", "NOT NULL DEFAULT now()"),
            col("timestamp", "timestamptz", "NOT NULL DEFAULT now()"),
            col("is_archived", "boolean", "NOT NULL DEFAULT false"),
            tenant_col(conjoined),
            // The ordering transaction id of the stream's last events: each append records
            // `greatest(last_tx, its own transaction id)` on its events and here, so a
            // stream's events come in version order in the global order (see
            // `tables::events`).
            col("last_tx", "xid8", "NOT NULL DEFAULT '0'"),
        ],
    );
    if conjoined {
        streams
            .constraints
            .push("PRIMARY KEY (tenant_id, id)".to_owned());
    }
    streams
}

/// `mt_events` with its sequence, the unique key of each stream's versions, the order
/// index and the event id index.
fn events_table(schema: &str, idt: &str, conjoined: bool) -> TableDef {
    let stream_ref = if conjoined {
        "NOT NULL".to_owned()
    } else {
        format!("NOT NULL REFERENCES {schema}.{STREAMS_TABLE}(id) ON DELETE CASCADE")
    };
    let mut events = TableDef::new(
        EVENTS_TABLE,
        vec![
            col(
                "seq_id",
                "bigint",
                &format!("PRIMARY KEY DEFAULT nextval('{schema}.{EVENTS_SEQUENCE}')"),
            ),
            col("id", "uuid", "NOT NULL"),
            col("stream_id", idt, &stream_ref),
            col("version", "bigint", "NOT NULL"),
            col("type", "text", "NOT NULL"),
            col("data", "jsonb", "NOT NULL"),
            col("timestamp", "timestamptz", "NOT NULL DEFAULT now()"),
            col("correlation_id", "text", ""),
            col("causation_id", "text", ""),
            col("headers", "jsonb", ""),
            col("tx_id", "xid8", "NOT NULL DEFAULT pg_current_xact_id()"),
            col("is_archived", "boolean", "NOT NULL DEFAULT false"),
            tenant_col(conjoined),
        ],
    );
    events.sequences.push(EVENTS_SEQUENCE.to_owned());
    // Conjoined: each tenant's event ids and streams' versions.
    let (event_id_key, version_key): (&[&str], &[&str]) = if conjoined {
        (&["tenant_id", "id"], &["tenant_id", "stream_id", "version"])
    } else {
        (&["id"], &["stream_id", "version"])
    };
    events.constraints.push(format!(
        "CONSTRAINT {STREAM_VERSION_CONSTRAINT} UNIQUE ({})",
        version_key.join(", ")
    ));
    if conjoined {
        events.constraints.push(format!(
            "FOREIGN KEY (tenant_id, stream_id) REFERENCES {schema}.{STREAMS_TABLE}(tenant_id, id) ON DELETE CASCADE"
        ));
    }
    // The gap-safe global order: with conjoined events, each tenant's (the daemon runs
    // per tenant, each runner reading its tenant's range); otherwise everyone's. One
    // index either way, so a conjoined append maintains no more indexes than a
    // single-tenant one; a store-wide read of every tenant's events merges the tenants'
    // ranges (`tables::event_order::merge_tenant_pages`).
    let order = if conjoined {
        IndexDef::btree(
            TENANT_TX_SEQ_INDEX,
            false,
            &["tenant_id", "tx_id", "seq_id"],
        )
    } else {
        IndexDef::btree(TX_SEQ_INDEX, false, &["tx_id", "seq_id"])
    };
    events.indexes = vec![
        IndexDef::btree(STREAM_VERSION_CONSTRAINT, true, version_key),
        order,
        // An event id is appended once (conjoined: once per tenant, so one tenant's ids
        // neither collide with nor reveal another's): a save sent again after an unknown
        // outcome is refused as a duplicate instead of appending its events twice.
        IndexDef::btree(EVENT_ID_INDEX, true, event_id_key),
    ];
    events.after.push(format!(
        "ALTER SEQUENCE {schema}.{EVENTS_SEQUENCE} OWNED BY {schema}.{EVENTS_TABLE}.seq_id"
    ));
    events
}

/// The tags of each event and the version of each tag; `conjoined`, keyed by tenant first.
fn tag_tables(schema: &str, conjoined: bool) -> [TableDef; 2] {
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
            tenant_col(conjoined),
        ],
    );
    let (tags_key, versions_key) = if conjoined {
        (
            "PRIMARY KEY (tenant_id, tag_type, tag_value, seq_id)",
            "PRIMARY KEY (tenant_id, tag_type, tag_value)",
        )
    } else {
        (
            "PRIMARY KEY (tag_type, tag_value, seq_id)",
            "PRIMARY KEY (tag_type, tag_value, tenant_id)",
        )
    };
    tags.constraints.push(tags_key.to_owned());
    // An event's tags by its sequence number: what archiving or deleting a stream bumps
    // (`tables::stream_commands`) and what the cascade of a deleted event removes, which
    // without it would scan the whole table once per event.
    tags.indexes = vec![IndexDef::btree(TAGS_SEQ_INDEX, false, &["seq_id"])];
    let mut versions = TableDef::new(
        TAG_VERSIONS_TABLE,
        vec![
            col("tag_type", "text", "NOT NULL"),
            col("tag_value", "text", "NOT NULL"),
            tenant_col(conjoined),
            col("version", "bigint", "NOT NULL DEFAULT 0"),
        ],
    );
    versions.constraints.push(versions_key.to_owned());
    [tags, versions]
}

/// The DDL of the event store in `schema`, idempotent.
pub fn ddl(schema: &str, identity: StreamIdentity, tenancy: Tenancy) -> Vec<String> {
    table_defs(schema, identity, tenancy)
        .iter()
        .flat_map(|t| t.ddl(schema))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_created_before_the_events_and_owned_by_them_after() {
        let ddl = ddl("s1", StreamIdentity::String, Tenancy::Single);
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

    #[test]
    fn conjoined_events_lead_every_stream_key_with_the_tenant() {
        let ddl = ddl("s1", StreamIdentity::Uuid, Tenancy::Conjoined).join("\n");
        for expected in [
            "PRIMARY KEY (tenant_id, id)",
            "CONSTRAINT mt_events_stream_version UNIQUE (tenant_id, stream_id, version)",
            "FOREIGN KEY (tenant_id, stream_id) REFERENCES s1.mt_streams(tenant_id, id) ON DELETE CASCADE",
            "PRIMARY KEY (tenant_id, tag_type, tag_value, seq_id)",
            "PRIMARY KEY (tenant_id, tag_type, tag_value)",
            "ON s1.mt_events (tenant_id, stream_id, version)",
            "UNIQUE INDEX IF NOT EXISTS mt_events_id ON s1.mt_events (tenant_id, id)",
        ] {
            assert!(ddl.contains(expected), "{expected}: {ddl}");
        }
        assert!(!ddl.contains("id uuid PRIMARY KEY"), "{ddl}");
        let single = ddl_of(Tenancy::Single);
        assert!(single.contains("id uuid PRIMARY KEY"), "{single}");
        assert!(single.contains("UNIQUE (stream_id, version)"), "{single}");
        assert!(single.contains("tenant_id text NOT NULL DEFAULT '*DEFAULT*'"));
    }

    fn ddl_of(tenancy: Tenancy) -> String {
        ddl("s1", StreamIdentity::Uuid, tenancy).join("\n")
    }
}
