//! How far the store's async projections are: [`DocumentStore::projection_status`] reads
//! each one's position and owner from `mt_event_progression` (a sharded projection's:
//! its least advanced shard's, and every shard's owner; with conjoined events, each
//! tenant's slots) and the head from `mt_events`: the last event the daemon is to
//! project, in the order it reads them. May use the store's connection, schema and
//! projection registry, the daemon's tables, slots and recorded shard counts; writes
//! nothing but the schema it needs.
//!
//! Positions are compared as the daemon stores them: `(last_tx, last_seq)`, a place in
//! the gap-safe global order `(tx_id, seq_id)`, not a sequence alone (an event with a
//! higher sequence can come first in that order; see "Global order without gaps" in the
//! README). The positions are read before the heads, so a head is at or after every
//! position read with it (a runner's read saw no more than the later read sees).

use std::collections::{BTreeSet, HashMap};

use marten_core::{Error, Result, Tenancy, TenantId};

use crate::connection::{Conn, Db};
use crate::daemon::progression;
use crate::daemon::shard::recorded_count_on;
use crate::daemon::slot::Slot;
use crate::error_map::{map_db_error, Failed};
use crate::events::Position;
use crate::store::DocumentStore;
use crate::xid8::Xid8;

/// The position and owner of each slot named in `$1` that has a row.
const SLOT_ROWS: &str =
    "SELECT name, last_tx, last_seq, owner FROM mt_event_progression WHERE name = ANY($1)";

/// The last event of every tenant that the daemon projects, in its order (archived
/// events are not projected): one backward scan of the index `mt_events_tx_seq`, stopped
/// at the first row. No row: no such event.
const HEAD: &str = "SELECT e.tx_id, e.seq_id FROM mt_events e WHERE NOT e.is_archived \
     ORDER BY e.tx_id DESC, e.seq_id DESC LIMIT 1";

/// [`HEAD`] of each tenant of `$1` (conjoined events): one backward scan of the tenant's
/// part of the index `mt_events_tenant_tx_seq` each. A tenant without such an event has
/// no row.
const TENANT_HEADS: &str = "SELECT t.tenant_id, h.tx_id, h.seq_id \
     FROM unnest($1::text[]) AS t(tenant_id) CROSS JOIN LATERAL (\
     SELECT e.tx_id, e.seq_id FROM mt_events e \
     WHERE e.tenant_id = t.tenant_id AND NOT e.is_archived \
     ORDER BY e.tx_id DESC, e.seq_id DESC LIMIT 1) h";

/// How far an async projection is.
///
/// A position is a place in the gap-safe global order, which is by ordering transaction
/// id, then sequence (see [`Position`]): `position` and `head` are the sequences of
/// events at two such places, and the transaction ids beside them say which comes first.
/// Once the projection has caught up, `position` equals `head` (and `lag()` is 0), even
/// when a higher sequence came earlier in the order.
///
/// With conjoined events (see
/// [`DocumentStoreBuilder::events_tenancy`](crate::DocumentStoreBuilder::events_tenancy))
/// the daemon runs every projection per tenant: [`tenants`](Self::tenants) has one status
/// per tenant, and the projection's own fields are those of the tenant furthest behind,
/// so [`lag`](Self::lag) is the worst tenant's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The global sequence of the last event it processed, the last in the order the
    /// daemon reads (not necessarily the highest sequence it processed); 0 before any.
    /// Sharded: its least advanced shard's.
    pub position: i64,
    /// The global sequence of the last event it is to process: the last committed event
    /// in the daemon's order, archived events left out (with a tenant: of that tenant's
    /// events); 0 without any. An event an open older transaction still holds the daemon
    /// back from counts, as [`wait_for_non_stale`](crate::daemon::wait_for_non_stale)
    /// waits for it too. Never before `position` (an event processed, then archived,
    /// leaves the head where the position is).
    pub head: i64,
    /// The node that owns it, if any (sharded: the nodes owning its shards, joined by
    /// `, `; conjoined events: the nodes owning any of its tenants' slots).
    pub owner: Option<String>,
    /// The ordering transaction id of the event at `position` (0 before any): with
    /// `position`, where the projection stands in the daemon's order.
    #[serde(default)]
    pub position_transaction_id: u64,
    /// The ordering transaction id of the event at `head` (0 without any).
    #[serde(default)]
    pub head_transaction_id: u64,
    /// Whose events `position` and `head` count: `None` for every tenant's (events not
    /// conjoined); with conjoined events a [`tenants`](Self::tenants) entry's tenant, and
    /// at the top the tenant furthest behind (the greatest [`lag`](Self::lag), the first
    /// of equals in tenant order; `None` while no tenant has streams).
    #[serde(default)]
    pub tenant: Option<String>,
    /// With conjoined events, the projection per tenant that has streams, in tenant
    /// order: each with its tenant, its slots' position and owner, its tenant's head, and
    /// no tenants of its own. Empty when the events are not conjoined.
    #[serde(default)]
    pub tenants: Vec<ProjectionStatus>,
}

