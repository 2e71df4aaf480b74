//! The lock a save takes of its tags before any stream row: the tags of the events of the
//! streams it archives or deletes, and, with them, the tags of its tag lock, all in one
//! (type, value) order, in one statement, none bumped. A save that archives or deletes
//! streams sends it before it locks the streams' rows ([`super::StreamLock`]), as a tagged
//! save takes its tags before its streams, so that an archive racing a tagged append to
//! the same stream queues up instead of deadlocking; a save whose inline projections read
//! streams under lock sends it (with its tag lock's tags) before the first such read (see
//! [`crate::tables::stream_commands`]). The tag lock that asserts and bumps the tags
//! follows: it finds them held already.

use marten_core::StreamIdentity;
use tokio_postgres::types::ToSql;

use super::append::StreamCommand;
use super::{Operation, Target};
use crate::connection::SqlText;
use crate::event_tenant::EventTenant;
use crate::schema::events_schema;
use crate::stream_key::StreamKey;
use crate::tables::events::{EventSql, TAG_VERSIONS_TABLE};

/// Locks the tags of the events of the streams a save archives or deletes, and the tags
/// of its tag lock, in one order.
pub(crate) struct TagsFirst {
    identity: StreamIdentity,
    tenant: EventTenant,
    streams: Vec<StreamKey>,
    /// The tag lock's tags, in (type, value) order.
    types: Vec<String>,
    values: Vec<String>,
}

impl TagsFirst {
    /// The lock of the tags of the streams `commands` archive or delete; `None` without
    /// commands. Every command of a save has the session's tenant.
    pub(crate) fn for_commands<'a>(
        commands: impl Iterator<Item = &'a StreamCommand>,
    ) -> Option<Self> {
        let mut commands = commands.peekable();
        let first = commands.peek()?;
        let (identity, tenant) = (first.identity(), first.tenant().clone());
        let mut streams: Vec<StreamKey> = commands.map(|c| c.stream().clone()).collect();
        streams.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        streams.dedup_by(|a, b| a.0 == b.0);
        Some(TagsFirst {
            identity,
            tenant,
            streams,
            types: Vec::new(),
            values: Vec::new(),
        })
    }

    /// The lock of the tags `types`/`values` (a tag lock's), of no stream.
    pub(crate) fn of_tags(
        identity: StreamIdentity,
        tenant: EventTenant,
        types: &[String],
        values: &[String],
    ) -> Self {
        TagsFirst {
            identity,
            tenant,
            streams: Vec::new(),
            types: types.to_vec(),
            values: values.to_vec(),
        }
    }

    /// This lock, locking the tags `types`/`values` (a tag lock's) too.
    pub(crate) fn with_tags(mut self, types: &[String], values: &[String]) -> Self {
        self.types = types.to_vec();
        self.values = values.to_vec();
        self
    }
}

impl Operation for TagsFirst {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Static(&EventSql::of(self.identity, self.tenant.tenancy()).lock_command_tags)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.streams, self.tenant.tags(), &self.types, &self.values]
    }

    fn target(&self) -> Target {
        let schema = events_schema(self.identity, self.tenant.tenancy());
        Target::new("tag", TAG_VERSIONS_TABLE, schema)
    }
}
