//! [`Postgres`], the backend marten-core's sessions run on: the store handle, the
//! connection owner and the unit of work as its types; loads, queued writes and one save
//! attempt (plan the inline projections, add the tag lock, send) as its methods.
//!
//! A load's type and the types of a save's queued writes are made sure of before the
//! session's request takes its connection, through [`Catalog::ensure_for`]: over a
//! caller's pool the schema work's connection comes out of the session's pool.

use marten_core::concurrency::{VersionOf, WriteOf};
use marten_core::projection::cache::CacheUpdate;
use marten_core::session::{
    AttemptEnd, Backend, DocumentBackend, Loaded, Parts, QueryBackend, SaveAttempts, Tracking,
};
use marten_core::tenant::require_tenant;
use marten_core::{DocumentMetadata, Error, Result, TenantId};
use tracing::Instrument;

use super::events::Events;
use super::{QuerySession, Session};
use crate::connection::{timed_out, within, Conn, Request};
use crate::documents::{load, serialize, PgDocument};
use crate::projections::Planned;
use crate::query::{Query, QueryBatch};
use crate::schema::Catalog;
use crate::store::DocumentStore;
use crate::unit_of_work::append::StreamAppend;
use crate::unit_of_work::{Outcome, Queued, SessionState, StreamLock, TagsFirst, UnitOfWork};

/// PostgreSQL as the backend of marten-core's sessions: `Session<Postgres, K>` is what
/// [`DocumentStore`]'s session methods open.
#[derive(Debug, Clone, Copy)]
pub struct Postgres;

impl Backend for Postgres {
    type Store = DocumentStore;
    type Conn = Conn;
    type Queue = UnitOfWork;
    type Scratch = Vec<CacheUpdate>;
    type Events<'s, K: Tracking> = Events<'s, K>;
    type Batch<'s> = QueryBatch<'s, QuerySession>;

    const SYSTEM: &'static str = crate::trace::SYSTEM;

    fn namespace(store: &DocumentStore) -> &str {
        store.schema()
    }

    fn connection(_store: &DocumentStore) -> Conn {
        Conn::new()
    }

    fn queue(store: &DocumentStore) -> UnitOfWork {
        UnitOfWork::for_tenant(store.tenant())
    }

    fn tenant(store: &DocumentStore) -> Option<&TenantId> {
        store.tenant()
    }

    fn in_transaction(conn: &Conn) -> bool {
        conn.in_transaction()
    }

    fn transaction_lost(conn: &Conn) -> bool {
        conn.lost_transaction_pending()
    }

    fn queued(queue: &UnitOfWork) -> usize {
        queue.len()
    }

    fn nothing_queued(queue: &UnitOfWork) -> bool {
        queue.is_empty()
    }

    fn clear(queue: &mut UnitOfWork) {
        queue.clear();
    }

    async fn attempt_save(parts: &mut Parts<Self>, attempts: &SaveAttempts) -> Result<AttemptEnd> {
        attempt(parts, attempts).await
    }

    fn end_save(parts: &mut Parts<Self>, committed: bool) {
        let catalog = parts.store.as_ref();
        crate::projections::cache::settle(catalog, &parts.queue, &mut parts.scratch, committed);
        parts.scratch.clear();
        // A transaction lost during the save was the save's to report.
        parts.conn.take_lost_transaction();
    }

    async fn end_transaction(parts: &mut Parts<Self>) {
        // Without a connection to ask, the next request closes the slot's connection
        // (which ends its transaction on the server).
        if let Ok(mut req) = parts.conn.request(&parts.store).await {
            req.rollback_within(&parts.store).await;
            req.finish();
        }
        // Ended on purpose: a loss found on the way has nothing left to report.
        parts.conn.take_lost_transaction();
    }

    fn events<K: Tracking>(session: &mut Session<K>) -> Events<'_, K> {
        Events { session }
    }

    fn batch(session: &mut QuerySession) -> QueryBatch<'_, QuerySession> {
        QueryBatch::new(session)
    }
}

impl<D: PgDocument> DocumentBackend<D> for Postgres {
    fn serialize(doc: &D) -> Result<Vec<u8>> {
        serialize(doc)
    }

