//! Multi-stream projections: events from many streams grouped to documents by ids the
//! projection declares per event type (`identity*` methods). One event may feed several
//! documents. Documents of a multi-stream projection are shared between streams, so
//! their writes assert the version read (the document type has a versioned concurrency
//! mode): a racing save makes this one plan again.

use std::collections::HashMap;

use super::{apply_error, DocumentReads, Plan};
use crate::aggregate::fold;
use crate::concurrency::{BasicWrite, VersionedMode};
use crate::projection::slice::group;
use crate::{EventEnvelope, Identities, Result};

/// Plans multi-stream document type `P` for the save's appends: every document an event
/// names is read under lock, folded and written (or deleted) through `reads`.
pub async fn plan_multi_stream<P, Q, R>(plan: &mut Plan<'_, Q>, reads: &mut R) -> Result<()>
where
    P: Identities,
    P::Mode: VersionedMode,
    R: DocumentReads<P>,
{
    let groups = grouped::<P, Q>(plan)?;
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
        let state = fold(start, &events, |_, _| {})
            .map_err(|(err, i)| apply_error(P::DOCUMENT_TYPE, &events[i], err.message))?;
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
/// [`group`], each event once per document).
fn grouped<P: Identities, Q>(plan: &Plan<'_, Q>) -> Result<Vec<(P::Id, Vec<EventEnvelope>)>> {
    let mut events = Vec::new();
    for append in plan.appends {
        events.extend(append.asserted_envelopes()?);
    }
    let slices = group(&events, |e| P::handles(e.data.as_ref()), P::identities);
    Ok(slices.into_iter().map(|s| (s.id, s.events)).collect())
}
