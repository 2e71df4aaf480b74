//! The typed pipeline: statements written to one connection together, their answers read
//! in one round trip. Pushing a statement returns a [`Handle`]; after [`Pipeline::send`]
//! each handle takes its own statement's answer from the [`Answers`], decoded as the kind
//! it was pushed as. Nobody counts positions.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::Poll;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{Db, Stmt};

/// The answer of one statement as the connection gives it.
pub(crate) type RawAnswer = Result<Vec<Row>, tokio_postgres::Error>;

type StatementFuture<'a> = Pin<Box<dyn Future<Output = RawAnswer> + Send + 'a>>;

/// What a statement answers, as its handle decodes it.
pub(crate) trait AnswerKind {
    /// The decoded answer.
    type Output;
    /// Decodes the rows the statement returned.
    fn decode(rows: Vec<Row>) -> Self::Output;
}

/// A statement that returns rows.
pub(crate) struct Rows;

impl AnswerKind for Rows {
    type Output = Vec<Row>;
    fn decode(rows: Vec<Row>) -> Vec<Row> {
        rows
    }
}

/// A statement run for its effect (`BEGIN`, `COMMIT`).
pub(crate) struct Done;

impl AnswerKind for Done {
    type Output = ();
    fn decode(_: Vec<Row>) {}
}

/// Where one pushed statement's answer will be. Taken once, by value.
#[must_use = "a pushed statement's answer must be read"]
pub(crate) struct Handle<K> {
    index: usize,
    kind: PhantomData<fn() -> K>,
}

/// Statements to write to one connection in one round trip, in the order pushed.
pub(crate) struct Pipeline<'a> {
    client: Db<'a>,
    flight: Vec<StatementFuture<'a>>,
}

impl<'a> Pipeline<'a> {
    /// An empty pipeline on `client`.
    pub(crate) fn new(client: Db<'a>, capacity: usize) -> Self {
        Self {
            client,
            flight: Vec::with_capacity(capacity),
        }
    }

    /// Pushes a simple-protocol command without parameters (`BEGIN`, `COMMIT`).
    pub(crate) fn command(&mut self, sql: &'static str) -> Handle<Done> {
        let c = self.client.raw();
        self.push(async move { c.batch_execute(sql).await.map(|()| Vec::new()) })
    }

    /// Pushes a ready statement with its parameters.
    pub(crate) fn query(
        &mut self,
        statement: &'a Stmt,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> Handle<Rows> {
        let sent = self.client.send(statement, params);
        self.push(sent)
    }

    /// Pushes any request written on this pipeline's client (its first poll writes it).
    pub(crate) fn push<K: AnswerKind>(
        &mut self,
        request: impl Future<Output = RawAnswer> + Send + 'a,
    ) -> Handle<K> {
        self.flight.push(Box::pin(request));
        Handle {
            index: self.flight.len() - 1,
            kind: PhantomData,
        }
    }

    /// Writes every statement and reads every answer.
    pub(crate) async fn send(self) -> Answers {
        self.written(false).await
    }

    /// Writes the statements in order until one cannot be written (its parameters do not
    /// encode, or the connection is gone: it fails on its first poll with an error the
    /// server did not send), then reads the answers of those written. The statements
    /// after one that could not be written are never written - a transaction's `COMMIT`
    /// among them - so what was written stays in an open transaction for the caller to
    /// roll back ([`Answers::complete`] says whether all were written).
    pub(crate) async fn send_until_unwritable(self) -> Answers {
        self.written(true).await
    }

    /// Writes the statements (`stop`: until one cannot be written) and reads the answers
    /// of those written.
    async fn written(self, stop: bool) -> Answers {
        let slots = join_in_order(self.flight, stop).await;
        Answers {
            complete: slots.iter().all(Option::is_some),
            slots,
        }
    }
}

/// The answers of a sent pipeline, each taken by its statement's handle.
pub(crate) struct Answers {
    slots: Vec<Option<RawAnswer>>,
    /// Every statement was written (see [`Pipeline::send_until_unwritable`]).
    complete: bool,
}

impl Answers {
    /// Whether every pushed statement was written; when not, only
    /// [`take_first_error`](Self::take_first_error) may be asked.
    pub(crate) fn complete(&self) -> bool {
        self.complete
    }

    /// Takes the first error among the answers (in the order pushed).
    pub(crate) fn take_first_error(&mut self) -> Option<tokio_postgres::Error> {
        self.slots
            .iter_mut()
            .find(|slot| matches!(slot, Some(Err(_))))
            .and_then(Option::take)
            .and_then(Result::err)
    }

    /// Takes the answer of the statement behind `handle`, decoded.
    pub(crate) fn take<K: AnswerKind>(
        &mut self,
        handle: Handle<K>,
    ) -> Result<K::Output, tokio_postgres::Error> {
        match self.slots.get_mut(handle.index).and_then(Option::take) {
            Some(answer) => answer.map(K::decode),
            // Handles are only made by `push`, taken by value, and `send` answers every
            // pushed statement.
            None => unreachable!("a pipeline answer taken twice or from another pipeline"),
        }
    }

    /// The answer behind `handle`, not taken.
    pub(crate) fn peek<K>(&self, handle: &Handle<K>) -> Option<&RawAnswer> {
        self.slots.get(handle.index).and_then(Option::as_ref)
    }

    /// Takes the answer behind `handle` if it is an error (the caller gives up on the
    /// rest of the answers).
    pub(crate) fn take_error<K>(&mut self, handle: &Handle<K>) -> Option<tokio_postgres::Error> {
        let slot = self.slots.get_mut(handle.index)?;
        match slot.take() {
            Some(Err(e)) => Some(e),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Whether any answer not taken yet, other than `except`'s, is an error the server
    /// sent (as opposed to a lost connection).
    pub(crate) fn server_error_besides<K>(&self, except: &Handle<K>) -> bool {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except.index)
            .any(|(_, slot)| matches!(slot, Some(Err(e)) if e.code().is_some()))
    }
}

/// Whether a statement's error on its first poll means it was never written: the client
/// refused it (its parameters did not encode) or the connection is gone. An error the
/// server sent was written (on a multi-threaded runtime its answer can be there by the
/// first poll: the connection's task writes and reads on another thread).
fn unwritten(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none()
}

/// Polls every future in order until all are done. Unlike a general join, the first
/// poll of each future happens in list order, which is the order tokio-postgres writes
/// their requests to the connection. `stop`: once a future fails on its first poll
/// without reaching the server ([`unwritten`]), the futures after it are never polled -
/// never written - and their slots stay empty.
async fn join_in_order(
    mut futures: Vec<StatementFuture<'_>>,
    stop: bool,
) -> Vec<Option<RawAnswer>> {
    let mut results: Vec<Option<RawAnswer>> = futures.iter().map(|_| None).collect();
    // Futures before `polled` were polled at least once (written).
    let mut polled = 0;
    let mut stopped = false;
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, (future, slot)) in futures.iter_mut().zip(results.iter_mut()).enumerate() {
            if slot.is_some() {
                continue;
            }
            let first = i >= polled;
            if first && stopped {
                break;
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(v) => {
                    stopped |= first && stop && matches!(&v, Err(e) if unwritten(e));
                    *slot = Some(v);
                }
                Poll::Pending => pending = true,
            }
            if first {
                polled = i + 1;
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    // Whatever was never polled is dropped here, unwritten.
    results
}
