//! The spans marten-pg opens, with OpenTelemetry's database attribute names: every span
//! carries `db.system = "postgresql"`, `db.operation` and `db.namespace` (the store's
//! schema). Their fields are computed only when a subscriber wants the span, so with no
//! subscriber (or one filtering them out) a span costs a level check.
//!
//! Owns: the span names, fields and levels. May use: nothing of the crate (a leaf: the
//! callers pass the store's schema name).

use tracing::field::Empty;
use tracing::Span;

/// `db.system` of every span.
pub(crate) const SYSTEM: &str = "postgresql";

/// A load by id (`ids` ids) of documents of type `document`.
pub(crate) fn load(namespace: &str, document: &'static str, ids: usize) -> Span {
    tracing::debug_span!(
        "load",
        db.system = SYSTEM,
        db.operation = "load",
        db.namespace = namespace,
        marten.document = document,
        marten.ids = ids,
    )
}

/// A typed query on documents of type `document`; its statement's fingerprint is
/// recorded by [`fingerprint`] once the SQL is known.
pub(crate) fn query(namespace: &str, document: &'static str) -> Span {
    tracing::debug_span!(
        "query",
        db.system = SYSTEM,
        db.operation = "query",
        db.namespace = namespace,
        marten.document = document,
        marten.fingerprint = Empty,
        marten.statements = Empty,
    )
}

/// Records the fingerprint of `sql` (one statement's text, or a batch's) on `span`: a
/// hash of the text, which holds placeholders, never parameter values. Computed only
/// when the span is wanted.
pub(crate) fn fingerprint<'a>(span: &Span, sql: impl IntoIterator<Item = &'a str>) {
    if !span.is_disabled() {
        let hash = sql
            .into_iter()
            .fold(FNV_OFFSET, |h, text| fnv1a(h, text.as_bytes()));
        span.record(
            "marten.fingerprint",
            tracing::field::display(format_args!("{hash:016x}")),
        );
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The 64-bit FNV-1a hash of `bytes` continued from `hash`: stable across runs and
/// builds, unlike `DefaultHasher`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A bulk insert of `documents` documents of type `document` (binary `COPY`), in
/// `mode`; the rows it wrote are recorded when known.
pub(crate) fn bulk_insert(
    namespace: &str,
    document: &'static str,
    mode: &'static str,
    documents: usize,
) -> Span {
    tracing::info_span!(
        "bulk_insert",
        db.system = SYSTEM,
        db.operation = "bulk_insert",
        db.namespace = namespace,
        marten.document = document,
        marten.mode = mode,
        marten.documents = documents,
        marten.rows = Empty,
    )
}

/// The events a save appends: `streams` streams, `events` events in all.
pub(crate) fn append(namespace: &str, streams: usize, events: usize) -> Span {
    tracing::info_span!(
        "append",
        db.system = SYSTEM,
        db.operation = "append",
        db.namespace = namespace,
        marten.streams = streams,
        marten.events = events,
    )
}

/// The reads of a consistency boundary (`fetch_for_writing_by_tags`) over `tags` tags;
/// the events it matched are recorded when known.
pub(crate) fn boundary(namespace: &str, tags: usize) -> Span {
    tracing::debug_span!(
        "fetch_for_writing_by_tags",
        db.system = SYSTEM,
        db.operation = "boundary_read",
        db.namespace = namespace,
        marten.tags = tags,
        marten.events = Empty,
    )
}

/// Schema work (create, update or check objects) on `schema` under its migration lock.
pub(crate) fn schema(schema: &str) -> Span {
    tracing::info_span!(
        "schema",
        db.system = SYSTEM,
        db.operation = "schema",
        db.namespace = schema,
    )
}

/// A daemon runner of `projection`, the parent of its batches. Not a child of the
/// caller's span: the runner outlives it (it follows from it instead).
pub(crate) fn runner(namespace: &str, projection: &str) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "daemon.runner",
        db.system = SYSTEM,
        db.namespace = namespace,
        marten.projection = projection,
    );
    span.follows_from(Span::current());
    span
}

/// One daemon batch of `projection`: `events` events after position `from`, up to `to`;
/// its duration in milliseconds is recorded when it ends.
pub(crate) fn batch(namespace: &str, projection: &str, from: i64, to: i64, events: usize) -> Span {
    tracing::info_span!(
        "daemon.batch",
        db.system = SYSTEM,
        db.operation = "daemon.batch",
        db.namespace = namespace,
        marten.projection = projection,
        marten.from = from,
        marten.to = to,
        marten.events = events,
        marten.duration_ms = Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::{fnv1a, FNV_OFFSET};

    #[test]
    fn the_fingerprint_hash_is_fnv_1a() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
