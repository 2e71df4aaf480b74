//! Reserving what the envelopes of inline projections carry, before they plan: when a
//! projection of the save reads the events' metadata, the save's transaction locks the
//! streams of its plain and expected-version appends (in id order) to learn their versions
//! and the ordering transaction id their events record (`last_tx`), draws the events'
//! global sequences from the store's sequence and takes its transaction id and time, in one
//! flight. Each plain append then asserts the version read (it holds the lock, so the
//! assertion cannot fail but for a stream created meanwhile, which plans the save
//! again), and the events are inserted with the sequences drawn: the envelopes carry
//! exactly what `mt_events` stores. Why this keeps the global order gap-safe is told in
//! [`crate::tables::event_reserve`].

use std::collections::HashMap;

use marten_core::projection::inline::{advance, AppendKind, AppendView, Reserved};
use marten_core::{Error, Result, StreamId};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::connection::{Pipeline, Request};
use crate::error_map::{map_db_error, Failed};
use crate::stream_key::StreamKey;
use crate::tables::event_reserve::reserve_sequences;
use crate::tables::events::EventSql;
use crate::unit_of_work::{TagsFirst, UnitOfWork};
use crate::xid8::Xid8;

use super::{ProjectionCatalog, TagsStatement};

fn reading(e: tokio_postgres::Error) -> Error {
    map_db_error(e, Failed::Reading("stream"))
}

/// What the flight read: each locked stream's (version, archived, ordering transaction
/// id) by its key, the transaction id and the sequences drawn.
struct Drawn {
    streams: HashMap<StreamKey, (i64, bool, u64)>,
    transaction_id: u64,
    timestamp: time::OffsetDateTime,
    sequences: Vec<i64>,
}

/// What a reservation requires of the save's plain appends.
pub(crate) struct Reservation {
    /// The versions the plain appends must assert: `(index, version)`.
    pub(crate) requirements: Vec<(usize, i64)>,
    /// Whether some plain append's stream did not exist, so nothing was locked and its
    /// version 0 is only what the reservation saw: a concurrent save may create the
    /// stream before a projection's locked read, which then disagrees, and the save is
    /// planned again rather than failed.
    pub(crate) unlocked: bool,
}

/// Reserves sequences, the transaction id and the plain appends' versions for the
/// save's `appends` (see the module docs); sets them on the views and the unit of work's
/// appends and returns what the plain appends must assert.
pub(crate) async fn reserve(
    store: &ProjectionCatalog,
    req: &mut Request<'_>,
    uow: &mut UnitOfWork,
    appends: &mut [AppendView],
    tags: &mut Option<TagsFirst>,
) -> Result<Reservation> {
    let count: usize = appends.iter().map(|a| a.events.len()).sum();
    let drawn = draw(store, req, uow, locked_streams(appends), count, tags.take()).await?;
    let mut requirements = Vec::new();
    let mut unlocked = false;
    let mut running: HashMap<StreamId, Option<i64>> = HashMap::new();
    let mut sequences = drawn.sequences.into_iter();
    for view in appends.iter_mut() {
        let stream = &view.stream;
        let n = view.events.len();
        let known = running.get(stream).copied();
        let base = match view.kind {
            AppendKind::Start => Some(0),
            AppendKind::Expected(v) => Some(v),
            AppendKind::Append => {
                known.unwrap_or_else(|| match drawn.streams.get(&StreamKey(stream.clone())) {
                    Some((_, true, _)) => None,
                    Some((v, false, _)) => Some(*v),
                    None => {
                        unlocked = true;
                        Some(0)
                    }
                })
            }
        };
        let after = base.map(|b| advance(stream, b, n)).transpose()?;
        running.insert(stream.clone(), after);
        let own: Vec<i64> = sequences.by_ref().take(n).collect();
        if own.len() != n {
            return Err(Error::CorruptData {
                owner: "stream".to_owned(),
                id: Some(stream.to_string()),
                detail: format!("{count} sequences were reserved, fewer than the events"),
            });
        }
        if let Some(a) = uow.user.append_at_mut(view.index) {
            a.sequences = Some(own.clone());
        }
        let plain_base = (view.kind == AppendKind::Append).then_some(base).flatten();
        if let Some(b) = plain_base {
            requirements.push((view.index, b));
        }
        // The id its events record: the stream's last one when later than this save's
        // (see `tables::events::LAST_TX_BUMP`).
        let ordering = match drawn.streams.get(&StreamKey(stream.clone())) {
            Some((_, _, last)) => drawn.transaction_id.max(*last),
            None => drawn.transaction_id,
        };
        view.reserved = Some(Reserved {
            sequences: own,
            transaction_id: ordering,
            timestamp: Some(drawn.timestamp),
            base: plain_base,
        });
    }
    Ok(Reservation {
        requirements,
        unlocked,
    })
}

