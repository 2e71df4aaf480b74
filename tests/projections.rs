//! Aggregates and projections: derived dispatch, live aggregation, inline projections
//! (Marten's project/task walkthrough), snapshots, fetch_for_writing, multi-stream and
//! event projections.

mod common;

use std::sync::Arc;

use common::events::*;
use common::{builder, ok};
use marten::prelude::*;
use marten::{EventProjection, ProjectedOps, RejectionKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Barrier;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ProjectCancelled {}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct TaskAssigned {
    title: String,
    assignees: Vec<String>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Sabotage {}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ProjectTask {
    title: String,
    started: bool,
    finished: bool,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Project {
    id: Uuid,
    version: i64,
    name: String,
    tasks: Vec<ProjectTask>,
    completed: Option<i64>,
    last_event_version: i64,
}

#[marten::apply]
impl Project {
    fn create(e: &ProjectStarted) -> Self {
        Project {
            id: Uuid::nil(),
            version: 0,
            name: e.name.clone(),
            tasks: vec![],
            completed: None,
            last_event_version: 0,
        }
    }

    fn apply(&mut self, e: &TaskRecorded, meta: &EventEnvelope) {
        self.last_event_version = meta.version;
        self.tasks.push(ProjectTask {
            title: e.title.clone(),
            started: false,
            finished: false,
        });
    }

    fn apply(&mut self, e: &TaskStarted) {
        if let Some(t) = self.tasks.iter_mut().find(|t| t.title == e.title) {
            t.started = true;
        }
    }

    fn apply(&mut self, e: &TaskFinished) {
        if let Some(t) = self.tasks.iter_mut().find(|t| t.title == e.title) {
            t.finished = true;
        }
    }

    /// The immutable style: take the state, return the new one.
    fn apply(self, _e: &ProjectCompleted, meta: &EventEnvelope) -> Self {
        Project {
            completed: Some(meta.version),
            ..self
        }
    }

    fn apply(&mut self, _e: &Sabotage) -> Result<(), String> {
        Err("sabotage is not allowed".into())
    }

    fn should_delete(&self, _e: &ProjectCancelled) -> bool {
        true
    }
}

/// Created from `Default` (no `create` method).
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct TaskCount {
    id: Uuid,
    version: i64,
    recorded: usize,
}

#[marten::apply]
impl TaskCount {
    fn apply_recorded(&mut self, _e: &TaskRecorded) {
        self.recorded += 1;
    }
}

fn stream_version(events: &[marten::EventEnvelope]) -> i64 {
    events.last().map_or(0, |e| e.version)
}

#[tokio::test]
async fn project_walkthrough_inline() {
    let (schema, b) = builder("proj_walkthrough");
    let store = ok(b.projection::<Project>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    let doc =
        |store: DocumentStore| async move { ok(store.query_session().load::<Project>(&id).await) };

    ok(s.events().start_stream(id, [started("Apollo")]));
    ok(s.save_changes().await);
    let p = doc(store.clone()).await.expect("created inline");
    assert_eq!(
        (p.id, p.name.as_str(), p.version, p.tasks.len()),
        (id, "Apollo", 1, 0)
    );

    ok(s.events().append(id, [task("design"), task("build")]));
    ok(s.save_changes().await);
    let p = doc(store.clone()).await.expect("doc");
    assert_eq!(
        p.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(),
        ["design", "build"]
    );
    assert_eq!((p.version, p.last_event_version), (3, 3));

    ok(s.events().append(
        id,
        [TaskStarted {
            title: "design".into(),
        }],
    ));
    ok(s.save_changes().await);
    let p = doc(store.clone()).await.expect("doc");
    assert!(p.tasks[0].started && !p.tasks[0].finished);
    assert_eq!(p.version, 4);

    ok(s.events().append(id, [finished("design")]));
    ok(s.save_changes().await);
    let p = doc(store.clone()).await.expect("doc");
    assert!(p.tasks[0].finished);
    assert_eq!(p.version, 5);

    ok(s.events().append(id, [ProjectCompleted {}]));
    ok(s.save_changes().await);
    let p = doc(store.clone()).await.expect("doc");
    assert_eq!((p.completed, p.version), (Some(6), 6));
    let events = ok(s.events().fetch_stream(id).await);
    assert_eq!(
        p.version,
        stream_version(&events),
        "the document's version is the stream version"
    );

    // The inline document equals the live fold.
    let live: Project = ok(s.events().aggregate_stream(id).await).expect("live");
    assert_eq!(live, p);

    // An event the aggregate has no apply for leaves the document alone; reads for
    // writing catch up with it.
    ok(s.events().append(
        id,
        [TaskAssigned {
            title: "x".into(),
            assignees: vec![],
        }],
    ));
    ok(s.save_changes().await);
    assert_eq!(doc(store.clone()).await.expect("doc").version, 6);
    let w = ok(s.events().fetch_for_writing::<Project>(id).await);
    assert_eq!(w.version(), 7);
    assert_eq!(w.state().map(|p| p.version), Some(7));

    // A failing apply rolls the whole save back.
    let other = Uuid::now_v7();
    ok(s.events().append(
        id,
        [
            PendingEvent::new(task("lost")),
            PendingEvent::new(Sabotage {}),
        ],
    ));
    ok(s.events().start_stream(other, [started("also lost")]));
    let err = s.save_changes().await.expect_err("apply fails");
    match &err {
        marten::Error::Apply {
            projection,
            event_type,
            message,
            ..
        } => {
            assert_eq!(*projection, "Project");
            assert_eq!(event_type, "sabotage");
            assert!(message.contains("sabotage is not allowed"));
        }
        other => panic!("wrong error {other}"),
    }
    assert_eq!(doc(store.clone()).await.expect("doc").version, 6);
    assert_eq!(ok(s.events().fetch_stream(id).await).len(), 7);
    assert!(ok(s.events().fetch_stream_state(other).await).is_none());

    // Deletion.
    ok(s.events().append(id, [ProjectCancelled {}]));
    ok(s.save_changes().await);
    assert!(
        doc(store.clone()).await.is_none(),
        "deleted by should_delete"
    );
    let n: i64 = schema
        .raw_client()
        .await
        .query_one("SELECT count(*) FROM mt_doc_project", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn live_aggregation_up_to_a_version_or_time_and_from_default() {
    let (_schema, b) = builder("proj_live");
    let store = ok(b.projection::<Project>(Lifecycle::Live).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("Live")]));
    ok(s.events().append(id, [task("a"), task("b"), task("c")]));
    ok(s.save_changes().await);
    let cut = OffsetDateTime::now_utc();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    ok(s.events().append(id, [task("d")]));
    ok(s.save_changes().await);

    let all: Project = ok(s.events().aggregate_stream(id).await).expect("p");
    assert_eq!((all.tasks.len(), all.version), (4, 5));
    let at2: Project = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().up_to_version(2))
        .await)
    .expect("p");
    assert_eq!((at2.tasks.len(), at2.version), (1, 2));
    let at_time: Project = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().up_to_time(cut))
        .await)
    .expect("p");
    assert_eq!(at_time.tasks.len(), 3);
    assert!(ok(s.events().aggregate_stream::<Project>(Uuid::now_v7()).await).is_none());
    // Nothing stored for a live projection.
    assert!(ok(store.query_session().load::<Project>(&id).await).is_none());

    // Default creation: the first handled event applies to `TaskCount::default()`.
    let count: TaskCount = ok(s.events().aggregate_stream(id).await).expect("count");
    assert_eq!((count.id, count.recorded, count.version), (id, 4, 5));
}