impl ProjectionStatus {
    /// Events not processed yet, approximate: 0 exactly when the position is at or after
    /// the head in the daemon's order (caught up), otherwise the difference of their
    /// sequences, at least 1 (sequences have gaps, come in transaction order rather than
    /// their own, and a tenant's interleave with other tenants'). With conjoined events:
    /// the worst tenant's.
    pub fn lag(&self) -> i64 {
        if self.at() >= self.head_at() {
            0
        } else {
            // Values from the database: a difference past i64 saturates.
            self.head.saturating_sub(self.position).max(1)
        }
    }

    /// Where the projection stands in the daemon's order.
    fn at(&self) -> Position {
        Position {
            transaction_id: self.position_transaction_id,
            sequence: self.position,
        }
    }

    /// Where the head is in the daemon's order.
    fn head_at(&self) -> Position {
        Position {
            transaction_id: self.head_transaction_id,
            sequence: self.head,
        }
    }
}

/// The slot names of one projection over one tenant's events (every tenant's: `None`).
struct Scope {
    tenant: Option<TenantId>,
    slots: Vec<String>,
}

/// What a slot's row says: its position and owner.
type SlotRow = (Position, Option<String>);

impl DocumentStore {
    /// The status of every async projection and subscription of the store (every
    /// projection the daemon runs), in registration order: its position, its head and the
    /// node that owns it; with conjoined events, each tenant's too (see
    /// [`ProjectionStatus::tenants`]). Creates the event and progression tables first when
    /// the store may (see [`AutoCreate`](crate::AutoCreate)).
    ///
    /// A few statements whatever the store's size: each head is one index scan stopped at
    /// its first row.
    pub async fn projection_status(&self) -> Result<Vec<ProjectionStatus>> {
        let (type_id, migrate) = progression::schema();
        self.ensure_erased(type_id, migrate).await?;
        crate::events::read::ensure(self.as_ref()).await?;
        let conjoined = self.events_tenancy() == Tenancy::Conjoined;
        let mut conn = Conn::new();
        conn.run(self, async |client| {
            let tenants: Vec<Option<TenantId>> = if conjoined {
                crate::daemon::tenants_on(client)
                    .await?
                    .into_iter()
                    .map(Some)
                    .collect()
            } else {
                vec![None]
            };
            let mut projections = Vec::new();
            let mut names = Vec::new();
            for p in &self.projections().asynchronous {
                let count = recorded_count_on(client, p.name()).await?;
                let scopes: Vec<Scope> = tenants
                    .iter()
                    .map(|tenant| Scope {
                        slots: Slot::all(p.name(), tenant.as_ref(), count)
                            .iter()
                            .map(|s| s.name().to_owned())
                            .collect(),
                        tenant: tenant.clone(),
                    })
                    .collect();
                names.extend(scopes.iter().flat_map(|s| s.slots.iter().cloned()));
                projections.push((p.name(), scopes));
            }
            // The positions first, then the heads (see the module doc).
            let rows = slot_rows(client, &names).await?;
            let heads = heads(client, &tenants).await?;
            Ok(projections
                .into_iter()
                .map(|(name, scopes)| status_of(name, &scopes, &rows, &heads, conjoined))
                .collect())
        })
        .await
    }
}

