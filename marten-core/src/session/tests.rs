//! The session's rules, without a database: a scripted backend records what the session
//! asks of it (loads, queued writes, save attempts, how saves end) and answers as told.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use serde::{Deserialize, Serialize};

use super::*;
use crate::concurrency::{Numeric, NumericWrite, VersionOf, WriteOf};
use crate::{Document, DocumentMetadata, Error, Result};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Doc {
    id: i64,
    name: String,
}

impl Document for Doc {
    type Id = i64;
    type Mode = Numeric;
    const DOCUMENT_TYPE: &'static str = "Doc";
    const TABLE_NAME: &'static str = "mt_doc_doc";
    fn id(&self) -> &i64 {
        &self.id
    }
    fn id_mut(&mut self) -> &mut i64 {
        &mut self.id
    }
}

/// A queued write as the scripted backend records it.
#[derive(Debug, Clone, PartialEq)]
enum Queued {
    Write(NumericWrite, i64, String, Option<i64>),
    Delete(i64),
}

/// What the scripted backend holds and records.
#[derive(Default)]
struct Script {
    /// Stored documents: JSON and revision.
    rows: HashMap<i64, (String, i64)>,
    loads: usize,
    /// How each attempt ends; none left: committed. `None`: the attempt never finishes.
    ends: Vec<Option<AttemptEnd>>,
    /// What each attempt was sent.
    sent: Vec<Vec<Queued>>,
    /// How each save ended (`committed`).
    ended: Vec<bool>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Script>>);

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
        match self.0.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

#[derive(Default)]
struct Queue(Vec<Queued>);

impl DirtyQueue<Doc> for Queue {
    fn queue_dirty(&mut self, id: i64, json: Vec<u8>, expected: Option<i64>) -> Result<()> {
        let json = String::from_utf8_lossy(&json).into_owned();
        self.0.push(Queued::Write(
            NumericWrite::Basic(crate::concurrency::BasicWrite::Upsert),
            id,
            json,
            expected,
        ));
        Ok(())
    }
}

struct Scripted;

impl Backend for Scripted {
    type Store = Shared;
    type Conn = ();
    type Queue = Queue;
    type Scratch = ();
    type Events<'s, K: Tracking> = ();
    type Batch<'s> = ();

    const SYSTEM: &'static str = "scripted";

    fn namespace(_store: &Shared) -> &str {
        "scripted"
    }
    fn connection(_store: &Shared) {}
    fn in_transaction(_conn: &()) -> bool {
        false
    }
    fn queued(queue: &Queue) -> usize {
        queue.0.len()
    }
    fn nothing_queued(queue: &Queue) -> bool {
        queue.0.is_empty()
    }
    fn clear(queue: &mut Queue) {
        queue.0.clear();
    }
    async fn attempt_save(parts: &mut Parts<Self>, _attempts: &SaveAttempts) -> Result<AttemptEnd> {
        let queued = parts.queue.0.clone();
        let end = parts.store.with(|s| {
            s.sent.push(queued);
            if s.ends.is_empty() {
                Some(AttemptEnd::Committed)
            } else {
                s.ends.remove(0)
            }
        });
        match end {
            Some(end) => Ok(end),
            None => std::future::pending().await,
        }
    }
    fn end_save(parts: &mut Parts<Self>, committed: bool) {
        parts.store.with(|s| s.ended.push(committed));
    }
    async fn end_transaction(_parts: &mut Parts<Self>) {}
    fn events<K: Tracking>(_session: &mut Session<Self, K>) {}
    fn batch(_session: &mut QuerySession<Self>) {}
}

fn loaded(s: &mut Script, id: i64) -> Option<Loaded<Doc>> {
    s.loads += 1;
    let (json, version) = s.rows.get(&id)?.clone();
    let doc = serde_json::from_str(&json).ok()?;
    Some(Loaded {
        id,
        doc,
        version: Some(version),
        json: json.into_bytes(),
    })
}

