//! The lock of the tags a save's stream commands bump: a save that archives or deletes
//! streams locks the tag versions of those streams' events in (type, value) order before
//! it locks the streams' rows ([`super::StreamLock`]), as a tagged save takes its tags
//! before its streams, so that an archive racing a tagged append to the same stream
//! queues up instead of deadlocking (see [`crate::tables::stream_commands`]).

use marten_core::StreamIdentity;
use tokio_postgres::types::ToSql;

use super::append::StreamCommand;
use super::{Operation, Target};
use crate::connection::SqlText;
use crate::event_tenant::EventTenant;
use crate::schema::events_schema;
use crate::stream_key::StreamKey;
use crate::tables::events::{EventSql, TAG_VERSIONS_TABLE};

/// Locks the tags of the events of the streams a save archives or deletes.
pub(crate) struct CommandTagLock {
    identity: StreamIdentity,
    tenant: EventTenant,
    streams: Vec<StreamKey>,
}

impl CommandTagLock {
    /// The lock of the tags of the streams `commands` archive or delete; `None` without
    /// commands. Every command of a save has the session's tenant.
    pub(crate) fn for_save<'a>(commands: impl Iterator<Item = &'a StreamCommand>) -> Option<Self> {
        let mut commands = commands.peekable();
        let first = commands.peek()?;
        let (identity, tenant) = (first.identity(), first.tenant().clone());
        let mut streams: Vec<StreamKey> = commands.map(|c| c.stream().clone()).collect();
        streams.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        streams.dedup_by(|a, b| a.0 == b.0);
        Some(CommandTagLock {
            identity,
            tenant,
            streams,
        })
    }
}

impl Operation for CommandTagLock {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Static(&EventSql::of(self.identity, self.tenant.tenancy()).lock_command_tags)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.streams, self.tenant.tags()]
    }

    fn target(&self) -> Target {
        let schema = events_schema(self.identity, self.tenant.tenancy());
        Target::new("tag", TAG_VERSIONS_TABLE, schema)
    }
}
