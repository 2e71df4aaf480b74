//! An async aggregate's slices in their streams' version order, each event folded once
//! (why and how: [`marten_core::projection::stream_order`]). A slice whose batch events
//! run on from the version its document has folded up to is sorted; a slice whose events
//! leave a hole has its stream's events of the whole range read by version (the ranges
//! of every such stream of a batch in one statement; a batch without holes reads nothing
//! more).
//!
//! A hole's read leaves out the events dead-lettered for the projection (of the slot's
//! tenant) by an earlier batch, as a batch leaves out its own: the poison event a
//! stream's later events bring back (the document stopped before it, or a poison first
//! event left no document) is neither applied nor dead-lettered again, and the document
//! skips its version. An event left out of the batch that the batch did not see (the
//! daemon plans a run of a page's first events: the page's events after the run are not
//! its own) is passed over the same way when a hole's read meets it, but its version
//! does not count as seen: a run's document is never taken past its own events on
//! account of a later one. The dead letters of the holes' streams are read in the same
//! round trip as their events (pipelined), and only when the daemon's runner names the
//! projection it plans for ([`planning`]).
//!
//! A hole's event of a type the aggregate handles that cannot be decoded (its stored
//! JSON does not deserialize, or its upcaster refuses it) is never dropped: the plan
//! fails with [`Error::Apply`] naming it (stored type, stream, version; the message
//! names its sequence), and the daemon's runner meets its poison policy for it as for an
//! event it cannot apply. Under `PoisonPolicy::Stop` the projection stops, so the
//! stream's later versions are never folded without it; under `PoisonPolicy::DeadLetter`
//! the batch dead-letters it, leaves it out of its next plan and folds the rest. The page
//! that reads the event later does not record it again (a slot's dead letter of an event
//! is recorded once, see `crate::tables::progression::DEAD_LETTER`). An event of an
//! unregistered type is passed over, as the daemon's pages pass over it.
//!
//! May use: the events layer's reads, the async projections' slices, the daemon's
//! dead-letter table (read only).

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::future::Future;

use futures_util::future::try_join;
use marten_core::projection::stream_order::{order, Order};
use marten_core::tenant::DEFAULT_TENANT;
use marten_core::{Aggregate, Error, Result, StreamId, TenantId, WithSources};

use super::asynchronous::{Batch, Slice};
use crate::connection::Db;
use crate::documents::PgDocument;
use crate::error_map::{map_db_error, Failed};
use crate::events::range::Unreadable;
use crate::events::read::{fetch_ranges, RangeEvents, VersionRanges};
use crate::events::{EventCatalog, EventTenant};
use crate::stream_key::StreamKey;

/// The sequences of the events dead-lettered for projection `$1` of the slot whose tenant
/// column is `$2`, of the streams `$3` (as the dead letters record them).
const DEAD_LETTERED: &str = "SELECT seq_id FROM mt_dead_letters \
     WHERE projection = $1 AND tenant_id = $2 AND stream_id = ANY($3::text[])";

tokio::task_local! {
    /// The name of the projection whose batch is being planned, as its dead letters
    /// record it (a versioned projection's `Name:v2`): set by the daemon's runner.
    static PLANNING: &'static str;
}

/// Runs `plan`, the planning of a batch of `projection` (its name as its dead letters
/// record it), so that an aggregate's read of the holes in its streams leaves out the
/// events dead-lettered for it. The daemon's runner plans every batch within it; a plan
/// outside it reads no dead letters.
pub(crate) async fn planning<F: Future>(projection: &'static str, plan: F) -> F::Output {
    PLANNING.scope(projection, plan).await
}

/// Puts each slice's events in its stream's version order, leaving out those its
/// document has folded, reading the streams' ranges where the batch leaves holes (all of
/// them in one statement), and sets the version each document records after the fold.
pub(crate) async fn in_stream_order<A: Aggregate + PgDocument>(
    batch: Batch<'_>,
    slices: &mut [Slice<A>],
) -> Result<()> {
    if slices.is_empty() {
        return Ok(());
    }
    let (holes, ranges) = order_slices(&batch, slices);
    if ranges.is_empty() {
        return Ok(());
    }
    fill_holes(batch, slices, &holes, &ranges).await
}

/// Orders each slice's events (see [`in_stream_order`]): the slices with a hole, by their
/// stream, and the ranges to read for them.
fn order_slices<A: Aggregate + PgDocument>(
    batch: &Batch<'_>,
    slices: &mut [Slice<A>],
) -> (HashMap<StreamId, usize>, VersionRanges) {
    // When every event of the batch is in a slice (the aggregate handles them all and
    // none was left out), a slice's own versions are all its stream's the batch saw.
    let in_slices: usize = slices.iter().map(|s| s.2.len()).sum();
    let seen = (in_slices != batch.events.len() || !batch.left_out.is_empty())
        .then(|| seen_versions(*batch));
    let mut own = Vec::new();
    // The slices with a hole, by their stream, and the ranges to read for them.
    let mut holes: HashMap<StreamId, usize> = HashMap::new();
    let mut ranges = VersionRanges::default();
    for (i, (_, start, events, through)) in slices.iter_mut().enumerate() {
        let Some(stream) = events.first().map(|e| e.stream_id.clone()) else {
            continue;
        };
        let folded = start.as_ref().map_or(0, A::version);
        let versions = match &seen {
            Some(seen) => seen.get(&stream).map_or(&[][..], Vec::as_slice),
            None => {
                own.clear();
                own.extend(events.iter().map(|e| e.version));
                own.as_slice()
            }
        };
        let (ordered, last) = order(folded, std::mem::take(events), versions, |e| e.version);
        *through = last;
        match ordered {
            Order::Fold(ordered) => *events = ordered,
            Order::Read { after, through } => {
                tracing::debug!(%stream, after, through, "a batch skipped versions of a stream");
                ranges.push(StreamKey(stream.clone()), (after, through));
                holes.insert(stream, i);
            }
        }
    }
    (holes, ranges)
}