impl DocumentBackend<Doc> for Scripted {
    fn serialize(doc: &Doc) -> Result<Vec<u8>> {
        serde_json::to_vec(doc).map_err(|source| Error::Serialize {
            document_type: Doc::DOCUMENT_TYPE,
            id: doc.id.to_string(),
            source,
        })
    }
    fn queue_write(
        queue: &mut Queue,
        kind: WriteOf<Doc>,
        id: i64,
        json: Vec<u8>,
        expected: Option<VersionOf<Doc>>,
    ) {
        let json = String::from_utf8_lossy(&json).into_owned();
        queue.0.push(Queued::Write(kind, id, json, expected));
    }
    fn queue_delete(queue: &mut Queue, id: i64) {
        queue.0.push(Queued::Delete(id));
    }
    async fn load(store: &Shared, _conn: &mut (), id: &i64) -> Result<Option<Loaded<Doc>>> {
        Ok(store.with(|s| loaded(s, *id)))
    }
    async fn load_many(store: &Shared, _conn: &mut (), ids: &[i64]) -> Result<Vec<Loaded<Doc>>> {
        Ok(store.with(|s| ids.iter().filter_map(|id| loaded(s, *id)).collect()))
    }
    async fn metadata(
        _store: &Shared,
        _conn: &mut (),
        _id: &i64,
    ) -> Result<Option<DocumentMetadata<i64>>> {
        Ok(None)
    }
}

/// Polls `fut` once: the scripted backend never waits, except an attempt scripted to
/// never finish.
fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut fut = std::pin::pin!(fut);
    fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

fn ready<F: Future>(fut: F) -> F::Output {
    match poll_once(fut) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the scripted backend never waits here"),
    }
}