    fn queue_write(
        queue: &mut UnitOfWork,
        kind: WriteOf<D>,
        id: D::Id,
        json: Vec<u8>,
        expected: Option<VersionOf<D>>,
    ) {
        queue.user.push_write::<D>(kind, id, json, expected);
    }

    fn queue_delete(queue: &mut UnitOfWork, id: D::Id) {
        queue.user.push_delete::<D>(id);
    }

    fn queue_hard_delete(queue: &mut UnitOfWork, id: D::Id) {
        queue.user.push_hard_delete::<D>(id);
    }

    async fn load(store: &DocumentStore, conn: &mut Conn, id: &D::Id) -> Result<Option<Loaded<D>>> {
        let span = crate::trace::load(store.schema(), D::DOCUMENT_TYPE, 1);
        async {
            let tenant = require_tenant(D::TENANCY, store.tenant(), D::DOCUMENT_TYPE)?;
            store.ensure_in::<D>(conn).await?;
            conn.read(store, async |c| load::load_one::<D>(c, tenant, id).await)
                .await
        }
        .instrument(span)
        .await
    }

    async fn load_many(
        store: &DocumentStore,
        conn: &mut Conn,
        ids: &[D::Id],
    ) -> Result<Vec<Loaded<D>>> {
        let span = crate::trace::load(store.schema(), D::DOCUMENT_TYPE, ids.len());
        async {
            let tenant = require_tenant(D::TENANCY, store.tenant(), D::DOCUMENT_TYPE)?;
            store.ensure_in::<D>(conn).await?;
            conn.read(store, async |c| load::load_many::<D>(c, tenant, ids).await)
                .await
        }
        .instrument(span)
        .await
    }

    async fn metadata(
        store: &DocumentStore,
        conn: &mut Conn,
        id: &D::Id,
    ) -> Result<Option<DocumentMetadata<VersionOf<D>>>> {
        let tenant = require_tenant(D::TENANCY, store.tenant(), D::DOCUMENT_TYPE)?;
        store.ensure_in::<D>(conn).await?;
        conn.read(store, async |c| load::metadata::<D>(c, tenant, id).await)
            .await
    }
}

impl<D: PgDocument + marten_core::query::HasFields> QueryBackend<D> for Postgres {
    type Query<'s, K: Tracking> = Query<'s, Session<K>, D>;
    type ReadQuery<'s> = Query<'s, QuerySession, D>;

    fn query<K: Tracking>(session: &mut Session<K>) -> Query<'_, Session<K>, D> {
        Query::new(session)
    }

    fn read_query(session: &mut QuerySession) -> Query<'_, QuerySession, D> {
        Query::new(session)
    }
}

/// Makes sure of the tables of the session's queued writes before the save takes its
/// connection, over a caller's pool (see [`Catalog::ensure_for`]); the unit of work
/// checks them again, with those of the operations the save derives (the only check with
/// the store's own pool).
async fn ensure_queued(store: &DocumentStore, conn: &mut Conn, queue: &UnitOfWork) -> Result<()> {
    let catalog: &Catalog = store.catalog();
    if !catalog.shares_callers_pool() {
        return Ok(());
    }
    // The inline projections' documents too, when the save appends: their planning
    // reads them on the session's connection. An event projection's: those it owns; the
    // others it writes are known once planned, and made on a second connection.
    let appends = queue.user.appends().next().is_some();
    let projected = (store.projections().inline.iter())
        .filter(|_| appends)
        .flat_map(|p| {
            p.document()
                .into_iter()
                .chain(p.owned_documents().iter().copied())
        });
    let missing: Vec<_> = (queue.user.operations())
        .map(|op| op.target().schema)
        .chain(projected)
        .filter(|(type_id, _)| !catalog.is_ensured(*type_id))
        .collect();
    for (type_id, migrate) in missing {
        catalog.ensure_for(conn, type_id, migrate).await?;
    }
    Ok(())
}

