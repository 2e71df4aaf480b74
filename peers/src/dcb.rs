//! disintegrate against marten's tag boundaries: a dynamic-consistency-boundary decision
//! (read the events of one course, fold the seats left, decide, append a subscription
//! with the consistency check).
//!
//! disintegrate is used as its README and courses example show: an `Event` enum with
//! `#[id]` fields and a `#[stream]` of the course's events, a `StateQuery` state with
//! `StateMutate`, a `Decision`, and `disintegrate_postgres::decision_maker` over a
//! `PgEventStore` with JSON serde and no snapshots; `make(decision)` per subscription.
//! marten: events with `#[tag]` fields, a state with `#[marten::apply]`,
//! `fetch_for_writing_by_tags` + `append` + `save_changes` per subscription (and, in a
//! second row, `write_to_boundary`, which decides on the boundary the store kept from
//! the course's previous command).

use disintegrate::serde::json::Json;
use disintegrate::{Decision, EventStore, NoSnapshot, StateMutate, StateQuery};
use disintegrate_postgres::{PgDecisionMaker, PgEventStore};
use marten::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::db::{check_sync, marten_url, peer_pool, Schemas};
use crate::harness::{interleaved, wanted, Plan, Row};

/// Subscriptions per course within a repetition (each repetition opens new courses).
const PER_COURSE: usize = 10;

// ---- disintegrate side ----

/// Every event of the course domain; `CourseEvent` is the stream of one course's.
#[derive(Debug, Clone, PartialEq, Eq, disintegrate::Event, Serialize, Deserialize)]
#[stream(CourseEvent, [CourseCreated, StudentSubscribed])]
pub enum DomainEvent {
    CourseCreated {
        #[id]
        course_id: String,
        seats: u32,
    },
    StudentSubscribed {
        #[id]
        course_id: String,
        #[id]
        student_id: String,
    },
}

/// The decision's state: the seats of one course and its subscriptions so far.
#[derive(Default, StateQuery, Clone, Serialize, Deserialize)]
#[state_query(CourseEvent)]
pub struct CourseSeats {
    #[id]
    course_id: String,
    seats: u32,
    subscribed: u32,
}

impl StateMutate for CourseSeats {
    fn mutate(&mut self, event: Self::Event) {
        match event {
            CourseEvent::CourseCreated { seats, .. } => self.seats = seats,
            CourseEvent::StudentSubscribed { .. } => self.subscribed += 1,
        }
    }
}

/// Why a subscription is refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("no seats left")]
    Full,
}

/// The decision: subscribe a student to a course if a seat is left.
pub struct Subscribe {
    course_id: String,
    student_id: String,
}

impl Decision for Subscribe {
    type Event = DomainEvent;
    type StateQuery = CourseSeats;
    type Error = SubscribeError;

    fn state_query(&self) -> Self::StateQuery {
        CourseSeats {
            course_id: self.course_id.clone(),
            ..Default::default()
        }
    }

    fn process(&self, state: &Self::StateQuery) -> Result<Vec<Self::Event>, Self::Error> {
        if state.subscribed >= state.seats {
            return Err(SubscribeError::Full);
        }
        Ok(vec![DomainEvent::StudentSubscribed {
            course_id: self.course_id.clone(),
            student_id: self.student_id.clone(),
        }])
    }
}

/// disintegrate's PostgreSQL event store of the course domain, JSON-serialized.
type Store = PgEventStore<DomainEvent, Json<DomainEvent>>;

