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
//! two queue up in the same order instead of deadlocking. The same statement locks the
//! tags of a save's tag lock with them, in one order, and a save's planning sends it
//! before it reads streams under lock.

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
/// (`idt[]`) with the tags `$3` (types) / `$4` (values), all in one (type, value) order,
/// without bumping any: sent before a save's stream lock when it archives or deletes
/// streams, with the tags of the save's tag lock when it has one (two statements, each
/// in order, would take the two sets in no one order), and by a save's planning before
/// its first locked read (see the module docs). A tag of `$3`/`$4` without a version yet
/// gets one at 0, as [`super::event_tags::TAG_LOCK`] gives it (the save then bumps it);
/// a row there is locked as `FOR UPDATE` would (`DO UPDATE ... WHERE false` locks the
/// rows it does not update). Each stream's events, then each event's tags, are looked up
/// by index (joined laterally: a join on `stream_id = ANY($1)` has a generic plan that
/// hashes a scan of the whole tag table).
pub fn lock_tags(idt: &str, conjoined: bool) -> String {
    let scope = scope(conjoined, "e.");
    format!(
        "INSERT INTO {TAG_VERSIONS_TABLE} AS v (tag_type, tag_value, tenant_id, version) \
         SELECT q.tt, q.tv, $2::text, 0 FROM (\
         SELECT x.tt, x.tv FROM unnest($3::text[], $4::text[]) AS x(tt, tv) UNION \
         SELECT t.tag_type, t.tag_value FROM unnest($1::{idt}[]) AS s(id) \
         CROSS JOIN LATERAL (SELECT e.seq_id FROM {EVENTS_TABLE} e WHERE {scope}e.stream_id = s.id) e \
         CROSS JOIN LATERAL (SELECT t.tag_type, t.tag_value FROM {TAGS_TABLE} t WHERE t.seq_id = e.seq_id) t) q \
         ORDER BY q.tt, q.tv \
         ON CONFLICT (tag_type, tag_value, tenant_id) DO UPDATE SET version = v.version WHERE false"
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
            for sql in [archive("uuid", conjoined), delete("text", conjoined)] {
                assert_eq!(params(&sql), 2, "{sql}");
                assert!(sql.contains("v.tenant_id = $2::text"), "{sql}");
                // Conjoined: the stream's scope too, not the tag versions' tenant only.
                let tenants = sql.matches("tenant_id = $2::text").count();
                assert_eq!(tenants > 1, conjoined, "{sql}");
                assert!(!sql.contains("*DEFAULT*"), "{sql}");
            }
            // The lock: the streams, the tag versions' tenant and the tags of a tag lock.
            let sql = lock_tags("uuid", conjoined);
            assert_eq!(params(&sql), 4, "{sql}");
            assert!(sql.contains("SELECT q.tt, q.tv, $2::text, 0"), "{sql}");
            assert_eq!(sql.contains("e.tenant_id = $2::text"), conjoined, "{sql}");
            assert!(!sql.contains("*DEFAULT*"), "{sql}");
        }
    }

    #[test]
    fn the_tags_are_locked_in_one_order_without_a_bump() {
        let sql = lock_tags("uuid", true);
        assert!(
            sql.contains("ORDER BY q.tt, q.tv ON CONFLICT (tag_type, tag_value, tenant_id) DO UPDATE SET version = v.version WHERE false"),
            "{sql}"
        );
        assert!(
            sql.contains("unnest($3::text[], $4::text[]) AS x(tt, tv) UNION"),
            "{sql}"
        );
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
