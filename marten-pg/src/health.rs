//! A store's health in one value for readiness probes and dashboards:
//! [`DocumentStore::health`] checks that the database answers, compares its schema with
//! the registered types, and reports each async projection's lag and dead letters. May
//! use the store, its connections, the schema review and the projections' status.

use std::fmt;
use std::time::{Duration, Instant};

use marten_core::{Error, Result, SchemaDifference};

use crate::connection::Conn;
use crate::error_map::{map_db_error, Failed};
use crate::schema::PatchOptions;
use crate::store::DocumentStore;

/// Dead letters per projection.
const DEAD_LETTERS: &str = "SELECT projection, count(*) FROM mt_dead_letters GROUP BY projection";

/// What [`DocumentStore::health`] found. A check that could not run is in
/// [`failures`](Health::failures) and leaves its part empty (`schema_drift` `None`, no
/// projections).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the database answered a query.
    pub connected: bool,
    /// How long that query took, from asking the pool for a connection to the answer.
    pub latency: Option<Duration>,
    /// How the database differs from the registered types (empty: no drift; `None`: not
    /// checked, see `failures`).
    pub schema_drift: Option<Vec<SchemaDifference>>,
    /// Every async projection, in registration order.
    pub projections: Vec<ProjectionHealth>,
    /// The checks that failed to run, and why.
    pub failures: Vec<HealthFailure>,
}

/// One async projection's part of [`Health`]: its [`ProjectionStatus`](crate::ProjectionStatus)
/// (with conjoined events, its worst tenant's) and its dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionHealth {
    /// The projection's name.
    pub name: String,
    /// The global sequence of the last event it processed, the last in the daemon's
    /// order (see [`ProjectionStatus::position`](crate::ProjectionStatus::position)).
    pub position: i64,
    /// The global sequence of the last event it is to process (see
    /// [`ProjectionStatus::head`](crate::ProjectionStatus::head)): `position` once caught
    /// up.
    pub head: i64,
    /// Events not processed yet, [`ProjectionStatus::lag`](crate::ProjectionStatus::lag):
    /// 0 once caught up, otherwise approximate; with conjoined events, the worst
    /// tenant's.
    pub lag: i64,
    /// Poison events recorded for it in `mt_dead_letters` (every tenant's).
    pub dead_letters: i64,
    /// The node that owns it, if any (sharded or with conjoined events: every node that
    /// owns one of its slots, joined by `, `).
    pub owner: Option<String>,
}

/// A check of [`DocumentStore::health`] that could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthFailure {
    /// Which check.
    pub check: HealthCheck,
    /// Why it failed (the error and its causes).
    pub message: String,
}

/// The checks of [`DocumentStore::health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthCheck {
    /// A query on a pooled connection.
    Connection,
    /// The schema compared with the registered types.
    Schema,
    /// The projections' positions and dead letters.
    Projections,
}

impl Health {
    /// Connected, every check ran, no schema drift and no dead letters. Lag is not
    /// judged: compare [`max_lag`](Self::max_lag) with what your service tolerates.
    pub fn is_healthy(&self) -> bool {
        self.connected
            && self.failures.is_empty()
            && self.schema_drift.as_ref().is_some_and(Vec::is_empty)
            && self.projections.iter().all(|p| p.dead_letters == 0)
    }

    /// The largest lag of any async projection (0 without any).
    pub fn max_lag(&self) -> i64 {
        self.projections.iter().map(|p| p.lag).max().unwrap_or(0)
    }

    /// The total number of dead letters.
    pub fn dead_letters(&self) -> i64 {
        self.projections.iter().map(|p| p.dead_letters).sum()
    }
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthCheck::Connection => "connection",
            HealthCheck::Schema => "schema",
            HealthCheck::Projections => "projections",
        })
    }
}

impl DocumentStore {
    /// Checks the store's health: a query on a pooled connection (and its latency), the
    /// schema against the registered types (as [`assert_schema`](Self::assert_schema)
    /// does; changes nothing), and each async projection's position, lag and dead
    /// letters. Never fails: a check that cannot run is reported in
    /// [`Health::failures`]; when the database does not answer, nothing else is checked.
    pub async fn health(&self) -> Health {
        let mut health = Health {
            connected: false,
            latency: None,
            schema_drift: None,
            projections: Vec::new(),
            failures: Vec::new(),
        };
        let started = Instant::now();
        let mut conn = Conn::new();
        let ping = conn
            .run(self, async |client| {
                client
                    .batch_execute("SELECT 1")
                    .await
                    .map_err(|e| map_db_error(e, Failed::Other("checking health")))
            })
            .await;
        drop(conn);
        if let Err(e) = ping {
            health.fail(HealthCheck::Connection, &e);
            return health;
        }
        health.connected = true;
        health.latency = Some(started.elapsed());
        match self.schema_patch(PatchOptions::new()).await {
            Ok(patch) => health.schema_drift = Some(patch.differences().cloned().collect()),
            Err(e) => health.fail(HealthCheck::Schema, &e),
        }
        match self.projections_health().await {
            Ok(projections) => health.projections = projections,
            Err(e) => health.fail(HealthCheck::Projections, &e),
        }
        health
    }

    /// Each async projection's status with its dead letters.
    async fn projections_health(&self) -> Result<Vec<ProjectionHealth>> {
        let statuses = self.projection_status().await?;
        let mut conn = Conn::new();
        let counts: Vec<(String, i64)> = conn
            .run(self, async |client| {
                let rows = client
                    .query(DEAD_LETTERS, &[])
                    .await
                    .map_err(|e| map_db_error(e, Failed::Other("counting dead letters")))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<std::result::Result<_, tokio_postgres::Error>>()
                    .map_err(|e| Error::CorruptData {
                        owner: "mt_dead_letters".to_owned(),
                        id: None,
                        detail: e.to_string(),
                    })
            })
            .await?;
        Ok(statuses
            .into_iter()
            .map(|s| ProjectionHealth {
                dead_letters: counts
                    .iter()
                    .find(|(name, _)| *name == s.name)
                    .map_or(0, |(_, n)| *n),
                lag: s.lag(),
                name: s.name,
                position: s.position,
                head: s.head,
                owner: s.owner,
            })
            .collect())
    }
}

impl Health {
    /// Records a failed check with the error and its causes.
    fn fail(&mut self, check: HealthCheck, error: &Error) {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        self.failures.push(HealthFailure { check, message });
    }
}
