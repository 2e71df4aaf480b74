//! An async aggregate's slices in their streams' version order, each event folded once
//! (why and how: [`marten_core::projection::stream_order`]). A slice whose batch events
//! run on from the version its document has folded up to is sorted; a slice whose events
//! leave a hole has its stream's events of the whole range read by version (the ranges
//! of every such stream of a batch in one statement; a batch without holes reads nothing
//! more).
//!
//! May use: the events layer's reads, the async projections' slices.

use std::collections::HashMap;

use marten_core::projection::stream_order::{order, Order};
use marten_core::{Aggregate, EventEnvelope, Result, StreamId};

use super::asynchronous::{Batch, Slice};
use crate::documents::PgDocument;
use crate::events::read::{fetch_ranges, VersionRanges};
use crate::events::{EventCatalog, EventTenant};
use crate::stream_key::StreamKey;

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
    // When every event of the batch is in a slice (the aggregate handles them all and
    // none was left out), a slice's own versions are all its stream's the batch saw.
    let in_slices: usize = slices.iter().map(|s| s.2.len()).sum();
    let seen = (in_slices != batch.events.len() || !batch.left_out.is_empty())
        .then(|| seen_versions(batch));
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
    if ranges.is_empty() {
        return Ok(());
    }
    let events_store: &EventCatalog = batch.store.as_ref();
    let tenant = EventTenant::of_session(events_store.events_tenancy(), batch.tenant)?;
    let read = fetch_ranges(events_store, batch.client, &tenant, &ranges).await?;
    let left_out = |e: &EventEnvelope| {
        batch
            .left_out
            .iter()
            .any(|(s, v)| *s == e.stream_id && *v == e.version)
    };
    // By stream and version: each slice gets its stream's events in version order.
    for e in read {
        if let Some(i) = holes.get(&e.stream_id) {
            if A::handles(e.data.as_ref()) && !left_out(&e) {
                slices[*i].2.push(e);
            }
        }
    }
    Ok(())
}

/// Every version of each stream the batch saw: its events of every type, and those left
/// out of it.
fn seen_versions(batch: Batch<'_>) -> HashMap<StreamId, Vec<i64>> {
    let mut seen: HashMap<StreamId, Vec<i64>> = HashMap::new();
    let events = batch.events.iter().map(|e| (&e.stream_id, e.version));
    let left_out = batch.left_out.iter().map(|(s, v)| (s, *v));
    for (stream, version) in events.chain(left_out) {
        seen.entry(stream.clone()).or_default().push(version);
    }
    seen
}
