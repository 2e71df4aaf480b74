//! Slicing a batch of events for an async projection: the events a document type handles
//! are grouped into slices by document id ([`group`], or [`try_group`] when finding an
//! event's ids can fail), the slices are dealt round-robin
//! to the workers that fold them ([`deal`]), and each folded state becomes a write, a
//! deletion or nothing ([`decide`]).
//!
//! Pure: a backend loads the current documents, runs the hands on its tasks and issues
//! the writes; the order of slices and of events within a slice is decided here.

use std::collections::HashMap;
use std::hash::Hash;

/// One document's share of a batch: its id and the events that feed it, in batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice<I, E> {
    /// The document's id.
    pub id: I,
    /// The events of the batch that feed the document, in batch order.
    pub events: Vec<E>,
}

/// Groups `events` into slices by document id: an event `handles` rejects is left out;
/// any other goes, cloned, to the slice of every id `key` returns for it (none, one or
/// several; an id returned twice for one event still gets the event once). The slices
/// come in the order their ids were first seen, each slice's events in the order of
/// `events`.
pub fn group<'a, I, E>(
    events: impl IntoIterator<Item = &'a E>,
    handles: impl Fn(&E) -> bool,
    key: impl Fn(&E) -> Vec<I>,
) -> Vec<Slice<I, E>>
where
    I: Hash + Eq + Clone,
    E: Clone + 'a,
{
    match try_group(events, handles, |e| {
        Ok::<_, std::convert::Infallible>(key(e))
    }) {
        Ok(slices) => slices,
        Err(never) => match never {},
    }
}

/// [`group`] with a `key` that can fail (a projection's identity method that panicked,
/// caught): the first event it fails for ends the grouping with its error.
pub fn try_group<'a, I, E, X>(
    events: impl IntoIterator<Item = &'a E>,
    handles: impl Fn(&E) -> bool,
    key: impl Fn(&E) -> Result<Vec<I>, X>,
) -> Result<Vec<Slice<I, E>>, X>
where
    I: Hash + Eq + Clone,
    E: Clone + 'a,
{
    let mut slices: Vec<Slice<I, E>> = Vec::new();
    let mut index: HashMap<I, usize> = HashMap::new();
    for event in events {
        if !handles(event) {
            continue;
        }
        let ids = key(event)?;
        for (k, id) in ids.iter().enumerate() {
            if ids[..k].contains(id) {
                continue;
            }
            let at = *index.entry(id.clone()).or_insert_with(|| {
                slices.push(Slice {
                    id: id.clone(),
                    events: Vec::new(),
                });
                slices.len() - 1
            });
            slices[at].events.push(event.clone());
        }
    }
    Ok(slices)
}

/// Deals `items` round-robin to `hands` hands (at least one): item `i` goes to hand
/// `i % hands`, each hand keeping its items in order. Empty hands are left out, so there
/// are `min(hands, items)` hands (none for no items).
pub fn deal<T>(items: impl IntoIterator<Item = T>, hands: usize) -> Vec<Vec<T>> {
    let n = hands.max(1);
    let mut dealt: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        dealt[i % n].push(item);
    }
    dealt.retain(|hand| !hand.is_empty());
    dealt
}

/// What a folded slice asks of the document store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceWrite<D> {
    /// Write (upsert) the folded document.
    Upsert(D),
    /// Delete the document: it existed and folded to none.
    Delete,
    /// Nothing: the document did not exist and still does not.
    Nothing,
}