/// The streams a reservation locks: those of plain appends, and of expected-version
/// appends (locked too: their ordering transaction id is read under the lock the append
/// takes anyway), each once.
fn locked_streams(appends: &[AppendView]) -> Vec<StreamKey> {
    let mut plain: Vec<StreamKey> = Vec::new();
    for a in appends.iter().filter(|a| a.kind != AppendKind::Start) {
        let key = StreamKey(a.stream.clone());
        if !plain.contains(&key) {
            plain.push(key);
        }
    }
    plain
}

/// Sends the flight: `BEGIN` unless the transaction is open, the lock of the save's
/// `tags` (if any: before any row, see [`TagsStatement`]), the lock of the `plain`
/// streams (if any) and the draw of `count` sequences with the transaction id.
async fn draw(
    store: &ProjectionCatalog,
    req: &mut Request<'_>,
    uow: &UnitOfWork,
    plain: Vec<StreamKey>,
    count: usize,
    tags: Option<TagsFirst>,
) -> Result<Drawn> {
    let lock_sql =
        &EventSql::of(store.stream_identity(), store.events().events_tenancy()).lock_streams;
    let reserve_sql = reserve_sequences(store.catalog().schema());
    let client = req.client();
    let lock = client.statement(lock_sql).await.map_err(reading)?;
    let draw = client.statement(&reserve_sql).await.map_err(reading)?;
    let tags = TagsStatement::prepare(client, tags.as_ref()).await?;
    let begin = !req.in_transaction();
    if begin {
        // BEGIN is about to be written.
        req.set_in_transaction(true);
    }
    let tenant = uow.user.appends().next().map(|(_, a)| a.tenant.clone());
    let n = i32::try_from(count).map_err(|_| Error::CorruptData {
        owner: "stream".to_owned(),
        id: None,
        detail: format!("a save of {count} events is too large to reserve sequences for"),
    })?;
    let lock_params: Vec<&(dyn ToSql + Sync)> = match &tenant {
        Some(t) => t.scoped(vec![&plain]),
        None => vec![&plain],
    };
    let draw_params: [&(dyn ToSql + Sync); 1] = [&n];
    let mut pipe = Pipeline::new(req.client(), 4);
    let begun = begin.then(|| pipe.command("BEGIN"));
    let tagged = tags.as_ref().map(|t| t.push(&mut pipe));
    let locked = (!plain.is_empty()).then(|| pipe.query(&lock, &lock_params));
    let drawn = pipe.query(&draw, &draw_params);
    let mut answers = pipe.send().await;
    if let Some(Err(e)) = begun.map(|h| answers.take(h)) {
        return Err(map_db_error(e, Failed::Transaction));
    }
    TagsStatement::answer(&mut answers, tagged)?;
    let locked = match locked {
        Some(h) => answers.take(h).map_err(reading)?,
        None => Vec::new(),
    };
    let drawn = answers.take(drawn).map_err(reading)?;
    decode(&plain, &locked, drawn.first())
}

/// Decodes the locked rows (`ord, version, is_archived, last_tx`, `ord` a 1-based
/// position in `plain`) and the draw's row.
fn decode(plain: &[StreamKey], locked: &[Row], drawn: Option<&Row>) -> Result<Drawn> {
    let mut streams = HashMap::new();
    for row in locked {
        let ord: i64 = row.try_get(0).map_err(reading)?;
        let key = usize::try_from(ord - 1).ok().and_then(|i| plain.get(i));
        if let Some(key) = key {
            let version: i64 = row.try_get(1).map_err(reading)?;
            let archived: bool = row.try_get(2).map_err(reading)?;
            let Xid8(last) = row.try_get(3).map_err(reading)?;
            streams.insert(key.clone(), (version, archived, last));
        }
    }
    let Some(row) = drawn else {
        return Err(Error::CorruptData {
            owner: "stream".to_owned(),
            id: None,
            detail: "reserving sequences returned no row".to_owned(),
        });
    };
    let transaction: Xid8 = row.try_get(0).map_err(reading)?;
    let timestamp = row.try_get(1).map_err(reading)?;
    let mut sequences: Vec<i64> = row.try_get(2).map_err(reading)?;
    sequences.sort_unstable();
    Ok(Drawn {
        streams,
        transaction_id: transaction.0,
        timestamp,
        sequences,
    })
}
