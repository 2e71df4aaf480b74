//! The event store end to end: a project-management stream started, appended to with each
//! kind of concurrency check, read back with metadata, and read in global order.
//!
//! Run it with `cargo run --example events`.

use marten::prelude::*;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ProjectStarted {
    name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TaskRecorded {
    title: String,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TaskStarted {
    title: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct TaskFinished {
    title: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct ProjectCompleted {}

fn task(title: &str) -> TaskRecorded {
    TaskRecorded {
        title: title.into(),
        timestamp: OffsetDateTime::now_utc(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let store = DocumentStore::builder()
        .connection_string(url)
        .schema("events_example")
        .auto_create(AutoCreate::All) // start from scratch on every run
        .event::<ProjectStarted>()
        .build()
        .await?;
    let project = Uuid::now_v7();

    // Start the stream and record tasks: one transaction, one round trip.
    let mut s = store.lightweight_session();
    s.set_correlation_id(Some("planning-meeting".into()));
    s.events().start_stream(
        project,
        [ProjectStarted {
            name: "Apollo".into(),
        }],
    )?;
    s.events()
        .append(project, [task("design"), task("build"), task("launch")])?;
    s.save_changes().await?;

    // Expected version: the version seen before appending.
    let version = s
        .events()
        .fetch_stream_state(project)
        .await?
        .ok_or("started")?
        .version;
    s.events().append_expected(
        project,
        version,
        [TaskStarted {
            title: "design".into(),
        }],
    )?;
    s.save_changes().await?;

    // A stale expected version is rejected, and nothing is written.
    s.events().append_expected(
        project,
        version,
        [TaskStarted {
            title: "build".into(),
        }],
    )?;
    match s.save_changes().await {
        Err(Error::Rejected(r)) => println!("rejected as expected: {}", r[0]),
        other => return Err(format!("expected a rejection, got {other:?}").into()),
    }

    // Optimistic: the version is read now and asserted at save.
    s.events()
        .append_optimistic(
            project,
            [TaskFinished {
                title: "design".into(),
            }],
        )
        .await?;
    s.save_changes().await?;

    // Exclusive: the stream's row is locked until this session saves.
    s.events()
        .append_exclusive(
            project,
            [PendingEvent::new(ProjectCompleted {}).with_header("closed-by", "ann")],
        )
        .await?;
    s.save_changes().await?;

    for e in s.events().fetch_stream(project).await? {
        println!(
            "v{} seq {} {:<16} correlation={:?} headers={:?}",
            e.version, e.sequence, e.event_type, e.correlation_id, e.headers
        );
        if let Some(t) = e.data_as::<TaskRecorded>() {
            println!("    task {:?} recorded at {}", t.title, t.timestamp);
        }
    }

    // Global order, gap-safe, page by page.
    let mut position = Position::START;
    let mut total = 0;
    loop {
        let page = s.events().read_all(position, 3).await?;
        if page.rows == 0 {
            break;
        }
        total += page.events.len();
        position = page.next;
    }
    println!("read {total} events in global order, up to {position:?}");
    Ok(())
}
