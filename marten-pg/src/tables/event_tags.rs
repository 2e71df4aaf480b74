//! The SQL of the tag tables (`mt_event_tags`, `mt_tag_versions`): the CTEs a tagged
//! append adds to its statement (its tags' versions bumped before its stream row, its tag
//! rows after its events), the one-statement tagged append that carries a save's tag
//! lock, the tag lock itself ([`TAG_LOCK`]) and the reads of a consistency boundary.
//! Their DDL is in [`crate::tables::event_ddl`]; the statements that use them are built
//! with the rest of the event store's in [`crate::tables::events`].

#[cfg(doc)]
use crate::tables::events::{EventSql, StreamRows};
use crate::tables::events::{EVENTS_TABLE, EVENT_COLUMNS, TAGS_TABLE, TAG_VERSIONS_TABLE};
use crate::tables::functions::{GUARD_FUNCTION, REJECTED_FLAG};

/// The most tags a boundary's reads bind as scalar parameters; a query of more tags binds
/// them as arrays ([`EventSql::tag_versions`], [`EventSql::events_by_tags`]).
///
/// Why scalars: with the tags as arrays, every plan of these reads is a custom plan (a
/// generic plan would assume ten tags and hash a scan of the table, so PostgreSQL keeps
/// planning each read again, about 150-250 µs each). With scalars the generic plan is
/// the same index lookup as a custom one, and after five reads the statement stops being
/// planned.
pub const FEW_TAGS: usize = 4;

/// The two reads of a consistency boundary of `n` tags (`n` <= [`FEW_TAGS`]): the tags
/// bound as pairs, `$1`/`$2` the first tag's type and value, `$3`/`$4` the second's, up
/// to `$2n`.
pub struct BoundaryReads {
    /// The tags, then `$2n+1` the tenant of the tag versions -> `tag_type, tag_value,
    /// version`.
    pub versions: String,
    /// The tags, then `$2n+1` event types (NULL = all) -> events in sequence order;
    /// scoped (`$2n+2`).
    pub events: String,
}

impl BoundaryReads {
    /// The reads of `n` tags.
    pub(crate) fn new(n: usize, conjoined: bool) -> Self {
        let pairs: Vec<String> = (0..n)
            .map(|i| format!("(${}::text, ${}::text)", 2 * i + 1, 2 * i + 2))
            .collect();
        let pairs = pairs.join(", ");
        let (tags_scope, events_scope) = if conjoined {
            let tenant = 2 * n + 2;
            (
                format!("t.tenant_id = ${tenant}::text AND "),
                format!("tenant_id = ${tenant}::text AND "),
            )
        } else {
            (String::new(), String::new())
        };
        let types = 2 * n + 1;
        BoundaryReads {
            versions: format!(
                "SELECT v.tag_type, v.tag_value, v.version FROM {TAG_VERSIONS_TABLE} v \
                 WHERE v.tenant_id = ${types}::text AND (v.tag_type, v.tag_value) IN ({pairs})"
            ),
            events: format!(
                "SELECT {EVENT_COLUMNS} FROM {EVENTS_TABLE} WHERE {events_scope}seq_id IN (\
                 SELECT t.seq_id FROM {TAGS_TABLE} t WHERE {tags_scope}(t.tag_type, t.tag_value) IN ({pairs})) \
                 AND (${types}::text[] IS NULL OR type = ANY(${types}::text[])) AND NOT is_archived ORDER BY seq_id"
            ),
        }
    }
}

/// What a tagged append adds to its statement: the bump of its tags' versions, before the
/// stream row (`first`: ends with `ok`, which the stream-row statement of
/// [`StreamRows::gated`] waits for, so the tags are locked before the stream, the order
/// of every save that locks tags), and its tag rows after the events (`after`). Both
/// empty for an untagged append.
#[derive(Default)]
pub(crate) struct TagCtes {
    pub(crate) first: String,
    pub(crate) after: String,
}