/// The status of projection `name` from its slots' rows and the heads: one scope
/// (events not conjoined), or the tenants' (see [`ProjectionStatus::tenants`]).
fn status_of(
    name: &str,
    scopes: &[Scope],
    rows: &HashMap<String, SlotRow>,
    heads: &HashMap<Option<TenantId>, Position>,
    conjoined: bool,
) -> ProjectionStatus {
    let mut owners = BTreeSet::new();
    let mut tenants: Vec<ProjectionStatus> = scopes
        .iter()
        .map(|scope| {
            let (position, mut own) = least_of(&scope.slots, rows);
            let head = heads.get(&scope.tenant).copied().unwrap_or(Position::START);
            let status = status_at(name, position, head.max(position), &own);
            owners.append(&mut own);
            ProjectionStatus {
                tenant: scope.tenant.as_ref().map(|t| t.as_str().to_owned()),
                ..status
            }
        })
        .collect();
    if !conjoined {
        return tenants.pop().unwrap_or_else(|| {
            status_at(name, Position::START, Position::START, &BTreeSet::new())
        });
    }
    let mut worst: Option<&ProjectionStatus> = None;
    for t in &tenants {
        if worst.is_none_or(|w| t.lag() > w.lag()) {
            worst = Some(t);
        }
    }
    let top = match worst {
        Some(w) => ProjectionStatus {
            owner: joined(&owners),
            ..w.clone()
        },
        None => status_at(name, Position::START, Position::START, &owners),
    };
    ProjectionStatus { tenants, ..top }
}

/// A status at `position` with `head` and `owners`, of no tenant.
fn status_at(
    name: &str,
    position: Position,
    head: Position,
    owners: &BTreeSet<String>,
) -> ProjectionStatus {
    ProjectionStatus {
        name: name.to_owned(),
        position: position.sequence,
        head: head.sequence,
        owner: joined(owners),
        position_transaction_id: position.transaction_id,
        head_transaction_id: head.transaction_id,
        tenant: None,
        tenants: Vec::new(),
    }
}

/// The least position of `slots` (a slot without a row is at the start, as the daemon's
/// staleness check has it) and their owners.
fn least_of(slots: &[String], rows: &HashMap<String, SlotRow>) -> (Position, BTreeSet<String>) {
    let mut least: Option<Position> = None;
    let mut owners = BTreeSet::new();
    for slot in slots {
        let (position, owner) = rows.get(slot).cloned().unwrap_or((Position::START, None));
        least = Some(least.map_or(position, |l| l.min(position)));
        owners.extend(owner);
    }
    (least.unwrap_or(Position::START), owners)
}

/// `owners` joined by `, `; `None` without any.
fn joined(owners: &BTreeSet<String>) -> Option<String> {
    (!owners.is_empty()).then(|| owners.iter().cloned().collect::<Vec<_>>().join(", "))
}

/// The rows of the slots named `names`, by name.
async fn slot_rows(client: Db<'_>, names: &[String]) -> Result<HashMap<String, SlotRow>> {
    let rows = client
        .query(SLOT_ROWS, &[&names])
        .await
        .map_err(|e| map_db_error(e, Failed::Other("reading progress")))?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let name: String = row
            .try_get(0)
            .map_err(unusable(progression::PROGRESSION_TABLE))?;
        // A row whose values are of the wrong type is named by its slot.
        let (position, owner) = {
            let unusable = unusable(&name);
            let Xid8(transaction_id) = row.try_get(1).map_err(&unusable)?;
            let position = Position {
                transaction_id,
                sequence: row.try_get(2).map_err(&unusable)?,
            };
            (position, row.try_get(3).map_err(&unusable)?)
        };
        out.insert(name, (position, owner));
    }
    Ok(out)
}

/// The head of each of `tenants` (`None`: of every tenant's events); the start for one
/// without events.
async fn heads(
    client: Db<'_>,
    tenants: &[Option<TenantId>],
) -> Result<HashMap<Option<TenantId>, Position>> {
    let reading = |e| map_db_error(e, Failed::Other("reading the head"));
    let unusable = unusable("mt_events");
    let at = |row: &tokio_postgres::Row, from: usize| -> Result<Position> {
        let Xid8(transaction_id) = row.try_get(from).map_err(&unusable)?;
        Ok(Position {
            transaction_id,
            sequence: row.try_get(from + 1).map_err(&unusable)?,
        })
    };
    let mut out = HashMap::with_capacity(tenants.len());
    if tenants.contains(&None) {
        let head = match client.query_opt(HEAD, &[]).await.map_err(reading)? {
            Some(row) => at(&row, 0)?,
            None => Position::START,
        };
        out.insert(None, head);
    }
    let named: Vec<&str> = tenants.iter().flatten().map(TenantId::as_str).collect();
    if !named.is_empty() {
        let rows = client
            .query(TENANT_HEADS, &[&named])
            .await
            .map_err(reading)?;
        for row in &rows {
            let stored: &str = row.try_get(0).map_err(&unusable)?;
            if let Ok(tenant) = TenantId::new(stored) {
                out.insert(Some(tenant), at(row, 1)?);
            }
        }
    }
    Ok(out)
}