fn store_with(rows: &[(i64, &str, i64)]) -> Shared {
    let shared = Shared::default();
    shared.with(|s| {
        for (id, name, version) in rows {
            let json = format!(r#"{{"id":{id},"name":"{name}"}}"#);
            s.rows.insert(*id, (json, *version));
        }
    });
    shared
}

fn doc(id: i64, name: &str) -> Doc {
    Doc {
        id,
        name: name.into(),
    }
}

const UPSERT: NumericWrite = NumericWrite::Basic(crate::concurrency::BasicWrite::Upsert);

#[test]
fn an_identity_session_answers_a_second_load_from_its_map_and_a_lightweight_one_does_not() {
    let store = store_with(&[(1, "a", 4)]);
    let mut identity = Session::<Scripted, IdentityMap>::new(store.clone(), Default::default());
    for _ in 0..3 {
        let got = ready(identity.load::<Doc>(&1)).expect("load");
        assert_eq!(got, Some(doc(1, "a")));
    }
    assert_eq!(store.with(|s| s.loads), 1);

    let mut light = Session::<Scripted, Lightweight>::new(store.clone(), Default::default());
    ready(light.load::<Doc>(&1)).expect("load");
    ready(light.load::<Doc>(&1)).expect("load");
    assert_eq!(store.with(|s| s.loads), 3);
}

#[test]
fn a_store_after_a_load_asserts_the_version_seen_unless_checks_are_off() {
    let store = store_with(&[(1, "a", 4)]);
    let mut session = Session::<Scripted, Lightweight>::new(store.clone(), Default::default());
    ready(session.load::<Doc>(&1)).expect("load");
    assert_eq!(session.version_of::<Doc>(&1), Some(4));
    session.store(doc(1, "b")).expect("store");
    session.set_concurrency_checks(false);
    session.store(doc(1, "c")).expect("store");
    session.insert(doc(2, "d")).expect("insert");
    session.update_revision(doc(3, "e"), 9).expect("revision");
    let queued = &session.parts().queue.0;
    assert_eq!(
        queued[0],
        Queued::Write(UPSERT, 1, r#"{"id":1,"name":"b"}"#.into(), Some(4))
    );
    assert_eq!(
        queued[1],
        Queued::Write(UPSERT, 1, r#"{"id":1,"name":"c"}"#.into(), None)
    );
    assert!(matches!(
        queued[2],
        Queued::Write(NumericWrite::Basic(_), 2, _, None)
    ));
    assert!(matches!(
        queued[3],
        Queued::Write(NumericWrite::UpdateRevision, 3, _, Some(9))
    ));
    assert_eq!(session.pending_changes(), 4);
}

#[test]
fn a_dirty_tracked_session_saves_only_the_documents_that_changed() {
    let store = store_with(&[(1, "a", 2), (2, "b", 7)]);
    let mut session = Session::<Scripted, DirtyTracking>::new(store.clone(), Default::default());
    ready(session.load_many::<Doc>(&[1, 2])).expect("load");
    if let Some(d) = session.get_mut::<Doc>(&2) {
        d.name = "changed".into();
    }
    ready(session.save_changes()).expect("save");
    let sent = store.with(|s| s.sent.clone());
    assert_eq!(
        sent,
        [vec![Queued::Write(
            UPSERT,
            2,
            r#"{"id":2,"name":"changed"}"#.into(),
            Some(7)
        )]]
    );
    assert_eq!(session.pending_changes(), 0);
    ready(session.save_changes()).expect("a second save sends nothing");
    assert_eq!(store.with(|s| s.sent.len()), 1);
}

#[test]
fn a_failed_save_empties_the_queue_and_keeps_changed_documents_dirty() {
    let store = store_with(&[(1, "a", 2)]);
    store.with(|s| s.ends = vec![Some(AttemptEnd::Failed(Error::Configuration("no".into())))]);
    let mut session = Session::<Scripted, DirtyTracking>::new(store.clone(), Default::default());
    if let Some(d) = ready(session.load::<Doc>(&1)).expect("load") {
        d.name = "b".into();
    }
    let failed = ready(session.save_changes());
    assert!(matches!(failed, Err(Error::Configuration(_))));
    assert_eq!(session.pending_changes(), 0);
    assert_eq!(store.with(|s| s.ended.clone()), [false]);
    ready(session.save_changes()).expect("the retry commits");
    let sent = store.with(|s| s.sent.clone());
    assert_eq!(sent.len(), 2, "the changed document is sent again");
    assert_eq!(sent[0], sent[1]);
    assert_eq!(store.with(|s| s.ended.clone()), [false, true]);
}

#[test]
fn discarded_in_place_changes_are_not_saved_and_later_ones_are() {
    let store = store_with(&[(1, "a", 2)]);
    let mut session = Session::<Scripted, DirtyTracking>::new(store.clone(), Default::default());
    if let Some(d) = ready(session.load::<Doc>(&1)).expect("load") {
        d.name = "discarded".into();
    }
    session.discard_changes();
    ready(session.save_changes()).expect("save");
    assert!(
        store.with(|s| s.sent.is_empty()),
        "the discarded change is not sent"
    );
    if let Some(d) = session.get_mut::<Doc>(&1) {
        d.name = "later".into();
    }
    ready(session.save_changes()).expect("save");
    let sent = store.with(|s| s.sent.clone());
    assert_eq!(
        sent,
        [vec![Queued::Write(
            UPSERT,
            1,
            r#"{"id":1,"name":"later"}"#.into(),
            Some(2)
        )]]
    );
}

#[test]
fn a_cancelled_save_forgets_its_queue_and_ends_as_not_committed() {
    let store = Shared::default();
    store.with(|s| s.ends = vec![None]);
    let mut session = Session::<Scripted, Lightweight>::new(store.clone(), Default::default());
    session.store(doc(1, "a")).expect("store");
    session
        .parts_mut()
        .boundaries
        .push((crate::EventTag::named("t", "v"), 3));
    assert!(poll_once(session.save_changes()).is_pending());
    assert_eq!(
        session.pending_changes(),
        0,
        "the cancelled save's queue is gone"
    );
    assert!(session.parts().boundaries.is_empty());
    assert_eq!(store.with(|s| s.ended.clone()), [false]);
}

#[test]
fn attempts_are_made_again_while_the_backend_asks_for_it() {
    let store = Shared::default();
    store.with(|s| s.ends = vec![Some(AttemptEnd::PlanAgain), Some(AttemptEnd::Retry)]);
    let mut session = Session::<Scripted, Lightweight>::new(store.clone(), Default::default());
    session.store(doc(1, "a")).expect("store");
    ready(session.save_changes()).expect("save");
    assert_eq!(store.with(|s| s.sent.len()), 3);
    assert_eq!(store.with(|s| s.ended.clone()), [true]);
}

#[test]
fn a_delete_forgets_the_document_so_the_next_load_queries() {
    let store = store_with(&[(1, "a", 4)]);
    let mut session = Session::<Scripted, IdentityMap>::new(store.clone(), Default::default());
    ready(session.load::<Doc>(&1)).expect("load");
    session.delete::<Doc>(&1).expect("delete");
    ready(session.load::<Doc>(&1)).expect("load");
    assert_eq!(store.with(|s| s.loads), 2);
    assert_eq!(session.parts().queue.0, [Queued::Delete(1)]);
    session.discard_changes();
    assert_eq!(session.pending_changes(), 0);
}

#[test]
fn a_query_session_loads_every_time_and_queues_nothing() {
    let store = store_with(&[(1, "a", 4), (2, "b", 5)]);
    let mut session = QuerySession::<Scripted>::new(store.clone());
    assert_eq!(
        ready(session.load::<Doc>(&1)).expect("load"),
        Some(doc(1, "a"))
    );
    assert_eq!(
        ready(session.load::<Doc>(&1)).expect("load"),
        Some(doc(1, "a"))
    );
    let many = ready(session.load_many::<Doc>(&[1, 2, 3])).expect("load");
    assert_eq!(many.len(), 2);
    assert_eq!(
        store.with(|s| s.loads),
        5,
        "two loads and three ids looked up"
    );
}