/// Reads the `ranges` of the slices with `holes` (in one statement) and gives each its
/// stream's events, leaving out those dead-lettered or left out of the batch; an
/// undecodable event the aggregate handles in a hole fails the plan (see
/// [`unreadable_in_hole`]).
async fn fill_holes<A: Aggregate + PgDocument>(
    batch: Batch<'_>,
    slices: &mut [Slice<A>],
    holes: &HashMap<StreamId, usize>,
    ranges: &VersionRanges,
) -> Result<()> {
    let events_store: &EventCatalog = batch.store.as_ref();
    let tenant = EventTenant::of_session(events_store.events_tenancy(), batch.tenant)?;
    let fetch = fetch_ranges(events_store, batch.client, &tenant, ranges);
    let (read, dead) = match PLANNING.try_with(|p| *p) {
        Ok(projection) => {
            let streams: Vec<String> = holes.keys().map(ToString::to_string).collect();
            let slot_tenant = batch.tenant.map_or(DEFAULT_TENANT, TenantId::as_str);
            let letters = dead_lettered(batch.client, projection, slot_tenant, &streams);
            try_join(fetch, letters).await?
        }
        Err(_) => (fetch.await?, HashSet::new()),
    };
    // An event dead-lettered by an earlier batch, or left out of this one while it is
    // planned (seen by it or not), is neither applied nor met again.
    let passed = |stream: &StreamId, version: i64, sequence: i64| {
        dead.contains(&sequence)
            || (batch.left_out.iter())
                .chain(batch.passed_over)
                .any(|(s, v)| s == stream && *v == version)
    };
    let RangeEvents { events, unreadable } = read;
    let poison = unreadable.into_iter().find(|(version, u)| {
        holes.contains_key(&u.stream)
            && handles_stored::<A>(u.read_as)
            && !passed(&u.stream, *version, u.sequence)
    });
    if let Some((version, event)) = poison {
        return Err(unreadable_in_hole::<A>(version, event));
    }
    // By stream and version: each slice gets its stream's events in version order.
    for e in events {
        if let Some(i) = holes.get(&e.stream_id) {
            if A::handles(e.data.as_ref()) && !passed(&e.stream_id, e.version, e.sequence) {
                slices[*i].2.push(e);
            }
        }
    }
    Ok(())
}

/// Whether aggregate `A` handles events stored under a type that reads as `read_as` (the
/// Rust type and its current name; `None`: not known, taken as handled), as the daemon's
/// runner asks of an event its page cannot decode.
fn handles_stored<A: Aggregate>(read_as: Option<(TypeId, &'static str)>) -> bool {
    read_as.is_none_or(|(type_id, _)| {
        let types = A::event_types();
        types.is_empty() || types.iter().any(|d| d.type_id == type_id)
    })
}

/// The failure of planning a batch of `A` whose read of a hole met `event`, at `version`
/// of its stream, which cannot be decoded: [`Error::Apply`] naming the event (its stored
/// type, stream and version; the message is the decoding error, which names its
/// sequence), so the daemon's runner meets its poison policy for it as for an event it
/// cannot apply. Dead-lettered, the event is left out of the batch's next plan (the
/// batch's left-out events) and of later batches' reads (its dead letter); under
/// [`PoisonPolicy::Stop`](marten_core::projection::poison::PoisonPolicy::Stop) the
/// projection stops before the stream's later versions are folded without it.
fn unreadable_in_hole<A: Aggregate + PgDocument>(version: i64, event: Unreadable) -> Error {
    let message = WithSources(&event.error).to_string();
    tracing::warn!(
        projection = A::DOCUMENT_TYPE,
        stream = %event.stream,
        version,
        sequence = event.sequence,
        error = %message,
        "an event read to fill a hole in a stream cannot be decoded"
    );
    Error::Apply {
        projection: A::DOCUMENT_TYPE,
        event_type: event.stored_type,
        stream: event.stream,
        version,
        message,
    }
}

/// The sequences of the events of `streams` dead-lettered for `projection` (of the slot
/// whose tenant column is `tenant`).
async fn dead_lettered(
    client: Db<'_>,
    projection: &str,
    tenant: &str,
    streams: &[String],
) -> Result<HashSet<i64>> {
    let reading = |e| map_db_error(e, Failed::Other("reading a projection's dead letters"));
    let rows = client
        .query(DEAD_LETTERED, &[&projection, &tenant, &streams])
        .await
        .map_err(reading)?;
    rows.iter()
        .map(|row| row.try_get::<_, i64>(0).map_err(reading))
        .collect()
}

/// Every version of each stream the batch saw: its events of every type, and those left
/// out of it that it saw (not those it only passes over: a later part of the page's,
/// whose versions taken as seen would make the batch read and fold the events of that
/// later part up to them).
fn seen_versions(batch: Batch<'_>) -> HashMap<StreamId, Vec<i64>> {
    let mut seen: HashMap<StreamId, Vec<i64>> = HashMap::new();
    let events = batch.events.iter().map(|e| (&e.stream_id, e.version));
    let left_out = batch.left_out.iter().map(|(s, v)| (s, *v));
    for (stream, version) in events.chain(left_out) {
        seen.entry(stream.clone()).or_default().push(version);
    }
    seen
}