/// One attempt at a session's save: plan the inline projections on the session's
/// connection, add the tag lock of its boundaries, send the unit of work.
async fn attempt(parts: &mut Parts<Postgres>, attempts: &SaveAttempts) -> Result<AttemptEnd> {
    if let Err(e) = ensure_queued(&parts.store, &mut parts.conn, &parts.queue).await {
        // As when the save's statements fail: a transaction the session holds (its
        // exclusive locks) ends with the save.
        if parts.conn.in_transaction() {
            <Postgres as Backend>::end_transaction(parts).await;
        }
        return Ok(AttemptEnd::Failed(e));
    }
    if !parts.conn.in_transaction() {
        // Found before: reported without taking a connection for it.
        if let Some(cause) = parts.conn.take_lost_transaction() {
            return Ok(AttemptEnd::Failed(Error::TransactionLost { cause }));
        }
    }
    let mut req = parts.conn.request(&parts.store).await?;
    if let Some(cause) = req.take_lost_transaction() {
        // The save was to commit under the exclusive locks of a transaction that is
        // gone: sent now, it would run without them. A transaction begun since (a later
        // lock) ends with the save, as when a sent save fails.
        req.rollback_within(&parts.store).await;
        req.finish();
        return Ok(AttemptEnd::Failed(Error::TransactionLost { cause }));
    }
    parts.queue.reset_attempt();
    let planned = if crate::projections::has_inline(parts.store.as_ref()) {
        let tags = planning_tags(&parts.store, &parts.boundaries, &parts.queue);
        let planning = crate::projections::plan_inline(
            parts.store.as_ref(),
            &mut req,
            &mut parts.queue,
            &mut parts.state,
            attempts.use_cache(),
            &mut parts.scratch,
            tags,
        );
        let Some(planned) = within(&parts.store, planning).await else {
            // Nothing was written: the locked reads may still wait on the server.
            req.mark_lost();
            return Err(timed_out(&parts.store));
        };
        planned
    } else {
        Ok(Planned::Ready)
    };
    place_locks(&parts.store, &parts.boundaries, &mut parts.queue, &req);
    let end = match planned {
        Ok(Planned::Ready) => {
            send(
                req,
                &parts.store,
                &mut parts.queue,
                &mut parts.state,
                attempts,
            )
            .await
        }
        Ok(Planned::Again) => {
            req.rollback_within(&parts.store).await;
            req.finish();
            tracing::debug!("a cached aggregate was stale; planning again");
            AttemptEnd::PlanAgain
        }
        Err(e) => {
            req.rollback_within(&parts.store).await;
            req.settle_error(&e);
            if attempts.retries(&e) {
                tracing::debug!(error = %e, "the save's locked read lost a deadlock; planning again");
            }
            AttemptEnd::Failed(e)
        }
    };
    Ok(end)
}

/// Sends the planned unit of work of an attempt and says how the attempt ended.
async fn send(
    mut req: Request<'_>,
    store: &DocumentStore,
    queue: &mut UnitOfWork,
    state: &mut SessionState,
    attempts: &SaveAttempts,
) -> AttemptEnd {
    let span = append_span(store, queue);
    let outcome = {
        // Pinned in place: the span's wrapper takes the pin, not a moved copy.
        let sending = std::pin::pin!(queue.execute(&mut req, store.as_ref(), state));
        match span {
            Some(span) => sending.instrument(span).await,
            None => sending.await,
        }
    };
    req.settle(&outcome);
    match outcome {
        Ok(Outcome::Committed) => AttemptEnd::Committed,
        Ok(Outcome::Retry) => {
            tracing::debug!("a check marten added met a concurrent save; planning again");
            AttemptEnd::Retry
        }
        // The save's own transaction was rolled back whole: nothing was written.
        Err(e) => {
            if attempts.retries(&e) {
                tracing::debug!(error = %e, "the save lost a deadlock; sending it again");
            }
            AttemptEnd::Failed(e)
        }
    }
}

