//! Multi-stream projections: events from many streams grouped to documents by ids the
//! projection declares per event type (`identity*` methods). One event may feed several
//! documents. Documents of a multi-stream projection are shared between streams, so
//! their writes assert the version read (the document type has a versioned concurrency
//! mode): a racing save makes this one plan again.

use std::collections::HashMap;

use super::{apply_error, name_version, AppendView, DocumentReads, Plan};
use crate::aggregate::{fold, identities_of};
use crate::concurrency::{BasicWrite, VersionedMode};
use crate::projection::slice::try_group;
use crate::{Error, EventEnvelope, Identities, Result};

/// A save's events per document id of `P`.
type Groups<P> = Vec<(<P as crate::Document>::Id, Vec<EventEnvelope>)>;

/// An event an identity method panicked on, with the panic's message.
type FailedIdentity = Box<(EventEnvelope, String)>;

/// Plans multi-stream document type `P` for the save's appends: every document an event
/// names is read under lock, folded and written (or deleted) through `reads`. An identity
/// or apply method that fails or panics on an event fails the save with
/// [`Error::Apply`] naming the event, at the stream version it would have been appended at.
pub async fn plan_multi_stream<P, Q, R>(plan: &mut Plan<'_, Q>, reads: &mut R) -> Result<()>
where
    P: Identities,
    P::Mode: VersionedMode,
    R: DocumentReads<P>,
{
    let groups = match grouped::<P, Q>(plan)? {
        Ok(groups) => groups,
        Err(failure) => {
            let (event, message) = *failure;
            return Err(failed::<P, R>(plan.appends, reads, &event, message).await);
        }
    };
    if groups.is_empty() {
        return Ok(());
    }
    let ids: Vec<P::Id> = groups.iter().map(|(id, _)| id.clone()).collect();
    let mut loaded: HashMap<P::Id, _> = reads
        .lock_documents(&ids)
        .await?
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect();
    for (id, events) in groups {
        let (start, version) = match loaded.remove(&id) {
            Some(l) => (Some(l.doc), l.version),
            None => (None, None),
        };
        let existed = start.is_some();
        let state = match fold(start, &events, |_, _| {}) {
            Ok(state) => state,
            Err((err, i)) => {
                return Err(failed::<P, R>(plan.appends, reads, &events[i], err.message).await)
            }
        };
        match state {
            Some(mut doc) => {
                *doc.id_mut() = id.clone();
                let json = R::serialize(&doc)?;
                if existed {
                    reads.write(BasicWrite::Upsert.into(), id, json, version);
                } else {
                    reads.write(BasicWrite::Insert.into(), id, json, None);
                }
            }
            None if existed => reads.delete(id),
            None => {}
        }
    }
    Ok(())
}

/// The events per document id, in append order (grouped as an async batch is:
/// [`try_group`], each event once per document); or the event an identity method
/// panicked on, with the panic's message.
fn grouped<P: Identities, Q>(
    plan: &Plan<'_, Q>,
) -> Result<std::result::Result<Groups<P>, FailedIdentity>> {
    let mut events = Vec::new();
    for append in plan.appends {
        events.extend(append.asserted_envelopes()?);
    }
    let slices = try_group(
        &events,
        |e| P::handles(e.data.as_ref()),
        |e| identities_of::<P>(e).map_err(|err| Box::new((e.clone(), err.message))),
    );
    Ok(slices.map(|slices| slices.into_iter().map(|s| (s.id, s.events)).collect()))
}

/// The [`Error::Apply`] of `P` failing on `event` of the save's `appends` with `message`,
/// at the version the event would have been appended at when its envelope does not know
/// it ([`name_version`], reading its stream's version through `reads`).
async fn failed<P: Identities, R: DocumentReads<P>>(
    appends: &[AppendView],
    reads: &mut R,
    event: &EventEnvelope,
    message: String,
) -> Error {
    let error = apply_error(P::DOCUMENT_TYPE, event, message);
    name_version(
        error,
        appends,
        event,
        reads.stream_version(&event.stream_id),
    )
    .await
}
