//! A projection's own code that panics is its event's failure, never an unwind through
//! the library: a multi-stream projection's identity method that panics fails an inline
//! save with `Error::Apply` naming the projection and the event (at the version it would
//! have been appended at), nothing of the save committed and the session usable after;
//! in the daemon the poison policy meets the event (dead-lettered and passed, or the
//! projection stopped with the apply error), sharded or not. An inline event
//! projection that panics names its event at the version its append would have given it.

mod common;

use std::time::Duration;

use common::{builder, ok};
use marten::daemon::{Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use serde::{Deserialize, Serialize};

/// Someone joins a team.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Joined {
    team: String,
}

/// An event the roster's identity method panics on.
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Cursed {}

/// A plain document, written in the same save as the events.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Note {
    id: String,
}

/// Members per team, fed by every stream; its identity method panics on `Cursed`.
#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Roster {
    id: String,
    members: i64,
}

#[marten::apply]
impl Roster {
    fn identity(e: &Joined) -> String {
        e.team.clone()
    }

    fn identity_cursed(_e: &Cursed) -> String {
        panic!("the cursed event has no team")
    }

    fn create(_e: &Joined) -> Self {
        Roster {
            id: String::new(),
            members: 1,
        }
    }

    fn apply(&mut self, _e: &Joined) {
        self.members += 1;
    }

    fn apply_cursed(&mut self, _e: &Cursed) {}
}

fn joined(team: &str) -> Joined {
    Joined { team: team.into() }
}

/// Every test here is bounded: a regression fails instead of hanging.
async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: timed out"),
    }
}

async fn members(store: &DocumentStore, team: &str) -> Option<i64> {
    let roster = ok(store.query_session().load::<Roster>(&team.to_owned()).await);
    roster.map(|r| r.members)
}

/// An inline save whose events include one the identity method panics on: the save
/// fails with `Error::Apply` naming the projection, the event and its stream at the
/// version the plain append would have given it (not 0: nothing reserved versions), and
/// nothing of it is committed (the appends, the new stream, the document, the
/// projected rosters); the same session then saves other events.
#[tokio::test]
async fn an_inline_identity_panic_fails_the_save_and_commits_nothing() {
    bounded("inline identity panic", async {
        let (_schema, b) = builder("panic_inline_identity");
        let store = ok(b
            .multi_stream_projection::<Roster>(Lifecycle::Inline)
            .build()
            .await);
        let (kept, fresh) = (Uuid::now_v7(), Uuid::now_v7());
        let mut s = store.lightweight_session();
        ok(s.events().start_stream(kept, [joined("red")]));
        ok(s.save_changes().await);

        ok(s.events().append(
            kept,
            [
                PendingEvent::new(joined("red")),
                PendingEvent::new(joined("blue")),
                PendingEvent::new(Cursed {}),
            ],
        ));
        ok(s.events().start_stream(fresh, [joined("blue")]));
        ok(s.store(Note { id: "lost".into() }));
        let err = s.save_changes().await.expect_err("the identity panicked");
        match &err {
            marten::Error::Apply {
                projection,
                event_type,
                stream,
                version,
                message,
            } => {
                assert_eq!((*projection, event_type.as_str()), ("Roster", "cursed"));
                assert_eq!((stream, *version), (&StreamId::from(kept), 4));
                assert!(
                    message.contains("the cursed event has no team"),
                    "{message}"
                );
            }
            other => panic!("expected an apply error, got {other:?}"),
        }

        assert_eq!(ok(s.events().fetch_stream(kept).await).len(), 1);
        assert!(ok(s.events().fetch_stream_state(fresh).await).is_none());
        assert!(ok(s.load::<Note>(&"lost".to_owned()).await).is_none());
        assert_eq!(members(&store, "red").await, Some(1));
        assert_eq!(members(&store, "blue").await, None);

        ok(s.events().append(kept, [joined("red"), joined("blue")]));
        ok(s.save_changes().await);
        assert_eq!(members(&store, "red").await, Some(2));
        assert_eq!(members(&store, "blue").await, Some(1));
        assert_eq!(ok(s.events().fetch_stream(kept).await).len(), 3);
    })
    .await;
}

fn options(poison: PoisonPolicy) -> DaemonOptions {
    DaemonOptions {
        retries: 0,
        poison,
        poll_interval: Duration::from_millis(20),
        ..DaemonOptions::default()
    }
}

/// A store with the roster projected by the daemon and one stream: `Joined` red,
/// `Cursed` (version 2), `Joined` red and blue.
async fn async_store(label: &str) -> (marten_testing::TestSchema, DocumentStore, Uuid) {
    let (schema, b) = builder(label);
    let store = ok(b
        .multi_stream_projection::<Roster>(Lifecycle::Async)
        .build()
        .await);
    let stream = Uuid::now_v7();
    let mut s = store.lightweight_session();
    ok(s.events().start_stream(
        stream,
        [
            PendingEvent::new(joined("red")),
            PendingEvent::new(Cursed {}),
            PendingEvent::new(joined("red")),
            PendingEvent::new(joined("blue")),
        ],
    ));
    ok(s.save_changes().await);
    (schema, store, stream)
}