/// The tag rows of a tagged append, as a CTE following the event insert `e`.
/// `conjoined`: they belong to the append's tenant (`$13`); otherwise to the tenant of
/// single-tenant tags (the column's default).
pub(crate) fn insert_tag_rows(conjoined: bool) -> String {
    let (tenant_column, tenant_value) = tenant_of_tags(conjoined);
    format!(
        ", tg AS (INSERT INTO {TAGS_TABLE} (tag_type, tag_value, seq_id{tenant_column}) \
         SELECT x.tt, x.tv, e.seq_id{tenant_value} FROM unnest($10::bigint[], $11::text[], $12::text[]) AS x(ord, tt, tv) \
         JOIN e ON e.version = (SELECT version FROM s) - $3::bigint + x.ord ON CONFLICT DO NOTHING)"
    )
}

/// The bump of the version of each tag of a tagged append, in tag order, as the CTEs
/// before its stream row (`tv`, then the gate `ok` the stream row waits for); the tenant
/// as in [`insert_tag_rows`]. The bumps run whether or not the stream row is then taken,
/// so a rejected stream must undo them: inside a larger save it sets the save's rejected
/// flag and the guard after it rolls the bumps back with the save; as the whole save
/// (no guard follows) the statement raises itself ([`verdict`],
/// [`EventSql::tagged_alone`]).
pub(crate) fn bump_tag_versions(conjoined: bool) -> String {
    let (tenant_column, tenant_value) = tenant_of_tags(conjoined);
    format!(
        "tv AS (INSERT INTO {TAG_VERSIONS_TABLE} AS v (tag_type, tag_value{tenant_column}, version) \
         SELECT DISTINCT x.tt, x.tv{tenant_value}, 1::bigint FROM unnest($11::text[], $12::text[]) AS x(tt, tv) \
         ORDER BY 1, 2 \
         ON CONFLICT (tag_type, tag_value, tenant_id) DO UPDATE SET version = v.version + 1 RETURNING 1), \
         ok AS (SELECT count(*) >= 0 AS passed FROM tv), "
    )
}

/// The tenant column and value of a tagged append's tag rows and versions.
fn tenant_of_tags(conjoined: bool) -> (&'static str, &'static str) {
    if conjoined {
        (", tenant_id", ", $13::text")
    } else {
        ("", "")
    }
}

/// A tagged append that is the whole save, with the tag lock of its boundaries, as one
/// statement (no transaction around it, no guard after it): the lock's parameters start
/// at `$first` (types, values, captured versions, appended flags, the tenant of the tag
/// versions, the number of tags).
///
/// In order: `tl` asserts every captured version and bumps every tag once for being
/// captured and once for being appended (what [`TAG_LOCK`] and the append's own bump do
/// in two statements), in (type, value) order; `ok` passes when every tag was written;
/// the stream row `s` (gated by `ok`, so it is locked after the tags), the events and
/// their tag rows follow. When `ok` failed or the stream was rejected, `verdict` sets the
/// rejected flag and the guard raises: the statement, its own transaction, writes
/// nothing, and the save learns why from the separate statements of a second attempt.
pub(crate) fn checked(stream_row: &str, events: &str, tag_rows: &str, first: usize) -> String {
    let [types, values, captured, appended, tenant, count] = std::array::from_fn(|i| first + i);
    format!(
        "WITH input AS (SELECT * FROM unnest(${types}::text[], ${values}::text[], ${captured}::bigint[], ${appended}::boolean[]) \
         AS i(tt, tv, captured, appended)), \
         tl AS (INSERT INTO {TAG_VERSIONS_TABLE} AS v (tag_type, tag_value, tenant_id, version) \
         SELECT tt, tv, ${tenant}::text, (captured IS NOT NULL)::int + appended::int FROM input ORDER BY tt, tv \
         ON CONFLICT (tag_type, tag_value, tenant_id) DO UPDATE SET version = v.version + \
         (SELECT (i.captured IS NOT NULL)::int + i.appended::int FROM input i WHERE i.tt = excluded.tag_type AND i.tv = excluded.tag_value) \
         WHERE coalesce((SELECT i.captured FROM input i WHERE i.tt = excluded.tag_type AND i.tv = excluded.tag_value), v.version) = v.version \
         RETURNING 1), \
         ok AS (SELECT count(*) = ${count}::bigint AS passed FROM tl), \
         s AS ({stream_row} RETURNING st.version, st.last_tx), e AS ({events} RETURNING seq_id, version){tag_rows}, \
         {verdict}",
        verdict = verdict(),
    )
}

