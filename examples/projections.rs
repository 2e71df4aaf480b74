//! Aggregates and projections end to end: a project aggregate kept inline with its
//! stream, decided on with `fetch_for_writing`, folded live up to a version, a
//! multi-stream projection of tasks per assignee, and commands on a live aggregate with
//! `write_to_aggregate`.
//!
//! Run it with `cargo run --example projections`.

use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ProjectStarted {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TaskRecorded {
    title: String,
    assignee: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TaskFinished {
    title: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ProjectCompleted {}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Task {
    title: String,
    finished: bool,
}

/// The project, folded from its stream.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug)]
struct Project {
    id: Uuid,
    version: i64,
    name: String,
    tasks: Vec<Task>,
    completed_at_version: Option<i64>,
}

#[marten::apply]
impl Project {
    fn create(e: &ProjectStarted) -> Self {
        Project {
            id: Uuid::nil(),
            version: 0,
            name: e.name.clone(),
            tasks: Vec::new(),
            completed_at_version: None,
        }
    }

    fn apply(&mut self, e: &TaskRecorded) {
        self.tasks.push(Task {
            title: e.title.clone(),
            finished: false,
        });
    }

    fn apply(&mut self, e: &TaskFinished) {
        if let Some(t) = self.tasks.iter_mut().find(|t| t.title == e.title) {
            t.finished = true;
        }
    }

    fn apply(self, _e: &ProjectCompleted, meta: &EventEnvelope) -> Self {
        Project {
            completed_at_version: Some(meta.version),
            ..self
        }
    }
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MilestoneReached {
    name: String,
}

/// The milestones of a mission, folded live (no document): what commands decide on.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Milestones {
    id: Uuid,
    version: i64,
    reached: Vec<String>,
}

#[marten::apply]
impl Milestones {
    fn apply(&mut self, e: &MilestoneReached) {
        self.reached.push(e.name.clone());
    }
}

/// The tasks of one assignee, across every project.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(numeric)]
struct Workload {
    id: String,
    titles: Vec<String>,
}

#[marten::apply]
impl Workload {
    fn identity(e: &TaskRecorded) -> String {
        e.assignee.clone()
    }

    fn create(e: &TaskRecorded) -> Self {
        Workload {
            id: String::new(),
            titles: vec![e.title.clone()],
        }
    }

    fn apply(&mut self, e: &TaskRecorded) {
        self.titles.push(e.title.clone());
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let store = DocumentStore::builder()
        .connection_string(url)
        .schema("projections_example")
        .auto_create(AutoCreate::All)
        .projection::<Project>(Lifecycle::Inline)
        .multi_stream_projection::<Workload>(Lifecycle::Inline)
        .build()
        .await?;
    let apollo = Uuid::now_v7();

    // Starting the stream writes the project document in the same transaction.
    let mut s = store.lightweight_session();
    s.events().start_stream(
        apollo,
        [ProjectStarted {
            name: "Apollo".into(),
        }],
    )?;
    s.save_changes().await?;

    // Plain appends: the store has the project cached, so each save is one round trip
    // (the append asserts the cached version; a stale entry is retried under lock).
    for (title, assignee) in [("design", "ann"), ("build", "bob"), ("test", "ann")] {
        s.events().append(
            apollo,
            [TaskRecorded {
                title: title.into(),
                assignee: assignee.into(),
            }],
        )?;
        s.save_changes().await?;
    }

    // A command handler: decide on the current state, append with a version check.
    let mut w = s.events().fetch_for_writing::<Project>(apollo).await?;
    let unfinished: Vec<String> = w
        .state()
        .map(|p| {
            p.tasks
                .iter()
                .filter(|t| !t.finished)
                .map(|t| t.title.clone())
                .collect()
        })
        .unwrap_or_default();
    w.append(
        unfinished
            .into_iter()
            .map(|title| TaskFinished { title })
            .collect::<Vec<_>>(),
    )?;
    w.append([ProjectCompleted {}])?;
    s.save_changes().await?;

    let project = s
        .load::<Project>(&apollo)
        .await?
        .ok_or("the inline projection wrote no document")?;
    println!(
        "{} at version {}: {} tasks, completed at version {:?}",
        project.name,
        project.version,
        project.tasks.len(),
        project.completed_at_version
    );

    // Live aggregation up to a version: the project before anything was finished.
    let early = s
        .events()
        .aggregate_stream_with::<Project>(apollo, StreamRange::all().up_to_version(4))
        .await?
        .ok_or("no project at version 4")?;
    println!(
        "at version 4: {:?}",
        early.tasks.iter().map(|t| &t.title).collect::<Vec<_>>()
    );

    let ann = s
        .load::<Workload>(&"ann".to_string())
        .await?
        .ok_or("no workload for ann")?;
    println!("ann's tasks: {:?}", ann.titles);

    // Commands: decide in a closure; `write_to_aggregate` reads the live aggregate (or,
    // after the first command, takes the state the store kept of it), appends what the
    // closure decided expecting the version it decided on, and saves. A milestone is
    // recorded once: the third command decides nothing.
    let gemini = Uuid::now_v7();
    for name in ["launch", "orbit", "launch"] {
        let mut s = store.lightweight_session();
        let version = s
            .events()
            .write_to_aggregate(gemini, |m: Option<&Milestones>| {
                let seen = m.is_some_and(|m| m.reached.iter().any(|r| r == name));
                let reached = (!seen).then(|| MilestoneReached { name: name.into() });
                Ok::<_, Error>(reached.into_iter().collect::<Vec<_>>())
            })
            .await?;
        println!("gemini after {name:?}: version {version}");
    }
    Ok(())
}