#[tokio::test]
async fn live_aggregation_starts_from_the_inline_snapshot() {
    let (schema, b) = builder("proj_snapshot");
    let store = ok(b.projection::<Project>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("Snap")]));
    ok(s.events().append(id, [task("a")]));
    ok(s.save_changes().await);
    // Mark the snapshot so that a fold from scratch would not reproduce it.
    schema
        .raw_client()
        .await
        .execute(
            "UPDATE mt_doc_project SET data = jsonb_set(data, '{name}', '\"from snapshot\"')",
            &[],
        )
        .await
        .expect("mark");
    // Events appended behind the projection's back (raw SQL) are caught up from the snapshot.
    let raw = schema.raw_client().await;
    raw.batch_execute(&format!(
        "UPDATE mt_streams SET version = 3 WHERE id = '{id}'; \
         INSERT INTO mt_events (id, stream_id, version, type, data) \
         VALUES (gen_random_uuid(), '{id}', 3, 'task_recorded', '{{\"title\": \"raw\", \"timestamp\": \"2026-01-01T00:00:00Z\"}}')"
    ))
    .await
    .expect("raw append");
    let p: Project = ok(s.events().aggregate_stream(id).await).expect("p");
    assert_eq!(p.name, "from snapshot", "started from the stored document");
    assert_eq!(
        p.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(),
        ["a", "raw"]
    );
    assert_eq!(p.version, 3);
    let latest: Project = ok(s.events().fetch_latest(id).await).expect("p");
    assert_eq!(latest, p);
    // Up to an earlier version the snapshot is past the range: fold from scratch.
    let early: Project = ok(s
        .events()
        .aggregate_stream_with(id, StreamRange::all().up_to_version(1))
        .await)
    .expect("p");
    assert_eq!((early.name.as_str(), early.tasks.len()), ("Snap", 0));
}

