//! The unit of work: operations queued by a session, sent by `save_changes` in one
//! transaction and one network round trip.
//!
//! `BEGIN`, every operation, the batch guard and `COMMIT` are written to the connection
//! together (tokio-postgres pipelines requests that are in flight at once) and their
//! results read back in order. Writes that can be rejected do not raise; they report
//! what they wrote and flag the transaction, and the guard then raises, so the `COMMIT`
//! that follows finds an aborted transaction and rolls it back. Every rejection of the
//! batch is therefore known after that one round trip; one more query per rejected
//! operation, after the rollback, reads the stored versions to explain them.
//!
//! `mod.rs` holds the queue, its entries typed by kind where planners need to see them
//! (stream appends and commands), erased otherwise; `operation.rs` is what the writer
//! sends; `lone.rs` sends a save that is one statement, alone; `writer.rs` sends any other in
//! one transaction; `lost.rs` settles a save whose answers were lost;
//! `append.rs` holds the event store's operations, `stream_lock.rs` the lock of a save's
//! streams in id order, `command_tags.rs` the lock of its tags before any stream row (those its archives and deletes bump, with its tag lock's), `column.rs` the columns a statement binds as arrays. May use: the
//! connection layer, the schema layer, the tables, the error map.

pub(crate) mod append;
mod column;
mod command_tags;
mod lone;
mod lost;
mod operation;
mod stream_lock;
mod writer;

use std::any::Any;

use marten_core::TenantId;

use self::append::{StreamAppend, StreamCommand};
pub(crate) use self::column::{row_order, Column};
pub(crate) use self::command_tags::TagsFirst;
pub(crate) use self::operation::{first_count, Operation, Target};
pub(crate) use self::stream_lock::StreamLock;

/// What a session remembers (versions, identity map, dirty tracking), its dirty
/// documents flushed into a unit of work.
pub(crate) type SessionState = marten_core::session::SessionState<UnitOfWork>;

/// A batch of document writes or deletes of one type: an operation that can take more
/// documents of its own type and kind (implemented in [`crate::documents`]).
pub(crate) trait DocumentBatch: Operation {
    /// The batch as its concrete type, to add documents of the same type to it.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The batch as an operation.
    fn operation(&self) -> &dyn Operation;
    /// The batch as an operation, mutably.
    fn operation_mut(&mut self) -> &mut dyn Operation;
}

/// One queued entry, typed by what planners need to know of it.
pub(crate) enum Queued {
    /// Writes or deletes of one document type and kind.
    Documents(Box<dyn DocumentBatch>),
    /// Events appended to one stream.
    Append(Box<StreamAppend>),
    /// A stream archived or deleted.
    Command(StreamCommand),
    /// Anything else (checks, locks, progress updates).
    Other(Box<dyn Operation>),
}

impl Queued {
    /// The entry as the operation the writer sends.
    pub(crate) fn operation(&self) -> &dyn Operation {
        match self {
            Queued::Documents(batch) => batch.operation(),
            Queued::Append(append) => append.as_ref(),
            Queued::Command(command) => command,
            Queued::Other(op) => op.as_ref(),
        }
    }

    /// The entry as the operation the writer sends, mutably.
    pub(crate) fn operation_mut(&mut self) -> &mut dyn Operation {
        match self {
            Queued::Documents(batch) => batch.operation_mut(),
            Queued::Append(append) => append.as_mut(),
            Queued::Command(command) => command,
            Queued::Other(op) => op.as_mut(),
        }
    }
}

/// A list of operations in order ([`crate::documents`] adds the typed document writes,
/// merging consecutive writes of one type and kind).
#[derive(Default)]
pub(crate) struct OpList {
    pub(crate) items: Vec<Queued>,
    /// The tenant whose rows the list's writes of conjoined document types touch.
    pub(crate) tenant: Option<TenantId>,
}

impl OpList {
    /// An empty list whose conjoined writes belong to `tenant`.
    pub(crate) fn for_tenant(tenant: Option<TenantId>) -> Self {
        OpList {
            items: Vec::new(),
            tenant,
        }
    }

    /// Moves every operation of `other` to the end of this list.
    pub(crate) fn append(&mut self, other: &mut OpList) {
        self.items.append(&mut other.items);
    }