/// A stored value of the wrong type (a table changed by hand or by another program).
fn unusable(owner: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::CorruptData {
        owner: owner.to_owned(),
        id: None,
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(transaction_id: u64, sequence: i64) -> Position {
        Position {
            transaction_id,
            sequence,
        }
    }

    fn slots(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_lag_compares_places_in_the_order_not_sequences() {
        let none = BTreeSet::new();
        // Caught up on an event whose sequence is below an earlier event's.
        let caught_up = status_at("P", at(11, 3), at(11, 3), &none);
        assert_eq!(caught_up.lag(), 0);
        // Before the last event of the order, whose sequence is lower: still behind.
        let behind = status_at("P", at(10, 4), at(11, 3), &none);
        assert_eq!(behind.lag(), 1);
        assert_eq!(status_at("P", at(5, 10), at(9, 25), &none).lag(), 15);
        assert_eq!(
            status_at("P", Position::START, Position::START, &none).lag(),
            0
        );
        // Positions from the database at the ends of i64 saturate, not overflow.
        assert_eq!(
            status_at("P", at(1, i64::MIN), at(2, i64::MAX), &none).lag(),
            i64::MAX
        );
    }

    #[test]
    fn a_status_without_transaction_ids_lags_by_its_sequences() {
        let old: ProjectionStatus =
            serde_json::from_str(r#"{"name":"Tally","position":3,"head":5,"owner":null}"#)
                .expect("deserialize");
        assert_eq!(
            (old.lag(), old.tenant.as_deref(), old.tenants.len()),
            (2, None, 0)
        );
    }

    #[test]
    fn the_least_shard_is_the_least_place_and_a_missing_slot_is_at_the_start() {
        let rows: HashMap<String, SlotRow> = [
            ("P#0/2".to_owned(), (at(11, 3), Some("b".to_owned()))),
            ("P#1/2".to_owned(), (at(10, 4), Some("a".to_owned()))),
        ]
        .into();
        let (least, owners) = least_of(&slots(&["P#0/2", "P#1/2"]), &rows);
        assert_eq!(least, at(10, 4), "by transaction id first, not by sequence");
        assert_eq!(joined(&owners).as_deref(), Some("a, b"));
        let (least, _) = least_of(&slots(&["P#0/3", "P#1/2", "P#2/3"]), &rows);
        assert_eq!(least, Position::START);
    }

    #[test]
    fn with_tenants_the_projection_reports_its_worst_tenant() {
        let (red, blue) = (
            TenantId::new("red").unwrap(),
            TenantId::new("blue").unwrap(),
        );
        let scopes = [
            Scope {
                tenant: Some(blue.clone()),
                slots: slots(&["P@blue"]),
            },
            Scope {
                tenant: Some(red.clone()),
                slots: slots(&["P@red"]),
            },
        ];
        let rows: HashMap<String, SlotRow> = [
            ("P@blue".to_owned(), (at(20, 8), Some("n1".to_owned()))),
            ("P@red".to_owned(), (at(12, 5), Some("n2".to_owned()))),
        ]
        .into();
        let heads: HashMap<_, _> = [(Some(blue), at(20, 8)), (Some(red), at(30, 9))].into();
        let s = status_of("P", &scopes, &rows, &heads, true);
        assert_eq!(
            (s.tenant.as_deref(), s.position, s.head, s.lag()),
            (Some("red"), 5, 9, 4)
        );
        assert_eq!(s.owner.as_deref(), Some("n1, n2"));
        let each: Vec<_> = s
            .tenants
            .iter()
            .map(|t| {
                (
                    t.tenant.as_deref(),
                    t.position,
                    t.head,
                    t.lag(),
                    t.owner.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            each,
            [
                (Some("blue"), 8, 8, 0, Some("n1")),
                (Some("red"), 5, 9, 4, Some("n2"))
            ]
        );
        let none = status_of("P", &[], &rows, &heads, true);
        assert_eq!(
            (none.position, none.head, none.tenant, none.owner),
            (0, 0, None, None)
        );
    }

    #[test]
    fn a_head_behind_the_position_is_moved_to_it() {
        let scopes = [Scope {
            tenant: None,
            slots: slots(&["P"]),
        }];
        let rows: HashMap<String, SlotRow> = [("P".to_owned(), (at(9, 7), None))].into();
        let heads: HashMap<_, _> = [(None, at(9, 6))].into();
        let s = status_of("P", &scopes, &rows, &heads, false);
        assert_eq!((s.position, s.head, s.lag(), s.tenant), (7, 7, 0, None));
        assert!(s.tenants.is_empty());
    }
}