/// The dead letters recorded: projection, event type, stream and error.
async fn dead_letters(
    schema: &marten_testing::TestSchema,
) -> Vec<(String, String, String, String)> {
    schema
        .raw_client()
        .await
        .query(
            "SELECT projection, event_type, stream_id, error FROM mt_dead_letters ORDER BY id",
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Under the dead-letter policy (the default), whole or in shards, the event the
/// identity method panics on is dead-lettered once, naming the projection, the event and
/// the panic, and the runner projects the events after it.
#[tokio::test]
async fn an_async_identity_panic_is_dead_lettered_and_passed() {
    bounded("async identity panic, dead letter", async {
        for shards in [1, 2] {
            let (schema, store, stream) = async_store("panic_async_identity_dl").await;
            let mut opts = options(PoisonPolicy::DeadLetter);
            if shards > 1 {
                opts = opts.with_shards("Roster", shards);
            }
            let daemon = Daemon::start(&store, opts);
            ok(daemon.wait_for_non_stale(Duration::from_secs(5)).await);
            ok(daemon.stop().await);
            assert_eq!(members(&store, "red").await, Some(2), "{shards} shard(s)");
            assert_eq!(members(&store, "blue").await, Some(1), "{shards} shard(s)");
            let letters = dead_letters(&schema).await;
            assert_eq!(letters.len(), 1, "{shards} shard(s): {letters:?}");
            let (projection, event_type, at, error) = &letters[0];
            assert_eq!(
                (projection.as_str(), event_type.as_str(), at.as_str()),
                ("Roster", "cursed", stream.to_string().as_str())
            );
            assert!(error.contains("the cursed event has no team"), "{error}");
        }
    })
    .await;
}

/// Under the stop policy the projection stops with `Error::Apply` naming the event (its
/// stream and version) and the panic, not a panic of the runner; nothing after it is
/// projected.
#[tokio::test]
async fn an_async_identity_panic_stops_the_projection_with_the_apply_error() {
    bounded("async identity panic, stop", async {
        let (_schema, store, stream) = async_store("panic_async_identity_stop").await;
        let daemon = Daemon::start(&store, options(PoisonPolicy::Stop));
        match common::stopped_with(daemon).await {
            marten::Error::Apply {
                projection,
                event_type,
                stream: at,
                version,
                message,
            } => {
                assert_eq!((projection, event_type.as_str()), ("Roster", "cursed"));
                assert_eq!((at, version), (StreamId::from(stream), 2));
                assert!(
                    message.contains("the cursed event has no team"),
                    "{message}"
                );
            }
            other => panic!("expected the apply error, got {other:?}"),
        }
        assert_eq!(members(&store, "blue").await, None);
    })
    .await;
}

/// Writes a note per `Joined`; panics on `Cursed`.
struct Notes;

impl marten::EventProjection for Notes {
    fn name(&self) -> &'static str {
        "Notes"
    }

    fn uses_metadata(&self) -> bool {
        false
    }

    fn apply(
        &self,
        event: &EventEnvelope,
        ops: &mut marten::ProjectedOps,
    ) -> Result<(), marten::ApplyError> {
        if event.data_as::<Cursed>().is_some() {
            panic!("no note for a cursed event");
        }
        if let Some(e) = event.data_as::<Joined>() {
            ops.store(Note { id: e.team.clone() });
        }
        Ok(())
    }
}

/// An inline event projection that panics on an event of a plain append: the save fails
/// with `Error::Apply` naming the event at the version the append would have given it
/// (not 0: the projection reads no metadata, so nothing reserved versions), nothing
/// committed.
#[tokio::test]
async fn an_inline_event_projection_panic_names_the_event_at_its_version() {
    bounded("inline event projection panic", async {
        let (_schema, b) = builder("panic_inline_event_projection");
        let store = ok(b.event_projection(Notes, Lifecycle::Inline).build().await);
        let stream = Uuid::now_v7();
        let mut s = store.lightweight_session();
        ok(s.events()
            .start_stream(stream, [joined("red"), joined("blue")]));
        ok(s.save_changes().await);
        ok(s.events().append(
            stream,
            [
                PendingEvent::new(joined("green")),
                PendingEvent::new(Cursed {}),
            ],
        ));
        match s.save_changes().await {
            Err(marten::Error::Apply {
                projection,
                stream: at,
                version,
                message,
                ..
            }) => {
                assert_eq!(projection, "Notes");
                assert_eq!((at, version), (StreamId::from(stream), 4));
                assert!(message.contains("no note for a cursed event"), "{message}");
            }
            other => panic!("expected an apply error, got {other:?}"),
        }
        assert_eq!(ok(s.events().fetch_stream(stream).await).len(), 2);
        assert!(ok(s.load::<Note>(&"green".to_owned()).await).is_none());
    })
    .await;
}