// ---- marten side ----

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct CourseCreated {
    #[tag]
    course_id: String,
    seats: u32,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct StudentSubscribed {
    #[tag]
    course_id: String,
    #[tag]
    student_id: String,
}

#[derive(Default, Clone)]
struct Seats {
    seats: u32,
    subscribed: u32,
}

#[marten::apply]
impl Seats {
    fn apply_created(&mut self, e: &CourseCreated) {
        self.seats = e.seats;
    }
    fn apply_subscribed(&mut self, _e: &StudentSubscribed) {
        self.subscribed += 1;
    }
}

/// The marten decision: the course's boundary, the check, the append, the save.
async fn marten_subscribe(store: &DocumentStore, course_id: &str, student_id: String) {
    let q = TagQuery::new()
        .tag_named("course_id", course_id)
        .event_types::<(CourseCreated, StudentSubscribed)>();
    let mut s = store.lightweight_session();
    let mut b = s
        .events()
        .fetch_for_writing_by_tags::<Seats>(q)
        .await
        .expect("boundary");
    match b.state() {
        Some(c) if c.subscribed < c.seats => {}
        _ => panic!("no seats left"),
    }
    b.append([StudentSubscribed {
        course_id: course_id.to_owned(),
        student_id,
    }])
    .expect("append");
    s.save_changes().await.expect("save");
}

/// The marten decision as a command (`write_to_boundary`): the course's boundary read,
/// or kept from the course's previous command, the check, the append, the save.
async fn marten_command(store: &DocumentStore, course_id: &str, student_id: String) {
    let q = TagQuery::new()
        .tag_named("course_id", course_id)
        .event_types::<(CourseCreated, StudentSubscribed)>();
    let mut s = store.lightweight_session();
    s.events()
        .write_to_boundary(q, |seats: Option<&Seats>| match seats {
            Some(c) if c.subscribed < c.seats => Ok::<_, marten::Error>([StudentSubscribed {
                course_id: course_id.to_owned(),
                student_id: student_id.clone(),
            }]),
            _ => panic!("no seats left"),
        })
        .await
        .expect("write_to_boundary");
}

/// What `Migrator::init_event_store` of disintegrate-postgres 4.0 creates (which
/// `PgEventStore::try_new` runs): the event sequence and table, the type index, the two
/// epoch functions, a column and a partial index per domain id. Its
/// `event_store_begin_epoch` writes the mask `0xFFFFFFFF`, a hexadecimal literal that
/// PostgreSQL accepts from version 16 on; this server may be 15, so the same function is
/// created here with the mask in decimal (`4294967295`, the same bigint). Nothing else
/// differs from the migrator's SQL.
async fn init_event_store(pool: &PgPool) {
    const DDL: &[&str] = &[
        "CREATE SEQUENCE IF NOT EXISTS seq_event_event_id",
        "CREATE TABLE IF NOT EXISTS event (event_id BIGINT PRIMARY KEY DEFAULT nextval('seq_event_event_id'), \
         event_type VARCHAR(255), payload BYTEA, inserted_at TIMESTAMP DEFAULT now())",
        "CREATE INDEX IF NOT EXISTS idx_event_type_btree ON event(event_type)",
        "CREATE OR REPLACE FUNCTION event_store_current_epoch() RETURNS BIGINT AS $$
         DECLARE persisted_event_id BIGINT; pending_event_id BIGINT; db_id INT;
         BEGIN
             SELECT COALESCE(MAX(event_id), 0) INTO persisted_event_id FROM event;
             SELECT oid INTO db_id FROM pg_database WHERE datname = current_database();
             SELECT MIN((l3.objid::bigint << 32) + l2.objid::bigint) INTO pending_event_id
             FROM pg_locks l1
             INNER JOIN pg_locks l2 ON l1.pid = l2.pid
             INNER JOIN pg_locks l3 ON l1.pid = l3.pid
             WHERE l1.classid = db_id AND l2.classid = 1 AND l3.classid = 2 AND l1.locktype = 'advisory';
             RETURN LEAST(COALESCE(pending_event_id, persisted_event_id), persisted_event_id);
         END; $$ LANGUAGE plpgsql",
        "CREATE OR REPLACE FUNCTION event_store_begin_epoch() RETURNS void AS $$
         DECLARE id BIGINT; db_id INT;
         BEGIN
             SELECT last_value INTO id FROM seq_event_event_id;
             SELECT oid INTO db_id FROM pg_database WHERE datname = current_database();
             PERFORM pg_try_advisory_xact_lock_shared(db_id, 0);
             PERFORM pg_try_advisory_xact_lock_shared(1, (id & 4294967295)::bit(32)::integer);
             PERFORM pg_try_advisory_xact_lock_shared(2, (id >> 32)::bit(32)::integer);
         END; $$ LANGUAGE plpgsql",
        "ALTER TABLE event ADD COLUMN IF NOT EXISTS course_id TEXT",
        "CREATE INDEX IF NOT EXISTS idx_event_course_id ON event (course_id) WHERE course_id IS NOT NULL",
        "ALTER TABLE event ADD COLUMN IF NOT EXISTS student_id TEXT",
        "CREATE INDEX IF NOT EXISTS idx_event_student_id ON event (student_id) WHERE student_id IS NOT NULL",
    ];
    let ids: Vec<String> = <DomainEvent as disintegrate::Event>::SCHEMA
        .domain_ids
        .iter()
        .map(|d| d.ident.to_string())
        .collect();
    assert_eq!(
        ids,
        ["course_id", "student_id"],
        "the domain ids the DDL adds"
    );
    for sql in DDL {
        sqlx::query(sql)
            .execute(pool)
            .await
            .expect("disintegrate schema");
    }
}

/// Both sides of the decision row: marten's store, disintegrate's store and decision maker.
struct Sides {
    store: DocumentStore,
    events: Store,
    decisions: PgDecisionMaker<DomainEvent, Json<DomainEvent>, NoSnapshot>,
    pool: PgPool,
}

/// Creates both sides' schemas and builds both sides.
async fn sides(sync: &'static str, schemas: &mut Schemas) -> Sides {
    let marten_schema = schemas.create("peers_dcb_marten").await;
    let peer_schema = schemas.create("peers_disintegrate").await;
    let store = DocumentStore::builder()
        .connection_string(marten_url(sync))
        .ssl_mode(marten::SslMode::Disable)
        .schema(marten_schema)
        .pool_size(2)
        .event::<CourseCreated>()
        .event::<StudentSubscribed>()
        .build()
        .await
        .expect("marten store");
    let pool = peer_pool(sync, Some(&peer_schema), 2).await;
    check_sync(&pool, sync).await;
    init_event_store(&pool).await;
    let events = Store::new_uninitialized(pool.clone(), Json::default());
    let decisions = disintegrate_postgres::decision_maker(events.clone(), NoSnapshot);
    Sides {
        store,
        events,
        decisions,
        pool,
    }
}

/// Creates `n` courses on each side (outside the timing); returns their ids.
async fn courses(sides: &Sides, n: usize, seats: u32) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| Uuid::now_v7().to_string()).collect();
    let mut s = sides.store.lightweight_session();
    for id in &ids {
        let e = CourseCreated {
            course_id: id.clone(),
            seats,
        };
        s.events().append(Uuid::now_v7(), [e]).expect("append");
    }
    s.save_changes().await.expect("courses");
    drop(s);
    let created = ids
        .iter()
        .map(|id| DomainEvent::CourseCreated {
            course_id: id.clone(),
            seats,
        })
        .collect();
    sides
        .events
        .append_without_validation(created)
        .await
        .expect("courses");
    ids
}