    /// Queues any operation as it is.
    pub(crate) fn push_op(&mut self, op: Box<dyn Operation>) {
        self.items.push(Queued::Other(op));
    }

    /// Queues an append to a stream.
    pub(crate) fn push_append(&mut self, append: StreamAppend) {
        self.items.push(Queued::Append(Box::new(append)));
    }

    /// Queues a stream command (archive, delete).
    pub(crate) fn push_command(&mut self, command: StreamCommand) {
        self.items.push(Queued::Command(command));
    }

    /// The operations, in order.
    pub(crate) fn operations(&self) -> impl Iterator<Item = &dyn Operation> {
        self.items.iter().map(Queued::operation)
    }

    /// The appends with their positions in the list.
    pub(crate) fn appends(&self) -> impl Iterator<Item = (usize, &StreamAppend)> + Clone {
        self.items.iter().enumerate().filter_map(|(i, q)| match q {
            Queued::Append(a) => Some((i, a.as_ref())),
            _ => None,
        })
    }

    /// The append at `index`, if that entry is one.
    pub(crate) fn append_at_mut(&mut self, index: usize) -> Option<&mut StreamAppend> {
        match self.items.get_mut(index) {
            Some(Queued::Append(a)) => Some(a.as_mut()),
            _ => None,
        }
    }

    /// The stream commands.
    pub(crate) fn commands(&self) -> impl Iterator<Item = &StreamCommand> {
        self.items.iter().filter_map(|q| match q {
            Queued::Command(c) => Some(c),
            _ => None,
        })
    }

    /// Whether the append at position `index` is the first to `stream` after a delete of
    /// it queued earlier in the save (it then starts the stream anew).
    pub(crate) fn first_after_delete(
        &self,
        index: usize,
        stream: &crate::stream_key::StreamKey,
    ) -> bool {
        for q in self.items.iter().take(index).rev() {
            match q {
                Queued::Command(c) if c.deletes() && c.stream() == stream => return true,
                Queued::Append(a) if &a.stream == stream => return false,
                _ => {}
            }
        }
        false
    }

    /// Whether a command queued after position `index` deletes `stream` (whose events,
    /// appended before it in the same save, are then gone when the save commits).
    pub(crate) fn deleted_after(
        &self,
        index: usize,
        stream: &crate::stream_key::StreamKey,
    ) -> bool {
        self.items.iter().skip(index + 1).any(|q| match q {
            Queued::Command(c) => c.deletes() && c.stream() == stream,
            _ => false,
        })
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Forgets everything queued.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }
}

/// Operations queued by a session (`user`), and the writes its inline projections derive
/// from them (`derived`, planned anew on every attempt of a save).
#[derive(Default)]
pub struct UnitOfWork {
    /// Sent first: the tag lock of consistency boundaries, the lock of the save's streams.
    pub(crate) prelude: OpList,
    pub(crate) user: OpList,
    pub(crate) derived: OpList,
}

/// How a save ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything was written.
    Committed,
    /// Nothing was written, and every rejection came from a check marten added itself (an
    /// inline projection's): plan again and retry.
    Retry,
}

impl UnitOfWork {
    /// An empty unit of work whose conjoined writes belong to `tenant`.
    pub(crate) fn for_tenant(tenant: Option<&TenantId>) -> Self {
        UnitOfWork {
            prelude: OpList::for_tenant(tenant.cloned()),
            user: OpList::for_tenant(tenant.cloned()),
            derived: OpList::for_tenant(tenant.cloned()),
        }
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.user.is_empty() && self.derived.is_empty()
    }

    /// The number of documents and events the queued operations touch.
    pub(crate) fn len(&self) -> usize {
        self.user.operations().map(|o| o.len()).sum()
    }

    /// Forgets everything queued.
    pub(crate) fn clear(&mut self) {
        self.prelude.clear();
        self.user.clear();
        self.derived.clear();
    }

    /// Queues any operation as it is.
    pub(crate) fn push_op(&mut self, op: Box<dyn Operation>) {
        self.user.push_op(op);
    }

    /// Forgets the derived writes and every operation's result, before planning again.
    pub(crate) fn reset_attempt(&mut self) {
        self.prelude.clear();
        self.derived.clear();
        for q in &mut self.user.items {
            q.operation_mut().reset();
        }
    }
}
