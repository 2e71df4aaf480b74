//! The inline planners without a database: scripted reads record what is locked, checked
//! and written.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use serde::{Deserialize, Serialize};

use super::*;
use crate::concurrency::{BasicWrite, Numeric};
use crate::projection::cache::{AggregateCache, Cached};
use crate::session::{DirtyQueue, Loaded, SessionState};
use crate::{Aggregate, AnyEvent, Apply, ApplyError, Document, Event, Identities};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Added {
    n: i64,
    /// The tally documents this event feeds (multi-stream).
    tallies: Vec<String>,
}

impl Event for Added {
    const EVENT_TYPE: &'static str = "added";
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Total {
    id: String,
    version: i64,
    sum: i64,
}

impl Document for Total {
    type Id = String;
    type Mode = Numeric;
    const DOCUMENT_TYPE: &'static str = "Total";
    const TABLE_NAME: &'static str = "mt_doc_total";
    fn id(&self) -> &String {
        &self.id
    }
    fn id_mut(&mut self) -> &mut String {
        &mut self.id
    }
}

impl Apply for Total {
    fn apply_event(state: Option<Self>, event: &EventEnvelope) -> Result<Option<Self>, ApplyError> {
        let Some(added) = event.data.as_any().downcast_ref::<Added>() else {
            return Ok(state);
        };
        if added.n < 0 {
            return Err(ApplyError::new("negative"));
        }
        let mut total = state.unwrap_or(Total {
            id: String::new(),
            version: 0,
            sum: 0,
        });
        total.sum += added.n;
        Ok(Some(total))
    }
    fn handles(event: &dyn AnyEvent) -> bool {
        event.as_any().is::<Added>()
    }
}

impl Aggregate for Total {
    fn version(&self) -> i64 {
        self.version
    }
    fn set_version(&mut self, version: i64) {
        self.version = version;
    }
}

impl Identities for Total {
    /// The event's tallies; a tally named "panic" makes it panic.
    fn identities(event: &EventEnvelope) -> Vec<String> {
        let tallies = event
            .data
            .as_any()
            .downcast_ref::<Added>()
            .map(|a| a.tallies.clone())
            .unwrap_or_default();
        if tallies.iter().any(|t| t == "panic") {
            panic!("no tally for this event");
        }
        tallies
    }
}

#[derive(Default)]
struct NoQueue;

impl DirtyQueue<Total> for NoQueue {
    fn queue_dirty(&mut self, _: String, _: Vec<u8>, _: Option<i64>) -> Result<()> {
        Ok(())
    }
}

/// What the planner asked of the backend.
#[derive(Default)]
struct Reads {
    /// Stored streams: version, document, archived.
    streams: HashMap<String, (i64, Option<Total>, bool)>,
    locked: Vec<Vec<String>>,
    checked: Vec<(String, Option<Arc<[u8]>>)>,
    written: Vec<(BasicWrite, String, i64, Option<i64>)>,
    deleted: Vec<String>,
}

impl PlanOutput<Total> for Reads {
    fn serialize(doc: &Total) -> Result<Vec<u8>> {
        serde_json::to_vec(doc).map_err(|source| crate::Error::Serialize {
            document_type: "Total",
            id: doc.id.clone(),
            source,
        })
    }
    fn write(&mut self, kind: NumericWrite, id: String, json: Vec<u8>, expected: Option<i64>) {
        let sum = serde_json::from_slice::<Total>(&json).map_or(-1, |t| t.sum);
        let NumericWrite::Basic(kind) = kind else {
            panic!("planners write basic writes only");
        };
        self.written.push((kind, id, sum, expected));
    }
    fn delete(&mut self, id: String) {
        self.deleted.push(id);
    }
}

use crate::concurrency::NumericWrite;

impl AggregateReads<Total> for Reads {
    async fn lock_streams(
        &mut self,
        ids: &[String],
    ) -> Result<HashMap<String, LockedStream<Total>>> {
        self.locked.push(ids.to_vec());
        Ok(ids
            .iter()
            .filter_map(|id| {
                let (version, state, archived) = self.streams.get(id)?.clone();
                Some((
                    id.clone(),
                    LockedStream {
                        version,
                        state,
                        archived,
                    },
                ))
            })
            .collect())
    }
    fn check_cached(&mut self, cached: Vec<(String, Option<Arc<[u8]>>)>) {
        self.checked.extend(cached);
    }
}

impl DocumentReads<Total> for Reads {
    async fn lock_documents(&mut self, ids: &[String]) -> Result<Vec<Loaded<Total>>> {
        self.locked.push(ids.to_vec());
        Ok(ids
            .iter()
            .filter_map(|id| {
                let (version, doc, _) = self.streams.get(id)?.clone();
                let doc = doc?;
                let json = serde_json::to_vec(&doc).ok()?;
                Some(Loaded {
                    id: id.clone(),
                    doc,
                    version: Some(version),
                    json,
                })
            })
            .collect())
    }
    async fn stream_version(&mut self, stream: &StreamId) -> Result<Option<i64>> {
        let StreamId::String(id) = stream else {
            return Ok(None);
        };
        Ok(self.streams.get(id).map(|s| s.0))
    }
}

fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the scripted reads never wait"),
    }
}