/// Runs the disintegrate rows of one pass: marten's side through
/// `fetch_for_writing_by_tags`, then through `write_to_boundary`.
pub async fn run(sync: &'static str, plan: Plan, schemas: &mut Schemas) -> Vec<Row> {
    if !wanted("decision disintegrate") {
        return Vec::new();
    }
    let sides = sides(sync, schemas).await;
    let mut rows = Vec::new();
    for command in [false, true] {
        rows.push(decision_row(&sides, sync, plan, command).await);
    }
    sides.pool.close().await;
    rows
}

/// The decision row; marten's side through `fetch_for_writing_by_tags` (`command`:
/// false) or `write_to_boundary`.
async fn decision_row(sides: &Sides, sync: &'static str, plan: Plan, command: bool) -> Row {
    let scenario = if command {
        "DCB decision (write_to_boundary): read a course's events, append 1"
    } else {
        "DCB decision: read a course's events, append 1"
    };
    let mut row = Row::new(scenario, "disintegrate", sync);
    row.unit = "decisions/s";
    // Operation i subscribes to course i / PER_COURSE: every course of a repetition ends
    // with PER_COURSE subscriptions on each side (in its own store), one seat left. The
    // courses are created by plain appends, so a command's first decision on a course
    // reads it.
    let n = plan.ops.div_ceil(PER_COURSE);
    for rep in 0..plan.reps {
        let ids = courses(sides, n, PER_COURSE as u32 + 1).await;
        let student = |i: usize| format!("student-{rep}-{i}-{command}");
        row.push(
            interleaved(
                plan.ops,
                rep % 2 == 0,
                async |i| {
                    let course = &ids[i / PER_COURSE];
                    if command {
                        marten_command(&sides.store, course, student(i)).await
                    } else {
                        marten_subscribe(&sides.store, course, student(i)).await
                    }
                },
                async |i| {
                    let d = Subscribe {
                        course_id: ids[i / PER_COURSE].clone(),
                        student_id: student(i),
                    };
                    sides.decisions.make(d).await.expect("decision");
                },
            )
            .await,
        );
    }
    row
}