/// Queues the locks a save takes before its other statements, in the order every save
/// takes them: its tags, then the rows of its streams in id order. The tags are those of
/// the events of the streams it archives or deletes and those of its tag lock (of its
/// boundaries and tagged appends), all locked in one order by one statement
/// ([`TagsFirst`]) when it has both, then the tag lock's asserted and bumped (in the
/// statement of the save's one append when it can carry them, else as a statement of its
/// own). Saves that touch the same streams (and tags) in different orders then wait for
/// each other instead of deadlocking. A save that writes another stream row besides a
/// single tagged append's (a lock, another append or start, a command) locks that
/// append's tags first (its append would otherwise bump them after the row an earlier
/// statement took). A save whose planning read rows under lock took its tags before them
/// ([`planning_tags`]).
fn place_locks(
    store: &DocumentStore,
    boundaries: &[(marten_core::EventTag, i64)],
    queue: &mut UnitOfWork,
    req: &Request<'_>,
) {
    let (command_tags, streams, others) = {
        let appends = || {
            (queue.user.appends())
                .chain(queue.derived.appends())
                .map(|(_, a)| a)
        };
        let commands = || queue.user.commands().chain(queue.derived.commands());
        // Another append or command writes a stream row, possibly before the tagged
        // append's statement (a start is in no stream lock, yet takes its new row).
        let others = appends().nth(1).is_some() || commands().next().is_some();
        (
            TagsFirst::for_commands(commands()),
            StreamLock::for_save(appends(), commands()),
            others,
        )
    };
    let other_rows = command_tags.is_some() || streams.is_some() || others;
    let tags = crate::events::tags::TagLock::for_save(
        store.stream_identity(),
        boundaries,
        queue.user.appends().map(|(_, a)| a),
        other_rows,
    );
    // With both, the two sets of tags in one order: each statement alone takes its own
    // in order, the two one after the other in none.
    let first = match (&tags, command_tags) {
        (Some(lock), Some(commands)) => Some(lock.tags_first(Some(commands))),
        (_, commands) => commands,
    };
    if let Some(lock) = first {
        queue.prelude.push_op(Box::new(lock));
    }
    if let Some(lock) = tags {
        match lone_append(queue, req) {
            // One statement, no transaction.
            Some(append) => append.take_check(lock.into_check()),
            None => queue.prelude.push_op(Box::new(lock)),
        }
    }
    if let Some(lock) = streams {
        queue.prelude.push_op(Box::new(lock));
    }
}

/// The lock of the save's tags its planning sends before it reads streams under lock
/// (`None`: the save has no tags to lock): the tags of its tag lock (of its boundaries,
/// and of its tagged appends, even a single one, whose own statement would bump them
/// after the row planning read) and of the streams it archives or deletes, in one order.
/// A planned read of a stream row before them would hold that row while waiting for a
/// tag another save holds while waiting for the row.
fn planning_tags(
    store: &DocumentStore,
    boundaries: &[(marten_core::EventTag, i64)],
    queue: &UnitOfWork,
) -> Option<TagsFirst> {
    let commands = TagsFirst::for_commands(queue.user.commands());
    let appends = queue.user.appends().map(|(_, a)| a);
    match crate::events::tags::TagLock::for_save(store.stream_identity(), boundaries, appends, true)
    {
        Some(lock) => Some(lock.tags_first(commands)),
        None => commands,
    }
}

/// The save's one operation, when it is a tagged append that can carry the save's tag
/// lock in its own statement: nothing else is queued or derived, and the save is not
/// part of a transaction the session holds (nor reads its write position after one).
fn lone_append<'q>(queue: &'q mut UnitOfWork, req: &Request<'_>) -> Option<&'q mut StreamAppend> {
    match queue.lone_entry(req)? {
        Queued::Append(append) if append.can_take_check() => Some(append),
        _ => None,
    }
}

/// The `append` span of an attempt that appends events (`None` for one that does not):
/// the streams and events of the session's appends.
fn append_span(store: &DocumentStore, queue: &UnitOfWork) -> Option<tracing::Span> {
    queue.user.appends().next()?;
    let (streams, events) = queue
        .user
        .appends()
        .fold((0, 0), |(s, e), (_, a)| (s + 1, e + a.data.len()));
    Some(crate::trace::append(store.schema(), streams, events))
}