fn append(
    index: usize,
    stream: &str,
    kind: AppendKind,
    ns: &[i64],
    tallies: &[&str],
) -> AppendView {
    let events: Vec<Arc<dyn AnyEvent>> = ns
        .iter()
        .map(|n| {
            let e = Added {
                n: *n,
                tallies: tallies.iter().map(|t| t.to_string()).collect(),
            };
            Arc::new(e) as Arc<dyn AnyEvent>
        })
        .collect();
    AppendView {
        index,
        stream: StreamId::String(stream.into()),
        kind,
        ids: ns.iter().map(|_| uuid::Uuid::now_v7()).collect(),
        types: ns.iter().map(|_| "added").collect(),
        events,
        metadata: Default::default(),
        reserved: None,
    }
}

fn total(id: &str, version: i64, sum: i64) -> Total {
    Total {
        id: id.into(),
        version,
        sum,
    }
}

/// Runs `f` on a plan of `appends`.
fn with_plan<T>(
    appends: &[AppendView],
    cache: &AggregateCache,
    f: impl FnOnce(&mut Plan<'_, NoQueue>) -> T,
) -> T {
    let mut state = SessionState::<NoQueue>::default();
    let mut plan = Plan {
        appends,
        state: &mut state,
        requirements: Vec::new(),
        use_cache: true,
        tenant: None,
        cache,
        cache_hits: Vec::new(),
        cache_updates: Vec::new(),
    };
    f(&mut plan)
}

#[test]
fn a_plain_append_folds_onto_the_locked_stream_and_requires_its_version() {
    let mut reads = Reads::default();
    reads
        .streams
        .insert("a".into(), (3, Some(total("a", 3, 10)), false));
    let appends = [append(0, "a", AppendKind::Append, &[5, 1], &[])];
    let cache = AggregateCache::new(8);
    let (requirements, updates) = with_plan(&appends, &cache, |plan| {
        ready(plan_aggregate::<Total, _, _>(plan, &mut reads)).expect("plan");
        (plan.requirements.clone(), plan.cache_updates.len())
    });
    assert_eq!(reads.locked, [vec!["a".to_owned()]]);
    assert_eq!(requirements, [(0, 3)]);
    assert_eq!(reads.written, [(BasicWrite::Upsert, "a".into(), 16, None)]);
    assert_eq!(updates, 1);
}

#[test]
fn a_started_stream_is_not_read_and_a_cached_one_is_checked_instead_of_read() {
    let mut reads = Reads::default();
    let cache = AggregateCache::new(8);
    let json: Arc<[u8]> = Arc::from(serde_json::to_vec(&total("b", 2, 7)).unwrap_or_default());
    cache.publish(vec![CacheUpdate {
        key: (
            std::any::TypeId::of::<Total>(),
            None,
            StreamId::String("b".into()),
        ),
        entry: Cached {
            version: 2,
            json: Some(json.clone()),
            tip: None,
        },
    }]);
    let appends = [
        append(0, "new", AppendKind::Start, &[1], &[]),
        append(1, "b", AppendKind::Append, &[3], &[]),
    ];
    let (requirements, hits) = with_plan(&appends, &cache, |plan| {
        ready(plan_aggregate::<Total, _, _>(plan, &mut reads)).expect("plan");
        (plan.requirements.clone(), plan.cache_hits.len())
    });
    assert!(reads.locked.is_empty(), "nothing is read under lock");
    assert_eq!(reads.checked, [("b".to_owned(), Some(json))]);
    assert_eq!(requirements, [(1, 2)]);
    assert_eq!(hits, 1);
    assert_eq!(
        reads.written,
        [
            (BasicWrite::Upsert, "new".into(), 1, None),
            (BasicWrite::Upsert, "b".into(), 10, None)
        ]
    );
}

#[test]
fn an_archived_stream_is_not_projected_and_a_failed_apply_names_the_event() {
    let mut reads = Reads::default();
    reads
        .streams
        .insert("old".into(), (4, Some(total("old", 4, 1)), true));
    let cache = AggregateCache::new(8);
    let appends = [append(0, "old", AppendKind::Append, &[1], &[])];
    with_plan(&appends, &cache, |plan| {
        ready(plan_aggregate::<Total, _, _>(plan, &mut reads)).expect("plan")
    });
    assert!(reads.written.is_empty());

    let appends = [append(0, "c", AppendKind::Expected(0), &[2, -1], &[])];
    let failed = with_plan(&appends, &cache, |plan| {
        ready(plan_aggregate::<Total, _, _>(plan, &mut reads))
    });
    match failed {
        Err(crate::Error::Apply {
            projection,
            version,
            ..
        }) => {
            assert_eq!(projection, "Total");
            assert_eq!(version, 2, "the second event failed");
        }
        other => panic!("expected an apply error, got {other:?}"),
    }
}

#[test]
fn multi_stream_documents_gather_events_of_many_streams_and_assert_the_version_read() {
    let mut reads = Reads::default();
    reads
        .streams
        .insert("t1".into(), (6, Some(total("t1", 0, 100)), false));
    let cache = AggregateCache::new(8);
    let appends = [
        append(0, "s1", AppendKind::Start, &[1], &["t1", "t2"]),
        append(1, "s2", AppendKind::Expected(4), &[2], &["t1"]),
    ];
    with_plan(&appends, &cache, |plan| {
        ready(plan_multi_stream::<Total, _, _>(plan, &mut reads)).expect("plan")
    });
    assert_eq!(reads.locked, [vec!["t1".to_owned(), "t2".to_owned()]]);
    assert_eq!(
        reads.written,
        [
            (BasicWrite::Upsert, "t1".into(), 103, Some(6)),
            (BasicWrite::Insert, "t2".into(), 1, None)
        ]
    );
}

#[test]
fn a_panicking_identity_method_fails_the_plan_naming_the_event_at_its_version() {
    let mut reads = Reads::default();
    reads.streams.insert("s1".into(), (4, None, false));
    let cache = AggregateCache::new(8);
    let appends = [
        append(0, "s1", AppendKind::Append, &[1], &["t1"]),
        append(1, "s1", AppendKind::Append, &[2, 3], &["panic"]),
    ];
    let failed = with_plan(&appends, &cache, |plan| {
        ready(plan_multi_stream::<Total, _, _>(plan, &mut reads))
    });
    match failed {
        Err(crate::Error::Apply {
            projection,
            event_type,
            stream,
            version,
            message,
        }) => {
            assert_eq!((projection, event_type.as_str()), ("Total", "added"));
            assert_eq!(stream, StreamId::String("s1".into()));
            assert_eq!(version, 6, "stored at 4, the save's second event");
            assert!(message.contains("no tally for this event"), "{message}");
        }
        other => panic!("expected an apply error, got {other:?}"),
    }
    assert!(reads.locked.is_empty() && reads.written.is_empty());
}

#[test]
fn a_failed_multi_stream_apply_of_a_plain_append_names_the_version_it_would_take() {
    let mut reads = Reads::default();
    reads.streams.insert("s".into(), (9, None, false));
    let cache = AggregateCache::new(8);
    let appends = [append(0, "s", AppendKind::Append, &[1, -1], &["t"])];
    let failed = with_plan(&appends, &cache, |plan| {
        ready(plan_multi_stream::<Total, _, _>(plan, &mut reads))
    });
    match failed {
        Err(crate::Error::Apply { version, .. }) => assert_eq!(version, 11, "not 0"),
        other => panic!("expected an apply error, got {other:?}"),
    }
}

#[test]
fn the_version_in_a_save_counts_from_the_stored_version_or_the_last_assertion() {
    let appends = [
        append(0, "a", AppendKind::Append, &[1, 2], &[]),
        append(1, "b", AppendKind::Start, &[1], &[]),
        append(2, "a", AppendKind::Append, &[3], &[]),
        append(3, "a", AppendKind::Expected(7), &[4], &[]),
        append(4, "a", AppendKind::Append, &[5], &[]),
    ];
    let envelope = |a: &AppendView, i: usize| {
        let mut e = EventEnvelope::new(0, a.ids[i], a.stream.clone(), a.events[i].clone());
        e.version = 0;
        e
    };
    let at =
        |a: usize, i: usize, stored| version_in_save(&appends, &envelope(&appends[a], i), stored);
    assert_eq!(at(0, 1, Some(5)), Some(7));
    assert_eq!(at(0, 0, None), Some(1), "a new stream");
    assert_eq!(at(1, 0, Some(5)), Some(1), "a start");
    assert_eq!(at(2, 0, Some(5)), Some(8));
    assert_eq!(at(3, 0, Some(5)), Some(8), "asserted");
    assert_eq!(at(4, 0, Some(5)), Some(9));
    let stranger = append(0, "a", AppendKind::Append, &[1], &[]);
    assert_eq!(
        version_in_save(&appends, &envelope(&stranger, 0), Some(5)),
        None
    );
}