/// The write a folded slice needs: `existed` is whether the document was stored before
/// the fold, `state` what the fold left.
pub fn decide<D>(existed: bool, state: Option<D>) -> SliceWrite<D> {
    match state {
        Some(doc) => SliceWrite::Upsert(doc),
        None if existed => SliceWrite::Delete,
        None => SliceWrite::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test event: its name, whether the type handles it, and the ids it feeds.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Ev {
        name: &'static str,
        handled: bool,
        ids: Vec<u32>,
    }

    fn ev(name: &'static str, ids: &[u32]) -> Ev {
        Ev {
            name,
            handled: true,
            ids: ids.to_vec(),
        }
    }

    fn unhandled(name: &'static str, ids: &[u32]) -> Ev {
        Ev {
            handled: false,
            ..ev(name, ids)
        }
    }

    fn slices(events: &[Ev]) -> Vec<(u32, Vec<&'static str>)> {
        group(events, |e| e.handled, |e| e.ids.clone())
            .into_iter()
            .map(|s| (s.id, s.events.iter().map(|e| e.name).collect()))
            .collect()
    }

    #[test]
    fn slices_come_in_first_seen_order_with_events_in_batch_order() {
        let events = [
            ev("a1", &[3]),
            ev("b1", &[1]),
            ev("a2", &[3]),
            ev("c1", &[2]),
            ev("b2", &[1]),
            ev("a3", &[3]),
        ];
        assert_eq!(
            slices(&events),
            vec![
                (3, vec!["a1", "a2", "a3"]),
                (1, vec!["b1", "b2"]),
                (2, vec!["c1"]),
            ]
        );
    }

    #[test]
    fn an_id_named_twice_by_one_event_gets_it_once() {
        let events = [ev("x", &[1, 2, 1]), ev("y", &[2, 2])];
        assert_eq!(slices(&events), vec![(1, vec!["x"]), (2, vec!["x", "y"])]);
    }

    #[test]
    fn an_event_with_several_ids_goes_to_each_slice() {
        let events = [ev("x", &[1]), ev("both", &[2, 1]), ev("y", &[2])];
        assert_eq!(
            slices(&events),
            vec![(1, vec!["x", "both"]), (2, vec!["both", "y"])]
        );
    }

    #[test]
    fn an_event_with_no_id_goes_nowhere() {
        let events = [ev("none", &[]), ev("one", &[7])];
        assert_eq!(slices(&events), vec![(7, vec!["one"])]);
    }

    #[test]
    fn events_the_type_does_not_handle_are_left_out() {
        let events = [
            unhandled("skip", &[5]),
            ev("keep", &[1]),
            unhandled("skip2", &[1]),
        ];
        assert_eq!(slices(&events), vec![(1, vec!["keep"])]);
        assert!(slices(&[unhandled("only", &[1])]).is_empty());
    }

    #[test]
    fn a_failing_key_ends_the_grouping_with_its_error() {
        let events = [ev("a", &[1]), ev("bad", &[2]), ev("c", &[3])];
        let grouped = try_group(
            &events,
            |e| e.handled,
            |e| match e.name {
                "bad" => Err(e.name),
                _ => Ok(e.ids.clone()),
            },
        );
        assert_eq!(grouped, Err("bad"));
    }

    #[test]
    fn no_events_no_slices() {
        assert!(slices(&[]).is_empty());
    }

    #[test]
    fn dealing_is_round_robin() {
        assert_eq!(deal(0..7, 3), vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
    }

    #[test]
    fn one_hand_takes_everything_in_order() {
        assert_eq!(deal(0..4, 1), vec![vec![0, 1, 2, 3]]);
    }

    #[test]
    fn zero_hands_count_as_one() {
        assert_eq!(deal(0..3, 0), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn more_hands_than_items_leave_no_empty_hand() {
        assert_eq!(deal(0..2, 5), vec![vec![0], vec![1]]);
        assert!(deal(std::iter::empty::<u8>(), 4).is_empty());
    }

    #[test]
    fn a_folded_document_is_upserted() {
        assert_eq!(decide(false, Some(1)), SliceWrite::Upsert(1));
        assert_eq!(decide(true, Some(2)), SliceWrite::Upsert(2));
    }

    #[test]
    fn a_document_that_existed_and_folds_to_none_is_deleted() {
        assert_eq!(decide::<u8>(true, None), SliceWrite::Delete);
    }

    #[test]
    fn a_document_that_never_existed_and_folds_to_none_needs_nothing() {
        assert_eq!(decide::<u8>(false, None), SliceWrite::Nothing);
    }
}
