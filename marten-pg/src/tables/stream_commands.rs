//! The statements of the stream commands, archive and delete, and the lock of the tags
//! they move.
//!
//! Archiving or deleting a stream takes its events out of what a consistency boundary
//! reads, so each command bumps the version of every tag its events carry (in the tag
//! versions of `$2`, the tenant the boundaries of the command's tenant read): a boundary
//! read before the command is then rejected at save, as if an event with that tag had
//! been appended, instead of committing a decision made on events that are gone.
//!
//! A save that runs a command locks those tags first ([`lock_tags`]), in (type, value)
//! order, before the stream's row: a tagged save takes its tags before its streams, so the
//! two queue up in the same order instead of deadlocking.

use crate::tables::events::{EVENTS_TABLE, STREAMS_TABLE, TAGS_TABLE, TAG_VERSIONS_TABLE};

/// The condition that finds a stream's events (as `e`) or its row by the tenant `$2`,
/// with conjoined events; nothing otherwise.
fn scope(conjoined: bool, alias: &str) -> String {
    if conjoined {
        format!("{alias}tenant_id = $2::text AND ")
    } else {
        String::new()
    }
}

/// Bumps, in the tag versions of `$2`, every tag of the events whose sequence numbers
/// `seq_ids` selects.
fn bump_tags_of(seq_ids: &str) -> String {
    format!(
        "UPDATE {TAG_VERSIONS_TABLE} v SET version = v.version + 1 \
         WHERE v.tenant_id = $2::text AND (v.tag_type, v.tag_value) IN \
         (SELECT t.tag_type, t.tag_value FROM {TAGS_TABLE} t WHERE t.seq_id IN ({seq_ids}))"
    )
}

/// Archives stream `$1` (`idt` ids): its row and the events not archived yet are marked
/// archived, and the tags of those events bumped in the tag versions of `$2` (which is
/// also the stream's tenant with `conjoined` events).
pub fn archive(idt: &str, conjoined: bool) -> String {
    let scope = scope(conjoined, "");
    let bump = bump_tags_of("SELECT seq_id FROM e");
    format!(
        "WITH s AS (UPDATE {STREAMS_TABLE} SET is_archived = true, timestamp = now() \
         WHERE {scope}id = $1::{idt} RETURNING id), \
         e AS (UPDATE {EVENTS_TABLE} SET is_archived = true \
         WHERE {scope}stream_id IN (SELECT id FROM s) AND NOT is_archived RETURNING seq_id) \
         {bump}"
    )
}

/// Deletes stream `$1` (`idt` ids) and, by the foreign keys, its events and their tags,
/// bumping the tags of those events in the tag versions of `$2` (which is also the
/// stream's tenant with `conjoined` events). The snapshots live aggregates keep of the
/// stream, and the documents inline single-stream aggregates project from it, are
/// document rows no key ties to it: the delete's save deletes them after this statement,
/// in its transaction ([`crate::tables::snapshots::snapshot_delete`]).
pub fn delete(idt: &str, conjoined: bool) -> String {
    let scope = scope(conjoined, "");
    let bump = bump_tags_of(&format!(
        "SELECT seq_id FROM {EVENTS_TABLE} WHERE {scope}stream_id = $1::{idt}"
    ));
    format!("WITH b AS ({bump}) DELETE FROM {STREAMS_TABLE} WHERE {scope}id = $1::{idt}")
}

/// Locks, in the tag versions of `$2`, the tags of the events of the streams `$1`
/// (`idt[]`), in (type, value) order: sent before a save's stream lock when it archives
/// or deletes streams (see the module docs). Each stream's events, then each event's
/// tags, are looked up by index (joined laterally: a join on `stream_id = ANY($1)` has a
/// generic plan that hashes a scan of the whole tag table).
pub fn lock_tags(idt: &str, conjoined: bool) -> String {
    let scope = scope(conjoined, "e.");
    format!(
        "SELECT 1 FROM {TAG_VERSIONS_TABLE} v WHERE v.tenant_id = $2::text AND (v.tag_type, v.tag_value) IN \
         (SELECT t.tag_type, t.tag_value FROM unnest($1::{idt}[]) AS s(id) \
         CROSS JOIN LATERAL (SELECT e.seq_id FROM {EVENTS_TABLE} e WHERE {scope}e.stream_id = s.id) e \
         CROSS JOIN LATERAL (SELECT t.tag_type, t.tag_value FROM {TAGS_TABLE} t WHERE t.seq_id = e.seq_id) t) \
         ORDER BY v.tag_type, v.tag_value FOR UPDATE OF v"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(sql: &str) -> usize {
        (1..10).filter(|n| sql.contains(&format!("${n}"))).count()
    }

    #[test]
    fn every_statement_binds_the_stream_and_the_tenant_of_the_tag_versions() {
        for conjoined in [false, true] {
            for sql in [
                archive("uuid", conjoined),
                delete("text", conjoined),
                lock_tags("uuid", conjoined),
            ] {
                assert_eq!(params(&sql), 2, "{sql}");
                assert!(sql.contains("v.tenant_id = $2::text"), "{sql}");
                // Conjoined: the stream's scope too, not the tag versions' tenant only.
                let tenants = sql.matches("tenant_id = $2::text").count();
                assert_eq!(tenants > 1, conjoined, "{sql}");
                assert!(!sql.contains("*DEFAULT*"), "{sql}");
            }
        }
    }

    #[test]
    fn the_tags_are_locked_in_the_order_of_the_tag_lock() {
        let sql = lock_tags("uuid", true);
        assert!(sql.ends_with("ORDER BY v.tag_type, v.tag_value FOR UPDATE OF v"));
        assert!(sql.contains("unnest($1::uuid[])"), "{sql}");
        assert!(
            sql.contains("e.tenant_id = $2::text AND e.stream_id = s.id"),
            "{sql}"
        );
    }

    #[test]
    fn an_archive_bumps_the_tags_of_the_events_it_archives_only() {
        let sql = archive("uuid", false);
        assert!(
            sql.contains("AND NOT is_archived RETURNING seq_id"),
            "{sql}"
        );
        assert!(sql.contains("t.seq_id IN (SELECT seq_id FROM e)"), "{sql}");
    }
}