#[tokio::test]
async fn fetch_for_writing_decides_and_appends_with_the_version_read() {
    let (_schema, b) = builder("proj_ffw");
    let store = ok(b.projection::<Project>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();

    // A new stream: version 0, no state; appending starts it.
    let mut w = ok(s.events().fetch_for_writing::<Project>(id).await);
    assert_eq!((w.version(), w.state().is_none()), (0, true));
    ok(w.append([started("FFW")]));
    ok(s.save_changes().await);

    let mut w = ok(s.events().fetch_for_writing::<Project>(id).await);
    assert_eq!(w.version(), 1);
    assert_eq!(w.state().map(|p| p.name.clone()), Some("FFW".into()));
    if w.state().is_some_and(|p| p.tasks.is_empty()) {
        ok(w.append([task("first")]));
    }
    ok(s.save_changes().await);
    let p = ok(store.query_session().load::<Project>(&id).await).expect("inline doc");
    assert_eq!((p.version, p.tasks.len()), (2, 1));

    // The stream moves between fetch and save: rejected, nothing written.
    let mut w = ok(s.events().fetch_for_writing::<Project>(id).await);
    ok(w.append([task("stale")]));
    let mut other = store.lightweight_session();
    ok(other.events().append(id, [task("other")]));
    ok(other.save_changes().await);
    let err = s.save_changes().await.expect_err("moved");
    assert_eq!(
        err.rejections()[0].kind,
        RejectionKind::UnexpectedStreamVersion {
            expected: 2,
            actual: Some(3)
        }
    );
    let p = ok(store.query_session().load::<Project>(&id).await).expect("inline doc");
    assert_eq!(
        p.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(),
        ["first", "other"]
    );
}

#[tokio::test]
async fn fetch_for_writing_racers_have_exactly_one_winner_per_round() {
    const RACERS: usize = 8;
    let (_schema, b) = builder("proj_ffw_race");
    let store = ok(b
        .pool_size(RACERS + 2)
        .projection::<Project>(Lifecycle::Inline)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("race")]));
    ok(s.save_changes().await);
    for round in 0..60 {
        let barrier = Arc::new(Barrier::new(RACERS));
        let tasks: Vec<_> = (0..RACERS)
            .map(|racer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut s = store.lightweight_session();
                    let mut w = s.events().fetch_for_writing::<Project>(id).await?;
                    let n = w.state().map_or(0, |p| p.tasks.len());
                    w.append([task(&format!("{round}/{racer}/{n}"))])?;
                    barrier.wait().await;
                    s.save_changes().await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => wins += 1,
                Err(e) => assert!(
                    matches!(
                        e.rejections()[0].kind,
                        RejectionKind::UnexpectedStreamVersion { .. }
                    ),
                    "{e}"
                ),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
    let p = ok(store.query_session().load::<Project>(&id).await).expect("doc");
    assert_eq!(p.tasks.len(), 60);
    assert!(
        p.tasks
            .iter()
            .enumerate()
            .all(|(i, t)| t.title.ends_with(&format!("/{i}"))),
        "each winner saw the state before it"
    );
    assert_eq!(
        p,
        ok(s.events().aggregate_stream::<Project>(id).await).expect("live")
    );
}

#[tokio::test]
async fn concurrent_plain_appends_keep_the_inline_document_exact() {
    const WRITERS: usize = 6;
    const EACH: usize = 15;
    let (_schema, b) = builder("proj_plain_race");
    let store = ok(b
        .pool_size(WRITERS + 2)
        .projection::<Project>(Lifecycle::Inline)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("busy")]));
    ok(s.save_changes().await);
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for i in 0..EACH {
                    let mut s = store.lightweight_session();
                    s.events().append(id, [task(&format!("{w}-{i}"))])?;
                    s.save_changes().await?;
                }
                marten::Result::Ok(())
            })
        })
        .collect();
    for t in tasks {
        ok(t.await.expect("task"));
    }
    let p = ok(store.query_session().load::<Project>(&id).await).expect("doc");
    assert_eq!(
        p.tasks.len(),
        WRITERS * EACH,
        "no append lost from the projection"
    );
    assert_eq!(
        p,
        ok(s.events().aggregate_stream::<Project>(id).await).expect("live")
    );
}

