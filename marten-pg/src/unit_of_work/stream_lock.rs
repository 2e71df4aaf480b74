//! The lock of a save's streams, in id order: a save that appends to (or archives, or
//! deletes) several streams locks their rows first, in one statement sent ahead of its
//! appends in the same flight, so that two saves touching the same streams in opposite
//! orders queue up instead of deadlocking (each would hold one row and wait for the
//! other's, until PostgreSQL's deadlock check aborted one a second later). The appends
//! keep the order the session gave them: the events' sequences follow it. A save that
//! archives or deletes a stream locks it first even alone (see [`StreamLock::for_save`]).

use marten_core::{StreamId, StreamIdentity};
use tokio_postgres::types::ToSql;

use super::append::{stream_target, AppendKind, StreamAppend, StreamCommand};
use super::{Operation, Target};
use crate::connection::SqlText;
use crate::event_tenant::EventTenant;
use crate::stream_key::StreamKey;
use crate::tables::events::EventSql;

/// Locks the rows of the streams a save's appends and stream commands write, in id order.
pub(crate) struct StreamLock {
    identity: StreamIdentity,
    tenant: EventTenant,
    streams: Vec<StreamKey>,
}

impl StreamLock {
    /// The lock of the distinct streams of `appends` (but streams they start: those have
    /// no row yet) and `commands`, when there are at least two, or any command; `None`
    /// otherwise. Every operation of a save has the session's tenant.
    ///
    /// A command (archive, delete) locks its stream even alone: its statement marks (or
    /// deletes) the stream's events as its snapshot saw them, and a snapshot taken before
    /// it waited on an appender's row lock misses the events that appender then commits.
    /// Locked first, in a statement of its own, the row is waited for before the command's
    /// statement starts, so that statement sees every event, and no append comes after.
    pub(crate) fn for_save<'a>(
        appends: impl Iterator<Item = &'a StreamAppend>,
        commands: impl Iterator<Item = &'a StreamCommand>,
    ) -> Option<Self> {
        let appended = appends
            .filter(|a| a.kind != AppendKind::Start)
            .map(|a| (a.identity, &a.tenant, &a.stream.0));
        let mut commands = commands.peekable();
        let commanded_any = commands.peek().is_some();
        let commanded = commands.map(|c| (c.identity(), c.tenant(), &c.stream().0));
        let mut first: Option<(StreamIdentity, &EventTenant, &StreamId)> = None;
        // Filled from the second distinct stream on: a save of one stream (the common
        // lone append) allocates nothing here.
        let mut ids: Vec<&StreamId> = Vec::new();
        for (identity, tenant, id) in appended.chain(commanded) {
            match first {
                None => first = Some((identity, tenant, id)),
                Some((_, _, one)) if ids.is_empty() && one == id => {}
                Some((_, _, one)) => {
                    if ids.is_empty() {
                        ids.push(one);
                    }
                    ids.push(id);
                }
            }
        }
        let (identity, tenant, one) = first?;
        if ids.is_empty() {
            if !commanded_any {
                return None;
            }
            ids.push(one);
        }
        ids.sort_unstable();
        ids.dedup();
        Some(StreamLock {
            identity,
            tenant: tenant.clone(),
            streams: ids.into_iter().map(|id| StreamKey(id.clone())).collect(),
        })
    }
}

impl Operation for StreamLock {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Static(&EventSql::of(self.identity, self.tenant.tenancy()).lock_streams)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.tenant.scoped(vec![&self.streams])
    }

    fn target(&self) -> Target {
        stream_target(self.identity, self.tenant.tenancy())
    }
}