/// The end of a tagged append that is the whole save ([`checked`],
/// [`EventSql::tagged_alone`]), after its CTEs: `verdict` sets the rejected flag when the
/// stream row `s` was not taken, and the one result row is the new stream version and the
/// guard, called only then, which raises [`crate::tables::functions::REJECTED_SQLSTATE`].
/// Raising, the statement (its own transaction) writes nothing, not even the tag versions
/// it bumped before the stream row; taken, the row's version and a NULL.
pub(crate) fn verdict() -> String {
    format!(
        "verdict AS (SELECT CASE WHEN EXISTS (SELECT 1 FROM s) THEN NULL ELSE set_config('{REJECTED_FLAG}', 't', true) END AS rejected) \
         SELECT (SELECT version FROM s), (SELECT {GUARD_FUNCTION}() FROM verdict WHERE verdict.rejected IS NOT NULL)"
    )
}

/// See [`EventSql::tag_versions`].
pub(crate) fn select_tag_versions() -> String {
    format!(
        "SELECT v.tag_type, v.tag_value, v.version FROM {TAG_VERSIONS_TABLE} v \
         JOIN unnest($1::text[], $2::text[]) AS q(tt, tv) ON v.tag_type = q.tt AND v.tag_value = q.tv \
         WHERE v.tenant_id = $3::text"
    )
}

/// See [`EventSql::events_by_tags`]: `conjoined`, the tags and events of the tenant `$4`.
pub(crate) fn select_events_by_tags(conjoined: bool) -> String {
    let (tags_scope, events_scope) = if conjoined {
        ("t.tenant_id = $4::text AND ", "tenant_id = $4::text AND ")
    } else {
        ("", "")
    };
    format!(
        "SELECT {EVENT_COLUMNS} FROM {EVENTS_TABLE} WHERE {events_scope}seq_id IN (\
         SELECT t.seq_id FROM {TAGS_TABLE} t JOIN unnest($1::text[], $2::text[]) AS q(tt, tv) \
         ON {tags_scope}t.tag_type = q.tt AND t.tag_value = q.tv) \
         AND ($3::text[] IS NULL OR type = ANY($3::text[])) AND NOT is_archived ORDER BY seq_id"
    )
}

/// The boundary check and tag lock of a save: every tag the save touches, locked in
/// (tag_type, tag_value) order in one statement before anything else; a tag a boundary
/// captured is asserted at its captured version and bumped. `$1` types, `$2` values,
/// `$3` captured versions (NULL = lock only), `$4` row count, `$5` the tenant of the tag
/// versions.
pub const TAG_LOCK: &str = "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS i(tt, tv, captured)), \
     w AS (INSERT INTO mt_tag_versions AS v (tag_type, tag_value, tenant_id, version) \
     SELECT tt, tv, $5::text, CASE WHEN captured IS NULL THEN 0 ELSE 1 END FROM input ORDER BY tt, tv \
     ON CONFLICT (tag_type, tag_value, tenant_id) DO UPDATE SET version = v.version + \
     CASE WHEN (SELECT i.captured FROM input i WHERE i.tt = excluded.tag_type AND i.tv = excluded.tag_value) IS NULL THEN 0 ELSE 1 END \
     WHERE coalesce((SELECT i.captured FROM input i WHERE i.tt = excluded.tag_type AND i.tv = excluded.tag_value), v.version) = v.version \
     RETURNING v.tag_type, v.tag_value) \
     SELECT array_agg(w.tag_type), array_agg(w.tag_value), \
     CASE WHEN count(*) < $4::bigint THEN set_config('marten.rejected', 't', true) END FROM w";