/// Tasks per assignee, fed by every project stream.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct AssigneeTasks {
    id: String,
    titles: Vec<String>,
}

#[marten::apply]
impl AssigneeTasks {
    fn identities(e: &TaskAssigned) -> Vec<String> {
        e.assignees.clone()
    }

    fn create(e: &TaskAssigned, meta: &EventEnvelope) -> Self {
        AssigneeTasks {
            id: String::new(),
            titles: vec![format!("{}@{}", e.title, meta.stream_id)],
        }
    }

    fn apply(&mut self, e: &TaskAssigned, meta: &EventEnvelope) {
        self.titles.push(format!("{}@{}", e.title, meta.stream_id));
    }
}

#[tokio::test]
async fn multi_stream_projection_groups_events_by_assignee() {
    let (_schema, b) = builder("proj_multi");
    let store = ok(b
        .multi_stream_projection::<AssigneeTasks>(Lifecycle::Inline)
        .build()
        .await);
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        p1,
        [TaskAssigned {
            title: "t1".into(),
            assignees: vec!["ann".into(), "bob".into()],
        }],
    ));
    ok(s.events().start_stream(
        p2,
        [TaskAssigned {
            title: "t2".into(),
            assignees: vec!["bob".into()],
        }],
    ));
    ok(s.save_changes().await);
    // An event that names an assignee twice feeds that document once.
    ok(s.events().append(
        p1,
        [TaskAssigned {
            title: "t3".into(),
            assignees: vec!["ann".into(), "ann".into()],
        }],
    ));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    let ann = ok(q.load::<AssigneeTasks>(&"ann".to_owned()).await).expect("ann");
    let bob = ok(q.load::<AssigneeTasks>(&"bob".to_owned()).await).expect("bob");
    assert_eq!(ann.titles, [format!("t1@{p1}"), format!("t3@{p1}")]);
    assert_eq!(bob.titles, [format!("t1@{p1}"), format!("t2@{p2}")]);
    assert_eq!(ann.id, "ann");
}

#[tokio::test]
async fn multi_stream_documents_survive_concurrent_writers() {
    const WRITERS: usize = 6;
    const EACH: usize = 10;
    let (_schema, b) = builder("proj_multi_race");
    let store = ok(b
        .pool_size(WRITERS + 2)
        .multi_stream_projection::<AssigneeTasks>(Lifecycle::Inline)
        .build()
        .await);
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for i in 0..EACH {
                    let mut s = store.lightweight_session();
                    // Different streams, one shared document.
                    s.events().append(
                        Uuid::now_v7(),
                        [TaskAssigned {
                            title: format!("{w}-{i}"),
                            assignees: vec!["shared".into()],
                        }],
                    )?;
                    s.save_changes().await?;
                }
                marten::Result::Ok(())
            })
        })
        .collect();
    for t in tasks {
        ok(t.await.expect("task"));
    }
    let doc = ok(store
        .query_session()
        .load::<AssigneeTasks>(&"shared".to_owned())
        .await)
    .expect("doc");
    assert_eq!(
        doc.titles.len(),
        WRITERS * EACH,
        "no lost update on the shared document"
    );
}

/// An event projection: one document per finished task.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct FinishedTask {
    id: String,
    project: String,
}

struct FinishedTasks;

impl EventProjection for FinishedTasks {
    fn name(&self) -> &'static str {
        "FinishedTasks"
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if let Some(f) = event.data_as::<TaskFinished>() {
            ops.store(FinishedTask {
                id: f.title.clone(),
                project: event.stream_id.to_string(),
            });
        }
        if event.is::<ProjectCancelled>() {
            ops.delete::<FinishedTask>("cancelled-marker".to_owned());
        }
        Ok(())
    }
}

#[tokio::test]
async fn event_projection_writes_documents_per_event() {
    let (_schema, b) = builder("proj_event");
    let store = ok(b
        .event_projection(FinishedTasks, Lifecycle::Inline)
        .build()
        .await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(id, [started("e")]));
    ok(s.events().append(id, [finished("one"), finished("two")]));
    ok(s.save_changes().await);
    let mut q = store.query_session();
    let docs: Vec<FinishedTask> = ok(q
        .load_many(&["one".to_owned(), "two".to_owned(), "three".to_owned()])
        .await);
    assert_eq!(docs.len(), 2);
    assert!(docs.iter().all(|d| d.project == id.to_string()));
}

#[tokio::test]
async fn the_first_append_of_a_fresh_store_with_an_inline_projection_works() {
    let (_schema, b) = builder("proj_fresh");
    let store = ok(b.projection::<Project>(Lifecycle::Inline).build().await);
    let id = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().append(id, [started("fresh")]));
    ok(s.save_changes().await);
    assert_eq!(
        ok(store.query_session().load::<Project>(&id).await).map(|p| p.version),
        Some(1)
    );
}

#[tokio::test]
async fn a_store_that_never_appended_reads_the_events_its_aggregates_handle() {
    let (schema, b) = builder("proj_fresh_reader");
    let writer = ok(b.build().await);
    let id = Uuid::now_v7();
    let mut w = writer.lightweight_session();
    ok(w.events().start_stream(id, [started("elsewhere")]));
    ok(w.events().append(id, [task("t")]));
    ok(w.save_changes().await);
    // Another store (another process, say) with no event registered.
    let reader = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .build()
        .await);
    let mut r = reader.lightweight_session();
    let p: Project = ok(r.events().aggregate_stream(id).await).expect("folded");
    assert_eq!(
        (p.name.as_str(), p.tasks.len(), p.version),
        ("elsewhere", 1, 2)
    );
}
